"""Exact denoiser and exact class posterior of an isotropic Gaussian mixture.

Data x0 ~ sum_k pi_k N(mu_k, tau^2 I); noisy x = alpha*x0 + sigma*eps. Then
  p(x | k)        = N(x; alpha*mu_k, v I),  v = alpha^2 tau^2 + sigma^2
  p(k | x)        = softmax_k(log pi_k - ||x - alpha*mu_k||^2 / (2 v))
  E[x0 | x, k]    = mu_k + (alpha tau^2 / v) (x - alpha*mu_k)
  E[x0 | x]       = sum_k p(k | x) E[x0 | x, k]
(alpha = 1 for eps and v models in ComfyUI's space, 1 - sigma for flow models.)
"""

from __future__ import annotations

import torch

from ..parameterization import per_sample


class GaussianMixture:
    def __init__(self, means: torch.Tensor, tau: float, priors: torch.Tensor | None = None):
        self.means = means.float()
        self.tau = float(tau)
        k = means.shape[0]
        self.priors = torch.full((k,), 1.0 / k) if priors is None else priors.float() / priors.sum()

    def class_logits(self, x, sigma, alpha, priors=None):
        """log pi_k - ||x - alpha mu_k||^2 / (2 v), [B, K] (priors: [K] or [B, K])."""
        sigma, alpha = per_sample(sigma, x), per_sample(alpha, x)
        v = (alpha**2 * self.tau**2 + sigma**2).reshape(-1, 1)
        mu = self.means.to(x)
        d2 = ((x[:, None] - alpha[:, None] * mu[None]) ** 2).flatten(2).sum(-1)
        pri = (self.priors if priors is None else priors).to(x)
        return torch.log(pri.clamp(min=1e-30)) - d2 / (2 * v)

    def class_denoise(self, x, sigma, alpha):
        """E[x0 | x, k] for every k: [B, K, ...]."""
        sigma, alpha = per_sample(sigma, x), per_sample(alpha, x)
        v = alpha**2 * self.tau**2 + sigma**2
        mu = self.means.to(x)[None]
        return mu + (alpha * self.tau**2 / v)[:, None] * (x[:, None] - alpha[:, None] * mu)

    def denoise(self, x, sigma, alpha, priors=None):
        """E[x0 | x] under the given priors (default: the mixture's)."""
        r = torch.softmax(self.class_logits(x, sigma, alpha, priors), dim=1)
        return torch.einsum("bk,bk...->b...", r, self.class_denoise(x, sigma, alpha))


class GMMClassifier(torch.nn.Module):
    """The exact noise-aware classifier p(k | x, sigma) of a GaussianMixture, in the classifier
    interface of Guidance Lab: forward(model_input, sigma) -> logits, where model_input is x after
    the model's input scaling (c_in*x = x/sqrt(1+sigma^2) for eps/v models, x for flow models)."""

    def __init__(self, gmm: GaussianMixture, parameterization: str):
        super().__init__()
        self.gmm, self.parameterization = gmm, parameterization

    def forward(self, x_in, sigma):
        s = per_sample(sigma, x_in)
        if self.parameterization == "flow":
            x, alpha = x_in, 1.0 - s
        else:
            x, alpha = x_in * torch.sqrt(1.0 + s**2), torch.ones_like(s)
        return self.gmm.class_logits(x, s, alpha)
