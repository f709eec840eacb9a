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


# What the CFG combiner is told about a model besides PARAMETERIZATIONS (see SamplingForm.parameterization):
NOISE_FREE = "img2img"  # x carries no noise (ComfyUI's IMG_TO_IMG_FLOW, IMG_TO_IMG_VELOCITY): no alpha, no score
UNKNOWN = "unknown"  # a model_sampling that matches no known form
FORM_FREE_SPACES = ("x0", "velocity")  # prediction spaces that read no alpha: defined for every form


def alpha_for(parameterization: str, sigma: torch.Tensor) -> torch.Tensor:
    """alpha(sigma) of ComfyUI's sampling space: 1 for eps/v models, 1 - sigma for flow models. A noise-free or
    unknown form has no alpha: every use that reads it (rescale in eps or v space, classifier guidance, zero-init)
    is refused before sampling for those forms (rescale_space_problem, SamplingForm.problem), so the 1 returned
    for them is never read; it only keeps form-free computations (x0, velocity spaces) uniform."""
    if parameterization == "flow":
        return 1.0 - sigma
    if parameterization in ("eps", "v", NOISE_FREE, UNKNOWN):
        return torch.ones_like(sigma)
    raise ValueError(f"parameterization={parameterization!r}; accepted: {', '.join(PARAMETERIZATIONS)}")


def rescale_space_problem(parameterization: str, space: str) -> str | None:
    """Why CFG rescale in prediction space `space` is undefined for a model of this parameterization (None when
    it is defined). eps needs alpha (eps = (x - alpha*D)/sigma) and v is the VP conversion of alpha = 1 models:
    neither exists where x carries no noise or the form is unknown; x0 and velocity read no alpha."""
    if parameterization in (NOISE_FREE, UNKNOWN) and space not in FORM_FREE_SPACES + ("auto",):
        what = "x carries no noise" if parameterization == NOISE_FREE else "its model_sampling matches no known form"
        return (
            f"rescale_space={space!r} needs the model's alpha(sigma), and this model has none ({what}); "
            f"use rescale_space auto, x0 or velocity"
        )
    return None


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
    (alpha != 1), so the rescale is done on the x0 prediction D itself; so it is for forms without an alpha
    (noise-free or unknown: NOISE_FREE, UNKNOWN).
    """
    return "v" if parameterization in ("eps", "v") else "x0"


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
    calculate_input(sigma, 1) at a few sigmas (float64), matched by input_scaling_from_values. None when it is
    none of them (such a model is refused by the guidance)."""
    sig = torch.tensor(PROBE_SIGMAS, dtype=torch.float64)
    c = torch.stack(
        [
            calculate_input(s.reshape(1), torch.ones(1, 1, 1, 1, dtype=torch.float64))
            .reshape(())
            .to(device="cpu", dtype=torch.float64)
            for s in sig
        ]
    )
    return input_scaling_from_values(sig, c)


def _close(a: torch.Tensor, b, rtol: float = 1e-5, atol: float = 1e-7) -> bool:
    return bool(torch.allclose(a, torch.as_tensor(b, dtype=a.dtype).expand_as(a), rtol=rtol, atol=atol))


def input_scaling_from_values(sig: torch.Tensor, c: torch.Tensor) -> dict | None:
    """The INPUT_SCALINGS entry with c_in(sigma) = c at the sigmas `sig`: 1, 1/(1 + sigma), or
    1/sqrt(sigma^2 + sigma_data^2) with sigma_data^2 = 1/c_in^2 - sigma^2 the same at every sigma. None otherwise."""
    if not torch.isfinite(c).all() or (c <= 0).any():
        return None
    if _close(c, 1.0, atol=0):
        return {"kind": "identity"}
    if _close(c, 1.0 / (1.0 + sig), atol=0):
        return {"kind": "cosmos_rflow"}
    sd2 = 1.0 / c**2 - sig**2
    if (sd2 > 0).all() and _close(sd2, sd2[:1].expand_as(sd2), atol=0):
        return {"kind": "edm", "sigma_data": round(math.sqrt(float(sd2[0])), 6)}
    return None


