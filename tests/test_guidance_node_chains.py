"""Chains with ComfyUI's guidance nodes that touch the same step as ours: SkipLayerGuidanceDiTSimple (a
sampler_calc_cond_batch_function), NAGuidance (an attn1 output patch reading ComfyUI's uncond slot), CFGOverride (a
PREDICT_NOISE wrapper setting the guider's cfg) and DualModelGuider (a guider of its own). Each is exact against what
ComfyUI gives with its own nodes, or refused before sampling.

The contract (docs/COMPATIBILITY.md, nodes/cfg_runtime.py): another node's sampler_calc_cond_batch_function receives
exactly [cond, uncond-or-None], as ComfyUI's sampling_function hands it; ComfyUI's uncond slot (index 1 of
`cond_or_uncond`, the second of that pair) holds the user's negative prompt, never our empty prompt or a term.
"""

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import custom_sample, ksample, native_guider, one_step, our_guider, patch, slg_simple

pytestmark = pytest.mark.comfy

GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError
SD35 = "SD3.5 (MMDiT, flow)"


def have(node_id: str) -> bool:
    return node_id in H.boot().NODE_CLASS_MAPPINGS


def recorded_pair(model, guider_of):
    """(cond_denoised, uncond_denoised, denoised) of the first step, in the model's latent space (the sampler's output
    is processed out: SD3's scale and shift), recorded by a real post-CFG hook on a clone."""
    rec = model.clone()
    seen = []
    rec.set_model_sampler_post_cfg_function(
        lambda a: (
            seen.append([a[k].clone() for k in ("cond_denoised", "uncond_denoised", "denoised")]),
            a["denoised"],
        )[1]
    )
    one_step(rec, guider_of(rec))
    return tuple(seen[0])


@pytest.fixture(scope="module")
def sd35():
    fam = F.FAMILIES[SD35]
    return fam, fam.build(), {"pos": fam.cond(1), "neg": fam.cond(2), "empty": fam.cond(3)}


# ------------------------------------------------------------------ SkipLayerGuidanceDiTSimple
@pytest.mark.skipif(not have("SkipLayerGuidanceDiTSimple"), reason="this ComfyUI has no SkipLayerGuidanceDiTSimple")
def test_slg_simple_chained_with_the_patch_equals_comfyui_two_way(sd35):
    """Positive and negative: the same calls as ComfyUI's KSampler on the SLG-Simple model, at cfg > 1 and cfg 1
    (where ComfyUI hands the function [cond, None]: it crashed with 'not enough values to unpack')."""
    fam, m, c = sd35
    slg = slg_simple(m)
    lat = fam.latent()
    for cfg in (4.0, 1.0):
        ref = ksample(slg, cfg, steps=4, pos=c["pos"], neg=c["neg"], latent=lat)
        out = ksample(patch(slg), cfg, steps=4, pos=c["pos"], neg=c["neg"], latent=lat)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    plain = ksample(m, 4.0, steps=4, pos=c["pos"], neg=c["neg"], latent=lat)
    assert float((ksample(slg, 4.0, steps=4, pos=c["pos"], neg=c["neg"], latent=lat) - plain).abs().max()) > 1e-4


@pytest.mark.skipif(not have("SkipLayerGuidanceDiTSimple"), reason="this ComfyUI has no SkipLayerGuidanceDiTSimple")
def test_slg_simple_with_three_way_cfg_skips_layers_on_the_negative_only(sd35):
    """Three-way CFG with an empty prompt (it crashed with 'too many values to unpack'): the function sees
    [positive, negative] (the negative in ComfyUI's uncond slot, run with the layers skipped) and the empty prompt as
    a cond of its own: D = D_e + s (D_p - D_e) - s_n (D_n,skipped - D_e)."""
    fam, m, c = sd35
    slg = slg_simple(m)
    s, s_n = 4.0, 2.0
    d_pos, d_neg_skipped, _ = recorded_pair(slg, lambda mm: native_guider(mm, s, c["pos"], c["neg"]))
    d_empty, _, _ = recorded_pair(slg, lambda mm: native_guider(mm, s, c["empty"], c["neg"]))
    d = recorded_pair(
        slg, lambda mm: our_guider(mm, s, positive=c["pos"], negative=c["neg"], empty=c["empty"], neg_scale=s_n)
    )[2]
    want = d_empty + s * (d_pos - d_empty) - s_n * (d_neg_skipped - d_empty)
    torch.testing.assert_close(d, want, rtol=1e-5, atol=1e-5)
    # the patch at cfg 1 with an empty prompt and an unguided step: ComfyUI's [cond, None] form, no crash
    lat = fam.latent()
    out = ksample(patch(slg, empty=c["empty"]), 1.0, steps=3, pos=c["pos"], neg=c["neg"], latent=lat)
    torch.testing.assert_close(out, ksample(slg, 1.0, steps=3, pos=c["pos"], neg=c["neg"], latent=lat), rtol=0, atol=0)


