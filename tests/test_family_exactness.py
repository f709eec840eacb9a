"""Issue 13, Must show 2: classifier guidance is exact under every model family's own model_sampling.

For each family of devkit/families.py (ComfyUI's own supported_models config + model_base class at tiny width),
its real `model_sampling` object (discrete eps / v, EDM sigma_data 0.5, flow with shift, Flux's time shift,
COSMOS_RFLOW, ...) and its latent format are put on the analytic world of a Gaussian mixture
(guidance_core.reference.gmm, as a real ComfyUI model through scripts/demo_nodes.gmm_model): the diffusion
model is the mixture's exact denoiser E[x0 | x] under that model_sampling, the classifier its exact class
posterior p(y | x, sigma). Guiding toward y at scale 1 must then give E[x0 | x, y] at every step (1e-4 relative).

The truth is taken from ComfyUI's objects, never from the pack: the classifier undoes the model's own
`calculate_input` (so it is exact only when the pack feeds it c_in(sigma)*x with the model's real input
scaling), and alpha(sigma) of x = alpha*x0 + sigma*eps is the model's own `noise_scaling(sigma, 0, 1)`.

- Image families (4-D latents): through both nodes, Classifier Guidance on KSampler and Classifier Guidance
  Sampler in SamplerCustomAdvanced.
- Families with 5-D latents [B, C, T, H, W] (Wan 2.1, Cosmos-Predict2, Qwen-Image, LTXV, HunyuanVideo): an image
  is one frame [B, C, 1, H, W], which the 2-D classifier reads as [B, C, H, W]: exact through both nodes (tested).
  A video (T > 1) is refused by the nodes when sampling starts, before any step (tested); exactness of the guidance
  math on 5-D video latents is shown at the core level: guidance_core.classifier_guidance.ClassifierGuidance with
  the model's input scaling, as a post-CFG function of ComfyUI's own KSampler on the 5-D mixture.
Flow families: at sigma = 1 (alpha = 0) x holds no signal and sigma^2/alpha is undefined: that step is left
unguided on purpose (checked: D = E[x0 | x] there); every other step is exact.
"""

from __future__ import annotations

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F

pytestmark = pytest.mark.comfy

LABELS = ["a", "b", "c"]
TAU = 0.3
PRIORS = torch.tensor([0.5, 0.3, 0.2])
TARGET = 1  # "b"
STEPS = 8
RTOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def family_objects(name):
    """The family's own model_sampling and latent format (from the tiny real model of devkit/families.py)."""
    m = F.model(name)
    return m.get_model_object("model_sampling"), m.get_model_object("latent_format")


def true_alpha(ms, sigma: torch.Tensor) -> torch.Tensor:
    """alpha(sigma) of x = alpha*x0 + sigma*eps, from ComfyUI's own noise_scaling (x0 = 1, eps = 0)."""
    one = torch.ones(sigma.shape[0], 1, 1, 1, dtype=torch.float64)
    return ms.noise_scaling(sigma.double().reshape(-1), torch.zeros_like(one), one).reshape(-1).to(sigma.dtype)


