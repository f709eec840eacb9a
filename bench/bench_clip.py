"""Benchmark: cost per sampling step of zero-shot CLIP guidance, linear latent->RGB map vs VAE decode.

Models at real size with random weights, built under torch.inference_mode as ComfyUI loads them:
open_clip ViT-B-32 (224 px), ComfyUI's SD1.5 VAE (AutoencoderKL, comfy.sd.VAE), an SD1.5-architecture
UNetModel; latent 4xLxL (L=64: 512 px), batch 1, cfg 7 (2 model rows per step). Inside one real
KSampler step, the Classifier Guidance hook (the post-CFG function the MODEL patch installs) is
called for each case in turn, repeat after repeat (interleaved), and timed; medians. The unguided
model evaluation of the step (calc_cond_batch, 2 rows) is timed the same way for scale.
Writes the table into docs/BENCHMARKS.md.

    .venv/bin/python -m bench.bench_clip [--latent 64] [--repeats 3] [--threads N] [--no-through] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from devkit import comfy_host as H
from devkit.bench import device_line, write_section
from bench.bench_classifier import sd15_model

LABELS = ["a photo of a red car", "a photo of a blue car", "a photo of a cat", "a photo of a dog"]
SD_VAE = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def sd_vae():
    import torch
    import comfy.ldm.models.autoencoder as AE
    import comfy.sd

    shapes = AE.AutoencoderKL(ddconfig=SD_VAE, embed_dim=4).state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {
        k: (
            torch.randn(v.shape, generator=g) / max(1, v[0].numel()) ** 0.5
            if v.ndim > 1
            else torch.ones(v.shape)
            if "norm" in k and k.endswith("weight")
            else torch.zeros(v.shape)
        )
        for k, v in shapes.items()
    }
    with torch.inference_mode():
        return comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": SD_VAE, "embed_dim": 4}})


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-through", action="store_true", help="skip the through-the-model cases")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (0 = torch's default); 1 gives stable numbers on a machine shared with other jobs",
    )
    ap.add_argument("--no-write", action="store_true")
    return ap.parse_args()


def guidance_cases(through: bool) -> dict:
    """{case name: (decode, gradient, cutouts)}; the through-the-model cases only where `through`."""
    cases = {
        "linear map, detached": ("linear", "detached", 0),
        "linear map, detached, 8 cutouts": ("linear", "detached", 8),
        "VAE decode, detached": ("vae", "detached", 0),
    }
    if through:
        cases["linear map, through the model"] = ("linear", "through_model", 0)
        cases["VAE decode, through the model"] = ("vae", "through_model", 0)
    return cases


def guidance_hooks(model, cases: dict):
    """({case name: the Classifier Guidance hook with that CLIP classifier}, the model patchers the hooks use):
    open_clip ViT-B-32 with random weights, zero-shot over LABELS, and the SD1.5 VAE for the 'vae' decode."""
    import open_clip

    CL = H.pack_module("guidance_core.classifiers.clip")
    cn = H.pack_module("nodes.classifier_nodes")
    clip_nodes = H.pack_module("nodes.clip_nodes")
    vae = sd_vae()
    net = open_clip.create_model("ViT-B-32", pretrained=None, pretrained_image=False, pretrained_text=False)
    tok = open_clip.get_tokenizer("ViT-B-32")
    clips = {n: CL.build_zero_shot(net, tok, LABELS, cutouts=n) for n in (0, 8)}
    guide = dict(target=LABELS[1], scale=1.0, sigma_lo=0.0, sigma_hi=1.0e4, every_n=1, rms_clamp=0.0, dtype="float32")
    hooks, patchers = {}, []
    for name, (decode, gradient, cut) in cases.items():
        clf = clip_nodes.LoadedCLIPClassifier(clips[cut], LABELS, "bench", decode, vae, gradient)
        hooks[name] = cn._hook(model, clf, **guide)
        patchers += clf.model_patchers()
    return hooks, patchers


def time_in_one_step(model, hooks: dict, patchers: list, latent: int, repeats: int, cuda: bool) -> dict:
    """{"model": seconds of the unguided model evaluation (calc_cond_batch, 2 rows), case name: seconds of its hook}
    per repeat, timed inside one real KSampler step (a post-CFG function), the cases interleaved."""
    import torch
    import comfy.model_management
    import comfy.samplers

    times = {"model": [], **{k: [] for k in hooks}}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def probe(a):
        if times["model"]:
            return a["denoised"]
        comfy.model_management.load_models_gpu(patchers)
        for name in hooks:  # warm-up
            hooks[name](a)
        for r in range(repeats):
            sync()
            t0 = time.perf_counter()
            comfy.samplers.calc_cond_batch(
                a["model"], [a["cond"], a["uncond"]], a["input"], a["sigma"], a["model_options"]
            )
            sync()
            times["model"].append(time.perf_counter() - t0)
            for name in hooks:
                t0 = time.perf_counter()
                hooks[name](a)
                sync()
                times[name].append(time.perf_counter() - t0)
            print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        return a["denoised"]

    m = model.clone()
    m.set_model_sampler_post_cfg_function(probe)
    pos, neg = H.cond(1, dim=768, tokens=77), H.cond(2, dim=768, tokens=77)
    with torch.inference_mode():
        H.run_node(
            "KSampler",
            model=m,
            seed=1,
            steps=1,
            cfg=7.0,
            sampler_name="euler",
            scheduler="normal",
            positive=pos,
            negative=neg,
            latent_image={"samples": torch.zeros(1, 4, latent, latent)},
            denoise=1.0,
        )
    return times


def table(med: dict, cases: dict, latent: int, repeats: int, cuda: bool) -> str:
    """The Markdown table of the medians `med` (seconds per step) with the setting it was measured in."""
    import torch

    px = latent * 8
    lines = [
        f"Per sampling step, added by the Classifier Guidance hook with a zero-shot CLIP classifier (ViT-B-32, "
        f"224 px, {len(LABELS)} labels), random weights; SD1.5-architecture UNetModel and ComfyUI's SD1.5 VAE "
        f"(AutoencoderKL), both with inference-tensor weights as ComfyUI loads them; latent 4x{latent}x{latent} "
        f"({px} px), batch 1, cfg 7; {'fp16' if cuda else 'fp32'}. {repeats} interleaved repeats inside one "
        f"KSampler step, medians. Device: {device_line()}; torch {torch.__version__}.",
        "",
        "| | ms / step | x the unguided model evaluation |",
        "|---|---|---|",
        f"| unguided model evaluation of the step (2 rows) | {1000 * med['model']:.0f} | 1.00 |",
    ]
    for name in cases:
        lines.append(f"| + CLIP guidance: {name} | {1000 * med[name]:.0f} | {med[name] / med['model']:.2f} |")
    lines += [
        "",
        f"VAE decode vs linear map (detached): {med['VAE decode, detached'] / med['linear map, detached']:.0f}x "
        "the cost per step.",
    ]
    return "\n".join(lines)


def main():
    args = parse_args()
    H.boot()
    import torch
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    with torch.inference_mode():  # as ComfyUI loads models: inference-tensor weights
        model = sd15_model(torch.float16 if cuda else torch.float32)
    cases = guidance_cases(through=not args.no_through)
    hooks, patchers = guidance_hooks(model, cases)
    times = time_in_one_step(model, hooks, patchers, args.latent, args.repeats, cuda)
    text = table({k: statistics.median(v) for k, v in times.items()}, cases, args.latent, args.repeats, cuda)
    print(text)
    if not args.no_write:
        key = f"clip-{'gpu' if cuda else 'cpu'}-l{args.latent}"
        write_section(
            key,
            f"CLIP guidance cost per step, linear map vs VAE decode, {'GPU' if cuda else 'CPU'}, "
            f"{args.latent * 8} px (bench/bench_clip.py)",
            text,
        )


if __name__ == "__main__":
    main()