# ---------------------------------------------------------------- the model's sampling form, learned by probing
# ComfyUI's model_sampling objects define the sampler's space by four affine maps (ComfyUI's comfy/model_sampling.py,
# 0.3.52 - 0.38), which nodes/sampling_facts.probe_model_sampling evaluates at PROBE_SIGMAS with known tensors:
#   noise_scaling(sigma, n, z)        = A(sigma)*n + B(sigma)*z    (start of sampling from noise n and latent z)
#   calculate_input(sigma, x)         = c_in(sigma)*x              (what the network reads)
#   calculate_denoised(sigma, out, x) = a(sigma)*x + b(sigma)*out   (the prediction type)
#   inverse_noise_scaling(sigma, y)   = p(sigma)*y + q(sigma)      (end of sampling)
# The sampler (k-diffusion's ODE dx/dsigma = (x - D)/sigma) keeps x = alpha*x0 + c*sigma*eps along the way exactly
# when alpha = 1 + k*sigma with A = c*sigma; the known forms are k = 0 (EPS, V_PREDICTION, EDM, V_PREDICTION_DDPM,
# X0, IMG_TO_IMG, COSMOS_RFLOW: alpha = 1, c = 1) and k = -1 (CONST, rectified flow: alpha = 1 - sigma, c = its
# noise_scale, e.g. 8 for HiDream-O1). Then Tweedie's formula (Efron 2011; Karras et al. 2022, arXiv 2206.00364,
# eq. 3 with noise std c*sigma) gives D = E[x0 | x] = (x + c^2 sigma^2 grad log p(x)) / alpha. A = 0 (IMG_TO_IMG_FLOW,
# IMG_TO_IMG_VELOCITY: x starts at the input latent and carries no noise) has no such relation.
PREDICTIONS = ("eps", "v", "edm", "v_ddpm", "x0", "x_minus_out", "cosmos_rflow", "affine")
INVERSES = ("identity", "flow", "one_minus", "affine")


def _inverse(values: dict) -> str:
    """Which INVERSES entry inverse_noise_scaling(sigma, y) = p*y + q is: identity (p = 1, q = 0; EPS and its kin),
    flow (p = 1/(1 - sigma), q = 0; CONST), one_minus (p = -1, q = 1; IMG_TO_IMG_FLOW), else affine."""
    sig, fit = values.get("inverse_sigma"), _affine_fit(values, "inverse")
    if sig is None or fit is None:
        return "affine"
    p, q = fit
    for name, (wp, wq) in {"identity": (1.0, 0.0), "flow": (1.0 / (1.0 - sig), 0.0), "one_minus": (-1.0, 1.0)}.items():
        if _close(p, wp) and _close(q, wq):
            return name
    return "affine"


class SamplingForm:
    """A model's sampling form, as fit_sampling_form learned it:
    name              ComfyUI's name of the form (its model_sampling class) when it is a known one;
    parameterization  "eps" | "v" | "flow" (alpha = 1, 1, 1 - sigma), NOISE_FREE or UNKNOWN;
    noise             c in x = alpha*x0 + c*sigma*eps (ComfyUI's noise_scale; 0 when x carries no noise);
    input_scaling     an INPUT_SCALINGS entry, or None when calculate_input is none of them;
    prediction        what the network predicts (PREDICTIONS; "affine": another affine formula, e.g. LCM's);
    inverse           inverse_noise_scaling, the end of sampling (INVERSES: "identity", "flow" y/(1 - sigma),
                      "one_minus" 1 - y, "affine" another): recorded, not needed by guidance (it acts on D);
    problem           None, or why x = alpha*x0 + c*sigma*eps does not hold for this model (then there is no
                      p(y | x, sigma) to guide by and no start noise to solve for: classifier guidance and
                      CFG-Zero* zero-init are refused, naming it)."""

    def __init__(self, name, parameterization, noise, input_scaling, prediction, problem=None, inverse="affine"):
        self.name, self.parameterization, self.noise = name, parameterization, float(noise)
        self.input_scaling, self.prediction, self.problem = input_scaling, prediction, problem
        self.inverse = inverse

    def alpha(self, sigma: torch.Tensor) -> torch.Tensor:
        return alpha_for(self.parameterization, sigma)

    def describe(self) -> str:
        """The form as text: 'CONST: x = (1 - sigma)*x0 + 8*sigma*eps'."""
        if self.problem is not None:
            return f"{self.name} ({self.problem})"
        x0 = "(1 - sigma)*x0" if self.parameterization == "flow" else "x0"
        c = "" if self.noise == 1.0 else f"{self.noise:g}*"
        return f"{self.name}: x = {x0} + {c}sigma*eps"

    def __repr__(self):
        return (
            f"SamplingForm({self.name!r}, {self.parameterization!r}, noise={self.noise:g}, "
            f"input_scaling={self.input_scaling!r}, prediction={self.prediction!r}, inverse={self.inverse!r}, "
            f"problem={self.problem!r})"
        )


