#!/usr/bin/env bash
# Blob redirects and manifests at scale, side by side in one run:
#  (a) Wharf answering GET /v2/<repo>/blobs/<digest> with a 307 to a mirror chosen by GeoIP
#      tier and bandwidth among M crawled mirrors (60+ countries, netblocks, bandwidths), the
#      requests spread over 20,000 (repo, blob) paths of a generated catalog and the clients
#      (X-Forwarded-For from a trusted proxy) over ~200 countries, with the real GeoLite2-City;
#  (b) nginx answering the same paths with a fixed `return 302` (the floor: no lookup, no
#      choice);
#  (c) docker-registry (CNCF distribution) with its storage redirect middleware, over a
#      registry holding a subset of the catalog (DIST_REPOS repositories, every tag; pushed
#      over the distribution API): its blob paths, and Wharf again on exactly those paths;
#  (d) manifest GETs by tag and by digest from Wharf vs nginx serving the same bytes as
#      static files; and the manifest GETs by tag in the first 10 s after a cold start of
#      `wharf serve` (page cache dropped first: needs root).
# Also Wharf on one blob from 10 clients (the figure this script printed before).
# The catalog is generated and synced once; each mirror count adds mirrors (registered through
# the running server: an offline `wharf mirror add` opens the store on every call and was no
# faster), crawls them all ([crawl] concurrency 32, total_timeout 60min; one nginx serves every
# mirror, a symlink to the tree each), then measures. Prints a table, a column per mirror
# count, and the ratios. The cold start drops the whole machine's page cache.
#
# Usage: bench/redirect.sh [SECS] [MIRRORS...]   (default 10 s per measurement, 500 2000
# mirrors; env CATALOG=REPOSxTAGS (default 300x5; the published run uses 10000x10),
# DIST_REPOS (default 100), BENCH_PROFILE=debug for a quick trial, BENCH_STATE=DIR to share
# the synced catalog with other runs, see bench/lib.sh.) Needs wrk, nginx,
# docker-registry, curl, python3 and PyPI maxminddb-geolite2.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SECS=${1:-10}
shift || true
MIRRORS=("$@")
[ ${#MIRRORS[@]} -gt 0 ] || MIRRORS=(500 2000)
mapfile -t MIRRORS < <(printf '%s\n' "${MIRRORS[@]}" | sort -n)
CATALOG=${CATALOG:-300x5}
DIST_REPOS=${DIST_REPOS:-100}
BLOB_PATHS=20000
MANIFEST_PATHS=5000
[[ $CATALOG =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad CATALOG $CATALOG: use REPOSxTAGS, e.g. 10000x10" >&2; exit 1; }
for m in "${MIRRORS[@]}"; do [[ $m =~ ^[0-9]+$ ]] || { echo "bad mirror count $m" >&2; exit 1; }; done
[ -w /proc/sys/vm/drop_caches ] || { echo "the cold-start case drops the page cache: run as root" >&2; exit 1; }
bench_start wrk nginx docker-registry curl python3
need_time
bench_build --examples
GEN=$TARGET/examples/gen_catalog
GEO=$(geolite_city)
WP=$(free_port); MP=$(free_port); NP=$(free_port); SP=$(free_port); RP=$(free_port)
B=http://127.0.0.1:$WP
declare -A R   # R[MIRRORS|metric] = value

# Wharf: GeoIP; the crawl 32 mirrors at once and with time to reach every mirror (the
# [crawl] table is open at the end of write_config's text).
write_config "$WP" "concurrency = 32
total_timeout = \"60min\"
[geoip]
database = \"$GEO\""
catalog_synced "$CATALOG"

# The request lists: config and layer blobs of random tags (repositories in random order, two
# tags of each per pass) until BLOB_PATHS distinct digests; those tags' manifests by tag and by
# digest, written under $W/static for nginx too.
python3 - "$W/up" "$W" "$BLOB_PATHS" "$MANIFEST_PATHS" <<'PY' >&2
import json, os, random, sys
up, w, want_blobs, want_tags = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
repos = []
for d, subdirs, files in os.walk(up):
    subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
    if "oci-layout" in files:
        repos.append(os.path.relpath(d, up)); subdirs[:] = []
rnd = random.Random(1)
rnd.shuffle(repos)
blobs, digests, tags, shuffled = [], set(), [], {}
enough = lambda: len(digests) >= want_blobs and len(tags) >= want_tags
def take(repo, desc):
    read = lambda d: open(os.path.join(up, repo, "blobs/sha256", d.split(":", 1)[1]), "rb").read()
    raw = read(desc["digest"])
    if len(tags) < want_tags:
        tag = desc["annotations"]["org.opencontainers.image.ref.name"]
        tags.append((repo, tag, desc["digest"]))
        d = os.path.join(w, "static/v2", repo, "manifests")
        os.makedirs(d, exist_ok=True)
        for name in (tag, desc["digest"]):
            open(os.path.join(d, name), "wb").write(raw)
    todo = [json.loads(raw)]
    while todo and len(digests) < want_blobs:
        m = todo.pop()
        for child in m.get("manifests", []):
            todo.append(json.loads(read(child["digest"])))
        for b in [m["config"]] + m["layers"] if "layers" in m else []:
            blobs.append(f"/v2/{repo}/blobs/{b['digest']}"); digests.add(b["digest"])
# Passes over the repositories, two more tags of each per pass, until there is enough.
for p in range(0, 1 << 30, 2):
    took = False
    for repo in repos:
        if enough():
            break
        if repo not in shuffled:
            shuffled[repo] = json.load(open(os.path.join(up, repo, "index.json")))["manifests"]
            rnd.shuffle(shuffled[repo])
        for desc in shuffled[repo][p:p + 2]:
            take(repo, desc); took = True
    if enough() or not took:
        break
blobs = list(dict.fromkeys(blobs)); rnd.shuffle(blobs)
open(os.path.join(w, "blobs.txt"), "w").write("\n".join(blobs) + "\n")
open(os.path.join(w, "tags.txt"), "w").write("".join(f"/v2/{r}/manifests/{t}\n" for r, t, _ in tags))
open(os.path.join(w, "digests.txt"), "w").write("".join(f"/v2/{r}/manifests/{d}\n" for r, _, d in tags))
print(f"request lists: {len(blobs)} blob paths ({len(digests)} distinct digests), "
      f"{len(tags)} manifests by tag and by digest (catalog of {len(repos)} repositories)")
PY
BLOB_COUNT=$(wc -l < "$W/blobs.txt"); DIGEST_COUNT=$(sed 's/.*blobs\///' "$W/blobs.txt" | sort -u | wc -l)
MANIFEST_COUNT=$(wc -l < "$W/tags.txt")
mapfile -t IPS < <(client_ips "$GEO" 3)
COUNTRIES=$(python3 - "$GEO" "${IPS[@]}" <<'PY'
import sys, maxminddb
db = maxminddb.open_database(sys.argv[1])
print(len({db.get(ip)["country"]["iso_code"] for ip in sys.argv[2:]}))
PY
)
bench_log "${#IPS[@]} client addresses in $COUNTRIES countries"
ACCEPT="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"
write_paths_lua "$W/blobs.lua" "$W/blobs.txt" "${IPS[@]}"
ACCEPT=$ACCEPT write_paths_lua "$W/tags.lua" "$W/tags.txt"
ACCEPT=$ACCEPT write_paths_lua "$W/digests.lua" "$W/digests.txt"
write_xff_lua "$W/xff.lua"

# (c) distribution: push the subset with no middleware (uploads HEAD blobs, which the redirect
# middleware would answer 307), then serve it with the redirect middleware.
bench_log "pushing $DIST_REPOS repositories into docker-registry"
mapfile -t DREPOS < <(cd "$W/up" && find lib -mindepth 1 -maxdepth 1 -type d | sort | head -n "$DIST_REPOS")
write_registry_config "$W/registry.yml" "$RP" "$W/registry"
start_registry "$W/registry.yml" "$RP"
push_layouts "127.0.0.1:$RP" "$W/up" "${DREPOS[@]}" | python3 -c 'import random,sys;l=sys.stdin.read().split();random.Random(1).shuffle(l);print("\n".join(l))' > "$W/dist.txt"
kill "$REGISTRY"; wait "$REGISTRY" 2>/dev/null || true
write_registry_config "$W/registry.yml" "$RP" "$W/registry" "http://127.0.0.1:$MP/m0"
start_registry "$W/registry.yml" "$RP"
DIST_COUNT=$(wc -l < "$W/dist.txt")
write_paths_lua "$W/dist.lua" "$W/dist.txt" "${IPS[@]}"
bench_log "distribution subset: $DIST_COUNT blob paths in ${#DREPOS[@]} repositories"

# One nginx: the mirrors (a symlink to the tree each) on MP; the fixed 302 on NP; the
# manifests as static files on SP.
"$GEN" mirrors --count "${MIRRORS[-1]}" --base-url "http://127.0.0.1:$MP/" > "$W/mirrors.tsv"
cut -f1 "$W/mirrors.tsv" | while read -r name; do mirror_link "$name"; done
start_nginx "$MP" "
  server { listen 127.0.0.1:$NP; location /v2/ { return 302 http://127.0.0.1:$MP/m0\$request_uri; } }
  server { listen 127.0.0.1:$SP; root $W/static; default_type application/vnd.oci.image.manifest.v1+json; }"

# serve_wharf: `wharf serve` in the background (pid in SERVE); T0 is when it was started.
serve_wharf() {
  T0=$(now_ms)
  RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" serve 2>> "$W/serve.err" &
  SERVE=$!
}
serve_wharf
wait_200 "$B/readyz" > /dev/null

# One sanity check per kind of request: the status each side answers.
check() { curl -s -o /dev/null -w "%{http_code}" -H "X-Forwarded-For: ${IPS[0]}" -H "Accept: $ACCEPT" "$1"; }
for c in "$B$(head -n1 "$W/blobs.txt")|307" "http://127.0.0.1:$NP$(head -n1 "$W/blobs.txt")|302" \
         "http://127.0.0.1:$RP$(head -n1 "$W/dist.txt")|307" "$B$(head -n1 "$W/tags.txt")|200" \
         "$B$(head -n1 "$W/digests.txt")|200" "http://127.0.0.1:$SP$(head -n1 "$W/digests.txt")|200"; do
  got=$(check "${c%|*}")
  [ "$got" = "${c#*|}" ] || { echo "GET ${c%|*} answered $got, not ${c#*|}" >&2; exit 1; }
done
ONE=$(head -n1 "$W/blobs.txt")

registered=0
for M in "${MIRRORS[@]}"; do
  bench_log "== $M mirrors: registering $((M - registered)) more through the server"
  R[$M|add]=$(register_mirrors "$W/mirrors.tsv" $((registered + 1)) "$M")
  registered=$M
  bench_log "crawling $M mirrors"
  t=$(now_ms)
  wharf_cli crawl > "$W/crawl.out" || true
  R[$M|crawl]=$(( $(now_ms) - t ))
  R[$M|verified]="$(grep -c 'holds generation' "$W/crawl.out" || true)/$M"
  bench_log "crawl: ${R[$M|verified]} verified in ${R[$M|crawl]} ms"
  sleep 1   # the selection snapshot is rebuilt after the crawl
  R[$M|wharf]=$(wrk_run "wharf-$M" "$B" "$W/blobs.lua")
  R[$M|nginx]=$(wrk_run "nginx302-$M" "http://127.0.0.1:$NP" "$W/blobs.lua")
  R[$M|wharf_sub]=$(wrk_run "wharf-subset-$M" "$B" "$W/dist.lua")
  R[$M|dist]=$(wrk_run "distribution-$M" "http://127.0.0.1:$RP" "$W/dist.lua")
  R[$M|one]=$(wrk_run "wharf-one-$M" "$B$ONE" "$W/xff.lua")
  R[$M|mtag]=$(wrk_run "wharf-manifest-tag-$M" "$B" "$W/tags.lua")
  R[$M|ntag]=$(wrk_run "nginx-manifest-tag-$M" "http://127.0.0.1:$SP" "$W/tags.lua")
  R[$M|mdig]=$(wrk_run "wharf-manifest-digest-$M" "$B" "$W/digests.lua")
  R[$M|ndig]=$(wrk_run "nginx-manifest-digest-$M" "http://127.0.0.1:$SP" "$W/digests.lua")
  R[$M|rss]="$(( $(proc_kib "$SERVE" VmRSS) / 1024 )) / $(( $(proc_kib "$SERVE" VmHWM) / 1024 ))"

  bench_log "cold start: stopping wharf, dropping the page cache"
  kill -TERM "$SERVE"; wait "$SERVE" || true
  sync; echo 3 > /proc/sys/vm/drop_caches
  serve_wharf
  R[$M|healthz]=$(wait_200 "$B/healthz")
  ( wait_200 "$B/readyz" > "$W/readyz.ms" ) &
  READY=$!
  R[$M|cold]=$(SECS=10 wrk_run "wharf-manifest-tag-cold-$M" "$B" "$W/tags.lua")
  wait "$READY"
  R[$M|readyz]=$(cat "$W/readyz.ms")
done

# The table: one column per mirror count; cells "req/s (p99 ms)", errors when there were any.
for k in "${!R[@]}"; do printf '%s\t%s\n' "$k" "${R[$k]}"; done > "$W/results.tsv"
python3 - "$W/results.tsv" "$CATALOG" "$BLOB_COUNT" "$DIGEST_COUNT" "$DIST_COUNT" "${#DREPOS[@]}" \
  "$MANIFEST_COUNT" "${#IPS[@]}" "$COUNTRIES" "$SECS" "${MIRRORS[@]}" <<'PY'
import sys
results, catalog, blobs, digests, dist, drepos, manifests, ips, countries, secs = sys.argv[1:11]
ms = sys.argv[11:]
R = dict(l.rstrip("\n").split("\t", 1) for l in open(results))
def cell(m, k):
    rate, p99, err = R[f"{m}|{k}"].split()
    return f"{float(rate):,.0f} ({float(p99):.2f})" + (f" {err} ERRORS" if err != "0" else "")
rate = lambda m, k: float(R[f"{m}|{k}"].split()[0])
rows = [
    ("mirrors verified by the crawl", lambda m: R[f"{m}|verified"]),
    ("mirror add via server, mean ms", lambda m: R[f"{m}|add"]),
    ("crawl wall ms", lambda m: R[f"{m}|crawl"]),
    (f"(a) wharf blob 307, {blobs} paths ({digests} digests)", lambda m: cell(m, "wharf")),
    ("(b) nginx return 302, same paths", lambda m: cell(m, "nginx")),
    (f"    wharf, distribution's {dist} paths", lambda m: cell(m, "wharf_sub")),
    (f"(c) distribution redirect, {drepos} repos", lambda m: cell(m, "dist")),
    ("    wharf, one blob, 10 clients (old figure)", lambda m: cell(m, "one")),
    (f"(d) wharf manifest by tag, {manifests}", lambda m: cell(m, "mtag")),
    ("    nginx static manifest, same paths", lambda m: cell(m, "ntag")),
    ("    wharf manifest by digest", lambda m: cell(m, "mdig")),
    ("    nginx static, by digest", lambda m: cell(m, "ndig")),
    ("wharf RSS / peak MiB after these", lambda m: R[f"{m}|rss"]),
    ("cold start: /healthz after ms", lambda m: R[f"{m}|healthz"]),
    ("cold start: /readyz after ms", lambda m: R[f"{m}|readyz"]),
    ("cold: manifest by tag, first 10 s", lambda m: cell(m, "cold")),
    ("RATIO wharf / nginx-302", lambda m: f"{rate(m, 'wharf') / rate(m, 'nginx'):.2f}"),
    ("RATIO wharf / distribution-redirect", lambda m: f"{rate(m, 'wharf_sub') / rate(m, 'dist'):.2f}"),
    ("RATIO manifest wharf / nginx, by tag", lambda m: f"{rate(m, 'mtag') / rate(m, 'ntag'):.2f}"),
    ("RATIO manifest wharf / nginx, by digest", lambda m: f"{rate(m, 'mdig') / rate(m, 'ndig'):.2f}"),
    ("RATIO cold / warm manifest by tag", lambda m: f"{rate(m, 'cold') / rate(m, 'mtag'):.2f}"),
]
print(f"\n== bench/redirect.sh: catalog {catalog}, {ips} clients in {countries} countries, "
      f"wrk -t1 -c32 -d{secs}s (cold: 10 s); req/s (p99 ms)")
w = max(len(r[0]) for r in rows)
cols = [max(len(str(f(m))) for _, f in rows + [("", lambda m: f"{m} mirrors")]) for m in ms]
print(f"{'':<{w}} | " + " | ".join(f"{m + ' mirrors':>{c}}" for m, c in zip(ms, cols)))
for name, f in rows:
    print(f"{name:<{w}} | " + " | ".join(f"{str(f(m)):>{c}}" for m, c in zip(ms, cols)))
PY
