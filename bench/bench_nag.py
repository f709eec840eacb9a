"""Benchmark: NAG at cfg 1 (Guidance Lab's NAG term, both forms) against the unguided step, ComfyUI's NAGuidance node
(where the running ComfyUI has it: 0.33+) and CFG with the same negative prompt, through the stock KSampler.

Same model, seed, prompts (77 tokens, as CLIP gives them) and steps; the runs are interleaved repeat after repeat, so
machine noise hits all alike. Model calls and rows per step are counted on the real forward. Writes the table into
docs/BENCHMARKS.md between the nag-cost markers.

    GL_COMFYUI=$PWD/.comfyui-0.33.0 PYTHONPATH=$PWD/.comfyui-0.33.0/_pydeps .venv/bin/python -m bench.bench_nag
"""
from __future__ import annotations

from devkit import bench
from devkit import comfy_host as H


def ksampler_run(model, cfg, steps, latent, pos, neg):
    H.run_node("KSampler", model=model, seed=1, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
               positive=pos, negative=neg, latent_image=latent, denoise=1.0)


def nag_patch(model, form):
    term = H.run_node("GuidanceLabNAGTerm", form=form, weight=4.0, tau=2.5, alpha=0.25)[0]
    return H.run_node("GuidanceLabCFGPatch", model=model, neg_scale=0.0, terms=term)[0]


def main():
    args = bench.tiny_unet_parser(__doc__.split("\n")[0], repeats=7).parse_args()
    H.boot()
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model = H.tiny_model("eps", width=args.width, cross_gain=3.0)
    pos, neg = H.cond(1, tokens=77), H.cond(2, tokens=77)
    latent = H.empty_latent(1, args.latent)
    unguided = "KSampler, cfg 1 (unguided)"
    cases = {unguided: (model, 1.0),
             "Guidance Lab NAG term, paper form, cfg 1": (nag_patch(model, "paper"), 1.0),
             "Guidance Lab NAG term, comfyui form, cfg 1": (nag_patch(model, "comfyui"), 1.0)}
    if "NAGuidance" in H.boot().NODE_CLASS_MAPPINGS:
        cases["ComfyUI NAGuidance (scale 5), cfg 1"] = (H.run_node("NAGuidance", model=model, nag_scale=5.0, nag_alpha=0.25,
                                                                    nag_tau=2.5)[0], 1.0)
    cases["KSampler, cfg 5 with the negative prompt (CFG)"] = (model, 5.0)
    shape = {}
    for name, (m, cfg) in cases.items():  # warm-up, and the rows of each forward
        counter = H.RowCounter(m)
        ksampler_run(m, cfg, args.steps, latent, pos, neg)
        counter.close()
        calls = [r for r, _ in counter.calls]
        shape[name] = (len(calls) / args.steps, sum(calls) / args.steps)
    runs = {name: (lambda m=m, cfg=cfg: ksampler_run(m, cfg, args.steps, latent, pos, neg)) for name, (m, cfg) in cases.items()}
    med = bench.interleaved_medians(runs, args.repeats)
    lines = [
        f"Model: ComfyUI UNetModel, model_channels={args.width}, channel_mult [1,2], eps, random weights; prompts of 77 "
        f"tokens; latent 4x{args.latent}x{args.latent}, batch 1, KSampler euler, {args.steps} steps; NAG weight 4 (nag_scale "
        f"5), tau 2.5, alpha 0.25; ComfyUI {H.comfyui_version()}; {args.repeats} interleaved repeats, medians. Device: "
        f"{bench.device_line()}; torch {torch.__version__}.",
        "",
        "| run | model calls / step | rows / step | median s / run | ratio to the unguided step |",
        "|---|---|---|---|---|",
    ]
    for name in cases:
        calls, rows = shape[name]
        lines.append(f"| {name} | {calls:g} | {rows:g} | {med[name]:.4f} | {med[name] / med[unguided]:.3f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        bench.write_section(f"nag-cost-w{args.width}-l{args.latent}",
                            f"NAG at cfg 1: cost against the unguided step, NAGuidance and CFG, UNet width {args.width}, "
                            f"latent {args.latent}x{args.latent} (bench/bench_nag.py)", table)


if __name__ == "__main__":
    main()
