"""Issue 14: guidance terms beyond prompts: perturbed-self terms (PAG, SEG, SLG) batched with the prompt rows,
model terms (autoguidance) and adaptive schedules, through the CFG Patch (KSampler) and the CFG Guider
(SamplerCustomAdvanced), inside a real ComfyUI, compared with ComfyUI's own nodes."""

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import (
    EMPTY,
    OTHER,
    custom_sample,
    ksample,
    native_guider,
    one_step,
    our_guider,
    patch,
    schedule,
)

pytestmark = pytest.mark.comfy

GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError
TOL = dict(rtol=1e-5, atol=1e-5)


def f64(patcher):
    """The network in float64: ComfyUI's PAG / SLG nodes run the perturbed row in a forward of its own, a batch of
    another size, whose float32 matmuls round differently (up to 3e-5 after 8 steps at cfg 5, against PAG effects
    of 4e-4 on these tiny random models); in float64 the comparison is exact to the sampler's float32 rounding."""
    import torch

    net = patcher.model.diffusion_model
    net.to(torch.float64)
    net.dtype = torch.float64
    return patcher


@pytest.fixture(scope="module")
def models(models):
    """The tiny eps, v and flow models of tests/conftest.py, in float64."""
    return {k: f64(m) for k, m in models.items()}


def perturbed(mode="pag", weight=3.0, blocks="", seg_sigma=10.0, **kw):
    return H.run_node("GuidanceLabPerturbedTerm", mode=mode, blocks=blocks, weight=weight, seg_sigma=seg_sigma, **kw)[0]


def model_term(model, weight=1.0, **kw):
    return H.run_node("GuidanceLabModelTerm", model=model, weight=weight, **kw)[0]


def comfy_pag(model, scale):
    return H.run_node("PerturbedAttentionGuidance", model=model, scale=scale)[0]


def assert_same_effect(out, ref, plain):
    """out equals ref to 1% of the effect of the guidance term (ref - plain), which must be there: an absolute
    tolerance would pass any two results when the term barely moves outputs of size ~30."""
    effect, err = float((ref - plain).abs().max()), float((out - ref).abs().max())
    assert effect > 1e-5, f"the term has no effect ({effect}); the comparison would mean nothing"
    assert err <= 1e-2 * effect, f"difference {err} against an effect of {effect}"


def rows_per_call(model, run):
    counter = H.RowCounter(model)
    try:
        out = run()
    finally:
        counter.close()
    return out, [r for r, _ in counter.calls]


# ------------------------------------------------------------------ PAG: exact against ComfyUI's node, batched
@pytest.mark.parametrize("kind", ["eps", "v", "flow"])
def test_pag_term_equals_comfyui_pag_node(models, kind):
    """ComfyUI's PerturbedAttentionGuidance (middle block, post-CFG, a second model call) and the pack's PAG
    term (same block, rows in the CFG call) give the same samples, through KSampler and the GUIDER."""
    m = models[kind]
    ref = ksample(comfy_pag(m, 3.0), 5.0, steps=5)
    plain = ksample(m, 5.0, steps=5)
    assert_same_effect(ksample(patch(m, terms=perturbed("pag", 3.0)), 5.0, steps=5), ref, plain)
    ref_g = custom_sample(comfy_pag(m, 3.0), native_guider(comfy_pag(m, 3.0), 5.0), steps=5)
    assert_same_effect(custom_sample(m, our_guider(m, 5.0, terms=perturbed("pag", 3.0)), steps=5), ref_g, plain)


def test_pag_with_cfg_is_one_forward_of_three_rows(models):
    """Per step, CFG + PAG costs one batched forward of 3 rows (ComfyUI's node: 2 forwards, 2 + 1 rows)."""
    m = models["eps"]
    _, ours = rows_per_call(m, lambda: ksample(patch(m, terms=perturbed("pag", 3.0)), 5.0, steps=6))
    assert ours == [3] * 6
    native = comfy_pag(m, 3.0)
    _, theirs = rows_per_call(native, lambda: ksample(native, 5.0, steps=6))
    assert theirs == [2, 1] * 6


