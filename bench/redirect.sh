#!/usr/bin/env bash
# Blob-redirect hot path: Wharf answering GET /v2/<repo>/blobs/<digest> with a 307 to a
# mirror chosen by GeoIP tier and bandwidth (20 verified mirrors, clients spread over
# countries by X-Forwarded-For from a trusted proxy), side by side with nginx answering the
# same request with a fixed `return 307` (the floor: no lookup, no choice). Prints both
# rates and Wharf's ratio to nginx.
#
# Usage: bench/redirect.sh [seconds]   (needs wrk and nginx; uses the GeoLite2-City database
# from PyPI's maxminddb-geolite2 if it is installed, else no GeoIP: then every client falls
# into the global tier.)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
source bench/lib.sh
bench_start wrk nginx
WP=$(free_port); NP=$(free_port); MP=$(free_port)

GEO=$(python3 -c 'import _maxminddb_geolite2 as m,os;print(os.path.join(os.path.dirname(m.__file__),"GeoLite2-City.mmdb"))' 2>/dev/null || true)
[ -f "$GEO" ] || GEO=""

# Upstream: the demo's sample images as OCI layouts.
write_config "$WP" "$( [ -n "$GEO" ] && printf '[geoip]\ndatabase = "%s"\n' "$GEO" )"
"$WHARF" demo --write-images "$W/up"
wharf_cli sync >/dev/null

# 20 mirrors and a netblock mirror, all served by one nginx; beside it, nginx answering the
# same path with a fixed 307.
start_mirrors "$MP" "server { listen 127.0.0.1:$NP; location /v2/ { return 307 http://127.0.0.1:$MP/m0\$request_uri; } }"
wharf_cli mirror add --name net --url "http://127.0.0.1:$MP/m0/" --netblock 81.0.0.0/8 >/dev/null
start_wharf "$WP"
wharf_cli crawl > "$W/crawl.out" || true
VERIFIED=$(grep -c "holds generation" "$W/crawl.out" || true)

DIGEST=$(curl -fs "http://127.0.0.1:$WP/v2/demo/app/manifests/1.0" | python3 -c 'import json,sys;print(json.load(sys.stdin)["layers"][1]["digest"])')
PATH_=/v2/demo/app/blobs/$DIGEST
curl -fs -o /dev/null -w "wharf: %{http_code} -> %{redirect_url}\n" -H "X-Forwarded-For: 81.2.69.142" "http://127.0.0.1:$WP$PATH_"
curl -fs -o /dev/null -w "nginx: %{http_code} -> %{redirect_url}\n" "http://127.0.0.1:$NP$PATH_"

# Clients spread over the world: one X-Forwarded-For per request from a fixed list.
write_xff_lua "$W/xff.lua"
rate() { wrk -t1 -c32 -d"${SECS}s" -s "$W/xff.lua" "$1" | tee "$W/last.txt" >&2; awk '/Requests\/sec/ {print $2}' "$W/last.txt"; }
echo "== wharf ($VERIFIED verified mirrors, GeoIP: ${GEO:-none})" >&2
WR=$(rate "http://127.0.0.1:$WP$PATH_")
echo "== nginx return 307" >&2
NR=$(rate "http://127.0.0.1:$NP$PATH_")
python3 - "$WR" "$NR" <<'PY'
import sys
w, n = float(sys.argv[1]), float(sys.argv[2])
print(f"wharf {w:,.0f} req/s, nginx {n:,.0f} req/s, ratio wharf/nginx = {w/n:.2f}")
PY
