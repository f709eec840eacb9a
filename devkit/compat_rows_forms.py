"""Compatibility rows of the model sampling forms (devkit/compat_matrix.py): each model_sampling form ComfyUI defines,
on the exact Gaussian-mixture model of devkit/sampling_forms.py, with classifier guidance, CFG-Zero* zero-init and
CFG rescale through the patch."""

from __future__ import annotations

import functools

import torch

from . import comfy_host as H
from .cfg_helpers import ksample, patch, post
from .compat_doc import FAMILIES, TOL
from .compat_measure import PATCH, measure, row


# ------------------------------------------------------------------ model sampling forms
def sampling_form_worlds() -> dict:
    """{item: (MODEL, GaussianMixture, classifier meta kwargs for devkit.sampling_forms.exact_loaded, alpha, c)} of
    each model_sampling form the running ComfyUI defines (built as its nodes build them, devkit/sampling_forms.py),
    plus a made-up one that matches no known form."""
    from . import sampling_forms as F

    means = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    tau, priors = 0.3, torch.tensor([0.5, 0.3, 0.2])
    demo = H.demo_module()
    edm_in = lambda sd: lambda s: 1.0 / torch.sqrt(s * s + sd * sd)  # noqa: E731
    eps, _ = F.gmm_world(means, tau, priors, "eps")
    flow, gmm = F.gmm_world(means, tau, priors, "flow")
    worlds = {
        "EPS (discrete)": (
            eps,
            gmm,
            dict(param="eps", alpha=F.unit_alpha, input_scaling={"kind": "edm", "sigma_data": 1.0}, c_in=edm_in(1.0)),
        ),
        "V_PREDICTION (discrete)": (
            F.gmm_world(means, tau, priors, "v")[0],
            gmm,
            dict(param="v", alpha=F.unit_alpha, input_scaling={"kind": "edm", "sigma_data": 1.0}, c_in=edm_in(1.0)),
        ),
        "EDM (sigma_data 0.5)": (
            demo.gmm_model(
                means, tau, priors, "eps", {"sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0}, "EDM"
            ),
            gmm,
            dict(param="v", alpha=F.unit_alpha, input_scaling={"kind": "edm", "sigma_data": 0.5}, c_in=edm_in(0.5)),
        ),
        "COSMOS_RFLOW": (
            demo.gmm_model(
                means, tau, priors, "eps", {"sigma_data": 1.0, "sigma_min": 0.002, "sigma_max": 80.0}, "FLOW_COSMOS"
            ),
            gmm,
            dict(
                param="eps", alpha=F.unit_alpha, input_scaling={"kind": "cosmos_rflow"}, c_in=lambda s: 1.0 / (1.0 + s)
            ),
        ),
        "CONST (flow)": (flow, gmm, dict(param="flow", alpha=F.flow_alpha)),
    }
    if hasattr(F.comfy_model_sampling(), "V_PREDICTION_DDPM"):
        worlds["V_PREDICTION_DDPM"] = (F.v_ddpm_world(means, tau, priors)[0], gmm, dict(param="v", alpha=F.unit_alpha))
    if F.has_noise_scale():
        worlds[f"CONST noise_scale {F.NOISE_SCALE:g} (ModelNoiseScale)"] = (
            F.noise_scaled(F.gmm_world(means, tau, priors, "flow", noise=F.NOISE_SCALE)[0]),
            gmm,
            dict(param="flow", alpha=F.flow_alpha, c=F.NOISE_SCALE, noise_scale=F.NOISE_SCALE),
        )
    if F.has_img_to_img_flow():
        worlds["IMG_TO_IMG_FLOW (ModelSamplingDiscrete img_to_img_flow)"] = (
            F.img_to_img_flow(flow),
            gmm,
            dict(param="flow", alpha=F.flow_alpha),
        )
    worlds["a made-up model_sampling (no known form)"] = (F.made_up(flow), gmm, dict(param="flow", alpha=F.flow_alpha))
    return worlds


def sampling_form_rows() -> list:
    """Each model_sampling form x {classifier guidance, CFG-Zero* zero-init, CFG rescale}, through the patch under
    KSampler on the exact Gaussian-mixture model: classifier guidance exact (the guided D is E[x0 | x, y] at every
    step, value = the largest relative error) or refused; zero-init exact (the first model call reads the start the
    model's own noise_scaling makes) or refused; rescale in the auto and eps spaces finite or refused."""
    from . import sampling_forms as F

    pos = H.demo_module().class_conditioning([0.0, 1.0, 0.0])
    empty = [[torch.zeros(1, 1, 3), {}]]
    latent = {"samples": torch.zeros(1, 4, 4, 4)}

    def sample(m, cfg=3.0, denoise=1.0, prompt=pos):
        return ksample(m, cfg, steps=8, seed=3, pos=prompt, neg=empty, latent=latent, denoise=denoise)

    rows = []
    for item, (m, gmm, spec) in sampling_form_worlds().items():
        key = functools.partial(lambda check: (FAMILIES, f"model sampling: {item}", check, PATCH))
        spec = dict(spec)
        param, alpha, c = spec.pop("param"), spec.pop("alpha"), spec.get("c", 1.0)
        clf = F.exact_loaded(gmm, ["a", "b", "c"], param, alpha, **spec)
        rows.append(
            exact_steps_row(
                key("classifier guidance: E[x0 | x, y] at every step (exact GMM)"),
                m,
                gmm,
                alpha,
                c,
                lambda: F.classifier_patch(m, clf),
                lambda rec: sample(rec, cfg=1.0, denoise=0.9, prompt=empty),
            )
        )
        rows.append(
            zero_init_start_row(key("CFG-Zero* zero_init_steps 1: start from the model's own noise"), m, sample)
        )
        plain = functools.cache(lambda: sample(m))
        for space in ("auto", "eps"):
            rows.append(
                measure(
                    key(f"rescale_phi 0.7, rescale_space {space}"),
                    lambda: sample(patch(m, post=post(rescale_phi=0.7, rescale_space=space))),
                    plain,
                    model=m,
                )
            )
    return rows


def exact_steps_row(key, model, gmm, alpha, c, guided, run) -> dict:
    """Row `key`: refused (a GuidanceConfigError before the first model call), or exact when every recorded step's D
    is E[x0 | x, y] within 1e-4 (relative), guided() making the patched model and run(model) sampling it."""
    from . import sampling_forms as F

    seen = []

    def go():
        rec, rec_seen = F.recorder(guided())
        seen.append(rec_seen)
        return run(rec)

    r = measure(key, go, model=model)
    if r["status"] != "finite":
        return r
    worst, steps = F.worst_step_error(seen[0], gmm, alpha, c)
    if not (worst < 1e-4 and steps >= 4):
        return row(*key, "FAIL", f"largest relative error {worst:.2g} over {steps} steps (tolerance 1e-4)", worst)
    return row(*key, "exact", f"{worst:.2g}", worst)


def zero_init_start_row(key, model, sample) -> dict:
    """Row `key`: CFG-Zero* zero-init refused, or exact when the first model call (after the skipped step) reads
    x_start = noise_scaling(sigma_max, n, 0), the model's own start from the seed's noise n."""
    import comfy.sample

    from . import sampling_forms as F

    seen = []

    def go():
        rec, rec_seen = F.recorder(patch(model, post=post(zero_init_steps=1)))
        seen.append(rec_seen)
        return sample(rec)

    r = measure(key, go, model=model)
    if r["status"] != "finite":
        return r
    ms = model.get_model_object("model_sampling")
    n = comfy.sample.prepare_noise(torch.zeros(1, 4, 4, 4), 3)
    start = ms.noise_scaling(ms.sigma_max.reshape(1), n, torch.zeros_like(n))
    diff = float((seen[0][0][0] - start).abs().max())
    return row(*key, "exact" if diff < TOL else "FAIL", f"{diff:.2g}", diff)
