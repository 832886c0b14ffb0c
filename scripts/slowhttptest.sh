#!/usr/bin/env bash
# slowhttptest (Debian package) against Fulcrum and HAProxy side by side:
# slow read (-X), slowloris (-H) and slow body (-B) with 1000 connections
# each, printing both balancers' RSS and whether another client is served
# meanwhile. Loopback only; not part of CI.
#   apt-get install -y slowhttptest haproxy && cargo build --release
#   scripts/slowhttptest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
head -c 8388608 /dev/urandom > "$work/big"
ulimit -n 20000
python3 -m http.server 9500 --bind 127.0.0.1 -d "$work" >/dev/null 2>&1 & server=$!
cat > "$work/lb.toml" <<TOML
[server]
worker_threads = 1
[[listeners]]
name = "web"
listen = "127.0.0.1:9510"
pool = "app"
[pools.app]
backends = [{ address = "127.0.0.1:9500" }]
TOML
cat > "$work/hap.cfg" <<CFG
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
frontend f
  bind 127.0.0.1:9520
  default_backend b
backend b
  server s1 127.0.0.1:9500
CFG
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
for mode in X H B; do
  target/release/fulcrum run -c "$work/lb.toml" >/dev/null 2>&1 & fulcrum=$!
  haproxy -db -f "$work/hap.cfg" >/dev/null 2>&1 & haproxy=$!
  sleep 1
  echo "-$mode before: fulcrum $(rss $fulcrum) KiB, haproxy $(rss $haproxy) KiB"
  attackers=()
  for port in 9510 9520; do
    case $mode in
      X) args=(-X -r 200 -w 512 -y 1024 -n 5 -z 32 -k 3 -u "http://127.0.0.1:$port/big") ;;
      H) args=(-H -r 200 -i 10 -x 24 -p 3 -u "http://127.0.0.1:$port/") ;;
      B) args=(-B -r 200 -i 10 -x 24 -p 3 -u "http://127.0.0.1:$port/") ;;
    esac
    timeout 40 slowhttptest -c 1000 -l 25 "${args[@]}" -o "$work/out_${mode}_$port" >"$work/st_${mode}_$port.log" 2>&1 &
    attackers+=($!)
  done
  sleep 15
  other_f=$(curl -s -o /dev/null -w "%{http_code}" --max-time 3 http://127.0.0.1:9510/ || true)
  other_h=$(curl -s -o /dev/null -w "%{http_code}" --max-time 3 http://127.0.0.1:9520/ || true)
  echo "-$mode at 15 s: fulcrum $(rss $fulcrum) KiB (another client: $other_f), haproxy $(rss $haproxy) KiB (another client: $other_h)"
  wait "${attackers[@]}" 2>/dev/null || true
  for port in 9510 9520; do
    echo "  $port: $(grep -c 'service available:.*NO' "$work/st_${mode}_$port.log" || true) samples with the service unavailable"
  done
  kill "$fulcrum" "$haproxy"; wait "$fulcrum" "$haproxy" 2>/dev/null || true
done
kill "$server"
