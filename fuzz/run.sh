#!/usr/bin/env bash
# Fuzz every parser at Wharf's edges for a bounded time each (default 60 s):
#   fuzz/run.sh [SECONDS]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The targets call
# `wharf::fuzzing`, where the invariants are; the same checks run as property tests on
# stable in `cargo test` (tests/it/properties.rs). The seeds in fuzz/corpus are read, not
# written: what the fuzzer finds goes to fuzz/work (ignored by git; copy a small, telling
# input into fuzz/corpus by hand). A crash leaves its input in fuzz/artifacts and makes this
# script exit 1.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || { echo "fuzz/run.sh: install cargo-fuzz first: cargo install cargo-fuzz" >&2; exit 1; }
targets=(names mirror_url forwarded accept manifest webhook mirror_form config)
# Safe Rust (unsafe_code is forbidden): what the fuzzer looks for is panics, so no sanitizer.
cargo +nightly fuzz build -s none --release
crashes=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "work/$t" "artifacts/$t"
  log="$(mktemp)"
  if cargo +nightly fuzz run -s none --release "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "$t: ${runs} runs in ${secs} s, 0 crashes"
  else
    crashes=$((crashes + 1))
    echo "$t: CRASH"; tail -40 "$log"
  fi
  rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets, $crashes crashed"
[ "$crashes" -eq 0 ]
