"""Benchmark: NAG at cfg 1 (Guidance Lab's NAG term, both forms) against the unguided step, ComfyUI's NAGuidance node
(where the running ComfyUI has it: 0.33+) and CFG with the same negative prompt, through the stock KSampler; on a
UNet (default); with --wan on a Wan 2.1 text-to-video DiT (paper form on its text cross-attention; NAGuidance and
the comfyui form do not act on Wan); with --flux on a Flux.1 dev DiT (joint attention: the paper form's shadow row).

Same model, seed, prompts (77 tokens, as CLIP gives them) and steps; the runs are interleaved repeat after repeat, so
machine noise hits all alike. Model calls and rows per step are counted on the real forward. Writes the table into
docs/BENCHMARKS.md between the nag-cost markers.

    GL_COMFYUI=$PWD/.comfyui-0.33.0 PYTHONPATH=$PWD/.comfyui-0.33.0/_pydeps .venv/bin/python -m bench.bench_nag
    .venv/bin/python -m bench.bench_nag --wan --steps 8
    GL_COMFYUI=$PWD/.comfyui-0.33.0 PYTHONPATH=$PWD/.comfyui-0.33.0/_pydeps .venv/bin/python -m bench.bench_nag --flux --steps 8
"""

from __future__ import annotations

from devkit import bench
from devkit import comfy_host as H


WAN_DIM, WAN_LAYERS, WAN_TEXT = 256, 4, 512  # --wan: hidden size, blocks, text tokens (Wan's T5 gives 512)


def wan_world(latent: int):
    """A Wan 2.1 text-to-video network at bench size (random weights), its prompts and a 4-frame latent."""
    import torch

    from devkit import families as F

    cfg = F._config(
        "WAN21_T2V",
        dict(
            model_type="t2v",
            patch_size=(1, 2, 2),
            text_len=WAN_TEXT,
            in_dim=16,
            dim=WAN_DIM,
            ffn_dim=4 * WAN_DIM,
            freq_dim=64,
            text_dim=64,
            out_dim=16,
            num_heads=4,
            num_layers=WAN_LAYERS,
            window_size=(-1, -1),
            qk_norm=True,
            cross_attn_norm=True,
            eps=1e-6,
            dtype=torch.float32,
        ),
    )
    model = F._patcher(cfg.get_model({}, device="cpu"), 16)
    conds = [H.cond(s, tokens=WAN_TEXT, dim=64) for s in (1, 2)]
    return model, conds, {"samples": torch.zeros(1, 16, 4, latent, latent)}


FLUX_DIM, FLUX_DOUBLE, FLUX_SINGLE, FLUX_TEXT = 256, 2, 4, 256  # --flux: hidden size, blocks, T5 tokens


def flux_world(latent: int):
    """A Flux.1 dev network at bench size (random weights), its prompts (guidance 3.5) and a latent."""
    import torch

    from devkit import families as F

    model = F.flux_dev(
        seed=16,
        vec_in_dim=64,
        context_in_dim=64,
        hidden_size=FLUX_DIM,
        mlp_ratio=4.0,
        num_heads=4,
        depth=FLUX_DOUBLE,
        depth_single_blocks=FLUX_SINGLE,
        axes_dim=[16, 24, 24],
    )
    conds = [
        [[c, {**extra, "guidance": 3.5}] for c, extra in H.cond(s, tokens=FLUX_TEXT, dim=64, pooled=64)] for s in (1, 2)
    ]
    return model, conds, {"samples": torch.zeros(1, 16, latent, latent)}


def nag_patch(model, form):
    term = H.run_node("GuidanceLabNAGTerm", form=form, weight=4.0, tau=2.5, alpha=0.25)[0]
    return H.run_node("GuidanceLabCFGPatch", model=model, neg_scale=0.0, terms=term)[0]


