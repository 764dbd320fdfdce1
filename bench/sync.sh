#!/usr/bin/env bash
# Sync: Wharf against `skopeo sync --dest dir` pulling the same repositories from the same
# local docker-registry (CNCF distribution), each from an empty destination, in one run.
#  1. A generated catalog (examples/gen_catalog.rs: shared base layers, 10 % multi-arch OCI
#     indexes, 10 % Docker media types) pushed into the registry over the distribution API
#     (bytes unchanged); then a full `wharf sync` (upstream = the registry, default
#     [sync] concurrency 4) and `skopeo sync --all --preserve-digests --src yaml --dest dir`
#     listing every repository (one process, like Wharf; SKOPEO_SRC=docker runs one
#     `skopeo sync --src docker` per repository instead), both under GNU time: wall time, peak
#     RSS. Target: skopeo/wharf time >= 1.5.
#  2. One image with a single 1 GiB layer of random bytes (an OCI layout written by hand,
#     pushed over the distribution API: skopeo would gzip it on the way), synced by Wharf
#     (into an empty data dir, only that repository) and by skopeo. Target: Wharf's peak
#     RSS < 64 MB.
#
# Usage: bench/sync.sh [REPOSxTAGS]   (default 100x5; env BIG=SIZE for the big layer, as
# `head -c` takes it, default 1G; BENCH_PROFILE=debug for a quick trial.) Needs
# docker-registry, skopeo, curl, python3 and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SIZE=${1:-100x5}
BIG=${BIG:-1G}
SKOPEO_SRC=${SKOPEO_SRC:-yaml}
[[ $SIZE =~ ^[0-9]+x[0-9]+$ ]] || { echo "bad size $SIZE: use REPOSxTAGS, e.g. 100x5" >&2; exit 1; }
[[ $SKOPEO_SRC =~ ^(yaml|docker)$ ]] || { echo "SKOPEO_SRC is yaml or docker" >&2; exit 1; }
bench_start docker-registry skopeo curl python3 jq sha256sum
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
mapfile -t REPOS < <(cd "$W/up" && find . -name oci-layout -not -path './.*' -printf '%h\n' | sed 's|^\./||' | sort)
rm -rf "$W/up"   # from here on, the registry is the only source

# skopeo_yaml FILE REPO...: a `skopeo sync --src yaml` file: every tag of these repositories.
skopeo_yaml() {
  local f=$1; shift
  { echo "$REG:"; echo "  tls-verify: false"; echo "  images-by-tag-regex:"
    for r in "$@"; do echo "    $r: '.*'"; done; } > "$f"
}

# timed NAME CMD...: CMD under GNU time; prints "WALL_S MAX_RSS_MIB"; output in $W/NAME.out.
timed() {
  local name=$1 rc=0; shift
  /usr/bin/time -v -o "$W/$name.time" "$@" > "$W/$name.out" 2>&1 || rc=$?
  [ $rc = 0 ] || { echo "$name failed (exit $rc):" >&2; tail -n 20 "$W/$name.out" >&2; exit 1; }
  time_stats "$W/$name.time"
}

# skopeo_sync NAME DEST REPO...: skopeo sync of these repositories into DEST (dir transport).
skopeo_sync() {
  local name=$1 dest=$2; shift 2
  rm -rf "$dest"; mkdir -p "$dest"
  if [ "$SKOPEO_SRC" = yaml ]; then
    skopeo_yaml "$W/$name.yml" "$@"
    timed "$name" skopeo --insecure-policy sync --all --preserve-digests --src yaml --dest dir \
      "$W/$name.yml" "$dest"
  else
    printf '%s\n' "$@" > "$W/$name.repos"
    timed "$name" bash -c 'set -e; while read -r r; do
        skopeo --insecure-policy sync --all --preserve-digests --src-tls-verify=false \
          --src docker --dest dir "$0/$r" "$1"; done < "$2"' "$REG" "$dest" "$W/$name.repos"
  fi
}

