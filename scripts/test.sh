#!/usr/bin/env bash
# Installs what the tests need (Debian's mosquitto-clients, Python paho-mqtt) and runs every
# test of the workspace: unit, property, conformance and end-to-end tests with real clients.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
cargo test --workspace --all-targets "$@"
