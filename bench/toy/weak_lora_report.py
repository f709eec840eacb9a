"""Autoguidance on the toy world with the weak model as a LoRA of the shipped model, against
the separate weak model, at N = 1000 per point (bench/toy/tradeoff.py, points auto_lora_* vs auto_*).

Reads the LoRA points from the tradeoff run's results (default out/toy/tradeoff/results.json, their samples next to
it) and the separate-weak points from docs/toy_tradeoff.json (or from the run's results where it re-ran them, which
then are listed as such). The noise level of each metric at N = 1000:
  accuracy, precision  binomial standard error sqrt(p (1 - p) / N) (each is a fraction of the N samples);
  FD                   bootstrap standard deviation of FD over the LoRA point's own samples (B resamples, stratified
                       by class, the reference features fixed);
  recall               sqrt(r (1 - r) / N), a fraction of the N reference images (it ignores that the samples'
                       manifold radii vary too, so it is a lower bound).
A pair is "within noise" when |separate - LoRA| <= 2 sqrt(2) sigma: two standard errors of the difference of two
independent estimates of that size (the pairs share their seeds, so this is a loose test, not a tight one).

Writes docs/toy_weak_lora.json and the "toy-weak-lora" section of docs/BENCHMARKS.md.

    .venv/bin/python -m bench.toy.weak_lora_report
"""

from __future__ import annotations

import argparse
import json
import os

from bench.toy.fd_noise import fd_bootstrap_std

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

RESULTS = os.path.join(ROOT, "out", "toy", "tradeoff", "results.json")
STORED = os.path.join(ROOT, "docs", "toy_tradeoff.json")
OUT_JSON = os.path.join(ROOT, "docs", "toy_weak_lora.json")
SECTION = "toy-weak-lora"
METRICS = ("accuracy", "fd", "precision", "recall")
WEIGHTS = (0.5, 1, 2)


