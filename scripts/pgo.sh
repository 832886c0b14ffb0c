#!/usr/bin/env bash
# Remakes pgo/fulcrum.profdata, the profile that release builds are
# optimized with (profile-guided optimization; scripts/rustc-pgo applies
# it): builds Fulcrum instrumented, runs it under the shared benchmarks'
# loads (HTTP/1.1 keep-alive and a new connection per request, h2c, TLS
# keep-alive and handshakes, the L4 relay), and merges what it counted.
# Then it removes target/release: cargo does not notice a changed profile,
# so the next release build must compile every crate again.
#
#   scripts/pgo.sh
#
# Needs what scripts/bench.sh needs, and an llvm-profdata that reads the
# toolchain's raw profiles (LLVM 19 or later: Debian's `llvm-19`, or
# rustup's `llvm-tools`); LLVM_PROFDATA names another. BENCH_DIR as for
# bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-../shared/bench}
[ -f "$BENCH_DIR/perfsuite.py" ] || { echo "no perfsuite.py in $BENCH_DIR (set BENCH_DIR)" >&2; exit 2; }
profdata=${LLVM_PROFDATA:-}
if [ -z "$profdata" ]; then
  for candidate in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata \
    llvm-profdata-22 llvm-profdata-21 llvm-profdata-20 llvm-profdata-19; do
    if command -v "$candidate" >/dev/null 2>&1; then
      profdata=$candidate
      break
    fi
  done
fi
[ -n "$profdata" ] || { echo "no llvm-profdata of LLVM 19 or later: apt-get install llvm-19, or set LLVM_PROFDATA" >&2; exit 2; }

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
# The instrumented build is the release build itself, in a target dir of
# its own (target/release stays as it is until the profile is made), with
# scripts/rustc-pgo told to instrument it.
FULCRUM_PGO="generate=$raw" cargo build --release --locked --target-dir target/pgo-generate
instrumented=target/pgo-generate/release/fulcrum

export LLVM_PROFILE_FILE="$raw/fulcrum-%p-%m.profraw"
mkdir -p /tmp/lbbench
python3 "$BENCH_DIR/lbbench.py" --rounds 1 --secs 4 \
  fulcrum="$instrumented run -c $BENCH_DIR/fulcrum.toml"
python3 "$BENCH_DIR/perfsuite.py" --rounds 1 --secs 4 --contenders fulcrum \
  --fulcrum "$instrumented" --only tls-keepalive,tls-handshake,http-close,h2c,tcp-relay

# Sparse: functions the loads never ran keep no record and are optimized
# as without a profile, not as cold code.
"$profdata" merge --sparse -o pgo/fulcrum.profdata "$raw"/*.profraw
rm -rf target/release
echo "pgo/fulcrum.profdata: $(du -k pgo/fulcrum.profdata | cut -f1) KiB from $(ls "$raw" | wc -l) runs"
