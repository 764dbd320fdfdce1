# Shared setup of the benchmark scripts (sourced, not run): a release build (BENCH_PROFILE=debug
# for quick trials of a script), a temp dir removed on exit, free ports, a Wharf config, 20
# mirrors served by one nginx.

BENCH_PROFILE=${BENCH_PROFILE:-release}
TARGET=$PWD/target/$BENCH_PROFILE

# bench_build [CARGO_ARGS...]: build in $BENCH_PROFILE (e.g. `bench_build --examples`).
bench_build() {
  if [ "$BENCH_PROFILE" = release ]; then cargo build --release -q "$@"; else cargo build -q "$@"; fi
}

# bench_start TOOL...: check the tools, build, make $W; sets WHARF and W.
bench_start() {
  for t in "$@"; do command -v "$t" >/dev/null || { echo "install $t (apt-get install $t)" >&2; exit 1; }; done
  bench_build
  WHARF=$TARGET/wharf
  W=$(mktemp -d); chmod 755 "$W"
  trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$W"' EXIT
  mkdir -p "$W/up" "$W/data"
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# write_config PORT [EXTRA_TOML]: $W/wharf.toml, upstream oci:$W/up, no schedules, mirrors
# on loopback allowed.
write_config() {
  cat > "$W/wharf.toml" <<TOML
[server]
listen = "127.0.0.1:$1"
trusted_proxies = ["127.0.0.1/32"]
[storage]
data_dir = "$W/data"
[upstream]
url = "oci:$W/up"
[schedule]
sync = "0 0 0 31 2 *"
crawl = "0 0 0 31 2 *"
[crawl]
# The mirrors here are on loopback.
allow_private_addresses = true
${2:-}
TOML
}

wharf_cli() { RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" "$@"; }

# start_mirrors PORT [NGINX_SERVER_BLOCKS]: 20 mirrors in 20 countries (and weights), all
# one nginx on PORT serving the tree, registered with Wharf; extra server blocks may follow.
start_mirrors() {
  local mp=$1
  local countries=(DE FR US JP BR GB NL SE PL IT ES CA AU IN ZA KR CN RU MX AR)
  for i in "${!countries[@]}"; do
    mirror_link "m$i"
    wharf_cli mirror add --name "m$i" --url "http://127.0.0.1:$mp/m$i/" \
      --country "${countries[$i]}" --bandwidth $(( (i % 5 + 1) * 200 )) >/dev/null
  done
  start_nginx "$@"
}

# mirror_link NAME: the tree at http://127.0.0.1:<nginx port>/NAME/ (once start_nginx runs).
mirror_link() {
  mkdir -p "$W/mirror"
  [ -L "$W/mirror/tree" ] || ln -s "$W/data/tree" "$W/mirror/tree"
  ln -sfn "$W/mirror/tree" "$W/mirror/$1"
}

# start_nginx PORT [NGINX_SERVER_BLOCKS]: one nginx on PORT serving $W/mirror (the mirrors
# mirror_link made), in the background (its pid in NGINX); extra server blocks may follow.
start_nginx() {
  local mp=$1
  mkdir -p "$W/mirror" "$W/nginx/logs" "$W/nginx/tmp"
  local user_line=""; [ "$(id -u)" = 0 ] && user_line="user root;"
  cat > "$W/nginx/nginx.conf" <<NGX
$user_line
daemon off; worker_processes 1; pid $W/nginx/nginx.pid; error_log $W/nginx/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx/tmp/b; proxy_temp_path $W/nginx/tmp/p; fastcgi_temp_path $W/nginx/tmp/f;
  uwsgi_temp_path $W/nginx/tmp/u; scgi_temp_path $W/nginx/tmp/s;
  server { listen 127.0.0.1:$mp; root $W/mirror; }
  ${2:-}
}
NGX
  nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" &
  NGINX=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$mp/" && break; sleep 0.1; done
}

# start_wharf PORT: `wharf serve` in the background (its pid in SERVE), once it answers.
start_wharf() {
  RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" serve &
  SERVE=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/readyz" >/dev/null && break; sleep 0.1; done
}

# write_xff_lua FILE: a wrk script that GETs its URL with one X-Forwarded-For per request,
# clients spread over the world.
write_xff_lua() {
  cat > "$1" <<'LUA'
local ips = {"81.2.69.142","2.125.160.216","89.160.20.112","216.160.83.56","175.16.199.0",
             "67.43.156.0","202.196.224.0","111.235.160.0","149.101.100.0","12.81.92.0"}
local i = 0
request = function()
  i = i + 1
  wrk.headers["X-Forwarded-For"] = ips[(i % #ips) + 1]
  return wrk.format("GET", nil)
end
LUA
}

# ---- Helpers of bench/redirect.sh, bench/sync.sh and bench/crawl.sh ----

# catalog_synced REPOSxTAGS: a catalog generated into $W/up (examples/gen_catalog, needs GEN)
# and synced into $W/data by `wharf sync` ($W/sync.out, GNU time's line in $W/sync.time).
# With BENCH_STATE=DIR, one generated and synced there before for that size is hardlinked
# instead (the store file copied: the server writes it), and a new one is left there, so the
# million-blob runs of several scripts share one sync of a quarter of an hour.
catalog_synced() {
  local size=$1 kept=${BENCH_STATE:+$BENCH_STATE/$1}
  if [ -n "$kept" ] && [ -f "$kept/done" ]; then
    bench_log "the catalog $size synced before, from $kept"
    rm -rf "$W/up" "$W/data"
    cp -al "$kept/up" "$W/up"
    cp -al "$kept/data" "$W/data"
    rm "$W/data/wharf.redb"; cp "$kept/data/wharf.redb" "$W/data/wharf.redb"
    cp "$kept/sync.out" "$kept/sync.time" "$W/"
  else
    bench_log "generating the catalog $size"
    bench_log "$("$GEN" catalog --out "$W/up" --repos "${size%x*}" --tags "${size#*x}")"
    RUST_LOG=warn /usr/bin/time -f "%e s, max RSS %M KiB" -o "$W/sync.time" "$WHARF" \
      --config "$W/wharf.toml" sync > "$W/sync.out"
    if [ -n "$kept" ]; then
      rm -rf "$kept"; mkdir -p "$kept"
      cp -al "$W/up" "$kept/up"
      cp -al "$W/data" "$kept/data"
      rm "$kept/data/wharf.redb"; cp "$W/data/wharf.redb" "$kept/data/wharf.redb"
      cp "$W/sync.out" "$W/sync.time" "$kept/"
      touch "$kept/done"
    fi
  fi
  bench_log "$(cat "$W/sync.out") ($(cat "$W/sync.time"))"
}

# need_time: GNU time (for `/usr/bin/time -v`), or exit with the install hint.
need_time() { [ -x /usr/bin/time ] || { echo "install GNU time (apt-get install time)" >&2; exit 1; }; }

# bench_log MESSAGE...: a timestamped progress line on stderr.
bench_log() { echo "[$(date +%T)] $*" >&2; }

# geolite_city: the path of the real GeoLite2-City.mmdb that PyPI's maxminddb-geolite2 ships
# (2018 data; used where it is installed, never copied into the repository), or exit.
geolite_city() {
  local p
  p=$(python3 -c 'import _maxminddb_geolite2 as m,os;print(os.path.join(os.path.dirname(m.__file__),"GeoLite2-City.mmdb"))' 2>/dev/null || true)
  [ -f "$p" ] || { echo "install the GeoLite2-City database: pip install maxminddb-geolite2" >&2; exit 1; }
  echo "$p"
}

# client_ips MMDB [PER_COUNTRY]: public IPv4 addresses, up to PER_COUNTRY (default 3) in each
# country the database knows (about 200 countries), one a line; deterministic (seeded).
client_ips() {
  python3 - "$1" "${2:-3}" <<'PY'
import ipaddress, random, sys
import maxminddb
db, per = maxminddb.open_database(sys.argv[1]), int(sys.argv[2])
rnd, seen = random.Random(1), {}
for _ in range(200000):
    a = ipaddress.IPv4Address(rnd.getrandbits(32))
    if not a.is_global:
        continue
    c = ((db.get(str(a)) or {}).get("country") or {}).get("iso_code")
    if c and len(seen.setdefault(c, [])) < per:
        seen[c].append(str(a))
for c in sorted(seen):
    print("\n".join(seen[c]))
PY
}

# write_paths_lua OUT PATHS_FILE [IP...]: a wrk script that GETs the paths of PATHS_FILE (one
# a line) in turn, each thread from its own offset, with an X-Forwarded-For drawn from the IPs
# (none: no header); with ACCEPT set (`ACCEPT=... write_paths_lua ...`), that Accept header;
# with METHOD set, that method instead of GET.
write_paths_lua() {
  local out=$1 paths=$2; shift 2
  {
    printf 'local paths, ips, accept, method = {}, {%s}, "%s", "%s"\n' \
      "$(printf '"%s",' "$@" | sed 's/,$//; s/^""$//')" "${ACCEPT:-}" "${METHOD:-GET}"
    printf 'for l in io.lines("%s") do if #l > 0 then paths[#paths + 1] = l end end\n' "$paths"
    cat <<'LUA'
assert(#paths > 0, "no paths")
local threads, n = 0, 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) n = ((tid or 1) - 1) * 7919 end
if #accept > 0 then wrk.headers["Accept"] = accept end
request = function()
  n = n + 1
  if #ips > 0 then wrk.headers["X-Forwarded-For"] = ips[math.random(#ips)] end
  return wrk.format(method, paths[(n % #paths) + 1])
end
LUA
  } > "$out"
}

# wrk_run NAME URL LUA [CONNECTIONS]: wrk for $SECS seconds (one thread, 32 connections by
# default, --latency), its output in $W/NAME.wrk; prints "REQ_PER_S P99_MS ERRORS" (errors:
# non-2xx/3xx answers plus socket errors) and logs it.
wrk_run() {
  wrk -t1 -c"${4:-32}" -d"${SECS}s" --latency -s "$3" "$2" > "$W/$1.wrk" 2>&1 || true
  local s
  s=$(wrk_stats "$W/$1.wrk")
  bench_log "$1: $s (req/s, p99 ms, errors) $2"
  echo "$s"
}

# wrk_stats FILE: "REQ_PER_S P99_MS ERRORS" from wrk --latency output.
wrk_stats() {
  python3 - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rate = re.search(r"Requests/sec:\s*([\d.]+)", t)
p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\b", t, re.M)
errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", t))
errors += sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[p99.group(2)] if p99 else float("nan")
print(f"{float(rate.group(1)) if rate else 0:.0f} {ms:.2f} {errors}")
PY
}

# time_stats FILE: "WALL_S MAX_RSS_MIB" from `/usr/bin/time -v -o FILE` output.
time_stats() {
  awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; w = s}
    /Maximum resident set size/ {r = $2 / 1024} END {printf "%.2f %.1f\n", w, r}' "$1"
}

# proc_kib PID FIELD: a /proc/PID/status field in KiB (VmRSS, VmHWM).
proc_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# write_registry_config FILE PORT ROOT [REDIRECT_BASEURL]: a docker-registry (distribution)
# config: filesystem storage in ROOT, the usual in-memory blob descriptor cache, errors-only
# logging, and with REDIRECT_BASEURL the storage redirect middleware (blob GETs answered 307).
write_registry_config() {
  cat > "$1" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $3}
  cache: {blobdescriptor: inmemory}
http: {addr: 127.0.0.1:$2}
YML
  [ -z "${4:-}" ] || printf 'middleware:\n  storage:\n    - name: redirect\n      options: {baseurl: %s}\n' "$4" >> "$1"
}

# start_registry CONFIG PORT: `docker-registry serve CONFIG` in the background (pid in
# REGISTRY, log in CONFIG.log) once /v2/ answers.
start_registry() {
  docker-registry serve "$1" > "$1.log" 2>&1 &
  REGISTRY=$!
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$2/v2/" && return; sleep 0.1; done
  echo "docker-registry did not start:" >&2; cat "$1.log" >&2; exit 1
}

# registry_wharf_config HOST:PORT WHARF_PORT [REPO...]: $W/wharf.toml (write_config) with the
# registry at HOST:PORT as upstream (every repository, or these), and an empty $W/data.
registry_wharf_config() {
  local reg=$1 repos=""; shift
  write_config "$1"; shift
  [ $# = 0 ] || repos="repositories = [$(printf '"%s",' "$@" | sed 's/,$//')]"
  python3 - "$W/wharf.toml" "http://$reg" "$repos" <<'PY'
import sys
path, url, repos = sys.argv[1:]
lines = [l if not l.startswith('url = "oci:') else f'url = "{url}"' + (f"\n{repos}" if repos else "")
         for l in open(path).read().split("\n")]
open(path, "w").write("\n".join(lines))
PY
  rm -rf "$W/data"; mkdir -p "$W/data"
}

# push_layouts HOST:PORT DIR [REPO...]: push every tag of the OCI layouts DIR/REPO (default:
# every layout under DIR) to a registry over the distribution API, bytes unchanged (skopeo's
# oci: transport skips descriptors with Docker media types, and skopeo compresses
# uncompressed layers on the way to a registry); prints the pushed
# config and layer blobs as /v2/REPO/blobs/DIGEST paths.
push_layouts() {
  python3 - "$@" <<'PY'
import http.client, json, os, sys, threading
from concurrent.futures import ThreadPoolExecutor
host, root, repos = sys.argv[1], sys.argv[2], sys.argv[3:]
if not repos:
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        if "oci-layout" in files:
            repos.append(os.path.relpath(d, root)); subdirs[:] = []
local = threading.local()
def req(method, path, body=None, headers={}):
    if getattr(local, "c", None) is None:
        local.c = http.client.HTTPConnection(host, timeout=60)
    try:
        local.c.request(method, path, body=body, headers=headers)
        r = local.c.getresponse(); data = r.read()
    except (http.client.HTTPException, OSError):
        local.c = None; raise
    return r, data
def push_repo(repo):
    layout = os.path.join(root, repo)
    read = lambda d: open(os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1]), "rb").read()
    blobs, out = set(), []
    def blob(d):
        if d in blobs: return
        blobs.add(d)
        r, _ = req("HEAD", f"/v2/{repo}/blobs/{d}")
        if r.status == 200: return
        r, _ = req("POST", f"/v2/{repo}/blobs/uploads/", b"")
        assert r.status == 202, (repo, d, r.status)
        loc = r.getheader("Location"); loc = loc[loc.index("/v2/"):] if "://" in loc else loc
        path = os.path.join(layout, "blobs", "sha256", d.split(":", 1)[1])
        with open(path, "rb") as f:   # streamed: layers may be large
            r, body = req("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + d, f,
                          {"Content-Type": "application/octet-stream",
                           "Content-Length": str(os.path.getsize(path))})
        assert r.status == 201, (repo, d, r.status, body[:200])
    def manifest(desc, ref):
        m = json.loads(read(desc["digest"]))
        if "manifests" in m:
            for child in m["manifests"]: manifest(child, child["digest"])
        else:
            for b in [m["config"]] + m["layers"]:
                blob(b["digest"]); out.append(f"/v2/{repo}/blobs/{b['digest']}")
        r, body = req("PUT", f"/v2/{repo}/manifests/{ref}", read(desc["digest"]),
                      {"Content-Type": desc.get("mediaType") or m["mediaType"]})
        assert r.status == 201, (repo, ref, r.status, body[:300])
    index = json.load(open(os.path.join(layout, "index.json")))
    for desc in index["manifests"]:
        manifest(desc, desc["annotations"]["org.opencontainers.image.ref.name"])
    return out
with ThreadPoolExecutor(8) as pool:
    for paths in pool.map(push_repo, repos):
        print("\n".join(dict.fromkeys(paths)))
PY
}

# register_mirrors TSV [FIRST [LAST]]: `wharf mirror add` for lines FIRST..LAST (1-based;
# default all) of a `gen_catalog mirrors` TSV (name, url, country, bandwidth, netblock), one
# CLI call each (through the control socket while the server runs, which is faster than on a
# store opened by each call); prints the mean milliseconds per mirror.
register_mirrors() {
  local t0 n=0 name url country bw net
  t0=$(date +%s%3N)
  while IFS=$'\t' read -r name url country bw net; do
    wharf_cli mirror add --name "$name" --url "$url" --country "$country" --bandwidth "$bw" \
      ${net:+--netblock "$net"} < /dev/null > /dev/null
    n=$((n + 1))
  done < <(sed -n "${2:-1},${3:-\$}p" "$1")
  echo $(( ($(date +%s%3N) - t0) / (n > 0 ? n : 1) ))
}

# now_ms: milliseconds since the epoch.
now_ms() { date +%s%3N; }

# wait_200 URL: milliseconds since T0 until URL answers 200 (fails after 10 minutes, or at
# once if the server $SERVE died; its stderr is in $W/serve.err).
wait_200() {
  local end=$(( $(now_ms) + 600000 ))
  until curl -fs -o /dev/null --max-time 5 "$1"; do
    kill -0 "$SERVE" 2>/dev/null || { echo "wharf serve died:" >&2; cat "$W/serve.err" >&2; exit 1; }
    [ "$(now_ms)" -lt $end ] || { echo "$1 did not answer 200 in 10 minutes" >&2; exit 1; }
    sleep 0.01
  done
  echo $(( $(now_ms) - T0 ))
}
