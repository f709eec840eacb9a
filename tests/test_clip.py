"""Zero-shot CLIP classifier guidance (open_clip) inside a real ComfyUI.

A tiny random open_clip architecture (registered with open_clip.add_model_config) saved as
.safetensors and loaded through the loader node; ComfyUI's own VAE class (AutoencoderKL) at small
width; ComfyUI's UNetModel at tiny width with SD1.5's latent format (which carries the linear
latent->RGB factors). Models and VAE are built under torch.inference_mode, as ComfyUI loads them,
so their weights are inference tensors."""

import json

import pytest
import torch

from devkit import comfy_host as H

pytestmark = pytest.mark.comfy

ARCH = "GLTinyCLIP-test"
TINY_CLIP = H.tiny_clip_config(layers=2)
LABELS = ["a red car", "a blue car", "a green tree"]
TARGET = 1
H_FD = 0.3  # along a unit vector of 2048 entries (each ~0.007; x ~ 2): float32 rounding ~1e-7/h dominates below


def small_vae(dtype=None):
    """ComfyUI's VAE at width 32, 2x upscale, 4 latent channels, random weights (devkit.comfy_host.tiny_vae)."""
    return H.tiny_vae(4, seed=0, dtype=dtype)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random open_clip model saved where the loader node finds it, a small VAE, a tiny UNet with SD1.5's
    latent format, and the pack's CLIP modules."""
    H.boot()
    import open_clip
    import folder_paths
    import comfy.latent_formats
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("guidance_clip")
    (d / f"{ARCH}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(d / f"{ARCH}.json"))
    torch.manual_seed(0)
    net = open_clip.create_model(ARCH, pretrained=None, pretrained_text=False, pretrained_image=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "tiny.safetensors"))
    folder_paths.add_model_folder_path("guidance_clip", str(d))
    vae = small_vae()
    with torch.inference_mode():  # ComfyUI loads models under inference mode: inference-tensor weights
        unet = H.tiny_model("eps")
    unet.model.latent_format = comfy.latent_formats.SD15()  # 4 channels, scale 0.18215, latent_rgb_factors
    return {
        "dir": d,
        "net": net,
        "vae": vae,
        "unet": unet,
        "CL": H.pack_module("guidance_core.classifiers.clip"),
        "G": H.pack_module("guidance_core.classifier_guidance"),
        "errors": H.pack_module("guidance_core.errors"),
        "nodes": H.pack_module("nodes.clip_nodes"),
        "cnodes": H.pack_module("nodes.classifier_nodes"),
    }


def load(tiny_clip, decode="linear", gradient="detached", cutouts=0, tau=0.0, labels=LABELS, vae=True):
    with torch.inference_mode():  # as ComfyUI's executor runs the loader
        return H.run_node(
            "GuidanceLabCLIPClassifierLoader",
            architecture=ARCH,
            checkpoint="tiny.safetensors",
            labels="\n".join(labels),
            decode=decode,
            gradient=gradient,
            cutouts=cutouts,
            tau=tau,
            vae=tiny_clip["vae"] if vae else None,
        )[0]


def guide_args(**kw):
    args = dict(
        target=LABELS[TARGET], scale=30.0, sigma_lo=0.0, sigma_hi=1.0e4, every_n=1, rms_clamp=0.0, dtype="float32"
    )
    args.update(kw)
    return args


def ksample(model, batch=2, steps=6, seed=3, cfg=3.0):
    with torch.inference_mode():
        return H.run_node(
            "KSampler",
            model=model,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name="euler",
            scheduler="normal",
            positive=H.cond(1),
            negative=H.cond(2),
            latent_image=H.empty_latent(batch, 16),
            denoise=1.0,
        )[0]["samples"]


def final_logits(tiny_clip, clf, samples):
    """CLIP logits of the final image, as the classifier sees it (linear map or VAE decode)."""
    fmt = tiny_clip["unet"].model.latent_format
    with torch.inference_mode(False), torch.no_grad():
        z = fmt.process_in(samples.clone())
        return clf.clip(clf.to_rgb(fmt)(z))


def weights_state(module):
    return [(id(p), p.is_inference()) for p in module.parameters()]


