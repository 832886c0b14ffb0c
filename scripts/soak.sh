#!/usr/bin/env bash
# Ten minutes of mixed faults against a release build on loopback (not in
# CI): looping clients, backend kills and restarts, SIGHUP reloads,
# slowloris connections, malformed requests and admin API writes. Prints a
# JSON report and exits 1 on a failed idempotent request, RSS growth of 5%
# or more after the first minute, or file descriptors left open.
#   cargo build --release && scripts/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000
exec python3 scripts/soak.py --seconds "${1:-600}"
