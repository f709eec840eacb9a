"""The compatibility matrices of docs/COMPATIBILITY.md, as real runs inside ComfyUI (devkit/comfy_host.py):
Guidance Lab's CFG Patch (stock KSampler) and CFG Guider (SamplerCustomAdvanced) with every sampler and
scheduler, ComfyUI's own guidance nodes and conditioning features, on ComfyUI's UNet at tiny width (eps);
and every model family of devkit/families.py (CFG Patch, CFG Guider, classifier guidance through both nodes,
CLIP guidance with the family's linear latent->RGB map, Train Classifier on the family's latent format).

One function per area returns rows {area, item, check, route, status, detail, value}; status is
- exact: the output equals ComfyUI's own result (value = max abs difference, below TOL);
- finite: it runs and the output is finite (value = max abs difference from plain CFG: how much the
  setting changed the result);
- refused: a GuidanceConfigError before the first model call (detail = its text);
- limitation: the combination cannot take effect (detail = why);
- FAIL: anything else (another exception, NaN/inf, a difference, a refusal after sampling started).

`scripts/compat_matrix.py` writes the running ComfyUI version's section of the doc (layout: devkit/compat_doc.py)
from all_rows() or all_rows(quick=True); `tests/test_compat_matrix_quick.py` runs all_rows(quick=True) and compares it
with that version's section. Nodes run as the running ComfyUI declares them (node_inputs_of_this_comfyui). Every run is made as ComfyUI runs a prompt (under
torch.inference_mode), on one CPU thread (see cpu_settings).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import json
import math
import os
import shutil
import tempfile

import torch

from . import comfy_host as H
from . import wan_vae
from .cfg_helpers import EMPTY, NEG, OTHER, POS, custom_sample, ksample, native_guider, our_guider, patch, post, schedule
from .sampler_steps import mixed_steps, rows_by_step

from .compat_doc import (AREAS, CONDITIONING, FAMILIES, NODES, SAMPLERS, SCHEDULERS, STATUSES, TOL,  # noqa: F401
                        render_section, replace_section, versions)

CFG = 6.0
PATCH, GUIDER = "patch", "guider"
# the CI slice: one sampler of each family, three schedulers of different shapes
QUICK_SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_sde", "dpmpp_2m_sde",
                  "lcm", "uni_pc", "ddim", "res_multistep", "er_sde", "sa_solver"]
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


def all_rows(quick: bool = False) -> list:
    with cpu_settings(), node_inputs_of_this_comfyui():
        return (sampler_rows(quick) + scheduler_rows(quick) + guidance_node_rows() + chain_rows() + model_term_rows()
                + conditioning_rows() + family_rows(quick) + nag_rows() + perturbation_kind_rows() + reshaper_rows()
                + sampling_form_rows()
                + attention_chain_rows() + step_rows())


def inputs_this_comfyui_lacks() -> dict:
    """{node_id: [input names]} of NODE_INPUTS that this ComfyUI's node does not declare. ComfyUI 0.3.52's
    DifferentialDiffusion has no `strength` (later versions added it, default 1.0 = 0.3.52's behaviour)."""
    lacks = {}
    for node_id, inputs in NODE_INPUTS.items():
        if node_id not in H.boot().NODE_CLASS_MAPPINGS:
            continue  # a missing node: the matrix's own row says so
        missing = set(inputs) - H.declared_inputs(node_id)
        if missing:
            lacks[node_id] = sorted(missing)
    return lacks


@contextlib.contextmanager
def node_inputs_of_this_comfyui():
    """NODE_INPUTS without the inputs this ComfyUI's nodes lack (the node as this version has it: its rows still
    run, never skipped); restored afterwards."""
    saved = {k: dict(v) for k, v in NODE_INPUTS.items()}
    for node_id, names in inputs_this_comfyui_lacks().items():
        NODE_INPUTS[node_id] = {k: v for k, v in NODE_INPUTS[node_id].items() if k not in names}
    try:
        yield
    finally:
        NODE_INPUTS.clear()
        NODE_INPUTS.update(saved)


# ------------------------------------------------------------------ one row
def row(area, item, check, route, status, detail="", value=None) -> dict:
    return {"area": area, "item": item, "check": check, "route": route, "status": status, "detail": detail,
            "value": value}


def error_text(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300].rstrip()  # a table cell keeps no trailing space


def measure(key: tuple, run, ref=None, exact: bool = False, refuse: bool = False, model=None,
            relative: bool = False) -> dict:
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
    if exact is None:
        exact = diff < TOL
    if exact and not diff < TOL:
        return row(*key, "FAIL", f"{what} {diff:.2g} from the reference's result (tolerance {TOL:g})", diff)
    return row(*key, "exact" if exact else "finite", f"{diff:.2g}" + (" relative" if relative else ""), diff)


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
    args = dict(classifier=tiny_classifier(), target="a", scale=10.0, sigma_lo=0.0, sigma_hi=1.0e4, every_n=1,
                rms_clamp=0.0, dtype="float32")
    if route == PATCH:
        return ksample(H.run_node("GuidanceLabClassifierGuidance", model=patch(model), **args)[0], CFG, sampler=sampler,
                       **kw)
    wrapped = H.run_node("GuidanceLabClassifierSampler", model=model, **args,
                         sampler=H.run_node("KSamplerSelect", sampler_name=sampler)[0])[0]
    return custom_sample(model, our_guider(model, CFG), sampler=wrapped, **kw)


def image_latent(seed: int = 7):
    return {"samples": torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))}


def right_half_mask():
    mask = torch.zeros(1, 16, 16)
    mask[..., 8:] = 1.0
    return mask


# ------------------------------------------------------------------ samplers and schedulers
def sampler_rows(quick: bool = False) -> list:
    import comfy.samplers

    names = QUICK_SAMPLERS if quick else comfy.samplers.KSampler.SAMPLERS
    return [r for name in names for r in sampling_rows(SAMPLERS, name, sampler=name, scheduler="normal")]


def scheduler_rows(quick: bool = False) -> list:
    import comfy.samplers

    names = QUICK_SCHEDULERS if quick else comfy.samplers.KSampler.SCHEDULERS
    return [r for name in names for r in sampling_rows(SCHEDULERS, name, sampler="euler", scheduler=name)]


def sampling_rows(area, item, **kw) -> list:
    """Plain CFG and unguided steps exact, every setting finite, the interval schedule's rows per model call,
    classifier guidance finite; through the patch and the guider."""
    m = eps_model()
    rows = []
    for route in (PATCH, GUIDER):
        plain = functools.cache(lambda: native(route, m, CFG, **kw))  # the lambdas below run in this iteration
        rows.append(measure((area, item, "plain cfg 6", route), lambda: guided(route, m, CFG, **kw), plain,
                            exact=True))
        rows.append(measure((area, item, "schedule 0 at cfg 6 = cfg 1", route),
                            lambda: guided(route, m, CFG, dict(cfg_schedule=constant(0.0)), **kw),
                            lambda: native(route, m, 1.0, **kw), exact=True))
        for name, cfg_settings in settings().items():
            rows.append(measure((area, item, name, route), lambda: guided(route, m, CFG, cfg_settings, **kw), plain))
        rows.append(interval_row((area, item, "interval schedule: rows per model call", route), **kw))
        rows.append(measure((area, item, "classifier guidance (scale 10)", route),
                            lambda: classifier_guided(route, m, **kw), plain))
    return rows


