#!/usr/bin/env bash
# The side-by-side benchmarks on loopback: HTTP/1.1 keep-alive (lbbench.py)
# and every perfsuite.py path (TLS keep-alive and new connections, HTTP/1.1
# new connections, h2c, L4 relay and bulk), Fulcrum against whichever of
# HAProxy and nginx are installed, one worker thread each. Prints each
# tool's table; read the ratios, not the absolute figures.
#
#   scripts/bench.sh                 # 3 rounds × 6 s
#   ROUNDS=2 SECS=5 ONLY=h2c,tcp-bulk scripts/bench.sh
#
# BENCH_DIR points at the benchmark scripts (default ../shared/bench).
# Needs: nginx, haproxy, wrk, nghttp2-client (h2load), libnginx-mod-stream.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-../shared/bench}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-6}
[ -f "$BENCH_DIR/perfsuite.py" ] || { echo "no perfsuite.py in $BENCH_DIR (set BENCH_DIR)" >&2; exit 2; }

contenders=(fulcrum)
peers=()
if command -v haproxy >/dev/null; then
  contenders+=(haproxy)
  peers+=(haproxy="haproxy -db -f $BENCH_DIR/peers/lb.haproxy.cfg")
fi
if command -v nginx >/dev/null; then
  contenders+=(nginx)
  mkdir -p /tmp/lbbench
  peers+=(nginx="nginx -p /tmp/lbbench -c $(realpath "$BENCH_DIR")/peers/lb.nginx.conf")
fi
echo "== contenders: ${contenders[*]}"

cargo build --release -p fulcrum
# One worker thread, as every peer runs (the shared config says so).
config="$BENCH_DIR/fulcrum.toml"

if [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",h1,"* ]]; then
  echo "== HTTP/1.1 keep-alive (lbbench.py)"
  python3 "$BENCH_DIR/lbbench.py" --rounds "$ROUNDS" --secs "$SECS" \
    direct=x "${peers[@]}" fulcrum="target/release/fulcrum run -c $config"
fi
echo "== other paths (perfsuite.py)"
only=()
if [ -n "${ONLY:-}" ]; then
  only=(--only "$(echo ",$ONLY," | sed 's/,h1,/,/; s/^,//; s/,$//')")
  [ "${only[1]}" = "" ] && exit 0
fi
python3 "$BENCH_DIR/perfsuite.py" --rounds "$ROUNDS" --secs "$SECS" \
  --contenders "$(IFS=,; echo "${contenders[*]}")" "${only[@]}"
