"""Benchmark: PAG + CFG batched in one forward (Guidance Lab's perturbed-attention term) vs ComfyUI's
PerturbedAttentionGuidance node (a second model call per step), through the stock KSampler.

Same model, seed and steps; the runs are interleaved repeat after repeat, so machine noise hits all alike.
Model rows and calls per step are counted on the real forward. Writes the table into docs/BENCHMARKS.md
between the pag-batched markers.

    .venv/bin/python bench/bench_terms.py [--repeats 7] [--width 64] [--latent 32]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import comfy_host as H  # noqa: E402
from bench_cfg import write_section  # noqa: E402

from tqdm import tqdm  # noqa: E402


def ksampler_run(model, cfg, steps, latent, pos, neg):
    import torch

    t0 = time.perf_counter()
    H.run_node("KSampler", model=model, seed=1, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
               positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--width", type=int, default=64, help="UNet model_channels")
    ap.add_argument("--latent", type=int, default=32, help="latent height/width")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    H.boot()
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model = H.tiny_model("eps", width=args.width, cross_gain=3.0)
    pos, neg = H.cond(1), H.cond(2)
    latent = H.empty_latent(1, args.latent)
    pag_term = H.run_node("GuidanceLabPerturbedTerm", mode="pag", blocks="", weight=3.0, seg_sigma=10.0)[0]
    seg_term = H.run_node("GuidanceLabPerturbedTerm", mode="seg", blocks="", weight=3.0, seg_sigma=10.0)[0]
    cases = {
        "KSampler, CFG 5 (no PAG)": model,
        "ComfyUI PerturbedAttentionGuidance (scale 3) + CFG 5": H.run_node("PerturbedAttentionGuidance", model=model,
                                                                           scale=3.0)[0],
        "Guidance Lab PAG term (w 3) + CFG 5, batched": H.run_node("GuidanceLabCFGPatch", model=model, neg_scale=0.0,
                                                                   terms=pag_term)[0],
        "Guidance Lab SEG term (w 3, sigma 10) + CFG 5, batched": H.run_node("GuidanceLabCFGPatch", model=model,
                                                                             neg_scale=0.0, terms=seg_term)[0],
    }
    shape = {}
    for name, m in cases.items():  # warm-up, and the rows of each forward
        counter = H.RowCounter(m)
        ksampler_run(m, 5.0, args.steps, latent, pos, neg)
        counter.close()
        calls = [r for r, _ in counter.calls]
        shape[name] = (len(calls) / args.steps, sum(calls) / args.steps)
    times = {k: [] for k in cases}
    for _ in tqdm(range(args.repeats), desc="bench repeats"):
        for name, m in cases.items():
            times[name].append(ksampler_run(m, 5.0, args.steps, latent, pos, neg))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["ComfyUI PerturbedAttentionGuidance (scale 3) + CFG 5"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        f"Model: ComfyUI UNetModel, model_channels={args.width}, channel_mult [1,2], eps, random weights; latent "
        f"4x{args.latent}x{args.latent}, batch 1, KSampler euler, {args.steps} steps; PAG on the middle block; "
        f"{args.repeats} interleaved repeats, medians. Device: {device}; torch {torch.__version__}.",
        "",
        "| run | model calls / step | rows / step | median s / run | ratio to ComfyUI's PAG node |",
        "|---|---|---|---|---|",
    ]
    for name in cases:
        calls, rows = shape[name]
        lines.append(f"| {name} | {calls:g} | {rows:g} | {med[name]:.4f} | {med[name] / base:.3f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(f"pag-batched-w{args.width}-l{args.latent}",
                      f"PAG + CFG in one batched forward vs ComfyUI's PAG node, UNet width {args.width}, latent "
                      f"{args.latent}x{args.latent} (bench/bench_terms.py)", table)


if __name__ == "__main__":
    main()
