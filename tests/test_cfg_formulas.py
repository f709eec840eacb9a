"""Exactness of every CFG formula against independent references computed by hand (numpy,
written element by element from the papers' equations) on small tensors."""

import math

import numpy as np
import pytest
import torch

from guidance_core import cfg as C
from guidance_core import parameterization as P
from guidance_core import schedules as S

pytestmark = pytest.mark.core

RNG = np.random.default_rng(0)


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def rand(*shape):
    return RNG.standard_normal(shape)


def test_standard_cfg_matches_ho_salimans_eps_form():
    # eps~ = (1 + w) eps_c - w eps_u, D = (x - sigma eps)/alpha, for every parameterization's alpha
    x, ec, eu = rand(2, 3, 2, 2), rand(2, 3, 2, 2), rand(2, 3, 2, 2)
    sigma, w = 0.8, 2.5
    for alpha in (1.0, 1.0 - sigma):
        dc, du = (x - sigma * ec) / alpha, (x - sigma * eu) / alpha
        ref = (x - sigma * ((1 + w) * ec - w * eu)) / alpha
        got = C.cfg_standard(t(dc), t(du), 1 + w).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_three_way_by_hand():
    dp, dn, de = np.array([1.0, 2.0]), np.array([0.5, -1.0]), np.array([0.0, 0.25])
    # D = De + 3 (Dp - De) - 2 (Dn - De): element 0: 0 + 3 - 1 = 2 ; element 1: .25 + 5.25 + 2.5 = 8.0
    got = C.cfg_three_way(t(dp), t(dn), t(de), 3.0, 2.0).numpy()
    np.testing.assert_allclose(got, [2.0, 8.0])
    # s_neg = s - 1 is standard CFG with the negative as the unconditional
    a, b, c = rand(4), rand(4), rand(4)
    np.testing.assert_allclose(C.cfg_three_way(t(a), t(b), t(c), 5.0, 4.0).numpy(), b + 5 * (a - b), rtol=1e-12)


def test_composable_by_hand():
    de = rand(2, 2, 3, 3)
    ds = [rand(2, 2, 3, 3) for _ in range(3)]
    ws = [1.5, -0.5, 2.0]
    ref = de.copy()
    for d, w in zip(ds, ws):
        for idx in np.ndindex(de.shape):
            ref[idx] += w * (d[idx] - de[idx])
    got = C.composable(t(de), [t(d) for d in ds], ws).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def _vp(x, sigma):
    """Independent VP quantities: abar = 1/(1+sigma^2), x_vp = sqrt(abar) x."""
    abar = 1.0 / (1.0 + sigma**2)
    return math.sqrt(abar), math.sqrt(1 - abar)


def _rescale_ref_v(dp, dcfg, x, sigma, phi):
    """Lin et al. Alg. 2 on v-prediction, written from the VP definitions (eps and v models)."""
    a_t, s_t = _vp(x, sigma)
    out = np.empty_like(dcfg)
    for b in range(x.shape[0]):
        eps_p = (x[b] - dp[b]) / sigma
        eps_c = (x[b] - dcfg[b]) / sigma
        v_p = a_t * eps_p - s_t * dp[b]
        v_c = a_t * eps_c - s_t * dcfg[b]
        v_r = v_c * v_p.std(ddof=1) / v_c.std(ddof=1)
        v = phi * v_r + (1 - phi) * v_c
        # invert: x_vp = a_t x0 + s_t eps, v = a_t eps - s_t x0  =>  x0 = a_t x_vp - s_t v
        x_vp = a_t * x[b]
        out[b] = a_t * x_vp - s_t * v
    return out