# ---------------------------------------------------------------- core: classifier and preprocessing
def test_zero_shot_logits_equal_open_clip_formula(tiny_clip):
    CL, net = tiny_clip["CL"], tiny_clip["net"]
    clip = load(tiny_clip).clip
    assert clip.num_classes == 3 and clip.size == (32, 32)
    assert float(clip.tau) == pytest.approx(float(net.logit_scale.detach().exp()))
    import open_clip

    img = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # open_clip's own zero-shot recipe: shortest-side resize to 32 + center crop, mean/std, encode_*(normalize)
        x = torch.nn.functional.interpolate(img, size=(38, 32), mode="bicubic", antialias=True)[..., 3:35, :]
        mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        fi = net.encode_image((x - mean) / std, normalize=True)
        ft = net.encode_text(open_clip.get_tokenizer(ARCH)(LABELS), normalize=True)
        want = net.logit_scale.exp() * fi @ ft.t()
        torch.testing.assert_close(clip(img), want, rtol=1e-4, atol=1e-4)
        # a user-set tau scales the logits
        assert torch.allclose(load(tiny_clip, tau=7.0).clip(img), want / net.logit_scale.exp() * 7.0, atol=1e-4)
    # cutouts: the same boxes at one sigma (one function per step), new boxes at the next
    b1, b2, b3 = (CL.cutout_boxes(40, 48, 4, 0, s) for s in (2.5, 2.5, 1.7))
    assert b1 == b2 and b1 != b3 and all(20 <= side <= 40 for _, _, side in b1)


def test_labels_architectures_and_files(tiny_clip, tmp_path):
    CL, errors = tiny_clip["CL"], tiny_clip["errors"]
    E = errors.GuidanceConfigError
    assert CL.parse_labels("a red car\n\n  a blue car \n") == ["a red car", "a blue car"]
    for bad, msg in [
        ("", "labels is empty"),
        ("cat\nCat", "given twice"),
        ("red, car", "contains ','"),
        ("cat:2", "ends in ':<number>'"),
    ]:
        with pytest.raises(E, match=msg):
            CL.parse_labels(bad)
    archs = CL.offline_architectures()
    assert "ViT-B-32" in archs and ARCH in archs and not any("SigLIP" in a for a in archs)
    with pytest.raises(E, match="only .safetensors"):
        (tmp_path / "x.bin").write_bytes(b"\x80\x02fake")
        CL.load_clip(ARCH, str(tmp_path / "x.bin"))
    with pytest.raises(E, match="x.safetensors is a pickle/zip checkpoint"):
        (tmp_path / "x.safetensors").write_bytes(b"PK\x03\x04 zip pickle")
        CL.load_clip(ARCH, str(tmp_path / "x.safetensors"))
    with pytest.raises(E, match="x.safetensors is not a safetensors file"):
        (tmp_path / "x.safetensors").write_bytes(b"\x10\x00\x00")
        CL.load_clip(ARCH, str(tmp_path / "x.safetensors"))
    wide = json.loads(json.dumps(TINY_CLIP))
    wide["vision_cfg"]["width"] = 96
    (tmp_path / f"{ARCH}-wide.json").write_text(json.dumps(wide))
    import open_clip

    open_clip.add_model_config(str(tmp_path / f"{ARCH}-wide.json"))
    with pytest.raises(E, match=f"does not hold weights of open_clip architecture '{ARCH}-wide'"):
        CL.load_clip(f"{ARCH}-wide", str(tiny_clip["dir"] / "tiny.safetensors"))
    with pytest.raises(E, match="is not an open_clip model"):
        CL.load_clip("NoSuchNet", str(tiny_clip["dir"] / "tiny.safetensors"))


