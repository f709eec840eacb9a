"""Benchmark: sampling time of the Guidance Lab CFG GUIDER vs ComfyUI's native CFGGuider.

Same model, same seed, 20 steps, SamplerCustomAdvanced path, measured side by side in one run
(the two are interleaved, repeat after repeat, so machine noise hits both alike). Writes the
table into docs/BENCHMARKS.md between the cfg-guider markers.

    .venv/bin/python -m bench.bench_cfg [--repeats 9] [--width 64] [--latent 32]
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from devkit import comfy_host as H
from devkit import bench


def sampler_run(guider, sigmas, latent, sampler):
    H.run_node(
        "SamplerCustomAdvanced",
        noise=H.run_node("RandomNoise", noise_seed=1)[0],
        guider=guider,
        sampler=sampler,
        sigmas=sigmas,
        latent_image=latent,
    )


def main():
    args = bench.tiny_unet_parser(__doc__.split("\n")[0], repeats=9).parse_args()

    H.boot()
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model = H.tiny_model("eps", width=args.width, cross_gain=3.0)
    pos, neg, empty = H.cond(1), H.cond(2), H.cond(3)
    latent = H.empty_latent(1, args.latent)
    sampler = H.run_node("KSamplerSelect", sampler_name="euler")[0]
    sigmas = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=args.steps, denoise=1.0)[0]
    sig = [float(v) for v in sigmas]
    interval = H.run_node(
        "GuidanceLabSchedule",
        kind="interval",
        axis="progress",
        start=1.0,
        end=0.0,
        exponent=2.0,
        sigma_lo=sig[args.steps // 2],
        sigma_hi=sig[0] + 1,
        inside=1.0,
        outside=0.0,
        keyframes="0:1",
    )[0]
    post = H.run_node(
        "GuidanceLabPostProcess",
        rescale_phi=0.7,
        rescale_space="auto",
        cfg_zero_star=False,
        zero_init_steps=0,
        apg=False,
        apg_eta=1.0,
        apg_momentum=0.0,
        apg_norm_threshold=0.0,
        perp_neg=False,
    )[0]
    g = lambda **kw: H.run_node(
        "GuidanceLabCFGGuider",
        model=model,
        positive=pos,
        negative=neg,
        cfg=7.0,  # noqa: E731
        neg_scale=kw.pop("neg_scale", 6.0),
        **kw,
    )[0]
    cases = {
        "plain CFG (s=7)": g(),
        "interval CFG, guided on half the steps": g(cfg_schedule=interval),
        "three-way (pos, neg, empty)": g(empty=empty),
        "CFG + rescale 0.7": g(post=post),
    }
    native = H.run_node("CFGGuider", model=model, positive=pos, negative=neg, cfg=7.0)[0]
    runs = {
        name: (lambda gd=gd: sampler_run(gd, sigmas, latent, sampler))
        for name, gd in {"native": native, **cases}.items()
    }
    med = bench.interleaved_medians(runs, args.repeats)
    import torch

    device = bench.device_line()
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
        bench.write_section(
            f"cfg-guider-w{args.width}-l{args.latent}",
            f"CFG GUIDER vs native CFGGuider, UNet width {args.width}, latent {args.latent}x{args.latent} "
            "(bench/bench_cfg.py)",
            table,
        )


if __name__ == "__main__":
    main()
