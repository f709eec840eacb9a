"""Model sampling forms learned by asking the object (nodes/sampling_facts.py sampling_form), inside a real ComfyUI.

Every model_sampling form ComfyUI 0.3.52 - 0.38 defines is read from its noise_scaling / calculate_input /
calculate_denoised, never from its class name; classifier guidance is exact (against the Gaussian mixture's exact
posterior) where x = alpha*x0 + c*sigma*eps holds, including CONST with noise_scale 8 (HiDream-O1), and refused
before sampling, naming the form, where it does not (IMG_TO_IMG_FLOW, IMG_TO_IMG_VELOCITY, a made-up form).
The forms are built as ComfyUI's own nodes build them, or with ComfyUI 0.33's / 0.38's formulas where the running
ComfyUI lacks the class (devkit/sampling_forms.py).
"""

import pytest
import torch

from devkit import comfy_host as H
from devkit import sampling_forms as F
from devkit.cfg_helpers import post

pytestmark = pytest.mark.comfy

LABELS = ["a", "b", "c"]
TAU = 0.3
PRIORS = torch.tensor([0.5, 0.3, 0.2])
MEANS = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
NOISE_SCALE = F.NOISE_SCALE


@pytest.fixture(scope="module")
def modules():
    """ComfyUI's model_sampling module, the pack's sampling-form glue and its config error."""
    return {
        "MS": F.comfy_model_sampling(),
        "glue": H.pack_module("nodes.sampling_facts"),
        "err": H.pack_module("guidance_core.errors").GuidanceConfigError,
    }


def world(param="eps", noise=1.0):
    return F.gmm_world(MEANS, TAU, PRIORS, param, noise=noise)


def loaded(gmm, param, alpha, c=1.0, **meta):
    return F.exact_loaded(gmm, LABELS, param, alpha, c, **meta)


def ksample(model, steps=12, denoise=1.0, seed=3, cfg=1.0, latent=None, pos=None):
    empty = [[torch.zeros(1, 1, 3), {}]]
    with torch.inference_mode():
        return H.run_node(
            "KSampler",
            model=model,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name="euler",
            scheduler="normal",
            positive=pos or empty,
            negative=empty,
            latent_image=latent or {"samples": torch.zeros(1, 4, 4, 4)},
            denoise=denoise,
        )[0]["samples"]


def check_exact(seen, gmm, alpha, c=1.0, min_steps=10):
    worst, guided = F.worst_step_error(seen, gmm, alpha, c)
    assert worst < 1e-4 and guided >= min_steps, (worst, guided)


# ---------------------------------------------------------------- what the probe reads from ComfyUI's own classes
def test_every_form_of_this_comfyui_is_read_from_the_object(modules):
    MS, glue = modules["MS"], modules["glue"]
    want = {  # class: (parameterization, noise, input scaling kind, prediction, inverse_noise_scaling)
        "EPS": ("eps", 1.0, "edm", "eps", "identity"),
        "V_PREDICTION": ("v", 1.0, "edm", "v", "identity"),
        "EDM": ("v", 1.0, "edm", "edm", "identity"),
        "X0": ("eps", 1.0, "edm", "x0", "identity"),
        "IMG_TO_IMG": ("eps", 1.0, "identity", "x0", "identity"),
        "COSMOS_RFLOW": ("eps", 1.0, "cosmos_rflow", "cosmos_rflow", "identity"),
        "CONST": ("flow", 1.0, "identity", "eps", "flow"),
        "V_PREDICTION_DDPM": ("v", 1.0, "identity", "v_ddpm", "identity"),
        "IMG_TO_IMG_FLOW": ("img2img", 0.0, "identity", "x0", "one_minus"),
        "IMG_TO_IMG_VELOCITY": ("img2img", 0.0, "identity", "x_minus_out", "flow"),
    }
    built = {
        "V_PREDICTION_DDPM": F.v_prediction_ddpm_class(),
        "IMG_TO_IMG_FLOW": F.img_to_img_flow_class(),
        "IMG_TO_IMG_VELOCITY": F.img_to_img_velocity_class(),
    }
    base = {
        "COSMOS_RFLOW": MS.ModelSamplingCosmosRFlow,
        "EDM": MS.ModelSamplingContinuousEDM,
        "CONST": MS.ModelSamplingDiscreteFlow,
    }
    for name, (param, noise, scaling, prediction, inverse) in want.items():
        kind = built.get(name) or getattr(MS, name)

        class Sampling(base.get(name, MS.ModelSamplingDiscrete), kind):
            pass

        form = glue.sampling_form(Sampling())
        got = (form.parameterization, form.noise, form.input_scaling["kind"], form.prediction, form.inverse, form.name)
        assert got == (param, noise, scaling, prediction, inverse, name), name
        assert (form.problem is None) == (noise > 0), (name, form.problem)
    scaled = F.noise_scaled(world("flow")[0]).get_model_object("model_sampling")
    assert glue.parameterization_of(scaled) == "flow" and glue.sampling_form(scaled).noise == NOISE_SCALE
    form = glue.sampling_form(F.MadeUp())
    assert form.parameterization == "unknown" and "none of the known forms" in form.problem


