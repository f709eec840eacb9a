"""The README's main job: start a headless ComfyUI with Guidance Lab, run the demo workflows
(stock KSampler + CFG patch, SamplerCustomAdvanced + CFG GUIDER, composable terms) on the
exact shapes model, and write the images to OUTDIR (default: out/)."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_server import ComfyServer, error_of, images_of  # noqa: E402
from demo_prompts import all_prompts  # noqa: E402


def contact_sheet(rows, path):
    """One row of images per workflow, labelled, in one PNG."""
    from PIL import Image, ImageDraw

    ims = [[Image.open(p).convert("RGB") for p in paths] for _, paths in rows]
    w, h = ims[0][0].size
    label_w = 210
    sheet = Image.new("RGB", (label_w + w * max(len(r) for r in ims), h * len(ims)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((name, _), row) in enumerate(zip(rows, ims)):
        draw.text((8, i * h + h // 2 - 6), name, fill="black")
        for j, im in enumerate(row):
            sheet.paste(im, (label_w + j * w, i * h))
    sheet.save(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("outdir", nargs="?", default="out")
    args = ap.parse_args()
    out = os.path.abspath(args.outdir)
    failed = 0
    rows = []
    with ComfyServer(out) as srv:
        print(f"ComfyUI running headless at {srv.url}; images go to {out}")
        for name, prompt in all_prompts().items():
            entry = srv.run(prompt)
            err = error_of(entry)
            if err:
                failed += 1
                print(f"  {name}: FAILED {err}")
                continue
            paths = images_of(entry, out)
            rows.append((name, paths))
            for path in paths:
                print(f"  {name}: {path}")
    if rows:
        sheet = contact_sheet(rows, os.path.join(out, "contact_sheet.png"))
        print(f"contact sheet: {sheet}")
    print(f"done: {len(all_prompts()) - failed} workflows ran, {failed} failed; images in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
