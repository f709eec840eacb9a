"""Conversions between the denoised prediction D and other prediction spaces.

ComfyUI samples in x = alpha(sigma)*x0 + sigma*eps (Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models", arXiv 2206.00364, eq. 1 with s(t)=alpha):
  - eps- and v-prediction models: alpha = 1 (x is the VP latent divided by sqrt(abar)),
  - rectified-flow models (SD3, Flux; Lipman et al. 2023 / Liu et al. 2023): alpha = 1 - sigma.

Every prediction space used here is affine in D for fixed (x, sigma):  y = a*D + b*x.
That makes linear guidance combinations (CFG) identical in every space, while
non-linear post-processing (rescale, norms, projections) depends on the space chosen.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import GuidanceConfigError

PARAMETERIZATIONS = ("eps", "v", "flow")
SPACES = ("x0", "eps", "v", "velocity")


def alpha_for(parameterization: str, sigma: torch.Tensor) -> torch.Tensor:
    """alpha(sigma) of ComfyUI's sampling space: 1 for eps/v models, 1 - sigma for flow models."""
    if parameterization == "flow":
        return 1.0 - sigma
    if parameterization in ("eps", "v"):
        return torch.ones_like(sigma)
    raise ValueError(f"parameterization={parameterization!r}; accepted: {', '.join(PARAMETERIZATIONS)}")


def space_coefficients(space: str, sigma: torch.Tensor, alpha: torch.Tensor):
    """Coefficients (a, b) with y = a*D + b*x for prediction space `space`.

    - "x0":       y = D                                       (a=1, b=0)
    - "eps":      eps = (x - alpha*D)/sigma                   (a=-alpha/sigma, b=1/sigma)
    - "v":        VP v-prediction (Salimans & Ho 2022, arXiv 2202.00512) for alpha=1 models:
                  with x_vp = x/sqrt(1+sigma^2), a_t = 1/sqrt(1+sigma^2), s_t = sigma/sqrt(1+sigma^2),
                  v = a_t*eps - s_t*D = (x - (1+sigma^2)*D) / (sigma*sqrt(1+sigma^2))
    - "velocity": flow-matching velocity v = eps - x0 = (x - D)/sigma (exact for alpha = 1 - sigma)
    """
    sigma = sigma.clamp(min=1e-12)
    if space == "x0":
        return torch.ones_like(sigma), torch.zeros_like(sigma)
    if space == "eps":
        return -alpha / sigma, 1.0 / sigma
    if space == "v":
        root = torch.sqrt(1.0 + sigma * sigma)
        return -root / sigma, 1.0 / (sigma * root)
    if space == "velocity":
        return -1.0 / sigma, 1.0 / sigma
    raise ValueError(f"space={space!r}; accepted: {', '.join(SPACES)}")


def per_sample(value, like: torch.Tensor) -> torch.Tensor:
    """A per-sample value ([B], e.g. sigma) as a tensor shaped [B, 1, 1, ...] (a scalar stays a scalar tensor), in
    `like`'s dtype and device, to broadcast against `like` (k-diffusion's append_dims). The one reshape of a
    per-sample value in the core."""
    s = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        return s
    return s.reshape(s.shape[:1] + (1,) * (like.ndim - 1))


def to_space(space: str, denoised: torch.Tensor, x: torch.Tensor, sigma, alpha) -> torch.Tensor:
    """y = a*D + b*x (see space_coefficients)."""
    a, b = space_coefficients(space, per_sample(sigma, x), per_sample(alpha, x))
    return a * denoised + b * x


def from_space(space: str, y: torch.Tensor, x: torch.Tensor, sigma, alpha) -> torch.Tensor:
    """D = (y - b*x)/a, the inverse of to_space."""
    a, b = space_coefficients(space, per_sample(sigma, x), per_sample(alpha, x))
    return (y - b * x) / a


def default_rescale_space(parameterization: str) -> str:
    """Space in which CFG rescale is computed when the user picks "auto".

    Lin et al. 2024 (arXiv 2305.08891, Alg. 2) rescale the v-prediction of VP models; ComfyUI's
    RescaleCFG does the same for eps and v models. For flow models the VP v-conversion is wrong
    (alpha != 1), so the rescale is done on the x0 prediction D itself.
    """
    return "x0" if parameterization == "flow" else "v"


# ---------------------------------------------------------------- the model's (and classifier's) input scaling
# A noise-aware classifier reads c_in(sigma)*x, the diffusion model's own input scaling (ComfyUI's
# model_sampling.calculate_input). One convention, recorded in the classifier file (`input_scaling`), is used
# by the trainer and by guidance, and must equal the model's:
#   "edm":          c_in = 1/sqrt(sigma^2 + sigma_data^2)  (Karras et al. 2022, arXiv 2206.00364, Table 1;
#                   ComfyUI's EPS / V_PREDICTION / EDM. sigma_data = 1: the VP-normalized latent of eps/v models;
#                   0.5: Playground v2.5, Cosmos)
#   "identity":     c_in = 1                                (ComfyUI's CONST (rectified flow) and IMG_TO_IMG)
#   "cosmos_rflow": c_in = 1/(1 + sigma)                    (ComfyUI's COSMOS_RFLOW: (1 - t)*x, t = sigma/(1+sigma))
INPUT_SCALINGS = ("edm", "identity", "cosmos_rflow")


