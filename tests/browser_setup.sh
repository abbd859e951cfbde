#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the browser test (tests/test_app_browser.py).
# Idempotent and quiet; where apt-get is unavailable (or not root) it says so and the test skips.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser_setup: apt-get not available; install Chromium yourself (the browser test will be skipped)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "browser_setup: not root; run 'sudo apt-get install -y chromium' (the browser test will be skipped)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  || echo "browser_setup: installing chromium failed (the browser test will be skipped)" >&2
exit 0
