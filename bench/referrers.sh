#!/usr/bin/env bash
# Referrers at a generated catalog: what finding attachments costs a sync, and what the
# referrers API costs a request.
#  1. Two catalogs of REPOSxTAGS (examples/gen_catalog, `oci:` upstreams, offline): a plain
#     one, and the same where every tag also has an SBOM behind the OCI referrers fallback tag
#     (`--sboms`); each synced in full.
#  2. A no-op `wharf sync` of each under GNU time (referrers on, the default). The plain run
#     asks once for the referrers API (an oci: upstream has none) and then does no attachment
#     work; the SBOM run resolves every fallback tag, reads its index and checks each SBOM.
#     Printed: both times, peak RSS, and the ratio.
#  3. `wharf serve` on the SBOM catalog: wrk over GET /v2/<name>/referrers/<digest> for every
#     tag (one SBOM descriptor each, one store read) next to the same server's
#     /v2/<name>/tags/list (also one store read, the pull API's reference), and the ratio.
# Usage: bench/referrers.sh [REPOSxTAGS]   (default 1000x10; SECS for wrk, default 10;
# BENCH_PROFILE=debug and e.g. 20x2 for a trial). Needs wrk, curl, python3, jq, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE=${1:-1000x10}
SECS=${SECS:-10}
[[ $SIZE =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad size $SIZE: use REPOSxTAGS, e.g. 1000x10" >&2; exit 1; }
bench_start wrk curl python3 jq
need_time
bench_build --examples
GEN=$TARGET/examples/gen_catalog
WP=$(free_port); B=http://127.0.0.1:$WP
write_config "$WP"
# The plain catalog: the same config over its own upstream and data dir.
mkdir -p "$W/plain/up" "$W/plain/data"
sed -e "s|$W/data|$W/plain/data|; s|oci:$W/up|oci:$W/plain/up|" "$W/wharf.toml" > "$W/plain.toml"

# sync NAME CONFIG: `wharf sync` under GNU time; prints "WALL_S MAX_RSS_MIB", logs the report.
sync() {
  /usr/bin/time -f "%e %M" -o "$W/$1.time" env RUST_LOG=warn "$WHARF" --config "$2" sync \
    > "$W/$1.out" 2>&1 || { echo "$1 failed:" >&2; tail -n 20 "$W/$1.out" >&2; exit 1; }
  bench_log "$1: $(tail -n1 "$W/$1.out")"
  read -r secs kib < "$W/$1.time"
  echo "$secs $(( kib / 1024 ))"
}

bench_log "$("$GEN" catalog --out "$W/plain/up" --repos "${SIZE%x*}" --tags "${SIZE#*x}")"
bench_log "$("$GEN" catalog --out "$W/up" --repos "${SIZE%x*}" --tags "${SIZE#*x}" --sboms)"
read -r PF PFR <<< "$(sync plain-full "$W/plain.toml")"
read -r SF SFR <<< "$(sync sboms-full "$W/wharf.toml")"
read -r PN PNR <<< "$(sync plain-noop "$W/plain.toml")"
read -r SN SNR <<< "$(sync sboms-noop "$W/wharf.toml")"

start_wharf "$WP"
find "$W/data/tree/repositories" -name index.json -printf '%P\n' | while read -r p; do
  repo=${p%/index.json}
  jq -r --arg r "$repo" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] // "" | startswith("sha256-") | not) | select(.annotations) | "/v2/\($r)/referrers/\(.digest)"' \
    "$W/data/tree/repositories/$p"
  echo "/v2/$repo/tags/list" >> "$W/tag-lists"
done > "$W/referrers"
N=$(wc -l < "$W/referrers")
first=$(head -1 "$W/referrers")
count=$(curl -fs "$B$first" | jq '.manifests | length')
[ "$count" = 1 ] || { echo "expected one SBOM at $first, got $count" >&2; exit 1; }
write_paths_lua "$W/referrers.lua" "$W/referrers"
write_paths_lua "$W/tag-lists.lua" "$W/tag-lists"
read -r RR RP99 RE <<< "$(wrk_run referrers "$B" "$W/referrers.lua")"
read -r TR TP99 TE <<< "$(wrk_run tag-lists "$B" "$W/tag-lists.lua")"

printf '\n%-52s %10s %10s\n' "sync of $SIZE (oci: upstream)" "seconds" "peak MiB"
printf '%-52s %10s %10s\n' "full, plain catalog" "$PF" "$PFR"
printf '%-52s %10s %10s\n' "full, every tag with an SBOM" "$SF" "$SFR"
printf '%-52s %10s %10s\n' "no-op, plain catalog" "$PN" "$PNR"
printf '%-52s %10s %10s\n' "no-op, every tag with an SBOM" "$SN" "$SNR"
printf '\n%-52s %10s %8s %7s\n' "serving ($N tags)" "req/s" "p99 ms" "errors"
printf '%-52s %10s %8s %7s\n' "GET /v2/<name>/referrers/<digest>" "$RR" "$RP99" "$RE"
printf '%-52s %10s %8s %7s\n' "GET /v2/<name>/tags/list (reference)" "$TR" "$TP99" "$TE"
python3 -c "print(f'no-op with SBOMs / plain no-op: {$SN / max($PN, 0.01):.2f}x; referrers vs tags/list: {$RR / $TR:.2f}x')"
bench_log "RSS after: $(( $(proc_kib "$SERVE" VmRSS) / 1024 )) MiB"
