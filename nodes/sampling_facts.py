"""What a sampling run's ComfyUI objects tell the pack: the model's sampling form (learned by probing its
model_sampling object, never from its class name), the step's context for schedules (this call's sigma, the run's
sigmas), the sampler's name, and the conditionings' batch sizes.

Read by the GUIDER (SamplerCustomAdvanced) and the MODEL patch (stock KSampler) alike, and by the classifier and
training nodes, so every node learns these facts the same way.
"""

from __future__ import annotations

import functools
import inspect

import torch

from ..guidance_core import cfg as cfg_core
from ..guidance_core import parameterization
from ..guidance_core.errors import GuidanceConfigError


def _scalar(t) -> torch.Tensor:
    return torch.as_tensor(t).to(device="cpu", dtype=torch.float64).reshape(())


def _probe_tensor(v: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), float(v), dtype=torch.float64)


def _affine_probe(fn, sigmas) -> tuple:
    """(p, q, residual) over `sigmas` of fn(sigma, u, v) = p*u + q*v: from (0, 0), (1, 0), (0, 1), and the residual
    at (2, 3) (and at (0, 0)), which is 0 exactly when fn is affine without an offset."""
    rows = []
    for s in sigmas:
        s = s.reshape(1)
        zero, one, two, mix = (
            _scalar(fn(s, _probe_tensor(u), _probe_tensor(v))) for u, v in ((0, 0), (1, 0), (0, 1), (2, 3))
        )
        p, q = one - zero, two - zero
        rows.append((p, q, torch.maximum(zero.abs(), (mix - 2 * p - 3 * q).abs())))
    return tuple(torch.stack(c) for c in zip(*rows))


def probe_model_sampling(model_sampling) -> dict:
    """Ask a model_sampling object for its affine maps at parameterization.PROBE_SIGMAS, with known float64 tensors
    (see parameterization.fit_sampling_form): noise_scaling(sigma, n, z) = A*n + B*z with max_denoise off (the
    form of every step), calculate_input(sigma, x) = c_in*x, calculate_denoised(sigma, out, x) = a*x + b*out, each
    with its residual against a third point (a map that is not affine is caught), and inverse_noise_scaling(sigma, y)
    = p*y + q at the probe sigmas below 1 (CONST divides by 1 - sigma). Any exception the object raises is recorded
    as its text under "error"."""
    ms = model_sampling
    sig = torch.tensor(parameterization.PROBE_SIGMAS, dtype=torch.float64)
    out = {"sigma": sig}
    try:
        with torch.no_grad():
            for key, fn in (
                ("noise", lambda s, n, z: ms.noise_scaling(s, n, z, max_denoise=False)),
                ("denoised", ms.calculate_denoised),
            ):
                out[f"{key}_1"], out[f"{key}_2"], out[f"{key}_residual"] = _affine_probe(fn, sig)
            out["c_in"] = torch.stack([_scalar(ms.calculate_input(s.reshape(1), _probe_tensor(1))) for s in sig])
            # y -> p*y + q read as (y, w) -> inverse(y) - (1 - w)*inverse(0) = p*y + q*w
            out["inverse_sigma"] = sig[sig < 1]
            out["inverse_1"], out["inverse_2"], out["inverse_residual"] = _affine_probe(
                lambda s, y, w: ms.inverse_noise_scaling(s, y) - (1 - w) * ms.inverse_noise_scaling(s, 0 * y),
                out["inverse_sigma"],
            )
    except Exception as e:  # a made-up object may lack a method or fail on these inputs: it is refused, naming this
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def sampling_form(model_sampling) -> parameterization.SamplingForm:
    """The model's sampling form (alpha(sigma), noise coefficient, input scaling, prediction type), learned by
    asking the object (probe_model_sampling), never from its class name."""
    return parameterization.fit_sampling_form(probe_model_sampling(model_sampling), type(model_sampling).__name__)


def guidable_form(model_sampling, what: str) -> parameterization.SamplingForm:
    """The sampling form of a model that `what` (e.g. "classifier guidance") needs as x = alpha*x0 + c*sigma*eps;
    a GuidanceConfigError naming the form when the model has none (no noise, or no known form)."""
    form = sampling_form(model_sampling)
    if form.problem is not None:
        raise GuidanceConfigError(
            f"{what} needs x = alpha*x0 + c*sigma*eps (a model whose noise_scaling adds noise "
            f"in a known form); this model's sampling is {form.describe()}; refused"
        )
    return form


def trainable_parameterization(model_sampling, what: str) -> str:
    """The parameterization under which a noise-aware classifier is trained for this model: the trainer adds noise
    x = alpha*x0 + sigma*eps (parameterization.add_noise), so a form without noise, an unknown one, or one with a
    noise coefficient c != 1 (noise_scale) is refused, naming the form."""
    form = guidable_form(model_sampling, what)
    if form.noise != 1.0:
        raise GuidanceConfigError(
            f"{what} trains on noise x = alpha*x0 + sigma*eps; this model's sampling is "
            f"{form.describe()} (noise_scale {form.noise:g}); refused: a classifier trained here "
            "would read other inputs than the model gives it"
        )
    return form.parameterization


def parameterization_of(model_sampling) -> str:
    """What the CFG combiner and classifier files call the model's sampling space: 'eps' or 'v' (alpha = 1),
    'flow' (alpha = 1 - sigma), parameterization.NOISE_FREE or UNKNOWN; learned by probing (sampling_form)."""
    return sampling_form(model_sampling).parameterization


def model_sampling_of(model_patcher):
    return model_patcher.get_model_object("model_sampling")


def step_context(sigma: torch.Tensor, model_options: dict, model_sampling) -> cfg_core.StepContext:
    """Schedules read the sigma of this call, this run's sigmas and the model's sigma range."""
    sample_sigmas = model_options.get("transformer_options", {}).get("sample_sigmas", None)
    if sample_sigmas is not None:
        sample_sigmas = [float(v) for v in sample_sigmas]
    return cfg_core.StepContext(
        sigma=float(sigma.max()),
        sample_sigmas=sample_sigmas,
        sigma_min=float(model_sampling.sigma_min),
        sigma_max=float(model_sampling.sigma_max),
    )


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
            return name[len("sample_") :] if name.startswith("sample_") else None
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
        raise GuidanceConfigError(
            f"conditioning batch sizes do not match ({listing}); each must be 1 or the same batch size"
        )


@functools.lru_cache(maxsize=256)
def source_mentions(function, text: str) -> bool:
    """Whether the source of `function` (a ComfyUI method: which hooks it calls, which inputs it reads) contains
    `text`; False where the source cannot be read (a compiled or C function)."""
    try:
        return text in inspect.getsource(function)
    except (OSError, TypeError):
        return False
