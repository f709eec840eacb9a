"""ComfyUI's model_sampling forms on the exact Gaussian-mixture model, for tests and the compatibility matrix.

Each form is built as ComfyUI's own nodes build it (ModelSamplingDiscrete, ModelNoiseScale) where the running ComfyUI
has the class or option; where it lacks one (0.3.75 has no IMG_TO_IMG_FLOW, no noise_scale), the same formulas
(ComfyUI 0.33's / 0.38's comfy/model_sampling.py) are written here as a subclass and patched in as those nodes do.
The exact world (NoiseScaled, ExactClassifier) states each form's alpha(sigma) and noise coefficient itself,
independent of the pack's probe (nodes/sampling_facts.py sampling_form).
"""

from __future__ import annotations

import torch

from . import comfy_host as H

NOISE_SCALE = 8.0  # HiDream-O1 base


def comfy_model_sampling():
    H.boot()
    import comfy.model_sampling

    return comfy.model_sampling


def per_sample(sigma, like):
    """ComfyUI's reshape_sigma: a scalar stays a scalar, [B] becomes [B, 1, 1, ...]."""
    return sigma.view(()) if sigma.nelement() == 1 else sigma.view(sigma.shape[:1] + (1,) * (like.ndim - 1))


def img_to_img_flow_class():
    """ComfyUI's IMG_TO_IMG_FLOW (0.33: Wan FlowRVS), or the same formulas where this ComfyUI lacks it."""
    MS = comfy_model_sampling()
    if hasattr(MS, "IMG_TO_IMG_FLOW"):
        return MS.IMG_TO_IMG_FLOW

    class IMG_TO_IMG_FLOW(MS.CONST):  # ComfyUI 0.33's comfy/model_sampling.py
        def calculate_denoised(self, sigma, model_output, model_input):
            return model_output

        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return latent_image

        def inverse_noise_scaling(self, sigma, latent):
            return 1.0 - latent

    return IMG_TO_IMG_FLOW


def img_to_img_velocity_class():
    """ComfyUI 0.38's IMG_TO_IMG_VELOCITY (the same formulas where this ComfyUI lacks it)."""
    MS = comfy_model_sampling()
    if hasattr(MS, "IMG_TO_IMG_VELOCITY"):
        return MS.IMG_TO_IMG_VELOCITY

    class IMG_TO_IMG_VELOCITY(MS.CONST):  # ComfyUI 0.38's comfy/model_sampling.py
        def calculate_denoised(self, sigma, model_output, model_input):
            return model_input - model_output

        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return latent_image

    return IMG_TO_IMG_VELOCITY


def v_prediction_ddpm_class():
    """ComfyUI 0.33's V_PREDICTION_DDPM (CogVideoX; the same formulas where this ComfyUI lacks it)."""
    MS = comfy_model_sampling()
    if hasattr(MS, "V_PREDICTION_DDPM"):
        return MS.V_PREDICTION_DDPM

    class V_PREDICTION_DDPM:  # ComfyUI 0.33's comfy/model_sampling.py
        def calculate_input(self, sigma, noise):
            return noise

        def calculate_denoised(self, sigma, model_output, model_input):
            sigma = per_sample(sigma, model_output)
            return model_input / (sigma**2 + 1.0) ** 0.5 - model_output * sigma / (sigma**2 + 1.0) ** 0.5

        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            sigma = per_sample(sigma, noise)
            return noise * (torch.sqrt(1.0 + sigma**2.0) if max_denoise else sigma) + latent_image

        def inverse_noise_scaling(self, sigma, latent):
            return latent

    return V_PREDICTION_DDPM


def const_with_noise_scale_class():
    """ComfyUI's CONST where it reads noise_scale (0.33+), else 0.33's formula x = sigma*(s*n) + (1 - sigma)*z."""
    MS = comfy_model_sampling()
    if hasattr(MS.ModelSamplingDiscreteFlow, "set_noise_scale"):
        return MS.CONST

    class CONST(MS.CONST):  # ComfyUI 0.33's CONST.noise_scaling
        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            sigma = per_sample(sigma, noise)
            return sigma * (getattr(self, "noise_scale", 1.0) * noise) + (1.0 - sigma) * latent_image

    return CONST


class MadeUp:
    """A model_sampling that matches no known form: variance-exploding noise of std sigma^2."""

    def calculate_input(self, sigma, noise):
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * per_sample(sigma, model_output)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return per_sample(sigma, noise) ** 2 * noise + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


def with_sampling(model, base, kind):
    """`model` with model_sampling = class(base, kind), built on its config and patched in as ComfyUI's
    ModelSampling* nodes do (a clone with an object patch)."""

    class ModelSamplingAdvanced(base, kind):
        pass

    m = model.clone()
    m.add_object_patch("model_sampling", ModelSamplingAdvanced(model.model.model_config))
    return m


def has_img_to_img_flow() -> bool:
    return hasattr(comfy_model_sampling(), "IMG_TO_IMG_FLOW")


def has_noise_scale() -> bool:
    return "ModelNoiseScale" in H.boot().NODE_CLASS_MAPPINGS


def img_to_img_flow(model):
    """ComfyUI's ModelSamplingDiscrete node with sampling 'img_to_img_flow' where it has that option."""
    if has_img_to_img_flow():
        return H.run_node("ModelSamplingDiscrete", model=model, sampling="img_to_img_flow", zsnr=False)[0]
    return with_sampling(model, comfy_model_sampling().ModelSamplingDiscrete, img_to_img_flow_class())


