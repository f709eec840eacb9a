#!/usr/bin/env bash
# Set everything up from nothing (CPU only) and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args]   (e.g. -q, -k name, or test files to run only those)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/scripts/setup.sh" | tail -n 1)"
cd "$ROOT"
echo "[test] ComfyUI import check (--quick-test-for-ci) with the pack loaded"
LOG="$(mktemp)"
(cd "$ROOT/.comfyui" && "$PY" main.py --cpu --quick-test-for-ci --database-url sqlite:///:memory: >"$LOG" 2>&1) || { cat "$LOG"; exit 1; }
if grep "IMPORT FAILED" "$LOG" | grep -q "guidance-lab"; then
  grep "IMPORT FAILED" "$LOG"; echo "[test] the pack failed to import in ComfyUI"; exit 1
fi
grep -Eq "seconds: .*custom_nodes/guidance-lab$" "$LOG" || { cat "$LOG"; echo "[test] ComfyUI did not load the pack"; exit 1; }
bash "$ROOT/scripts/install_apt.sh"  # chromium (tests/test_web.py) and dataset-fashion-mnist (toy benchmark)
echo "[test] running pytest"
# Paths given (e.g. tests/test_toy.py) run just those; otherwise the whole tests/ tree.
for a in "$@"; do
  if [ -e "${a%%::*}" ]; then exec "$PY" -m pytest -c tests/pytest.ini "$@"; fi
done
exec "$PY" -m pytest -c tests/pytest.ini tests "$@"