def default_input_scaling(parameterization: str) -> dict:
    """The input scaling of classifier files and latent caches without an `input_scaling` field (what the
    trainer used before it was recorded): x/sqrt(1 + sigma^2) for eps/v models, x for flow models."""
    if parameterization == "flow":
        return {"kind": "identity"}
    if parameterization in ("eps", "v"):
        return {"kind": "edm", "sigma_data": 1.0}
    raise GuidanceConfigError(f"parameterization={parameterization!r}; accepted: {', '.join(PARAMETERIZATIONS)}")


def check_input_scaling(scaling) -> dict:
    """A validated copy {"kind": ..., "sigma_data": ... (edm only)}; raises naming the bad value."""
    kind = scaling.get("kind") if isinstance(scaling, dict) else None
    if kind not in INPUT_SCALINGS:
        raise GuidanceConfigError(f"input_scaling={scaling!r}; accepted kinds: {', '.join(INPUT_SCALINGS)}")
    if kind != "edm":
        return {"kind": kind}
    try:
        sd = float(scaling.get("sigma_data"))
    except (TypeError, ValueError):
        sd = float("nan")
    if not (sd > 0 and math.isfinite(sd)):
        raise GuidanceConfigError(f"input_scaling={scaling!r}: 'edm' needs a positive finite sigma_data")
    return {"kind": "edm", "sigma_data": sd}


def input_scale(sigma: torch.Tensor, scaling: dict) -> torch.Tensor:
    """c_in(sigma) of an input scaling (see INPUT_SCALINGS)."""
    kind = scaling["kind"]
    if kind == "edm":
        return 1.0 / torch.sqrt(sigma * sigma + float(scaling["sigma_data"]) ** 2)
    if kind == "cosmos_rflow":
        return 1.0 / (1.0 + sigma)
    if kind == "identity":
        return torch.ones_like(sigma)
    raise ValueError(f"input_scaling kind={kind!r}; accepted: {', '.join(INPUT_SCALINGS)}")


def scale_input(x: torch.Tensor, sigma, scaling: dict) -> torch.Tensor:
    """c_in(sigma)*x, what the diffusion model and a noise-aware classifier read (see INPUT_SCALINGS)."""
    return input_scale(per_sample(sigma, x), scaling) * x


def describe_input_scaling(scaling: dict) -> str:
    """The formula as text, for messages: 'x/sqrt(sigma^2 + 0.5^2)', 'x', 'x/(1 + sigma)'."""
    kind = scaling.get("kind")
    if kind == "edm":
        return f"x/sqrt(sigma^2 + {float(scaling['sigma_data']):g}^2)"
    return {"identity": "x", "cosmos_rflow": "x/(1 + sigma)"}.get(kind, repr(scaling))


def same_input_scaling(a: dict, b: dict, rtol: float = 1e-4) -> bool:
    """True when c_in_a(sigma) = c_in_b(sigma) for every sigma: same kind and, for "edm", the same sigma_data
    (to rtol: the model's is measured by identify_input_scaling)."""
    if a["kind"] != b["kind"]:
        return False
    return a["kind"] != "edm" or math.isclose(float(a["sigma_data"]), float(b["sigma_data"]), rel_tol=rtol)


PROBE_SIGMAS = (0.05, 0.5, 1.0, 3.0)


def identify_input_scaling(calculate_input: Callable) -> dict | None:
    """Which INPUT_SCALINGS entry a model's calculate_input(sigma, x) is, found by asking it: c_in(sigma) =
    calculate_input(sigma, 1) at a few sigmas (float64), matched against 1, 1/(1 + sigma) and
    1/sqrt(sigma^2 + sigma_data^2) with sigma_data^2 = 1/c_in^2 - sigma^2 the same at every sigma.
    None when it is none of them (such a model is refused by the guidance)."""
    sig = torch.tensor(PROBE_SIGMAS, dtype=torch.float64)
    c = torch.stack([calculate_input(s.reshape(1), torch.ones(1, 1, 1, 1, dtype=torch.float64)).reshape(())
                     .to(device="cpu", dtype=torch.float64) for s in sig])
    if not torch.isfinite(c).all() or (c <= 0).any():
        return None
    close = lambda a, b: bool(torch.allclose(a, b, rtol=1e-5, atol=0))  # noqa: E731
    if close(c, torch.ones_like(c)):
        return {"kind": "identity"}
    if close(c, 1.0 / (1.0 + sig)):
        return {"kind": "cosmos_rflow"}
    sd2 = 1.0 / c ** 2 - sig ** 2
    if (sd2 > 0).all() and close(sd2, sd2[:1].expand_as(sd2)):
        sd = math.sqrt(float(sd2[0]))
        return {"kind": "edm", "sigma_data": round(sd, 6)}
    return None


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma, parameterization: str) -> torch.Tensor:
    """x = alpha(sigma)*x0 + sigma*eps in ComfyUI's sampling space."""
    s = per_sample(sigma, x0)
    return alpha_for(parameterization, s) * x0 + s * noise
