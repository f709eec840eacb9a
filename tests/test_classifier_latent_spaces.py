"""Issue 12, "never a silent wrong result", for noise-aware classifiers inside a real ComfyUI:
  - one input scaling c_in(sigma)*x for training and guidance, recorded in the classifier file and checked
    against the model's model_sampling (EDM sigma_data 0.5 as Playground v2.5 / Cosmos, COSMOS_RFLOW, IMG_TO_IMG);
  - a classifier of one latent space refused on another with the same channel count (SD1.5 vs SDXL);
  - the latent cache holds ComfyUI's own latent_format.process_in output (per-channel Playground v2.5 format);
  - Train Classifier with steps = 0 gives a clear message where its classifier is used.
Checked against the exact answer of a Gaussian mixture (scripts/demo_nodes: its exact denoiser as a real
ComfyUI model, built on ComfyUI's own model_sampling classes)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from devkit import comfy_host as H

pytestmark = pytest.mark.comfy

LABELS = ["a", "b", "c"]
TAU = 0.3
PRIORS = torch.tensor([0.5, 0.3, 0.2])
MEANS = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
EDM = {"sigma_data": 0.5, "sigma_max": 80.0, "sigma_min": 0.002}  # Playground v2.5's sampling settings
# (ComfyUI model type, demo parameterization (alpha = 1 for all), sampling settings)
KINDS = {
    "EDM": ("v", EDM),
    "V_PREDICTION_EDM": ("v", EDM),
    "FLOW_COSMOS": ("eps", {"sigma_max": 80.0, "sigma_min": 0.002}),
    "IMG_TO_IMG": ("eps", {}),
}


@pytest.fixture(scope="module")
def env(env):
    """The pack's modules of tests/conftest.py and this file's Gaussian mixture."""
    return {**env, "mixture": env["gmm"].GaussianMixture(MEANS, TAU, PRIORS)}


def gmm_model(env, model_type=None, param="eps", settings=None):
    return env["demo"].gmm_model(MEANS, TAU, PRIORS, param, settings, model_type=model_type)


class TrainedPosterior(torch.nn.Module):
    """The mixture's exact posterior p(k | x, sigma) as the pack's trainer would teach it: it reads the input the
    trainer makes (classifier_training.noisy_batch: c_in(sigma)*(x0 + sigma*eps) with the spec's c_in), so guidance is exact
    exactly when it feeds the classifier the trainer's input scaling."""

    def __init__(self, env, spec):
        super().__init__()
        self.gmm, self.spec, self.TR = env["mixture"], spec, env["TR"]

    def forward(self, x_in, sigma):
        s = sigma.reshape(-1)
        # noisy_batch(x0 = 0, eps = 1) = c_in(sigma)*sigma
        c_in = self.TR.noisy_batch(
            torch.zeros_like(x_in[:, :1, :1, :1]), s, torch.ones_like(x_in[:, :1, :1, :1]), self.spec
        ) / s.reshape(-1, 1, 1, 1)
        return self.gmm.class_logits(x_in / c_in, s, torch.ones_like(s))


def trained_classifier(env, model, name="trained"):
    """The exact posterior with the metadata the trainer writes for this model (cache_facts -> NoiseSpec -> file)."""
    TR = env["TR"]
    meta, extra = env["training_nodes"].cache_facts(model, LABELS, 4, "gmm")
    spec = TR.NoiseSpec.from_cache(meta, extra.get("sigma_table"))
    trainer = TR.Trainer(
        MEANS.repeat(2, 1, 1, 1),
        torch.arange(3).repeat(2),
        LABELS,
        spec,
        TR.TrainConfig(steps=1, batch_size=2, arch={"base_channels": 8}),
    )
    file_meta = TR.classifier_metadata(trainer, meta["latent_format"])
    return env["nodes"].LoadedClassifier(TrainedPosterior(env, spec), file_meta, name)


def guidance_args(**kw):
    args = dict(
        target="b",
        scale=1.0,
        sigma_lo=0.0,
        sigma_hi=1.0e4,
        every_n=1,
        rms_clamp=0.0,
        dtype="float32",
        allow_other_latent_format=False,
    )
    args.update(kw)
    return args


def patch(model, clf, **kw):
    return H.run_node("GuidanceLabClassifierGuidance", model=model, classifier=clf, **guidance_args(**kw))[0]


def empty():
    return [[torch.zeros(1, 1, 3), {}]]


def ksample(model, steps=12, batch=1):
    with torch.inference_mode():
        return H.run_node(
            "KSampler",
            model=model,
            seed=3,
            steps=steps,
            cfg=1.0,
            sampler_name="dpmpp_2m",
            scheduler="karras",
            positive=empty(),
            negative=empty(),
            latent_image={"samples": torch.zeros(batch, 4, 4, 4)},
            denoise=1.0,
        )[0]["samples"]


def relative_errors_along_a_run(env, model, clf):
    rec, seen = patch(model, clf).clone(), []
    rec.set_model_sampler_post_cfg_function(
        lambda a: (seen.append((a["input"].clone(), a["sigma"].clone(), a["denoised"].clone())), a["denoised"])[1]
    )
    ksample(rec)
    assert len(seen) == 12
    out = []
    for x, sigma, d in seen:
        want = env["mixture"].class_denoise(x, sigma, torch.ones_like(sigma))[:, 1]
        out.append((float(sigma[0]), float((d - want).norm() / want.norm())))
    return out


# ---------------------------------------------------------------- 3: one input scaling, exact for every convention
@pytest.mark.parametrize("model_type", list(KINDS))
def test_guided_d_is_exact_for_the_models_own_input_scaling(env, model_type):
    param, settings = KINDS[model_type]
    model = gmm_model(env, model_type, param, settings)
    clf = trained_classifier(env, model)
    for sigma, err in relative_errors_along_a_run(env, model, clf):
        assert err < 1e-4, (model_type, sigma, err)
    # and where the class posterior is uncertain (near the a/b boundary), at fixed sigmas: the hook itself
    hook = patch(model, clf).model_options["sampler_post_cfg_function"][-1]
    g = torch.Generator().manual_seed(1)
    for sv in (0.3, 1.2, 5.0):
        sigma = torch.tensor([sv])
        for _ in range(5):
            x = 0.5 * (MEANS[0] + MEANS[1])[None] + sv * torch.randn(1, 4, 4, 4, generator=g)
            one = torch.ones_like(sigma)
            out = hook(
                {
                    "denoised": env["mixture"].denoise(x, sigma, one),
                    "input": x,
                    "sigma": sigma,
                    "model": model.model,
                    "model_options": {},
                }
            )
            want = env["mixture"].class_denoise(x, sigma, one)[:, 1]
            assert float((out - want).norm() / want.norm()) < 1e-4, (model_type, sv)


def test_edm_through_comfyuis_model_sampling_node(env):
    """Playground-style EDM (sigma_data 0.5) made by ComfyUI's ModelSamplingContinuousEDM node on an eps model."""
    edm = H.run_node(
        "ModelSamplingContinuousEDM", model=gmm_model(env), sampling="edm", sigma_max=80.0, sigma_min=0.002
    )[0]
    clf = trained_classifier(env, edm)
    assert clf.input_scaling == {"kind": "edm", "sigma_data": 0.5}
    assert max(err for _, err in relative_errors_along_a_run(env, edm, clf)) < 1e-4


def test_input_scaling_mismatch_is_refused_before_sampling(env):
    err = env["errors"].GuidanceConfigError
    nodes = env["nodes"]
    models = {k: gmm_model(env, k, *KINDS[k]) for k in KINDS}
    eps_model = gmm_model(env)
    old_v = nodes.LoadedClassifier(
        torch.nn.Identity(), {"labels": LABELS, "latent_channels": 4, "parameterization": "v"}, "old-v"
    )  # no input_scaling field
    old_eps = nodes.LoadedClassifier(
        torch.nn.Identity(), {"labels": LABELS, "latent_channels": 4, "parameterization": "eps"}, "old-eps"
    )
    with pytest.raises(
        err,
        match=r"'old-v' was trained on inputs x/sqrt\(sigma\^2 \+ 1\^2\), the model's input "
        r"scaling is x/sqrt\(sigma\^2 \+ 0\.5\^2\)",
    ):
        patch(models["EDM"], old_v)
    with pytest.raises(err, match=r"x/sqrt\(sigma\^2 \+ 0\.5\^2\)"):
        patch(models["V_PREDICTION_EDM"], old_v)
    with pytest.raises(err, match=r"model's input scaling is x/\(1 \+ sigma\)"):
        patch(models["FLOW_COSMOS"], old_eps)
    with pytest.raises(err, match=r"model's input scaling is x;"):
        H.run_node(
            "GuidanceLabClassifierSampler",
            sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0],
            model=models["IMG_TO_IMG"],
            classifier=old_eps,
            **guidance_args(),
        )
    with pytest.raises(
        err,
        match=r"trained on inputs x/sqrt\(sigma\^2 \+ 0\.5\^2\), the model's input scaling is "
        r"x/sqrt\(sigma\^2 \+ 1\^2\)",
    ):
        patch(eps_model, trained_classifier(env, models["EDM"], "edm-trained"))
    # old files keep working for the convention they were trained with
    patch(eps_model, old_eps)
    # a model patch applied after the guidance node (ComfyUI's ModelSamplingContinuousEDM, sampling "edm") is
    # caught when sampling starts, before the first model call
    later = H.run_node(
        "ModelSamplingContinuousEDM",
        model=patch(eps_model, trained_classifier(env, eps_model)),
        sampling="edm",
        sigma_max=80.0,
        sigma_min=0.002,
    )[0]
    counter = H.RowCounter(eps_model)
    try:
        with pytest.raises(err, match=r"x/sqrt\(sigma\^2 \+ 0\.5\^2\)"):
            ksample(later, steps=4)
    finally:
        counter.close()
    assert counter.calls == []


