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

import torch

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


def broadcast_sigma(sigma, like: torch.Tensor) -> torch.Tensor:
    """Sigma as a tensor shaped [B, 1, 1, ...] (or a scalar tensor) to broadcast against `like`."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        return s
    return s.reshape(s.shape[:1] + (1,) * (like.ndim - 1))


def to_space(space: str, denoised: torch.Tensor, x: torch.Tensor, sigma, alpha) -> torch.Tensor:
    """y = a*D + b*x (see space_coefficients)."""
    a, b = space_coefficients(space, broadcast_sigma(sigma, x), broadcast_sigma(alpha, x))
    return a * denoised + b * x


def from_space(space: str, y: torch.Tensor, x: torch.Tensor, sigma, alpha) -> torch.Tensor:
    """D = (y - b*x)/a, the inverse of to_space."""
    a, b = space_coefficients(space, broadcast_sigma(sigma, x), broadcast_sigma(alpha, x))
    return (y - b * x) / a


def default_rescale_space(parameterization: str) -> str:
    """Space in which CFG rescale is computed when the user picks "auto".

    Lin et al. 2024 (arXiv 2305.08891, Alg. 2) rescale the v-prediction of VP models; ComfyUI's
    RescaleCFG does the same for eps and v models. For flow models the VP v-conversion is wrong
    (alpha != 1), so the rescale is done on the x0 prediction D itself.
    """
    return "x0" if parameterization == "flow" else "v"


def model_input(x: torch.Tensor, sigma, parameterization: str) -> torch.Tensor:
    """The diffusion model's input scaling of x, which noise-aware classifiers also read:
    c_in*x = x / sqrt(1 + sigma^2) for eps/v models (the VP-normalized latent; ComfyUI's
    EPS.calculate_input with sigma_data = 1), and x itself for flow models (CONST)."""
    if parameterization == "flow":
        return x
    return x / torch.sqrt(1.0 + broadcast_sigma(sigma, x) ** 2)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma, parameterization: str) -> torch.Tensor:
    """x = alpha(sigma)*x0 + sigma*eps in ComfyUI's sampling space."""
    s = broadcast_sigma(sigma, x0)
    return alpha_for(parameterization, s) * x0 + s * noise
