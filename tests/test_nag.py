"""NAG terms (normalized attention guidance, guidance_core/nag.py; nodes/nag_patches.py): the core formula, the paper
form against a direct implementation of the formula on a real UNet's cross-attention, the comfyui form against
ComfyUI's own NAGuidance (0.33+), the off cases bit-identical, rows counted, refusals before sampling."""

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import NEG, POS, custom_sample, ksample, our_guider, patch
from devkit.nag_reference import direct_nag, reference_model, reference_wan

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
    form is refused before sampling, naming the model and the way out; on SD3.5 the paper form too (joint attention,
    no cross-attention; Wan's paper form: test_paper_form_on_wan_*)."""
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
    for form in ("comfyui", "paper") if family.startswith("SD3.5") else ("comfyui",):
        with pytest.raises(errors().GuidanceConfigError) as e:
            patch(model, terms=nag_term(form))
        assert type(model.model.diffusion_model).__name__ in str(e.value) and f"form {form}" in str(e.value)


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


def test_paper_form_on_wan_runs_one_row_and_is_off_bit_identical(wan):
    """At cfg 1 one row per step (no row of the negative prompt); phi = 0 is the run without the term, bit for bit."""
    fam = F.FAMILIES[WAN]
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    m = patch(wan, terms=nag_term())
    assert count_rows(wan, lambda: ksample(m, 1.0, steps=3, pos=pos, neg=neg, latent=lat)) == [1, 1, 1]
    assert count_rows(wan, lambda: ksample(m, 4.0, steps=3, pos=pos, neg=neg, latent=lat)) == [2, 2, 2]
    for cfg in (1.0, 4.0):
        base = ksample(patch(wan), cfg, steps=3, pos=pos, neg=neg, latent=lat)
        off = ksample(patch(wan, terms=nag_term(weight=0.0)), cfg, steps=3, pos=pos, neg=neg, latent=lat)
        assert torch.equal(off, base)  # the object patches are in place and inert without the step's NAG


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


def test_paper_form_on_a_dit_is_refused_before_sampling():
    model = F.model("Flux.1 dev (guidance-distilled)")
    with pytest.raises(errors().GuidanceConfigError, match="form comfyui"):
        patch(model, terms=nag_term("paper"))


def test_one_nag_term_and_a_negative_to_read(unet):
    E = errors().GuidanceConfigError
    with pytest.raises(E, match="NAG terms"):
        patch(unet, terms=nag_term(terms=nag_term()))
    with pytest.raises(E, match="no negative prompt"):
        H.run_node("GuidanceLabCFGGuider", model=unet, positive=POS, cfg=1.0, neg_scale=0.0, terms=nag_term())