# ------------------------------------------------------------------ NAGuidance (ComfyUI 0.33+)
def nag(model, scale=5.0, alpha=0.5, tau=1.5):
    return H.run_node("NAGuidance", model=model, nag_scale=scale, nag_alpha=alpha, nag_tau=tau)[0]


@pytest.fixture(scope="module")
def unet():
    return H.tiny_model("eps", seed=3)


@pytest.mark.skipif(not have("NAGuidance"), reason="this ComfyUI has no NAGuidance (added in 0.33)")
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_nag_reads_the_users_negative_with_three_way_cfg(unet, cfg):
    """NAG takes ComfyUI's uncond slot as its negative prompt: with an empty prompt connected that slot must hold the
    negative, not the empty prompt (0.17 off at cfg 1 and 0.96 at cfg 4 before). Reference: D_p,NAG and D_n from
    ComfyUI's own CFGGuider on the NAG model; D_e of the plain model."""
    from devkit.cfg_helpers import EMPTY, NEG, POS

    m = nag(unet)
    s_n = 1.5
    d_pos_nag, d_neg, _ = recorded_pair(m, lambda mm: native_guider(mm, 4.0, POS, NEG))
    d_empty, _, _ = recorded_pair(unet, lambda mm: native_guider(mm, 4.0, EMPTY, NEG))
    d = recorded_pair(m, lambda mm: our_guider(mm, cfg, empty=EMPTY, neg_scale=s_n))[2]
    want = d_empty + cfg * (d_pos_nag - d_empty) - s_n * (d_neg - d_empty)
    torch.testing.assert_close(d, want, rtol=1e-5, atol=1e-5)
    # the stock KSampler at cfg 1 with the patch (empty prompt, no negative term): NAG(pos, neg) as ComfyUI gives it
    if cfg == 1.0:
        ref = ksample(m, 1.0, steps=4)
        torch.testing.assert_close(ksample(patch(m, empty=EMPTY), 1.0, steps=4), ref, rtol=0, atol=1e-5)
        assert float((ref - ksample(unet, 1.0, steps=4)).abs().max()) > 1e-3  # NAG acts


@pytest.mark.skipif(not have("NAGuidance"), reason="this ComfyUI has no NAGuidance (added in 0.33)")
def test_nag_two_way_chains_are_exact(unet):
    m = nag(unet)
    for cfg in (1.0, 4.0):
        torch.testing.assert_close(ksample(patch(m), cfg, steps=4), ksample(m, cfg, steps=4), rtol=0, atol=0)
        torch.testing.assert_close(
            custom_sample(m, our_guider(m, cfg), steps=4),
            custom_sample(m, native_guider(m, cfg), steps=4),
            rtol=0,
            atol=0,
        )


# ------------------------------------------------------------------ CFGOverride, DualModelGuider (ComfyUI 0.33+)
@pytest.mark.skipif(not have("CFGOverride"), reason="this ComfyUI has no CFGOverride (added in 0.33)")
def test_cfg_override_drives_our_scale_as_comfyuis(unet):
    """CFGOverride sets the guider's cfg inside its sigma range: our patch and our guider read it per call, as
    ComfyUI's CFGGuider does."""
    over = H.run_node("CFGOverride", model=unet, cfg=1.5, start_percent=0.5, end_percent=1.0)[0]
    ref_k = ksample(over, 6.0, steps=6)
    torch.testing.assert_close(ksample(patch(over), 6.0, steps=6), ref_k, rtol=0, atol=0)
    assert float((ref_k - ksample(unet, 6.0, steps=6)).abs().max()) > 1e-3  # the override acts
    torch.testing.assert_close(
        custom_sample(over, our_guider(over, 6.0), steps=6),
        custom_sample(over, native_guider(over, 6.0), steps=6),
        rtol=0,
        atol=0,
    )


@pytest.mark.skipif(not have("DualModelGuider"), reason="this ComfyUI has no DualModelGuider (added in 0.33)")
def test_dual_model_guider_with_the_patch_is_refused_before_sampling(unet):
    from devkit.cfg_helpers import NEG, POS

    other = H.tiny_model("eps", seed=8)
    guider = H.run_node(
        "DualModelGuider", model=patch(unet), model_negative=other, positive=POS, cfg=4.0, negative=NEG
    )[0]
    counter = H.RowCounter(unet)
    try:
        with pytest.raises(GuidanceConfigError, match=r"Guider_DualModel"):
            custom_sample(unet, guider, steps=3)
    finally:
        counter.close()
    assert counter.calls == []
