"""Draw the pack's registry banner, docs/images/banner.png (1280x320 PNG; pyproject's [tool.comfy] Banner points
at it): the icon's picture (scripts/make_icon.py: sampling trajectories bending toward the target they are guided
to) stretched across the width, with the pack's name and what it does. Deterministic for a Pillow version (the
text uses Pillow's own embedded font, not the machine's): running it again writes the same pixels.

Usage: .venv/bin/python -m scripts.make_banner [OUT.png]
"""

from __future__ import annotations

import os
import sys

from PIL import Image, ImageDraw, ImageFont

from scripts.make_icon import ROOT, SS, save, trajectory

OUT = os.path.join(ROOT, "docs", "images", "banner.png")
SIZE = (1280, 320)
TITLE = "Guidance Lab"
SUBTITLE = "classifier guidance · CFG schedules · NAG · autoguidance, for ComfyUI"


def draw(size: tuple[int, int] = SIZE) -> Image.Image:
    w, h = size[0] * SS, size[1] * SS
    img = Image.new("RGBA", (w, h), (22, 27, 48, 255))
    d = ImageDraw.Draw(img)
    # the icon's trajectories in the right third of the banner, unit square mapped to that box
    x0, box = 0.62 * w, 0.36 * w
    starts = [(0.10, 0.04), (0.26, -0.04), (0.42, 0.03), (0.58, -0.03), (0.74, 0.04), (0.90, -0.05)]
    colors = [(94, 158, 255), (122, 178, 255), (150, 196, 255), (150, 196, 255), (122, 178, 255), (94, 158, 255)]
    for (y0, bend), col in zip(starts, colors):
        pts = [(x0 + x * box, y * h) for x, y in trajectory(y0, bend)]
        d.line(pts, fill=col + (255,), width=int(0.014 * h), joint="curve")
        r = 0.02 * h
        d.ellipse((pts[0][0] - r, pts[0][1] - r, pts[0][0] + r, pts[0][1] + r), fill=(200, 210, 235, 255))
    cx, cy = x0 + 0.80 * box, 0.50 * h
    glow = Image.new("RGBA", (w, h), (0, 0, 0, 0))  # the target's halo, blended over the background
    for r, a in ((0.16, 60), (0.12, 110)):
        g = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        ImageDraw.Draw(g).ellipse((cx - r * h, cy - r * h, cx + r * h, cy + r * h), fill=(255, 196, 64, a))
        glow = Image.alpha_composite(glow, g)
    img = Image.alpha_composite(img, glow)
    d = ImageDraw.Draw(img)
    r = 0.09 * h
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 196, 64, 255))
    r = 0.04 * h
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 246, 214, 255))
    d.text((0.05 * w, 0.30 * h), TITLE, font=ImageFont.load_default(size=int(0.22 * h)), fill=(236, 240, 250, 255))
    d.text((0.05 * w, 0.60 * h), SUBTITLE, font=ImageFont.load_default(size=int(0.075 * h)), fill=(170, 186, 220, 255))
    return img.resize(size, Image.LANCZOS).convert("RGB")


def main(out: str = OUT) -> str:
    return save(draw(), out)


if __name__ == "__main__":
    print(main(*sys.argv[1:2]))