def test_zero_weight_terms_evaluate_nothing(models):
    """w = 0: no extra row, no extra call, the output is plain CFG bit for bit (perturbed and model terms)."""
    m, other = models["eps"], H.tiny_model("eps", seed=11)
    plain = ksample(m, 5.0, steps=5)
    terms = model_term(other, 0.0, terms=perturbed("pag", 0.0))
    out, rows = rows_per_call(m, lambda: ksample(patch(m, terms=terms), 5.0, steps=5))
    assert rows == [2] * 5
    assert torch.equal(out, plain)
    out_o, rows_o = rows_per_call(other, lambda: ksample(patch(m, terms=terms), 5.0, steps=5))
    assert rows_o == [] and torch.equal(out_o, plain)


def separate_seg(model, scale, sigma):
    """SEG as a node in the style of ComfyUI's PerturbedAttentionGuidance would run it: a post-CFG hook that
    evaluates the positive again, in a call of its own, with the middle block's queries blurred."""
    import comfy.ldm.modules.attention as attention
    import comfy.model_patcher
    import comfy.samplers

    PT = H.pack_module("guidance_core.perturbed_terms")

    def seg_attention(q, k, v, extra_options, mask=None):
        h, w = extra_options["activations_shape"][-2:]
        return attention.optimized_attention(PT.blur_queries(q, h, w, sigma), k, v, extra_options["n_heads"])

    def post_cfg(args):
        opts = comfy.model_patcher.set_model_options_patch_replace(
            args["model_options"].copy(), seg_attention, "attn1", "middle", 0
        )
        (seg,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], opts)
        return args["denoised"] + (args["cond_denoised"] - seg) * scale

    m = model.clone()
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


def test_seg_term_equals_a_separate_call_seg():
    """SEG batched with the prompt rows equals SEG run in a call of its own (ComfyUI's PAG node's structure); a
    blur of std 0.01 token is the identity (the term adds nothing)."""
    m = f64(H.tiny_model("eps", seed=3))
    with torch.no_grad():  # sharper attention maps and a stronger attention branch than random weights give
        for name, p in m.model.diffusion_model.middle_block.named_parameters():
            if "attn1.to_q" in name or "attn1.to_k" in name:
                p.mul_(300.0)
            if "attn1.to_v" in name or "attn1.to_out" in name:
                p.mul_(10.0)
    plain = ksample(m, 5.0, steps=4)
    for sigma in (9999.0, 1.5):
        ref = ksample(separate_seg(m, 3.0, sigma), 5.0, steps=4)
        out, rows = rows_per_call(
            m, lambda: ksample(patch(m, terms=perturbed("seg", 3.0, seg_sigma=sigma)), 5.0, steps=4)
        )
        assert rows == [3] * 4
        assert_same_effect(out, ref, plain)
    ident = ksample(patch(m, terms=perturbed("seg", 3.0, seg_sigma=0.01)), 5.0, steps=4)
    assert float((ident - plain).abs().max()) <= 1e-2 * float((ref - plain).abs().max())


def test_seg_blur_matches_a_direct_gaussian():
    """The core blur equals a dense 2-D Gaussian filter with reflect padding, computed independently."""
    PT = H.pack_module("guidance_core.perturbed_terms")
    g = torch.Generator().manual_seed(0)
    h, w, sigma = 6, 5, 0.8
    q = torch.randn(2, h * w, 3, generator=g, dtype=torch.float64)
    r = 3  # ceil(3 * 0.8)
    ref = torch.zeros_like(q)
    grid = q.view(2, h, w, 3)

    def reflect(i, n):
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    weights = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma**2))
    weights = weights / weights.sum()
    for y in range(h):
        for x in range(w):
            acc = 0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    acc = acc + weights[dy + r] * weights[dx + r] * grid[:, reflect(y + dy, h), reflect(x + dx, w)]
            ref[:, y * w + x] = acc
    torch.testing.assert_close(PT.blur_queries(q, h, w, sigma), ref)
    assert torch.allclose(PT.blur_queries(q, h, w, 1e4), q.mean(1, keepdim=True).expand_as(q))