def interval_row(key, sampler, scheduler, model=None, **io) -> dict:
    """The interval schedule guides half the steps: every model call has 2 rows (positive, negative) where
    sigma_lo < sigma <= sigma_hi, elsewhere the rows ComfyUI itself evaluates at cfg 1 (1; 2 for samplers that
    read the uncond, the CFG++ ones). io: pos, neg, latent of another model than the tiny eps UNet."""
    m, steps, route = model or eps_model(), 8, key[3]
    sig = [float(v) for v in H.run_node("BasicScheduler", model=m, scheduler=scheduler, steps=steps, denoise=1.0)[0]]
    lo, hi = math.sqrt(sig[steps // 2 - 1] * sig[steps // 2]), sig[0] + 1.0
    interval = dict(cfg_schedule=schedule(kind="interval", sigma_lo=lo, sigma_hi=hi))
    calls, at_cfg1 = [], []
    done = measure(key, lambda: counted(calls, lambda: guided(route, m, CFG, interval, sampler=sampler,
                                                              scheduler=scheduler, steps=steps, **io), m), model=m)
    if done["status"] != "finite":
        return done
    with torch.inference_mode():
        counted(at_cfg1, lambda: native(route, m, 1.0, sampler=sampler, scheduler=scheduler, steps=steps, **io), m)
    outside = max(rows for rows, _ in at_cfg1)
    wrong = [(rows, s) for rows, s in calls if rows != (2 if lo < s <= hi else outside)]
    if wrong or not calls:
        first = f", first: {wrong[0][0]} rows at sigma {wrong[0][1]:.4g}" if wrong else ""
        return row(*key, "FAIL", f"{len(wrong)} of {len(calls)} model calls with other rows than the interval "
                                 f"{lo:.4g} < sigma <= {hi:.4g} says{first}", float(len(wrong) or 1))
    note = " (2 outside too: the sampler reads the uncond, as at cfg 1 in ComfyUI)" if outside == 2 else ""
    return row(*key, "exact", f"{len(calls)} model calls, each with the scheduled rows{note}", 0.0)


# ------------------------------------------------------------------ ComfyUI's guidance nodes
NODE_INPUTS = {
    "RescaleCFG": dict(multiplier=0.7),
    "CFGNorm": dict(strength=1.0),
    "APG": dict(eta=1.0, norm_threshold=5.0, momentum=-0.5),
    "TCFG": {},
    "Mahiro": {},
    "CFGZeroStar": {},
    "PerpNeg": dict(empty_conditioning=EMPTY, neg_scale=1.0),
    "SelfAttentionGuidance": dict(scale=0.5, blur_sigma=2.0),
    "PerturbedAttentionGuidance": dict(scale=3.0),
    "SkipLayerGuidanceSD3": dict(layers="0, 1", scale=3.0, start_percent=0.0, end_percent=1.0),
    "SkipLayerGuidanceDiT": dict(double_layers="0, 1", single_layers="0, 1", scale=3.0, start_percent=0.0,
                                 end_percent=1.0, rescaling_scale=0.0),
    "SkipLayerGuidanceDiTSimple": dict(double_layers="0, 1", single_layers="0, 1", start_percent=0.0, end_percent=1.0),
    "DifferentialDiffusion": dict(strength=1.0),
}
NO_EFFECT = {  # why a node cannot act on ComfyUI's UNet (checked: its output equals the model's without it)
    "SkipLayerGuidanceSD3": "skips DiT blocks (patches_replace 'dit'); ComfyUI's UNet has none, so the node "
                            "changes nothing on UNet models (SD1.5, SDXL)",
}
NO_EFFECT_TOL = 1e-3
NO_EFFECT["SkipLayerGuidanceDiT"] = NO_EFFECT["SkipLayerGuidanceDiTSimple"] = NO_EFFECT["SkipLayerGuidanceSD3"]

def apply_node(node_id, model):
    """ComfyUI's guidance node `node_id` with NODE_INPUTS on `model` (a new one per run: APG and SAG keep state)."""
    return H.run_node(node_id, model=model, **NODE_INPUTS[node_id])[0]


def soft_mask_latent():
    """An inpainting latent with a left-to-right gradient mask (what Differential Diffusion reads)."""
    mask = torch.linspace(0.0, 1.0, 16).expand(1, 16, 16).contiguous()
    return H.run_node("SetLatentNoiseMask", samples=image_latent(), mask=mask)[0]


def guidance_node_rows() -> list:
    """Each node chained before and after the patch, and before the guider: schedule 0.5 at cfg 7 equals the
    node at cfg 4 and schedule 0 at cfg 7 the node at cfg 1 (hooks see the step's effective scale and the real
    uncond, or cfg 1 semantics); three-way finite. Then guiders the patch cannot drive."""
    m = eps_model()
    checks = (  # check, cfg of ComfyUI's reference, our settings at cfg 7, exact
        ("schedule 0.5 at cfg 7 = node at cfg 4", 4.0, {"cfg_schedule": constant(0.5)}, True),
        ("schedule 0 at cfg 7 = node at cfg 1", 1.0, {"cfg_schedule": constant(0.0)}, True),
        ("three-way (empty, neg_scale 2) at cfg 7", 7.0, settings()["three-way (empty, neg_scale 2)"], False))
    rows = []
    for node_id in NODE_INPUTS:
        if node_id in NO_EFFECT:
            rows.append(no_effect_row(node_id))
            continue
        node = functools.partial(apply_node, node_id)
        kw = {"latent": soft_mask_latent()} if node_id == "DifferentialDiffusion" else {}
        for check, ref_cfg, ours, exact in checks:  # the lambdas below run in this iteration
            ref_k = functools.cache(lambda: ksample(node(m), ref_cfg, **kw))
            ref_c = functools.cache(lambda: native(GUIDER, node(m), ref_cfg, **kw))
            rows += [
                measure((NODES, node_id, check, "node → patch"), lambda: ksample(patch(node(m), **ours), 7.0, **kw),
                        ref_k, exact=exact),
                measure((NODES, node_id, check, "patch → node"), lambda: ksample(node(patch(m, **ours)), 7.0, **kw),
                        ref_k, exact=exact),
                measure((NODES, node_id, check, "node → guider"), lambda: guided(GUIDER, node(m), 7.0, ours, **kw),
                        ref_c, exact=exact),
            ]
    return rows + guider_rows()


def no_effect_row(node_id) -> dict:
    m = eps_model()
    key = (NODES, node_id, "acts on a UNet model", "all")
    with torch.inference_mode():
        diff = float((ksample(apply_node(node_id, m), 4.0) - ksample(m, 4.0)).abs().max())
    if diff > NO_EFFECT_TOL:  # its extra model call batches differently: equal up to float rounding
        return row(*key, "FAIL", f"listed as without effect on a UNet, but changes the result by {diff:.2g}")
    return row(*key, "limitation", NO_EFFECT[node_id], diff)


def guider_rows() -> list:
    """ComfyUI's guiders with the patched model: CFGGuider is driven by the patch, the others refused."""
    m = eps_model()
    pm = patch(m, cfg_schedule=constant(0.5))
    rows = [measure((NODES, "CFGGuider", "schedule 0.5 at cfg 7 = cfg 4", "patch → guider"),
                    lambda: custom_sample(pm, native_guider(pm, 7.0)),
                    lambda: custom_sample(m, native_guider(m, 4.0)), exact=True)]
    guiders = {
        "DualCFGGuider": dict(cond1=POS, cond2=OTHER, negative=NEG, cfg_conds=5.0, cfg_cond2_negative=2.0,
                              style="regular"),
        "PerpNegGuider": dict(positive=POS, negative=NEG, empty_conditioning=EMPTY, cfg=5.0, neg_scale=1.0),
        "BasicGuider": dict(conditioning=POS),
    }
    for node_id, inputs in guiders.items():
        rows.append(measure((NODES, node_id, "the patched model in this guider", "patch → guider"),
                            lambda: custom_sample(pm, H.run_node(node_id, model=pm, **inputs)[0]),
                            refuse=True))
    return rows


# ------------------------------------------------------------------ nodes that touch the same step (0.33's and DiT ones)
CHAIN_ABSENT = "this ComfyUI has no {node} (added in ComfyUI 0.33)"


def absent_row(key, node_id):
    """A node this ComfyUI does not have: nothing to chain with."""
    return row(*key, "limitation", CHAIN_ABSENT.format(node=node_id))


def chain_rows() -> list:
    """Nodes whose hooks read ComfyUI's uncond slot or its batched call, chained with ours: SkipLayerGuidanceDiTSimple
    on a DiT (its sampler_calc_cond_batch_function gets exactly [cond, uncond-or-None]), NAGuidance (its attention
    patch reads the uncond slot as the negative prompt), CFGOverride (sets the guider's cfg per step); two-way exact
    against ComfyUI's own result at cfg 4 and 1, three-way finite (exact against the formula in
    tests/test_guidance_node_chains.py)."""
    from . import families as F

    def family(name):  # (model, run arguments with the prompts, its empty prompt)
        fam = F.FAMILIES[name]
        return F.model(name), {"pos": fam.cond(1), "neg": fam.cond(2), "latent": fam.latent(1), "steps": 4}, fam.cond(3)

    unet = (eps_model(), {}, EMPTY)
    nodes = {  # node_id: ((model, run arguments, empty), inputs, item)
        "SkipLayerGuidanceDiTSimple": (family("SD3.5 (MMDiT, flow)"), dict(double_layers="0", single_layers="",
                                       start_percent=0.0, end_percent=1.0), "SkipLayerGuidanceDiTSimple (SD3.5)"),
        "NAGuidance": (unet, dict(nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5), "NAGuidance"),
        "CFGOverride": (unet, dict(cfg=1.5, start_percent=0.5, end_percent=1.0), "CFGOverride"),
        "LTXVSpatioTemporalGuidance": (family("LTXV (video, 5-D, 128 channels)"), dict(scale=1.0, blocks="0", start_percent=0.0,
                                       end_percent=1.0), "LTXVSpatioTemporalGuidance (LTXV)"),
    }
    rows = []
    for node_id, ((m, io, empty), inputs, item) in nodes.items():
        if node_id not in H.boot().NODE_CLASS_MAPPINGS:
            rows.append(absent_row((NODES, item, "chained with the patch and the guider", "all"), node_id))
            continue
        node = functools.partial(lambda n, i, model: H.run_node(n, model=model, **i)[0], node_id, inputs)
        run = {k: v for k, v in io.items() if k not in ("pos", "neg")}
        pn = {k: v for k, v in io.items() if k in ("pos", "neg")}
        for cfg in (4.0, 1.0):
            ref_k = functools.cache(lambda: ksample(node(m), cfg, **pn, **run))
            check = f"two-way at cfg {cfg:g} = ComfyUI's"
            rows += [
                measure((NODES, item, check, "node → patch"), lambda: ksample(patch(node(m)), cfg, **pn, **run),
                        ref_k, exact=True, model=m),
                measure((NODES, item, check, "patch → node"), lambda: ksample(node(patch(m)), cfg, **pn, **run),
                        ref_k, exact=True, model=m),
                measure((NODES, item, check, "node → guider"), lambda: guided(GUIDER, node(m), cfg, **pn, **run),
                        lambda: native(GUIDER, node(m), cfg, **pn, **run), exact=True, model=m),
            ]
        three = dict(empty=empty, neg_scale=2.0)
        rows.append(measure((NODES, item, "three-way (empty, neg_scale 2) at cfg 4", "node → patch"),
                            lambda: ksample(patch(node(m), **three), 4.0, **pn, **run),
                            lambda: ksample(node(m), 4.0, **pn, **run), model=m))
    return rows + dual_model_rows()


def dual_model_rows() -> list:
    """0.33's guiders of their own with the patched model: refused before sampling (the patch drives CFGGuider)."""
    m = eps_model()
    rows = []
    key = (NODES, "LTXVDualCFGGuider", "the patched model in this guider", "patch → guider")
    if "LTXVDualCFGGuider" not in H.boot().NODE_CLASS_MAPPINGS:
        rows.append(absent_row(key, "LTXVDualCFGGuider"))
    else:
        guider = functools.partial(H.run_node, "LTXVDualCFGGuider", positive=POS, negative=NEG, video_cfg=3.0,
                                   audio_cfg=7.0)
        rows.append(measure(key, lambda: custom_sample(m, guider(model=patch(m))[0]), refuse=True))
    key = (NODES, "DualModelGuider", "the patched model as its model", "patch → guider")
    if "DualModelGuider" not in H.boot().NODE_CLASS_MAPPINGS:
        return rows + [absent_row(key, "DualModelGuider")]
    other = H.tiny_model("eps", seed=8)
    guider = functools.partial(H.run_node, "DualModelGuider", positive=POS, cfg=4.0, negative=NEG)
    return rows + [
        measure(key, lambda: custom_sample(m, guider(model=patch(m), model_negative=other)[0]), refuse=True),
        row(NODES, "DualModelGuider", "the patched model as its model_negative", "patch → guider", "limitation",
            "ComfyUI runs the negative model with the positive model's options: the patch there is never called "
            "(put it on `model`, or use the CFG Guider with a model term)")]


# ------------------------------------------------------------------ model terms (autoguidance) by how the weak model is made
def model_term_rows() -> list:
    """A model term made as users make weak models, equal to the same weights on a network of their own: another
    LoRA on the sampled checkpoint, the checkpoint without the sampled LoRA, a LoRA downstream of the patch; a
    separate checkpoint in another precision (finite: it differs from float32 by rounding only)."""
    from .lora import lora_state_dict, with_lora

    def build():
        return H.tiny_model("eps", seed=4)

    lora = lora_state_dict(build())

    def term(model):
        return H.run_node("GuidanceLabModelTerm", model=model, weight=1.5)[0]

    def f64(p):  # the same checkpoint in another precision (float64: the CPU runs it without casting ops)
        p.model.diffusion_model.to(torch.float64)
        p.model.diffusion_model.dtype = torch.float64
        return p

    net = build()
    cases = {  # item: (run, reference with separate networks or None)
        "LoRA clone (sampled + LoRA)": (lambda: ksample(patch(net, terms=term(with_lora(net, lora))), 3.0),
                                        lambda: ksample(patch(build(), terms=term(with_lora(build(), lora))), 3.0)),
        "LoRA clone (sampled - its LoRA)": (
            lambda: ksample(patch(with_lora(net, lora), terms=term(net)), 3.0),
            lambda: ksample(patch(with_lora(build(), lora), terms=term(build())), 3.0)),
        "LoRA downstream of the patch": (lambda: ksample(with_lora(patch(net, terms=term(net)), lora), 3.0),
                                         lambda: ksample(with_lora(patch(net, terms=term(build())), lora), 3.0)),
        "separate checkpoint in float64": (lambda: ksample(patch(net, terms=term(f64(build()))), 3.0),
                                           lambda: ksample(patch(net, terms=term(build())), 3.0)),
    }
    return [measure((NODES, "Model Term (Guidance Lab)", item, PATCH), run, ref, exact="LoRA" in item, model=net)
            for item, (run, ref) in cases.items()]


# ------------------------------------------------------------------ conditioning features
def tiny_controlnet():
    """ComfyUI's own ControlNet (comfy.cldm) at the tiny UNet's width, random weights (a trained ControlNet's
    zero convolutions would start at 0), in comfy.controlnet.ControlNet."""
    import comfy.cldm.cldm
    import comfy.controlnet

    g = torch.Generator().manual_seed(1)
    with torch.inference_mode(False), torch.no_grad():
        net = comfy.cldm.cldm.ControlNet(image_size=32, in_channels=4, model_channels=32, hint_channels=3,
                                         num_res_blocks=1, channel_mult=[1, 2], num_head_channels=16,
                                         use_spatial_transformer=True, transformer_depth=[0, 1],
                                         transformer_depth_middle=1, context_dim=32, use_linear_in_transformer=True,
                                         legacy=False, dtype=torch.float32, device="cpu")
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 / max(1, p[0].numel()) ** 0.5))
    return comfy.controlnet.ControlNet(net, load_device=torch.device("cpu"))


