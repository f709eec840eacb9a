#!/usr/bin/env bash
# Debian's chromium for the browser tests of the frontend (tests/test_web.py), driven by the
# Python package playwright (requirements-dev.txt). Never downloads a browser from elsewhere.
# Idempotent and quiet: does nothing when chromium is already installed.
# As root with apt-get (CI): installs it, and a failed install stops the set-up (the browser tests
# must run there). Elsewhere: says what to run; tests/test_web.py then skips its browser tests.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium (browser tests of the frontend)" >&2
  export DEBIAN_FRONTEND=noninteractive
  LOG="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq chromium; } >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "[setup] apt-get install chromium failed" >&2
    exit 1
  fi
  rm -f "$LOG"
  command -v chromium >/dev/null 2>&1
else
  echo "[setup] chromium is missing; install it with: apt-get update && apt-get install -y chromium" \
       "(the browser tests in tests/test_web.py skip without it)" >&2
fi
