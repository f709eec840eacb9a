"""After the README's commands (scripts/run.sh, scripts/test.sh) have run: every ComfyUI tree set-up made holds,
in its custom_nodes folder, nothing but ComfyUI's own files and the pack as set-up links it, so the next run
starts from the same state (the dev kit's servers bring their demo nodes from a temporary folder). .ci/run runs it.
Usage: python -m scripts.check_leftovers     (exit 1 naming each leftover)"""

from __future__ import annotations

import glob
import os
import sys

from devkit import ROOT
from devkit.comfy_server import leftovers


def main() -> int:
    trees = [os.path.join(ROOT, ".comfyui"), *sorted(glob.glob(os.path.join(ROOT, ".comfyui-*")))]
    trees = [t for t in trees if os.path.isfile(os.path.join(t, "main.py"))]
    found = [entry for tree in trees for entry in leftovers(tree)]
    for entry in found:
        print(f"[leftovers] not ComfyUI's and not set-up's: {entry}")
    print(
        f"[leftovers] {len(trees)} ComfyUI trees checked ({', '.join(os.path.basename(t) for t in trees)}): "
        f"{len(found)} leftovers"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
