#!/usr/bin/env bash
# The static registry view at a generated catalog: what it costs a sync, and what a mirror's
# nginx serving it answers next to Wharf itself.
#  1. A catalog of REPOSxTAGS (examples/gen_catalog, `oci:` upstream, offline) synced in full
#     (the view is published with every layout); the view's size (entries, bytes beyond the
#     pool: its manifests are hardlinks).
#  2. A no-op `wharf sync`, and one after a tag moved (gen_catalog touch): that publication
#     rewrites the content-set lists, which name the view's files read from disk.
#  3. wrk over GET /v2/<name>/manifests/<tag> for every tag: `wharf serve` (the trusted
#     source, a manifest from its cache or one store read) next to an nginx with the
#     configuration `wharf mirror registry-config --server nginx` prints, serving the same
#     tree (a try_files over four names and a static file); the ratio nginx / Wharf.
#  With BASE_WHARF=<a wharf binary built without the view> the same syncs run with it too,
#  side by side (its own data dir, the same upstream): what the view adds to a sync.
# Usage: bench/registry-view.sh [REPOSxTAGS]   (default 1000x10; SECS for wrk, default 10;
# BENCH_STATE=DIR reuses a synced catalog; BENCH_PROFILE=debug and e.g. 20x2 for a trial).
# Needs wrk, curl, python3, nginx, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE=${1:-1000x10}
SECS=${SECS:-10}
[[ $SIZE =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad size $SIZE: use REPOSxTAGS, e.g. 1000x10" >&2; exit 1; }
bench_start wrk curl python3 nginx
need_time
bench_build --examples
GEN=$TARGET/examples/gen_catalog
WP=$(free_port); B=http://127.0.0.1:$WP
write_config "$WP"
catalog_synced "$SIZE"
TREE=$W/data/tree

# timed NAME [BINARY CONFIG]: `wharf sync` under GNU time; prints "WALL_S MAX_RSS_MIB".
timed() {
  /usr/bin/time -f "%e %M" -o "$W/$1.time" env RUST_LOG=warn "${2:-$WHARF}" --config "${3:-$W/wharf.toml}" sync \
    > "$W/$1.out" 2>&1 || { echo "$1 failed:" >&2; tail -n 20 "$W/$1.out" >&2; exit 1; }
  bench_log "$1: $(tail -n1 "$W/$1.out")"
  read -r secs kib < "$W/$1.time"
  echo "$secs $(( kib / 1024 ))"
}
read -r NS NR <<< "$(timed noop)"
BF=-; BFR=-; BN=-; BNR=-; BT=-; BTR=-
if [ -n "${BASE_WHARF:-}" ]; then
  mkdir -p "$W/base"
  sed -e "s|$W/data|$W/base|" "$W/wharf.toml" > "$W/base.toml"
  read -r BF BFR <<< "$(timed base-full "$BASE_WHARF" "$W/base.toml")"
  read -r BN BNR <<< "$(timed base-noop "$BASE_WHARF" "$W/base.toml")"
fi
bench_log "$("$GEN" touch --out "$W/up" --repo-index 0)"
read -r TS TR <<< "$(timed one-tag-moved)"
[ -z "${BASE_WHARF:-}" ] || read -r BT BTR <<< "$(timed base-one-tag-moved "$BASE_WHARF" "$W/base.toml")"

ENTRIES=$(find "$TREE/v2" -type f | wc -l)
TAGFILES=$(find "$TREE/v2" -path '*/_manifests/*' -type f ! -name 'sha256:*' | wc -l)
# du counts a hardlinked inode once, under the first argument that names it: the pool first,
# so what is left under v2/ is what the view adds (directories and tags lists).
VIEW_KIB=$(du -sk "$TREE/blobs" "$TREE/v2" | awk 'NR == 2 { print $1 }')
POOL_KIB=$(du -sk "$TREE/blobs" | awk '{ print $1 }')
SETS=$(ls "$TREE/content-sets" 2>/dev/null | tr '\n' ' ')

find "$TREE/v2" -path '*/_manifests/*' -type f ! -name 'sha256:*' -printf '%P\n' \
  | sed -E 's#^(.*)/_manifests/(.*)\.[a-z-]+$#/v2/\1/manifests/\2#' > "$W/tags"
N=$(wc -l < "$W/tags")
ACCEPT="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"
write_paths_lua "$W/tags.lua" "$W/tags"

start_wharf "$WP"
NP=$(free_port)
# One nginx worker (lib.sh's start_nginx), the generated server block as its extra block.
start_nginx "$(free_port)" "$(wharf_cli mirror registry-config --server nginx --root "$TREE/" --listen "127.0.0.1:$NP")"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NP/v2/" && break; sleep 0.1; done
first=$(head -1 "$W/tags")
a=$(curl -fs -H "Accept: $ACCEPT" "$B$first" | sha256sum)
b=$(curl -fs -H "Accept: $ACCEPT" "http://127.0.0.1:$NP$first" | sha256sum)
[ "$a" = "$b" ] || { echo "nginx and Wharf serve different bytes for $first" >&2; exit 1; }

read -r WR WP99 WE <<< "$(wrk_run wharf-manifests "$B" "$W/tags.lua")"
read -r XR XP99 XE <<< "$(wrk_run nginx-manifests "http://127.0.0.1:$NP" "$W/tags.lua")"

read -r FS FK <<< "$(awk '{ print $1, int($5 / 1024) }' "$W/sync.time")"
printf '\n%-44s %18s %22s\n' "sync of $SIZE (oci: upstream)" "with the view" "base (BASE_WHARF)"
printf '%-44s %9s %8s %11s %10s\n' "" "seconds" "peak MiB" "seconds" "peak MiB"
printf '%-44s %9s %8s %11s %10s\n' "full" "$FS" "$FK" "$BF" "$BFR"
printf '%-44s %9s %8s %11s %10s\n' "no-op" "$NS" "$NR" "$BN" "$BNR"
printf '%-44s %9s %8s %11s %10s\n' "one tag moved (content sets: $SETS)" "$TS" "$TR" "$BT" "$BTR"
printf '\n%-52s %s\n' "view files (tag files)" "$ENTRIES ($TAGFILES)"
printf '%-52s %s\n' "view beyond the pool / pool (KiB)" "$VIEW_KIB / $POOL_KIB"
printf '\n%-52s %10s %8s %7s\n' "GET /v2/<name>/manifests/<tag> ($N tags)" "req/s" "p99 ms" "errors"
printf '%-52s %10s %8s %7s\n' "wharf serve" "$WR" "$WP99" "$WE"
printf '%-52s %10s %8s %7s\n' "nginx, generated registry config" "$XR" "$XP99" "$XE"
python3 -c "print(f'nginx / Wharf: {$XR / max($WR, 0.01):.2f}x')"
