#!/usr/bin/env bash
# Crawl: `wharf crawl` (a control-socket call to the running `wharf serve`) over M mirrors of
# a synced catalog. The mirrors are on loopback, spread over 10 nginx ports (one nginx, a
# symlink to the tree per mirror, as a path prefix):
#   10 % dead: 4 % refused (a port nothing listens on), 4 % 404 (a path nginx does not have),
#              2 % hung (a listener that accepts and never answers: costs request_timeout);
#    5 % slow: their marker is sent at 128 bytes/s (nginx limit_rate: about 2 s);
#   the rest healthy.
# The config sets [crawl] concurrency = 32, request_timeout = "4s" (dead mirrors fail within
# it; a slow marker takes ~2 s), mirror_timeout = "20s", total_timeout = "10min" (defaults:
# 8, 10s, 2min, 10min). Measures the crawl command's wall time under GNU time and the
# server's RSS (VmRSS, VmHWM) and CPU time before and after. Target: < 60 s for 1,000
# mirrors over about a million pool files (10000x10).
#
# Usage: bench/crawl.sh [MIRRORS] [REPOSxTAGS]   (default 1000 10000x10; BENCH_PROFILE=debug
# for a quick trial, e.g. `bench/crawl.sh 50 20x2`; BENCH_STATE=DIR to share the synced
# catalog with other runs, see bench/lib.sh.) Needs nginx, curl, python3, GNU time;
# the temp dir needs about 8 GB and 2 M inodes at 10000x10.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
M=${1:-1000}
SIZE=${2:-10000x10}
[[ $M =~ ^[0-9]+$ ]] || { echo "bad mirror count $M" >&2; exit 1; }
[[ $SIZE =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad size $SIZE: use REPOSxTAGS, e.g. 10000x10" >&2; exit 1; }
bench_start nginx curl python3
need_time
bench_build --examples
GEN=$TARGET/examples/gen_catalog
WP=$(free_port); B=http://127.0.0.1:$WP

write_config "$WP" 'concurrency = 32
request_timeout = "4s"
mirror_timeout = "20s"
total_timeout = "10min"'
catalog_synced "$SIZE"
rm -rf "$W/up"
POOL=$(find "$W/data/tree/blobs/sha256" -type f | wc -l)

# Ten nginx ports (the main one, P0, only answers start_nginx's readiness check); a port
# nothing listens on; a listener that never answers.
mapfile -t PORTS < <(for _ in $(seq 11); do free_port; done)
REFUSED=$(free_port); HUNG=$(free_port)
python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    held.append(s.accept()[0])' "$HUNG" &
SERVERS=""
for p in "${PORTS[@]:1}"; do
  SERVERS+="server { listen 127.0.0.1:$p; root $W/mirror;
    location ~ ^/slow/[^/]+/wharf-generation\\.json\$ { limit_rate 128; } }
"
done
mkdir -p "$W/mirror/slow"

# The mirrors: gen_catalog's countries, bandwidths and netblocks; URLs by kind (see above).
"$GEN" mirrors --count "$M" --base-url "http://127.0.0.1:0/" > "$W/gen.tsv"
awk -F'\t' -v OFS='\t' -v ports="${PORTS[*]:1}" -v refused="$REFUSED" -v hung="$HUNG" '
  BEGIN { n = split(ports, p, " ") }
  { i = NR - 1; port = p[int(i / 10) % n + 1]
    if (i % 10 == 9) { k = int(i / 10) % 5
      if (k <= 1)      { kind = "refused"; url = "http://127.0.0.1:" refused "/" $1 "/" }
      else if (k <= 3) { kind = "404";     url = "http://127.0.0.1:" port "/gone/" $1 "/" }
      else             { kind = "hung";    url = "http://127.0.0.1:" hung "/" $1 "/" } }
    else if (i % 20 == 4) { kind = "slow"; url = "http://127.0.0.1:" port "/slow/" $1 "/" }
    else                  { kind = "ok";   url = "http://127.0.0.1:" port "/" $1 "/" }
    print $1, url, $3, $4, $5 > "'"$W/mirrors.tsv"'"
    print $1, kind > "'"$W/kinds.tsv"'" }' "$W/gen.tsv"
while IFS=$'\t' read -r name kind; do
  case $kind in ok) mirror_link "$name" ;; slow) mirror_link "slow/$name" ;; esac
