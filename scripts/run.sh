#!/usr/bin/env bash
# The main job: set everything up from nothing (CPU only), start a headless ComfyUI with
# Guidance Lab, run the pack's toy example workflows (example_workflows/toy_*.json) through
# POST /prompt and write their images and a contact sheet to OUTDIR. Nothing is downloaded.
# Usage: bash scripts/run.sh [OUTDIR]    (default: out/)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/scripts/setup.sh" | tail -n 1)"
cd "$ROOT"  # modules run from the repository root (scripts, devkit)
exec "$PY" -m scripts.run_demo "${1:-$ROOT/out}"
