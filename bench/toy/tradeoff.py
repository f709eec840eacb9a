"""The guidance tradeoff on the toy world, sampled through ComfyUI with this pack's nodes.

Every point draws N samples, N/10 per Fashion-MNIST class, with GuidanceLabToyModelLoader /
GuidanceLabToyClass (the class and the empty prompt), GuidanceLabCFGGuider (+ GuidanceLabSchedule),
GuidanceLabClassifierLoader + GuidanceLabClassifierGuidance (the toy world's noise-aware classifier,
trained by this pack's trainer) and ComfyUI's own SamplerCustomAdvanced / KSamplerSelect /
BasicScheduler / RandomNoise. The same seeds are used at every point (paired comparisons).

Sweeps (Ho & Salimans' w: eps = (1 + w) eps_c - w eps_u, i.e. ComfyUI cfg = 1 + w):
  cfg          w = 0, 0.5, 1, 2, 4, 6 on the conditional model (euler, 20 steps)
  cls_uncond   classifier scale 0, 1, 3, 5, 10, 15, 20, 40 on the unconditional model (empty prompt, no CFG)
  cls_cond     classifier scale 3 on the conditional model (class prompt, no CFG; scale 0 = cfg w = 0)
  schedule     mean w = 2: constant, linear 2w -> 0, interval (2w on the middle half of the steps, 0 outside)
  sampler      w = 2 with euler / dpmpp_2m at 20 and 50 steps
  autoguidance model term with the weak toy model (toy_models/diffusion/fashion_diffusion_weak.safetensors),
               weight 0.5, 1, 2 (Karras's w = 1.5, 2, 3), no CFG (Karras et al. 2024)
  autoguidance_lora  the same, the weak model given as a LoRA of the shipped model
               (bench/toy/weights/fashion_weak_lora.safetensors, made by bench/toy/make_weak_lora.py) through
               ComfyUI's LoRA loader: the model term is a clone sharing the sampled model's network
  pag          PAG term (middle block) weight 1, 3 without CFG, and 1 with CFG w = 2 (Ahn et al. 2024)
  reshapers    FDG, TCFG, dynamic thresholding (mimic) and MaMBo-G (Guidance Post-processing) at one or two w each,
               next to the CFG points of the same w
  tpg          TPG term (middle block's tokens shuffled) weight 3 without CFG, and 1 with CFG w = 2
  adaptive     CFG w = 2 whose uncond stops once cos(eps_c, eps_u) >= 0.999 / 0.9995 / 0.9999 for every sample of
               the batch (Castillo et al. 2023; on the toy model the batch minimum of cos is above 0.99 at every step
               and does not rise monotonically, so the paper's 0.99 would stop at once);
               model rows per sample and step are counted on the real forwards
  distilled    (--distilled) the guidance-distilled student (fashion_diffusion_distilled.safetensors) at
               g = 1.5, 3, 5, one model call per step (the scale in the conditioning by ComfyUI's FluxGuidance,
               BasicGuider), next to its teacher's CFG at cfg = g (the cfg_w points; kept where a results file has them)
Metrics, by the independent evaluation classifier (bench/toy/eval_classifier.py, clean images only):
intended-class accuracy, Frechet distance of its 128-d features to the 10k test set, precision and
recall with k = 3 (bench/toy/metrics.py).

    .venv/bin/python -m bench.toy.tradeoff                 # full: N = 1000 per point (~1.5 h on 2 quiet CPU cores)
    .venv/bin/python -m bench.toy.tradeoff --quick         # N = 64, 6 points (CI, ~2 min)
    .venv/bin/python -m bench.toy.tradeoff --distilled --reuse docs/toy_tradeoff.json   # student vs teacher

Writes OUT/results.json (resumable: finished points are kept), OUT/samples/*.safetensors, and in full
mode docs/images/toy_tradeoff.png, docs/images/toy_samples.png, docs/toy_tradeoff.json and the
"toy-tradeoff" section of docs/BENCHMARKS.md; in --distilled mode docs/toy_distilled.json and the
"toy-distilled" section.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

from devkit import comfy_host as H

TOY_MODEL = "fashion_diffusion.safetensors"
TOY_WEAK_MODEL = "fashion_diffusion_weak.safetensors"  # the guiding model of autoguidance
TOY_CLASSIFIER = "toy_fashion_classifier.safetensors"
TOY_STUDENT = "fashion_diffusion_distilled.safetensors"  # the guidance-distilled student
# The student matches its teacher when, at the same scale (student g = teacher cfg) and seeds, its intended-class
# accuracy is within 0.02 and its Frechet distance within 1.0 of the teacher's CFG (fixed before the N = 1000 run).
DISTILLED_TOLERANCE = {"accuracy": 0.02, "fd": 1.0}
TOY_WEAK_LORA = os.path.join(HERE, "weights", "fashion_weak_lora.safetensors")  # the weak model as a LoRA


@dataclass(frozen=True)
class Point:
    name: str
    group: str
    w: float = 0.0  # CFG strength (Ho & Salimans); ComfyUI cfg = 1 + w
    scale: float = 0.0  # classifier guidance scale
    conditional: bool = True  # class prompt (True) or the empty prompt (False) as the positive
    schedule: str = "constant"  # constant | linear_down | interval (all with mean multiplier 1)
    sampler: str = "euler"
    steps: int = 20
    auto: float = 0.0  # autoguidance: model-term weight with the weak toy model (Karras's w = 1 + auto)
    auto_lora: bool = False  # the weak model as the LoRA clone of the shipped model (TOY_WEAK_LORA)
    pag: float = 0.0  # perturbed-attention (PAG, middle block) term weight
    tpg: float = 0.0  # token perturbation (TPG, middle block) term weight
    adaptive: float | None = None  # adaptive CFG: stop the uncond once cos(eps_c, eps_u) >= this threshold
    guidance: float = 0.0  # the distilled student at this embedded CFG scale (FluxGuidance); 0 = the teacher
    post: str = ""  # Guidance Post-processing settings "name=value;..." (reshapers: FDG, TCFG, ...)


def fields(p: Point) -> dict:
    """The point's fields as stored with its samples; auto_lora only where set, so samples stored before the field
    existed still match their point (resumable)."""
    d = asdict(p)
    for optional in ("auto_lora", "post", "tpg"):
        if not d[optional]:
            del d[optional]
    return d


def full_points() -> list[Point]:
    """In order of priority (a run can be stopped and resumed: finished points are kept)."""
    pts = [Point(f"cfg_w{w:g}", "cfg", w=w) for w in (0, 0.5, 1, 2, 4)]
    pts += [Point(f"cls_uncond_s{s:g}", "cls_uncond", scale=s, conditional=False) for s in (0, 3, 10)]
    pts += [Point("cls_cond_s3", "cls_cond", scale=3)]
    pts += [Point(f"sched_{k}_w2", "schedule", w=2, schedule=k) for k in ("linear_down", "interval")]
    pts += [
        Point("dpmpp_2m20_w2", "sampler", w=2, sampler="dpmpp_2m"),
        Point("cls_uncond_s1", "cls_uncond", scale=1, conditional=False),
        Point("dpmpp_2m50_w2", "sampler", w=2, sampler="dpmpp_2m", steps=50),
        Point("euler50_w2", "sampler", w=2, steps=50),
    ]
    pts += [Point(f"cls_uncond_s{s:g}", "cls_uncond", scale=s, conditional=False) for s in (20, 40, 5, 15)]
    pts += [Point("cfg_w6", "cfg", w=6)]
    pts += terms_points()
    pts += lora_points()
    return pts


def lora_points() -> list[Point]:
    """Autoguidance with the weak model as a LoRA of the shipped model, at the weights of auto_*."""
    return [Point(f"auto_lora_{a:g}", "autoguidance_lora", auto=a, auto_lora=True) for a in (1, 2, 0.5)]


def terms_points() -> list[Point]:
    """Autoguidance, PAG and adaptive CFG next to the CFG sweep (all on the conditional model), in order
    of priority (one point of each first)."""
    auto = lambda a: Point(f"auto_{a:g}", "autoguidance", auto=a)  # noqa: E731
    pag = lambda g, w=0.0: Point(f"cfg_w{w:g}_pag_{g:g}" if w else f"pag_{g:g}", "pag", w=w, pag=g)  # noqa: E731
    adaptive = lambda t: Point(f"adaptive_w2_t{t:g}", "adaptive", w=2, adaptive=t)  # noqa: E731
    return [
        auto(1),
        pag(3),
        adaptive(0.9999),
        auto(2),
        adaptive(0.9995),
        adaptive(0.999),
        auto(0.5),
        pag(1),
        pag(1, w=2),
    ]


def reshaper_points() -> list[Point]:
    """The combiner's reshapers next to the CFG points of the same w (--only reshapers --reuse docs/toy_tradeoff.json):
    FDG with the low band at half the scale (Sadat et al.: keep the high scale's detail, lose its low-frequency
    oversaturation), TCFG (Kwon et al.: a better FD at the same scale), dynamic thresholding at w = 6 with the range
    of w = 2 (mimic 3: sd-dynamic-thresholding's claim, high-scale adherence without its artifacts), MaMBo-G at w = 6
    (damps the scale where the guidance step is large)."""
    pt = lambda name, w, post: Point(name, "reshapers", w=w, post=post)  # noqa: E731
    return [
        pt("fdg_low0.5_w4", 4, "fdg=1;fdg_low=0.5;fdg_high=1"),
        pt("tcfg_w2", 2, "tcfg=1"),
        pt("dyn_mimic3_w6", 6, "dyn_thresh=mimic;dyn_mimic_scale=3;dyn_percentile=1"),
        pt("tcfg_w4", 4, "tcfg=1"),
        pt("mambo8_w6", 6, "mambo_alpha=8"),
        pt("fdg_low0.5_w2", 2, "fdg=1;fdg_low=0.5;fdg_high=1"),
        Point("tpg_3", "tpg", tpg=3.0),
        Point("cfg_w2_tpg_1", "tpg", w=2, tpg=1.0),
    ]


def post_settings(text: str) -> dict:
    """ "name=value;..." as Guidance Post-processing inputs (numbers, booleans 0/1 for the switches, or words)."""
    out = {}
    for item in filter(None, text.split(";")):
        name, value = item.split("=")
        if name in ("fdg", "tcfg", "fresca", "apg", "cfg_zero_star", "perp_neg"):
            out[name] = bool(int(value))
        else:
            try:
                out[name] = float(value)
            except ValueError:
                out[name] = value
    return out


def distilled_points() -> list[Point]:
    """The guidance-distilled student at g = 1.5, 3, 5, each next to its teacher's CFG at cfg = g
    (w = g - 1: the cfg sweep's points of the same names)."""
    pts = []
    for g in (1.5, 3.0, 5.0):
        pts += [Point(f"distilled_g{g:g}", "distilled", guidance=g), Point(f"cfg_w{g - 1:g}", "cfg", w=g - 1)]
    return pts


def distilled_schedule_points() -> list[Point]:
    """The student's embedded scale per step (the Distilled Guidance Schedule, mean multiplier 1) against the constant
    g = 3 (--distilled-schedules)."""
    return [
        Point(f"distilled_g3_{k}", "distilled_schedule", guidance=3.0, schedule=k) for k in ("linear_down", "interval")
    ]


def quick_points(steps: int = 20) -> list[Point]:
    pts = [Point(f"cfg_w{w:g}", "cfg", w=w, steps=steps) for w in (0, 2, 8)]
    pts += [Point(f"cls_uncond_s{s:g}", "cls_uncond", scale=s, conditional=False, steps=steps) for s in (0, 10, 30)]
    return pts


class World:
    """The toy world's nodes, loaded once."""

    def __init__(self):
        H.boot()
        import torch

        with torch.inference_mode():
            self.model, self.world = H.run_node("GuidanceLabToyModelLoader", toy_model=TOY_MODEL)
            self.classifier = H.run_node("GuidanceLabClassifierLoader", classifier_name=TOY_CLASSIFIER)[0]
            self.weak = H.run_node("GuidanceLabToyModelLoader", toy_model=TOY_WEAK_MODEL)[0]
        self.labels = self.world.labels
        self.student = None  # (MODEL, TOY WORLD) of the distilled student, loaded by its first point
        self._weak_lora = None
        self.rows = 0  # model rows (batch entries of every forward, all models) sampled so far

    def terms(self, p: Point):
        """GUIDANCE_TERMS of the point: a model term (autoguidance) and/or a PAG term; None without."""
        terms = None
        if p.auto:
            guide = self.weak_lora() if p.auto_lora else self.weak
            terms = H.run_node("GuidanceLabModelTerm", model=guide, weight=p.auto, terms=terms)[0]
        for mode, weight in (("pag", p.pag), ("tpg", p.tpg)):
            if weight:
                terms = H.run_node(
                    "GuidanceLabPerturbedTerm", mode=mode, blocks="middle.0", weight=weight, seg_sigma=10.0, terms=terms
                )[0]
        return terms

    def weak_lora(self):
        """The shipped model + the weak-model LoRA at strength 1, by ComfyUI's LoRA loader (a clone of self.model,
        sharing its network)."""
        if self._weak_lora is None:
            from safetensors.torch import load_file

            from bench.toy.make_weak_lora import lora_clone

            self._weak_lora = lora_clone(self.model, load_file(TOY_WEAK_LORA), 1.0)
        return self._weak_lora

    def schedule(self, p: Point, sigmas):
        """GuidanceLabSchedule with mean multiplier 1 over this run's steps (None = constant 1)."""
        if p.adaptive is not None:
            return H.run_node(
                "GuidanceLabSchedule",
                kind="adaptive",
                axis="progress",
                start=1.0,
                end=0.0,
                exponent=2.0,
                sigma_lo=0.0,
                sigma_hi=0.0,
                inside=1.0,
                outside=0.0,
                keyframes="",
                threshold=p.adaptive,
            )[0]
        if p.schedule == "constant":
            return None
        fields = dict(
            kind="linear",
            axis="progress",
            start=2.0,
            end=0.0,
            exponent=2.0,
            sigma_lo=0.0,
            sigma_hi=0.0,
            inside=1.0,
            outside=0.0,
            keyframes="",
        )
        if p.schedule == "interval":
            s = [float(v) for v in sigmas[:-1]]  # the steps' sigmas, descending
            q = len(s) // 4
            # inside = steps q .. len-q-1 (the middle half): sigma_lo < sigma <= sigma_hi
            fields.update(
                kind="interval",
                axis="sigma",
                sigma_hi=s[q],
                sigma_lo=s[len(s) - q],
                inside=len(s) / (len(s) - 2 * q),
                outside=0.0,
            )
        return H.run_node("GuidanceLabSchedule", **fields)[0]

    def sample(self, p: Point, label: str, n: int, seed: int):
        """(samples [n, 1, 32, 32], mean schedule multiplier)."""
        import comfy.utils
        import torch

        S = H.pack_module("guidance_core.schedules")
        with torch.inference_mode():
            if p.guidance and self.student is None:
                self.student = H.run_node("GuidanceLabToyModelLoader", toy_model=TOY_STUDENT)
            model, world = self.student if p.guidance else (self.model, self.world)
            pos = H.run_node(
                "GuidanceLabToyClass", toy_world=world, label=label if p.conditional else "empty", batch=n
            )[0]
            empty = H.run_node("GuidanceLabToyClass", toy_world=world, label="empty", batch=n)[0]
            if p.scale > 0:
                model = H.run_node(
                    "GuidanceLabClassifierGuidance",
                    model=model,
                    classifier=self.classifier,
                    target=label,
                    scale=p.scale,
                    sigma_lo=0.0,
                    sigma_hi=1.0e4,
                    every_n=1,
                    rms_clamp=0.0,
                    dtype="float32",
                )[0]
            sigmas = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=p.steps, denoise=1.0)[0]
            sched = self.schedule(p, sigmas)
            mean_f = 1.0 if sched is None else sum(S.step_values(sched, [float(v) for v in sigmas])) / p.steps
            if p.guidance:  # the student: the scale in the conditioning, one model call per step (as Flux dev)
                if sched is not None:  # per step: g * f(step) (the pack's Distilled Guidance Schedule)
                    model = H.run_node(
                        "GuidanceLabDistilledGuidance", model=model, guidance=p.guidance, schedule=sched
                    )[0]
                pos = H.run_node("FluxGuidance", conditioning=pos, guidance=p.guidance)[0]
                guider = H.run_node("BasicGuider", model=model, conditioning=pos)[0]
            else:
                post = H.run_node("GuidanceLabPostProcess", **post_settings(p.post))[0] if p.post else None
                guider = H.run_node(
                    "GuidanceLabCFGGuider",
                    model=model,
                    positive=pos,
                    negative=empty,
                    cfg=1.0 + p.w,
                    neg_scale=0.0,
                    cfg_schedule=sched,
                    terms=self.terms(p),
                    post=post,
                )[0]
            sampler = H.run_node("KSamplerSelect", sampler_name=p.sampler)[0]
            noise = H.run_node("RandomNoise", noise_seed=seed)[0]
            latent = {"samples": torch.zeros(n, 1, 32, 32)}
            was, comfy.utils.PROGRESS_BAR_ENABLED = comfy.utils.PROGRESS_BAR_ENABLED, False  # run() shows one bar
            counters = [H.RowCounter(m) for m in (self.model, self.weak, *(self.student or ())[:1])]
            try:
                out = H.run_node(
                    "SamplerCustomAdvanced",
                    noise=noise,
                    guider=guider,
                    sampler=sampler,
                    sigmas=sigmas,
                    latent_image=latent,
                )[0]
            finally:
                comfy.utils.PROGRESS_BAR_ENABLED = was
                for c in counters:
                    c.close()
                    self.rows += c.rows
        return out["samples"].float().clone(), mean_f


def evaluate_point(samples, labels, ev, real_feats, real_subset):
    import torch

    from bench.toy import eval_classifier as E
    from bench.toy import metrics as M

    logits, feats = E.predict(ev, samples)
    acc = float((logits.argmax(1) == labels).float().mean())
    prec, rec = M.precision_recall(real_subset, feats, k=3)
    return {
        "accuracy": acc,
        "fd": M.frechet_distance(feats, real_feats),
        "precision": prec,
        "recall": rec,
        "mean_abs": float(samples.abs().mean()),
        "finite": bool(torch.isfinite(samples).all()),
    }


def run(points, n: int, out_dir: str, seed: int = 0, sample_only: bool = False, log=print) -> dict:
    """Sample every point (kept: a point whose samples file exists is not sampled again), then score it."""
    import torch
    from safetensors import safe_open
    from tqdm import tqdm

    from guidance_core.files import atomic_bytes, atomic_save

    from bench.toy import eval_classifier as E
    from bench.toy import fashion

    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    res_path = os.path.join(out_dir, "results.json")
    results = {}
    if os.path.exists(res_path):
        with open(res_path) as f:
            results = json.load(f)
    if results.get("_config", {}).get("n") not in (None, n):
        results = {}
    torch.set_grad_enabled(True)
    ev = real_feats = real_subset = None
    if not sample_only:
        ev = E.load()
        xt, yt = fashion.load("test")
        test_logits, real_feats = E.predict(ev, xt)
        gen = torch.Generator().manual_seed(1234)
        real_subset = real_feats[torch.randperm(real_feats.shape[0], generator=gen)[:n]]
        results["_config"] = {
            "n": n,
            "seed": seed,
            "torch_threads": torch.get_num_threads(),
            "eval_test_accuracy": float((test_logits.argmax(1) == yt).float().mean()),
        }
    world = None
    counts = fashion.class_counts(n)
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    for p in points:
        if p.name in results and results[p.name].get("n") == n and not sample_only:
            log(f"{p.name}: kept from {res_path}")
            continue
        spath = os.path.join(out_dir, "samples", f"{p.name}.safetensors")
        meta = {}
        if os.path.exists(spath):
            with safe_open(spath, framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("point", "{}"))
                x = f.get_tensor("x")
        if meta.get("n") != n or meta.get("point") != fields(p):
            world = world or World()
            t0 = time.time()
            parts, mean_f, rows0 = [], 1.0, world.rows
            for k, c in tqdm(list(enumerate(counts)), desc=f"{p.name} (classes)", leave=False):
                x_k, mean_f = world.sample(p, world.labels[k], c, seed + k)
                parts.append(x_k)
            x = torch.cat(parts)
            meta = {
                "n": n,
                "point": fields(p),
                "mean_multiplier": round(mean_f, 4),
                "seconds": round(time.time() - t0, 1),
                "torch_threads": torch.get_num_threads(),
                "rows_per_step": round((world.rows - rows0) / (n * p.steps), 3),
            }
            atomic_save({"x": x.half().contiguous()}, spath, {"point": json.dumps(meta)})
            log(f"{p.name}: sampled {n} in {meta['seconds']} s")
        if sample_only:
            continue
        r = evaluate_point(x.float(), labels, ev, real_feats, real_subset)
        r.update(
            fields(p),
            n=n,
            mean_multiplier=meta["mean_multiplier"],
            seconds=meta["seconds"],
            torch_threads=meta.get("torch_threads"),
            rows_per_step=meta.get("rows_per_step"),
        )
        results[p.name] = r
        log(
            f"{p.name}: acc {r['accuracy']:.3f}  FD {r['fd']:.2f}  precision {r['precision']:.3f}  "
            f"recall {r['recall']:.3f}  ({r['seconds']} s)"
        )
        atomic_bytes(res_path, json.dumps(results, indent=1).encode())
    return results


# What the quick mode (N = 64) can resolve and the CI test asserts. Precision moves by a few points between
# these settings at N = 1000; at N = 64 its standard error is about 0.06, so the quick mode reports it only.
QUICK_CHECKS = (
    "cfg_accuracy_rises",
    "classifier_lifts_uncond_accuracy",
    "cfg_recall_falls",
    "classifier_recall_falls",
    "classifier_fd_smallest_at_moderate_scale",
)


def directions(results: dict) -> dict:
    """The papers' directions, measured (True = as the papers report). Endpoints are the sweep's smallest and
    largest scale; "moderate" = the minimum lies strictly inside the sweep."""

    def sweep(group, key):
        return sorted(
            (v for v in results.values() if isinstance(v, dict) and v.get("group") == group), key=lambda v: v[key]
        )

    cfg, cls = sweep("cfg", "w"), sweep("cls_uncond", "scale")
    inside = lambda vs, key: vs[0][key] < min(vs, key=lambda v: v["fd"])[key] < vs[-1][key]  # noqa: E731
    out = {
        "cfg_accuracy_rises": cfg[-1]["accuracy"] > cfg[0]["accuracy"],
        "cfg_fd_smallest_at_moderate_w": inside(cfg, "w"),
        "cfg_precision_rises": cfg[-1]["precision"] > cfg[0]["precision"],
        "cfg_recall_falls": cfg[-1]["recall"] < cfg[0]["recall"],
        "classifier_lifts_uncond_accuracy": max(v["accuracy"] for v in cls) > cls[0]["accuracy"] + 0.3,
        "classifier_uncond_reaches_90pct": max(v["accuracy"] for v in cls) >= 0.9,
        "classifier_fd_smallest_at_moderate_scale": inside(cls, "scale"),
        "classifier_precision_rises": cls[-1]["precision"] > cls[0]["precision"],
        "classifier_recall_falls": cls[-1]["recall"] < cls[0]["recall"],
    }
    out.update(terms_directions(results, cfg))
    return out


def terms_directions(results: dict, cfg: list) -> dict:
    """The claims of the papers behind the guidance terms (autoguidance, PAG, adaptive CFG), measured where their points were run:
    autoguidance (Karras et al. 2024): a better FD than CFG's best, and more recall than CFG at CFG's best FD;
    PAG (Ahn et al. 2024): better FD than the unguided model; adaptive guidance (Castillo et al. 2023): fewer model
    rows than CFG at all, and fewer rows within 0.01 accuracy and 0.5 FD of the same CFG with every step guided."""
    by = {v["name"]: v for v in results.values() if isinstance(v, dict) and "name" in v}
    auto = [v for v in by.values() if v.get("group") == "autoguidance"]
    pag = [v for v in by.values() if v.get("group") == "pag" and v["w"] == 0]
    adaptive = [v for v in by.values() if v.get("group") == "adaptive"]
    best_cfg = min(cfg, key=lambda v: v["fd"])
    out = {}
    if auto:
        best = min(auto, key=lambda v: v["fd"])
        out["autoguidance_fd_below_best_cfg"] = best["fd"] < best_cfg["fd"]
        out["autoguidance_recall_above_cfg_at_best_fd"] = best["recall"] > best_cfg["recall"]
        out["autoguidance_accuracy_rises"] = max(v["accuracy"] for v in auto) > by["cfg_w0"]["accuracy"]
    if pag and "cfg_w0" in by:
        out["pag_fd_below_unguided"] = min(v["fd"] for v in pag) < by["cfg_w0"]["fd"]
    if adaptive and "cfg_w2" in by:
        ref = by["cfg_w2"]
        saving = [v for v in adaptive if (v.get("rows_per_step") or 2) < 2]
        out["adaptive_saves_rows"] = bool(saving)
        out["adaptive_saves_rows_at_matched_quality"] = any(
            abs(v["accuracy"] - ref["accuracy"]) <= 0.01 and abs(v["fd"] - ref["fd"]) <= 0.5 for v in saving
        )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 64, 6 points (CI)")
    ap.add_argument("--n", type=int, default=None, help="samples per point (default 1000, quick 64)")
    ap.add_argument("--out", default=None, help="output folder (default out/toy/tradeoff[_quick])")
    ap.add_argument("--only", default="", help="comma-separated point names or groups")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-only", action="store_true", help="sample and store the points, score nothing")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument(
        "--distilled",
        action="store_true",
        help="the distilled student next to its teacher's CFG; writes docs/toy_distilled.json",
    )
    ap.add_argument(
        "--distilled-schedules",
        action="store_true",
        help="--distilled plus the student with its scale on a schedule against the constant g = 3",
    )
    ap.add_argument(
        "--reuse",
        default=None,
        help="a results file (e.g. docs/toy_tradeoff.json) that seeds OUT/results.json when OUT has none: "
        "its points of the same N are kept, not sampled again",
    )
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    n = args.n or (64 if args.quick else 1000)
    out = args.out or os.path.join(ROOT, "out", "toy", "tradeoff_quick" if args.quick else "tradeoff")
    points = (
        quick_points() if args.quick else distilled_points() if args.distilled else full_points() + reshaper_points()
    )
    if args.distilled_schedules:
        points = distilled_points() + distilled_schedule_points()
    if args.only:
        keep = set(args.only.split(","))
        points = [p for p in points if p.name in keep or p.group in keep]
    if args.reuse and not os.path.exists(os.path.join(out, "results.json")):
        os.makedirs(out, exist_ok=True)
        shutil.copyfile(args.reuse, os.path.join(out, "results.json"))
    results = run(points, n, out, args.seed, args.sample_only)
    if args.sample_only:
        return results, {}
    if args.only and {p.group for p in points} <= {"reshapers", "tpg"}:
        from bench.toy import toy_report

        toy_report.write_reshapers(results, [p.name for p in points], os.path.join(out, "samples"))
        return results, {}
    if args.distilled or args.distilled_schedules:
        from bench.toy import toy_report

        toy_report.write_distilled(results, [p.name for p in points], DISTILLED_TOLERANCE)
        return results, {}
    groups = {v.get("group") for v in results.values() if isinstance(v, dict)}
    # the directions need the CFG and classifier sweeps (absent from a run of, e.g., --only autoguidance_lora)
    d = directions(results) if {"cfg", "cls_uncond"} <= groups else {}
    print(json.dumps(d, indent=1))
    if not args.quick and not args.only:
        from bench.toy import toy_report

        toy_report.write_all(results, d, out)
    return results, d


if __name__ == "__main__":
    main()