def tiny_lora_hooks():
    """HOOKS from ComfyUI's CreateHookLora on a LoRA file written for the tiny UNet (its cross-attention keys
    and values), with keyframes (strength 1, then 0.5 from half the run)."""
    import folder_paths
    import safetensors.torch

    from .lora import lora_state_dict

    folder = tempfile.mkdtemp(prefix="guidance-lab-compat-")
    atexit.register(shutil.rmtree, folder, True)
    lora = lora_state_dict(eps_model(), rank=4, seed=2, gain=0.3, suffixes=(".attn2.to_k.weight", ".attn2.to_v.weight"))
    safetensors.torch.save_file(lora, os.path.join(folder, "compat_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", folder)
    hooks = H.run_node("CreateHookLora", lora_name="compat_lora.safetensors", strength_model=1.0, strength_clip=0.0)[0]
    kf = H.run_node("CreateHookKeyframe", strength_mult=1.0, start_percent=0.0)[0]
    kf = H.run_node("CreateHookKeyframe", strength_mult=0.5, start_percent=0.5, prev_hook_kf=kf)[0]
    return H.run_node("SetHookKeyframes", hooks=hooks, hook_kf=kf)[0]


def with_hooks(conditioning, hooks):
    return H.run_node("ConditioningSetProperties", cond_NEW=conditioning, strength=1.0, set_cond_area="default",
                      hooks=hooks)[0]


def conditioning_features() -> tuple:
    """({name: inputs of a run (pos, neg, latent, denoise) using the feature}, the LoRA hooks)."""
    def combine(a, b):
        return H.run_node("ConditioningCombine", conditioning_1=a, conditioning_2=b)[0]

    area = H.run_node("ConditioningSetArea", conditioning=OTHER, width=64, height=64, x=0, y=0, strength=1.0)[0]
    masked = H.run_node("ConditioningSetMask", conditioning=OTHER, mask=right_half_mask(), set_cond_area="default",
                        strength=1.0)[0]
    early = H.run_node("ConditioningSetTimestepRange", conditioning=POS, start=0.0, end=0.5)[0]
    late = H.run_node("ConditioningSetTimestepRange", conditioning=OTHER, start=0.5, end=1.0)[0]
    hooks = tiny_lora_hooks()
    cn_pos, cn_neg = H.run_node("ControlNetApplyAdvanced", positive=POS, negative=NEG, control_net=tiny_controlnet(),
                                image=torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(3)),
                                strength=1.0, start_percent=0.0, end_percent=1.0)[:2]
    return {
        "area (ConditioningSetArea)": dict(pos=combine(area, POS)),
        "mask (ConditioningSetMask)": dict(pos=combine(masked, POS)),
        "timestep range (ConditioningSetTimestepRange)": dict(pos=combine(early, late)),
        "LoRA hooks with keyframes (CreateHookLora)": dict(pos=with_hooks(POS, hooks), neg=with_hooks(NEG, hooks)),
        "ControlNet (tiny comfy.cldm)": dict(pos=cn_pos, neg=cn_neg),
        "inpainting (SetLatentNoiseMask)": dict(latent=H.run_node("SetLatentNoiseMask", samples=image_latent(),
                                                                   mask=right_half_mask())[0]),
        "img2img (denoise 0.5)": dict(latent=image_latent(), denoise=0.5),
    }, hooks


