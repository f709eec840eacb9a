"""Benchmark: sampling time of the Guidance Lab CFG GUIDER vs ComfyUI's native CFGGuider.

Same model, same seed, 20 steps, SamplerCustomAdvanced path, measured side by side in one run
(the two are interleaved, repeat after repeat, so machine noise hits both alike). Writes the
table into docs/BENCHMARKS.md between the cfg-guider markers.

    .venv/bin/python bench/bench_cfg.py [--repeats 9] [--width 64] [--latent 32]
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
sys.path.insert(0, ROOT)

import comfy_host as H  # noqa: E402

from tqdm import tqdm  # noqa: E402


def sampler_run(model, guider, sigmas, latent, sampler):
    import torch

    t0 = time.perf_counter()
    H.run_node("SamplerCustomAdvanced", noise=H.run_node("RandomNoise", noise_seed=1)[0], guider=guider,
               sampler=sampler, sigmas=sigmas, latent_image=latent)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--width", type=int, default=64, help="UNet model_channels")
    ap.add_argument("--latent", type=int, default=32, help="latent height/width")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    H.boot()
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model = H.tiny_model("eps", width=args.width, cross_gain=3.0)
    pos, neg, empty = H.cond(1), H.cond(2), H.cond(3)
    latent = H.empty_latent(1, args.latent)
    sampler = H.run_node("KSamplerSelect", sampler_name="euler")[0]
    sigmas = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=args.steps, denoise=1.0)[0]
    sig = [float(v) for v in sigmas]
    interval = H.run_node("GuidanceLabSchedule", kind="interval", axis="progress", start=1.0, end=0.0, exponent=2.0,
                          sigma_lo=sig[args.steps // 2], sigma_hi=sig[0] + 1, inside=1.0, outside=0.0,
                          keyframes="0:1")[0]
    post = H.run_node("GuidanceLabPostProcess", rescale_phi=0.7, rescale_space="auto", cfg_zero_star=False,
                      zero_init_steps=0, apg=False, apg_eta=1.0, apg_momentum=0.0, apg_norm_threshold=0.0,
                      perp_neg=False)[0]
    g = lambda **kw: H.run_node("GuidanceLabCFGGuider", model=model, positive=pos, negative=neg, cfg=7.0,  # noqa: E731
                                neg_scale=kw.pop("neg_scale", 6.0), **kw)[0]
    cases = {
        "plain CFG (s=7)": g(),
        "interval CFG, guided on half the steps": g(cfg_schedule=interval),
        "three-way (pos, neg, empty)": g(empty=empty),
        "CFG + rescale 0.7": g(post=post),
    }
    native = H.run_node("CFGGuider", model=model, positive=pos, negative=neg, cfg=7.0)[0]
    for gd in [native, *cases.values()]:  # warm-up
        sampler_run(model, gd, sigmas, latent, sampler)
    times = {"native": []} | {k: [] for k in cases}
    for _ in tqdm(range(args.repeats), desc="bench repeats"):
        times["native"].append(sampler_run(model, native, sigmas, latent, sampler))
        for name, gd in cases.items():
            times[name].append(sampler_run(model, gd, sigmas, latent, sampler))
    med = {k: statistics.median(v) for k, v in times.items()}
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        f"Model: ComfyUI UNetModel, model_channels={args.width}, channel_mult [1,2], eps; latent 4x{args.latent}x{args.latent}, "
        f"batch 1, euler, {args.steps} steps; {args.repeats} interleaved repeats, medians. Device: {device}; "
        f"torch {torch.__version__}.",
        "",
        "| guider | median s / run | ratio to native CFGGuider |",
        "|---|---|---|",
        f"| ComfyUI CFGGuider (native) | {med['native']:.4f} | 1.000 |",
    ]
    for name in cases:
        lines.append(f"| Guidance Lab: {name} | {med[name]:.4f} | {med[name] / med['native']:.3f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(f"cfg-guider-w{args.width}-l{args.latent}",
                      f"CFG GUIDER vs native CFGGuider, UNet width {args.width}, latent {args.latent}x{args.latent} "
                      "(bench/bench_cfg.py)", table)


def write_section(key: str, title: str, body: str):
    """Replace (or append) one marked section of docs/BENCHMARKS.md, writing atomically."""
    path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nNumbers written by the scripts in bench/.\n"
    block = f"{start}\n## {title}\n\n{body}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    from guidance_core.io import atomic_bytes

    atomic_bytes(path, text.encode())


if __name__ == "__main__":
    main()