def c_in(ms, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The model's own input scaling calculate_input(sigma, 1), shaped to broadcast against `like`."""
    return ms.calculate_input(sigma.reshape(-1), torch.ones(sigma.shape[0], *([1] * (like.ndim - 1))).to(like))


class ModelSamplingPosterior(torch.nn.Module):
    """The mixture's exact class posterior, reading what a noise-aware classifier of this model reads: the model
    input c_in(sigma)*x of the model's own calculate_input (undone here with ComfyUI's function, not the pack's)."""

    def __init__(self, gmm, ms):
        super().__init__()
        self.gmm, self.ms = gmm, ms

    def forward(self, x_in, sigma):
        s = sigma.reshape(-1)
        return self.gmm.class_logits(x_in / c_in(self.ms, s, x_in), s, true_alpha(self.ms, s))


def means_for(fmt) -> torch.Tensor:
    shape = (3, int(fmt.latent_channels)) + ((2, 4, 4) if int(getattr(fmt, "latent_dimensions", 2)) == 3 else (4, 4))
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def world(env, name, means=None):
    """(the mixture as a ComfyUI model with the family's model_sampling and latent format, the mixture, the exact
    posterior as a classifier, the model_sampling). `means` (default means_for the family's latents) sets the
    latent's shape; 5-D means with one frame [3, C, 1, H, W] give a classifier that reads [B, C, H, W], as a
    noise-aware classifier trained on those images does."""
    ms, fmt = family_objects(name)
    means = means_for(fmt) if means is None else means
    flow = abs(float(true_alpha(ms, torch.tensor([0.5]))[0]) - 0.5) < 1e-6  # alpha = 1 - sigma
    model = env["demo"].gmm_model(means, TAU, PRIORS, "flow" if flow else "eps")
    model.add_object_patch("model_sampling", ms)
    model.add_object_patch("latent_format", fmt)
    gmm = env["gmm"].GaussianMixture(means, TAU, PRIORS)
    P = env["P"]
    meta = {
        "labels": LABELS,
        "latent_channels": int(fmt.latent_channels),
        "latent_format": type(fmt).__name__,
        "parameterization": H.pack_module("nodes.sampling_facts").parameterization_of(ms),
        "input_scaling": P.identify_input_scaling(ms.calculate_input),
    }  # as Train Classifier records it
    read = env["gmm"].GaussianMixture(means[:, :, 0], TAU, PRIORS) if means.ndim == 5 and means.shape[2] == 1 else gmm
    clf = env["nodes"].LoadedClassifier(ModelSamplingPosterior(read, ms), meta, f"exact-gmm {name}")
    return model, gmm, clf, ms


def empty():
    return [[torch.zeros(1, 1, 3), {}]]


def record_into(seen):
    """A post-CFG function that records (x, sigma, D) and changes nothing."""
    return lambda a: (seen.append((a["input"].clone(), a["sigma"].clone(), a["denoised"].clone())), a["denoised"])[1]


def recorder(model):
    """A clone that records (x, sigma, D) after the post-CFG functions already on the model."""
    rec, seen = model.clone(), []
    rec.set_model_sampler_post_cfg_function(record_into(seen))
    return rec, seen


def recording_sampler(inner, seen):
    """A SAMPLER that runs `inner` with a recorder added last to this run's post-CFG functions: wrapped by the
    Classifier Guidance Sampler (which adds its hook when sampling starts), it sees the guided D."""
    import comfy.model_patcher
    import comfy.samplers

    class Recording(comfy.samplers.Sampler):
        def max_denoise(self, model_wrap, sigmas):
            return inner.max_denoise(model_wrap, sigmas)

        def sample(
            self,
            model_wrap,
            sigmas,
            extra_args,
            callback,
            noise,
            latent_image=None,
            denoise_mask=None,
            disable_pbar=False,
        ):
            extra = dict(extra_args)
            mo = comfy.model_patcher.create_model_options_clone(extra.get("model_options", {}))
            mo["sampler_post_cfg_function"] = list(mo.get("sampler_post_cfg_function", [])) + [record_into(seen)]
            extra["model_options"] = mo
            return inner.sample(model_wrap, sigmas, extra, callback, noise, latent_image, denoise_mask, disable_pbar)

    return Recording()


def latent(means):
    return {"samples": torch.zeros(1, *means.shape[1:])}


def ksample(model, means, sampler="dpmpp_2m"):
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return H.run_node(
            "KSampler",
            model=model,
            seed=3,
            steps=STEPS,
            cfg=1.0,
            sampler_name=sampler,
            scheduler="normal",
            positive=empty(),
            negative=empty(),
            latent_image=latent(means),
            denoise=1.0,
        )[0]["samples"]


def custom_sample(model, sampler, means):
    with torch.inference_mode():
        sig = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=STEPS, denoise=1.0)[0]
        guider = H.run_node("CFGGuider", model=model, positive=empty(), negative=empty(), cfg=1.0)[0]
        return H.run_node(
            "SamplerCustomAdvanced",
            noise=H.run_node("RandomNoise", noise_seed=3)[0],
            guider=guider,
            sampler=sampler,
            sigmas=sig,
            latent_image=latent(means),
        )[0]["samples"]