done < "$W/kinds.tsv"
start_nginx "${PORTS[0]}" "$SERVERS"

bench_log "starting wharf serve"
T0=$(now_ms)
RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" serve 2> "$W/serve.err" &
SERVE=$!
until curl -fs -o /dev/null "$B/readyz"; do
  kill -0 "$SERVE" 2>/dev/null || { echo "wharf serve died:" >&2; cat "$W/serve.err" >&2; exit 1; }
  [ $(( $(now_ms) - T0 )) -lt 600000 ] || { echo "not ready after 10 minutes" >&2; exit 1; }
  sleep 0.05
done
READY_MS=$(( $(now_ms) - T0 ))
bench_log "ready after $READY_MS ms; registering $M mirrors through the server"
ADD_MS=$(register_mirrors "$W/mirrors.tsv")
bench_log "mean $ADD_MS ms per mirror"

sleep 2   # let the selection rebuilds of the registrations settle
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$SERVE/stat"; }   # utime + stime
RSS0=$(proc_kib "$SERVE" VmRSS); HWM0=$(proc_kib "$SERVE" VmHWM); CPU0=$(cpu_s)
bench_log "crawling $M mirrors"
RUST_LOG=warn /usr/bin/time -v -o "$W/crawl.time" "$WHARF" --config "$W/wharf.toml" crawl \
  > "$W/crawl.out" 2> "$W/crawl.err" || true
RSS1=$(proc_kib "$SERVE" VmRSS); HWM1=$(proc_kib "$SERVE" VmHWM); CPU1=$(cpu_s)
read -r WALL CLI_RSS < <(time_stats "$W/crawl.time")
grep -q '^generation ' "$W/crawl.out" || { echo "the crawl did not finish:" >&2; cat "$W/crawl.err" >&2; exit 1; }

python3 - "$W/crawl.out" "$W/kinds.tsv" "$M" "$SIZE" "$POOL" "$WALL" "$RSS0" "$HWM0" "$RSS1" "$HWM1" \
  "$CPU0" "$CPU1" "$READY_MS" "$ADD_MS" <<'PY'
import collections, re, sys
out, kinds, m, size, pool, wall, rss0, hwm0, rss1, hwm1, cpu0, cpu1, ready, add = sys.argv[1:]
kind = dict(l.rstrip("\n").split("\t") for l in open(kinds))
verified, failed, ms = collections.Counter(), collections.Counter(), collections.defaultdict(list)
reasons = collections.Counter()
for line in open(out):
    g = re.match(r"(\S+): holds generation \d+ \(.*, (\d+) ms\)$", line)
    f = re.match(r"(\S+): FAILED: (.*)$", line)
    if g:
        verified[kind[g[1]]] += 1; ms[kind[g[1]]].append(int(g[2]))
    elif f:
        failed[kind[f[1]]] += 1
        reasons[(kind[f[1]], re.sub(r"http://\S+", "URL", f[2])[:70])] += 1
every = collections.Counter(kind.values())
mib = lambda k: f"{int(k) / 1024:.1f}"
print(f"\n== bench/crawl.sh: {m} mirrors, catalog {size} ({int(pool):,} pool files)")
print(f"kinds: " + ", ".join(f"{k} {every[k]}" for k in ("ok", "slow", "refused", "404", "hung")))
print(f"verified {sum(verified.values())} (expected {every['ok'] + every['slow']}), "
      f"failed {sum(failed.values())} (expected {m and int(m) - every['ok'] - every['slow']}), "
      f"not reached {int(m) - sum(verified.values()) - sum(failed.values())}")
for k in ("ok", "slow", "refused", "404", "hung"):
    v = sorted(ms[k])
    per = f", per-mirror crawl median {v[len(v) // 2]} ms, max {v[-1]} ms" if v else ""
    print(f"  {k:8} verified {verified[k]:5} failed {failed[k]:5}{per}")
for (k, r), n in reasons.most_common(6):
    print(f"  failure [{k}] x{n}: {r}")
print(f"crawl wall time {float(wall):.2f} s (target < 60 s for 1,000 mirrors at ~1M pool files)")
print(f"server RSS before {mib(rss0)} MiB (peak {mib(hwm0)}), after {mib(rss1)} MiB (peak {mib(hwm1)}); "
      f"server CPU for the crawl {float(cpu1) - float(cpu0):.2f} s")
print(f"serve ready after {ready} ms; mirror add through the server: mean {add} ms")
PY
