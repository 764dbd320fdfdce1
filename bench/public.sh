#!/usr/bin/env bash
# Public pages: what anonymous visitors cost at a synced catalog. Measures, with wrk in one
# run against one `wharf serve`, the registry page (`/`), a search (`/?q=`), a repository's
# page (`/r/<name>`, over many repositories, so the bounded tag cache is also missed), a
# revalidation (`If-None-Match`: 304), the mirror status (`/mirrors`, `/api/v1/status`), next
# to the same server's `/v2/<name>/tags/list` (the pull API's store read, the reference), and
# the server's RSS before and after. The pages read the store at most once per generation
# (the repository list, 256 repositories' tags), so they should answer at least as fast as
# tags/list and leave RSS flat.
#
# Usage: bench/public.sh [REPOSxTAGS]   (default 10000x10; BENCH_STATE=DIR to share the synced
# catalog with other runs, see bench/lib.sh; BENCH_PROFILE=debug and e.g. 50x2 for a trial).
# Needs wrk, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE=${1:-10000x10}
SECS=${SECS:-10}
[[ $SIZE =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad size $SIZE: use REPOSxTAGS, e.g. 10000x10" >&2; exit 1; }
bench_start wrk curl python3
bench_build --examples
GEN=$TARGET/examples/gen_catalog
WP=$(free_port); B=http://127.0.0.1:$WP
write_config "$WP"
catalog_synced "$SIZE"
start_wharf "$WP"
rss() { echo "$(( $(proc_kib "$SERVE" VmRSS) / 1024 )) MiB"; }
bench_log "serving; RSS $(rss)"

curl -fs "$B/v2/_catalog?n=100000" | python3 -c 'import json,sys; [print(r) for r in json.load(sys.stdin)["repositories"]]' > "$W/repos"
REPOS=$(wc -l < "$W/repos")
sed 's|^|/r/|' "$W/repos" > "$W/repo-pages"
sed 's|^\(.*\)$|/v2/\1/tags/list|' "$W/repos" > "$W/tag-lists"
first=$(head -1 "$W/repos")
echo "/" > "$W/index"; echo "/?q=${first:0:4}" > "$W/search"
echo "/mirrors" > "$W/mirrors"; echo "/api/v1/status" > "$W/status"
for f in repo-pages tag-lists index search mirrors status; do write_paths_lua "$W/$f.lua" "$W/$f"; done
ETAG=$(curl -fsI "$B/" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" {print $2}')
cat > "$W/revalidate.lua" <<LUA
wrk.headers["If-None-Match"] = '$ETAG'
LUA
# A first visit of each kind (the one store read of this generation).
for p in / "/r/$first" /mirrors /api/v1/status; do
  bench_log "first GET $p: $(curl -fso /dev/null -w '%{time_total}' "$B$p") s"
done

printf '%-48s %10s %8s %7s\n' "what ($REPOS repositories listed)" "req/s" "p99 ms" "errors"
for row in "tags/list over those (the pull API):tag-lists" "/r/<name> over those:repo-pages" \
           "/ (the registry page):index" "/?q= (a search):search" "/mirrors:mirrors" "/api/v1/status:status"; do
  name=${row%%:*}; f=${row##*:}
  read -r rate p99 errors <<< "$(wrk_run "$f" "$B" "$W/$f.lua")"
  printf '%-48s %10s %8s %7s\n' "$name" "$rate" "$p99" "$errors"
  [ "$f" = tag-lists ] && ref=$rate
  [ "$f" = repo-pages ] && pages=$rate
done
read -r rate p99 errors <<< "$(wrk_run revalidate "$B/" "$W/revalidate.lua")"
printf '%-48s %10s %8s %7s\n' "/ revalidated (304)" "$rate" "$p99" "$errors"
python3 -c "print(f'/r/<name> vs tags/list: {$pages / $ref:.2f}x')"
bench_log "RSS after: $(rss) (VmHWM $(( $(proc_kib "$SERVE" VmHWM) / 1024 )) MiB)"