def conditioning_rows() -> list:
    """Plain CFG exact, schedule and three-way finite, with each feature; through the patch and the guider."""
    m = eps_model()
    features, hooks = conditioning_features()
    checks = {name: settings()[name] for name in ("linear schedule 1→0", "three-way (empty, neg_scale 2)")}
    rows = []
    for item, kw in features.items():
        item_checks = dict(checks)
        if "hooks" in item:
            item_checks["three-way, the empty prompt with the hooks"] = {"empty": with_hooks(EMPTY, hooks),
                                                                         "neg_scale": 2.0}
        for route in (PATCH, GUIDER):
            plain = functools.cache(lambda: native(route, m, CFG, **kw))
            rows.append(measure((CONDITIONING, item, "plain cfg 6", route), lambda: guided(route, m, CFG, **kw), plain,
                                exact=True))
            for check, cfg_settings in item_checks.items():
                rows.append(measure((CONDITIONING, item, check, route),
                                    lambda: guided(route, m, CFG, cfg_settings, **kw), plain))
    return rows


# ------------------------------------------------------------------ perturbed attention chained with SAG
SAG_CHECK_STEPS, PAG_WEIGHT = 4, 3.0
SDXL_MIDDLE_DEPTH = 10  # SDXL's middle block: one spatial transformer of 10 transformer blocks


def float64(patcher):
    """The network in float64: a reference that evaluates a perturbed row in a forward of its own (a batch of
    another size) then agrees with a batched one to the sampler's float32 rounding."""
    net = patcher.model.diffusion_model
    net.to(torch.float64)
    net.dtype = torch.float64
    return patcher


@functools.cache
def middle_block_unets() -> dict:
    """{label: (model, positive, negative, middle-block depth)}: ComfyUI's SDXL class at tiny width with SDXL's
    middle block of 10 transformers, and the tiny SD1.5 (a middle block of 1), in float64."""
    import comfy.model_base
    from . import families as F

    cfg = F._config("SDXL", dict(F.UNET_TINY, adm_in_channels=2816, num_classes="sequential",
                                 transformer_depth_middle=SDXL_MIDDLE_DEPTH))
    sdxl = float64(F._patcher(comfy.model_base.SDXL(cfg, device="cpu"), 12))
    return {f"SDXL middle block ({SDXL_MIDDLE_DEPTH} transformers)":
            (sdxl, F.FAMILIES["SDXL"].cond(1), F.FAMILIES["SDXL"].cond(2), SDXL_MIDDLE_DEPTH),
            "SD1.5 middle block (1 transformer)":
            (float64(F.sd15()), F.FAMILIES["SD1.5"].cond(1), F.FAMILIES["SD1.5"].cond(2), 1)}


def sag(model):
    """ComfyUI's Self-Attention Guidance: its attn1 patch under the 3-part key ("middle", 0, 0)."""
    return apply_node("SelfAttentionGuidance", model)


def pag_term(weight=PAG_WEIGHT):
    return H.run_node("GuidanceLabPerturbedTerm", mode="pag", blocks="middle.0", weight=weight, seg_sigma=10.0)[0]


def reference_pag(model, transformers, scale=PAG_WEIGHT):
    """PAG as ComfyUI's PerturbedAttentionGuidance computes it (a post-CFG hook: the positive again, in a call of
    its own, D += s (D_pos - D_pag)), with the identity attention set on each of `transformers` of the middle
    block by its own 3-part key, which no other node's patch can shadow."""
    import comfy.model_patcher
    import comfy.samplers

    def identity(q, k, v, extra_options, mask=None):
        return v

    def post_cfg(args):
        opts = args["model_options"].copy()
        for i in transformers:
            opts = comfy.model_patcher.set_model_options_patch_replace(opts, identity, "attn1", "middle", 0, i)
        (pag,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], opts)
        return args["denoised"] + (args["cond_denoised"] - pag) * scale

    m = model.clone()
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


def pag_then_sag(model, transformers):
    """The right result of SAG + a PAG term on the middle block: the guided prediction with PAG perturbing
    `transformers` of the block on the PAG rows, then SAG's post-CFG hook on it (SAG reads the real uncond and
    its attention map, its own extra call unchanged)."""
    return sag(reference_pag(model, transformers))


def attention_chain_rows() -> list:
    """SAG (its patch on the middle block's first transformer) with Guidance Lab's PAG term on the same block,
    through the patch in either order and the guider: exact against PAG on every transformer of the block
    followed by SAG. ComfyUI's own PerturbedAttentionGuidance with SAG: a limitation of ComfyUI's lookup."""
    rows = []
    steps = dict(steps=SAG_CHECK_STEPS)
    for label, (m, pos, neg, depth) in middle_block_unets().items():
        io = dict(pos=pos, neg=neg, **steps)
        check = f"PAG term, {label}, SAG on its first: = PAG on every transformer, then SAG"
        ref_k = functools.cache(lambda: ksample(pag_then_sag(m, range(depth)), CFG, **io))
        ref_c = functools.cache(lambda: native(GUIDER, pag_then_sag(m, range(depth)), CFG, **io))
        rows += [
            measure((NODES, "SelfAttentionGuidance", check, "node → patch"),
                    lambda: ksample(patch(sag(m), terms=pag_term()), CFG, **io), ref_k, exact=True, model=m),
            measure((NODES, "SelfAttentionGuidance", check, "patch → node"),
                    lambda: ksample(sag(patch(m, terms=pag_term())), CFG, **io), ref_k, exact=True, model=m),
            measure((NODES, "SelfAttentionGuidance", check, "node → guider"),
                    lambda: guided(GUIDER, sag(m), CFG, dict(terms=pag_term()), **io), ref_c, exact=True, model=m),
        ]
    return rows + [comfy_pag_with_sag_row()]


