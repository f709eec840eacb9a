"""The CFG combiner inside a real ComfyUI: KSampler, SamplerCustomAdvanced, real samplers,
ComfyUI's own UNet at tiny width. No mocks."""

import copy

import pytest
import torch

from devkit import comfy_host as H
from devkit.cfg_helpers import (
    EMPTY,
    OTHER,
    POS,
    custom_sample,
    ksample,
    native_guider,
    one_step,
    our_guider,
    patch,
    post,
    raw_parts,
    schedule,
)

pytestmark = pytest.mark.comfy

SAMPLERS = ["euler", "dpmpp_2m"]
KINDS = ["eps", "v", "flow"]


GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError  # the class ComfyUI loaded


# ------------------------------------------------------------------ Must show 1: equivalence
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_guider_and_patch_reproduce_native(models, kind, sampler):
    m = models[kind]
    ref_custom = custom_sample(m, native_guider(m, 6.0), sampler)
    got_custom = custom_sample(m, our_guider(m, 6.0), sampler)
    torch.testing.assert_close(got_custom, ref_custom, rtol=0, atol=1e-5)
    ref_k = ksample(m, 6.0, sampler)
    got_k = ksample(patch(m), 6.0, sampler)
    torch.testing.assert_close(got_k, ref_k, rtol=0, atol=1e-5)
    torch.testing.assert_close(ref_k, ref_custom, rtol=0, atol=1e-5)  # same seed, same graph


def test_cfg1_costs_one_row_per_step(models):
    m = models["eps"]
    for run in (
        lambda: custom_sample(m, our_guider(m, 1.0), steps=6),
        lambda: custom_sample(m, our_guider(m, 1.0, negative=None), steps=6),
        lambda: ksample(patch(m), 1.0, steps=6),
    ):
        rc = H.RowCounter(m)
        try:
            run()
        finally:
            rc.close()
        assert rc.rows == 6 and len(rc.calls) == 6


# ------------------------------------------------------------------ terms, three-way, schedules
@pytest.mark.parametrize("kind", KINDS)
def test_three_way_with_neg_scale_s_minus_1_is_standard_cfg(models, kind):
    m = models[kind]
    ref = custom_sample(m, native_guider(m, 5.0))
    got = custom_sample(m, our_guider(m, 5.0, empty=EMPTY, neg_scale=4.0))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    got_patch = ksample(patch(m, empty=EMPTY, neg_scale=4.0), 5.0)
    torch.testing.assert_close(got_patch, ref, rtol=1e-4, atol=1e-4)


def test_terms_add_weighted_directions_and_zero_weight_is_not_evaluated(models):
    m = models["eps"]
    # a term holding the positive prompt with weight w adds w*(D_pos - D_neg): standard CFG at s + w
    terms = H.run_node("GuidanceLabTerm", conditioning=POS, weight=1.5)[0]
    terms = H.run_node("GuidanceLabTerm", conditioning=OTHER, weight=0.0, terms=terms)[0]
    rc = H.RowCounter(m)
    try:
        got = custom_sample(m, our_guider(m, 4.0, terms=terms), steps=8)
    finally:
        rc.close()
    torch.testing.assert_close(got, custom_sample(m, native_guider(m, 5.5)), rtol=1e-4, atol=1e-4)
    assert rc.rows == 8 * 3  # positive, negative, term 1; the weight-0 term never runs
    assert all(r == 3 for r, _ in rc.calls)  # one batched call per step


