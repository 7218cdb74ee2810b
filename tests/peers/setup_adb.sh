#!/bin/sh
# Idempotent set-up for the ADB tests (run as root on Debian): Debian's adb as a fallback to the
# adb inside the adbutils wheel, and executable bits on the fake device's shims.
set -eu
if ! command -v adb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq adb
fi
here=$(cd "$(dirname "$0")" && pwd)
for shim in "$here"/android_shims/*; do
    case "$shim" in *.py) ;; *) [ -f "$shim" ] && chmod 755 "$shim" ;; esac
done
adb version | head -n 2
