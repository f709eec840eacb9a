"""Thumbnails of the example workflows: run every toy workflow (example_workflows/toy_*.json) on a headless
ComfyUI server and write example_workflows/<name>.jpg, a grid of the images it made (ComfyUI's template
browser shows <name>.jpg next to <name>.json). The Stable Diffusion workflows need weights this project
cannot ship and get no thumbnail. Not shipped.

    .venv/bin/python -m scripts.make_workflow_thumbnails [NAME ...]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

from devkit import workflow_run as R
from devkit.comfy_server import ComfyServer

MAX_BYTES = 100_000
CELL = 128  # px per image in the grid (the toy images are 128 px: Toy Decode upscale 4)


def save_thumbnail(paths: list[str], out_path: str) -> int:
    """A JPEG grid of the images (about square, 5 columns for 10), under MAX_BYTES; returns its size."""
    cols = 5 if len(paths) == 10 else math.ceil(math.sqrt(len(paths)))
    grid = R.image_grid(paths, cols=cols, cell=CELL)
    for quality in (88, 80, 72, 64, 56):
        grid.save(out_path, "JPEG", quality=quality, optimize=True)
        if os.path.getsize(out_path) < MAX_BYTES:
            break
    return os.path.getsize(out_path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="workflow names (default: every toy_* workflow)")
    ap.add_argument("--out", default=R.EXAMPLES, help="folder for the .jpg files")
    args = ap.parse_args(argv)
    names = args.names or R.toy_workflow_names()
    failed = 0
    with ComfyServer(tempfile.mkdtemp(prefix="workflow-thumbnails-")) as srv:
        info = srv.get("/object_info")
        for name in names:
            t0 = time.time()
            _, paths, err = R.run_workflow(srv, R.load(name), info)
            if err or not paths:
                failed += 1
                print(f"{name}: FAILED {err or 'no images'}")
                continue
            out = os.path.join(args.out, f"{name}.jpg")
            size = save_thumbnail(paths, out)
            print(f"{name}: {len(paths)} images in {time.time() - t0:.0f} s -> {out} ({size // 1000} kB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