def test_loader_errors_name_the_folder_and_the_fix(tiny_clip, tmp_path):
    import folder_paths

    E, nodes = tiny_clip["errors"].GuidanceConfigError, tiny_clip["nodes"]
    saved = folder_paths.folder_names_and_paths[nodes.FOLDER]
    empty = tmp_path / "empty"
    empty.mkdir()
    folder_paths.folder_names_and_paths[nodes.FOLDER] = ([str(empty)], saved[1])
    try:
        assert nodes.GuidanceLabCLIPClassifierLoader.define_schema().inputs[1].options == [nodes.NO_FILES]
        with pytest.raises(E, match=f"no CLIP checkpoint: the folder guidance_clip \\({empty}\\) has no"):
            H.run_node(
                "GuidanceLabCLIPClassifierLoader",
                architecture=ARCH,
                checkpoint=nodes.NO_FILES,
                labels="a\nb",
                decode="linear",
                gradient="detached",
                cutouts=0,
                tau=0.0,
            )
    finally:
        folder_paths.folder_names_and_paths[nodes.FOLDER] = saved
    assert saved[1] == {".safetensors"}
    with pytest.raises(E, match="'missing.safetensors' is not in the folder guidance_clip"):
        H.run_node(
            "GuidanceLabCLIPClassifierLoader",
            architecture=ARCH,
            checkpoint="missing.safetensors",
            labels="a\nb",
            decode="linear",
            gradient="detached",
            cutouts=0,
            tau=0.0,
        )
    with pytest.raises(E, match="decode='vae' needs a VAE"):
        load(tiny_clip, decode="vae", vae=False)
    # checks against the model, before sampling
    plain = H.tiny_model("eps")  # ComfyUI's base LatentFormat: no latent_rgb_factors
    with pytest.raises(E, match="latent format LatentFormat has no latent_rgb_factors; use decode='vae'"):
        H.run_node("GuidanceLabClassifierGuidance", model=plain, classifier=load(tiny_clip), **guide_args())
    shapes = H.demo_module().gmm_model()  # 3-channel latents
    with pytest.raises(E, match="the VAE reads 4 latent channels, the model produces 3"):
        H.run_node(
            "GuidanceLabClassifierGuidance", model=shapes, classifier=load(tiny_clip, decode="vae"), **guide_args()
        )
    with pytest.raises(E, match="unknown label 'a cat'.*known labels: a red car, a blue car, a green tree"):
        H.run_node(
            "GuidanceLabClassifierGuidance",
            model=tiny_clip["unet"],
            classifier=load(tiny_clip),
            **guide_args(target="a cat"),
        )


def test_autograd_safe_weights_swaps_and_restores(tiny_clip):
    """ComfyUI's weights are inference tensors: backward through them fails; inside autograd_safe_weights
    it works, and afterwards the module holds its original tensors again."""
    G = tiny_clip["G"]
    with torch.inference_mode():
        lin = torch.nn.Linear(3, 2)
    original = [lin.weight, lin.bias]
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.randn(4, 3, requires_grad=True)
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            lin(x).sum().backward()
        with G.autograd_safe_weights(lin, lin) as n:  # the same module twice: one copy
            assert n == 2 and not lin.weight.is_inference()
            y = lin(x).sum()
        assert lin.weight is original[0] and lin.bias is original[1] and lin.weight.is_inference()
        (g,) = torch.autograd.grad(y, x)  # the graph kept the copies
    torch.testing.assert_close(g, original[0].sum(0).expand(4, 3))
    st = G.straight_through(torch.full((2,), 5.0), x[0, :2] * 3)
    assert torch.allclose(st, torch.full((2,), 5.0)) and torch.autograd.grad(st.sum(), x)[0][0].tolist() == [
        3.0,
        3.0,
        0.0,
    ]


