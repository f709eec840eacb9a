"""The measuring core of the compatibility matrices (devkit/compat_matrix.py): one row, measure() (a run against a
reference: exact, finite, refused or FAIL), counted() (the model calls of a run), the tiny models and inputs built
once, Guidance Lab's routes (the CFG Patch under KSampler, the CFG Guider under SamplerCustomAdvanced) and ComfyUI's
own result on each, and the checks shared by several areas (interval_row, float64, family_guidance_run)."""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from . import comfy_host as H
from .cfg_helpers import EMPTY, NEG, POS, custom_sample, ksample, native_guider, our_guider, patch, post, schedule
from .compat_doc import TOL

CFG = 6.0
PATCH, GUIDER = "patch", "guider"
# the CI slice: one sampler of each family, three schedulers of different shapes
QUICK_SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpmpp_2m",
    "dpmpp_sde",
    "dpmpp_2m_sde",
    "lcm",
    "uni_pc",
    "ddim",
    "res_multistep",
    "er_sde",
    "sa_solver",
]
QUICK_SCHEDULERS = ["simple", "karras", "beta"]

GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError  # the class ComfyUI loaded


@contextlib.contextmanager
def cpu_settings():
    """One torch thread (two processes on a 2-core machine slow each other down many times otherwise) and no
    progress bars; restored afterwards."""
    import comfy.utils

    threads, bar = torch.get_num_threads(), comfy.utils.PROGRESS_BAR_ENABLED
    torch.set_num_threads(1)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        comfy.utils.PROGRESS_BAR_ENABLED = bar


# ------------------------------------------------------------------ one row
def row(area, item, check, route, status, detail="", value=None) -> dict:
    return {
        "area": area,
        "item": item,
        "check": check,
        "route": route,
        "status": status,
        "detail": detail,
        "value": value,
    }


def error_text(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300].rstrip()  # a table cell keeps no trailing space


def measure(
    key: tuple, run, ref=None, exact: bool = False, refuse: bool = False, model=None, relative: bool = False
) -> dict:
    """Run `run()` (a sampler's output) and make the row `key` = (area, item, check, route) from it: compared
    with `ref()` (exact: below TOL, else finite: the difference is the value), or expected to be refused.
    relative: the difference divided by max(1, max |ref|), for references that compute the same formula in
    another order in float32 (a latent of magnitude 20 rounds at 1e-6 per operation). exact=None: exact where below
    TOL, else finite with the difference (a formula shown exact in float64 by the tests, whose float32 rounding at
    a model's large sigmas, EDM's 80, exceeds TOL)."""
    calls = []
    try:
        with torch.inference_mode():
            out = counted(calls, run, model)
    except GuidanceConfigError as e:
        if calls:
            return row(*key, "FAIL", f"refused after {len(calls)} model calls: {error_text(e)}")
        return row(*key, "refused", error_text(e))
    except Exception as e:  # any crash is a FAIL row, with its text
        return row(*key, "FAIL", error_text(e))
    if refuse:
        return row(*key, "FAIL", "ran; expected a refusal before sampling")
    if not torch.isfinite(out).all():
        return row(*key, "FAIL", "non-finite output (NaN or inf)")
    if ref is None:
        return row(*key, "finite")
    try:
        with torch.inference_mode():
            want = ref()
            diff = float((out - want).abs().max())
            if relative:
                diff /= max(1.0, float(want.abs().max()))
    except Exception as e:
        return row(*key, "FAIL", f"reference run failed: {error_text(e)}")
    what = "relative diff" if relative else "max abs diff"
    rounding = exact is None
    if rounding:
        exact = diff < TOL
    if exact and not diff < TOL:
        return row(*key, "FAIL", f"{what} {diff:.2g} from the reference's result (tolerance {TOL:g})", diff)
    out = row(*key, "exact" if exact else "finite", f"{diff:.2g}" + (" relative" if relative else ""), diff)
    if rounding:
        out["rounding"] = True  # its status is the measured difference against TOL (compat_matrix.mismatches)
    return out


def counted(calls: list, run, model=None):
    """run(), with (rows, sigma) of each diffusion-model call of `model` (default: the tiny eps UNet) appended
    to `calls`."""
    counter = H.RowCounter(model or eps_model())
    try:
        return run()
    finally:
        calls.extend(counter.calls)
        counter.close()


# ------------------------------------------------------------------ models and inputs (built once)
@functools.cache
def eps_model():
    return H.tiny_model("eps", seed=0)


def settings(empty=EMPTY) -> dict:
    """Guidance Lab settings (inputs of the CFG Patch / Guider) whose result must be finite."""
    return {
        "linear schedule 1→0": dict(cfg_schedule=schedule(kind="linear", start=1.0, end=0.0)),
        "three-way (empty, neg_scale 2)": dict(empty=empty, neg_scale=2.0),
        "rescale_phi 0.7": dict(post=post(rescale_phi=0.7)),
        "cfg_zero_star": dict(post=post(cfg_zero_star=True)),
        "apg, momentum -0.5": dict(post=post(apg=True, apg_momentum=-0.5)),
        "perp_neg (empty, neg_scale 2)": dict(empty=empty, neg_scale=2.0, post=post(perp_neg=True)),
    }


def constant(f: float):
    return schedule(kind="constant", start=f)


def guided(route, model, cfg, cfg_settings=None, pos=POS, neg=NEG, **kw):
    """A sample with Guidance Lab's CFG: the patch under the stock KSampler, or the guider under
    SamplerCustomAdvanced. kw: ksample / custom_sample arguments (sampler, scheduler, latent, denoise)."""
    cfg_settings = cfg_settings or {}
    if route == PATCH:
        return ksample(patch(model, **cfg_settings), cfg, pos=pos, neg=neg, **kw)
    return custom_sample(model, our_guider(model, cfg, positive=pos, negative=neg, **cfg_settings), **kw)