# ------------------------------------------------------------------ SLG on DiTs: exact against ComfyUI's node
@pytest.mark.parametrize(
    "family,double,single", [("SD3.5 (MMDiT, flow)", "0", ""), ("Flux.1 dev (guidance-distilled)", "0", "0")]
)
def test_slg_term_equals_comfyui_skip_layer_guidance(family, double, single):
    fam = F.FAMILIES[family]
    m = f64(fam.build())
    pos, neg = fam.cond(1), fam.cond(2)
    lat = fam.latent()
    kw = dict(model=m, double_layers=double, single_layers=single, scale=3.0, start_percent=0.0, end_percent=1.0)
    try:
        slg = H.run_node("SkipLayerGuidanceDiT", rescaling_scale=0.0, **kw)[0]
    except TypeError:  # ComfyUI 0.3.52's node has no rescaling_scale (0 = none, the same)
        slg = H.run_node("SkipLayerGuidanceDiT", **kw)[0]
    try:
        ref = ksample(slg, 4.0, steps=4, pos=pos, neg=neg, latent=lat)
    except Exception as e:  # noqa: BLE001  (comfy_kitchen's own exception class, absent before ComfyUI 0.33)
        if type(e).__name__ != "NoCapableBackendError":
            raise
        pytest.skip(
            f"this ComfyUI's Flux rope (comfy_kitchen) refuses float64 ({e}); the float64 comparison runs on "
            "ComfyUI 0.3.75 and 0.3.52"
        )
    blocks = ", ".join([f"double.{double}"] * bool(double) + [f"single.{single}"] * bool(single))
    terms = perturbed("slg", 3.0, blocks=blocks)
    out, rows = rows_per_call(m, lambda: ksample(patch(m, terms=terms), 4.0, steps=4, pos=pos, neg=neg, latent=lat))
    plain = ksample(m, 4.0, steps=4, pos=pos, neg=neg, latent=lat)
    assert_same_effect(out, ref, plain)
    # batched where ComfyUI tells DiT blocks their rows (transformer_options; 0.3.75); ComfyUI 0.3.52 does not: the
    # first batched call stops at the first skipped block, and from then on the perturbed rows run in a call of
    # their own, as ComfyUI's node does
    assert rows == ([3] * 4 if H.version_tuple(H.comfyui_version()) >= (0, 3, 75) else [3] + [2, 1] * 4)
    guider = our_guider(m, 4.0, positive=pos, negative=neg, terms=terms)
    assert_same_effect(
        custom_sample(m, guider, steps=4, latent=lat),
        custom_sample(slg, native_guider(slg, 4.0, pos, neg), steps=4, latent=lat),
        plain,
    )


def test_perturbation_on_blocks_the_model_lacks_is_refused_before_sampling(models):
    dit = F.FAMILIES["SD3.5 (MMDiT, flow)"].build()
    with pytest.raises(GuidanceConfigError, match=r"PAG and SEG need a UNet"):
        patch(dit, terms=perturbed("pag"))
    with pytest.raises(GuidanceConfigError, match=r"double.7, double.8, double.9 not in this model.*: double.0"):
        our_guider(
            dit,
            4.0,
            positive=F.FAMILIES["SD3.5 (MMDiT, flow)"].cond(1),
            negative=F.FAMILIES["SD3.5 (MMDiT, flow)"].cond(2),
            terms=perturbed("slg"),
        )
    with pytest.raises(GuidanceConfigError, match=r"output.9 .*not in this model"):
        patch(models["eps"], terms=perturbed("pag", blocks="output.9"))
    with pytest.raises(GuidanceConfigError, match=r"blocks item 0 'middle'"):
        perturbed("pag", blocks="middle")