def test_bad_input_scaling_field_is_refused(env, tmp_path):
    gio = H.pack_module("guidance_core.classifiers.classifier_files")
    na = H.pack_module("guidance_core.classifiers.noise_aware")
    net = na.NoiseAwareClassifier(na.ClassifierConfig(in_channels=4, num_classes=3, base_channels=8))
    meta = {
        "architecture": "noise_aware",
        "config": net.config.to_dict(),
        "labels": LABELS,
        "latent_channels": 4,
        "latent_format": "SD15",
        "parameterization": "eps",
        "input_scaling": {"kind": "karras"},
    }
    with pytest.raises(env["errors"].GuidanceConfigError, match="accepted kinds: edm, identity, cosmos_rflow"):
        gio.save_classifier(str(tmp_path / "bad.safetensors"), net, meta)


def test_header_length_bytes_are_not_mistaken_for_a_pickle(env, tmp_path):
    """A safetensors header length whose low byte is 0x80, or whose low bytes spell 'PK', is a valid file (the
    metadata this issue adds made the Train Classifier's own CLI output hit the first case)."""
    gio = H.pack_module("guidance_core.classifiers.classifier_files")
    na = H.pack_module("guidance_core.classifiers.noise_aware")
    net = na.NoiseAwareClassifier(na.ClassifierConfig(in_channels=4, num_classes=3, base_channels=8))
    base = {
        "architecture": "noise_aware",
        "config": net.config.to_dict(),
        "labels": LABELS,
        "latent_channels": 4,
        "latent_format": "SD15",
        "parameterization": "eps",
    }
    path = str(tmp_path / "c.safetensors")

    def save(pad):
        gio.save_classifier(path, net, {**base, "note": "x" * pad})
        with open(path, "rb") as f:
            return int.from_bytes(f.read(8), "little")

    n0 = save(0)  # the header grows by one byte per padding byte (then is aligned to 8)
    for low, mask in ((0x80, 0xFF), (0x4B50, 0xFFFF)):  # first byte 0x80; first bytes b"PK"
        target = n0 + ((low - n0) % (mask + 1))
        pad = next(p for p in range(max(0, target - n0 - 8), target - n0 + 9) if save(p) & mask == low)
        assert gio.load_classifier(path)[1]["note"] == "x" * pad
    (tmp_path / "real.safetensors").write_bytes(b"PK\x03\x04" + b"\x00" * 60)  # a zip named .safetensors
    with pytest.raises(env["errors"].GuidanceConfigError, match="pickle/zip checkpoint"):
        gio.load_classifier(str(tmp_path / "real.safetensors"))


