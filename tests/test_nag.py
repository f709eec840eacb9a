"""NAG terms (normalized attention guidance, guidance_core/nag.py; nodes/nag_patches.py): the core formula, the paper
form against a direct implementation of the formula on a real UNet's cross-attention, the comfyui form against
ComfyUI's own NAGuidance (0.33+), the off cases bit-identical, rows counted, refusals before sampling."""

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import NEG, POS, custom_sample, ksample, our_guider, patch, slg_simple
from devkit.nag_reference import direct_nag, reference_joint, reference_model, reference_wan

pytestmark = pytest.mark.comfy


def nag_core():
    return H.pack_module("guidance_core.nag")


def errors():
    return H.pack_module("guidance_core.errors")


def nag_term(form="paper", weight=4.0, tau=2.5, alpha=0.25, conditioning=None, terms=None, schedule=None):
    return H.run_node(
        "GuidanceLabNAGTerm",
        form=form,
        weight=weight,
        tau=tau,
        alpha=alpha,
        conditioning=conditioning,
        terms=terms,
        schedule=schedule,
    )[0]


def have(node_id: str) -> bool:
    return node_id in H.boot().NODE_CLASS_MAPPINGS


# ------------------------------------------------------------------ the formula
@pytest.mark.parametrize("phi,tau,alpha", [(4.0, 2.5, 0.25), (4.0, 1.5, 0.5), (0.5, 10.0, 1.0), (9.0, 1.0, 0.7)])
def test_core_formula_equals_the_papers_equations(phi, tau, alpha):
    g = torch.Generator().manual_seed(0)
    z_pos, z_neg = (
        torch.randn(2, 7, 24, generator=g, dtype=torch.float64),
        torch.randn(2, 7, 24, generator=g, dtype=torch.float64),
    )
    got = nag_core().nag_attention(z_pos, z_neg, 1.0 + phi, tau, alpha)
    torch.testing.assert_close(got, direct_nag(z_pos, z_neg, phi, tau, alpha), rtol=1e-12, atol=1e-12)
    ratio = (got - (1 - alpha) * z_pos).abs().sum(-1) / z_pos.abs().sum(-1)
    assert float(ratio.max()) <= alpha * tau + 1e-9  # the cap holds


def test_core_off_cases_and_zero_tokens():
    z_pos, z_neg = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    assert torch.equal(nag_core().nag_attention(z_pos, z_neg, 1.0, 2.5, 0.25), z_pos)  # phi = 0
    assert torch.equal(nag_core().nag_attention(z_pos, z_neg, 5.0, 2.5, 0.0), z_pos)  # alpha = 0
    zero = torch.zeros(1, 3, 8)
    assert torch.isfinite(nag_core().nag_attention(zero, z_neg, 5.0, 2.5, 0.5)).all()


def test_settings_are_validated():
    E = errors().GuidanceConfigError
    for bad in (dict(form="cfg"), dict(tau=0.5), dict(alpha=1.5), dict(tau=float("nan"))):
        with pytest.raises(E) as e:
            nag_core().NAGSettings(**bad)
        assert str(list(bad.values())[0]) in str(e.value) or "nan" in str(e.value)


# ------------------------------------------------------------------ paper form on a UNet, against a direct implementation
@pytest.fixture(scope="module")
def unet():
    return H.tiny_model("eps", seed=3)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