def comfy_pag_with_sag_row() -> dict:
    """ComfyUI's PerturbedAttentionGuidance + SAG (both ComfyUI's): PAG's patch ("middle", 0) loses to SAG's
    ("middle", 0, 0) on the first transformer. Checked: equal to PAG on the other transformers (SDXL's middle
    block), and to SAG alone where the block has one transformer (SD1.5)."""
    key = (NODES, "PerturbedAttentionGuidance", "with SelfAttentionGuidance (both ComfyUI's)", "all")
    (sdxl, pos, neg, depth), (sd15, pos15, neg15, _) = middle_block_unets().values()
    comfy_pag = functools.partial(apply_node, "PerturbedAttentionGuidance")
    with torch.inference_mode():
        off = [float((ksample(comfy_pag(sag(sdxl)), CFG, pos=pos, neg=neg, steps=SAG_CHECK_STEPS)
                      - ksample(reference_pag(sag(sdxl), range(1, depth)), CFG, pos=pos, neg=neg,
                                steps=SAG_CHECK_STEPS)).abs().max()),
               float((ksample(comfy_pag(sag(sd15)), CFG, pos=pos15, neg=neg15, steps=SAG_CHECK_STEPS)
                      - ksample(sag(sd15), CFG, pos=pos15, neg=neg15, steps=SAG_CHECK_STEPS)).abs().max())]
    if max(off) >= TOL:
        return row(*key, "FAIL", f"listed as shadowed on the middle block's first transformer, but differs from that "
                                 f"by {max(off):.2g}: ComfyUI's lookup changed, update this row", max(off))
    return row(*key, "limitation", "ComfyUI looks up SAG's attn1 patch (middle, 0, transformer 0) before PAG's "
               "(middle, 0): PAG does not act on the middle block's first transformer (SDXL: "
               f"{depth - 1} of {depth} perturbed; SD1.5: none, PAG adds nothing); Guidance Lab's PAG term chains "
               "with SAG exactly", max(off))


# ------------------------------------------------------------------ model families
SCHEDULE_KINDS = {  # one of each kind of the Guidance Schedule node
    "cosine 1→0": dict(kind="cosine", start=1.0, end=0.0),
    "power_up k=2": dict(kind="power_up", start=1.0, end=0.0, exponent=2.0),
    "power_down k=2": dict(kind="power_down", start=1.0, end=0.0, exponent=2.0),
    "keyframes 0:1, 0.5:0.3, 1:0": dict(kind="keyframes", keyframes="0:1, 0.5:0.3, 1:0"),
    "interval sigma 0.5..2, outside 0.2": dict(kind="interval", sigma_lo=0.5, sigma_hi=2.0, outside=0.2),
}


def family_classifier(model):
    """A tiny noise-aware classifier (random weights) made for `model`: its latent channels and format, its
    parameterization and input scaling (as Train Classifier records them)."""
    na = H.pack_module("guidance_core.classifiers.noise_aware")
    param = H.pack_module("guidance_core.parameterization")
    ms = model.get_model_object("model_sampling")
    fmt = model.model.latent_format
    with torch.inference_mode(False):
        torch.manual_seed(0)
        net = na.NoiseAwareClassifier(na.ClassifierConfig(in_channels=fmt.latent_channels, num_classes=2,
                                                          base_channels=16))
    meta = {"labels": ["a", "b"], "latent_channels": fmt.latent_channels, "latent_format": type(fmt).__name__,
            "parameterization": H.pack_module("nodes.sampling_facts").parameterization_of(ms),
            "input_scaling": param.identify_input_scaling(ms.calculate_input)}
    return H.pack_module("nodes.classifier_nodes").LoadedClassifier(net, meta, "tiny-random")


def family_rows(quick: bool = False) -> list:
    """Each of ComfyUI's model families (devkit/families.py) through the patch and the guider: plain CFG and
    unguided steps exact; three-way, a term, every post-processing and every schedule kind finite; the interval
    schedule's rows per model call; zero-init (flow models only); classifier guidance."""
    from . import families as F

    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        io = {"pos": fam.cond(1), "neg": fam.cond(2), "latent": fam.latent(1)}
        run = dict(io, steps=4)
        area_key = functools.partial(lambda check, route: (FAMILIES, name, check, route))
        cases = dict(settings(empty=fam.cond(3)))
        cases.update({f"schedule {k}": {"cfg_schedule": schedule(**v)} for k, v in SCHEDULE_KINDS.items()})
        cases["zero_init_steps 1"] = {"post": post(zero_init_steps=1)}
        if quick:
            cases = {k: v for k, v in cases.items() if not k.startswith("schedule ")}
        for route in (PATCH, GUIDER):
            plain = functools.cache(lambda: native(route, m, CFG, **run))
            rows.append(measure(area_key("plain cfg 6", route), lambda: guided(route, m, CFG, **run), plain,
                                exact=True, model=m))
            rows.append(measure(area_key("schedule 0 at cfg 6 = cfg 1", route),
                                lambda: guided(route, m, CFG, {"cfg_schedule": constant(0.0)}, **run),
                                lambda: native(route, m, 1.0, **run), exact=True, model=m))
            for check, cfg_settings in cases.items():
                rows.append(measure(area_key(check, route), lambda: guided(route, m, CFG, cfg_settings, **run), plain,
                                    model=m))
            rows.append(interval_row(area_key("interval schedule: rows per model call", route), "euler", "normal",
                                     model=m, **io))
        term = H.run_node("GuidanceLabTerm", conditioning=fam.cond(4), weight=1.5)[0]
        rows.append(measure(area_key("a Guidance Term (weight 1.5)", GUIDER),
                            lambda: guided(GUIDER, m, CFG, {"terms": term}, **run), plain, model=m))
        rows.append(measure(area_key("classifier guidance (patch, scale 10)", PATCH),
                            lambda: family_guidance_run(PATCH, m, family_classifier(m), "a", run), plain, model=m))
        rows.append(measure(area_key("classifier guidance (sampler wrapper, scale 10)", GUIDER),
                            lambda: family_guidance_run(GUIDER, m, family_classifier(m), "a", run), plain, model=m))
        for route in (PATCH, GUIDER):
            rows.append(clip_row(area_key("CLIP guidance (linear decode, scale 10)", route), m, run, plain))
        rows.append(measure(area_key(TRAINER_CHECK, PATCH), lambda: family_trainer_run(m, run), plain, model=m))
    return rows


def nag_rows() -> list:
    """NAG terms and the Distilled Guidance Schedule on every family, through the patch (KSampler): the paper form at
    cfg 1 exact against a direct implementation of the formula (devkit/nag_reference.py) where the family has UNet
    cross-attention or Wan's text cross-attention (there also at cfg 4: a batch with the negative's rows), refused
    elsewhere; the comfyui form at cfg 1 and 4 exact against ComfyUI's NAGuidance where this
    ComfyUI has it, finite where it has not, refused where the family's blocks never call NAGuidance's hook; a
    constant distilled guidance schedule exact against FluxGuidance where the family has a guidance input, refused
    elsewhere."""
    from . import families as F
    from .nag_reference import reference_model, reference_wan

    have_nag = "NAGuidance" in H.boot().NODE_CLASS_MAPPINGS
    nag_patches = H.pack_module("nodes.nag_patches")
    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
        run = dict(pos=pos, neg=neg, latent=lat, steps=4)

        def term(form, m=m):
            return H.run_node("GuidanceLabNAGTerm", form=form, weight=4.0, tau=2.5, alpha=0.5)[0]

        key = functools.partial(lambda check: (FAMILIES, name, check, PATCH))
        # float64 where the form applies (a softmax written out against ComfyUI's attention: float32 rounding apart)
        unet = bool(nag_patches.cross_attention_keys(m.model.diffusion_model))
        dit = bool(nag_patches.dit_cross_attention(m.model.diffusion_model))
        m64 = float64(fam.build()) if unet else m  # Wan casts its input to float32: float32 there
        reference = reference_model if unet else reference_wan
        for cfg in (1.0, 4.0) if dit else (1.0,):
            rows.append(measure(key(f"NAG term, paper form, cfg {cfg:g} = the formula"),
                                lambda: ksample(patch(m64, terms=term("paper")), cfg, **run),
                                lambda: ksample(reference(m64, neg[0][0], 4.0, 2.5, 0.5), cfg, **run), exact=True,
                                model=m64))
        for cfg in (1.0, 4.0):
            comfy_nag = lambda: ksample(H.run_node("NAGuidance", model=m, nag_scale=5.0, nag_alpha=0.5,  # noqa: E731
                                                   nag_tau=2.5)[0], cfg, **run)
            plain = lambda: ksample(m, cfg, **run)  # noqa: E731
            check = f"NAG term, comfyui form, cfg {cfg:g}" + (" = NAGuidance" if have_nag else "")
            rows.append(measure(key(check), lambda: ksample(patch(m, terms=term("comfyui")), cfg, **run),
                                comfy_nag if have_nag else plain, exact=have_nag, model=m))
        g = H.run_node("FluxGuidance", conditioning=pos, guidance=2.5)[0] if "FluxGuidance" in H.boot().NODE_CLASS_MAPPINGS else pos
        rows.append(measure(key("Distilled Guidance Schedule, constant = FluxGuidance"),
                            lambda: ksample(H.run_node("GuidanceLabDistilledGuidance", model=m, guidance=2.5)[0], 1.0,
                                            **run),
                            lambda: ksample(m, 1.0, **dict(run, pos=g)), exact=True, model=m))
    return rows


