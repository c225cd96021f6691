#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the map-page test (tests/test_mappage.py).
#
# Does nothing when a chromium binary is already there. Installs with apt-get only when running as root
# (CI and the dev machines are root); otherwise prints what to run and exits 1, and the test skips with
# that reason. Never downloads a browser build of its own: the Debian package is the only source.
set -euo pipefail

for b in /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -x "$b" ]; then
        echo "chromium already installed: $b"
        exit 0
    fi
done

if [ "$(id -u)" != "0" ]; then
    echo "chromium is missing and this is not root; run: sudo apt-get update && sudo apt-get install -y chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
