#!/usr/bin/env bash
# Debian packages the tests need, never downloaded from elsewhere:
#   chromium               the browser tests of the frontend (tests/test_web.py, driven by playwright)
#   dataset-fashion-mnist  the toy world's data (bench/toy, tests/test_toy_tradeoff.py)
# Idempotent and quiet: does nothing when both are present.
# As root with apt-get (CI): installs what is missing, and a failed install stops the set-up.
# Elsewhere: says what to run; the tests that need a missing package then skip.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  LOG="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "[setup] apt-get install ${missing[*]} failed" >&2
    exit 1
  fi
  rm -f "$LOG"
else
  echo "[setup] missing Debian packages; install them with: apt-get update && apt-get install -y ${missing[*]}" \
       "(tests that need them skip)" >&2
fi
