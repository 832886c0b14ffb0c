#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz + libFuzzer) of the code that reads
# bytes an outsider controls: the config parser and validator, the request
# head path up to the forward decision, and the affinity cookie decoder.
# Runs each target for SECONDS (default 60) from the seeds in fuzz/seeds
# (the growing corpus stays in fuzz/corpus, not in git). A crash stops it
# and leaves the input in fuzz/artifacts/TARGET/: make it a regression test.
#   scripts/fuzz.sh 600        # 10 minutes each
# The toolchain here is stable Rust, so libFuzzer runs without a
# sanitizer (`--sanitizer none`; the code is `unsafe`-free), with debug
# assertions and overflow checks on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd fuzz
for target in config request_head backend_response affinity_cookie proxy_protocol; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "corpus/$target"
  cargo fuzz run --sanitizer none -O --debug-assertions "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+[[:space:]]+DONE|Done|stat::number_of_executed_units|stat::average_exec_per_sec)|panicked|ERROR|SUMMARY" || true
  if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $target crashed; inputs in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