# ---------------------------------------------------------------- 4: latent space, not only channels
def with_latent_format(model, fmt):
    m = model.clone()
    m.add_object_patch("latent_format", fmt)
    return m


def test_other_latent_format_is_refused_unless_allowed(env):
    import comfy.latent_formats as LF

    err = env["errors"].GuidanceConfigError
    sd15 = with_latent_format(gmm_model(env), LF.SD15())
    sdxl = with_latent_format(gmm_model(env), LF.SDXL())
    clf = trained_classifier(env, sd15, "sd15-classifier")
    assert clf.meta["latent_format"] == "SD15"
    patch(sd15, clf)  # its own latent space
    with pytest.raises(
        err,
        match=r"'sd15-classifier' was trained on SD15 latents, the model uses SDXL latents.*"
        r"allow_other_latent_format",
    ):
        patch(sdxl, clf)
    with pytest.raises(err, match="trained on SD15 latents, the model uses SDXL latents"):
        H.run_node(
            "GuidanceLabClassifierSampler",
            sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0],
            model=sdxl,
            classifier=clf,
            **guidance_args(),
        )
    guided = patch(sdxl, clf, allow_other_latent_format=True)  # the user's explicit choice
    assert torch.isfinite(ksample(guided, steps=3)).all()
    # a latent-format patch applied after the guidance node is caught when sampling starts
    later = with_latent_format(patch(sd15, clf), LF.SDXL())
    with pytest.raises(err, match="trained on SD15 latents, the model uses SDXL latents"):
        ksample(later, steps=3)


