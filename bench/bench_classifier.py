"""Benchmark: time per sampling step with vs without classifier guidance.

An SD1.5-architecture UNet (ComfyUI's own UNetModel with SD1.5's config, random weights) at a
64x64 latent, KSampler (euler, cfg 7, batch 1), with and without the Classifier Guidance patch
using the default-size noise-aware classifier; runs interleaved in one process, medians.
Writes the table into docs/BENCHMARKS.md.

    .venv/bin/python -m bench.bench_classifier [--steps 3] [--repeats 3] [--latent 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from devkit import comfy_host as H
from devkit.bench import device_line, write_section

SD15_UNET = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 768,
    "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


def sd15_model(dtype):
    import torch
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(dict(SD15_UNET, dtype=dtype))
    dev = comfy.model_management.get_torch_device()
    model = comfy.model_base.BaseModel(cfg, device=dev)
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():  # ComfyUI leaves weights uninitialized: give them values
        for p in model.diffusion_model.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5)).to(p))
    model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=dev, offload_device=torch.device("cpu"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    H.boot()
    import torch
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    cuda = torch.cuda.is_available()
    dtype = torch.float16 if cuda else torch.float32
    model = sd15_model(dtype)
    nodes_mod = H.pack_module("nodes.classifier_nodes")
    na = H.pack_module("guidance_core.classifiers.noise_aware")
    labels = [f"class{i}" for i in range(10)]
    net = na.NoiseAwareClassifier(na.ClassifierConfig(in_channels=4, num_classes=10))
    n_params = sum(p.numel() for p in net.parameters())
    clf = nodes_mod.LoadedClassifier(net, {"labels": labels, "latent_channels": 4, "parameterization": "eps"}, "bench")
    patched = H.run_node(
        "GuidanceLabClassifierGuidance",
        model=model,
        classifier=clf,
        target="class3",
        scale=1.0,
        sigma_lo=0.0,
        sigma_hi=1.0e4,
        every_n=1,
        rms_clamp=0.0,
        dtype="float32",
    )[0]
    pos, neg = H.cond(1, dim=768, tokens=77), H.cond(2, dim=768, tokens=77)
    latent = {"samples": torch.zeros(1, 4, args.latent, args.latent)}

    def run(m):
        t0 = time.perf_counter()
        with torch.inference_mode():
            H.run_node(
                "KSampler",
                model=m,
                seed=1,
                steps=args.steps,
                cfg=7.0,
                sampler_name="euler",
                scheduler="normal",
                positive=pos,
                negative=neg,
                latent_image=latent,
                denoise=1.0,
            )
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.steps

    run(model), run(patched)  # warm-up (model load, allocations)
    base, guided = [], []
    for _ in range(args.repeats):
        base.append(run(model))
        guided.append(run(patched))
    b, g = statistics.median(base), statistics.median(guided)
    device = device_line()
    table = "\n".join(
        [
            f"SD1.5-architecture UNetModel (random weights, {'fp16' if cuda else 'fp32'}), latent 4x{args.latent}x{args.latent}, "
            f"batch 1, cfg 7 (2 rows/step), euler; classifier: NoiseAwareClassifier default config "
            f"({n_params / 1e6:.2f} M parameters), eager forward+backward. {args.repeats} interleaved repeats of "
            f"{args.steps} steps, medians. Device: {device}; torch {torch.__version__}.",
            "",
            "| | s / step | ratio |",
            "|---|---|---|",
            f"| KSampler, no guidance | {b:.3f} | 1.000 |",
            f"| KSampler + Classifier Guidance patch | {g:.3f} | {g / b:.3f} |",
            "",
            f"Added per step: {100 * (g / b - 1):.1f}%.",
        ]
    )
    print(table)
    if not args.no_write:
        key = "classifier-gpu" if cuda else "classifier-cpu"
        write_section(
            key, f"Classifier guidance overhead per step, {'GPU' if cuda else 'CPU'} (bench/bench_classifier.py)", table
        )


if __name__ == "__main__":
    main()