@pytest.mark.parametrize("phi,tau,alpha", [(4.0, 2.5, 0.25), (2.0, 1.5, 0.8)])
def test_paper_form_equals_the_formula_on_the_cross_attention(unet, cfg, phi, tau, alpha):
    """KSampler through the CFG Patch (the NAG negative = the KSampler's negative) and the guider with the NAG term's own
    conditioning, both against a clone that computes the paper's NAG directly; and NAG acts (differs from no term)."""
    want = ksample(reference_model(unet, NEG[0][0], phi, tau, alpha), cfg, steps=4)
    got = ksample(patch(unet, terms=nag_term(weight=phi, tau=tau, alpha=alpha)), cfg, steps=4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    other = H.cond(7)
    want_g = custom_sample(unet, our_guider(reference_model(unet, other[0][0], phi, tau, alpha), cfg), steps=4)
    got_g = custom_sample(
        unet, our_guider(unet, cfg, terms=nag_term(weight=phi, tau=tau, alpha=alpha, conditioning=other)), steps=4
    )
    torch.testing.assert_close(got_g, want_g, rtol=1e-5, atol=1e-5)
    assert float((got - ksample(unet, cfg, steps=4)).abs().max()) > 1e-3


def test_paper_form_acts_on_every_entry_of_a_combined_positive(unet):
    """A positive made of two prompts (ConditioningCombine: two entries, batched as two chunks of the positive): NAG on
    both, as the direct implementation does, at cfg 1 and 3."""
    pos = H.run_node("ConditioningCombine", conditioning_1=POS, conditioning_2=H.cond(9))[0]
    for cfg in (1.0, 3.0):
        want = ksample(reference_model(unet, NEG[0][0], 4.0, 2.5, 0.5), cfg, steps=3, pos=pos)
        got = ksample(patch(unet, terms=nag_term(weight=4.0, tau=2.5, alpha=0.5)), cfg, steps=3, pos=pos)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def count_rows(model, run):
    counter = H.RowCounter(model)
    try:
        run()
    finally:
        counter.close()
    return [r for r, _ in counter.calls]


def test_paper_form_runs_one_row_per_step_at_cfg_1(unet):
    m = patch(unet, terms=nag_term())
    assert count_rows(unet, lambda: ksample(m, 1.0, steps=4)) == [1, 1, 1, 1]
    assert count_rows(unet, lambda: ksample(m, 3.0, steps=4)) == [2, 2, 2, 2]


@pytest.mark.parametrize("form", ["paper", "comfyui"])
def test_off_is_bit_identical_and_evaluates_nothing(unet, form):
    """phi = 0, alpha = 0, or a schedule that is 0: the run without the term, bit for bit, with its rows (the comfyui
    form at phi 0 also leaves ComfyUI's cfg-1 optimization as it is)."""
    sched0 = H.run_node("GuidanceLabSchedule", **{**H.pack_module("guidance_core.schedules").DEFAULTS, "start": 0.0})[0]
    for cfg in (1.0, 3.0):
        base_rows = count_rows(unet, lambda: ksample(patch(unet), cfg, steps=3))
        base = ksample(patch(unet), cfg, steps=3)
        for term in (nag_term(form, weight=0.0), nag_term(form, alpha=0.0), nag_term(form, schedule=sched0)):
            m = patch(unet, terms=term)
            if form == "paper":
                assert count_rows(unet, lambda: ksample(m, cfg, steps=3)) == base_rows
            assert torch.equal(ksample(m, cfg, steps=3), base)


def test_a_schedule_scales_phi_per_step(unet):
    """A schedule that is 1 on the first half of the run and 0 after: NAG at full phi, then none (rows counted)."""
    S = H.pack_module("guidance_core.schedules")
    half = H.run_node(
        "GuidanceLabSchedule", **{**S.DEFAULTS, "kind": "keyframes", "keyframes": "0:1, 0.49:1, 0.5:0, 1:0"}
    )[0]
    m = patch(unet, terms=nag_term("comfyui", schedule=half))
    rows = count_rows(unet, lambda: ksample(m, 1.0, steps=4))
    assert rows == [2, 2, 1, 1]  # comfyui form: the negative row only while NAG is on


# ------------------------------------------------------------------ comfyui form against ComfyUI's NAGuidance
needs_nag = pytest.mark.skipif(not have("NAGuidance"), reason="this ComfyUI has no NAGuidance (added in 0.33)")


def comfy_nag(model, scale, alpha, tau):
    return H.run_node("NAGuidance", model=model, nag_scale=scale, nag_alpha=alpha, nag_tau=tau)[0]


@needs_nag
@pytest.mark.parametrize("family", ["SD1.5", "Flux.1 dev (guidance-distilled)", "Chroma (flow, no pooled vector)"])
@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_comfyui_form_equals_nagaidance(family, cfg):
    """The same images as ComfyUI's NAGuidance at its settings (nag_scale 5 = weight 4), through KSampler and the guider."""
    model, fam = F.model(family), F.FAMILIES[family]
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    for scale, alpha, tau in ((5.0, 0.5, 1.5), (3.0, 0.25, 2.5)):
        want = ksample(comfy_nag(model, scale, alpha, tau), cfg, steps=3, pos=pos, neg=neg, latent=lat)
        term = nag_term("comfyui", weight=scale - 1.0, tau=tau, alpha=alpha)
        got = ksample(patch(model, terms=term), cfg, steps=3, pos=pos, neg=neg, latent=lat)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        g = our_guider(model, cfg, positive=pos, negative=neg, terms=term)
        torch.testing.assert_close(custom_sample(model, g, steps=3, latent=lat), want, rtol=0, atol=0)
    assert float((got - ksample(model, cfg, steps=3, pos=pos, neg=neg, latent=lat)).abs().max()) > 1e-4


@needs_nag
@pytest.mark.parametrize("family", ["SD3.5 (MMDiT, flow)", "Wan 2.1 (video, 5-D)"])
def test_where_nagaidance_does_nothing_the_comfyui_form_is_refused(family):
    """On these families ComfyUI's NAGuidance changes nothing (their blocks never call attn1_output_patch): our comfyui
    form is refused before sampling, naming the model and the way out (their paper forms: test_paper_form_on_joint_*,
    test_paper_form_on_wan_*)."""
    model, fam = F.model(family), F.FAMILIES[family]
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    plain = ksample(model, 1.0, steps=2, pos=pos, neg=neg, latent=lat)
    # NAGuidance's only effect here: a row of the negative, and u + 1 (c - u) for c at cfg 1 (rounding)
    torch.testing.assert_close(
        ksample(comfy_nag(model, 5.0, 0.5, 1.5), 1.0, steps=2, pos=pos, neg=neg, latent=lat),
        plain,
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(errors().GuidanceConfigError) as e:
        patch(model, terms=nag_term("comfyui"))
    assert type(model.model.diffusion_model).__name__ in str(e.value) and "form comfyui" in str(e.value)


# ------------------------------------------------------------------ paper form on Wan's cross-attention
WAN = "Wan 2.1 (video, 5-D)"


def wan_passes_rows() -> bool:
    """Whether this ComfyUI hands transformer_options (the batch's rows) to Wan's cross-attention (0.3.75 and newer)."""
    import inspect

    return (
        "transformer_options" in inspect.signature(H.boot().comfy.ldm.wan.model.WanT2VCrossAttention.forward).parameters
    )


@pytest.fixture(scope="module")
def wan():
    if not wan_passes_rows():
        pytest.skip(
            "this ComfyUI's Wan cross-attention gets no transformer_options (refusal: test_paper_form_on_wan_"
            "is_refused_where_comfyui_hides_the_rows)"
        )
    return F.model(WAN)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
@pytest.mark.parametrize("phi,tau,alpha", [(4.0, 2.5, 0.25), (2.0, 1.5, 0.8)])
def test_paper_form_on_wan_equals_the_formula_on_its_cross_attention(wan, cfg, phi, tau, alpha):
    """Wan 2.1 (5-D latents): KSampler through the CFG Patch and the guider with the term's own conditioning, against a
    clone whose cross-attention computes the paper's NAG directly; NAG acts."""
    fam = F.FAMILIES[WAN]
    pos, neg, other, lat = fam.cond(1), fam.cond(2), fam.cond(3), fam.latent(1)
    want = ksample(reference_wan(wan, neg[0][0], phi, tau, alpha), cfg, steps=3, pos=pos, neg=neg, latent=lat)
    got = ksample(
        patch(wan, terms=nag_term(weight=phi, tau=tau, alpha=alpha)), cfg, steps=3, pos=pos, neg=neg, latent=lat
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    want_g = custom_sample(
        wan,
        our_guider(reference_wan(wan, other[0][0], phi, tau, alpha), cfg, positive=pos, negative=neg),
        steps=3,
        latent=lat,
    )
    got_g = custom_sample(
        wan,
        our_guider(
            wan, cfg, positive=pos, negative=neg, terms=nag_term(weight=phi, tau=tau, alpha=alpha, conditioning=other)
        ),
        steps=3,
        latent=lat,
    )
    torch.testing.assert_close(got_g, want_g, rtol=1e-5, atol=1e-5)
    assert float((got - ksample(wan, cfg, steps=3, pos=pos, neg=neg, latent=lat)).abs().max()) > 1e-4


def rows_and_off(model, fam, extra_rows: int):
    """Rows per step at cfg 1 and 4 with a NAG term (paper form) are the run's own plus `extra_rows`; phi = 0 adds no
    row and is the run without the term, bit for bit (patches in place, inert without the step's NAG)."""
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    for cfg in (1.0, 4.0):
        own = 1 + int(cfg > 1)
        m, off = patch(model, terms=nag_term()), patch(model, terms=nag_term(weight=0.0))
        assert (
            count_rows(model, lambda: ksample(m, cfg, steps=3, pos=pos, neg=neg, latent=lat)) == [own + extra_rows] * 3
        )
        assert count_rows(model, lambda: ksample(off, cfg, steps=3, pos=pos, neg=neg, latent=lat)) == [own] * 3
        base = ksample(patch(model), cfg, steps=3, pos=pos, neg=neg, latent=lat)
        assert torch.equal(ksample(off, cfg, steps=3, pos=pos, neg=neg, latent=lat), base)


def test_paper_form_on_wan_runs_one_row_and_is_off_bit_identical(wan):
    """No row of the negative prompt: one row per step at cfg 1."""
    rows_and_off(wan, F.FAMILIES[WAN], extra_rows=0)


def test_paper_form_on_wan_with_an_slg_term_in_the_same_batch(wan):
    """NAG (paper form) and an SLG term on Wan at cfg 4: the skip-layer rows run in the positive's batch through the
    block replace patch, NAG stays on the positive rows: equal to the direct implementation with the same SLG term."""
    fam = F.FAMILIES[WAN]
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    slg = H.run_node("GuidanceLabPerturbedTerm", mode="slg", blocks="double.0", weight=2.0, seg_sigma=10.0)[0]
    both = H.run_node(
        "GuidanceLabNAGTerm", form="paper", weight=4.0, tau=2.5, alpha=0.5, conditioning=None, terms=slg, schedule=None
    )[0]
    want = ksample(
        patch(reference_wan(wan, neg[0][0], 4.0, 2.5, 0.5), terms=slg), 4.0, steps=3, pos=pos, neg=neg, latent=lat
    )
    got = ksample(patch(wan, terms=both), 4.0, steps=3, pos=pos, neg=neg, latent=lat)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((got - ksample(patch(wan, terms=slg), 4.0, steps=3, pos=pos, neg=neg, latent=lat)).abs().max()) > 1e-4


def test_paper_form_on_wan_is_refused_where_comfyui_hides_the_rows():
    if wan_passes_rows():
        pytest.skip("this ComfyUI hands transformer_options to Wan's cross-attention")
    with pytest.raises(errors().GuidanceConfigError, match="transformer_options"):
        patch(F.model(WAN), terms=nag_term("paper"))


def test_paper_form_where_a_dit_has_neither_cross_nor_joint_attention_is_refused_before_sampling():
    model = F.model("LTXV (video, 5-D, 128 channels)")
    with pytest.raises(errors().GuidanceConfigError, match="joint attention") as e:
        patch(model, terms=nag_term("paper"))
    assert type(model.model.diffusion_model).__name__ in str(e.value)


# ------------------------------------------------------------------ paper form on joint attention (shadow rows)
JOINT = [
    "Flux.1 dev (guidance-distilled)",
    "Chroma (flow, no pooled vector)",
    "SD3.5 (MMDiT, flow)",
    "Qwen-Image (MMDiT, Wan latents)",
    "Lumina 2 (NextDiT, flow)",
    "HunyuanVideo (video, 5-D)",
    "Flux.1 Kontext (reference latent)",  # the reference latent's tokens are image tokens too
    "Qwen-Image Edit (reference latent)",
]


def has_attention_override() -> bool:
    H.boot()
    return H.pack_module("nodes.nag_patches").joint_override_available()


needs_override = pytest.mark.skipif(
    "not has_attention_override()", reason="this ComfyUI has no optimized_attention_override (refusal tested below)"
)


@needs_override
@pytest.mark.parametrize("family", JOINT)
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_paper_form_on_joint_attention_equals_the_formula(family, cfg):
    """KSampler through the CFG Patch against a clone that runs each positive row as a pair [positive, positive with
    the negative's text tokens] and writes the paper's NAG of the image tokens' attention outputs into both rows at
    every attention call of the family's blocks (the image token count from the latent, devkit/nag_reference.py);
    through the guider with the term's own conditioning too; NAG acts."""
    model, fam = F.model(family), F.FAMILIES[family]
    pos, neg, other, lat = fam.cond(1), fam.cond(2), fam.cond(3), fam.latent(1)
    want = ksample(reference_joint(model, neg, 4.0, 2.5, 0.5), cfg, steps=3, pos=pos, neg=neg, latent=lat)
    got = ksample(patch(model, terms=nag_term(alpha=0.5)), cfg, steps=3, pos=pos, neg=neg, latent=lat)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((got - ksample(model, cfg, steps=3, pos=pos, neg=neg, latent=lat)).abs().max()) > 1e-3
    want_g = custom_sample(
        model,
        our_guider(reference_joint(model, other, 2.0, 1.5, 0.8), cfg, positive=pos, negative=neg),
        steps=3,
        latent=lat,
    )
    term = nag_term(weight=2.0, tau=1.5, alpha=0.8, conditioning=other)
    got_g = custom_sample(model, our_guider(model, cfg, positive=pos, negative=neg, terms=term), steps=3, latent=lat)
    torch.testing.assert_close(got_g, want_g, rtol=1e-5, atol=1e-5)


@needs_override
def test_paper_form_on_joint_attention_rows_and_off():
    """One shadow row per positive row (the positive with the negative's text tokens), no row of the negative
    prompt's own: cfg 1 runs 2 rows per step, cfg 4 runs 3. The shadow never sits at ComfyUI's uncond slot (index 1
    of cond_or_uncond, which other nodes' attention patches read as the uncond): at cfg 1 that slot stays empty."""
    model, fam = F.model(JOINT[0]), F.FAMILIES[JOINT[0]]
    rows_and_off(model, fam, extra_rows=1)
    seen = []
    hook = model.model.diffusion_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(list(kw["transformer_options"]["cond_or_uncond"])), with_kwargs=True
    )
    try:
        for cfg in (1.0, 4.0):
            ksample(
                patch(model, terms=nag_term()), cfg, steps=2, pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1)
            )
    finally:
        hook.remove()
    assert [sorted(ids) for ids in seen] == [[0, 2]] * 2 + [[0, 1, 2]] * 2, seen


@needs_override
def test_paper_form_on_joint_attention_with_an_slg_term_in_the_same_batch():
    """NAG (paper form, shadow rows) and an SLG term on Flux at cfg 4 in one batch: the skip-layer rows keep their
    patch, NAG stays on the positive and shadow rows: equal to the direct implementation with the same SLG term."""
    model, fam = F.model(JOINT[0]), F.FAMILIES[JOINT[0]]
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    slg = H.run_node("GuidanceLabPerturbedTerm", mode="slg", blocks="double.0", weight=2.0, seg_sigma=10.0)[0]
    both = H.run_node(
        "GuidanceLabNAGTerm", form="paper", weight=4.0, tau=2.5, alpha=0.5, conditioning=None, terms=slg, schedule=None
    )[0]
    m = patch(model, terms=both)
    assert count_rows(model, lambda: ksample(m, 4.0, steps=3, pos=pos, neg=neg, latent=lat)) == [4, 4, 4]
    want = ksample(
        patch(reference_joint(model, neg, 4.0, 2.5, 0.5), terms=slg), 4.0, steps=3, pos=pos, neg=neg, latent=lat
    )
    got = ksample(m, 4.0, steps=3, pos=pos, neg=neg, latent=lat)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    slg_only = ksample(patch(model, terms=slg), 4.0, steps=3, pos=pos, neg=neg, latent=lat)
    assert float((got - slg_only).abs().max()) > 1e-3


@needs_override
def test_paper_form_on_joint_attention_with_the_positive_as_negative_changes_nothing():
    """A negative prompt equal to the positive: Z- = Z+, so NAG is the identity; the run is the plain one (no error
    that NAG never acted; the two-row batch rounds apart from the one-row run by about 1e-6)."""
    model, fam = F.model(JOINT[0]), F.FAMILIES[JOINT[0]]
    pos, lat = fam.cond(1), fam.latent(1)
    got = ksample(patch(model, terms=nag_term()), 1.0, steps=2, pos=pos, neg=pos, latent=lat)
    torch.testing.assert_close(got, ksample(model, 1.0, steps=2, pos=pos, neg=pos, latent=lat), rtol=1e-5, atol=1e-5)


@needs_override
def test_paper_form_on_joint_attention_needs_prompts_of_one_length():
    """The pair runs in one attention: a negative prompt with another token count is refused, naming both counts."""
    model, fam = F.model(JOINT[0]), F.FAMILIES[JOINT[0]]
    pos, lat = fam.cond(1), fam.latent(1)
    longer = [[torch.cat([c[0], c[0]], dim=1), dict(c[1])] for c in fam.cond(2)]
    with pytest.raises(errors().GuidanceConfigError, match=r"as many text tokens as the positive.*8 against 4"):
        ksample(patch(model, terms=nag_term()), 1.0, steps=2, pos=pos, neg=longer, latent=lat)


@needs_override
def test_paper_form_on_joint_attention_refuses_nodes_that_would_split_the_pair():
    """NAGuidance (its attn1 output patch moves the positive's image stream but not the shadow's) and
    SkipLayerGuidanceDiTSimple (its batching keeps the shadow rows out of the positive's call): refused in either
    order, naming the hook: node then patch at the patch, patch then node before the first model call."""
    model, fam = F.model(JOINT[0]), F.FAMILIES[JOINT[0]]
    others = []
    if have("NAGuidance"):
        others.append((lambda m: comfy_nag(m, 5.0, 0.5, 1.5), "attn1_output_patch"))
    if have("SkipLayerGuidanceDiTSimple"):
        others.append((slg_simple, "sampler_calc_cond_batch_function"))
    assert others
    for node, hook in others:
        with pytest.raises(errors().GuidanceConfigError, match=hook):
            patch(node(model), terms=nag_term())
        counter = H.RowCounter(model)
        try:
            with pytest.raises(errors().GuidanceConfigError, match=hook):
                m = node(patch(model, terms=nag_term()))
                ksample(m, 1.0, steps=2, pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1))
        finally:
            counter.close()
        assert counter.calls == []  # before the first model call


