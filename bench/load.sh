#!/usr/bin/env bash
# Load: 256 connections of mixed /v2 traffic (manifests by tag and digest, HEADs, blob
# redirects to 20 verified mirrors, tag lists, the catalog, /v2/) for SECS seconds against
# `wharf serve`; then the blob-redirect p99 alone, and again while syncs (with new content
# upstream each time) and crawls run. Prints errors, RSS growth and p99s; the targets are
# zero errors, RSS growth under 10 % and redirect p99 during sync+crawl under 2x.
#
# Usage: bench/load.sh [SECS]   (default 60; needs wrk and nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
source bench/lib.sh
# Wharf runs with two malloc arenas unless MALLOC_ARENA_MAX is set; MALLOC_ARENA_MAX= to
# measure glibc's default.
bench_start wrk nginx python3
WP=$(free_port); MP=$(free_port)
write_config "$WP"
# An upstream of generated repositories (plus the demo's images); `more N` adds N more.
cat > "$W/gen.py" <<'PY'
import hashlib, json, os, random, sys
root, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(start)
for r in range(start, start + count):
    repo = os.path.join(root, "gen", f"r{r:04d}")
    blobs = os.path.join(repo, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    def put(b):
        h = hashlib.sha256(b).hexdigest()
        open(os.path.join(blobs, h), "wb").write(b)
        return {"digest": "sha256:" + h, "size": len(b)}
    layers = [dict(put(rnd.randbytes(64 << 10)), mediaType="application/vnd.oci.image.layer.v1.tar") for _ in range(8)]
    cfg = dict(put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()), mediaType="application/vnd.oci.image.config.v1+json")
    m = dict(put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": layers}).encode()), mediaType="application/vnd.oci.image.manifest.v1+json")
    m["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    open(os.path.join(repo, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    open(os.path.join(repo, "index.json"), "w").write(json.dumps({"schemaVersion": 2, "manifests": [m]}))
PY
"$WHARF" demo --write-images "$W/up"
python3 "$W/gen.py" "$W/up" 0 50
wharf_cli sync >/dev/null
start_mirrors "$MP"
start_wharf "$WP"
wharf_cli crawl >/dev/null || true
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVE/status"; }

# The request mix: every request is valid, so any non-2xx/3xx answer is an error. (No HEAD:
# wrk does not know a HEAD response has no body and waits for one.)
B=http://127.0.0.1:$WP
APP_BLOB=$(curl -fs "$B/v2/demo/app/manifests/1.0" | python3 -c 'import json,sys;print(json.load(sys.stdin)["layers"][1]["digest"])')
MULTI=$(curl -fsI -H 'Accept: application/vnd.oci.image.index.v1+json' "$B/v2/demo/multi/manifests/latest" | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}' | tr -d '\r')
GEN_BLOB=$(curl -fs "$B/v2/gen/r0007/manifests/v1" | python3 -c 'import json,sys;print(json.load(sys.stdin)["layers"][3]["digest"])')
cat > "$W/mix.lua" <<LUA
local ips = {"81.2.69.142","2.125.160.216","89.160.20.112","216.160.83.56","175.16.199.0","67.43.156.0"}
local oci = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
local reqs = {
  {"GET", "/v2/demo/app/blobs/$APP_BLOB"}, {"GET", "/v2/gen/r0007/blobs/$GEN_BLOB"},
  {"GET", "/v2/demo/app/blobs/$APP_BLOB"}, {"GET", "/v2/gen/r0007/blobs/$GEN_BLOB"},
  {"GET", "/v2/demo/app/manifests/1.0"}, {"GET", "/v2/demo/multi/manifests/latest"},
  {"GET", "/v2/demo/multi/manifests/$MULTI"}, {"GET", "/v2/gen/r0021/manifests/v1"},
  {"GET", "/v2/demo/app/tags/list"}, {"GET", "/v2/_catalog?n=20"}, {"GET", "/v2/"},
}
local i = 0
request = function()
  i = i + 1
  local r = reqs[(i % #reqs) + 1]
  wrk.headers["X-Forwarded-For"] = ips[(i % #ips) + 1]
  wrk.headers["Accept"] = oci
  return wrk.format(r[1], r[2])
end
LUA
write_xff_lua "$W/xff.lua"
p99() { awk '$1=="99%" {print $2}' "$1"; }
ms() { python3 -c "import sys;v=sys.argv[1];u={'us':1e-3,'ms':1,'s':1e3};n=v.rstrip('usm');print(float(n)*u[v[len(n):]])" "$1"; }

# Warm up at the same concurrency: connection buffers and allocator arenas grow once.
wrk -t2 -c256 -d15s -s "$W/mix.lua" "$B" >/dev/null
RSS0=$(rss)
echo "== mixed /v2 traffic, 256 connections, ${SECS}s" >&2
wrk -t2 -c256 -d"${SECS}s" --latency -s "$W/mix.lua" "$B" > "$W/mix.txt" &
MIX=$!
SAMPLES=""
while kill -0 $MIX 2>/dev/null; do SAMPLES="$SAMPLES $(( $(rss) / 1024 ))"; sleep 5; done
cat "$W/mix.txt" >&2
echo "RSS every 5 s (MiB):$SAMPLES" >&2
RSS1=$(rss)
ERRORS=$(python3 - "$W/mix.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
n = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", t))
n += sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
print(n)
PY
)

BLOB=$B/v2/demo/app/blobs/$APP_BLOB
echo "== blob redirects alone, 64 connections, 20s" >&2
wrk -t1 -c64 -d20s --latency -s "$W/xff.lua" "$BLOB" | tee "$W/quiet.txt" >&2
echo "== blob redirects while syncs (new repositories upstream each time) and crawls run" >&2
( n=50; end=$((SECONDS + 20)); while [ $SECONDS -lt $end ]; do
    python3 "$W/gen.py" "$W/up" $n 5; n=$((n + 5))
    wharf_cli sync >/dev/null || true
    wharf_cli crawl >/dev/null || true
    echo x >> "$W/jobs.count"
  done ) &
JOBS=$!
wrk -t1 -c64 -d20s --latency -s "$W/xff.lua" "$BLOB" | tee "$W/busy.txt" >&2
wait $JOBS || true
RUNS=$(wc -l < "$W/jobs.count" 2>/dev/null || echo 0)

python3 - "$RSS0" "$RSS1" "$ERRORS" "$(p99 "$W/mix.txt")" "$(awk '/Requests\/sec/ {print $2}' "$W/mix.txt")" \
  "$(ms "$(p99 "$W/quiet.txt")")" "$(ms "$(p99 "$W/busy.txt")")" "$RUNS" "$SAMPLES" <<'PY'
import sys
rss0, rss1, errors, mix_p99, mix_rate, quiet, busy, runs, samples = sys.argv[1:]
rss0, rss1, quiet, busy = int(rss0), int(rss1), float(quiet), float(busy)
growth = (rss1 - rss0) / rss0 * 100
print(f"mixed: {float(mix_rate):,.0f} req/s, p99 {mix_p99}, errors {errors}")
print(f"RSS {rss0/1024:.1f} MiB -> {rss1/1024:.1f} MiB ({growth:+.1f} %, target < 10 %); during the run (MiB):{samples}")
print(f"redirect p99 quiet {quiet:.2f} ms, during {runs} sync+crawl rounds {busy:.2f} ms: ratio {busy/quiet:.2f} (target < 2)")
PY
