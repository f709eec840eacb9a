"""Shared ComfyUI wiring: model facts, per-step context and the guided prediction step.

Used by both the GUIDER (SamplerCustomAdvanced) and the MODEL patch (stock KSampler), so
one code path computes every guided prediction.
"""
from __future__ import annotations

import os

import torch

import comfy.model_sampling
import comfy.samplers
import folder_paths

from ..guidance_core import cfg as C
from ..guidance_core import parameterization as P
from ..guidance_core.errors import GuidanceConfigError


def register_model_folder(name: str, extensions) -> None:
    """models/<name> (plus any extra_model_paths entries) in ComfyUI's folder registry, with its
    file extensions set explicitly. Model files are only ever resolved through this registry."""
    default = os.path.join(folder_paths.models_dir, name)
    paths = folder_paths.folder_names_and_paths.get(name, ([], set()))[0]
    if default not in paths:
        paths = [default, *paths]
    folder_paths.folder_names_and_paths[name] = (paths, set(extensions))


def parameterization_of(model_sampling) -> str:
    """'flow' for rectified-flow models (CONST), 'v' for v-prediction, else 'eps'."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return "flow"
    if isinstance(model_sampling, comfy.model_sampling.V_PREDICTION):
        return "v"
    return "eps"


def model_sampling_of(model_patcher):
    return model_patcher.get_model_object("model_sampling")


def step_context(sigma: torch.Tensor, model_options: dict, model_sampling) -> C.StepContext:
    """Schedules read the sigma of this call, this run's sigmas and the model's sigma range."""
    sample_sigmas = model_options.get("transformer_options", {}).get("sample_sigmas", None)
    if sample_sigmas is not None:
        sample_sigmas = [float(v) for v in sample_sigmas]
    return C.StepContext(sigma=float(sigma.max()), sample_sigmas=sample_sigmas,
                         sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))


def alpha_of(parameterization: str, sigma: torch.Tensor) -> torch.Tensor:
    return P.alpha_for(parameterization, sigma)


def is_plain(plan: C.StepPlan, combiner: C.CFGCombiner, cond_scale: float) -> bool:
    """True when the step is ComfyUI's own CFG (one guidance term at weight s - 1, no post)."""
    post = combiner.config.post
    if post.apg or post.cfg_zero_star or post.rescale_phi > 0 or len(plan.active) != 1:
        return False
    key, ref, c, role = plan.active[0]
    return role == "guidance" and ref == C.NEGATIVE and c == cond_scale - 1.0


def finish(model, preds: dict, plan, combiner, cond_scale, x, timestep, model_options, conds_pair):
    """Combine, fold to a (cond, uncond) pair and hand it to ComfyUI's cfg_function, which applies
    any sampler_cfg_function (e.g. RescaleCFG) and the post-CFG hooks of other packs in order."""
    d_pos = preds[C.POSITIVE]
    if is_plain(plan, combiner, cond_scale):
        c, u = d_pos, preds[C.NEGATIVE]
    else:
        alpha = alpha_of(combiner.parameterization, timestep).to(x.dtype)
        guided = combiner.combine(plan, preds, x, timestep, alpha)
        c, u = C.fold_to_pair(d_pos, guided, cond_scale)
    return comfy.samplers.cfg_function(model, c, u, cond_scale, x, timestep, model_options=model_options,
                                       cond=conds_pair[0], uncond=conds_pair[1])


def run_pre_cfg_hooks(model, conds_pair, out_pair, cond_scale, x, timestep, model_options):
    """Other packs' pre-CFG hooks, called exactly as ComfyUI's sampling_function calls them."""
    for fn in model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds_pair, "conds_out": out_pair, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "model": model, "model_options": model_options}
        out_pair = fn(args)
    return out_pair


def guided_predict(model, conds: dict, combiner: C.CFGCombiner, cond_scale: float, x, timestep, model_options):
    """One guided denoised prediction: every active term in ONE calc_cond_batch call."""
    ms = model.model_sampling
    plan = combiner.plan(step_context(timestep, model_options, ms), cond_scale)
    if plan.zero_init:
        return x.clone()
    keys = plan.needed
    outs = comfy.samplers.calc_cond_batch(model, [conds[k] for k in keys], x, timestep, model_options)
    preds = dict(zip(keys, outs))
    base = combiner.baseline
    conds_pair = [conds[C.POSITIVE], conds[base] if base in preds else None]
    out_pair = [preds[C.POSITIVE], preds[base] if base in preds else torch.zeros_like(x)]
    out_pair = run_pre_cfg_hooks(model, conds_pair, out_pair, cond_scale, x, timestep, model_options)
    preds[C.POSITIVE] = out_pair[0]
    if base in preds:
        preds[base] = out_pair[1]
    return finish(model, preds, plan, combiner, cond_scale, x, timestep, model_options, conds_pair)


def conditioning_batch(conditioning, name: str) -> int:
    if not isinstance(conditioning, list) or len(conditioning) == 0:
        raise GuidanceConfigError(f"{name} is empty; connect a CONDITIONING (e.g. from CLIPTextEncode)")
    sizes = {int(c[0].shape[0]) for c in conditioning}
    if len(sizes) != 1:
        raise GuidanceConfigError(f"{name} mixes batch sizes {sorted(sizes)}; use one batch size per conditioning")
    return sizes.pop()


def check_batches(named_conds: dict) -> None:
    """Every conditioning must have batch 1 or the common batch size B, otherwise ComfyUI would
    silently tile or cut it. The error lists every input and its batch size."""
    sizes = {name: conditioning_batch(c, name) for name, c in named_conds.items() if c is not None}
    big = {b for b in sizes.values() if b != 1}
    if len(big) > 1:
        listing = ", ".join(f"{n}={b}" for n, b in sizes.items())
        raise GuidanceConfigError(f"conditioning batch sizes do not match ({listing}); "
                                  "each must be 1 or the same batch size")