# ---------------------------------------------------------------- Must show 1: gradient = finite differences
@pytest.mark.parametrize("decode", ["linear", "vae"])
def test_gradient_matches_finite_differences(tiny_clip, decode):
    """grad_D sum_y w_y log p(y | image(D)) through the linear map or ComfyUI's VAE (float64, inference-
    tensor weights), with 2 cutouts, against central differences along random directions."""
    G = tiny_clip["G"]
    clf = load(tiny_clip, decode=decode, cutouts=2)
    if decode == "vae":
        clf.vae = small_vae(dtype=torch.float64)
    clf.clip.double()
    classify = clf.bind(tiny_clip["unet"])
    g = torch.Generator().manual_seed(5)
    d = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) * 0.5
    sigma = torch.tensor([1.3, 1.3], dtype=torch.float64)
    w = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, -0.5]], dtype=torch.float64)

    def f(dd):
        with torch.inference_mode(False), torch.no_grad():
            return float((torch.log_softmax(classify(dd, sigma), -1) * w).sum())

    with torch.inference_mode():  # as inside ComfyUI's sampling
        grad = G.log_prob_gradient(classify, lambda x: x, d, sigma, w)
    assert grad.shape == d.shape and grad.abs().max() > 0
    h, worst = 1e-4, 0.0
    for v in [grad / grad.norm()] + [torch.randn(d.shape, generator=g, dtype=torch.float64) for _ in range(3)]:
        v = v / v.norm()
        fd = (f(d + h * v) - f(d - h * v)) / (2 * h)
        worst = max(worst, abs(fd - float((grad * v).sum())) / float(grad.norm()))
    print(f"finite differences, decode={decode}: max |fd - g.v| / |g| = {worst:.2e}")
    assert worst < 1e-5


@pytest.mark.parametrize("kind", ["unet", "gmm"])
def test_through_model_gradient_matches_finite_differences(tiny_clip, kind):
    """g = grad_x sum_y w_y log p(y | D(x)) from the hook's through-the-model path, inside a real KSampler
    step, against central differences of the same function (D = ComfyUI's CFG combination of the
    recomputed predictions). unet: ComfyUI's UNet with inference-tensor weights (cfg 3), which are the same
    tensors afterwards. gmm: the exact Gaussian-mixture denoiser (cfg 1, no negative), whose Jacobian is far
    from the identity: there the detached gradient misses the finite differences by far."""
    import comfy.latent_formats
    import comfy.samplers

    G, cnodes = tiny_clip["G"], tiny_clip["cnodes"]
    if kind == "unet":
        model, cfg = tiny_clip["unet"], 3.0
    else:
        means = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        model, cfg = H.demo_module().gmm_model(means, 0.3), 1.0
        model.model.latent_format = comfy.latent_formats.SD15()
    clf = load(tiny_clip, decode="linear", gradient="through_model")
    w = torch.tensor([[0.0, 1.0, -0.5]]).expand(2, -1)
    through = G.ClassifierGuidance(clf.bind(model), w, G.ClassifierGuidanceConfig(), wants=clf.wants)
    detached = G.ClassifierGuidance(through.classifier, w, G.ClassifierGuidanceConfig(), wants=G.DENOISED_DETACHED)
    found = {}

    def probe(args):
        if found or float(args["sigma"].max()) > 3.0:
            return args["denoised"]
        x, sigma, d0 = args["input"], args["sigma"], args["denoised"]

        def f(xx):
            with torch.inference_mode(False), torch.no_grad():
                conds = [list(args["cond"])] + ([list(args["uncond"])] if args["uncond"] is not None else [])
                out = comfy.samplers.calc_cond_batch(
                    args["model"], conds, xx.clone(), sigma.clone(), args["model_options"]
                )
                d = out[1] + args["cond_scale"] * (out[0] - out[1]) if len(out) == 2 else out[0]
                return float((torch.log_softmax(through.classifier(d, sigma), -1) * w).sum())

        grads = {
            "through": through.gradient(
                d0, x, sigma, None, w, denoise_fn=lambda xx: cnodes.differentiable_denoised(args, xx)
            ),
            "detached": detached.gradient(d0, x, sigma, None, w),
        }
        g = torch.Generator().manual_seed(0)
        dirs = [grads["through"], torch.randn(x.shape, generator=g)]
        fds = [(f(x + H_FD * v / v.norm()) - f(x - H_FD * v / v.norm())) / (2 * H_FD) for v in dirs]
        for name, grad in grads.items():
            found[name] = max(
                abs(fd - float((grad * v / v.norm()).sum())) / float(grad.norm()) for fd, v in zip(fds, dirs)
            )
        return d0

    before = weights_state(model.model.diffusion_model)
    m = model.clone()
    m.set_model_sampler_post_cfg_function(probe)
    ksample(m, batch=2, cfg=cfg)
    print(
        f"{kind}: through-model gradient vs finite differences: rel. error {found['through']:.2e} "
        f"(detached gradient: {found['detached']:.2e})"
    )
    assert found["through"] < 1e-3
    if kind == "gmm":
        assert found["detached"] > 0.5
    after = weights_state(model.model.diffusion_model)
    assert after == before
    if kind == "unet":
        assert after and all(inf for _, inf in after)  # the same inference tensors: swapped back, not replaced