def img_to_img_velocity(model):
    return with_sampling(model, comfy_model_sampling().ModelSamplingDiscrete, img_to_img_velocity_class())


def v_prediction_ddpm(model):
    return with_sampling(model, comfy_model_sampling().ModelSamplingDiscrete, v_prediction_ddpm_class())


def made_up(model):
    return with_sampling(model, comfy_model_sampling().ModelSamplingDiscrete, MadeUp)


def noise_scaled(model, scale=NOISE_SCALE):
    """ComfyUI's ModelNoiseScale node where it exists (0.33+), else its construction with 0.33's CONST formula."""
    if has_noise_scale():
        return H.run_node("ModelNoiseScale", model=model, noise_scale=scale)[0]
    orig = model.get_model_object("model_sampling")
    m = with_sampling(model, comfy_model_sampling().ModelSamplingDiscreteFlow, const_with_noise_scale_class())
    ms = m.get_model_object("model_sampling")
    ms.set_parameters(shift=orig.shift, multiplier=orig.multiplier)
    ms.noise_scale = float(scale)
    return m


class NoiseScaled:
    """A GaussianMixture seen through noise of std c*sigma: denoise(x, sigma, alpha) = E[x0 | x] for
    x = alpha*x0 + c*sigma*eps (the demo denoiser passes the sampler's sigma)."""

    def __init__(self, gmm, c):
        self.gmm, self.c = gmm, c
        self.means, self.priors = gmm.means, gmm.priors

    def denoise(self, x, sigma, alpha, priors=None):
        return self.gmm.denoise(x, self.c * sigma, alpha, priors)


class ExactClassifier(torch.nn.Module):
    """p(k | x, sigma) of the mixture for x = alpha(sigma)*x0 + c*sigma*eps, reading c_in(sigma)*x (each form's
    own statement, independent of the pack's probe)."""

    def __init__(self, gmm, alpha, c=1.0, c_in=None):
        super().__init__()
        self.gmm, self.alpha_fn, self.c = gmm, alpha, c
        self.c_in = c_in or torch.ones_like

    def forward(self, x_in, sigma):
        s = sigma.reshape(-1, *([1] * (x_in.ndim - 1))).to(x_in)
        return self.gmm.class_logits(x_in / self.c_in(s), self.c * s, self.alpha_fn(s))


def flow_alpha(sigma):
    return 1.0 - sigma


def unit_alpha(sigma):
    return torch.ones_like(sigma)


def gmm_world(means, tau, priors, param="eps", model_type=None, noise=1.0):
    """(MODEL, GaussianMixture): the demo's exact denoiser as a real ComfyUI MODEL, seeing noise of std
    noise*sigma."""
    model = H.demo_module().gmm_model(means, tau, priors, param, None, model_type)
    gmm = H.pack_module("guidance_core.reference.gmm").GaussianMixture(means, tau, priors)
    if noise != 1.0:
        model.model.diffusion_model.gmm = NoiseScaled(model.model.diffusion_model.gmm, noise)
    return model, gmm


def v_ddpm_world(means, tau, priors):
    """The GMM model with V_PREDICTION_DDPM: ComfyUI's model type where it has one, else the same formulas."""
    H.boot()
    import comfy.model_base

    if hasattr(comfy.model_base.ModelType, "V_PREDICTION_DDPM"):
        return gmm_world(means, tau, priors, "eps", model_type="V_PREDICTION_DDPM")
    model, gmm = gmm_world(means, tau, priors, "eps")
    return v_prediction_ddpm(model), gmm


def exact_loaded(gmm, labels, param, alpha, c=1.0, input_scaling=None, c_in=None, **meta):
    """The mixture's exact classifier as a Load Classifier output (a LoadedClassifier with its metadata)."""
    meta = dict(
        labels=list(labels),
        latent_channels=int(gmm.means.shape[1]),
        parameterization=param,
        input_scaling=input_scaling or {"kind": "identity"},
        **meta,
    )
    return H.pack_module("nodes.classifier_nodes").LoadedClassifier(
        ExactClassifier(gmm, alpha, c, c_in), meta, "exact-gmm"
    )


def guidance_args(**kw):
    """Classifier Guidance inputs: target "b" at scale 1 (Bayes' class-conditional) on every step."""
    args = dict(target="b", scale=1.0, sigma_lo=0.0, sigma_hi=1.0e4, every_n=1, rms_clamp=0.0, dtype="float32")
    args.update(kw)
    return args


def classifier_patch(model, clf, **kw):
    """The Classifier Guidance node (MODEL patch) on `model` with guidance_args(**kw)."""
    return H.run_node("GuidanceLabClassifierGuidance", model=model, classifier=clf, **guidance_args(**kw))[0]


def recorder(model):
    """A clone of `model` whose post-CFG hook records (x, sigma, D) of every model call; and that list."""
    rec, seen = model.clone(), []
    rec.set_model_sampler_post_cfg_function(
        lambda a: (seen.append((a["input"].clone(), a["sigma"].clone(), a["denoised"].clone())), a["denoised"])[1]
    )
    return rec, seen


def worst_step_error(seen, gmm, alpha, c=1.0, target=1, min_alpha=1e-3):
    """(max relative error of the recorded D against E[x0 | x, y = target] over the steps with alpha >= min_alpha,
    how many such steps)."""
    worst, guided = 0.0, 0
    for x, sigma, d in seen:
        a = alpha(sigma)
        if float(a.min()) < min_alpha:
            continue
        want = gmm.class_denoise(x, c * sigma, a)[:, target]
        worst = max(worst, float((d - want).norm() / want.norm()))
        guided += 1
    return worst, guided
