#!/usr/bin/env bash
# Installs what the tests need (Debian's mosquitto-clients, Python paho-mqtt) and runs every
# test of the workspace: unit, property, conformance and end-to-end tests with real clients.
# Ends with one line totalling every test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