@pytest.mark.parametrize("param", ["eps", "v"])
def test_rescale_vp_models(param):
    x, dp, dn = rand(2, 4, 3, 3) * 3, rand(2, 4, 3, 3), rand(2, 4, 3, 3)
    sigma, s, phi = 2.0, 7.0, 0.7
    dcfg = dn + s * (dp - dn)
    ref = _rescale_ref_v(dp, dcfg, x, sigma, phi)
    space = P.default_rescale_space(param)
    assert space == "v"
    got = C.rescale(t(dp), t(dcfg), phi, t(x), t(sigma), t(1.0), space).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_rescale_matches_comfyui_rescalecfg_formula():
    # ComfyUI's RescaleCFG (nodes_model_advanced.py), restated on its own terms
    x0, dp, dn = rand(1, 4, 2, 2) * 3, rand(1, 4, 2, 2), rand(1, 4, 2, 2)
    sigma, s, phi = 1.3, 5.0, 0.5
    x = x0 / (sigma**2 + 1)
    cond = (x - dp) * (sigma**2 + 1) ** 0.5 / sigma
    unc = (x - dn) * (sigma**2 + 1) ** 0.5 / sigma
    xc = unc + s * (cond - unc)
    xr = xc * cond.std(ddof=1) / xc.std(ddof=1)
    xf = phi * xr + (1 - phi) * xc
    ref = x - xf * sigma / (sigma**2 + 1) ** 0.5
    got = C.rescale(t(dp), t(dn + s * (dp - dn)), phi, t(x0), t(sigma), t(1.0), "v").numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_rescale_flow_model_in_x0_space():
    x, dp, dn = rand(2, 4, 3, 3), rand(2, 4, 3, 3), rand(2, 4, 3, 3)
    sigma, s, phi = 0.6, 4.0, 1.0
    dcfg = dn + s * (dp - dn)
    assert P.default_rescale_space("flow") == "x0"
    got = C.rescale(t(dp), t(dcfg), phi, t(x), t(sigma), t(1 - sigma), "x0").numpy()
    for b in range(2):
        ref = dcfg[b] * dp[b].std(ddof=1) / dcfg[b].std(ddof=1)
        np.testing.assert_allclose(got[b], ref, rtol=1e-10)
        assert abs(got[b].std() - dp[b].std()) < 1e-10  # phi = 1: exactly the positive's std


def test_rescale_phi_zero_is_identity():
    x, dp, dc = rand(1, 2, 2, 2), rand(1, 2, 2, 2), rand(1, 2, 2, 2)
    assert torch.equal(C.rescale(t(dp), t(dc), 0.0, t(x), t(1.0), t(1.0)), t(dc))


def test_cfg_zero_star_by_hand():
    # paper (Fan et al. 2025, Alg. 1) in velocity: v = a* v_u + s (v_c - a* v_u), a* = <v_c,v_u>/||v_u||^2
    x, dp, du = rand(2, 3, 2, 2), rand(2, 3, 2, 2), rand(2, 3, 2, 2)
    sigma, s = 0.7, 4.0
    ref = np.empty_like(x)
    for b in range(2):
        vc, vu = (x[b] - dp[b]) / sigma, (x[b] - du[b]) / sigma  # flow velocity (x - D)/sigma
        a = float((vc * vu).sum() / ((vu * vu).sum() + 1e-8 / sigma**2))
        v = a * vu + s * (vc - a * vu)
        ref[b] = x[b] - sigma * v
    du2 = C.cfg_zero_star_uncond(t(dp), t(du), t(x))
    got = C.cfg_standard(t(dp), du2, s).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-7)


def test_apg_by_hand_and_reduces_to_cfg():
    dp, du = rand(2, 3, 4, 4), rand(2, 3, 4, 4)
    s, eta, r = 5.0, 0.3, 2.0
    delta = dp - du
    ref = np.empty_like(dp)
    for b in range(2):
        d = delta[b] * min(1.0, r / np.sqrt((delta[b] ** 2).sum()))
        u = dp[b] / np.sqrt((dp[b] ** 2).sum())
        par = (d * u).sum() * u
        ref[b] = dp[b] + (s - 1) * ((d - par) + eta * par)
    new, _ = C.apg_delta(t(delta), t(dp), eta, r, None, 0.0)
    np.testing.assert_allclose((t(dp) + (s - 1) * new).numpy(), ref, rtol=1e-10)
    # eta = 1, no momentum, no threshold: exactly CFG (the paper's parameterization)
    same, _ = C.apg_delta(t(delta), t(dp), 1.0, 0.0, None, 0.0)
    np.testing.assert_allclose((t(dp) + (s - 1) * same).numpy(), du + s * (dp - du), rtol=1e-10)


def test_apg_momentum_running_average():
    dp = rand(1, 2, 2, 2)
    d1, d2 = rand(1, 2, 2, 2), rand(1, 2, 2, 2)
    beta = -0.5
    _, run = C.apg_delta(t(d1), t(dp), 1.0, 0.0, None, beta)
    np.testing.assert_allclose(run.numpy(), d1)
    out, run = C.apg_delta(t(d2), t(dp), 1.0, 0.0, run, beta)
    np.testing.assert_allclose(run.numpy(), d2 + beta * d1)
    np.testing.assert_allclose(out.numpy(), d2 + beta * d1, rtol=1e-10)


