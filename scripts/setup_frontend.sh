#!/usr/bin/env bash
# Install the newest ComfyUI frontend from PyPI (comfyui-frontend-package) beside the pinned one, for the
# browser tests on two frontends (devkit/frontends.py). Idempotent. The venv's own frontend (1.32.9, pinned
# by ComfyUI 0.3.75) is not touched: the package goes into .frontends/<version>/ with pip --target.
# Usage: bash scripts/setup_frontend.sh [VERSION]     (default: the newest on the index; GL_FRONTEND_VERSION too)
# Prints the static folder to pass to ComfyUI's --front-end-root on its last line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${GL_PYTHON:-$ROOT/.venv/bin/python}"
DEST="${GL_FRONTENDS:-$ROOT/.frontends}"
PKG=comfyui-frontend-package

log() { echo "[setup-frontend] $*" >&2; }
static_of() { echo "$DEST/$1/comfyui_frontend_package/static"; }
installed() { [ -f "$(static_of "$1")/index.html" ]; }

VERSION="${1:-${GL_FRONTEND_VERSION:-}}"
if [ -z "$VERSION" ]; then
  # the newest version the index offers (pip's ordinary client); offline, the newest one already here
  VERSION="$("$PY" -m pip index versions "$PKG" 2>/dev/null | sed -n "s/^$PKG (\([^)]*\)).*/\1/p" | head -n 1 || true)"
  if [ -z "$VERSION" ]; then
    VERSION="$(ls -1 "$DEST" 2>/dev/null | sort -V | while read -r v; do installed "$v" && echo "$v"; done | tail -n 1 || true)"
    [ -n "$VERSION" ] || { log "cannot ask the index for $PKG and none is installed in $DEST"; exit 1; }
    log "index not reachable; using the newest installed frontend $VERSION"
  fi
fi

if ! installed "$VERSION"; then
  log "installing $PKG==$VERSION into $DEST/$VERSION (the venv keeps its own)"
  rm -rf "$DEST/$VERSION.tmp"
  out="$(mktemp)"
  rc=0
  "$PY" -m pip install -q --no-deps --disable-pip-version-check --target "$DEST/$VERSION.tmp" "$PKG==$VERSION" \
    >"$out" 2>&1 || rc=$?
  grep -v -e "is ignored: it is neither" "$out" >&2 || true
  rm -f "$out"
  [ $rc -eq 0 ] || { rm -rf "$DEST/$VERSION.tmp"; exit $rc; }
  rm -rf "$DEST/$VERSION"
  mv "$DEST/$VERSION.tmp" "$DEST/$VERSION"
  installed "$VERSION" || { log "no static/index.html in $DEST/$VERSION"; exit 1; }
fi
log "ready: $PKG $VERSION"
static_of "$VERSION"