def perturbation_kind_rows() -> list:
    """TPG and STG terms (weight 3, with cfg 6) on every family, through the patch (KSampler), on the family's first
    block each acts on: TPG finite on UNets, refused on DiTs (the paper's shuffle is defined on UNet transformers);
    STG finite on DiTs whose blocks' first attention takes ComfyUI's attention override, refused on UNets; on
    LTXV exact against ComfyUI's LTXVSpatioTemporalGuidance where this ComfyUI has it, its block set read by the
    block as ComfyUI's LTXAV model reads it (plain LTXV ignores it: the node alone adds nothing there)."""
    from . import families as F

    perturbation = H.pack_module("nodes.perturbation_patches")
    have_stg_node = "LTXVSpatioTemporalGuidance" in H.boot().NODE_CLASS_MAPPINGS
    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        run = dict(pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1), steps=4)
        plain = functools.cache(lambda m=m, run=run: ksample(m, CFG, **run))
        for mode in ("tpg", "stg"):
            have = perturbation.available_blocks(m.model.diffusion_model, mode)
            blocks = f"{have[0][0]}.{have[0][1]}" if have else ""
            term = H.run_node("GuidanceLabPerturbedTerm", mode=mode, blocks=blocks, weight=3.0, seg_sigma=10.0)[0]
            key = (FAMILIES, name, f"{mode.upper()} term (weight 3)", PATCH)
            ours = lambda m=m, term=term, run=run: ksample(patch(m, terms=term), CFG, **run)  # noqa: E731
            if not have:
                rows.append(measure(key, ours, refuse=True, model=m))
            elif mode == "stg" and have_stg_node and type(m.model.diffusion_model).__name__ == "LTXVModel":
                node = comfy_ltxv_stg(ltxav_block_rule(m, have[0][1]), 3.0, have[0][1])
                rows.append(measure(key[:2] + (key[2] + " = LTXVSpatioTemporalGuidance",) + key[3:], ours,
                                    lambda node=node, run=run: ksample(node, CFG, **run), exact=True, model=m))
            else:
                rows.append(measure(key, ours, plain, model=m))
    return rows


def ltxav_block_rule(model, block: int = 0):
    """`model` (LTXV) whose block `block` reads the STG block set of ComfyUI's LTXVSpatioTemporalGuidance as
    ComfyUI's LTXAV block loop does: a block in transformer_options["stg_self_attn_blocks"] runs with
    "stg_skip_self_attn" (LTXV's CrossAttention then returns V for its self-attention)."""
    ref = model.clone()

    def run(args, extra):
        opts = args["transformer_options"]
        if block in opts.get("stg_self_attn_blocks", ()):
            args = dict(args, transformer_options={**opts, "stg_skip_self_attn": True})
        return extra["original_block"](args)

    ref.set_model_patch_replace(run, "dit", "double_block", block)
    return ref


def comfy_ltxv_stg(model, scale: float, block: int, start: float = 0.0, end: float = 1.0):
    """ComfyUI's LTXVSpatioTemporalGuidance on `block` of `model` as it is (ltxav_block_rule: its block set read)."""
    return H.run_node("LTXVSpatioTemporalGuidance", model=model, scale=scale, blocks=str(block), start_percent=start,
                      end_percent=end)[0]


def family_guidance_run(route, model, classifier, target, run):
    """Classifier Guidance (patch, under KSampler) or the Classifier Guidance Sampler around euler with the CFG
    Guider (SamplerCustomAdvanced), at cfg 6 and scale 10."""
    args = dict(classifier=classifier, target=target, scale=10.0, sigma_lo=0.0, sigma_hi=1.0e4, every_n=1,
                rms_clamp=0.0, dtype="float32", allow_other_latent_format=False)
    if route == PATCH:
        return ksample(H.run_node("GuidanceLabClassifierGuidance", model=model, **args)[0], CFG, **run)
    io = {k: v for k, v in run.items() if k not in ("pos", "neg")}
    wrapped = H.run_node("GuidanceLabClassifierSampler", model=model, **args,
                         sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0])[0]
    return custom_sample(model, our_guider(model, CFG, positive=run["pos"], negative=run["neg"]), sampler=wrapped, **io)


# ------------------------------------------------------------------ model sampling forms
def sampling_form_worlds() -> dict:
    """{item: (MODEL, GaussianMixture, classifier meta kwargs for devkit.sampling_forms.exact_loaded, alpha, c)} of
    each model_sampling form the running ComfyUI defines (built as its nodes build them, devkit/sampling_forms.py),
    plus a made-up one that matches no known form."""
    from . import sampling_forms as F

    means = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    tau, priors = 0.3, torch.tensor([0.5, 0.3, 0.2])
    demo = H.demo_module()
    edm_in = lambda sd: (lambda s: 1.0 / torch.sqrt(s * s + sd * sd))  # noqa: E731
    eps, _ = F.gmm_world(means, tau, priors, "eps")
    flow, gmm = F.gmm_world(means, tau, priors, "flow")
    worlds = {
        "EPS (discrete)": (eps, gmm, dict(param="eps", alpha=F.unit_alpha, input_scaling={"kind": "edm", "sigma_data": 1.0},
                                          c_in=edm_in(1.0))),
        "V_PREDICTION (discrete)": (F.gmm_world(means, tau, priors, "v")[0], gmm,
                                    dict(param="v", alpha=F.unit_alpha, input_scaling={"kind": "edm", "sigma_data": 1.0},
                                         c_in=edm_in(1.0))),
        "EDM (sigma_data 0.5)": (demo.gmm_model(means, tau, priors, "eps", {"sigma_data": 0.5, "sigma_min": 0.002,
                                                                             "sigma_max": 80.0}, "EDM"), gmm,
                                 dict(param="v", alpha=F.unit_alpha, input_scaling={"kind": "edm", "sigma_data": 0.5},
                                      c_in=edm_in(0.5))),
        "COSMOS_RFLOW": (demo.gmm_model(means, tau, priors, "eps", {"sigma_data": 1.0, "sigma_min": 0.002,
                                                                     "sigma_max": 80.0}, "FLOW_COSMOS"), gmm,
                         dict(param="eps", alpha=F.unit_alpha, input_scaling={"kind": "cosmos_rflow"},
                              c_in=lambda s: 1.0 / (1.0 + s))),
        "CONST (flow)": (flow, gmm, dict(param="flow", alpha=F.flow_alpha)),
    }
    if hasattr(F.comfy_model_sampling(), "V_PREDICTION_DDPM"):
        worlds["V_PREDICTION_DDPM"] = (F.v_ddpm_world(means, tau, priors)[0], gmm, dict(param="v", alpha=F.unit_alpha))
    if F.has_noise_scale():
        worlds[f"CONST noise_scale {F.NOISE_SCALE:g} (ModelNoiseScale)"] = (
            F.noise_scaled(F.gmm_world(means, tau, priors, "flow", noise=F.NOISE_SCALE)[0]), gmm,
            dict(param="flow", alpha=F.flow_alpha, c=F.NOISE_SCALE, noise_scale=F.NOISE_SCALE))
    if F.has_img_to_img_flow():
        worlds["IMG_TO_IMG_FLOW (ModelSamplingDiscrete img_to_img_flow)"] = (F.img_to_img_flow(flow), gmm,
                                                                             dict(param="flow", alpha=F.flow_alpha))
    worlds["a made-up model_sampling (no known form)"] = (F.made_up(flow), gmm, dict(param="flow", alpha=F.flow_alpha))
    return worlds