def test_toy_classifier_is_accepted_on_the_toy_model(env):
    with torch.inference_mode():
        toy, world = H.run_node("GuidanceLabToyModelLoader", toy_model="fashion_diffusion.safetensors")
        clf = H.run_node("GuidanceLabClassifierLoader", classifier_name="toy_fashion_classifier.safetensors")[0]
    assert clf.meta["latent_format"] == "ToyLatent" and clf.input_scaling == {"kind": "edm", "sigma_data": 1.0}
    guided = H.run_node(
        "GuidanceLabClassifierGuidance", model=toy, classifier=clf, **guidance_args(target="Trouser", scale=3.0)
    )[0]
    assert guided is not toy


# ---------------------------------------------------------------- 5 and 8: the latent cache and steps = 0
@pytest.fixture(scope="module")
def playground(env, tmp_path_factory):
    """A 4-channel model with ComfyUI's Playground v2.5 latent format (per-channel mean/std), a real ComfyUI VAE
    (TAESD architecture, seeded random weights: 4-channel latents) and a small labeled image folder."""
    import comfy.latent_formats as LF
    import comfy.sd
    import comfy.taesd.taesd

    root = tmp_path_factory.mktemp("gl-edges")
    rng = np.random.default_rng(0)
    for lb in ("cat", "dog"):
        (root / "input" / "pets" / lb).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                root / "input" / "pets" / lb / f"{i}.png"
            )
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in comfy.taesd.taesd.TAESD(latent_channels=4).state_dict().items():
        if v.ndim == 4:
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        else:
            sd[k] = torch.full(v.shape, 1.0 if k == "vae_scale" else 0.0)
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=sd)
    model = with_latent_format(gmm_model(env, "EDM", "v", EDM), LF.SDXL_Playground_2_5())
    with H.user_folders(root):
        yield {"root": root, "vae": vae, "model": model}


