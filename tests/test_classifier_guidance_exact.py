"""Classifier guidance inside a real ComfyUI, checked against the exact answer of a Gaussian
mixture: the MODEL is the mixture's exact denoiser (a real ComfyUI BaseModel), the classifier is
its exact posterior p(y | x, sigma)."""

import copy

import pytest
import torch

from devkit import comfy_host as H
from devkit.sampling_forms import classifier_patch as patch, guidance_args

pytestmark = pytest.mark.comfy

LABELS = ["a", "b", "c"]
TAU = 0.3
PRIORS = torch.tensor([0.5, 0.3, 0.2])
MEANS = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))


# ADM's linear beta schedule (1e-4..0.02): sigma_max ~ 157, so starting from pure noise is exact to
# well below the statistical error (SD's sigma_max = 14.6 leaves a ~2% pull of the means toward 0).
ADM_SCHEDULE = {"beta_schedule": "linear", "linear_start": 1e-4, "linear_end": 0.02}


def world(env, param, settings=None):
    demo, gmm_mod, nodes_mod = env["demo"], env["gmm"], env["nodes"]
    model = demo.gmm_model(MEANS, TAU, PRIORS, param, settings)
    gmm = gmm_mod.GaussianMixture(MEANS, TAU, PRIORS)
    meta = {"labels": LABELS, "latent_channels": 4, "parameterization": param}
    return model, gmm, nodes_mod.LoadedClassifier(gmm_mod.GMMClassifier(gmm, param), meta, "exact-gmm")


def empty(batch=1):
    return [[torch.zeros(batch, 1, 3), {}]]


def latent(batch):
    return {"samples": torch.zeros(batch, 4, 4, 4)}


def ksample(
    model, batch=1, steps=20, sampler="euler", seed=3, denoise=1.0, cfg=1.0, pos=None, neg=None, scheduler="normal"
):
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return H.run_node(
            "KSampler",
            model=model,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler,
            scheduler=scheduler,
            positive=pos or empty(),
            negative=neg or empty(),
            latent_image=latent(batch),
            denoise=denoise,
        )[0]["samples"]


def recorder(model):
    rec, seen = model.clone(), []
    rec.set_model_sampler_post_cfg_function(
        lambda a: (seen.append((a["input"].clone(), a["sigma"].clone(), a["denoised"].clone())), a["denoised"])[1]
    )
    return rec, seen


# ---------------------------------------------------------------- Must show 1: analytic ground truth
@pytest.mark.parametrize(
    "param, sampler",
    [
        ("eps", "dpmpp_2m"),
        ("v", "dpmpp_2m"),
        ("flow", "dpmpp_2m"),
        ("eps", "euler_ancestral"),
        ("flow", "euler_ancestral"),
        ("eps", "dpmpp_sde"),
        ("flow", "dpmpp_2m_sde"),
        ("eps", "heun"),
        ("flow", "dpm_2"),
    ],
)
def test_scale1_is_the_exact_class_conditional_at_every_step(env, param, sampler):
    """Deterministic, ancestral, SDE and multi-stage samplers: every model call's guided D is exact."""
    model, gmm, clf = world(env, param)
    rec, seen = recorder(patch(model, clf, target="b"))
    # flow: at sigma = 1 (alpha = 0) x holds no signal and sigma^2/alpha is undefined: start just below
    ksample(rec, steps=12, sampler=sampler, denoise=0.9 if param == "flow" else 1.0)
    assert len(seen) >= 12
    for x, sigma, d in seen:
        alpha = 1 - sigma if param == "flow" else torch.ones_like(sigma)
        want = gmm.class_denoise(x, sigma, alpha)[:, 1]
        err = (d - want).norm() / want.norm()
        assert err < 1e-4, (float(sigma[0]), float(err))


def test_flow_step_at_sigma_one_is_left_unguided(env):
    model, gmm, clf = world(env, "flow")
    rec, seen = recorder(patch(model, clf, target="b"))
    ksample(rec, steps=6)
    x, sigma, d = seen[0]
    assert float(sigma[0]) == pytest.approx(1.0)
    torch.testing.assert_close(d, gmm.denoise(x, sigma, 1 - sigma), rtol=1e-5, atol=1e-5)