# ---------------------------------------------------------------- Must show 1 + 2: guidance raises the target
@pytest.mark.parametrize(
    "decode,gradient,route",
    [
        ("linear", "detached", "patch"),
        ("vae", "detached", "patch"),
        ("linear", "through_model", "sampler"),
        ("vae", "through_model", "patch"),
    ],
)
def test_guidance_raises_the_target_logit(tiny_clip, decode, gradient, route):
    """Same seed guided vs unguided: the target label's CLIP logit (and probability) of the final image
    rises for every batch image; all under inference mode with ComfyUI's own VAE and UNet."""
    unet, vae = tiny_clip["unet"], tiny_clip["vae"]
    clf = load(tiny_clip, decode=decode, gradient=gradient, cutouts=1)
    unet_before, vae_before = weights_state(unet.model.diffusion_model), weights_state(vae.first_stage_model)
    assert all(inf for _, inf in unet_before + vae_before)  # loaded as ComfyUI loads: inference tensors
    ref = ksample(unet)
    if route == "patch":
        out = ksample(H.run_node("GuidanceLabClassifierGuidance", model=unet, classifier=clf, **guide_args())[0])
    else:
        with torch.inference_mode():
            sampler = H.run_node(
                "GuidanceLabClassifierSampler",
                sampler=H.run_node("KSamplerSelect", sampler_name="euler")[0],
                model=unet,
                classifier=clf,
                **guide_args(),
            )[0]
            guider = H.run_node("CFGGuider", model=unet, positive=H.cond(1), negative=H.cond(2), cfg=3.0)[0]
            sig = H.run_node("BasicScheduler", model=unet, scheduler="normal", steps=6, denoise=1.0)[0]
            out = H.run_node(
                "SamplerCustomAdvanced",
                noise=H.run_node("RandomNoise", noise_seed=3)[0],
                guider=guider,
                sampler=sampler,
                sigmas=sig,
                latent_image=H.empty_latent(2, 16),
            )[0]["samples"]
    lr, lg = final_logits(tiny_clip, clf, ref), final_logits(tiny_clip, clf, out)
    rise = (lg[:, TARGET] - lr[:, TARGET]).tolist()
    p_ref, p_out = lr.softmax(-1)[:, TARGET], lg.softmax(-1)[:, TARGET]
    print(
        f"{decode}/{gradient}/{route}: target logit {lr[:, TARGET].tolist()} -> {lg[:, TARGET].tolist()}, "
        f"p {p_ref.tolist()} -> {p_out.tolist()}"
    )
    assert torch.isfinite(out).all()
    assert min(rise) > 0.2, rise
    assert (p_out > p_ref).all()
    assert weights_state(unet.model.diffusion_model) == unet_before
    assert weights_state(vae.first_stage_model) == vae_before


def test_scale0_is_unguided_and_the_model_is_untouched(tiny_clip):
    import copy

    unet = tiny_clip["unet"]
    before = copy.deepcopy(unet.model_options)
    ref = ksample(unet, batch=1, steps=4)
    clf = load(tiny_clip, decode="vae", gradient="through_model")
    out = ksample(
        H.run_node("GuidanceLabClassifierGuidance", model=unet, classifier=clf, **guide_args(scale=0.0))[0],
        batch=1,
        steps=4,
    )
    assert torch.equal(out, ref)
    assert unet.model_options == before and unet.get_additional_models() == []


# ---------------------------------------------------------------- issue 13: every model family's latent format
def family_latent(name, seed=0):
    """A random latent of the family's shape as ComfyUI samples it (image latents of a 3-D latent format, e.g.
    Qwen-Image's, get their frame axis as comfy.sample.fix_empty_latent_channels gives it)."""
    from devkit import families as F

    z = torch.randn(F.FAMILIES[name].latent(2)["samples"].shape, generator=torch.Generator().manual_seed(seed))
    return z.unsqueeze(2) if F.latent_dims(name) == 3 and z.ndim == 4 else z