def train_node(pg, **kw):
    args = dict(
        model=pg["model"],
        vae=pg["vae"],
        dataset="pets",
        output_name="pets",
        steps=0,
        batch_size=2,
        lr=1e-3,
        seed=0,
        resolution=32,
        sigma_distribution="log_uniform",
        class_balance=False,
        width=8,
    )
    args.update(kw)
    with torch.inference_mode():
        return H.run_node("GuidanceLabTrainClassifier", **args)


def test_cache_holds_comfyuis_process_in_output(env, playground):
    import comfy.latent_formats as LF

    ds = H.pack_module("guidance_core.datasets")
    train = H.pack_module("guidance_core.train")
    _, _, report = train_node(playground)
    tensors, meta = ds.load_latent_cache(json.loads(report)["latent_cache"])
    assert meta["latent_format"] == "SDXL_Playground_2_5"
    assert meta["input_scaling"] == {"kind": "edm", "sigma_data": 0.5}
    # what the command-line trainer trains on ...
    trainer = train.build(tensors, meta, env["TR"].TrainConfig(steps=1, batch_size=2, arch={"base_channels": 8}), "cpu")
    # ... equals ComfyUI's own process_in of the VAE's latents of the same images
    items, names = ds.scan_dataset(str(playground["root"] / "input" / "pets"))
    images = torch.from_numpy(np.stack([ds.load_image(p, 32) for p, _ in items]))
    with torch.inference_mode():
        want = LF.SDXL_Playground_2_5().process_in(playground["vae"].encode(images).float())
    assert trainer.latents.shape == want.shape == (6, 4, 4, 4)
    torch.testing.assert_close(trainer.latents, want.clone(), rtol=1e-5, atol=1e-5)
    assert trainer.spec.input_scaling == {"kind": "edm", "sigma_data": 0.5}


def test_old_raw_latent_cache_is_refused(env, tmp_path):
    from safetensors.torch import save_file

    ds = H.pack_module("guidance_core.datasets")
    old = tmp_path / "old.safetensors"
    save_file(
        {"latents": torch.zeros(2, 4, 4, 4), "labels": torch.zeros(2, dtype=torch.long)},
        str(old),
        metadata={
            "guidance_lab_cache": json.dumps(
                {"format": ds.CACHE_FORMAT, "labels": ["a"], "scale_factor": 0.5, "shift_factor": 0.0}
            )
        },
    )
    with pytest.raises(env["errors"].GuidanceConfigError, match="latent cache version 1.*steps = 0"):
        ds.load_latent_cache(str(old))


def test_steps_zero_classifier_gives_a_clear_message(env, playground):
    err = env["errors"].GuidanceConfigError
    clf, _, report = train_node(playground, output_name="cache_only")
    cache = json.loads(report)["latent_cache"]
    assert not (playground["root"] / "classifiers" / "cache_only.safetensors").exists()
    msg = r"Train Classifier ran with steps = 0 \(cache only.*produced no classifier; set its steps > 0"
    with pytest.raises(err, match=msg) as info:
        patch(playground["model"], clf, allow_other_latent_format=True)
    assert cache in str(info.value)
    with pytest.raises(err, match=msg):
        H.run_node(
            "GuidanceLabClassifierSampler",
            sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0],
            model=playground["model"],
            classifier=clf,
            **guidance_args(),
        )
    with pytest.raises(err, match="classifier is None"):
        patch(playground["model"], None)