def test_2000_samples_have_the_class_mean_and_std(env):
    model, gmm, clf = world(env, "eps", ADM_SCHEDULE)
    n = 2000
    run = dict(batch=n, steps=40, sampler="dpmpp_2m", scheduler="karras")
    out = ksample(patch(model, clf, target="c"), **run)
    mean, std = out.mean(0), out.std(0)
    se = TAU / n**0.5  # standard error of each of the 64 per-dimension means
    assert (mean - MEANS[2]).abs().max() < 5 * se, float((mean - MEANS[2]).abs().max() / se)
    # pooled std: standard error tau/sqrt(2*n*64) ~ 6e-4, plus 5e-3 for the sampler's own discretization
    assert abs(float(std.mean()) - TAU) < 4 * TAU / (2 * (n - 1) * 64) ** 0.5 + 0.005, float(std.mean())
    # the same seed through the exact class-conditional model gives the same samples
    exact = ksample(
        model,
        pos=env["demo"].class_conditioning([0.0, 0.0, 1.0]),
        neg=env["demo"].class_conditioning([0.0, 0.0, 1.0]),
        **run,
    )
    assert (out - exact).abs().max() < 1e-3
    nearest = ((out[:, None] - MEANS[None]) ** 2).flatten(2).sum(-1).argmin(1)
    assert (nearest == 2).float().mean() > 0.999
    # unguided, the classes come at their priors (target class c is the rarest)
    free = ksample(model, **run)
    frac = ((free[:, None] - MEANS[None]) ** 2).flatten(2).sum(-1).argmin(1).bincount(minlength=3).float() / n
    assert torch.allclose(frac, PRIORS, atol=0.04), frac


# ---------------------------------------------------------------- Must show 2: routes, samplers, batch
def custom(model, guider, sampler_node, batch, steps=20, seed=3):
    with torch.inference_mode():
        sig = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=steps, denoise=1.0)[0]
        return H.run_node(
            "SamplerCustomAdvanced",
            noise=H.run_node("RandomNoise", noise_seed=seed)[0],
            guider=guider,
            sampler=sampler_node,
            sigmas=sig,
            latent_image=latent(batch),
        )[0]["samples"]


def nearest_class(out):
    return ((out[:, None] - MEANS[None]) ** 2).flatten(2).sum(-1).argmin(1).tolist()


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_patch_and_sampler_wrapper_with_per_item_targets(env, sampler):
    model, gmm, clf = world(env, "eps")
    targets, want = "a\nc\nb\nc", [0, 2, 1, 2]
    via_patch = ksample(patch(model, clf, target=targets, scale=2.0), batch=4, sampler=sampler)
    assert nearest_class(via_patch) == want
    wrapped = H.run_node(
        "GuidanceLabClassifierSampler",
        sampler=H.run_node("KSamplerSelect", sampler_name=sampler)[0],
        model=model,
        classifier=clf,
        **guidance_args(target=targets, scale=2.0),
    )[0]
    native = H.run_node("CFGGuider", model=model, positive=empty(), negative=empty(), cfg=1.0)[0]
    via_wrapper = custom(model, native, wrapped, 4)
    torch.testing.assert_close(via_wrapper, via_patch, rtol=1e-5, atol=1e-5)  # one code path, same result
    ours = H.run_node("GuidanceLabCFGGuider", model=model, positive=empty(), negative=empty(), cfg=1.0, neg_scale=0.0)[
        0
    ]
    torch.testing.assert_close(custom(model, ours, wrapped, 4), via_patch, rtol=1e-5, atol=1e-5)


def test_composes_with_the_cfg_guider_and_cfg(env):
    demo = env["demo"]
    model, gmm, clf = world(env, "v")
    pos = demo.class_conditioning([0.0, 0.0, 1.0])  # CFG toward c ...
    g = H.run_node("GuidanceLabCFGGuider", model=model, positive=pos, negative=empty(), cfg=3.0, neg_scale=0.0)[0]
    wrapped = H.run_node(
        "GuidanceLabClassifierSampler",
        sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0],
        model=model,
        classifier=clf,
        **guidance_args(target="c", scale=1.0),
    )[0]
    assert nearest_class(custom(model, g, wrapped, 6)) == [2] * 6
    # the patch stacked on the CFG patch, through KSampler: both take effect
    both = patch(H.run_node("GuidanceLabCFGPatch", model=model, neg_scale=0.0)[0], clf, target="c")
    assert nearest_class(ksample(both, batch=6, cfg=3.0, pos=pos)) == [2] * 6


