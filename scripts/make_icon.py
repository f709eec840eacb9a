"""Draw the pack's registry icon, docs/images/icon.png (256x256 PNG; the registry takes PNG/SVG/JPG/GIF
up to 800x400). Deterministic: running it again writes the same pixels.

Picture: sampling trajectories starting spread out on the left (noise) and bending toward one target
on the right (the class or prompt they are guided to).

Usage: .venv/bin/python -m scripts.make_icon [OUT.png]
"""

from __future__ import annotations

import math
import os
import sys

from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "images", "icon.png")
SIZE = 256
SS = 4  # drawn at 4x and downsampled: anti-aliased edges


def trajectory(y0: float, bend: float, n: int = 64):
    """Points of a path from (0.14, y0) to the target (0.80, 0.50), in unit coordinates."""
    pts = []
    for i in range(n + 1):
        t = i / n
        pull = t**1.6  # guidance pulls harder as the noise goes down
        x = 0.14 + 0.66 * t
        y = y0 + (0.5 - y0) * pull + bend * math.sin(math.pi * t) * (1 - t)
        pts.append((x, y))
    return pts


def draw(size: int = SIZE) -> Image.Image:
    s = size * SS
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((0, 0, s - 1, s - 1), radius=int(0.18 * s), fill=(22, 27, 48, 255))
    starts = [(0.16, 0.05), (0.30, -0.04), (0.44, 0.03), (0.58, -0.03), (0.72, 0.04), (0.86, -0.05)]
    colors = [(94, 158, 255), (122, 178, 255), (150, 196, 255), (150, 196, 255), (122, 178, 255), (94, 158, 255)]
    for (y0, bend), col in zip(starts, colors):
        pts = [(x * s, y * s) for x, y in trajectory(y0, bend)]
        d.line(pts, fill=col + (255,), width=int(0.022 * s), joint="curve")
        r = 0.03 * s
        d.ellipse((pts[0][0] - r, pts[0][1] - r, pts[0][0] + r, pts[0][1] + r), fill=(200, 210, 235, 255))
    cx, cy = 0.80 * s, 0.50 * s
    for r, a in ((0.13, 60), (0.10, 110), (0.075, 255)):
        d.ellipse((cx - r * s, cy - r * s, cx + r * s, cy + r * s), fill=(255, 196, 64, a))
    r = 0.035 * s
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 246, 214, 255))
    return img.resize((size, size), Image.LANCZOS)


def save(img: Image.Image, out: str) -> str:
    """Write `img` as an optimized PNG at `out` (its folder made); returns `out`."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    img.save(out, optimize=True)
    return out


def main(out: str = OUT) -> str:
    return save(draw(), out)


if __name__ == "__main__":
    print(main(*sys.argv[1:2]))
