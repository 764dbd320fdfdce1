#!/usr/bin/env bash
# Scale: how Wharf's costs grow with the catalog. For each SIZE (REPOSxTAGS) it generates an
# `oci:` upstream with examples/gen_catalog.rs (about 9.3 pool files per tag, shared base
# layers, 10 % multi-arch, 10 % Docker media types), then measures with GNU time a full
# `wharf sync`, a no-op re-sync and a re-sync after one tag changed (wall time, max RSS), the
# store file and the pool; 100 offline `wharf mirror add` and `set` (no server running); then
# `wharf serve`: start-up until /healthz and /readyz answer,
# RSS after start and after a crawl of 20 mirrors (one nginx on loopback serving the tree),
# and how long a mirror edit takes to reach the blob redirects: from `wharf mirror set NAME
# --enabled false` until a client in that mirror's netblock is no longer sent to it, back with
# `--enabled true` and a crawl, and the same for `--active false|true` (the admin's opt-out).
# Ends with one table, a column per size.
#
# Usage: bench/scale.sh [SIZE...]   (default 1000x10 10000x10; needs nginx, curl, python3 and
# GNU time; BENCH_PROFILE=debug uses debug builds, for a quick trial at e.g. 50x4.) The
# temp dir (mktemp, so TMPDIR) needs about 10 GB and 2 M inodes at 10000x10; removing a
# size's files before the next one (and at exit) takes minutes there.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000x10 10000x10)
for s in "${SIZES[@]}"; do
  [[ $s =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad size $s: use REPOSxTAGS, e.g. 1000x10" >&2; exit 1; }
done
MIRRORS=20
# Wharf runs with two malloc arenas unless MALLOC_ARENA_MAX is set; glibc's default (an arena
# per thread, up to 8 per core) keeps freed pages in each blocking thread's arena:
# `MALLOC_ARENA_MAX= bench/scale.sh` measures that.
need_time
bench_start nginx curl python3
bench_build --examples
GEN=$TARGET/examples/gen_catalog
declare -A R   # R[SIZE|metric] = value

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SERVE/status"; }

# timed SIZE NAME ARGS...: `wharf ARGS` under GNU time; R[SIZE|NAME.s] = wall seconds,
# R[SIZE|NAME.rss] = max RSS in MiB; its output in $W/NAME.out. A non-zero exit is reported.
timed() {
  local size=$1 name=$2 rc=0; shift 2
  RUST_LOG=warn,wharf::store=info /usr/bin/time -v -o "$W/$name.time" "$WHARF" --config "$W/wharf.toml" "$@" \
    > "$W/$name.out" 2> "$W/$name.err" || rc=$?
  read -r "R[$size|$name.s]" "R[$size|$name.rss]" < <(time_stats "$W/$name.time")
  bench_log "wharf $*: ${R[$size|$name.s]} s, max RSS ${R[$size|$name.rss]} MiB, exit $rc: $(tail -n1 "$W/$name.out")"
  grep -E 'WARN|ERROR|compacted' "$W/$name.err" | sed -E 's/\x1b\[[0-9;]*m//g' | head -n 5 >&2 || true
  [ $rc = 0 ] || { R[$size|$name.s]="${R[$size|$name.s]} (exit $rc)"; cat "$W/$name.err" >&2; }
}


# redirect: where a blob GET from client $CLIENT (X-Forwarded-For, loopback is a trusted
# proxy) is sent.
redirect() {
  curl -s -o /dev/null -w '%{redirect_url}' -H "X-Forwarded-For: $CLIENT" "$B/v2/$REPO/blobs/$BLOB"
}

# until_redirect is|not URL: milliseconds since T0 until the redirect does (not) start with
# URL, and how many requests it took (1: the change was there when the command returned);
# "timeout" after 60 s.
until_redirect() {
  local end=$(( $(now_ms) + 60000 )) r n=0
  while :; do
    r=$(redirect); n=$(( n + 1 ))
    if [ "$1" = is ] && [[ $r == "$2"* ]]; then break; fi
    if [ "$1" = not ] && [[ $r != "$2"* ]]; then break; fi
    [ "$(now_ms)" -lt $end ] || { echo timeout; return; }
  done
  echo "$(( $(now_ms) - T0 )) ($n req)"
}

run_size() {
  local size=$1 repos=${1%x*} tags=${1#*x}
  rm -rf "$W/up" "$W/data" "$W/mirror" "$W/nginx"
  mkdir -p "$W/up" "$W/data"
  bench_log "== $size: generating the catalog"
  local gen
  gen=$("$GEN" catalog --out "$W/up" --repos "$repos" --tags "$tags")
  bench_log "$gen"
  R[$size|gen]=$(sed -E 's/.*: ([0-9]+) repos, ([0-9]+) tags .*, ([0-9]+) manifests, ([0-9]+) pool files, .*, ([0-9.]+) s$/\2 tags, \3 manifests, \4 files, \5 s/' <<< "$gen")
  WP=$(free_port); MP=$(free_port); B=http://127.0.0.1:$WP
  write_config "$WP"

  timed "$size" sync sync
  timed "$size" noop sync
  bench_log "$("$GEN" touch --out "$W/up" --repo-index $(( repos / 2 )))"
  timed "$size" touch sync
  R[$size|store]=$(du -m --apparent-size "$W/data/wharf.redb" | cut -f1)
  R[$size|pool]=$(find "$W/data/tree/blobs/sha256" -type f | wc -l)

  # Offline edits (no server running): 100 `mirror add` and `mirror set`, one command each
  # (a store open and one transaction), then removed again.
  bench_log "offline mirror edits"
  local i t0
  t0=$(now_ms)
  for i in $(seq 1 100); do
    wharf_cli mirror add --name "off$i" --url "http://10.77.$i.1/" --country DE > /dev/null
  done
  R[$size|offline_add]=$(( ($(now_ms) - t0) / 100 ))
  t0=$(now_ms)
  for i in $(seq 1 100); do wharf_cli mirror set "off$i" --bandwidth 500 > /dev/null; done
  R[$size|offline_set]=$(( ($(now_ms) - t0) / 100 ))
  for i in $(seq 1 100); do wharf_cli mirror remove "off$i" > /dev/null; done

  bench_log "starting wharf serve"
  T0=$(now_ms)
  RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" serve 2> "$W/serve.err" &
  SERVE=$!
  R[$size|healthz]=$(wait_200 "$B/healthz")
  R[$size|readyz]=$(wait_200 "$B/readyz")
  sleep 1
  R[$size|rss0]=$(rss_mib)

  bench_log "registering $MIRRORS mirrors through the server"
  "$GEN" mirrors --count $MIRRORS --base-url "http://127.0.0.1:$MP/" > "$W/mirrors.tsv"
  local name url net
  cut -f1 "$W/mirrors.tsv" | while read -r name; do mirror_link "$name"; done
  R[$size|add]=$(register_mirrors "$W/mirrors.tsv")
  start_nginx "$MP"
  timed "$size" crawl crawl
  R[$size|verified]="$(grep -c 'holds generation' "$W/crawl.out" || true)/$MIRRORS"
  R[$size|rss1]=$(rss_mib)

  # The mirror edited: the first with a netblock (given one if none has), and a client in it,
  # so the redirect goes to it and nowhere else while it is enabled.
  local target
  target=$(awk -F'\t' '$5 != "" {print $1 "\t" $2 "\t" $5; exit}' "$W/mirrors.tsv")
  if [ -z "$target" ]; then
    target=$(awk -F'\t' 'NR == 1 {print $1 "\t" $2 "\t10.250.0.0/16"}' "$W/mirrors.tsv")
    wharf_cli mirror set "${target%%$'\t'*}" --netblock 10.250.0.0/16 > /dev/null
  fi
  IFS=$'\t' read -r name url net <<< "$target"
  CLIENT=$(python3 -c 'import ipaddress,sys;print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$net")
  local repos_up=("$W"/up/lib/*)
  REPO=lib/${repos_up[0]##*/}
  BLOB=$(python3 - "$W/up/$REPO" <<'PY'
import json, os, sys
blobs = os.path.join(sys.argv[1], "blobs/sha256")
read = lambda d: json.load(open(os.path.join(blobs, d["digest"][7:])))
for d in json.load(open(os.path.join(sys.argv[1], "index.json")))["manifests"]:
    m = read(d)
    if "layers" in m:
        print(m["layers"][-1]["digest"]); break
PY
)
  T0=$(now_ms)
  if [ "$(until_redirect is "$url")" = timeout ]; then
    bench_log "a client in $net is not sent to $name ($(redirect)); skipping the edit latency"
    R[$size|off]=n/a; R[$size|on]=n/a; R[$size|out]=n/a; R[$size|in]=n/a
  else
    bench_log "mirror edit latency: $name ($net), client $CLIENT, $REPO blob $BLOB"
    # The operator's disable, and back: an operator-enabled mirror gets traffic again only
    # once a crawl has verified it anew (store::mirrors), so the crawl is part of the way back.
    T0=$(now_ms)
    wharf_cli mirror set "$name" --enabled false --reason "bench/scale.sh" > /dev/null
    R[$size|off_cli]=$(( $(now_ms) - T0 ))
    R[$size|off]=$(until_redirect not "$url")
    T0=$(now_ms)
    wharf_cli mirror set "$name" --enabled true --reason "" > /dev/null
    wharf_cli crawl > /dev/null || true
    R[$size|on]=$(until_redirect is "$url")
    # The mirror admin's opt-out and opt-in: both should reach the redirects at once.
    T0=$(now_ms)
    wharf_cli mirror set "$name" --active false > /dev/null
    R[$size|out]=$(until_redirect not "$url")
    T0=$(now_ms)
    wharf_cli mirror set "$name" --active true > /dev/null
    R[$size|in]=$(until_redirect is "$url")
  fi

  T0=$(now_ms)
  kill -TERM "$SERVE"; wait "$SERVE" || true
  R[$size|stop]=$(( $(now_ms) - T0 ))
  R[$size|errors]=$(grep -c ERROR "$W/serve.err" || true)
  kill "$NGINX"; wait "$NGINX" 2>/dev/null || true
}

for s in "${SIZES[@]}"; do run_size "$s"; done

# One row per figure, one column per size.
rows=(
  "gen|catalog (generated)"
  "sync.s|sync, full: wall s" "sync.rss|sync, full: max RSS MiB"
  "noop.s|sync, no-op: wall s" "noop.rss|sync, no-op: max RSS MiB"
  "touch.s|sync, 1 tag changed: wall s" "touch.rss|sync, 1 tag changed: max RSS MiB"
  "store|store wharf.redb MiB" "pool|pool files in the tree"
  "offline_add|mirror add, no server: mean ms" "offline_set|mirror set, no server: mean ms"
  "healthz|serve: /healthz answers after ms" "readyz|serve: /readyz 200 after ms"
  "rss0|serve: RSS after start MiB" "add|mirror add (via server), mean ms"
  "crawl.s|crawl $MIRRORS mirrors: wall s" "verified|mirrors verified by the crawl"
  "rss1|serve: RSS after crawl MiB"
  "off_cli|set --enabled false: CLI returns, ms" "off|  until redirects leave it, ms"
  "on|set --enabled true + crawl: redirects back, ms"
  "out|set --active false: redirects leave, ms" "in|set --active true: redirects back, ms"
  "stop|SIGTERM until exit, ms" "errors|serve: ERROR lines logged"
)
{
  printf '%-38s' "size (repos x tags)"; for s in "${SIZES[@]}"; do printf ' | %s' "$s"; done; echo
  for row in "${rows[@]}"; do
    printf '%-38s' "${row#*|}"
    for s in "${SIZES[@]}"; do printf ' | %s' "${R[$s|${row%%|*}]:--}"; done
    echo
  done
} | column -t -s '|' -o '|'
