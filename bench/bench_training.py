"""Benchmark: classifier training throughput (images/s) of guidance_core.classifier_training.Trainer.

Two latent shapes: 3x32x32 (the demo shapes world, pixel-space VAE) and 4x64x64 (SD1.5 latents of
512x512 images), default classifier width 64, batch 64, log-uniform sigmas. Random latents (the
speed does not depend on the content). Writes its section of docs/BENCHMARKS.md.

    .venv/bin/python -m bench.bench_training [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch

from devkit.bench import device_line, write_section
from guidance_core.classifier_training import NoiseSpec, TrainConfig, Trainer


def throughput(shape, steps, batch, device):
    n = 512
    latents = torch.randn(n, *shape)
    labels = torch.arange(n) % 10
    spec = NoiseSpec("eps", 0.0292, 14.61)
    tr = Trainer(
        latents,
        labels,
        [str(i) for i in range(10)],
        spec,
        TrainConfig(steps=steps + 2, batch_size=batch, val_fraction=0.0),
        device=device,
    )
    tr.config.steps = 2
    tr.run()  # warm-up
    tr.config.steps = steps + 2
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tr.run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for shape in ((3, 32, 32), (4, 64, 64)):
        rows.append((shape, throughput(shape, args.steps, args.batch, device)))
    name = device_line()
    lines = [
        f"NoiseAwareClassifier width 64 (channel_mult 1,2,2), batch {args.batch}, AdamW, {args.steps} timed steps "
        f"after warm-up. Device: {name}; torch {torch.__version__}.",
        "",
        "| latent shape | images / s |",
        "|---|---|",
    ]
    lines += [f"| {'x'.join(map(str, s))} | {ips:.0f} |" for s, ips in rows]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        key = "training-gpu" if device.type == "cuda" else "training-cpu"
        write_section(
            key,
            f"Classifier training throughput, {'GPU' if device.type == 'cuda' else 'CPU'} (bench/bench_training.py)",
            table,
        )


if __name__ == "__main__":
    main()
