"""Shared ComfyUI wiring: model facts, per-step context and the guided prediction step.

Used by both the GUIDER (SamplerCustomAdvanced) and the MODEL patch (stock KSampler), so
one code path computes every guided prediction.
"""
from __future__ import annotations

import torch

import comfy.model_sampling

from ..guidance_core import cfg as cfg_core
from ..guidance_core import parameterization
from ..guidance_core.errors import GuidanceConfigError


def parameterization_of(model_sampling) -> str:
    """'flow' for rectified-flow models (CONST), 'v' for v-prediction, else 'eps'."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return "flow"
    if isinstance(model_sampling, comfy.model_sampling.V_PREDICTION):
        return "v"
    return "eps"


def model_sampling_of(model_patcher):
    return model_patcher.get_model_object("model_sampling")


def step_context(sigma: torch.Tensor, model_options: dict, model_sampling) -> cfg_core.StepContext:
    """Schedules read the sigma of this call, this run's sigmas and the model's sigma range."""
    sample_sigmas = model_options.get("transformer_options", {}).get("sample_sigmas", None)
    if sample_sigmas is not None:
        sample_sigmas = [float(v) for v in sample_sigmas]
    return cfg_core.StepContext(sigma=float(sigma.max()), sample_sigmas=sample_sigmas,
                         sigma_min=float(model_sampling.sigma_min), sigma_max=float(model_sampling.sigma_max))


def sampler_name(sampler) -> str | None:
    """ComfyUI's name of a SAMPLER's k-diffusion function (KSAMPLER of sample_heun -> 'heun'), looking through
    samplers that wrap another (an `inner` attribute); None for any other sampler. The step counter
    (schedules.StepCounter) reads it to know which samplers evaluate the model ahead of their step."""
    for _ in range(8):  # wrappers of wrappers, never a cycle
        if sampler is None:
            return None
        fn = getattr(sampler, "sampler_function", None)
        if fn is not None:
            name = getattr(fn, "__name__", "")
            return name[len("sample_"):] if name.startswith("sample_") else None
        sampler = getattr(sampler, "inner", None)
    return None


def alpha_of(param: str, sigma: torch.Tensor) -> torch.Tensor:
    return parameterization.alpha_for(param, sigma)


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