def main():
    ap = bench.tiny_unet_parser(__doc__.split("\n")[0], repeats=7)
    ap.add_argument("--wan", action="store_true", help="a Wan 2.1 DiT instead of the UNet (--latent: its height/width)")
    ap.add_argument("--flux", action="store_true", help="a Flux.1 dev DiT instead of the UNet (--latent: height/width)")
    args = ap.parse_args()
    H.boot()
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False
    if args.wan:
        model, (pos, neg), latent = wan_world(args.latent)
        forms = ("paper",)
        what = (
            f"ComfyUI WanModel (Wan 2.1 text-to-video), dim {WAN_DIM}, {WAN_LAYERS} blocks, random weights; prompts of "
            f"{WAN_TEXT} tokens; latent 16x4x{args.latent}x{args.latent} ({args.latent**2} image tokens)"
        )
    elif args.flux:
        model, (pos, neg), latent = flux_world(args.latent)
        forms = ("paper", "comfyui") if "NAGuidance" in H.boot().NODE_CLASS_MAPPINGS else ("paper",)
        what = (
            f"ComfyUI Flux (Flux.1 dev), hidden {FLUX_DIM}, {FLUX_DOUBLE} double + {FLUX_SINGLE} single blocks, random "
            f"weights; prompts of {FLUX_TEXT} tokens, guidance 3.5; latent 16x{args.latent}x{args.latent} "
            f"({(args.latent // 2) ** 2} image tokens)"
        )
    else:
        model = H.tiny_model("eps", width=args.width, cross_gain=3.0)
        pos, neg = H.cond(1, tokens=77), H.cond(2, tokens=77)
        latent = H.empty_latent(1, args.latent)
        forms = ("paper", "comfyui")
        what = (
            f"ComfyUI UNetModel, model_channels={args.width}, channel_mult [1,2], eps, random weights; prompts of 77 "
            f"tokens; latent 4x{args.latent}x{args.latent}"
        )
    unguided = "KSampler, cfg 1 (unguided)"
    cases = {unguided: (model, 1.0)}
    for form in forms:
        cases[f"Guidance Lab NAG term, {form} form, cfg 1"] = (nag_patch(model, form), 1.0)
    if "NAGuidance" in H.boot().NODE_CLASS_MAPPINGS and not args.wan:
        cases["ComfyUI NAGuidance (scale 5), cfg 1"] = (
            H.run_node("NAGuidance", model=model, nag_scale=5.0, nag_alpha=0.25, nag_tau=2.5)[0],
            1.0,
        )
    cases["KSampler, cfg 5 with the negative prompt (CFG)"] = (model, 5.0)
    measured = bench.ksampler_cases(cases, args.steps, args.repeats, latent, pos, neg)
    lines = [
        f"Model: {what}, batch 1, KSampler euler, {args.steps} steps; NAG weight 4 (nag_scale 5), tau 2.5, alpha 0.25; "
        f"ComfyUI {H.comfyui_version()}; {args.repeats} interleaved repeats, medians. Device: {bench.device_line()}; "
        f"torch {torch.__version__}.",
        "",
        "| run | model calls / step | rows / step | median s / run | ratio to the unguided step |",
        "|---|---|---|---|---|",
    ]
    base = measured[unguided][2]
    for name, (calls, rows, med) in measured.items():
        lines.append(f"| {name} | {calls:g} | {rows:g} | {med:.4f} | {med / base:.3f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        if args.wan:
            key = f"nag-cost-wan-d{WAN_DIM}-l{args.latent}"
            title = (
                f"NAG at cfg 1 on Wan 2.1 (paper form on its text cross-attention), dim {WAN_DIM}, latent "
                f"{args.latent}x{args.latent}x4"
            )
        elif args.flux:
            key = f"nag-cost-flux-d{FLUX_DIM}-l{args.latent}"
            title = (
                f"NAG at cfg 1 on Flux.1 dev (joint attention: the paper form's shadow row), hidden {FLUX_DIM}, latent "
                f"{args.latent}x{args.latent}"
            )
        else:
            key = f"nag-cost-w{args.width}-l{args.latent}"
            title = (
                f"NAG at cfg 1: cost against the unguided step, NAGuidance and CFG, UNet width {args.width}, "
                f"latent {args.latent}x{args.latent}"
            )
        bench.write_section(key, f"{title} (bench/bench_nag.py)", table)


if __name__ == "__main__":
    main()
