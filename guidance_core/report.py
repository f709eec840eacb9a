"""Training report: accuracy per noise bucket as a PNG chart (PIL only)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw


def accuracy_plot(report: dict, width: int = 560, height: int = 320) -> Image.Image:
    """Validation accuracy (y, 0..1) against the noise bucket's sigma (x, log scale)."""
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    left, right, top, bottom = 60, width - 20, 30, height - 50
    d.rectangle([left, top, right, bottom], outline="black")
    buckets = report["buckets"]
    lo = math.log(buckets[0]["sigma_lo"])
    hi = math.log(buckets[-1]["sigma_hi"])
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - frac * (bottom - top)
        d.line([left - 4, y, left, y], fill="black")
        d.text((8, y - 6), f"{frac:.2f}", fill="black")
    chance = 1.0 / max(1, len(report.get("labels", [])) or 1)
    yc = bottom - chance * (bottom - top)
    d.line([left, yc, right, yc], fill=(180, 180, 180))
    pts = []
    for b in buckets:
        c = (math.log(b["sigma_lo"]) + math.log(b["sigma_hi"])) / 2
        x = left + (c - lo) / max(1e-9, hi - lo) * (right - left)
        y = bottom - b["accuracy"] * (bottom - top)
        pts.append((x, y))
        d.text((x - 18, bottom + 6), f"{math.exp(c):.3g}", fill="black")
    if len(pts) > 1:
        d.line(pts, fill=(30, 90, 200), width=3)
    for x, y in pts:
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(30, 90, 200))
    d.text((left, 8), "validation accuracy per noise level (grey: chance)", fill="black")
    d.text((left + (right - left) // 2 - 40, height - 22), "sigma (log scale)", fill="black")
    return im
