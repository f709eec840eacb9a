"""The sigmas of the frontend's schedule plot (the /guidance_lab/schedule_preview route): a typical run's sigmas
without a model at hand, so that the plot shows a schedule's values with the same math as sampling
(schedules.step_values).

With no model range given it is an SD1.5-like discrete model with ComfyUI's "normal" scheduler; the test
tests/test_web.py::test_preview_sigmas_equal_comfyui_normal_scheduler holds it equal to ComfyUI's own
comfy.samplers.calculate_sigmas(ModelSamplingDiscrete(), "normal", steps). The core never imports ComfyUI, so
the formulas are restated here (Rombach et al. 2022 betas; ComfyUI's normal scheduler).
"""

from __future__ import annotations

import math
from typing import Sequence

from .errors import GuidanceConfigError, require_finite

PREVIEW_STEPS_DEFAULT = 20
PREVIEW_STEPS_RANGE = (1, 200)
# SD1.5-like discrete model: ComfyUI's ModelSamplingDiscrete defaults (LDM "scaled linear" betas).
DISCRETE_DEFAULTS = {"timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}


def discrete_model_sigmas(timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> list[float]:
    """The model sigmas of a DDPM-style discrete model, ascending (t = 0 .. T-1).

    "Scaled linear" betas (Rombach et al. 2022, LDM; ComfyUI's ModelSamplingDiscrete default):
        beta_t = (sqrt(b0) + (sqrt(b1) - sqrt(b0)) * t / (T - 1))^2
        alphabar_t = prod_{s <= t} (1 - beta_s)
        sigma_t = sqrt((1 - alphabar_t) / alphabar_t)
    With the defaults sigma_0 = 0.0292 and sigma_999 = 14.61 (SD1.5).
    """
    if int(timesteps) < 2:
        raise GuidanceConfigError(f"timesteps={timesteps}; a discrete schedule needs at least 2")
    a, b = math.sqrt(beta_start), math.sqrt(beta_end)
    out, abar = [], 1.0
    for t in range(int(timesteps)):
        beta = (a + (b - a) * t / (timesteps - 1)) ** 2
        abar *= 1.0 - beta
        out.append(math.sqrt((1.0 - abar) / abar))
    return out


def normal_scheduler_sigmas(steps: int, model_sigmas: Sequence[float]) -> list[float]:
    """This run's sigmas (steps + 1 entries, the last 0) with ComfyUI's "normal" scheduler on a
    discrete model whose ascending sigmas are `model_sigmas` (T entries).

    Timesteps evenly spaced from T-1 down to 0, u_i = (T-1) * (1 - i/(steps-1)) (u_0 = T-1 for one
    step); sigma(u) interpolates log sigma linearly between the neighbouring integer timesteps:
        sigma(u) = exp((1 - w) * log sigma_floor(u) + w * log sigma_ceil(u)),  w = u - floor(u).
    """
    n = _preview_steps(steps)
    log_s = [math.log(v) for v in model_sigmas]
    top = len(log_s) - 1
    out = []
    for i in range(n):
        u = top * (1.0 - i / (n - 1)) if n > 1 else float(top)
        lo = min(max(int(math.floor(u)), 0), top)
        hi = min(lo + 1, top)
        w = u - lo
        out.append(math.exp((1.0 - w) * log_s[lo] + w * log_s[hi]))
    return out + [0.0]


def log_spaced_sigmas(steps: int, sigma_min: float, sigma_max: float) -> list[float]:
    """steps + 1 sigmas, log-uniform from sigma_max down to sigma_min, then 0:
    sigma_i = exp(log sigma_max + (log sigma_min - log sigma_max) * i / (steps - 1))."""
    n = _preview_steps(steps)
    lo = require_finite("sigma_min", sigma_min)
    hi = require_finite("sigma_max", sigma_max)
    if not 0.0 < lo < hi:
        raise GuidanceConfigError(f"sigma_min={lo}, sigma_max={hi}; use 0 < sigma_min < sigma_max")
    if n == 1:
        return [hi, 0.0]
    return [math.exp(math.log(hi) + (math.log(lo) - math.log(hi)) * i / (n - 1)) for i in range(n)] + [0.0]


def preview_sigmas(
    steps: int, sigma_min: float | None = None, sigma_max: float | None = None
) -> tuple[list[float], float, float]:
    """(this run's sigmas, the model's sigma_min, sigma_max) for a preview of `steps` steps.

    No range given: an SD1.5-like model (discrete_model_sigmas) with ComfyUI's "normal" scheduler,
    the model range being its first and last sigma. A range given: log_spaced_sigmas over it.
    """
    if sigma_min is None and sigma_max is None:
        model = discrete_model_sigmas(**DISCRETE_DEFAULTS)
        return normal_scheduler_sigmas(steps, model), model[0], model[-1]
    if sigma_min is None or sigma_max is None:
        raise GuidanceConfigError("give both sigma_min and sigma_max, or neither (SD1.5-like default)")
    sig = log_spaced_sigmas(steps, sigma_min, sigma_max)
    return sig, float(sigma_min), float(sigma_max)


def _preview_steps(steps) -> int:
    lo, hi = PREVIEW_STEPS_RANGE
    if isinstance(steps, bool) or not isinstance(steps, int) or not lo <= steps <= hi:
        raise GuidanceConfigError(f"steps={steps!r}; use a whole number from {lo} to {hi}")
    return steps
