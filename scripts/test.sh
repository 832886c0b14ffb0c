#!/usr/bin/env bash
# Every test: installs what the tests need on Debian when it is missing
# (promtool from `prometheus`, a headless browser from `chromium` and
# `chromium-driver`, `redis-server` for the shared session store, `dnsmasq` from
# `dnsmasq-base` as the DNS server of the discovery tests, `systemd-analyze` from
# `systemd` to verify the unit in deploy/), checks and unit-tests the alerting rules, then runs
# the Rust test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (Debian packages the tests use)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== alerting rules"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "== cargo test --workspace"
cargo test --workspace
