#!/usr/bin/env bash
# Re-sync from a docker-registry: what a scheduled run costs when nothing (or one tag) changed
# upstream, next to how fast the same registry answers the requests such a run cannot avoid.
#  1. A generated catalog (examples/gen_catalog.rs) pushed into a local docker-registry
#     (CNCF distribution) over the distribution API, bytes unchanged; a full `wharf sync`.
#  2. A no-op `wharf sync` (every tag compared by a HEAD of its manifest, default [sync]
#     concurrency) and one after one tag moved to a new manifest, under GNU time.
#  3. The registry alone: ab sending the same HEAD (same Accept header, 8 connections) for
#     SECS seconds (wrk cannot: it waits for a HEAD answer's body). A registry answers one tag per request (there is no bulk digest API), so
#     its HEAD rate is the floor of any no-op re-sync; Wharf's tags/s over that rate is the
#     ratio printed, and 100,000 / Wharf's tags/s the estimate for the target size.
# Usage: bench/resync.sh [REPOSxTAGS]   (default 1000x10; env SECS for ab, default 10.)
# Needs docker-registry, curl, python3, jq, ab (apache2-utils) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE=${1:-1000x10}
SECS=${SECS:-10}
[[ $SIZE =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad size $SIZE: use REPOSxTAGS, e.g. 1000x10" >&2; exit 1; }
bench_start docker-registry curl python3 jq ab
need_time
bench_build --examples
GEN=$TARGET/examples/gen_catalog
RP=$(free_port); WP=$(free_port)
REG=127.0.0.1:$RP

write_registry_config "$W/registry.yml" "$RP" "$W/registry"
start_registry "$W/registry.yml" "$RP"
bench_log "generating the catalog $SIZE"
bench_log "$("$GEN" catalog --out "$W/up" --repos "${SIZE%x*}" --tags "${SIZE#*x}")"
bench_log "pushing it into docker-registry"
push_layouts "$REG" "$W/up" > /dev/null
rm -rf "$W/up"
registry_wharf_config "$REG" "$WP"

# timed NAME: `wharf sync` under GNU time; prints "WALL_S MAX_RSS_MIB"; the report's last
# line is logged.
timed() {
  local rc=0
  /usr/bin/time -v -o "$W/$1.time" env RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" sync \
    > "$W/$1.out" 2>&1 || rc=$?
  [ $rc = 0 ] || { echo "$1 failed (exit $rc):" >&2; tail -n 20 "$W/$1.out" >&2; exit 1; }
  bench_log "$1: $(tail -n1 "$W/$1.out")"
  time_stats "$W/$1.time"
}

bench_log "full sync"
read -r FT FRSS <<< "$(timed full)"
find "$W/data/tree/repositories" -name index.json -printf '%P\n' | while read -r p; do
  repo=${p%/index.json}
  jq -r --arg r "$repo" '.manifests[].annotations["org.opencontainers.image.ref.name"] | "/v2/\($r)/manifests/\(.)"' \
    "$W/data/tree/repositories/$p"
done > "$W/tags.paths"
TAGS=$(wc -l < "$W/tags.paths")
bench_log "$TAGS tags published"

bench_log "no-op re-sync"
read -r NT NRSS <<< "$(timed noop)"

# One tag moved: an OCI image manifest of the catalog with an annotation added, put under
# its tag (its config and layers are in the repository already).
MOVED=$(python3 - "$REG" "$W/tags.paths" <<'PY'
import http.client, json, sys
host, paths = sys.argv[1], open(sys.argv[2]).read().split()
oci = "application/vnd.oci.image.manifest.v1+json"
c = http.client.HTTPConnection(host, timeout=30)
for p in paths:
    c.request("GET", p, headers={"Accept": oci}); r = c.getresponse(); body = r.read()
    if r.status == 200 and r.getheader("Content-Type") == oci:
        m = json.loads(body); m["annotations"] = {"bench.resync": "moved"}
        c.request("PUT", p, json.dumps(m).encode(), {"Content-Type": oci})
        r = c.getresponse(); r.read()
        assert r.status == 201, (p, r.status)
        print(p); break
else:
    sys.exit("no OCI image manifest to move")
PY
)
bench_log "moved $MOVED; re-sync"
read -r OT ORSS <<< "$(timed onetag)"

bench_log "the registry alone: HEAD of one tag for ${SECS}s"
ab -q -i -k -c 8 -t "$SECS" -n 10000000 \
  -H "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json" \
  "http://$REG$MOVED" > "$W/ab.out" 2>&1 || { cat "$W/ab.out" >&2; exit 1; }
HR=$(awk '/^Requests per second/ {print $4}' "$W/ab.out")
HP99=$(awk '$1 == "99%" {print $2}' "$W/ab.out")
HERR=$(awk '/^(Failed requests|Non-2xx responses):/ {s += $NF} END {print s + 0}' "$W/ab.out")
bench_log "registry HEAD: $HR req/s, p99 $HP99 ms, $HERR failed"
[ "$HERR" = 0 ] || { echo "the registry answered $HERR HEADs with errors" >&2; cat "$W/ab.out" >&2; exit 1; }

python3 - "$SIZE" "$TAGS" "$FT" "$FRSS" "$NT" "$NRSS" "$OT" "$ORSS" "$HR" "$HP99" <<'PY'
import sys
size, tags = sys.argv[1], int(sys.argv[2])
ft, frss, nt, nrss, ot, orss, hr, hp99 = map(float, sys.argv[3:])
rate = tags / nt
print(f"\n== bench/resync.sh: {size} in a local docker-registry ({tags:,} tags)")
print(f"full sync: {ft:.1f} s, peak RSS {frss:.1f} MiB")
print(f"no-op re-sync: {nt:.2f} s, peak RSS {nrss:.1f} MiB = {rate:,.0f} tags/s")
print(f"one tag moved: {ot:.2f} s, peak RSS {orss:.1f} MiB (no-op + {ot - nt:.2f} s)")
print(f"the registry alone, HEAD by tag (ab, 8 connections): {hr:,.0f} req/s, p99 {hp99:.1f} ms")
print(f"RATIO wharf no-op tags/s / registry HEAD req/s = {rate / hr:.2f}")
print(f"estimate at 100,000 tags: wharf {100000 / rate:.0f} s; the registry's floor {100000 / hr:.0f} s (target < 60 s)")
PY
