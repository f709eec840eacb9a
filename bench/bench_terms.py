"""Benchmark: PAG + CFG batched in one forward (Guidance Lab's perturbed-attention term) vs ComfyUI's
PerturbedAttentionGuidance node (a second model call per step), through the stock KSampler; the SEG and TPG
terms batched the same way (the PAG node's second call is the separate-call cost they avoid).

Same model, seed and steps; the runs are interleaved repeat after repeat, so machine noise hits all alike.
Model rows and calls per step are counted on the real forward. Writes the table into docs/BENCHMARKS.md
between the pag-batched markers.

    .venv/bin/python -m bench.bench_terms [--repeats 7] [--width 64] [--latent 32]
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from devkit import comfy_host as H
from devkit import bench


def calc_cond_batch_as_comfyui(args):
    """A sampler_calc_cond_batch_function that batches as ComfyUI does (another node's hook, doing nothing else)."""
    import comfy.samplers

    return comfy.samplers.calc_cond_batch(
        args["model"], args["conds"], args["input"], args["sigma"], args["model_options"]
    )


def main():
    args = bench.tiny_unet_parser(__doc__.split("\n")[0], repeats=7).parse_args()

    H.boot()
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model = H.tiny_model("eps", width=args.width, cross_gain=3.0)
    pos, neg = H.cond(1), H.cond(2)
    latent = H.empty_latent(1, args.latent)
    pag_term = H.run_node("GuidanceLabPerturbedTerm", mode="pag", blocks="", weight=3.0, seg_sigma=10.0)[0]
    seg_term = H.run_node("GuidanceLabPerturbedTerm", mode="seg", blocks="", weight=3.0, seg_sigma=10.0)[0]
    tpg_term = H.run_node("GuidanceLabPerturbedTerm", mode="tpg", blocks="middle.0", weight=3.0, seg_sigma=10.0)[0]
    cases = {
        "KSampler, CFG 5 (no PAG)": model,
        "ComfyUI PerturbedAttentionGuidance (scale 3) + CFG 5": H.run_node(
            "PerturbedAttentionGuidance", model=model, scale=3.0
        )[0],
        "Guidance Lab PAG term (w 3) + CFG 5, batched": H.run_node(
            "GuidanceLabCFGPatch", model=model, neg_scale=0.0, terms=pag_term
        )[0],
        "Guidance Lab SEG term (w 3, sigma 10) + CFG 5, batched": H.run_node(
            "GuidanceLabCFGPatch", model=model, neg_scale=0.0, terms=seg_term
        )[0],
        "Guidance Lab TPG term (w 3, middle block) + CFG 5, batched": H.run_node(
            "GuidanceLabCFGPatch", model=model, neg_scale=0.0, terms=tpg_term
        )[0],
    }
    # the same terms with their perturbed rows in a call of their own: what the runtime does where another node
    # batches the model calls its own way (a sampler_calc_cond_batch_function, here ComfyUI's own calc_cond_batch)
    for kind in ("PAG", "TPG"):
        own = cases[next(n for n in cases if n.startswith(f"Guidance Lab {kind} term"))].clone()
        own.set_model_sampler_calc_cond_batch_function(calc_cond_batch_as_comfyui)
        cases[f"Guidance Lab {kind} term + CFG 5, perturbed rows in a call of their own"] = own
    measured = bench.ksampler_cases(
        {name: (m, 5.0) for name, m in cases.items()}, args.steps, args.repeats, latent, pos, neg
    )
    base = measured["ComfyUI PerturbedAttentionGuidance (scale 3) + CFG 5"][2]
    device = bench.device_line()
    lines = [
        f"Model: ComfyUI UNetModel, model_channels={args.width}, channel_mult [1,2], eps, random weights; latent "
        f"4x{args.latent}x{args.latent}, batch 1, KSampler euler, {args.steps} steps; PAG on the middle block; "
        f"{args.repeats} interleaved repeats, medians. Device: {device}; torch {torch.__version__}.",
        "",
        "| run | model calls / step | rows / step | median s / run | ratio to ComfyUI's PAG node |",
        "|---|---|---|---|---|",
    ]
    for name, (calls, rows, med) in measured.items():
        lines.append(f"| {name} | {calls:g} | {rows:g} | {med:.4f} | {med / base:.3f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        bench.write_section(
            f"pag-batched-w{args.width}-l{args.latent}",
            f"PAG, SEG, TPG + CFG in one batched forward vs ComfyUI's PAG node and vs their rows in a "
            f"call of their own, UNet width {args.width}, latent "
            f"{args.latent}x{args.latent} (bench/bench_terms.py)",
            table,
        )


if __name__ == "__main__":
    main()