def reshaper_rows() -> list:
    """The guidance reshapers of Guidance Post-processing (guidance_core/guidance_filters.py) on every family, through
    the patch (KSampler, cfg 4, 2 steps), each against its reference (relative difference: they compute the formula
    in another order): ComfyUI's TCFG and FreSca nodes, diffusers' FDG
    and MaMBo-G, the sd-dynamic-thresholding algorithm (devkit/guidance_references.py). FreSca on 5-D latents is
    exact against ComfyUI 0.33's node; older ComfyUI narrows the frame axis too (finite there, the difference shown).
    Where float32 rounding of another operation order passes TOL (EDM's sigma 80) a row is finite with the difference;
    tests/test_guidance_filters.py holds each formula exact in float64."""
    import inspect

    from . import families as F
    from . import guidance_references as R

    fresca_node = importlib.import_module("comfy_extras.nodes_fresca")  # 0.3.x narrows a 5-D latent's frame axis
    fresca_frames_fixed = "range(2)" in inspect.getsource(fresca_node.Fourier_filter)

    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        run = dict(pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1), steps=2)
        video = getattr(m.model.latent_format, "latent_dimensions", 2) == 3  # sampled as [B, C, T, H, W]
        cases = [
            ("TCFG = ComfyUI's TCFG", dict(tcfg=True), lambda: H.run_node("TCFG", model=m)[0], True),
            ("FreSca = ComfyUI's FreSca", dict(fresca=True, fresca_low=0.9, fresca_high=1.4, fresca_cutoff=2),
             lambda: H.run_node("FreSca", model=m, scale_low=0.9, scale_high=1.4, freq_cutoff=2)[0],
             None if fresca_frames_fixed or not video else False),
            ("FDG = diffusers' FDG", dict(fdg=True, fdg_low=0.4, fdg_high=1.3), lambda: R.fdg_model(m, 0.4, 1.3), None),
            ("MaMBo-G = diffusers' MaMBo-G", dict(mambo_alpha=2.0), lambda: R.mambo_model(m, 2.0), None),
            ("dynamic thresholding (mimic) = sd-dynamic-thresholding",
             dict(dyn_thresh="mimic", dyn_mimic_scale=2.0, dyn_percentile=0.9), lambda: R.dyn_mimic_model(m, 2.0, 0.9),
             None),
        ]
        for check, settings, reference, exact in cases:
            rows.append(measure((FAMILIES, name, check, PATCH),
                                lambda settings=settings: ksample(patch(m, post=post(**settings)), 4.0, **run),
                                lambda reference=reference: ksample(reference(), 4.0, **run), exact=exact, model=m,
                                relative=True))
    return rows


def sampling_form_rows() -> list:
    """Each model_sampling form x {classifier guidance, CFG-Zero* zero-init, CFG rescale}, through the patch under
    KSampler on the exact Gaussian-mixture model: classifier guidance exact (the guided D is E[x0 | x, y] at every
    step, value = the largest relative error) or refused; zero-init exact (the first model call reads the start the
    model's own noise_scaling makes) or refused; rescale in the auto and eps spaces finite or refused."""
    from . import sampling_forms as F

    pos = H.demo_module().class_conditioning([0.0, 1.0, 0.0])
    empty = [[torch.zeros(1, 1, 3), {}]]
    latent = {"samples": torch.zeros(1, 4, 4, 4)}

    def sample(m, cfg=3.0, denoise=1.0, prompt=pos):
        return ksample(m, cfg, steps=8, seed=3, pos=prompt, neg=empty, latent=latent, denoise=denoise)

    rows = []
    for item, (m, gmm, spec) in sampling_form_worlds().items():
        key = functools.partial(lambda check: (FAMILIES, f"model sampling: {item}", check, PATCH))
        spec = dict(spec)
        param, alpha, c = spec.pop("param"), spec.pop("alpha"), spec.get("c", 1.0)
        clf = F.exact_loaded(gmm, ["a", "b", "c"], param, alpha, **spec)
        rows.append(exact_steps_row(key("classifier guidance: E[x0 | x, y] at every step (exact GMM)"), m, gmm, alpha, c,
                                    lambda: F.classifier_patch(m, clf),
                                    lambda rec: sample(rec, cfg=1.0, denoise=0.9, prompt=empty)))
        rows.append(zero_init_start_row(key("CFG-Zero* zero_init_steps 1: start from the model's own noise"), m, sample))
        plain = functools.cache(lambda: sample(m))
        for space in ("auto", "eps"):
            rows.append(measure(key(f"rescale_phi 0.7, rescale_space {space}"),
                                lambda: sample(patch(m, post=post(rescale_phi=0.7, rescale_space=space))), plain, model=m))
    return rows


def exact_steps_row(key, model, gmm, alpha, c, guided, run) -> dict:
    """Row `key`: refused (a GuidanceConfigError before the first model call), or exact when every recorded step's D
    is E[x0 | x, y] within 1e-4 (relative), guided() making the patched model and run(model) sampling it."""
    from . import sampling_forms as F

    seen = []

    def go():
        rec, rec_seen = F.recorder(guided())
        seen.append(rec_seen)
        return run(rec)

    r = measure(key, go, model=model)
    if r["status"] != "finite":
        return r
    worst, steps = F.worst_step_error(seen[0], gmm, alpha, c)
    if not (worst < 1e-4 and steps >= 4):
        return row(*key, "FAIL", f"largest relative error {worst:.2g} over {steps} steps (tolerance 1e-4)", worst)
    return row(*key, "exact", f"{worst:.2g}", worst)


def zero_init_start_row(key, model, sample) -> dict:
    """Row `key`: CFG-Zero* zero-init refused, or exact when the first model call (after the skipped step) reads
    x_start = noise_scaling(sigma_max, n, 0), the model's own start from the seed's noise n."""
    from . import sampling_forms as F
    import comfy.sample

    seen = []

    def go():
        rec, rec_seen = F.recorder(patch(model, post=post(zero_init_steps=1)))
        seen.append(rec_seen)
        return sample(rec)

    r = measure(key, go, model=model)
    if r["status"] != "finite":
        return r
    ms = model.get_model_object("model_sampling")
    n = comfy.sample.prepare_noise(torch.zeros(1, 4, 4, 4), 3)
    start = ms.noise_scaling(ms.sigma_max.reshape(1), n, torch.zeros_like(n))
    diff = float((seen[0][0][0] - start).abs().max())
    return row(*key, "exact" if diff < TOL else "FAIL", f"{diff:.2g}", diff)


# ------------------------------------------------------------------ CLIP guidance and Train Classifier per family
CLIP_ARCH = "GLCompatTinyCLIP"
TINY_CLIP = H.tiny_clip_config(layers=2)  # the tiny open_clip architecture of tests/test_clip.py (random weights)
CLIP_LABELS = ("a red car", "a blue car")


def scratch_folder() -> str:
    folder = tempfile.mkdtemp(prefix="guidance-lab-compat-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.cache
def clip_checkpoint() -> str | None:
    """A tiny random open_clip checkpoint in a guidance_clip folder (file name), or None without open_clip."""
    import folder_paths
    from safetensors.torch import save_file

    try:
        import open_clip
    except ImportError:
        return None
    folder = scratch_folder()
    with open(os.path.join(folder, f"{CLIP_ARCH}.json"), "w", encoding="utf-8") as f:
        json.dump(TINY_CLIP, f)
    open_clip.add_model_config(os.path.join(folder, f"{CLIP_ARCH}.json"))
    with torch.inference_mode(False):
        torch.manual_seed(0)
        net = open_clip.create_model(CLIP_ARCH, pretrained=None, pretrained_text=False, pretrained_image=False)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  os.path.join(folder, "compat_clip.safetensors"))
    folder_paths.add_model_folder_path("guidance_clip", folder)
    return "compat_clip.safetensors"


def clip_row(key, model, run, plain) -> dict:
    """CLIP guidance (Load CLIP Classifier, decode 'linear': the family's own latent->RGB factors, per frame on
    video latents) through the patch or the sampler wrapper."""
    name = clip_checkpoint()
    if name is None:
        return row(*key, "limitation", "open_clip is not installed (only CLIP guidance needs it)")

    def run_it():
        clf = H.run_node("GuidanceLabCLIPClassifierLoader", architecture=CLIP_ARCH, checkpoint=name,
                         labels="\n".join(CLIP_LABELS), decode="linear", gradient="detached", cutouts=0, tau=0.0)[0]
        return family_guidance_run(key[3], model, clf, CLIP_LABELS[1], run)

    return measure(key, run_it, plain, model=model)


TRAINER_CHECK = "Train Classifier (4 steps), then classifier guidance (patch)"
TRAIN_LABELS = ("a", "b")


