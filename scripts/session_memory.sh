#!/usr/bin/env bash
# Memory of the session table: 1,000,000+ distinct header sessions through a
# Fulcrum with `max_sessions = 1000000`, printing the process's RSS before
# and after, the sessions held (capped at the bound) and bytes per session.
# Loopback only; not part of CI.
#   apt-get install -y wrk && cargo build --release
#   scripts/session_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
target/release/fulcrum backend --listen 127.0.0.1:9520 >/dev/null 2>&1 & backend=$!
cat > "$work/lb.toml" <<TOML
[server]
worker_threads = 2
[[listeners]]
name = "web"
listen = "127.0.0.1:9510"
pool = "app"
[pools.app]
backends = [{ address = "127.0.0.1:9520" }]
affinity = { kind = "header", max_sessions = 1000000 }
[admin]
listen = "127.0.0.1:9511"
TOML
cat > "$work/sessions.lua" <<'LUA'
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/", { ["x-session-id"] = os.getenv("RUN") .. "-" .. id .. "-" .. counter })
end
LUA
target/release/fulcrum run -c "$work/lb.toml" 2>"$work/lb.log" & lb=$!
trap 'kill $lb $backend 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
wrk -t1 -c8 -d2s http://127.0.0.1:9510/ >/dev/null
before=$(awk '/VmRSS/ {print $2}' /proc/$lb/status)
# Until the table is full (about 36k new sessions/s on a 2-core machine).
run=0
until [ "$(curl -s http://127.0.0.1:9511/api/v1/pools/app/sessions | grep -o '"sessions":[0-9]*' | head -1 | cut -d: -f2)" -ge 1000000 ]; do
  run=$((run + 1))
  RUN=$run wrk -t2 -c32 -d10s -s "$work/sessions.lua" http://127.0.0.1:9510/ | grep "requests in"
done
after=$(awk '/VmRSS/ {print $2}' /proc/$lb/status)
held=$(curl -s http://127.0.0.1:9511/api/v1/pools/app/sessions | grep -o '"sessions":[0-9]*' | head -1 | cut -d: -f2)
echo "RSS ${before} KiB -> ${after} KiB with ${held} sessions: $(( (after - before) * 1024 / held )) bytes/session"