# ---------------------------------------------------------------- 5-D models: one frame guided, a video refused
def test_video_latents_are_refused_when_sampling_starts_and_one_frame_is_guided(env):
    """Noise-aware classifiers are 2-D: on a model with 5-D latents (ComfyUI's Wan 2.1 at tiny width) the guidance
    patch is accepted, a video latent (3 frames) is refused when sampling starts, before any step, naming its
    shape, and an image (one frame [B, C, 1, H, W], as Qwen-Image and Cosmos-Predict2 sample) is guided."""
    from devkit import families

    name = "Wan 2.1 (video, 5-D)"
    wan, fam = families.model(name), families.FAMILIES[name]
    errors = env["errors"]
    net_mod = H.pack_module("guidance_core.classifiers.noise_aware")
    with torch.inference_mode(False):
        net = net_mod.NoiseAwareClassifier(net_mod.ClassifierConfig(in_channels=16, num_classes=2, base_channels=16))
    clf = H.pack_module("nodes.classifier_nodes").LoadedClassifier(
        net, {"labels": ["a", "b"], "latent_channels": 16, "latent_format": "Wan21", "parameterization": "flow"}, "v"
    )
    guided = patch(wan, clf, target="a", scale=10.0)
    video = fam.latent(1)
    assert video["samples"].shape[2] == 3
    one_frame = {"samples": video["samples"][:, :, :1].clone()}

    def run(model, latent):
        with torch.inference_mode():
            return H.run_node(
                "KSampler",
                model=model,
                seed=3,
                steps=3,
                cfg=1.0,
                sampler_name="euler",
                scheduler="normal",
                positive=fam.cond(1),
                negative=fam.cond(2),
                latent_image=latent,
                denoise=1.0,
            )[0]["samples"]

    calls = H.RowCounter(wan)
    try:
        with pytest.raises(
            errors.GuidanceConfigError,
            match=r"classifier 'v' guides images: this latent "
            r"\[1, 16, 3, 8, 8\] is a video of 3 frames",
        ):
            run(guided, video)
        assert calls.calls == []  # refused before the first model call
        out, plain = run(guided, one_frame), run(wan, one_frame)
    finally:
        calls.close()
    assert out.shape == plain.shape == (1, 16, 1, 8, 8) and torch.isfinite(out).all()
    assert float((out - plain).abs().max()) > 0  # the guidance acted


def test_train_cache_of_a_5d_model_holds_one_frame_as_an_image(env, tmp_path):
    """Train Classifier on a model with 5-D latents: a video VAE's latents of an image [N, C, 1, h, w] (and a 2-D VAE's
    [N, C, h, w]) are cached as [N, C, h, w] after the family's own process_in on the 5-D form (Wan 2.1's
    per-channel statistics are shaped for 5-D); latents of several frames are refused."""
    from devkit import families

    wan = families.model("Wan 2.1 (video, 5-D)")
    fmt = wan.get_model_object("latent_format")
    TN = env["training_nodes"]
    raw = torch.randn(3, 16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    want = fmt.process_in(raw.clone())[:, :, 0]
    labels = torch.tensor([0, 1, 0])
    for given in (raw, raw[:, :, 0]):
        got = TN.write_cache(str(tmp_path / "c.safetensors"), wan, given, labels, {"labels": ["a", "b"]}, {})
        assert got.shape == (3, 16, 4, 4) and torch.equal(got, want)
    assert not torch.equal(want, raw[:, :, 0])  # process_in did act (per channel)
    with pytest.raises(
        env["errors"].GuidanceConfigError,
        match=r"Train Classifier guides images: this latent "
        r"\[3, 16, 2, 4, 4\] is a video of 2 frames",
    ):
        TN.write_cache(
            str(tmp_path / "d.safetensors"), wan, torch.randn(3, 16, 2, 4, 4), labels, {"labels": ["a", "b"]}, {}
        )
