"""Benchmark helpers: side-by-side timing and the marked sections of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import time

from . import ROOT


def timed(fn, *args, **kwargs) -> float:
    """Seconds one call of fn takes, the GPU (if any) synchronized before the clock stops."""
    import torch

    t0 = time.perf_counter()
    fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def device_line() -> str:
    """The device the numbers were measured on, for the tables' captions."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    n = torch.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {n} thread{'s' if n != 1 else ''})"


def write_section(key: str, title: str, body: str):
    """Replace (or append) one marked section of docs/BENCHMARKS.md, writing atomically."""
    path = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nNumbers written by the scripts in bench/.\n"
    block = f"{start}\n## {title}\n\n{body}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    from guidance_core.files import atomic_bytes

    atomic_bytes(path, text.encode())


def tiny_unet_parser(description: str, repeats: int):
    """The command line of the tiny-UNet sampling benchmarks (bench_cfg, bench_terms)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--width", type=int, default=64, help="UNet model_channels")
    ap.add_argument("--latent", type=int, default=32, help="latent height/width")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-write", action="store_true", help="print the table, leave docs/BENCHMARKS.md alone")
    return ap


def interleaved_medians(cases: dict, repeats: int) -> dict:
    """Median seconds of each case (name -> zero-argument callable), measured side by side: one warm-up run of
    each, then `repeats` rounds that run every case once, so machine noise hits all of them alike."""
    import statistics

    from tqdm import tqdm

    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in tqdm(range(repeats), desc="bench repeats"):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    return {name: statistics.median(v) for name, v in times.items()}


def ksampler_run(model, cfg, steps, latent, pos, neg):
    """One stock KSampler run (euler, normal, seed 1, full denoise)."""
    from . import comfy_host as H

    H.run_node(
        "KSampler",
        model=model,
        seed=1,
        steps=steps,
        cfg=cfg,
        sampler_name="euler",
        scheduler="normal",
        positive=pos,
        negative=neg,
        latent_image=latent,
        denoise=1.0,
    )


def ksampler_cases(cases: dict, steps: int, repeats: int, latent, pos, neg) -> dict:
    """{name: (model calls per step, rows per step, median s per run)} of KSampler runs, cases {name: (MODEL, cfg)}:
    one counted run of each (the rows of every forward, and the warm-up), then interleaved_medians."""
    from . import comfy_host as H

    shape = {}
    for name, (model, cfg) in cases.items():
        counter = H.RowCounter(model)
        try:
            ksampler_run(model, cfg, steps, latent, pos, neg)
        finally:
            counter.close()
        calls = [r for r, _ in counter.calls]
        shape[name] = (len(calls) / steps, sum(calls) / steps)
    runs = {
        name: (lambda m=m, cfg=cfg: ksampler_run(m, cfg, steps, latent, pos, neg)) for name, (m, cfg) in cases.items()
    }
    med = interleaved_medians(runs, repeats)
    return {name: (*shape[name], med[name]) for name in cases}
