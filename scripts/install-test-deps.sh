#!/usr/bin/env bash
# Installs the third-party clients the end-to-end tests drive:
#   - mosquitto-clients (mosquitto_pub / mosquitto_sub) and mosquitto, from Debian
#   - paho-mqtt (Python), from PyPI
# Idempotent: installs only what is missing. Meant to run as root (CI, fresh Debian machine).
set -euo pipefail

PAHO_VERSION="2.1.0"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-test-deps: not root and no sudo; cannot install packages" >&2
        exit 1
    fi
fi

missing_debs=()
if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto_sub >/dev/null 2>&1; then
    missing_debs+=(mosquitto-clients)
fi
dpkg -s mosquitto >/dev/null 2>&1 || missing_debs+=(mosquitto)
command -v python3 >/dev/null 2>&1 || missing_debs+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing_debs+=(python3-pip)

if [ "${#missing_debs[@]}" -gt 0 ]; then
    echo "install-test-deps: apt-get update"
    $SUDO apt-get update -qq
    echo "install-test-deps: apt-get install -y ${missing_debs[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing_debs[@]}"
else
    echo "install-test-deps: mosquitto-clients, mosquitto and python3-pip already installed"
fi

if python3 -c 'import paho.mqtt' >/dev/null 2>&1; then
    echo "install-test-deps: paho-mqtt already installed ($(python3 -c 'import paho.mqtt; print(paho.mqtt.__version__)'))"
else
    echo "install-test-deps: python3 -m pip install paho-mqtt==${PAHO_VERSION}"
    # Debian marks the system Python as externally managed (PEP 668).
    if ! python3 -m pip install --quiet "paho-mqtt==${PAHO_VERSION}" 2>/dev/null; then
        $SUDO python3 -m pip install --quiet --break-system-packages "paho-mqtt==${PAHO_VERSION}"
    fi
    python3 -c 'import paho.mqtt; print("install-test-deps: paho-mqtt", paho.mqtt.__version__, "installed")'
fi
