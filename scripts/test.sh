#!/usr/bin/env bash
# Every test: installs what the tests need on Debian when it is missing
# (promtool, from the `prometheus` package), checks and unit-tests the
# alerting rules, then runs the Rust test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (Debian package prometheus)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi

echo "== alerting rules"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "== cargo test --workspace"
cargo test --workspace