def native(route, model, cfg, pos=POS, neg=NEG, **kw):
    """ComfyUI's own result on the same route: KSampler, or CFGGuider under SamplerCustomAdvanced."""
    if route == PATCH:
        return ksample(model, cfg, pos=pos, neg=neg, **kw)
    return custom_sample(model, native_guider(model, cfg, pos=pos, neg=neg), **kw)


@functools.cache
def tiny_classifier():
    """A noise-aware classifier of the pack's own architecture at tiny width (random weights), for the tiny UNet."""
    na = H.pack_module("guidance_core.classifiers.noise_aware")
    with torch.inference_mode(False):
        torch.manual_seed(0)
        net = na.NoiseAwareClassifier(na.ClassifierConfig(in_channels=4, num_classes=3, base_channels=16))
    meta = {"labels": ["a", "b", "c"], "latent_channels": 4, "latent_format": "LatentFormat", "parameterization": "eps"}
    return H.pack_module("nodes.classifier_nodes").LoadedClassifier(net, meta, "tiny-random")


def classifier_guided(route, model, sampler, **kw):
    """Classifier guidance on top of Guidance Lab's CFG at cfg 6: the patch (KSampler), or the sampler
    wrapper with the CFG Guider (SamplerCustomAdvanced)."""
    args = dict(
        classifier=tiny_classifier(),
        target="a",
        scale=10.0,
        sigma_lo=0.0,
        sigma_hi=1.0e4,
        every_n=1,
        rms_clamp=0.0,
        dtype="float32",
    )
    if route == PATCH:
        return ksample(
            H.run_node("GuidanceLabClassifierGuidance", model=patch(model), **args)[0], CFG, sampler=sampler, **kw
        )
    wrapped = H.run_node(
        "GuidanceLabClassifierSampler",
        model=model,
        **args,
        sampler=H.run_node("KSamplerSelect", sampler_name=sampler)[0],
    )[0]
    return custom_sample(model, our_guider(model, CFG), sampler=wrapped, **kw)


def image_latent(seed: int = 7):
    return {"samples": torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))}


def right_half_mask():
    mask = torch.zeros(1, 16, 16)
    mask[..., 8:] = 1.0
    return mask


def interval_row(key, sampler, scheduler, model=None, **io) -> dict:
    """The interval schedule guides half the steps: every model call has 2 rows (positive, negative) where
    sigma_lo < sigma <= sigma_hi, elsewhere the rows ComfyUI itself evaluates at cfg 1 (1; 2 for samplers that
    read the uncond, the CFG++ ones). io: pos, neg, latent of another model than the tiny eps UNet."""
    m, steps, route = model or eps_model(), 8, key[3]
    sig = [float(v) for v in H.run_node("BasicScheduler", model=m, scheduler=scheduler, steps=steps, denoise=1.0)[0]]
    lo, hi = math.sqrt(sig[steps // 2 - 1] * sig[steps // 2]), sig[0] + 1.0
    interval = dict(cfg_schedule=schedule(kind="interval", sigma_lo=lo, sigma_hi=hi))
    calls, at_cfg1 = [], []
    done = measure(
        key,
        lambda: counted(
            calls, lambda: guided(route, m, CFG, interval, sampler=sampler, scheduler=scheduler, steps=steps, **io), m
        ),
        model=m,
    )
    if done["status"] != "finite":
        return done
    with torch.inference_mode():
        counted(at_cfg1, lambda: native(route, m, 1.0, sampler=sampler, scheduler=scheduler, steps=steps, **io), m)
    outside = max(rows for rows, _ in at_cfg1)
    wrong = [(rows, s) for rows, s in calls if rows != (2 if lo < s <= hi else outside)]
    if wrong or not calls:
        first = f", first: {wrong[0][0]} rows at sigma {wrong[0][1]:.4g}" if wrong else ""
        return row(
            *key,
            "FAIL",
            f"{len(wrong)} of {len(calls)} model calls with other rows than the interval "
            f"{lo:.4g} < sigma <= {hi:.4g} says{first}",
            float(len(wrong) or 1),
        )
    note = " (2 outside too: the sampler reads the uncond, as at cfg 1 in ComfyUI)" if outside == 2 else ""
    return row(*key, "exact", f"{len(calls)} model calls, each with the scheduled rows{note}", 0.0)


def float64(patcher):
    """The network in float64: a reference that evaluates a perturbed row in a forward of its own (a batch of
    another size) then agrees with a batched one to the sampler's float32 rounding."""
    net = patcher.model.diffusion_model
    net.to(torch.float64)
    net.dtype = torch.float64
    return patcher


def family_guidance_run(route, model, classifier, target, run):
    """Classifier Guidance (patch, under KSampler) or the Classifier Guidance Sampler around euler with the CFG
    Guider (SamplerCustomAdvanced), at cfg 6 and scale 10."""
    args = dict(
        classifier=classifier,
        target=target,
        scale=10.0,
        sigma_lo=0.0,
        sigma_hi=1.0e4,
        every_n=1,
        rms_clamp=0.0,
        dtype="float32",
        allow_other_latent_format=False,
    )
    if route == PATCH:
        return ksample(H.run_node("GuidanceLabClassifierGuidance", model=model, **args)[0], CFG, **run)
    io = {k: v for k, v in run.items() if k not in ("pos", "neg")}
    wrapped = H.run_node(
        "GuidanceLabClassifierSampler",
        model=model,
        **args,
        sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0],
    )[0]
    return custom_sample(model, our_guider(model, CFG, positive=run["pos"], negative=run["neg"]), sampler=wrapped, **io)
