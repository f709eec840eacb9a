"""Benchmark: a model term (autoguidance) whose weak model is a LoRA clone of the sampled checkpoint (one network,
the term's weights swapped in for its rows: nodes/shared_network.py) vs the same weights on a network of their own
(a second checkpoint loader), through the stock KSampler + CFG Patch at cfg 1.

Time: the runs interleaved repeat after repeat in one process, medians. Rows and calls per step counted on the real
forwards of both networks. Peak memory: each case alone in a fresh process (ru_maxrss after building its models and
sampling once), so one case's allocations do not hide the other's. Writes docs/BENCHMARKS.md between the
model-term markers.

    .venv/bin/python -m bench.bench_model_term [--repeats 7] [--width 64] [--latent 32]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

from devkit import ROOT
from devkit import bench
from devkit import comfy_host as H
from devkit.lora import lora_state_dict, with_lora

CASES = (
    "KSampler, cfg 1, no term",
    "model term = separate network (same weights)",
    "model term = LoRA clone (shared network)",
)


def build(case: str, width: int):
    """(sampled MODEL, the networks whose forwards count) of a case."""
    base = H.tiny_model("eps", width=width, seed=4)
    lora = lora_state_dict(base)
    if case == CASES[0]:
        return base, [base]
    weak = with_lora(H.tiny_model("eps", width=width, seed=4) if case == CASES[1] else base, lora)
    term = H.run_node("GuidanceLabModelTerm", model=weak, weight=1.0)[0]
    return H.run_node("GuidanceLabCFGPatch", model=base, neg_scale=0.0, terms=term)[0], [base, weak]


def run(model, steps, latent):
    H.run_node(
        "KSampler",
        model=model,
        seed=1,
        steps=steps,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=H.cond(1),
        negative=H.cond(2),
        latent_image=latent,
        denoise=1.0,
    )


def memory_mb(case: str, args) -> dict:
    """Memory of a fresh process that builds the case and samples once (MB): peak RSS, the RSS the case added after
    ComfyUI's start-up, and the bytes of the distinct networks' weights."""
    code = (
        "import json, sys; from bench import bench_model_term as B; "
        "print(json.dumps(B.one_case(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, case, str(args.width), str(args.latent), str(args.steps)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )  # -c: cwd on sys.path
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def one_case(case: str, width: int, latent: int, steps: int) -> dict:
    H.boot()
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    before = rss_mb()
    model, nets = build(case, width)
    run(model, steps, H.empty_latent(1, latent))
    weights = sum(
        p.numel() * p.element_size()
        for n in {id(n.model): n for n in nets}.values()
        for p in n.model.diffusion_model.parameters()
    )
    return {
        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "added": rss_mb() - before,
        "weights": weights / 2**20,
    }


def main():
    args = bench.tiny_unet_parser(__doc__.split("\n")[0], repeats=7).parse_args()
    H.boot()
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False
    latent = H.empty_latent(1, args.latent)
    built = {case: build(case, args.width) for case in CASES}
    shape = {}
    for case, (model, nets) in built.items():  # warm-up, and the rows of each forward of every network
        counters = [H.RowCounter(n) for n in {id(n.model): n for n in nets}.values()]
        run(model, args.steps, latent)
        calls = [r for c in counters for r, _ in c.calls]
        for c in counters:
            c.close()
        shape[case] = (len(calls) / args.steps, sum(calls) / args.steps)
    med = bench.interleaved_medians(
        {c: (lambda m=m: run(m, args.steps, latent)) for c, (m, _) in built.items()}, args.repeats
    )
    mem = {case: memory_mb(case, args) for case in CASES}
    base = med[CASES[1]]
    lines = [
        f"Model: ComfyUI UNetModel, model_channels={args.width}, channel_mult [1,2], eps, random weights; a rank-4 LoRA "
        f"on every attention projection; latent 4x{args.latent}x{args.latent}, batch 1, KSampler euler, {args.steps} "
        f"steps, cfg 1, model term weight 1; {args.repeats} interleaved repeats, medians. Peak RSS: each case alone "
        f"in a fresh process: its peak, the RSS it added after ComfyUI's start-up (models built, one run), and the "
        f"weights of its distinct networks. Device: {bench.device_line()}; torch {torch.__version__}.",
        "",
        "| run | model calls / step | rows / step | median s / run | ratio to the separate network | peak RSS MB "
        "| RSS added MB | network weights MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        calls, rows = shape[case]
        m = mem[case]
        lines.append(
            f"| {case} | {calls:g} | {rows:g} | {med[case]:.4f} | {med[case] / base:.3f} | {m['peak']:.0f} "
            f"| {m['added']:.0f} | {m['weights']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        bench.write_section(
            f"model-term-w{args.width}-l{args.latent}",
            f"Model term as a LoRA clone vs a separate network, UNet width {args.width}, latent "
            f"{args.latent}x{args.latent} (bench/bench_model_term.py)",
            table,
        )


if __name__ == "__main__":
    main()
