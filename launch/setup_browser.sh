#!/usr/bin/env bash
# Idempotent set-up of the real browser the page test drives (tests/integration/test_browser.py):
# Debian's headless-capable `chromium` and its matching `chromium-driver`, from apt-get.
# A no-op when both are installed; as non-root it uses sudo when available. Prints one line.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "[setup_browser] chromium and chromedriver present"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo -n"
else
  echo "[setup_browser] chromium missing and not root (no sudo): the browser test will skip" >&2
  exit 0
fi
start=$(date +%s)
if $SUDO apt-get update -qq >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; then
  echo "[setup_browser] installed chromium + chromium-driver in $(( $(date +%s) - start ))s"
else
  echo "[setup_browser] apt-get install chromium chromium-driver failed: the browser test will skip" >&2
fi