def test_perp_neg_per_sample_by_hand():
    de = rand(2, 2, 2, 2)
    dp, dn = rand(2, 2, 2, 2), rand(2, 2, 2, 2)
    dn[1] *= 50  # a batch-wide dot product would mix the samples; per-sample must not
    s, wn = 6.0, 1.0
    ref = np.empty_like(de)
    for b in range(2):
        dplus, dminus = dp[b] - de[b], dn[b] - de[b]
        perp = dminus - (dminus * dplus).sum() / (dplus * dplus).sum() * dplus
        ref[b] = de[b] + s * (dplus - wn * perp)
    perp = C.perp_neg_delta(t(dn - de), t(dp - de))
    got = (t(de) + s * (t(dp - de) - wn * perp)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    # per sample: sample 0 does not depend on sample 1
    dn2 = dn.copy()
    dn2[1] = rand(2, 2, 2)
    p2 = C.perp_neg_delta(t(dn2 - de), t(dp - de))
    np.testing.assert_allclose(p2[0].numpy(), perp[0].numpy())


def test_fold_to_pair_reproduces_guided_near_scale_1():
    c, d = t(rand(1, 2, 3, 3)).float(), t(rand(1, 2, 3, 3)).float()
    for s in (7.0, 0.5, 1.001, 1.0 + 1e-5, 1.0 - 1e-6):
        c2, u2 = C.fold_to_pair(c, d, s)
        assert c2.dtype == torch.float64
        np.testing.assert_allclose((u2 + s * (c2 - u2)).numpy(), d.double().numpy(), rtol=1e-9, atol=1e-9)
    with pytest.raises(C.GuidanceConfigError, match="scale other than 1"):
        C.fold_to_pair(c, d, 1.0)


def _combiner(**kw):
    has_neg, has_empty = kw.pop("has_negative", True), kw.pop("has_empty", False)
    param = kw.pop("param", "eps")
    return C.CFGCombiner(C.CFGConfig(**kw), has_neg, has_empty, param)


def test_combiner_plans_and_skips_zero_weights():
    ctx = C.StepContext(sigma=1.0, sample_sigmas=[2.0, 1.0, 0.5, 0.0])
    assert _combiner().plan(ctx, 1.0).needed == ["positive"]
    assert _combiner().plan(ctx, 7.0).needed == ["positive", "negative"]
    off = S.Schedule(kind="interval", sigma_lo=1.5, sigma_hi=3.0)
    assert _combiner(cfg_schedule=off).plan(ctx, 7.0).needed == ["positive"]
    comb = _combiner(neg_scale=2.0, has_empty=True, terms=(C.ExtraTerm(0.0), C.ExtraTerm(1.5)))
    # the negative second: ComfyUI's uncond slot, which other nodes' attention patches (NAGuidance, SAG) read
    assert comb.plan(ctx, 7.0).needed == ["positive", "negative", "empty", "term1"]


def test_combiner_three_way_and_terms_values():
    x = t(rand(1, 2, 2, 2))
    preds = {k: t(rand(1, 2, 2, 2)) for k in ("positive", "negative", "empty", "term0")}
    comb = _combiner(neg_scale=1.5, has_empty=True, terms=(C.ExtraTerm(-0.5),))
    ctx = C.StepContext(sigma=1.0)
    got = comb.combine(comb.plan(ctx, 4.0), preds, x, t(1.0), t(1.0)).numpy()
    p, n, e, a = (preds[k].numpy() for k in ("positive", "negative", "empty", "term0"))
    np.testing.assert_allclose(got, e + 4 * (p - e) - 1.5 * (n - e) - 0.5 * (a - e), rtol=1e-12)


def test_combiner_schedule_multiplies_strength():
    ctx = C.StepContext(sigma=1.0, sample_sigmas=[3.0, 1.0, 0.0])  # step 1 of 2: progress 1
    sched = S.Schedule(kind="linear", start=1.0, end=0.25)
    comb = _combiner(cfg_schedule=sched)
    p, n = t(rand(1, 2, 2, 2)), t(rand(1, 2, 2, 2))
    got = comb.combine(comb.plan(ctx, 5.0), {"positive": p, "negative": n}, p, t(1.0), t(1.0))
    np.testing.assert_allclose(got.numpy(), (n + 2.0 * (p - n)).numpy(), rtol=1e-12)  # s' = 1 + .25*4


def test_zero_init_start_noise_solves_the_affine_start():
    n, lat = t(rand(1, 2, 2, 2)), t(rand(1, 2, 2, 2))
    x_start = 0.9 * n + 0.1 * lat
    n2 = C.zero_init_start_noise(x_start, 0.4 * 0 + 0.6 * lat, 0.4 * 1 + 0.6 * lat)  # a sampler at sigma_K = 0.4
    np.testing.assert_allclose((0.4 * n2 + 0.6 * lat).numpy(), x_start.numpy(), rtol=1e-12)


def test_zero_init_and_eps_rescale_refused_where_undefined():
    with pytest.raises(C.GuidanceConfigError, match="zero_init_steps=2 is defined for flow"):
        _combiner(post=C.PostProcess(zero_init_steps=2), param="eps")
    _combiner(post=C.PostProcess(zero_init_steps=2), param="flow")
    with pytest.raises(C.GuidanceConfigError, match="rescale_space='eps'"):
        _combiner(post=C.PostProcess(rescale_phi=0.5, rescale_space="eps"), param="flow")


def test_apg_momentum_advances_once_per_step():
    """heun calls the model at sigma_0, sigma_1 (step 0's corrector), sigma_1, sigma_2 (step 1's) ...; both calls of
    a step read the momentum the previous step committed, and the step's last call commits its own."""
    sig = [3.0, 2.0, 1.0, 0.0]
    comb = _combiner(post=C.PostProcess(apg=True, apg_momentum=-0.5, apg_norm_threshold=0.0, apg_eta=1.0))
    comb.reset("heun")
    g = torch.Generator().manual_seed(0)
    calls = [3.0, 2.0, 2.0, 1.0, 1.0]
    preds = [
        {k: torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64) for k in ("positive", "negative")} for _ in calls
    ]
    x = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    outs = []
    for s, p in zip(calls, preds):
        ctx = C.StepContext(sigma=s, sample_sigmas=sig)
        outs.append(comb.combine(comb.plan(ctx, 3.0), p, x, t(s), t(1.0), ctx.level()))
    assert comb.momentum_levels() == [0, 1, 2]
    delta = [p["positive"] - p["negative"] for p in preds]
    # by hand: step 0 (calls 0, 1) has no momentum before it; step 1 (calls 2, 3) reads step 0's last call's delta
    for i, before in ((0, None), (1, None), (2, delta[1]), (3, delta[1]), (4, delta[3] - 0.5 * delta[1])):
        want = delta[i] if before is None else delta[i] - 0.5 * before
        torch.testing.assert_close(outs[i], preds[i]["positive"] + 2.0 * want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(rescale_phi=1.5), "rescale_phi"),
        (dict(rescale_phi=float("nan")), "rescale_phi"),
        (dict(zero_init_steps=-1), "zero_init_steps"),
        (dict(apg_momentum=1.0), "apg_momentum"),
        (dict(rescale_space="y"), "rescale_space"),
        (dict(apg_norm_threshold=-1.0), "apg_norm_threshold"),
    ],
)
def test_post_process_errors_name_the_field(bad, field):
    with pytest.raises(C.GuidanceConfigError, match=field):
        C.PostProcess(**bad)


