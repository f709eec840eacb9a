"""The combiner's guidance reshapers (guidance_core/guidance_filters.py; PostProcess settings tcfg, fresca, fdg,
mambo_alpha, dyn_thresh): each against its reference on random tensors in eps, v and flow terms, and through real
sampling runs (KSampler + CFG Patch, SamplerCustomAdvanced + CFG Guider) on a UNet, an MMDiT, Flux and Wan (5-D)
against ComfyUI's own TCFG / FreSca nodes, diffusers' guiders and the sd-dynamic-thresholding algorithm; the limit
cases bit-identical to what they reduce to."""

import importlib
import inspect

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit import guidance_references as R
from devkit.cfg_helpers import custom_sample, ksample, our_guider, patch, post

pytestmark = pytest.mark.comfy


def gf():
    return H.pack_module("guidance_core.guidance_filters")


def comfy_module(name: str):
    H.boot()
    return importlib.import_module(name)


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# in each parameterization, D = a x + b F: eps (a 1, b -sigma), flow (a 1, b -sigma: F the velocity), v with
# sigma_data 1 (a 1 / (sigma^2 + 1), b -sigma / sqrt(sigma^2 + 1))
SIGMA = 1.7
FORMS = {"eps": (1.0, -SIGMA), "flow": (1.0, -SIGMA), "v": (1 / (SIGMA**2 + 1), -SIGMA / (SIGMA**2 + 1) ** 0.5)}


# ------------------------------------------------------------------ the formulas, on random tensors
@pytest.mark.parametrize("shape", [(2, 4, 16, 16), (1, 4, 32, 24), (1, 16, 3, 8, 8)])
@pytest.mark.parametrize("f_low,f_high", [(0.5, 1.0), (0.3, 1.6), (1.2, 0.8)])
def test_fdg_equals_diffusers_guider(shape, f_low, f_high):
    from diffusers.guiders import FrequencyDecoupledGuidance

    c, u, s = rand(*shape, seed=1), rand(*shape, seed=2), 5.0
    want = (
        FrequencyDecoupledGuidance(guidance_scales=[s * f_high, s * f_low])
        .forward(c.reshape(shape[0], -1, *shape[-2:]), u.reshape(shape[0], -1, *shape[-2:]))
        .pred.reshape(shape)
    )
    torch.testing.assert_close(u + s * gf().fdg(c - u, f_low, f_high), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("alpha", [0.5, 3.0, 8.0])
def test_mambo_equals_diffusers_in_every_parameterization(form, alpha):
    """Ours in D-space with a x (x_skip) against diffusers' mambo_guidance on the network outputs F."""
    from diffusers.guiders.magnitude_aware_guidance import mambo_guidance

    a, b = FORMS[form]
    x, f_c, f_u, s = rand(2, 4, 8, 8, seed=3), rand(2, 4, 8, 8, seed=4), rand(2, 4, 8, 8, seed=5), 6.0
    d_c, d_u = a * x + b * f_c, a * x + b * f_u
    want = a * x + b * mambo_guidance(f_c.flatten(1), f_u.flatten(1), s, alpha).reshape(x.shape)
    got = d_c + (s - 1) * gf().mambo_factor(d_c - d_u, d_u, a * x, alpha) * (d_c - d_u)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["eps", "flow"])
def test_tcfg_equals_comfyui_and_diffusers(form):
    """Bit for bit ComfyUI's score_tangential_damping (scores x - D); diffusers' guider (network outputs) in the
    parameterizations where the score is sigma F (eps, flow): to float32 SVD rounding."""
    from diffusers.guiders import TangentialClassifierFreeGuidance

    tcfg = comfy_module("comfy_extras.nodes_tcfg")
    a, b = FORMS[form]
    x, f_c, f_u, s = (
        rand(2, 4, 8, 8, seed=6).float(),
        rand(2, 4, 8, 8, seed=7).float(),
        rand(2, 4, 8, 8, seed=8).float(),
        4.0,
    )
    d_c, d_u = a * x + b * f_c, a * x + b * f_u
    ours = gf().tcfg_reference(d_c, d_u, x)
    assert torch.equal(ours, x - tcfg.score_tangential_damping(x - d_c, x - d_u))
    want = a * x + b * TangentialClassifierFreeGuidance(guidance_scale=s).forward(f_c, f_u).pred
    torch.testing.assert_close(ours + s * (d_c - ours), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 4, 16, 16), (2, 16, 3, 8, 8), (1, 4, 40, 24)])