def test_linear_decode_is_each_familys_own_preview_map(tiny_clip):
    """decode='linear' uses the family's own latent_rgb_factors (and bias): every frame of every item equals
    ComfyUI's linear preview formula, and item 0 / frame 0 ComfyUI's own Latent2RGBPreviewer image (uint8)."""
    import numpy as np

    from devkit import families as F
    import latent_preview

    clf = load(tiny_clip)
    for name in F.FAMILIES:
        fmt = F.model(name).get_model_object("latent_format")
        rgb_map = clf.to_rgb(fmt)
        w = torch.tensor(fmt.latent_rgb_factors, dtype=torch.float32)
        assert torch.equal(rgb_map.factors, w), name
        z = family_latent(name)
        with torch.no_grad():
            rgb = rgb_map(z)
        assert rgb.shape == (z.shape[0], 3, *z.shape[2:]), name
        b = fmt.latent_rgb_factors_bias
        want = torch.nn.functional.linear(z.movedim(1, -1), w.t(), None if b is None else torch.tensor(b))
        torch.testing.assert_close(rgb, (want.movedim(-1, 1) + 1) / 2, rtol=1e-5, atol=1e-5, msg=name)
        preview = latent_preview.Latent2RGBPreviewer(fmt.latent_rgb_factors, b)
        theirs = np.asarray(preview.decode_latent_to_preview(z.clone()), dtype=np.int16)
        first = rgb[0, :, 0] if z.ndim == 5 else rgb[0]
        ours = (first.clamp(0, 1) * 255).to(torch.uint8).movedim(0, -1).numpy().astype(np.int16)
        assert np.abs(ours - theirs).max() <= 1, name


def test_video_latents_are_classified_frame_by_frame(tiny_clip):
    """A 5-D latent: the logits are the mean of the frames' logits (each frame through the linear map and CLIP);
    Classifier Guidance with a CLIP classifier runs on a video family (Wan 2.1) and changes its result, and
    decode='vae' on video latents is refused before sampling."""
    from devkit import families as F

    name = "Wan 2.1 (video, 5-D)"
    model, fam = F.model(name), F.FAMILIES[name]
    fmt = model.get_model_object("latent_format")
    clf = load(tiny_clip, cutouts=1)
    classify = clf.bind(model)
    z = family_latent(name)
    sigma = torch.tensor([0.7, 0.7])
    with torch.inference_mode(False), torch.no_grad():
        got = classify(z, sigma)
        rgb = clf.to_rgb(fmt)(z)
        per_frame = torch.stack([clf.clip(rgb[:, :, t], sigma) for t in range(z.shape[2])], 1)
    assert got.shape == (2, len(LABELS))
    torch.testing.assert_close(got, per_frame.mean(1), rtol=1e-5, atol=1e-5)
    run = dict(
        seed=3,
        steps=3,
        cfg=3.0,
        sampler_name="euler",
        scheduler="normal",
        positive=fam.cond(1),
        negative=fam.cond(2),
        latent_image=fam.latent(1),
        denoise=1.0,
    )
    with torch.inference_mode():
        ref = H.run_node("KSampler", model=model, **run)[0]["samples"]
        out = H.run_node(
            "KSampler",
            model=H.run_node("GuidanceLabClassifierGuidance", model=model, classifier=clf, **guide_args())[0],
            **run,
        )[0]["samples"]
    assert out.shape == ref.shape and torch.isfinite(out).all() and (out - ref).abs().max() > 1e-4
    with pytest.raises(
        tiny_clip["errors"].GuidanceConfigError,
        match=r"decode='vae' on the model's video latent format "
        r"Wan21 \(\[B, C, T, H, W\]\) is not supported; use "
        r"decode='linear'",
    ):
        H.run_node(
            "GuidanceLabClassifierGuidance", model=model, classifier=load(tiny_clip, decode="vae"), **guide_args()
        )