# ---------------------------------------------------------------- Must show 3: scale 0, input untouched
def test_scale0_is_unguided_and_input_model_untouched(env):
    model, gmm, clf = world(env, "eps")
    before = copy.deepcopy(model.model_options)
    ref = ksample(model, batch=3)
    got = ksample(patch(model, clf, scale=0.0), batch=3)
    assert torch.equal(got, ref)
    assert model.model_options == before and model.get_additional_models() == []


# ---------------------------------------------------------------- Must show 4: bad input
def test_bad_input_errors_before_sampling(env, tmp_path):
    demo, errors = env["demo"], env["errors"]
    model, gmm, clf = world(env, "eps")
    shapes = demo.gmm_model()  # 3-channel latents
    with pytest.raises(errors.GuidanceConfigError, match="expects 4 latent channels, the model produces 3"):
        patch(shapes, clf)
    with pytest.raises(errors.GuidanceConfigError, match="unknown label 'zebra'.*known labels: a, b, c"):
        patch(model, clf, target="zebra")
    flow_model = world(env, "flow")[0]
    with pytest.raises(errors.GuidanceConfigError, match="trained for eps models, the model is flow"):
        patch(flow_model, clf)
    counter = H.RowCounter(model)
    try:
        with pytest.raises(errors.GuidanceConfigError, match="2 items but the batch has 3"):
            ksample(patch(model, clf, target="a\nb"), batch=3)
    finally:
        counter.close()
    assert counter.calls == []  # refused before the first model call


def test_loader_reads_files_from_the_registered_folder(env, tmp_path):
    import folder_paths

    errors = env["errors"]
    gio = H.pack_module("guidance_core.classifiers.classifier_files")
    na = H.pack_module("guidance_core.classifiers.noise_aware")
    folder_paths.add_model_folder_path("classifiers", str(tmp_path))
    net = na.NoiseAwareClassifier(na.ClassifierConfig(in_channels=4, num_classes=3, base_channels=16))
    gio.save_classifier(
        str(tmp_path / "tiny.safetensors"),
        net,
        {
            "architecture": "noise_aware",
            "config": net.config.to_dict(),
            "labels": LABELS,
            "latent_channels": 4,
            "latent_format": "LatentFormat",
            "parameterization": "eps",
            "sigma_min": 0.03,
            "sigma_max": 14.6,
        },
    )
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x02fake")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    names = H.pack_module("nodes.classifier_nodes").GuidanceLabClassifierLoader.define_schema().inputs[0].options
    assert {"tiny.safetensors", "old.ckpt", "broken.safetensors"} <= set(names)  # our list; ComfyUI's key untouched
    with torch.inference_mode():  # the loader runs under inference mode in ComfyUI
        clf = H.run_node("GuidanceLabClassifierLoader", classifier_name="tiny.safetensors")[0]
    assert clf.labels == LABELS
    with pytest.raises(errors.GuidanceConfigError, match="refused"):
        H.run_node("GuidanceLabClassifierLoader", classifier_name="old.ckpt")
    with pytest.raises(errors.GuidanceConfigError, match="broken.safetensors"):
        H.run_node("GuidanceLabClassifierLoader", classifier_name="broken.safetensors")
    with pytest.raises(FileNotFoundError):
        H.run_node("GuidanceLabClassifierLoader", classifier_name="../../etc/passwd")
    # a trained-format classifier guides ComfyUI's own UNet under inference mode
    unet = H.tiny_model("eps")
    c1, c2 = H.cond(1), H.cond(2)
    ref = ksample(unet, batch=2, steps=4, pos=c1, neg=c2)
    got = ksample(patch(unet, clf, target="a\nc", scale=100.0), batch=2, steps=4, pos=c1, neg=c2)
    assert torch.isfinite(got).all() and (got - ref).abs().max() > 1e-5  # a (random) gradient flowed