def lora_info(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        n_tensors = len(list(f.keys()))
    plan = json.loads(meta.get("plan", "{}"))
    kinds = {}
    for v in plan.values():
        kinds[str(v)] = kinds.get(str(v), 0) + 1
    return {
        "file": os.path.relpath(path, ROOT),
        "bytes": os.path.getsize(path),
        "tensors": n_tensors,
        "method": meta.get("method"),
        "command": meta.get("command"),
        "matrices": kinds,
        "fidelity": json.loads(meta.get("fidelity", "{}")),
    }


def paired(x_lora, x_sep, labels) -> dict:
    """The two points' samples share their seeds: per-sample agreement of the evaluation classifier's label and
    the mean absolute pixel difference (pixels in [-1, 1])."""
    import torch

    from bench.toy import eval_classifier as E

    ev = E.load()
    with torch.no_grad():
        a, b = E.predict(ev, x_lora)[0].argmax(1), E.predict(ev, x_sep)[0].argmax(1)
    return {
        "same_label": float((a == b).float().mean()),
        "only_lora_correct": int(((a == labels) & (b != labels)).sum()),
        "only_separate_correct": int(((a != labels) & (b == labels)).sum()),
        "mean_abs_pixel_difference": float((x_lora - x_sep).abs().mean()),
        "mean_abs_pixel": float(x_sep.abs().mean()),
    }


def compare(run: dict, stored: dict, samples_dir: str, b: int) -> dict:
    import torch
    from safetensors.torch import load_file

    from bench.toy import fashion
    from bench.toy.tradeoff import TOY_WEAK_LORA

    n = run["_config"]["n"]
    counts = fashion.class_counts(n)
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    pairs = []
    for w in WEIGHTS:
        lo, sep_name = f"auto_lora_{w:g}", f"auto_{w:g}"
        if lo not in run:
            continue
        sep, source = (run[sep_name], "re-run") if sep_name in run else (stored.get(sep_name), "docs/toy_tradeoff.json")
        if sep is None or sep.get("n") != n:
            continue
        x = load_file(os.path.join(samples_dir, f"{lo}.safetensors"))["x"].float()
        sigma = {
            "accuracy": (run[lo]["accuracy"] * (1 - run[lo]["accuracy"]) / n) ** 0.5,
            "precision": (run[lo]["precision"] * (1 - run[lo]["precision"]) / n) ** 0.5,
            "recall": (run[lo]["recall"] * (1 - run[lo]["recall"]) / n) ** 0.5,
            "fd": fd_bootstrap_std(x, labels, b),
        }
        delta = {m: run[lo][m] - sep[m] for m in METRICS}
        within = {m: abs(delta[m]) <= 2 * 2**0.5 * sigma[m] for m in METRICS}
        pair = {
            "weight": w,
            "separate_point": sep_name,
            "separate_source": source,
            "lora_point": lo,
            "separate": {m: sep[m] for m in METRICS},
            "lora": {m: run[lo][m] for m in METRICS},
            "delta": delta,
            "sigma": sigma,
            "within_noise": within,
            "seconds": {"separate": sep.get("seconds"), "lora": run[lo].get("seconds")},
            "rows_per_step": {"separate": sep.get("rows_per_step"), "lora": run[lo].get("rows_per_step")},
        }
        if source == "re-run" and sep_name in stored:
            pair["stored_separate"] = {m: stored[sep_name][m] for m in METRICS}
        spath = os.path.join(samples_dir, f"{sep_name}.safetensors")
        if source == "re-run" and os.path.exists(spath):
            pair["paired"] = paired(x, load_file(spath)["x"].float(), labels)
        pairs.append(pair)
    return {
        "n": n,
        "bootstrap_resamples": b,
        "criterion": "|delta| <= 2*sqrt(2)*sigma",
        "pairs": pairs,
        "lora": lora_info(TOY_WEAK_LORA),
    }


def fmt(m: str, v: float) -> str:
    return f"{v:.2f}" if m == "fd" else f"{v:.3f}"


def table(res: dict) -> str:
    rows = [
        (
            "| Karras w (term weight) | metric | separate weak model (stored, docs/toy_tradeoff.json) | separate weak "
            "model (compared) | weak model as LoRA | LoRA - separate | noise sigma | within 2 sqrt(2) sigma |"
        ),
        "|" + "---|" * 8,
    ]
    for p in res["pairs"]:
        for m in METRICS:
            st = p.get("stored_separate", p["separate"] if p["separate_source"] != "re-run" else {}).get(m)
            rows.append(
                f"| {1 + p['weight']:g} ({p['weight']:g}) | {m} | {fmt(m, st) if st is not None else '-'} | "
                f"{fmt(m, p['separate'][m])} ({'re-run' if p['separate_source'] == 're-run' else 'stored'}) | "
                f"{fmt(m, p['lora'][m])} | {p['delta'][m]:+.3f} | {p['sigma'][m]:.3f} | "
                f"{'yes' if p['within_noise'][m] else '**no**'} |"
            )
    return "\n".join(rows)


def paired_table(res: dict) -> str:
    pts = [p for p in res["pairs"] if "paired" in p]
    if not pts:
        return ""
    rows = [
        (
            "| Karras w | same eval label | only LoRA correct | only separate correct | mean abs pixel difference "
            "(mean abs pixel) |"
        ),
        "|---|---|---|---|---|",
    ]
    for p in pts:
        q = p["paired"]
        rows.append(
            f"| {1 + p['weight']:g} | {q['same_label']:.3f} | {q['only_lora_correct']} | "
            f"{q['only_separate_correct']} | {q['mean_abs_pixel_difference']:.4f} ({q['mean_abs_pixel']:.3f}) |"
        )
    return (
        "Paired samples (same seeds; the separate-weak points re-run with the same code on the same machine):\n\n"
        + "\n".join(rows)
        + "\n\n"
    )


def fidelity_table(fid: dict) -> str:
    rows = ["| sigma | LoRA eps error / (eps_weak - eps_strong) | LoRA eps error / eps_weak |", "|---|---|---|"]
    for r in fid.get("eps", []):
        rows.append(f"| {r['sigma']:g} | {r['rel_to_difference']:.3f} | {r['rel_to_weak']:.4f} |")
    return "\n".join(rows)


def _seconds(res: dict) -> str:
    lo = [p["seconds"]["lora"] for p in res["pairs"] if p["seconds"]["lora"]]
    sep = [p["seconds"]["separate"] for p in res["pairs"] if p["seconds"]["separate"]]
    rows = {k: sorted({p["rows_per_step"][k] for p in res["pairs"]} - {None}) for k in ("lora", "separate")}
    rows_text = ", ".join(f"{k}: {'/'.join(f'{r:g}' for r in v)}" for k, v in rows.items())
    return (
        (
            f"{min(lo):.0f}-{max(lo):.0f} s per LoRA point, {min(sep):.0f}-{max(sep):.0f} s per separate-weak point; "
            f"model rows per sample and step {rows_text}"
        )
        if lo and sep
        else "timings in the JSON file"
    )


def reading(res: dict) -> str:
    """The measured caveats, in words: the LoRA's residual eps error, the paired samples, the re-run's agreement
    with the stored separate-weak numbers."""
    eps = [r["rel_to_difference"] for r in res["lora"]["fidelity"].get("eps", [])]
    out = []
    if eps:
        out.append(
            f"The LoRA is not the weak model exactly: its eps differs from the weak model's by {min(eps):.0%}-"
            f"{max(eps):.0%} of eps_weak - eps_strong (the direction autoguidance follows), largest at high "
            f"sigma."
        )
    paired = [p["paired"] for p in res["pairs"] if "paired" in p]
    if paired:
        out.append(
            f"Sample by sample (same seeds), {min(q['same_label'] for q in paired):.1%}-"
            f"{max(q['same_label'] for q in paired):.1%} of the LoRA's samples get the same evaluation label as "
            f"the separate weak model's, and their pixels differ by {min(q['mean_abs_pixel_difference'] for q in paired):.3f}-"
            f"{max(q['mean_abs_pixel_difference'] for q in paired):.3f} on average (mean |pixel| "
            f"{paired[0]['mean_abs_pixel']:.2f})."
        )
    if res["pairs"]:
        p, m = max(
            ((p, m) for p in res["pairs"] for m in METRICS),
            key=lambda pm: abs(pm[0]["delta"][pm[1]]) / pm[0]["sigma"][pm[1]],
        )
        out.append(
            f"The pairs share their seeds, so their differences are mostly the LoRA's residual error, not "
            f"sampling noise: the largest against its sigma is {m} at Karras w = {1 + p['weight']:g} "
            f"({p['delta'][m]:+.3f}, {abs(p['delta'][m]) / p['sigma'][m]:.1f} sigma), "
            + ("within" if p["within_noise"][m] else "beyond")
            + f" what two independent N = {res['n']} runs of one model could differ by."
        )
    rerun = [p for p in res["pairs"] if "stored_separate" in p]
    if rerun:
        dev = {m: max(abs(p["separate"][m] - p["stored_separate"][m]) for p in rerun) for m in METRICS}
        out.append(
            "The separate-weak points, re-run with this code on this machine, differ from the stored numbers by "
            "at most " + ", ".join(f"{dev[m]:.3f} ({m})" for m in METRICS) + "."
        )
    return " ".join(out)


def body(res: dict, svd: dict | None) -> str:
    lo = res["lora"]
    w = lo["fidelity"].get("weights", {})
    within = [all(p["within_noise"].values()) for p in res["pairs"]]
    verdict = (
        "all four metrics of every pair are within noise"
        if within and all(within)
        else "not every pair is within noise (rows marked **no**)"
    )
    svd_line = ""
    if svd:
        eps = svd.get("eps", [])
        svd_line = (
            f"For comparison, the fp16 truncated-SVD LoRA of the same budget (`--method svd`) leaves "
            f"{svd['weights']['rel_to_difference']:.2f} of the weight difference and its eps error is "
            f"{min(r['rel_to_difference'] for r in eps):.1f}-{max(r['rel_to_difference'] for r in eps):.1f} "
            f"times the difference eps_weak - eps_strong (the two models were trained from different random "
            f"inits, so their difference is full rank in every layer): not the weak model."
        )
    return (
        f"Issue 22, must-show 4. `bench/toy/tradeoff.py --only autoguidance_lora` samples autoguidance (no CFG) with the "
        f"model term = the shipped toy model + `{lo['file']}` through ComfyUI's LoRA loader "
        f"(`comfy.sd.load_lora_for_models`, what LoraLoaderModelOnly runs; the term is a clone sharing the sampled "
        f"model's network, the case `nodes/shared_network.py` handles), N = {res['n']} per point, the same seeds as "
        f"the separate-weak points `auto_*`.\n\n"
        f"The LoRA: {lo['bytes']:,} bytes, {lo['tensors']} tensors, made by `{lo['command']}` "
        f"(method `{lo['method']}`: every difference W_weak - W_strong stored whole, fp16 where the 2 MB budget allows "
        f"and scaled float8_e4m3fn LoKr patches for the rest; weight matrices / conv kernels: "
        f"{', '.join(f'{v} {k}' for k, v in sorted(lo['matrices'].items()))}). Fidelity, "
        f"weight error (as ComfyUI's patch arithmetic applies the file: tests/test_toy_weak_lora.py) {w.get('rel_to_difference', float('nan')):.4f} of "
        f"|W_weak - W_strong| ({w.get('rel_to_weak', float('nan')):.4f} of |W_weak|); the denoiser's eps error, the "
        f"LoRA clone's weights put on the network by ComfyUI's model patcher, on noised test images (class and empty "
        f"prompts):\n\n{fidelity_table(lo['fidelity'])}\n\n"
        f"{svd_line}\n\n"
        f"Noise at N = {res['n']}: sigma = binomial standard error for accuracy, precision and recall (recall: a "
        f"lower bound), bootstrap std of FD over the LoRA point's samples ({res['bootstrap_resamples']} class-stratified "
        f"resamples); a pair is within noise when |LoRA - separate| <= 2 sqrt(2) sigma. The separate-weak numbers "
        f"compared: {', '.join(sorted({p['separate_source'] for p in res['pairs']}))} (re-run = sampled again with "
        f"this code, next to the stored ones). Raw numbers: `docs/toy_weak_lora.json`."
        f"\n\n{table(res)}\n\n{paired_table(res)}Commands (OMP_NUM_THREADS=1, one process on the shared 2-core "
        f"CPU, {_seconds(res)}): `.venv/bin/python -m bench.toy.make_weak_lora`; "
        f"`.venv/bin/python -m bench.toy.tradeoff --only autoguidance_lora --threads 1`; "
        f"`.venv/bin/python -m bench.toy.tradeoff --only auto_1,auto_2,auto_0.5 --threads 1` (the re-run); "
        f"`.venv/bin/python -m bench.toy.make_weak_lora --method svd --out out/toy/weak_lora_svd.safetensors`; "
        f"`.venv/bin/python -m bench.toy.weak_lora_report --svd-lora out/toy/weak_lora_svd.safetensors`.\n\n"
        f"Reading: {verdict}. {reading(res)}\n"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument(
        "--svd-lora",
        default="",
        help="a LoRA file made with make_weak_lora --method svd (for its fidelity, next to the shipped file's)",
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    from devkit.bench import write_section
    from guidance_core.files import atomic_bytes

    with open(args.results) as f:
        run = json.load(f)
    with open(STORED) as f:
        stored = json.load(f)
    res = compare(run, stored, os.path.join(os.path.dirname(args.results), "samples"), args.bootstrap)
    svd = None
    if args.svd_lora:
        info = lora_info(args.svd_lora)
        svd = info["fidelity"]
        res["svd_lora"] = {k: info[k] for k in ("bytes", "method", "command", "matrices", "fidelity")}
    text = body(res, svd)
    print(text)
    if not args.no_write:
        atomic_bytes(OUT_JSON, json.dumps(res, indent=1).encode())
        write_section(SECTION, "Autoguidance with the weak model as a LoRA (toy world)", text)
    return res


if __name__ == "__main__":
    main()
