"""Normalized Attention Guidance (NAG; Chen et al. 2025, arXiv 2505.21179, eq. 5-7): a negative prompt that acts
inside attention instead of on the prediction, so it works where CFG is off (guidance-distilled models at cfg 1).
With Z+ and Z- the attention outputs of the positive and the negative prompt and s = 1 + phi:

    Z~ = s Z+ - (s - 1) Z-                         (= Z+ + phi (Z+ - Z-), extrapolation)
    r  = ||Z~||_1 / ||Z+||_1                        (per token, over the feature dim)
    Z^ = Z~ min(r, tau) / r                         (normalization: the extrapolation's norm capped at tau |Z+|)
    Z  = alpha Z^ + (1 - alpha) Z+                  (blend)

Both norms are clamped below at NORM_EPS (as ComfyUI's NAGuidance does): a token whose features are all 0 keeps
them instead of turning NaN. phi = 0 or alpha = 0 gives Z = Z+.

Two forms (where the prompt's attention outputs come from):
- paper: the negative prompt enters only where attention reads the text: Z- = Attn(Q, K-, V-) with the positive
  row's own queries and the negative prompt's keys and values, on the cross-attention output before its output
  projection (the authors' attention processor); the positive row alone, no row of the negative prompt. Where text
  and image tokens share one attention (joint attention: SD3, Flux, Qwen-Image, Lumina 2...), the text is a stream
  that every block updates: Z+ and Z- are the image tokens' attention outputs with the positive's and with the
  negative prompt's text stream, over one shared image stream that carries Z.
- comfyui: ComfyUI's NAGuidance (comfy_extras/nodes_nag.py, 0.33): a full row of the negative prompt in the same
  batch; Z+ and Z- are the self-attention outputs (after the output projection) of the two rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import GuidanceConfigError, require_finite

FORMS = ("paper", "comfyui")
NORM_EPS = 1e-6
TAU_RANGE = (1.0, 10.0)  # ComfyUI's NAGuidance accepts [1, 10]
ALPHA_RANGE = (0.0, 1.0)
TAU_DEFAULT, ALPHA_DEFAULT = 2.5, 0.25  # the paper's settings for Flux and SD3.5 (sec. 5)


@dataclass(frozen=True)
class NAGSettings:
    """A NAG term's own settings besides its weight phi (= ComfyUI's nag_scale - 1) and schedule."""

    form: str = "paper"
    tau: float = TAU_DEFAULT
    alpha: float = ALPHA_DEFAULT

    def __post_init__(self):
        if self.form not in FORMS:
            raise GuidanceConfigError(f"NAG form={self.form!r}; accepted: {', '.join(FORMS)}")
        if not TAU_RANGE[0] <= require_finite("nag tau", self.tau) <= TAU_RANGE[1]:
            raise GuidanceConfigError(
                f"nag tau={self.tau}; use a value in [{TAU_RANGE[0]:g}, {TAU_RANGE[1]:g}] (the cap of |Z~| / |Z+|)"
            )
        if not ALPHA_RANGE[0] <= require_finite("nag alpha", self.alpha) <= ALPHA_RANGE[1]:
            raise GuidanceConfigError(f"nag alpha={self.alpha}; use a value in [0, 1] (0 = no effect, 1 = full)")


def nag_attention(z_pos: torch.Tensor, z_neg: torch.Tensor, scale: float, tau: float, alpha: float) -> torch.Tensor:
    """NAG of the module docstring with s = `scale` = 1 + phi, over the last dim (per token)."""
    guided = z_pos * scale - z_neg * (scale - 1.0)
    norm_pos = torch.norm(z_pos, p=1, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    norm_guided = torch.norm(guided, p=1, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    ratio = norm_guided / norm_pos
    normalized = guided * (torch.minimum(ratio, torch.full_like(ratio, tau)) / ratio)
    return normalized * alpha + z_pos * (1.0 - alpha)