@pytest.mark.parametrize("low,high,cutoff", [(1.0, 1.25, 20), (0.8, 1.5, 3), (1.3, 0.7, 1)])
def test_fresca_equals_comfyui_filter(shape, low, high, cutoff):
    """ComfyUI's Fourier_filter (0.33's form: the low block over the last two dims; on older ComfyUI, 4-D only,
    where both forms are one)."""
    fresca = comfy_module("comfy_extras.nodes_fresca")
    if len(shape) == 5 and "range(2)" not in inspect.getsource(fresca.Fourier_filter):
        pytest.skip("this ComfyUI's FreSca narrows the frame axis of 5-D latents too (fixed in 0.33)")
    delta = rand(*shape, seed=9).float()
    want = fresca.Fourier_filter(delta, scale_low=low, scale_high=high, freq_cutoff=cutoff)
    assert torch.equal(gf().fresca(delta, low, high, cutoff), want)


def test_dynamic_thresholding_equals_the_references():
    x, c, u = rand(2, 4, 8, 8, seed=10), rand(2, 4, 8, 8, seed=11), rand(2, 4, 8, 8, seed=12)
    s, m = 12.0, 7.0
    for p, phi in ((1.0, 1.0), (0.95, 1.0), (0.9, 0.6)):
        d_s, d_m = u + s * (c - u), u + m * (c - u)
        want = x - R.sd_dynamic_thresholding(x - c, x - u, s, m, p, phi)
        torch.testing.assert_close(gf().dynamic_threshold_mimic(d_s, d_m, x, p, phi), want, rtol=1e-12, atol=1e-12)
    d = 3.0 * rand(2, 4, 8, 8, seed=13)
    t = torch.quantile(d.flatten(1).abs(), 0.995, dim=1).clamp(min=1.0).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(gf().dynamic_threshold_imagen(d, 0.995), d.clamp(-t, t) / t, rtol=1e-12, atol=1e-12)
    assert float(gf().dynamic_threshold_imagen(d, 0.995).abs().max()) <= 1.0 + 1e-12


def test_limits_are_bit_identical():
    delta = rand(1, 4, 16, 16, seed=14)
    assert torch.equal(gf().fdg(delta, 1.0, 1.0), delta)
    assert torch.equal(gf().fresca(delta, 1.0, 1.0, 20), delta)
    torch.testing.assert_close(gf().fdg(delta, 1.0, 1.0 + 1e-9), delta, rtol=1e-8, atol=1e-8)  # the pyramid sums up


# ------------------------------------------------------------------ through real sampling runs
FAMILIES = ["SD1.5", "SD3.5 (MMDiT, flow)", "Flux.1 dev (guidance-distilled)", "Wan 2.1 (video, 5-D)"]
CFG = 4.0


def world(family):
    fam = F.FAMILIES[family]
    return F.model(family), dict(pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1), steps=3)


def ours(model, run, **settings):
    """KSampler through the CFG Patch and SamplerCustomAdvanced through the CFG Guider, with these settings."""
    p = post(**settings)
    k = ksample(patch(model, post=p), CFG, **run)
    g = custom_sample(
        model,
        our_guider(model, CFG, positive=run["pos"], negative=run["neg"], post=p),
        steps=run["steps"],
        latent=run["latent"],
    )
    return k, g


def check(model, run, reference, tol=1e-5, **settings):
    """Ours through both routes against the reference model under KSampler; float32 sampling, so to `tol`."""
    want = ksample(reference, CFG, **run)
    k, g = ours(model, run, **settings)
    torch.testing.assert_close(k, want, rtol=tol, atol=tol)
    torch.testing.assert_close(g, want, rtol=tol, atol=tol)
    assert float((k - ksample(model, CFG, **run)).abs().max()) > 1e-4  # the method acts