# ---------------------------------------------------------------- exact where x = alpha*x0 + c*sigma*eps
def test_classifier_guidance_exact_with_noise_scale_8(modules):
    """CONST with noise_scale 8: x = (1 - sigma)*x0 + 8*sigma*eps; the guided D is E[x0 | x, y] at every step
    (it moved D by 1/64 of that amount when alpha and sigma were read from the class name)."""
    model, gmm = world("flow", noise=NOISE_SCALE)
    clf = loaded(gmm, "flow", F.flow_alpha, NOISE_SCALE, noise_scale=NOISE_SCALE)
    rec, seen = F.recorder(F.classifier_patch(F.noise_scaled(model), clf))
    ksample(rec, denoise=0.9)  # sigma = 1 (alpha = 0) holds no signal: start just below
    check_exact(seen, gmm, F.flow_alpha, NOISE_SCALE)
    # the start of sampling is the model's own noise: x = sigma_0*8*n, as ComfyUI's noise_scaling makes it
    import comfy.sample

    n = comfy.sample.prepare_noise(torch.zeros(1, 4, 4, 4), 3)
    torch.testing.assert_close(seen[0][0], float(seen[0][1][0]) * NOISE_SCALE * n, rtol=1e-5, atol=1e-5)


def test_a_classifier_trained_without_the_noise_scale_is_refused(modules):
    model, gmm = world("flow", noise=NOISE_SCALE)
    clf = loaded(gmm, "flow", F.flow_alpha)
    with pytest.raises(
        modules["err"],
        match=r"trained on noise of scale 1 \(noise_scale\).*"
        r"CONST: x = \(1 - sigma\)\*x0 \+ 8\*sigma\*eps",
    ):
        F.classifier_patch(F.noise_scaled(model), clf)


def test_v_prediction_ddpm_exact(modules):
    """V_PREDICTION_DDPM (CogVideoX): x = x0 + sigma*eps, the network reads x itself and predicts v."""
    model, gmm = F.v_ddpm_world(MEANS, TAU, PRIORS)
    assert modules["glue"].sampling_form(model.get_model_object("model_sampling")).name == "V_PREDICTION_DDPM"
    rec, seen = F.recorder(F.classifier_patch(model, loaded(gmm, "v", F.unit_alpha)))
    ksample(rec)
    check_exact(seen, gmm, F.unit_alpha, min_steps=12)


# ---------------------------------------------------------------- refused before sampling, naming the form
def counted_refusal(modules, model, run, match):
    counter = H.RowCounter(model)
    try:
        with pytest.raises(modules["err"], match=match):
            run()
    finally:
        counter.close()
    assert counter.calls == []  # refused before the first model call


REFUSED = {
    "IMG_TO_IMG_FLOW": (F.img_to_img_flow, "IMG_TO_IMG_FLOW.*adds no noise"),
    "IMG_TO_IMG_VELOCITY": (F.img_to_img_velocity, "IMG_TO_IMG_VELOCITY.*adds no noise"),
    "made-up": (F.made_up, "ModelSamplingAdvanced.*none of the known forms"),
}


