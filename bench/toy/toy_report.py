"""Plots (PIL), sample grids and the BENCHMARKS table of the toy tradeoff benchmark."""

from __future__ import annotations

import os
import shutil

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COLORS = [(30, 90, 200), (220, 90, 30), (40, 150, 60), (150, 60, 170)]


def panel(d: ImageDraw.ImageDraw, box, title, xlabel, series, y_range=None):
    """One line chart in box (x0, y0, x1, y1); series = [(name, [(x, y), ...]), ...]."""
    x0, y0, x1, y1 = box
    left, right, top, bottom = x0 + 55, x1 - 10, y0 + 40, y1 - 40
    d.rectangle([left, top, right, bottom], outline="black")
    d.text((left, y0 + 8), title, fill="black")
    d.text(((left + right) // 2 - 3 * len(xlabel), bottom + 22), xlabel, fill="black")
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    if not xs:
        return
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = y_range or (min(ys), max(ys))
    if yhi - ylo < 1e-9:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    pad = 0.05 * (yhi - ylo)
    ylo, yhi = (ylo, yhi) if y_range else (ylo - pad, yhi + pad)
    fx = lambda x: left + (x - xlo) / max(1e-9, xhi - xlo) * (right - left)  # noqa: E731
    fy = lambda y: bottom - (y - ylo) / (yhi - ylo) * (bottom - top)  # noqa: E731
    for i in range(5):
        yv = ylo + i * (yhi - ylo) / 4
        d.line([left - 4, fy(yv), left, fy(yv)], fill="black")
        d.text((x0 + 4, fy(yv) - 6), f"{yv:.3g}", fill="black")
    last = -1e9
    for xv in sorted(set(xs)):
        d.line([fx(xv), bottom, fx(xv), bottom + 4], fill="black")
        if fx(xv) - last >= 34:  # labels closer than that would overlap: the tick stays, the label goes
            d.text((fx(xv) - 6, bottom + 6), f"{xv:.3g}", fill="black")
            last = fx(xv)
    for k, (name, pts) in enumerate(series):
        c = COLORS[k % len(COLORS)]
        pts = sorted(pts)
        if len(pts) > 1:
            d.line([(fx(x), fy(y)) for x, y in pts], fill=c, width=3)
        for x, y in pts:
            d.ellipse([fx(x) - 4, fy(y) - 4, fx(x) + 4, fy(y) + 4], fill=c)
        d.text((right - 150, top + 8 + 14 * k), name, fill=c)


def group(results, g):
    return [v for v in results.values() if isinstance(v, dict) and v.get("group") == g]


def tradeoff_plot(results) -> Image.Image:
    cfg, unc, con = group(results, "cfg"), group(results, "cls_uncond"), group(results, "cls_cond")
    w0 = [v for v in cfg if v["w"] == 0]  # the conditional model unguided = classifier scale 0 on it
    im = Image.new("RGB", (1260, 700), "white")
    d = ImageDraw.Draw(im)
    W, Hh = 420, 350
    xy = lambda vs, xk, yk: [(v[xk], v[yk]) for v in vs]  # noqa: E731
    panel(
        d,
        (0, 0, W, Hh),
        "CFG: intended-class accuracy",
        "w (Ho & Salimans; cfg = 1 + w)",
        [("accuracy", xy(cfg, "w", "accuracy"))],
        (0, 1),
    )
    panel(d, (W, 0, 2 * W, Hh), "CFG: Frechet distance to test set (lower = better)", "w", [("FD", xy(cfg, "w", "fd"))])
    panel(
        d,
        (2 * W, 0, 3 * W, Hh),
        "CFG: precision / recall (k = 3)",
        "w",
        [("precision", xy(cfg, "w", "precision")), ("recall", xy(cfg, "w", "recall"))],
        (0, 1),
    )
    con_pts = [(0.0, v["accuracy"]) for v in w0] + xy(con, "scale", "accuracy")
    panel(
        d,
        (0, Hh, W, 2 * Hh),
        "Classifier guidance: accuracy",
        "classifier scale",
        [("unconditional model", xy(unc, "scale", "accuracy")), ("conditional model", con_pts)],
        (0, 1),
    )
    panel(
        d,
        (W, Hh, 2 * W, 2 * Hh),
        "Classifier guidance: Frechet distance",
        "classifier scale",
        [
            ("unconditional model", xy(unc, "scale", "fd")),
            ("conditional model", [(0.0, v["fd"]) for v in w0] + xy(con, "scale", "fd")),
        ],
    )
    panel(
        d,
        (2 * W, Hh, 3 * W, 2 * Hh),
        "Classifier guidance (uncond. model): precision / recall",
        "classifier scale",
        [("precision", xy(unc, "scale", "precision")), ("recall", xy(unc, "scale", "recall"))],
        (0, 1),
    )
    return im


def terms_plot(results) -> Image.Image:
    """The guidance terms (autoguidance, PAG, adaptive CFG) next to CFG and classifier guidance: accuracy and recall against FD (each method's sweep
    is a curve; lower FD = better), and the model rows per sample and step of adaptive CFG."""
    fd_of = lambda vs, yk: [(v["fd"], v[yk]) for v in vs]  # noqa: E731
    cfg, cls = group(results, "cfg"), group(results, "cls_uncond")
    auto = group(results, "autoguidance")
    pag = [v for v in group(results, "pag") if v["w"] == 0]
    methods = [("CFG (w sweep)", cfg), ("classifier (uncond. model)", cls), ("autoguidance", auto), ("PAG", pag)]
    im = Image.new("RGB", (1260, 350), "white")
    d = ImageDraw.Draw(im)
    W, Hh = 420, 350
    panel(
        d,
        (0, 0, W, Hh),
        "accuracy vs Frechet distance",
        "FD (lower = better)",
        [(name, fd_of(vs, "accuracy")) for name, vs in methods if vs],
        (0, 1),
    )
    panel(
        d,
        (W, 0, 2 * W, Hh),
        "recall vs Frechet distance",
        "FD (lower = better)",
        [(name, fd_of(vs, "recall")) for name, vs in methods if vs],
        (0, 1),
    )
    adaptive = group(results, "adaptive")
    ref = [v for v in cfg if v["w"] == 2]
    pts = [(2.0, v["accuracy"], v["fd"]) for v in ref] + [
        (v.get("rows_per_step") or 0, v["accuracy"], v["fd"]) for v in adaptive
    ]
    panel(
        d,
        (2 * W, 0, 3 * W, Hh),
        "CFG w=2, adaptive: accuracy, FD / 20",
        "model rows / sample / step (2 = every step)",
        [("accuracy", [(r, a) for r, a, _ in pts]), ("FD / 20", [(r, f / 20) for r, _, f in pts])],
        (0, 1),
    )
    return im


def sample_grid(out_dir, names, labels, n, per_class=5, zoom=2) -> Image.Image:
    """Panels side by side: one per point, rows = classes, columns = the first samples of each class."""
    import torch
    from safetensors.torch import load_file

    cell = 32 * zoom
    pw, ph = per_class * cell + 10, len(labels) * cell + 24
    im = Image.new("RGB", (90 + pw * len(names), ph + 4), "white")
    d = ImageDraw.Draw(im)
    for r, lb in enumerate(labels):
        d.text((4, 24 + r * cell + cell // 2 - 6), lb, fill="black")
    from bench.toy.fashion import class_counts

    counts = class_counts(n)
    starts = [sum(counts[:c]) for c in range(len(labels))]
    for j, name in enumerate(names):
        x = load_file(os.path.join(out_dir, "samples", f"{name}.safetensors"))["x"].float()
        ox = 90 + j * pw
        d.text((ox, 4), name, fill="black")
        for r in range(len(labels)):
            for c in range(min(per_class, counts[r])):
                img = ((x[starts[r] + c, 0] + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
                tile = Image.fromarray(img, "L").resize((cell, cell), Image.NEAREST)
                im.paste(tile.convert("RGB"), (ox + c * cell, 24 + r * cell))
    return im


def _terms_text(v) -> str:
    parts = [
        f"autoguidance {v['auto']:g}" + (" (weak model as a LoRA)" if v.get("auto_lora") else "")
        for _ in [0]
        if v.get("auto")
    ]
    parts += [f"PAG {v['pag']:g}" for _ in [0] if v.get("pag")]
    parts += [f"TPG {v['tpg']:g}" for _ in [0] if v.get("tpg")]
    parts += [f"post: {v['post'].replace(';', ', ')}" for _ in [0] if v.get("post")]
    parts += [f"adaptive cos >= {v['adaptive']:g}" for _ in [0] if v.get("adaptive") is not None]
    return ", ".join(parts) or "-"


def table(results) -> str:
    rows = [
        "| group | point | w | classifier scale | terms | prompt | schedule (mean f) | sampler | steps | accuracy | "
        "FD | precision | recall | model rows / step | seconds |",
        "|" + "---|" * 15,
    ]
    order = [
        "cfg",
        "cls_uncond",
        "cls_cond",
        "schedule",
        "sampler",
        "autoguidance",
        "autoguidance_lora",
        "pag",
        "adaptive",
        "reshapers",
        "tpg",
        "distilled",
        "distilled_schedule",
    ]
    pts = sorted(
        (v for v in results.values() if isinstance(v, dict) and "group" in v),
        key=lambda v: (
            order.index(v["group"]),
            v["w"],
            v["scale"],
            v.get("auto", 0),
            v.get("pag", 0),
            v.get("adaptive") or 0,
            v["steps"],
            v["sampler"],
        ),
    )
    for v in pts:
        rows_step = f"{v['rows_per_step']:.2f}" if v.get("rows_per_step") is not None else "-"
        rows.append(
            f"| {v['group']} | {v['name']} | {v['w']:g} | {v['scale']:g} | {_terms_text(v)} | "
            f"{'class' if v['conditional'] else 'empty'} | {v['schedule']} ({v['mean_multiplier']:.2f}) | "
            f"{v['sampler']} | {v['steps']} | {v['accuracy']:.3f} | {v['fd']:.2f} | {v['precision']:.3f} | "
            f"{v['recall']:.3f} | {rows_step} | {v['seconds']:.0f} |"
        )
    return "\n".join(rows)


def write_all(results, directions, out_dir):
    from devkit.bench import write_section
    from devkit import comfy_host as H

    img_dir = os.path.join(ROOT, "docs", "images")
    tradeoff_plot(results).save(os.path.join(img_dir, "toy_tradeoff.png"))
    terms_plot(results).save(os.path.join(img_dir, "toy_terms.png"))
    labels = H.pack_module("nodes.toy_nodes").FASHION_LABELS
    n = results["_config"]["n"]
    for image, names in (
        ("toy_samples.png", ("cfg_w0", "cfg_w2", "cfg_w6", "cls_uncond_s0", "cls_uncond_s3", "cls_uncond_s10")),
        ("toy_terms_samples.png", ("auto_0.5", "auto_1", "auto_2", "pag_3", "cfg_w2_pag_1", "adaptive_w2_t0.9999")),
    ):
        names = [k for k in names if k in results]
        # a grid is redrawn only from samples on disk (a point kept from an earlier run's results has none here)
        if names and all(os.path.exists(os.path.join(out_dir, "samples", f"{k}.safetensors")) for k in names):
            sample_grid(out_dir, names, labels, n).save(os.path.join(img_dir, image))
    shutil.copyfile(os.path.join(out_dir, "results.json"), os.path.join(ROOT, "docs", "toy_tradeoff.json"))
    c = results["_config"]
    body = (
        f"`bench/toy/tradeoff.py` (full mode): N = {c['n']} samples per point ({c['n'] // 10} per class, the same "
        f"seeds at every point), sampled by ComfyUI's SamplerCustomAdvanced with this pack's toy nodes, CFG Guider, "
        f"schedules and Classifier Guidance patch; scheduler `normal`. Metrics by the independent evaluation "
        f"classifier (clean images only, test accuracy {c['eval_test_accuracy']:.3f}): intended-class accuracy, "
        f"Frechet distance of its 128-d features to the 10k test images, precision / recall (k = 3) against "
        f"{c['n']} test images. `seconds` = wall time to sample the point on the CPU with "
        f"{', '.join(sorted({str(v.get('torch_threads')) for v in results.values() if 'group' in v}))} torch "
        f"thread(s) per process, while other jobs shared the 2 cores: indicative only (timed comparisons are in "
        f"the sections above, measured side by side). Raw numbers: `docs/toy_tradeoff.json`; plots: "
        f"`docs/images/toy_tradeoff.png`, `docs/images/toy_terms.png`; samples: `docs/images/toy_samples.png`, "
        f"`docs/images/toy_terms_samples.png`.\n\n{table(results)}\n\n"
        "Directions (the papers' claims, checked on these numbers):\n\n"
        + "\n".join(f"- {k}: {'yes' if v else '**no**'}" for k, v in directions.items())
        + '\n\nWhat the numbers say, and why a **no** is not a bug: the section "The guidance tradeoff, '
        'measured" above.\n'
    )
    write_section("toy-tradeoff", "Guidance tradeoff on the toy world (Fashion-MNIST)", body)


def distilled_pairs(data) -> list:
    """(student, teacher) results of the distilled comparison, by scale: the student at g next to the teacher's
    CFG at cfg = g (the point cfg_w{g - 1}; None where it was not run)."""
    by = {v["name"]: v for v in data.values() if isinstance(v, dict) and "name" in v}
    return [
        (v, by.get(f"cfg_w{v['guidance'] - 1:g}"))
        for v in sorted(group(data, "distilled"), key=lambda v: v["guidance"])
    ]


def within_tolerance(student, teacher, tolerance) -> bool:
    return all(abs(student[k] - teacher[k]) <= tol for k, tol in tolerance.items())


def distilled_body(data) -> str:
    """The "toy-distilled" section of docs/BENCHMARKS.md from docs/toy_distilled.json."""
    c, tol = data["_config"], data["tolerance"]
    rows_txt = lambda v: "-" if v.get("rows_per_step") is None else f"{v['rows_per_step']:.2f}"  # noqa: E731
    rows = [
        (
            "| g = cfg | accuracy student / teacher (diff) | FD student / teacher (diff) | precision student / teacher "
            "| recall student / teacher | model rows / step student / teacher | within tolerance |"
        ),
        "|" + "---|" * 7,
    ]
    verdicts = []
    for s, t in distilled_pairs(data):
        if t is None:
            rows.append(
                f"| {s['guidance']:g} | {s['accuracy']:.3f} / - | {s['fd']:.2f} / - | {s['precision']:.3f} / - "
                f"| {s['recall']:.3f} / - | {rows_txt(s)} / - | (no teacher point) |"
            )
            continue
        ok = within_tolerance(s, t, tol)
        verdicts.append(ok)
        rows.append(
            f"| {s['guidance']:g} | {s['accuracy']:.3f} / {t['accuracy']:.3f} ({s['accuracy'] - t['accuracy']:+.3f}) "
            f"| {s['fd']:.2f} / {t['fd']:.2f} ({s['fd'] - t['fd']:+.2f}) | {s['precision']:.3f} / "
            f"{t['precision']:.3f} | {s['recall']:.3f} / {t['recall']:.3f} | {rows_txt(s)} / {rows_txt(t)} | "
            f"{'yes' if ok else '**no**'} |"
        )
    summary = f"{sum(verdicts)} of {len(verdicts)} scales within tolerance" if verdicts else "no pair measured"
    out = [(s, t) for s, t in distilled_pairs(data) if t is not None and not within_tolerance(s, t, tol)]
    better = [f"{s['guidance']:g}" for s, t in out if s["accuracy"] > t["accuracy"] and s["fd"] < t["fd"]]
    if better:
        summary += (
            f"; at g = {', '.join(better)} the student misses it on the better side: higher accuracy and "
            f"lower FD than its teacher's CFG"
        )
    return (
        f"`bench/toy/tradeoff.py --distilled`: the guidance-distilled student "
        f"(`toy_models/diffusion/fashion_diffusion_distilled.safetensors`, Meng et al. 2023 stage 1; made as "
        f"toy_models/README.md says) at the embedded scale g, one model call per step (ComfyUI's FluxGuidance "
        f"puts g in the conditioning, BasicGuider, euler, 20 steps, scheduler `normal`), next to its teacher "
        f"(`fashion_diffusion.safetensors`) with CFG at cfg = g (the tradeoff section's cfg_w points, w = g - 1, "
        f"the same seeds). N = {c['n']} per point ({c['n'] // 10} per class); metrics by the independent "
        f"evaluation classifier as in the tradeoff section. Tolerance (fixed before the run): accuracy within "
        f"{tol['accuracy']:g}, FD within {tol['fd']:g} of the teacher's. Model rows per step are counted on the "
        f'real forwards ("-": a point kept from a run that did not count them; CFG runs the conditional and '
        f"the unconditional row, 2). Raw numbers: `docs/toy_distilled.json`.\n\n"
        + "\n".join(rows)
        + f"\n\nResult: {summary}.\n"
        + schedule_rows(data)
    )


def schedule_rows(data) -> str:
    """The student with its embedded scale following a schedule (mean multiplier 1) against the constant g."""
    sched = sorted(group(data, "distilled_schedule"), key=lambda v: v["name"])
    const = {v["guidance"]: v for v in group(data, "distilled")}
    if not sched:
        return ""
    lines = [
        "",
        "The embedded scale per step (the pack's **Distilled Guidance Schedule**, g · f(step) with mean f = 1: "
        "linear_down 2 → 0, interval = 2 on the middle half of the steps, 0 outside) against the constant g (made by "
        "`.venv/bin/python -m bench.toy.tradeoff --distilled-schedules --reuse docs/toy_distilled.json`):",
        "",
        "| point | g | schedule | accuracy | FD | precision | recall | rows / step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in [const.get(3.0)] + sched:
        if v is None:
            continue
        rows = "-" if v.get("rows_per_step") is None else f"{v['rows_per_step']:.2f}"
        lines.append(
            f"| {v['name']} | {v['guidance']:g} | {v.get('schedule', 'constant')} | {v['accuracy']:.3f} | "
            f"{v['fd']:.2f} | {v['precision']:.3f} | {v['recall']:.3f} | {rows} |"
        )
    base = const.get(3.0)
    if base is not None:
        diffs = "; ".join(
            f"{v['schedule']}: accuracy {v['accuracy'] - base['accuracy']:+.3f}, FD {v['fd'] - base['fd']:+.2f}, "
            f"recall {v['recall'] - base['recall']:+.3f}"
            for v in sched
        )
        lines += [
            "",
            f"Against the constant g = 3 at the same seeds and one model row per step: {diffs}. The student was "
            "trained on g in [1, 6]: where g · f(step) falls below 1 (f < 1/3, e.g. the interval's 0 outside it) "
            "it runs outside that range, so those steps extrapolate.",
        ]
    return "\n".join(lines) + "\n"


def write_distilled(results, names, tolerance):
    """docs/toy_distilled.json (the student's points and their teacher's, with the tolerance) and its section."""
    import json

    from devkit.bench import write_section
    from guidance_core.files import atomic_bytes

    data = {
        "_config": results["_config"],
        "tolerance": dict(tolerance),
        **{k: results[k] for k in names if k in results},
    }
    atomic_bytes(os.path.join(ROOT, "docs", "toy_distilled.json"), json.dumps(data, indent=1).encode())
    write_section("toy-distilled", "Guidance-distilled toy student vs its teacher's CFG", distilled_body(data))


# the claims each reshaper's paper (or reference) makes, read against the toy points next to CFG at the same w
RESHAPER_CLAIMS = {
    "fdg": "FDG (Sadat et al. 2025): lowering the low-frequency scale keeps the high scale's class fidelity and detail "
    "while restoring diversity (recall) and quality (FD) lost to oversaturation",
    "tcfg": "TCFG (Kwon et al. 2025): damping the unconditional's tangential part improves quality (FD) at the same scale",
    "dyn_mimic": "dynamic thresholding, mimic (sd-dynamic-thresholding): a high scale's adherence with the dynamic range "
    "(and so the quality) of the mimic scale",
    "mambo": "MaMBo-G: damping the scale where the guidance step is large keeps quality at a high scale",
    "tpg": "TPG (2025): token shuffling gives a guidance signal that improves quality without CFG, and adds to CFG",
}


def reshaper_rows(results, names) -> list:
    """(point, its CFG baseline at the same w (w = 0: unguided), the metrics of both) for the reshaper and TPG points."""
    out = []
    for name in names:
        v = results.get(name)
        if not isinstance(v, dict):
            continue
        base = results.get(f"cfg_w{v['w']:g}")
        out.append((v, base))
    return out


def reshapers_body(results, names) -> str:
    lines = [
        "N = 1000 samples per point (100 per class), euler 20 steps, seeds shared with the CFG points; each row "
        "next to CFG at the same w (the cfg sweep's point; w = 0: unguided). Metrics by the independent evaluation "
        "classifier: accuracy (class fidelity), FD (lower = closer to the test set), precision, recall (diversity); "
        "sigma(FD): bootstrap std of the point's FD over its own samples (100 class-stratified resamples).",
        "",
        "| point | settings | w | accuracy (CFG) | FD (CFG) | sigma(FD) | precision (CFG) | recall (CFG) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, base in reshaper_rows(results, names):

        def pair(m):
            return f"{v[m]:.3f} ({base[m]:.3f})" if base else f"{v[m]:.3f}"

        fd = f"{v['fd']:.2f} ({base['fd']:.2f})" if base else f"{v['fd']:.2f}"
        sigma = f"{v['fd_sigma']:.2f}" if v.get("fd_sigma") is not None else "-"
        lines.append(
            f"| {v['name']} | {_terms_text(v)} | {v['w']:g} | {pair('accuracy')} | {fd} | {sigma} | "
            f"{pair('precision')} | {pair('recall')} |"
        )
    lines += [
        "",
        "The papers' claims, and what the toy world shows against CFG at the same w. A difference counts where it "
        "passes 2 sqrt(2) sigma (binomial sigma for accuracy and recall, the bootstrap sigma for FD: the criterion of "
        "the LoRA comparison above); the rule for each claim is in bench/toy/toy_report.py (CLAIM_HOLDS).",
        "",
    ]
    for key, claim in RESHAPER_CLAIMS.items():
        pts = [(v, b) for v, b in reshaper_rows(results, names) if b and claim_of(v["name"]) == key]
        if not pts:
            continue
        said = "; ".join(
            f"{v['name']}: {delta_text(v, b)} ({'as claimed' if CLAIM_HOLDS[key](v, b) else 'not as claimed'})"
            for v, b in pts
        )
        lines.append(f"- {claim}. Measured: {said}.")
    return "\n".join(lines)


def claim_of(name: str) -> str:
    for key in ("fdg", "tcfg", "dyn_mimic", "mambo", "tpg"):
        if name.startswith(key) or f"_{key}" in name:
            return key
    return ""


def _margin(v, metric: str, n: int = 1000) -> float:
    """2 sqrt(2) sigma of a metric's difference: binomial for accuracy and recall, the point's bootstrap for FD."""
    if metric == "fd":
        return 2 * 2**0.5 * (v.get("fd_sigma") or 0.0)
    return 2 * 2**0.5 * (v[metric] * (1 - v[metric]) / n) ** 0.5


def _moved(v, b, metric: str) -> int:
    """+1 / -1 where the metric rose / fell beyond the margin, else 0."""
    d = v[metric] - b[metric]
    return 0 if abs(d) <= _margin(v, metric) else (1 if d > 0 else -1)


def delta_text(v, b) -> str:
    return (
        f"accuracy {v['accuracy'] - b['accuracy']:+.3f} (margin {_margin(v, 'accuracy'):.3f}), FD "
        f"{v['fd'] - b['fd']:+.2f} (margin {_margin(v, 'fd'):.2f}), recall {v['recall'] - b['recall']:+.3f} "
        f"(margin {_margin(v, 'recall'):.3f})"
    )


CLAIM_HOLDS = {  # each claim as a rule on the moves beyond the margins
    "fdg": lambda v, b: _moved(v, b, "accuracy") >= 0 and _moved(v, b, "fd") <= 0 and _moved(v, b, "recall") > 0,
    "tcfg": lambda v, b: _moved(v, b, "fd") < 0,
    "dyn_mimic": lambda v, b: _moved(v, b, "accuracy") >= 0 and _moved(v, b, "fd") < 0,
    "mambo": lambda v, b: _moved(v, b, "accuracy") >= 0 and _moved(v, b, "fd") < 0,
    "tpg": lambda v, b: _moved(v, b, "fd") < 0,
}


def write_reshapers(results, names, samples_dir: str, resamples: int = 100):
    """docs/toy_reshapers.json (the points, with the bootstrap sigma of their FD, and their CFG baselines) and the
    toy-reshapers section."""
    import json

    import torch
    from safetensors.torch import load_file

    from bench.toy import fashion
    from bench.toy.fd_noise import fd_bootstrap_std
    from devkit.bench import write_section
    from guidance_core.files import atomic_bytes

    n = results["_config"]["n"]
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(fashion.class_counts(n))])
    for name in names:
        path = os.path.join(samples_dir, f"{name}.safetensors")
        if isinstance(results.get(name), dict) and os.path.isfile(path):
            results[name]["fd_sigma"] = fd_bootstrap_std(load_file(path)["x"].float(), labels, resamples)
    keep = set(names) | {f"cfg_w{results[n]['w']:g}" for n in names if isinstance(results.get(n), dict)}
    data = {"_config": results["_config"], **{k: results[k] for k in sorted(keep) if k in results}}
    atomic_bytes(os.path.join(ROOT, "docs", "toy_reshapers.json"), json.dumps(data, indent=1).encode())
    write_section(
        "toy-reshapers",
        "The combiner's reshapers and TPG on the toy world, next to CFG",
        reshapers_body(results, names),
    )