def _affine_fit(values: dict, key: str):
    """(slope-1 coefficient, slope-2 coefficient) of a probed affine map, or None when the probe says it is not
    affine (its residual) or not finite."""
    one, two, res = values.get(f"{key}_1"), values.get(f"{key}_2"), values.get(f"{key}_residual")
    if one is None or two is None or res is None:
        return None
    if not (torch.isfinite(one).all() and torch.isfinite(two).all()):
        return None
    scale = 1.0 + one.abs().max() + two.abs().max()
    if float(res.max()) > 1e-6 * float(scale):
        return None
    return one, two


def _prediction(sig, a, b, input_scaling) -> str:
    """Which PREDICTIONS entry D = a*x + b*out is (ComfyUI's calculate_denoised of each form):
    eps / CONST velocity: D = x - sigma*out;  x0: D = out;  IMG_TO_IMG_VELOCITY: D = x - out;
    v / EDM (Karras et al. 2022 Table 1, sigma_data sd): D = sd^2/(sigma^2 + sd^2)*x -/+ sigma*sd/sqrt(sigma^2 + sd^2)*out;
    V_PREDICTION_DDPM: D = (x - sigma*out)/sqrt(sigma^2 + 1);  COSMOS_RFLOW: D = (1 - t)*x - t*out, t = sigma/(1 + sigma)."""
    sd = float(input_scaling["sigma_data"]) if input_scaling and input_scaling.get("kind") == "edm" else 1.0
    root = torch.sqrt(sig**2 + sd**2)
    t = sig / (1.0 + sig)
    known = {
        "eps": (1.0, -sig),
        "x0": (0.0, 1.0),
        "x_minus_out": (1.0, -1.0),
        "v": (sd**2 / root**2, -sig * sd / root),
        "edm": (sd**2 / root**2, sig * sd / root),
        "v_ddpm": (1.0 / torch.sqrt(sig**2 + 1), -sig / torch.sqrt(sig**2 + 1)),
        "cosmos_rflow": (1.0 - t, -t),
    }
    for name, (wa, wb) in known.items():
        if _close(a, wa) and _close(b, wb):
            return name
    return "affine"


# (alpha kind, input scaling kind, prediction) -> ComfyUI's name of the form
_NAMES = {
    ("1", "edm", "eps"): "EPS",
    ("1", "edm", "v"): "V_PREDICTION",
    ("1", "edm", "edm"): "EDM",
    ("1", "edm", "x0"): "X0",
    ("1", "identity", "v_ddpm"): "V_PREDICTION_DDPM",
    ("1", "identity", "x0"): "IMG_TO_IMG",
    ("1", "cosmos_rflow", "cosmos_rflow"): "COSMOS_RFLOW",
    ("1-sigma", "identity", "eps"): "CONST",
    ("none", "identity", "x0"): "IMG_TO_IMG_FLOW",
    ("none", "identity", "x_minus_out"): "IMG_TO_IMG_VELOCITY",
}