bench_log "full sync of ${#REPOS[@]} repositories: wharf"
registry_wharf_config "$REG" "$WP"
S=$(timed wharf-catalog env RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" sync)
read -r WT WRSS <<< "$S"
bench_log "$(tail -n1 "$W/wharf-catalog.out") ($WT s, $WRSS MiB)"
WTAGS=$(find "$W/data/tree/repositories" -name index.json -exec jq '.manifests | length' {} + | awk '{s += $1} END {print s + 0}')
bench_log "full sync of ${#REPOS[@]} repositories: skopeo ($SKOPEO_SRC)"
S=$(skopeo_sync skopeo-catalog "$W/skopeo" "${REPOS[@]}")
read -r ST SRSS <<< "$S"
STAGS=$(find "$W/skopeo" -mindepth 1 -type d -name '*:*' | wc -l)
bench_log "skopeo: $STAGS images ($ST s, $SRSS MiB)"
rm -rf "$W/skopeo"

bench_log "one image with a single $BIG layer of random bytes"
L=$W/big
mkdir -p "$L/blobs/sha256"
head -c "$BIG" /dev/urandom > "$L/layer"
LHEX=$(sha256sum "$L/layer" | cut -d' ' -f1); LSIZE=$(stat -c %s "$L/layer")
mv "$L/layer" "$L/blobs/sha256/$LHEX"
put() { local hex; hex=$(printf '%s' "$1" | sha256sum | cut -d' ' -f1); printf '%s' "$1" > "$L/blobs/sha256/$hex"; echo "$hex ${#1}"; }
S=$(put "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$LHEX\"]}}")
read -r CHEX CSIZE <<< "$S"
S=$(put "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$CHEX\",\"size\":$CSIZE},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$LHEX\",\"size\":$LSIZE}]}")
read -r MHEX MSIZE <<< "$S"
echo '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$MHEX\",\"size\":$MSIZE,\"annotations\":{\"org.opencontainers.image.ref.name\":\"latest\"}}]}" > "$L/index.json"
mkdir -p "$W/bigup/big"; mv "$L" "$W/bigup/big/one"
push_layouts "$REG" "$W/bigup" big/one > /dev/null
rm -rf "$W/bigup"

bench_log "wharf sync of big/one"
registry_wharf_config "$REG" "$WP" big/one
S=$(timed wharf-big env RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" sync)
read -r BWT BWRSS <<< "$S"
bench_log "$(tail -n1 "$W/wharf-big.out") ($BWT s, $BWRSS MiB)"
[ "$(stat -c %s "$W/data/tree/blobs/sha256/$LHEX" 2>/dev/null)" = "$LSIZE" ] \
  || { echo "the big layer is not in Wharf's pool" >&2; exit 1; }
rm -rf "$W/data"; mkdir -p "$W/data"
bench_log "skopeo sync of big/one"
S=$(skopeo_sync skopeo-big "$W/skopeo" big/one)
read -r BST BSRSS <<< "$S"
[ "$(find "$W/skopeo" -name "$LHEX" -size "${LSIZE}c" | wc -l)" = 1 ] \
  || { echo "the big layer is not in skopeo's copy" >&2; exit 1; }
rm -rf "$W/skopeo"

python3 - "$SIZE" "${#REPOS[@]}" "$WTAGS" "$STAGS" "$WT" "$WRSS" "$ST" "$SRSS" "$SKOPEO_SRC" \
  "$BIG" "$LSIZE" "$BWT" "$BWRSS" "$BST" "$BSRSS" <<'PY'
import sys
size, repos, wtags, stags, wt, wrss, st, srss, src, big, lsize, bwt, bwrss, bst, bsrss = sys.argv[1:]
wt, wrss, st, srss, bwt, bwrss, bst, bsrss = map(float, (wt, wrss, st, srss, bwt, bwrss, bst, bsrss))
skopeo = "skopeo sync --src yaml (one process)" if src == "yaml" else "skopeo sync --src docker (one per repo)"
print(f"\n== bench/sync.sh: {size} from a local docker-registry, empty destinations")
print(f"catalog ({repos} repos): wharf sync {wt:.2f} s, peak RSS {wrss:.1f} MiB ({wtags} tags)")
print(f"catalog ({repos} repos): {skopeo} {st:.2f} s, peak RSS {srss:.1f} MiB ({stags} images)")
print(f"RATIO skopeo time / wharf time = {st / wt:.2f} (target >= 1.5)")
print(f"one {big} layer ({int(lsize):,} bytes): wharf sync {bwt:.2f} s, peak RSS {bwrss:.1f} MiB "
      f"(target < 64 MB: {'met' if bwrss * 1048576 < 64e6 else 'NOT met'})")
print(f"one {big} layer: skopeo sync {bst:.2f} s, peak RSS {bsrss:.1f} MiB")
PY
