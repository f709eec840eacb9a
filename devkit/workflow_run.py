"""Run example workflows (UI format) on a headless ComfyUI server and lay out what they made. Used by
scripts/run_demo.py (the README's main command), scripts/make_workflow_thumbnails.py and the tests. Not shipped."""

from __future__ import annotations

import json
import math
import os

from .comfy_server import error_of, images_of
from .workflow_api import ui_to_api

from . import ROOT

EXAMPLES = os.path.join(ROOT, "example_workflows")


def example_path(name: str) -> str:
    return os.path.join(EXAMPLES, f"{name}.json")


def toy_workflow_names() -> list[str]:
    """The example workflows that run on the pack's toy world (no downloads): example_workflows/toy_*.json."""
    return sorted(f[:-5] for f in os.listdir(EXAMPLES) if f.startswith("toy_") and f.endswith(".json"))


def load(name_or_path: str) -> dict:
    path = name_or_path if name_or_path.endswith(".json") else example_path(name_or_path)
    with open(path) as f:
        return json.load(f)


def run_workflow(srv, workflow: dict, object_info: dict | None = None, timeout: float = 600.0):
    """(history entry, image paths, error or None) of one UI-format workflow run through POST /prompt."""
    prompt = ui_to_api(workflow, object_info if object_info is not None else srv.get("/object_info"))
    entry = srv.run(prompt, timeout)
    return entry, images_of(entry, srv.output_dir), error_of(entry)


def image_grid(paths: list[str], cols: int | None = None, cell: int | None = None, pad: int = 2):
    """The images in a grid (cols default: about square) on a dark background, as a PIL image."""
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in paths]
    cols = cols or math.ceil(math.sqrt(len(ims)))
    rows = math.ceil(len(ims) / cols)
    w, h = (cell, cell) if cell else ims[0].size
    grid = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), (24, 24, 24))
    for i, im in enumerate(ims):
        if im.size != (w, h):
            im = im.resize((w, h), Image.NEAREST)
        grid.paste(im, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return grid


def contact_sheet(rows: list[tuple[str, list[str]]], path: str, cell: int = 96, label_w: int = 260) -> str:
    """One labelled row of images per workflow, in one PNG."""
    from PIL import Image, ImageDraw

    n = max(len(p) for _, p in rows)
    sheet = Image.new("RGB", (label_w + n * cell, cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, paths) in enumerate(rows):
        draw.text((8, i * cell + cell // 2 - 6), name, fill="black")
        for j, p in enumerate(paths):
            im = Image.open(p).convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(im, (label_w + j * cell, i * cell))
    sheet.save(path)
    return path
