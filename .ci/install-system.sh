#!/usr/bin/env bash
# System packages the test suite needs that pip cannot bring: Debian's chromium for the web-page test of
# `facepipe serve` (tests/test_serve_page.py) and the mosquitto MQTT broker for the video event tests
# (tests/test_video_events.py); strace, which watches which model files a chain opens (tests/test_released_models.py);
# each test is skipped, with a reason, when its program is absent.
# Called from .ci/run before pytest. Idempotent: does nothing when all are already there.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system: ${missing[*]} missing and cannot be installed here (needs root and apt-get); their tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
