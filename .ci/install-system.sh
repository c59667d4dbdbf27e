#!/usr/bin/env bash
# System packages the test suite needs that pip cannot bring: Debian's chromium for the web-page test
# of `facepipe serve` (tests/test_serve_page.py; it is skipped, with a reason, when chromium is absent).
# Called from .ci/run before pytest. Idempotent: does nothing when chromium is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system: chromium is missing and cannot be installed here (needs root and apt-get); the browser test will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