def test_shadow_rows_take_the_negatives_text_tokens_only():
    """The shadow entry: the positive's conds (pooled vector, guidance) with the negative's text tokens and mask; a
    mask the negative lacks is dropped; tokens the joint form cannot place (byT5 glyphs, CLIP vision) are refused."""
    import comfy.conds

    nag_patches = H.pack_module("nodes.nag_patches")
    reg = lambda *shape: comfy.conds.CONDRegular(torch.randn(*shape))  # noqa: E731
    pos = {"model_conds": {"c_crossattn": reg(1, 4, 8), "y": reg(1, 8), "attention_mask": reg(1, 4)}, "uuid": 1}
    neg = {"model_conds": {"c_crossattn": reg(1, 4, 8), "y": reg(1, 8)}, "uuid": 2}
    (shadow,) = nag_patches.shadow_conds([pos], [neg], 1)
    mc = shadow["model_conds"]
    assert mc["c_crossattn"] is neg["model_conds"]["c_crossattn"] and mc["y"] is pos["model_conds"]["y"]
    assert "attention_mask" not in mc and shadow["uuid"] not in (1, 2) and "attention_mask" in pos["model_conds"]
    for extra in nag_patches.OTHER_TEXT_CONDS:
        glyphs = {**pos, "model_conds": {**pos["model_conds"], extra: reg(1, 4, 8)}}
        with pytest.raises(errors().GuidanceConfigError, match=extra):
            nag_patches.shadow_conds([glyphs], [neg], 1)
    with pytest.raises(errors().GuidanceConfigError, match="2 entries"):
        nag_patches.shadow_conds([pos, pos], [neg], 1)


def test_paper_form_on_joint_attention_is_refused_without_the_attention_override():
    if has_attention_override():
        pytest.skip("this ComfyUI has optimized_attention_override")
    with pytest.raises(errors().GuidanceConfigError, match="optimized_attention_override"):
        patch(F.model(JOINT[0]), terms=nag_term("paper"))


def test_one_nag_term_and_a_negative_to_read(unet):
    E = errors().GuidanceConfigError
    with pytest.raises(E, match="NAG terms"):
        patch(unet, terms=nag_term(terms=nag_term()))
    with pytest.raises(E, match="no negative prompt"):
        H.run_node("GuidanceLabCFGGuider", model=unet, positive=POS, cfg=1.0, neg_scale=0.0, terms=nag_term())