# ------------------------------------------------------------------ model terms (autoguidance)
def test_model_term_with_the_same_model_adds_nothing(models):
    """A model term whose MODEL is the sampled one (same weights, same prompt) is D_ref itself: the output is
    exactly that of the run without it, with no extra call."""
    m = models["eps"]
    plain = ksample(m, 5.0, steps=5)
    out, rows = rows_per_call(m, lambda: ksample(patch(m, terms=model_term(m, 2.0)), 5.0, steps=5))
    assert torch.equal(out, plain) and rows == [2] * 5
    torch.testing.assert_close(
        custom_sample(m, our_guider(m, 5.0, terms=model_term(m.clone(), 2.0)), steps=5),
        custom_sample(m, native_guider(m, 5.0), steps=5),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("kind", ["eps", "v", "flow"])
def test_autoguidance_is_karras_formula(models, kind):
    """cfg 1 and a model term of weight w: D = D_bad + (1 + w)(D_good - D_bad) (Karras et al. 2024, eq. 2), the
    weak model evaluated once per step at the same x and sigma with the positive prompt."""
    good, bad = models[kind], H.tiny_model(kind, seed=21)
    w = 1.5
    d, _ = one_step(good, our_guider(good, 1.0, negative=None, terms=model_term(bad, w)))
    d_good, _ = one_step(good, our_guider(good, 1.0, negative=None))
    d_bad, _ = one_step(bad, our_guider(bad, 1.0, negative=None))
    torch.testing.assert_close(d, d_bad + (1 + w) * (d_good - d_bad), **TOL)
    _, rows_bad = rows_per_call(bad, lambda: ksample(patch(good, terms=model_term(bad, w)), 1.0, steps=4))
    assert rows_bad == [1] * 4


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_model_term_push_cap(models, kind):
    """max_ratio r: the push P = w (D_good - D_bad) becomes P min(1, r |D_good| / |P|) per sample (one step, D read
    from separate runs); r above the push's size is bit for bit the uncapped run; a cap that bites changes the result."""
    good, bad = models[kind], H.tiny_model(kind, seed=21)
    w = 3.0
    d_good, _ = one_step(good, our_guider(good, 1.0, negative=None))
    d_bad, _ = one_step(bad, our_guider(bad, 1.0, negative=None))
    push = w * (d_good - d_bad)
    size = float(push.norm() / d_good.norm())
    uncapped, _ = one_step(good, our_guider(good, 1.0, negative=None, terms=model_term(bad, w)))
    loose, _ = one_step(good, our_guider(good, 1.0, negative=None, terms=model_term(bad, w, max_ratio=size * 1.01)))
    assert torch.equal(loose, uncapped)
    r = size / 2
    capped, _ = one_step(good, our_guider(good, 1.0, negative=None, terms=model_term(bad, w, max_ratio=r)))
    torch.testing.assert_close(capped, d_good + push * (r * d_good.norm() / push.norm()), **TOL)
    assert float((capped - d_good).norm() / d_good.norm()) == pytest.approx(r, rel=1e-4)
    with pytest.raises(GuidanceConfigError, match=r"max_ratio=-1"):
        model_term(bad, w, max_ratio=-1.0)


def test_model_term_of_another_family_is_refused(models):
    with pytest.raises(GuidanceConfigError, match=r"parameterization flow, the sampled model eps"):
        patch(models["eps"], terms=model_term(models["flow"], 1.0))
    with pytest.raises(GuidanceConfigError, match=r"model class"):
        our_guider(models["eps"], 5.0, terms=model_term(H.tiny_model("eps", family="refiner"), 1.0))
    from devkit.sampling_forms import noise_scaled  # the same flow model with ModelNoiseScale 8 (HiDream-O1)

    with pytest.raises(GuidanceConfigError, match=r"noise_scale 8, the sampled model 1"):
        patch(models["flow"], terms=model_term(noise_scaled(models["flow"], 8.0), 1.0))


# ------------------------------------------------------------------ references
def test_term_references(models):
    """A prompt term measured against the positive: D += w (D_term - D_pos); against another term; an
    unconnected reference is refused naming it."""
    m = models["eps"]
    term = H.run_node("GuidanceLabTerm", conditioning=OTHER, weight=0.5, reference="positive")[0]
    d, _ = one_step(m, our_guider(m, 1.0, negative=None, terms=term))
    d_pos, _ = one_step(m, our_guider(m, 1.0, negative=None))
    d_other, _ = one_step(m, our_guider(m, 1.0, negative=None, positive=OTHER))
    torch.testing.assert_close(d, d_pos + 0.5 * (d_other - d_pos), **TOL)
    two = H.run_node(
        "GuidanceLabTerm",
        conditioning=EMPTY,
        weight=0.7,
        reference="term 1",
        terms=H.run_node("GuidanceLabTerm", conditioning=OTHER, weight=0.0, reference="positive")[0],
    )[0]
    d2, _ = one_step(m, our_guider(m, 1.0, negative=None, terms=two))
    d_empty, _ = one_step(m, our_guider(m, 1.0, negative=None, positive=EMPTY))
    torch.testing.assert_close(d2, d_pos + 0.7 * (d_empty - d_other), **TOL)
    with pytest.raises(GuidanceConfigError, match=r"reference='empty' but no empty conditioning"):
        our_guider(m, 5.0, terms=H.run_node("GuidanceLabTerm", conditioning=OTHER, weight=1.0, reference="empty")[0])
    with pytest.raises(GuidanceConfigError, match=r"reference='term 3'"):
        our_guider(m, 5.0, terms=H.run_node("GuidanceLabTerm", conditioning=OTHER, weight=1.0, reference="term 3")[0])


# ------------------------------------------------------------------ adaptive guidance
def test_adaptive_schedule_stops_the_uncond(models):
    """Adaptive (Castillo et al. 2023): threshold -1 holds at once: the uncond runs on the first step only;
    threshold 1 never holds (cond and uncond differ): every step is plain CFG, bit for bit."""
    m = models["eps"]
    always = schedule(kind="adaptive", threshold=-1.0)
    out, rows = rows_per_call(m, lambda: ksample(patch(m, cfg_schedule=always), 5.0, steps=6))
    assert rows == [2] + [1] * 5 and torch.isfinite(out).all()
    never = schedule(kind="adaptive", threshold=1.0)
    out, rows = rows_per_call(m, lambda: ksample(patch(m, cfg_schedule=never), 5.0, steps=6))
    assert rows == [2] * 6 and torch.equal(out, ksample(m, 5.0, steps=6))
    # the same guider runs twice: the second run starts guided again
    g = our_guider(m, 5.0, cfg_schedule=always)
    runs = [rows_per_call(m, lambda: custom_sample(m, g, steps=4))[1] for _ in range(2)]
    assert runs == [[2, 1, 1, 1]] * 2


def test_adaptive_stop_follows_the_cosine(models):
    """The step where it stops is the first whose cos(x - D_pos, x - D_neg) reaches the threshold (recorded
    from the real predictions by a pre-CFG hook)."""
    m = models["eps"].clone()
    seen = []

    def record(args):
        x, (c, u) = args["input"], args["conds_out"]
        if args["conds"][1] is not None:
            seen.append(float(torch.nn.functional.cosine_similarity((x - c).flatten(), (x - u).flatten(), dim=0)))
        return args["conds_out"]

    m.set_model_sampler_pre_cfg_function(record)
    ksample(m, 5.0, steps=8)
    cos = list(seen)
    th = sorted(cos)[len(cos) // 2]
    first = next(i for i, c in enumerate(cos) if c >= th)
    seen.clear()
    _, rows = rows_per_call(
        m, lambda: ksample(patch(m, cfg_schedule=schedule(kind="adaptive", threshold=th)), 5.0, steps=8)
    )
    assert rows == [2] * (first + 1) + [1] * (8 - first - 1)