@pytest.mark.parametrize("kind", KINDS)
def test_constant_schedule_scales_guidance_strength(models, kind):
    m = models[kind]
    half = schedule(kind="constant", start=0.5)
    ref = custom_sample(m, native_guider(m, 4.0))  # 1 + 0.5 * (7 - 1)
    torch.testing.assert_close(custom_sample(m, our_guider(m, 7.0, cfg_schedule=half)), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ksample(patch(m, cfg_schedule=half), 7.0), ksample(m, 4.0), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ Must show 4: evaluation count
@pytest.mark.parametrize("denoise", [1.0, 0.5])
@pytest.mark.parametrize("route", ["guider", "patch"])
def test_interval_guidance_rows(models, denoise, route):
    m = models["eps"]
    steps, batch = 20, 2
    sig = [float(v) for v in H.run_node("BasicScheduler", model=m, scheduler="normal", steps=steps, denoise=denoise)[0]]
    lo, hi = sig[10], sig[0] + 1.0  # (lo, hi] holds steps 0..9: half of them
    interval = schedule(kind="interval", sigma_lo=lo, sigma_hi=hi)
    rc = H.RowCounter(m)
    try:
        if route == "guider":
            custom_sample(m, our_guider(m, 6.0, cfg_schedule=interval), steps=steps, denoise=denoise, batch=batch)
        else:
            ksample(patch(m, cfg_schedule=interval), 6.0, steps=steps, denoise=denoise, batch=batch)
    finally:
        rc.close()
    assert len(rc.calls) == steps
    assert rc.rows / steps / batch == pytest.approx(1.5)
    for rows, s in rc.calls:  # guided exactly where lo < sigma <= hi
        assert rows == (2 * batch if lo < s <= hi else batch), (rows, s, lo, hi)


# ------------------------------------------------------------------ Must show 6: chaining
@pytest.mark.parametrize("order", ["rescale_first", "ours_first"])
def test_chaining_with_comfy_rescalecfg(models, order):
    m = models["v"]
    half = schedule(kind="constant", start=0.5)
    rescale = lambda mm: H.run_node("RescaleCFG", model=mm, multiplier=0.7)[0]  # noqa: E731
    both = patch(rescale(m), cfg_schedule=half) if order == "rescale_first" else rescale(patch(m, cfg_schedule=half))
    got = ksample(both, 7.0)
    # RescaleCFG acts on the pair our hook hands on; ours turned s=7 into 1 + 0.5*6 = 4
    ref = ksample(rescale(m), 4.0)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert (got - ksample(rescale(m), 7.0)).abs().max() > 1e-2  # our schedule took effect
    assert (got - ksample(patch(m, cfg_schedule=half), 7.0)).abs().max() > 1e-2  # RescaleCFG took effect


def test_chaining_with_post_cfg_patch(models):
    m = models["eps"]
    half = schedule(kind="constant", start=0.5)
    norm = lambda mm: H.run_node("CFGNorm", model=mm, strength=1.0)[0]  # noqa: E731  post-CFG hook
    for both in (norm(patch(m, cfg_schedule=half)), patch(norm(m), cfg_schedule=half)):
        torch.testing.assert_close(ksample(both, 7.0), ksample(norm(m), 4.0), rtol=1e-4, atol=1e-4)


def test_other_packs_pre_cfg_hooks_run_inside_the_guider(models):
    m = models["eps"].clone()
    seen = []

    def drop_guidance(args):  # another pack's pre-CFG hook: replaces the uncond by the cond
        seen.append(len(args["conds_out"]))
        return [args["conds_out"][0], args["conds_out"][0]]

    m.set_model_sampler_pre_cfg_function(drop_guidance)
    got = custom_sample(m, our_guider(m, 6.0), steps=5)
    assert seen == [2] * 5
    torch.testing.assert_close(
        got, custom_sample(models["eps"], native_guider(models["eps"], 1.0), steps=5), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------ Must show 7: input untouched
def test_patch_leaves_input_model_untouched(models):
    m = models["eps"]
    before_opts = copy.deepcopy(m.model_options)
    before_wrappers = {k: {kk: list(vv) for kk, vv in v.items()} for k, v in m.wrappers.items()}
    ref = ksample(m, 6.0)
    p = patch(
        m, empty=EMPTY, neg_scale=2.0, cfg_schedule=schedule(kind="linear", start=1, end=0), post=post(rescale_phi=0.5)
    )
    ksample(p, 6.0)
    assert m.model_options == before_opts
    assert {k: {kk: list(vv) for kk, vv in v.items()} for k, v in m.wrappers.items()} == before_wrappers
    assert p is not m and p.model_options != m.model_options
    torch.testing.assert_close(ksample(m, 6.0), ref, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_rescale_step_exact_per_parameterization(models, kind):
    m = models[kind]
    p, x, sigma = raw_parts(m)
    s, phi = 6.0, 0.7
    d_cfg = p["neg"] + s * (p["pos"] - p["neg"])
    if kind == "flow":  # x0 space
        ratio = p["pos"].std(dim=(1, 2, 3), keepdim=True) / d_cfg.std(dim=(1, 2, 3), keepdim=True)
        ref = phi * d_cfg * ratio + (1 - phi) * d_cfg
    else:  # ComfyUI's RescaleCFG formula (v-prediction space)
        xs = x / (sigma**2 + 1)
        vc = (xs - p["pos"]) * (sigma**2 + 1) ** 0.5 / sigma
        vu = (xs - p["neg"]) * (sigma**2 + 1) ** 0.5 / sigma
        vcfg = vu + s * (vc - vu)
        vf = phi * vcfg * vc.std(dim=(1, 2, 3), keepdim=True) / vcfg.std(dim=(1, 2, 3), keepdim=True) + (1 - phi) * vcfg
        ref = xs - vf * sigma / (sigma**2 + 1) ** 0.5
    got = one_step(m, our_guider(m, s, post=post(rescale_phi=phi)))[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ksample(patch(m, post=post(rescale_phi=phi)), s, steps=1), got, rtol=1e-5, atol=1e-5)


def test_cfg_zero_star_apg_perp_neg_step_exact(models):
    m = models["flow"]
    p, x, sigma = raw_parts(m)
    s = 5.0
    # CFG-Zero*: v = a v_u + s (v_c - a v_u), v = (x - D)/sigma
    vc, vu = (x - p["pos"]) / sigma, (x - p["neg"]) / sigma
    a = (vc * vu).sum(dim=(1, 2, 3), keepdim=True) / ((vu * vu).sum(dim=(1, 2, 3), keepdim=True) + 1e-8 / sigma**2)
    ref = x - sigma * (a * vu + s * (vc - a * vu))
    torch.testing.assert_close(
        one_step(m, our_guider(m, s, post=post(cfg_zero_star=True)))[0], ref, rtol=1e-4, atol=1e-4
    )
    # APG with eta = 0.5, threshold 2: projection w.r.t. D_pos
    d = p["pos"] - p["neg"]
    d = d * torch.clamp(2.0 / torch.linalg.vector_norm(d, dim=(1, 2, 3), keepdim=True), max=1.0)
    u = p["pos"] / torch.linalg.vector_norm(p["pos"], dim=(1, 2, 3), keepdim=True)
    par = (d * u).sum(dim=(1, 2, 3), keepdim=True) * u
    ref = p["pos"] + (s - 1) * ((d - par) + 0.5 * par)
    got = one_step(m, our_guider(m, s, post=post(apg=True, apg_eta=0.5, apg_norm_threshold=2.0)))[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # Perp-Neg: D = De + s d+ - s_neg d-perp
    dp, dn = p["pos"] - p["empty"], p["neg"] - p["empty"]
    perp = dn - (dn * dp).sum(dim=(1, 2, 3), keepdim=True) / (dp * dp).sum(dim=(1, 2, 3), keepdim=True) * dp
    ref = p["empty"] + s * dp - 2.0 * perp
    got = one_step(m, our_guider(m, s, empty=EMPTY, neg_scale=2.0, post=post(perp_neg=True)))[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_zero_init_skips_model_calls(models):
    m = models["flow"]
    rc = H.RowCounter(m)
    try:
        custom_sample(m, our_guider(m, 5.0, post=post(zero_init_steps=2)), steps=6)
        n_guider = len(rc.calls)
        ksample(patch(m, post=post(zero_init_steps=2)), 5.0, steps=6)
    finally:
        rc.close()
    assert n_guider == 4 and len(rc.calls) == 8


# ------------------------------------------------------------------ Must show 8: bad input
def test_mismatched_batches_raise_before_sampling(models):
    terms = H.run_node("GuidanceLabTerm", conditioning=H.cond(7, batch=3), weight=1.0)[0]
    with pytest.raises(GuidanceConfigError, match=r"positive=2.*term 1=3"):
        our_guider(models["eps"], 5.0, positive=H.cond(1, batch=2), terms=terms)


def test_schedule_nan_and_missing_unconditional_raise(models):
    with pytest.raises(GuidanceConfigError, match="start"):
        schedule(kind="linear", start=float("nan"))
    with pytest.raises(GuidanceConfigError, match="keyframes"):
        schedule(kind="keyframes", keyframes="")
    with pytest.raises(GuidanceConfigError, match="cfg=5.0 needs an unconditional"):
        our_guider(models["eps"], 5.0, negative=None)
    with pytest.raises(GuidanceConfigError, match="positive is empty"):
        our_guider(models["eps"], 5.0, positive=[])


def test_guider_refuses_a_patched_model(models):
    with pytest.raises(GuidanceConfigError, match="not both"):
        our_guider(patch(models["eps"]), 5.0)