def test_perp_neg_needs_empty():
    with pytest.raises(C.GuidanceConfigError, match="perp_neg"):
        _combiner(post=C.PostProcess(perp_neg=True))


def test_space_roundtrip_all_parameterizations():
    x, d = t(rand(2, 3, 2, 2)), t(rand(2, 3, 2, 2))
    for param in P.PARAMETERIZATIONS:
        sigma = t([0.3, 0.9])
        alpha = P.alpha_for(param, sigma)
        for space in P.SPACES:
            y = P.to_space(space, d, x, sigma, alpha)
            np.testing.assert_allclose(P.from_space(space, y, x, sigma, alpha).numpy(), d.numpy(), rtol=1e-9, atol=1e-9)
    # eps space is the noise: x = alpha x0 + sigma eps
    eps = P.to_space("eps", d, x, t(0.5), t(0.5))
    np.testing.assert_allclose((0.5 * d + 0.5 * eps).numpy(), x.numpy(), rtol=1e-12)


def test_cap_push_per_sample():
    """cap_push: each sample's push scaled to at most r |D_pos| (L2), samples under the cap bit for bit unchanged."""
    from guidance_core.cfg import cap_push

    d_pos = torch.ones(2, 3, 4, 4)
    push = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 5.0)])
    out = cap_push(push, d_pos, 0.5)
    assert torch.equal(out[0], push[0])
    torch.testing.assert_close(out[1].norm(), 0.5 * d_pos[1].norm())
    torch.testing.assert_close(out[1] / out[1].norm(), push[1] / push[1].norm())
    assert cap_push(push, d_pos, 0.0) is push
