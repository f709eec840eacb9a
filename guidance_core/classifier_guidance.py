"""Classifier guidance with a noise-aware classifier (Dhariwal & Nichol 2021, arXiv 2105.05233).

In ComfyUI's sampling space x = alpha*x0 + c*sigma*eps, Tweedie's formula gives
    E[x0 | x] = (x + c^2 sigma^2 * grad_x log p(x)) / alpha,
and Bayes gives grad_x log p(x | y) = grad_x log p(x) + grad_x log p(y | x, sigma). Hence the
class-conditional denoised prediction is the unconditional one shifted along the classifier's
gradient (guided-diffusion's `condition_score`, written for D instead of eps):
    D' = D + s * (c^2 sigma^2 / alpha) * grad_x log p(y | x, sigma)
for x = alpha*x0 + c*sigma*eps (c: the model's noise coefficient, 1 unless ComfyUI's noise_scale says otherwise),
with s = 1 exactly Bayes, s > 1 sharper (the paper's "classifier scale"). Every k-diffusion-style
sampler consumes D, so this one shift serves all samplers.

Targets: a weight vector w over the labels, objective sum_y w_y log p(y | x, sigma): one label
(w = one-hot), a weighted set, and labels to avoid (negative weights). One vector per batch item.

What the classifier reads (its `wants`), one shift for all:
  - NOISY_INPUT: a noise-aware classifier of the model input c_in*x and sigma (Dhariwal & Nichol);
    g = grad_x log p(y | x, sigma), exact.
  - DENOISED_DETACHED: a classifier of clean images reads the denoised prediction D (e.g. zero-shot
    CLIP, classifiers/clip.py). D is treated as a leaf and its gradient is used in place of grad_x:
        D' = D + s * (sigma^2 / alpha) * grad_D log p(y | D).
    One classifier forward/backward, no extra model call. Approximation: the exact gradient is
    J_D(x)^T grad_D log p(y|D), and J_D(x) ~ I/alpha only at low noise; at high noise dD/dx is much
    smaller than 1/alpha (for data of variance v and alpha = 1: v/(v + sigma^2)), so this path
    over-steers early steps: use sigma_hi or rms_clamp there.
  - DENOISED_THROUGH_MODEL: the same classifier of D, with the gradient taken through the diffusion
    model (CLIP-guided diffusion as in Crowson 2021 / k-diffusion's cond_fn):
        g = grad_x log p(y | D(x)) = J_D(x)^T grad_D log p(y | D).
    The caller supplies D(x) differentiably (a fresh model call with gradients: roughly 3x the cost
    of a model call per guided step). The classifier still reads the sampler's D (straight-through:
    value D, Jacobian of the recomputed D(x)), so both paths see the same image.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .errors import GuidanceConfigError, require_finite
from .parameterization import per_sample
from .schedules import RANGES as SCHEDULE_RANGES
from .schedules import SIGMA_NO_BOUND, StepCounter, in_window

SCALE_DEFAULT, SCALE_MAX = 1.0, 100.0
# Defaults and ranges of the guidance settings: the node schemas read them here (one home).
DEFAULTS = {
    "scale": SCALE_DEFAULT,
    "sigma_lo": 0.0,
    "sigma_hi": SIGMA_NO_BOUND,
    "every_n": 1,
    "rms_clamp": 0.0,
    "dtype": "float32",
}
RANGES = {"scale": (0.0, SCALE_MAX), "sigma": SCHEDULE_RANGES["sigma"], "every_n": (1, 100), "rms_clamp": (0.0, 1.0e4)}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MIN_ALPHA = 1e-3  # below this (flow models at sigma ~ 1) x carries no signal: the step is left unguided
NOISY_INPUT, DENOISED_DETACHED, DENOISED_THROUGH_MODEL = "noisy_input", "denoised_detached", "denoised_through_model"
WANTS = (NOISY_INPUT, DENOISED_DETACHED, DENOISED_THROUGH_MODEL)


@dataclass(frozen=True)
class ClassifierGuidanceConfig:
    scale: float = SCALE_DEFAULT  # s; 0 = off (exactly the unguided output)
    sigma_lo: float = DEFAULTS["sigma_lo"]  # guide only for sigma_lo < sigma <= sigma_hi (schedules.in_window)
    sigma_hi: float = DEFAULTS["sigma_hi"]  # SIGMA_NO_BOUND (or inf) = no upper bound
    every_n: int = DEFAULTS["every_n"]  # guide on steps 0, N, 2N, ... (schedules.StepCounter's steps)
    rms_clamp: float = DEFAULTS["rms_clamp"]  # clamp of the gradient's RMS per sample; 0 = off
    dtype: str = DEFAULTS["dtype"]  # compute dtype of the classifier forward/backward

    def __post_init__(self):
        require_finite("scale", self.scale)
        lo = require_finite("sigma_lo", self.sigma_lo)
        if math.isnan(self.sigma_hi) or lo > self.sigma_hi:
            raise GuidanceConfigError(f"sigma_lo={lo} must be <= sigma_hi={self.sigma_hi}")
        if int(self.every_n) != self.every_n or self.every_n < 1:
            raise GuidanceConfigError(f"every_n={self.every_n}; use an integer >= 1 (1 = every step)")
        if require_finite("rms_clamp", self.rms_clamp) < 0:
            raise GuidanceConfigError(f"rms_clamp={self.rms_clamp}; use a value >= 0 (0 = off)")
        if self.dtype not in DTYPES:
            raise GuidanceConfigError(f"dtype={self.dtype!r}; accepted: {', '.join(DTYPES)}")


def parse_targets(text: str, labels: Sequence[str]) -> list[dict]:
    """Parse a target text into one {label: weight} dict per batch item.

    Items are separated by newlines or ';' (item i guides batch item i; one item guides all).
    Inside an item: comma-separated 'label' or 'label:weight' (weight 1 by default; negative =
    avoid), e.g. "cat" or "cat:1, dog:-0.5\\nbird". Unknown labels raise an error listing the known ones.
    """
    known = {str(lb).strip().lower(): str(lb) for lb in labels}
    items = [it for it in text.replace(";", "\n").split("\n") if it.strip()]
    if not items:
        raise GuidanceConfigError(f"target is empty; name one of the labels: {', '.join(map(str, labels))}")
    out = []
    for i, item in enumerate(items):
        weights: dict = {}
        for part in (p for p in item.split(",") if p.strip()):
            name, w = part.strip(), 1.0
            if ":" in name:
                head, tail = name.rsplit(":", 1)
                try:
                    w, name = float(tail), head.strip()
                except ValueError:
                    pass
            require_finite(f"target weight of {name!r}", w)
            key = name.lower()
            if key not in known:
                raise GuidanceConfigError(
                    f"unknown label {name!r} in target item {i + 1}; known labels: {', '.join(map(str, labels))}"
                )
            weights[known[key]] = weights.get(known[key], 0.0) + w
        out.append(weights)
    return out


def target_matrix(targets: list[dict], labels: Sequence[str]) -> torch.Tensor:
    """[items, K] weight matrix in label order."""
    index = {str(lb): k for k, lb in enumerate(labels)}
    w = torch.zeros(len(targets), len(labels))
    for i, t in enumerate(targets):
        for name, v in t.items():
            w[i, index[name]] = v
    return w


def batch_weights(weights: torch.Tensor, batch: int) -> torch.Tensor:
    """One row per batch item: a single row is shared; otherwise the counts must match."""
    if weights.shape[0] == 1:
        return weights.expand(batch, -1)
    if weights.shape[0] != batch:
        raise GuidanceConfigError(
            f"target has {weights.shape[0]} items but the batch has {batch} images; "
            "give one target for all or one per image"
        )
    return weights


def log_prob_gradient(
    classifier: Callable,
    model_input: Callable,
    x: torch.Tensor,
    sigma: torch.Tensor,
    weights: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """g = grad_x sum_y w_y log p(y | x, sigma), with log p = log_softmax(classifier(model_input(x), sigma)).

    Generic in what x is: the noisy sample (model_input = the model's input scaling), the denoised
    prediction (model_input = identity) or x through the diffusion model (model_input = D(x)).
    Works under ComfyUI's inference mode: gradients are computed with inference mode off,
    on a fresh copy of x (the sampler's x is never modified)."""
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        sig = sigma.detach().clone()
        inp = model_input(xg)
        if dtype != torch.float32:
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                logits = classifier(inp, sig)
        else:
            logits = classifier(inp, sig)
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        objective = (logp * weights.detach().clone().to(logp)).sum()
        (grad,) = torch.autograd.grad(objective, xg)
    return grad.detach()


def straight_through(value: torch.Tensor, differentiable: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is `value` and whose gradient is that of `differentiable`:
    d + (value - d).detach()  (the straight-through estimator, Bengio et al. 2013, arXiv 1308.3432)."""
    return differentiable + (value.detach().to(differentiable) - differentiable.detach())


def clamp_rms(grad: torch.Tensor, max_rms: float) -> torch.Tensor:
    """Scale each sample's gradient down so that sqrt(mean(g^2)) <= max_rms (0 = off)."""
    if max_rms <= 0:
        return grad
    rms = per_sample(grad.pow(2).flatten(1).mean(1).sqrt(), grad)
    return grad * torch.clamp(max_rms / rms.clamp(min=1e-30), max=1.0)


def shift_denoised(
    denoised: torch.Tensor,
    grad: torch.Tensor,
    sigma: torch.Tensor,
    alpha: torch.Tensor,
    scale: float,
    noise: float = 1.0,
) -> torch.Tensor:
    """D' = D + s * (c^2 sigma^2 / alpha) * g   (Dhariwal & Nichol 2021, score form in D-space), for
    x = alpha*x0 + c*sigma*eps: Tweedie's formula E[x0 | x, y] = (x + c^2 sigma^2 grad log p(x, y)) / alpha makes
    the class-conditional D the unconditional one plus (c^2 sigma^2 / alpha) grad_x log p(y | x). c is the model's
    noise coefficient (ComfyUI's noise_scale; 1 for every model without one)."""
    sigma, alpha = per_sample(sigma, denoised), per_sample(alpha, denoised)
    return denoised + scale * (noise**2 * sigma**2 / alpha) * grad.to(denoised)


class ClassifierGuidance:
    """Applies the shift at the steps the config selects; leaves a step unguided (warning once)
    when the gradient is not finite. `wants` (default: the classifier's own `wants` attribute, else
    NOISY_INPUT) says what the classifier reads; see the module docstring."""

    def __init__(
        self, classifier: Callable, weights: torch.Tensor, config: ClassifierGuidanceConfig, wants: str | None = None
    ):
        self.classifier, self.weights, self.config = classifier, weights, config
        self.wants = wants if wants is not None else getattr(classifier, "wants", NOISY_INPUT)
        if self.wants not in WANTS:
            raise GuidanceConfigError(f"classifier wants={self.wants!r}; accepted: {', '.join(WANTS)}")
        self.warned = False
        self.steps = StepCounter()  # which step each call is in; reset(sampler name) when a run starts

    def active(self, sigma: float, step: int | None) -> bool:
        """Guided at this call: scale > 0, sigma in the window, and step i (StepCounter: every call of a
        multi-stage sampler's step has the same i) with i % every_n == 0; every call without a step."""
        c = self.config
        if c.scale == 0 or not in_window(sigma, c.sigma_lo, c.sigma_hi):
            return False
        return step is None or step % c.every_n == 0

    def gradient(self, denoised, x, sigma, model_input, weights, denoise_fn=None) -> torch.Tensor:
        """g of the shift, per `wants`: grad_x log p(y|x, sigma) | grad_D log p(y|D) | grad_x log p(y|D(x))."""
        dtype = DTYPES[self.config.dtype]
        if self.wants == NOISY_INPUT:
            return log_prob_gradient(self.classifier, model_input, x, sigma, weights, dtype)
        if self.wants == DENOISED_DETACHED:
            return log_prob_gradient(self.classifier, lambda d: d, denoised, sigma, weights, dtype)
        if denoise_fn is None:
            raise GuidanceConfigError(
                "the gradient path through the model needs a differentiable D(x) "
                "(denoise_fn); use the detached path here"
            )
        return log_prob_gradient(
            self.classifier, lambda xx: straight_through(denoised, denoise_fn(xx)), x, sigma, weights, dtype
        )

    def __call__(self, denoised, x, sigma, alpha, model_input, sample_sigmas=None, denoise_fn=None, noise: float = 1.0):
        """D' = D + s*(c^2 sigma^2/alpha)*g, c = `noise` (x = alpha*x0 + c*sigma*eps, see shift_denoised).
        denoise_fn(x) -> D(x) with gradients, for DENOISED_THROUGH_MODEL. sample_sigmas: this run's sigmas,
        for every_n (call once per model call, in order)."""
        sig = float(sigma.max())
        if not self.active(sig, self.steps.step_of(sig, sample_sigmas)) or float(alpha.min()) < MIN_ALPHA:
            return denoised
        w = batch_weights(self.weights, x.shape[0]).to(x.device)
        grad = self.gradient(denoised, x, sigma, model_input, w, denoise_fn)
        if not torch.isfinite(grad).all():
            if not self.warned:
                logging.warning(
                    "Guidance Lab: classifier gradient is not finite at sigma=%.4g; this step is left unguided", sig
                )
                self.warned = True
            return denoised
        grad = clamp_rms(grad, self.config.rms_clamp)
        return shift_denoised(denoised, grad, sigma, alpha, self.config.scale, noise)


def make_autograd_safe(module: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """Move `module` to `device` and replace inference tensors among its weights by normal ones.

    Tensors created under torch.inference_mode (as ComfyUI runs nodes) cannot be saved for
    backward; a copy made with inference mode off can. Done in place, once per device move."""
    with torch.inference_mode(False):
        if device is not None:
            first = next(iter(module.parameters()), None)
            if first is not None and first.device != device:
                module.to(device)
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.is_inference():
                    mod._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_inference():
                    mod._buffers[name] = b.detach().clone()
    return module


@contextlib.contextmanager
def autograd_safe_weights(*modules: torch.nn.Module):
    """Inside the block, every inference tensor among the modules' parameters and buffers is replaced
    by a normal copy (same values, dtype and device); on exit the original tensors are put back, so
    the modules are unchanged outside the block. For modules that are not ours (ComfyUI's VAE and
    diffusion model, whose weights are inference tensors): autograd can save the copies for backward,
    and the graph keeps them alive until the backward pass. Costs one copy of those weights, transiently.
    Tensors shared between modules (tied weights) share one copy."""
    swapped, copies = [], {}
    try:
        with torch.inference_mode(False):
            for root in modules:
                for mod in root.modules():
                    for store in (mod._parameters, mod._buffers):
                        for name, t in list(store.items()):
                            if t is None or not t.is_inference():
                                continue
                            new = copies.get(id(t))
                            if new is None:
                                new = t.detach().clone()
                                if isinstance(t, torch.nn.Parameter):
                                    new = torch.nn.Parameter(new, requires_grad=False)
                                copies[id(t)] = new
                            swapped.append((store, name, t))
                            store[name] = new
        yield len(swapped)
    finally:
        for store, name, t in reversed(swapped):
            store[name] = t