def guidance_args():
    return dict(
        target=LABELS[TARGET],
        scale=1.0,
        sigma_lo=0.0,
        sigma_hi=1.0e4,
        every_n=1,
        rms_clamp=0.0,
        dtype="float32",
        allow_other_latent_format=False,
    )


def check_every_step(seen, gmm, ms, min_alpha):
    """Every recorded step: D = E[x0 | x, y] (1e-4 relative) where alpha >= min_alpha, else D = E[x0 | x]
    (the unguided step at sigma = 1 of flow models). Returns the number of guided steps and the worst error."""
    guided, worst = 0, 0.0
    for x, sigma, d in seen:
        alpha = true_alpha(ms, sigma)
        if float(alpha.min()) < min_alpha:
            want = gmm.denoise(x, sigma, alpha)
        else:
            want = gmm.class_denoise(x, sigma, alpha)[:, TARGET]
            guided += 1
        err = float((d - want).norm() / want.norm())
        assert err < RTOL, (float(sigma[0]), float(alpha[0]), err)
        worst = max(worst, err)
    return guided, worst


def one_per_model() -> list:
    """The first family of each model builder: families that differ only in their conditioning (a reference
    latent) share the model_sampling and latent format, hence one world."""
    first = {}
    for name, fam in F.FAMILIES.items():
        first.setdefault(fam.build, name)
    return list(first.values())


ONE_PER_MODEL = one_per_model()
IMAGE = [n for n in ONE_PER_MODEL if F.latent_dims(n) == 2]
VIDEO = [n for n in ONE_PER_MODEL if F.latent_dims(n) == 3]


def test_the_families_cover_every_model_sampling_kind():
    """The worlds below include discrete eps and v, EDM with sigma_data 0.5, flow with a shift, Flux's time shift,
    COSMOS_RFLOW and 5-D latents (otherwise this file would prove less than it says)."""
    H.boot()
    import comfy.model_sampling as MS

    kinds = set()
    for name in F.FAMILIES:
        ms, fmt = family_objects(name)
        if isinstance(ms, MS.ModelSamplingDiscrete):
            kinds.add("discrete v" if isinstance(ms, MS.V_PREDICTION) else "discrete eps")
        if isinstance(ms, MS.ModelSamplingContinuousEDM) and float(ms.sigma_data) == 0.5:
            kinds.add("edm 0.5")
        if isinstance(ms, MS.ModelSamplingDiscreteFlow) and float(ms.shift) > 1:
            kinds.add("flow shift")
        if isinstance(ms, MS.ModelSamplingFlux):
            kinds.add("flux time shift")
        if isinstance(ms, MS.COSMOS_RFLOW):
            kinds.add("cosmos rflow")
        if int(getattr(fmt, "latent_dimensions", 2)) == 3:
            kinds.add("5-D")
    assert kinds >= {"discrete eps", "discrete v", "edm 0.5", "flow shift", "flux time shift", "cosmos rflow", "5-D"}


@pytest.mark.parametrize("name", IMAGE)
def test_both_nodes_give_the_class_conditional_at_every_step(env, name):
    both_nodes_exact(env, name)