def fit_sampling_form(values: dict, class_name: str = "model_sampling") -> SamplingForm:
    """The SamplingForm of a model_sampling from what it answered at PROBE_SIGMAS (nodes/sampling_facts.probe_model_sampling):
    `values` holds float64 tensors over values["sigma"]: noise_1 = A, noise_2 = B (noise_scaling), c_in,
    denoised_1 = b, denoised_2 = a (calculate_denoised's coefficients of the output and of x), inverse_1 = p,
    inverse_2 = q (inverse_noise_scaling, over values["inverse_sigma"]), each with its affinity residual, or "error" (the text of
    an exception the object raised). Fitted (see the block comment above):
      A = 0, B = 1                       -> no noise (IMG_TO_IMG_FLOW, IMG_TO_IMG_VELOCITY);
      A = c*sigma, c > 0 the same at every sigma, and B = 1 -> alpha = 1; B = 1 - sigma -> alpha = 1 - sigma;
      anything else                      -> UNKNOWN, with a problem naming what was found."""
    sig = values["sigma"]
    where = f"asked at sigma = {', '.join(f'{float(s):g}' for s in sig)}"
    if values.get("error"):
        return SamplingForm(
            class_name,
            UNKNOWN,
            float("nan"),
            None,
            "affine",
            f"{where}: asking it failed ({values['error']}); it matches no known model_sampling form",
        )
    input_scaling = input_scaling_from_values(sig, values["c_in"]) if values.get("c_in") is not None else None
    den = _affine_fit(values, "denoised")
    prediction = _prediction(sig, den[1], den[0], input_scaling) if den is not None else None
    noise = _affine_fit(values, "noise")
    if noise is None:
        return SamplingForm(
            class_name,
            UNKNOWN,
            float("nan"),
            input_scaling,
            prediction or "affine",
            f"{where}: its noise_scaling is not an affine, finite map of (noise, latent); it matches "
            "no known model_sampling form",
        )
    a_n, b_n = noise
    c = a_n / sig
    if _close(a_n, 0.0) and _close(b_n, 1.0):
        alpha_kind, param, coef = "none", NOISE_FREE, 0.0
    elif bool((c > 0).all()) and _close(c, c[:1].expand_as(c)) and (_close(b_n, 1.0) or _close(b_n, 1.0 - sig)):
        alpha_kind = "1" if _close(b_n, 1.0) else "1-sigma"
        coef = round(float(c.mean()), 6)
        param = "flow" if alpha_kind == "1-sigma" else ("v" if prediction in ("v", "edm", "v_ddpm") else "eps")
    else:
        found = ", ".join(f"x = {float(b):.4g}*x0 + {float(a):.4g}*noise" for a, b in zip(a_n, b_n))
        return SamplingForm(
            class_name,
            UNKNOWN,
            float("nan"),
            input_scaling,
            prediction or "affine",
            f"{where}: its noise_scaling gives {found}, none of the known forms x = x0 + c*sigma*noise "
            "(EPS, V_PREDICTION, EDM, ...) and x = (1 - sigma)*x0 + c*sigma*noise (CONST)",
        )
    if prediction is None:
        return SamplingForm(
            class_name,
            UNKNOWN,
            coef,
            input_scaling,
            "affine",
            f"{where}: its calculate_denoised is not an affine, finite map of (model output, x); it "
            "matches no known model_sampling form",
        )
    name = _NAMES.get((alpha_kind, (input_scaling or {}).get("kind"), prediction), class_name)
    if param == NOISE_FREE:
        return SamplingForm(
            name,
            param,
            0.0,
            input_scaling,
            prediction,
            "its noise_scaling adds no noise (x is the input latent at every sigma), so x is "
            "not a noisy sample of the data: there is no p(y | x, sigma) and no start noise",
            _inverse(values),
        )
    return SamplingForm(name, param, coef, input_scaling, prediction, inverse=_inverse(values))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma, parameterization: str) -> torch.Tensor:
    """x = alpha(sigma)*x0 + sigma*eps in ComfyUI's sampling space."""
    s = per_sample(sigma, x0)
    return alpha_for(parameterization, s) * x0 + s * noise