@pytest.mark.parametrize("family", FAMILIES)
def test_tcfg_through_sampling_equals_comfyui_node(family):
    model, run = world(family)
    check(model, run, H.run_node("TCFG", model=model)[0], tcfg=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_fresca_through_sampling_equals_comfyui_node(family):
    model, run = world(family)
    if family.startswith("Wan") and "range(2)" not in inspect.getsource(
        comfy_module("comfy_extras.nodes_fresca").Fourier_filter
    ):
        pytest.skip("this ComfyUI's FreSca narrows the frame axis of 5-D latents (fixed in 0.33)")
    node = H.run_node("FreSca", model=model, scale_low=0.9, scale_high=1.4, freq_cutoff=2)[0]
    check(model, run, node, fresca=True, fresca_low=0.9, fresca_high=1.4, fresca_cutoff=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_fdg_through_sampling_equals_diffusers(family):
    model, run = world(family)
    # the pyramid's bands summed in another order than diffusers' per-band CFG: float32 rounding of up to 4e-5
    check(model, run, R.fdg_model(model, 0.4, 1.3), tol=1e-4, fdg=True, fdg_low=0.4, fdg_high=1.3)


@pytest.mark.parametrize("family", FAMILIES + ["SD2.x v-prediction"])
def test_mambo_through_sampling_equals_diffusers(family):
    model, run = world(family)
    check(model, run, R.mambo_model(model, 2.0), mambo_alpha=2.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_dynamic_thresholding_through_sampling(family):
    model, run = world(family)
    check(model, run, R.dyn_mimic_model(model, 2.0, 0.9), dyn_thresh="mimic", dyn_mimic_scale=2.0, dyn_percentile=0.9)
    check(model, run, R.dyn_imagen_model(model, 0.9), dyn_thresh="imagen", dyn_percentile=0.9)


def test_off_and_limits_through_sampling_are_bit_identical():
    """fdg and fresca with factors 1, mambo at alpha 0, mimic at m = cfg with percentile 1: the plain run, bit for bit."""
    model, run = world("SD1.5")
    plain = ksample(patch(model, post=post()), CFG, **run)
    for settings in (
        dict(fdg=True, fdg_low=1.0, fdg_high=1.0),
        dict(fresca=True, fresca_low=1.0, fresca_high=1.0),
        dict(mambo_alpha=0.0),
        dict(dyn_thresh="mimic", dyn_mimic_scale=CFG, dyn_percentile=1.0),
    ):
        assert torch.equal(ksample(patch(model, post=post(**settings)), CFG, **run), plain), settings


def test_four_chained_in_the_documented_order():
    """TCFG, then MaMBo-G, then FDG, then dynamic thresholding (cfg.CFGCombiner.combine's order) through KSampler,
    against a sampler cfg function composing the references: ComfyUI's TCFG damping, diffusers' MaMBo-G factor and
    FDG bands, sd-dynamic-thresholding on the result and its mimic-scale twin."""
    from diffusers.guiders import FrequencyDecoupledGuidance

    model, run = world("SD1.5")
    tcfg = comfy_module("comfy_extras.nodes_tcfg")
    m, p, alpha = 2.0, 0.95, 2.0

    def fn(args):
        x, d_c, d_u, s = args["input"], args["cond_denoised"], args["uncond_denoised"], args["cond_scale"]
        d_u = x - tcfg.score_tangential_damping(x - d_c, x - d_u)
        delta = d_c - d_u
        r = delta.flatten(1).norm(dim=1) / (x - d_u).flatten(1).norm(dim=1)  # an eps model: a x = x
        c = (s - 1) * torch.exp(-alpha * r).reshape(-1, 1, 1, 1)
        band = FrequencyDecoupledGuidance(guidance_scales=[1.2, 0.5]).forward(delta, torch.zeros_like(delta)).pred
        return R.thresholded_targets(x - (d_u + (c + 1) * band), x - (d_u + m * band), p)

    reference = model.clone()
    reference.set_model_sampler_cfg_function(fn)
    check(
        model,
        run,
        reference,
        tol=1e-4,
        tcfg=True,
        mambo_alpha=alpha,
        fdg=True,
        fdg_low=0.5,
        fdg_high=1.2,
        dyn_thresh="mimic",
        dyn_mimic_scale=m,
        dyn_percentile=p,
    )