def both_nodes_exact(env, name, means=None):
    model, gmm, clf, ms = world(env, name, means)
    min_alpha = env["G"].MIN_ALPHA
    means = gmm.means
    # Classifier Guidance (MODEL patch) under the stock KSampler
    patched = H.run_node("GuidanceLabClassifierGuidance", model=model, classifier=clf, **guidance_args())[0]
    rec, seen = recorder(patched)
    ksample(rec, means)
    assert len(seen) == STEPS
    guided, _ = check_every_step(seen, gmm, ms, min_alpha)
    assert guided >= STEPS - 1
    # Classifier Guidance Sampler (SAMPLER wrapper) in SamplerCustomAdvanced
    seen = []
    inner = recording_sampler(H.run_node("KSamplerSelect", sampler_name="euler")[0], seen)
    wrapped = H.run_node("GuidanceLabClassifierSampler", model=model, classifier=clf, **guidance_args(), sampler=inner)[
        0
    ]
    custom_sample(model, wrapped, means)
    assert len(seen) == STEPS
    guided, _ = check_every_step(seen, gmm, ms, min_alpha)
    assert guided >= STEPS - 1


@pytest.mark.parametrize("name", VIDEO)
def test_one_frame_of_5d_latents_exact_through_both_nodes(env, name):
    """Models that sample images as one frame [B, C, 1, H, W] (Qwen-Image, Cosmos-Predict2; Wan, LTXV, HunyuanVideo
    at length 1): the 2-D classifier reads the frame, and both nodes give D = E[x0 | x, y] at every step."""
    means = means_for(family_objects(name)[1])[:, :, :1]
    assert means.ndim == 5 and means.shape[2] == 1
    both_nodes_exact(env, name, means)


@pytest.mark.parametrize("name", VIDEO)
def test_5d_video_latents_exact_at_the_core_level_and_refused_by_the_nodes(env, name):
    model, gmm, clf, ms = world(env, name)
    G, P, means = env["G"], env["P"], gmm.means
    assert means.ndim == 5 and means.shape[2] > 1
    # the nodes: refused when sampling starts, before any step (noise-aware classifiers are 2-D image networks)
    err = env["errors"].GuidanceConfigError
    video = rf"guides images: this latent \[1, {means.shape[1]}, {means.shape[2]}, 4, 4\] is a video of {means.shape[2]} frames"
    patched = H.run_node("GuidanceLabClassifierGuidance", model=model, classifier=clf, **guidance_args())[0]
    rec, seen = recorder(patched)
    with pytest.raises(err, match=video):
        ksample(rec, means)
    assert seen == []
    wrapped = H.run_node(
        "GuidanceLabClassifierSampler",
        model=model,
        classifier=clf,
        **guidance_args(),
        sampler=recording_sampler(H.run_node("KSamplerSelect", sampler_name="euler")[0], seen),
    )[0]
    with pytest.raises(err, match=video):
        custom_sample(model, wrapped, means)
    assert seen == []
    # the core: D' = D + s*sigma^2/alpha*grad_x log p(y | c_in*x, sigma) on 5-D x, inside ComfyUI's KSampler
    scaling = P.identify_input_scaling(ms.calculate_input)
    assert scaling is not None
    param = H.pack_module("nodes.sampling_facts").parameterization_of(ms)
    weights = torch.nn.functional.one_hot(torch.tensor([TARGET]), len(LABELS)).float()
    guidance = G.ClassifierGuidance(clf.module, weights, G.ClassifierGuidanceConfig(scale=1.0))

    def core_hook(args):
        x, sigma = args["input"], args["sigma"]
        return guidance(
            args["denoised"], x, sigma, P.alpha_for(param, sigma), lambda xx: P.scale_input(xx, sigma, scaling)
        )

    core = model.clone()
    core.set_model_sampler_post_cfg_function(core_hook)
    rec, seen = recorder(core)
    ksample(rec, means)
    assert len(seen) == STEPS and all(x.ndim == 5 for x, _, _ in seen)
    guided, _ = check_every_step(seen, gmm, ms, G.MIN_ALPHA)
    assert guided >= STEPS - 1