@functools.cache
def trainer_root() -> str:
    """ComfyUI user folders for Train Classifier (H.user_folders) with a tiny labeled dataset:
    input/compat_data/<label>/ holds 4 random 32x32 PNG images per label."""
    import numpy as np
    from PIL import Image

    root = scratch_folder()
    rng = np.random.default_rng(0)
    for k, label in enumerate(TRAIN_LABELS):
        folder = os.path.join(root, "input", "compat_data", label)
        os.makedirs(folder)
        for i in range(4):
            arr = np.clip(rng.normal(80 + 100 * k, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(folder, f"{i}.png"))
    return root


@functools.cache
def tiny_vae(channels: int):
    """A tiny random VAE making `channels`-channel latents (devkit.comfy_host.tiny_vae), one per channel count."""
    return H.tiny_vae(channels, seed=channels)


def family_vae(fmt):
    """The VAE a family's trainer row encodes with: the real Wan 2.1 VAE (comfy.ldm.wan.vae.WanVAE, tiny width,
    devkit.wan_vae) for families on Wan 2.1 latents (Wan 2.1, Cosmos-Predict2, Qwen-Image), which ComfyUI's
    VAE.encode treats as a video VAE; ComfyUI's 2-D VAE class with the family's latent channels for the others."""
    if type(fmt).__name__ == "Wan21":
        return wan_vae.shared_wan21_vae()
    return tiny_vae(int(fmt.latent_channels))


def family_trainer_run(model, run):
    """Train Classifier on the family's latent format (its own VAE-latent channels; the cache must hold ComfyUI's
    latent_format.process_in of the VAE latents, per-channel formats included), then guide with the result."""
    fmt = model.get_model_object("latent_format")
    vae = family_vae(fmt)
    DS = H.pack_module("guidance_core.datasets")
    TN = H.pack_module("nodes.training_nodes")
    with H.user_folders(trainer_root()) as root:
        clf, _, report = H.run_node("GuidanceLabTrainClassifier", model=model, vae=vae, dataset="compat_data",
                                    output_name=f"compat_{type(fmt).__name__}", steps=4, batch_size=4, lr=1e-3,
                                    seed=0, resolution=32, sigma_distribution="log_uniform", class_balance=False,
                                    width=8)
        cache = DS.load_latent_cache(json.loads(report)["latent_cache"])[0]["latents"]
        items, _ = DS.scan_dataset(os.path.join(root, "input", "compat_data"))
        raw = TN.encode_dataset(vae, items, 32)[0].clone()
        if int(getattr(fmt, "latent_dimensions", 2)) == 3:  # an image as the sampler holds it: one frame
            want = fmt.process_in(raw.unsqueeze(2) if raw.ndim == 4 else raw).float()[:, :, 0]
        else:
            want = fmt.process_in(raw).float()
        if cache.shape != want.shape or not torch.allclose(cache, want, rtol=1e-5, atol=1e-5):
            raise AssertionError(f"the latent cache is not {type(fmt).__name__}.process_in of the VAE latents")
    return family_guidance_run(PATCH, model, clf, TRAIN_LABELS[0], run)


# ------------------------------------------------------------------ the document (layout: devkit/compat_doc.py)
def comfyui_version() -> str:
    H.boot()
    import comfyui_version as v

    return v.__version__


def torch_version() -> str:
    return torch.__version__.split("+")[0]


def parse(text: str, version: str | None = None) -> list:
    """The rows of the section of ComfyUI `version` (default: the one running) in a rendered document."""
    from . import compat_doc

    return compat_doc.parse(text, version or comfyui_version())


def key_of(r: dict) -> tuple:
    return r["area"], r["item"], r["check"], r["route"]


def mismatches(rows: list, doc_rows: list) -> list:
    """Where `rows` disagree with the document: a missing row, another status, or another text of a refusal /
    limitation (measured numbers are not compared: they may differ in the last bits between machines)."""
    doc = {key_of(r): r for r in doc_rows}
    out = []
    for r in rows:
        d = doc.get(key_of(r))
        if d is None:
            out.append(f"not in the document: {key_of(r)}")
        elif d["status"] != r["status"]:
            out.append(f"{key_of(r)}: document says {d['status']}, the run gives {r['status']} ({r['detail']})")
        elif r["status"] in ("refused", "limitation") and d["detail"] != r["detail"]:
            out.append(f"{key_of(r)}: document says {d['detail']!r}, the run gives {r['detail']!r}")
    return out


# ------------------------------------------------------------------ which step a call is in
STEP_SAMPLERS = ["heun", "dpm_2", "dpmpp_2s_ancestral", "dpmpp_3m_sde", "uni_pc"]
STEP_CHECK_STEPS = 5


def whole_steps_row(key, run, model, guided: list) -> dict:
    """run() with an adaptive stop after step 0: every call of the guided steps has 2 rows, every other call 1,
    steps as the sampler's own loop counts them (devkit.sampler_steps)."""
    try:
        with torch.inference_mode():
            by_step = rows_by_step(model, run)
    except Exception as e:  # any crash is a FAIL row, with its text
        return row(*key, "FAIL", error_text(e))
    got = sorted(s for s, rows in by_step.items() if rows[0] == 2)
    if mixed_steps(by_step) or got != guided:
        return row(*key, "FAIL", f"rows per step {by_step}; guided steps expected {guided}", 1.0)
    calls = sum(len(r) for r in by_step.values())
    return row(*key, "exact", f"{calls} model calls in {len(by_step)} steps, each step all guided or all not", 0.0)


def step_rows() -> list:
    """Adaptive stop after step 0 on multi-stage samplers (every call of a step guided or none), and on
    FlipSigmas' increasing run (inversion): a progress schedule moves, the APG momentum keeps one value per step,
    an adaptive stop takes effect."""
    m, n = eps_model(), STEP_CHECK_STEPS
    stop = dict(cfg_schedule=schedule(kind="adaptive", threshold=-1.0))
    rows = []
    for sampler in STEP_SAMPLERS:
        for route in (PATCH, GUIDER):
            key = (SAMPLERS, sampler, "adaptive stop after step 0: whole steps", route)
            rows.append(whole_steps_row(key, lambda: guided(route, m, CFG, stop, sampler=sampler, steps=n), m, [0]))
    flip = functools.cache(lambda: H.run_node("FlipSigmas", sigmas=H.run_node(
        "BasicScheduler", model=m, scheduler="normal", steps=n, denoise=1.0)[0])[0])
    item = "FlipSigmas (increasing sigmas)"
    for sampler in ("euler", "heun"):
        key = (SAMPLERS, item, f"{sampler}: adaptive stop after step 0", GUIDER)
        rows.append(whole_steps_row(key, lambda: guided(GUIDER, m, CFG, stop, sampler=sampler, sigmas=flip()), m, [0]))
    rows += [flipped_schedule_row(m, flip, item), flipped_apg_row(m, flip, item)]
    return rows


def flipped_schedule_row(m, flip, item) -> dict:
    """A linear progress schedule 7 -> 1 at cfg 2 on the increasing run: the step scale 1 + f that post-CFG
    hooks see goes 8 .. 2 in equal steps."""
    key = (SAMPLERS, item, "euler: linear progress schedule 7→1 moves", GUIDER)
    scales, rec = [], m.clone()
    rec.set_model_sampler_post_cfg_function(lambda a: (scales.append(float(a["cond_scale"])), a["denoised"])[1])
    lin = dict(cfg_schedule=schedule(kind="linear", start=7.0, end=1.0))
    done = measure(key, lambda: guided(GUIDER, rec, 2.0, lin, sigmas=flip()))
    if done["status"] != "finite":
        return done
    want = [8.0 - 6.0 * i / (STEP_CHECK_STEPS - 1) for i in range(STEP_CHECK_STEPS)]
    err = max((abs(a - b) for a, b in zip(scales, want)), default=math.inf) if len(scales) == len(want) else math.inf
    if not err < 1e-6:
        return row(*key, "FAIL", f"step scales {scales}, expected {want}", err)
    return row(*key, "exact", "step scales " + ", ".join(f"{v:g}" for v in scales), 0.0)


def flipped_apg_row(m, flip, item) -> dict:
    """APG with momentum on the increasing run: the combiner holds one committed momentum per step."""
    key = (SAMPLERS, item, "heun: APG momentum, one value per step", GUIDER)
    g = our_guider(m, CFG, post=post(apg=True, apg_momentum=-0.5))
    done = measure(key, lambda: custom_sample(m, g, sampler="heun", sigmas=flip()))
    if done["status"] != "finite":
        return done
    levels = g.runtime.combiner.momentum_levels()
    if levels != list(range(STEP_CHECK_STEPS)):
        return row(*key, "FAIL", f"momentum held at steps {levels}", 1.0)
    return row(*key, "exact", f"momentum committed at steps {levels}", 0.0)