@pytest.mark.parametrize("form", list(REFUSED))
def test_forms_without_noise_or_unknown_are_refused_by_classifier_guidance(modules, form):
    base, gmm = world("flow")
    clf = loaded(gmm, "flow", F.flow_alpha)
    make, match = REFUSED[form]
    model = make(base)
    # at the node: the patch and the sampler wrapper
    with pytest.raises(modules["err"], match=r"classifier guidance needs x = alpha\*x0 \+ c\*sigma\*eps.*" + match):
        F.classifier_patch(model, clf)
    with pytest.raises(modules["err"], match=match):
        H.run_node(
            "GuidanceLabClassifierSampler",
            model=model,
            classifier=clf,
            **F.guidance_args(),
            sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0],
        )
    # the model sampling changed after the guidance node (patched on top): refused when sampling starts
    late = make(F.classifier_patch(base, clf))
    counted_refusal(modules, late, lambda: ksample(late), match)


def test_zero_init_is_refused_where_the_start_noise_does_not_exist(modules):
    base = world("flow")[0]
    zero_init = post(zero_init_steps=1)
    with pytest.raises(modules["err"], match="zero_init_steps=1 is defined for flow models only.*img2img"):
        H.run_node("GuidanceLabCFGPatch", model=F.img_to_img_flow(base), neg_scale=0.0, post=zero_init)
    # the model sampling changed after the CFG patch: refused when sampling starts, naming the form
    for make, match in (REFUSED["IMG_TO_IMG_FLOW"], REFUSED["made-up"]):
        late = make(H.run_node("GuidanceLabCFGPatch", model=base, neg_scale=0.0, post=zero_init)[0])
        counted_refusal(
            modules, late, lambda m=late: ksample(m, cfg=3.0), r"zero_init_steps=1 \(CFG-Zero\* zero-init\).*" + match
        )


def test_zero_init_with_noise_scale_8_starts_from_the_models_own_noise(modules):
    """CFG-Zero* zero-init solves the sampler's start noise from noise_scaling: with noise_scale 8 the first model
    call (after the skipped step) reads x_start = 8*n exactly."""
    model = F.noise_scaled(world("flow", noise=NOISE_SCALE)[0])
    rec, seen = F.recorder(
        H.run_node("GuidanceLabCFGPatch", model=model, neg_scale=0.0, post=post(zero_init_steps=1))[0]
    )
    out = ksample(rec, cfg=3.0, steps=6)
    import comfy.sample

    n = comfy.sample.prepare_noise(torch.zeros(1, 4, 4, 4), 3)
    assert float(seen[0][1][0]) < 1.0 and torch.isfinite(out).all()
    torch.testing.assert_close(seen[0][0], NOISE_SCALE * n, rtol=1e-5, atol=1e-5)


def test_rescale_needing_alpha_is_refused_without_one_and_form_free_rescale_runs(modules):
    model = F.img_to_img_flow(world("flow")[0])
    for space in ("eps", "v"):
        with pytest.raises(
            modules["err"], match=rf"rescale_space='{space}' needs the model's alpha\(sigma\).*no noise"
        ):
            H.run_node(
                "GuidanceLabCFGPatch", model=model, neg_scale=0.0, post=post(rescale_phi=0.7, rescale_space=space)
            )

    def run(space):
        m = H.run_node(
            "GuidanceLabCFGPatch", model=model, neg_scale=0.0, post=post(rescale_phi=0.7, rescale_space=space)
        )[0]
        # an image-to-image model starts at the input latent
        return ksample(
            m,
            steps=4,
            cfg=3.0,
            latent={"samples": MEANS[:1].clone()},
            pos=H.demo_module().class_conditioning([0.0, 1.0, 0.0]),
        )

    auto = run("auto")
    assert torch.isfinite(auto).all()
    assert torch.equal(auto, run("x0"))  # auto is the form-free x0 space where there is no alpha


def test_train_classifier_refuses_forms_it_cannot_add_noise_for(modules):
    """The trainer adds noise x = alpha*x0 + sigma*eps: a model with noise_scale 8, without noise or of no known
    form is refused when the latent cache's facts are read (before any image is encoded)."""
    facts = H.pack_module("nodes.training_nodes").cache_facts
    base = world("flow")[0]
    with pytest.raises(
        modules["err"], match=r"Train Classifier trains on noise.*CONST: x = \(1 - sigma\)\*x0 \+ 8\*sigma\*eps"
    ):
        facts(F.noise_scaled(base), LABELS, 32, "set")
    for make, match in REFUSED.values():
        with pytest.raises(modules["err"], match=match):
            facts(make(base), LABELS, 32, "set")
    assert facts(base, LABELS, 32, "set")[0]["parameterization"] == "flow"
