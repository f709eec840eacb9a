"""Issue 12: the CFG GUIDER and MODEL patch at the edges where real graphs go. Each test here failed on the
code before the shared CFG runtime (nodes/cfg_runtime.py); all run inside a real ComfyUI."""

import pytest
import torch

from devkit import comfy_host as H
from devkit.cfg_helpers import (
    EMPTY,
    NEG,
    OTHER,
    POS,
    custom_sample,
    ksample,
    native_guider,
    our_guider,
    patch,
    post,
    schedule,
)

pytestmark = pytest.mark.comfy

GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError


def apg(model, momentum=0.0):
    return H.run_node("APG", model=model, eta=1.0, norm_threshold=5.0, momentum=momentum)[0]


# ------------------------------------------------------------------ defect 1: hooks on unguided steps
@pytest.mark.parametrize("order", ["apg_first", "ours_first"])
def test_unguided_steps_give_hooks_cfg1_semantics(models, order):
    """A schedule that turns guidance off must hand other nodes' hooks what ComfyUI gives them at cfg 1:
    the result equals native KSampler at cfg 1 with the same hook chained."""
    m = models["eps"]
    off = schedule(kind="constant", start=0.0)
    ref = ksample(apg(m), 1.0)
    chained = patch(apg(m), cfg_schedule=off) if order == "apg_first" else apg(patch(m, cfg_schedule=off))
    torch.testing.assert_close(ksample(chained, 7.0), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        custom_sample(apg(m), our_guider(apg(m), 7.0, cfg_schedule=off)), ref, rtol=1e-5, atol=1e-5
    )


def test_scheduled_steps_give_hooks_the_effective_scale(models):
    """With a schedule f, hooks see a real uncond and the step's scale 1 + f(s - 1): ComfyUI's APG node
    chained with our 0.5 schedule at cfg 7 equals APG at cfg 4."""
    m = models["eps"]
    half = schedule(kind="constant", start=0.5)
    ref = ksample(apg(m), 4.0)
    torch.testing.assert_close(ksample(patch(apg(m), cfg_schedule=half), 7.0), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ksample(apg(patch(m, cfg_schedule=half)), 7.0), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        custom_sample(apg(m), our_guider(apg(m), 7.0, cfg_schedule=half)), ref, rtol=1e-5, atol=1e-5
    )


def test_interval_hooks_see_cfg1_outside_and_real_uncond_inside(models):
    m = models["eps"].clone()
    seen = []

    def record(args):
        seen.append(
            (
                float(args["sigma"][0]),
                args["cond_scale"],
                args["conds"][1] is None,
                float(args["conds_out"][1].abs().max()),
            )
        )
        return args["conds_out"]

    m.set_model_sampler_pre_cfg_function(record)
    sig = [float(v) for v in H.run_node("BasicScheduler", model=m, scheduler="normal", steps=8, denoise=1.0)[0]]
    interval = schedule(kind="interval", sigma_lo=sig[4], sigma_hi=sig[0] + 1)
    for run in (
        lambda: ksample(patch(m, cfg_schedule=interval), 7.0),
        lambda: custom_sample(m, our_guider(m, 7.0, cfg_schedule=interval)),
    ):
        seen.clear()
        run()
        assert len(seen) == 8
        for s, scale, no_uncond, u_max in seen:
            if s > sig[4]:
                assert scale == 7.0 and not no_uncond and u_max > 0
            else:  # ComfyUI at cfg 1: no uncond cond, an all-zero uncond output, cond_scale 1
                assert scale == 1.0 and no_uncond and u_max == 0


@pytest.mark.parametrize("sampler", ["euler_cfg_pp", "dpmpp_2m_cfg_pp"])
def test_cfg_pp_samplers_get_a_real_uncond_on_unguided_steps(models, sampler):
    """CFG++ samplers read uncond_denoised in a post-CFG hook and set disable_cfg1_optimization: at cfg 1
    ComfyUI still evaluates the uncond for them. Our unguided steps must do the same."""
    m = models["eps"]
    off = schedule(kind="constant", start=0.0)
    ref = ksample(m, 1.0, sampler=sampler)
    torch.testing.assert_close(ksample(patch(m, cfg_schedule=off), 7.0, sampler=sampler), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        custom_sample(m, our_guider(m, 7.0, cfg_schedule=off), sampler=sampler),
        custom_sample(m, native_guider(m, 1.0), sampler=sampler),
        rtol=1e-5,
        atol=1e-5,
    )


def test_post_cfg_hooks_see_the_real_uncond_with_three_way(models):
    m = models["eps"].clone()
    seen = []
    m.set_model_sampler_post_cfg_function(
        lambda a: (seen.append((a["uncond_denoised"].clone(), a["cond_scale"], a["denoised"].clone())), a["denoised"])[
            1
        ]
    )
    custom_sample(m, our_guider(m, 5.0, empty=EMPTY, neg_scale=2.0), steps=1)
    ref_parts = []
    r = models["eps"].clone()
    r.set_model_sampler_post_cfg_function(lambda a: (ref_parts.append(a["cond_denoised"].clone()), a["denoised"])[1])
    custom_sample(r, native_guider(r, 1.0, pos=NEG), steps=1)  # D_neg at the same x
    uncond, scale, _ = seen[0]
    assert scale == 5.0
    # ComfyUI's uncond slot holds the user's negative (as with ComfyUI's own guiders; SAG, CFG++ and NAG read it):
    # its real prediction (batched), not a fold and not the empty prompt's
    torch.testing.assert_close(uncond, ref_parts[0], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ defect 11: fold near cfg 1
@pytest.mark.parametrize("cfg", [1.001, 1.0 + 1e-5])
def test_sampler_cfg_function_near_cfg1_is_exact(models, cfg):
    """RescaleCFG at multiplier 0 computes plain u + s(c - u): chained with a three-way combination at a scale
    near 1 it must reproduce the combination (the fold used to divide by s - 1 in float32)."""
    m = models["eps"]
    rescale0 = H.run_node("RescaleCFG", model=m, multiplier=0.0)[0]
    kw = dict(empty=EMPTY, neg_scale=2.0)
    ref = custom_sample(m, our_guider(m, cfg, **kw), steps=4)
    got = custom_sample(rescale0, our_guider(rescale0, cfg, **kw), steps=4)
    err = float((got - ref).abs().max() / ref.abs().max())
    assert err < 1e-5, err


# ------------------------------------------------------------------ defect 2: NaN from rescale in eps space
def test_rescale_in_eps_space_on_flow_is_refused(models):
    m = models["flow"]
    with pytest.raises(GuidanceConfigError, match="rescale_space='eps'.*flow"):
        our_guider(m, 5.0, post=post(rescale_phi=0.7, rescale_space="eps"))
    with pytest.raises(GuidanceConfigError, match="rescale_space='eps'.*flow"):
        patch(m, post=post(rescale_phi=0.7, rescale_space="eps"))
    for space in ("x0", "velocity", "v", "auto"):  # every other space stays finite at sigma = 1
        out = custom_sample(m, our_guider(m, 5.0, post=post(rescale_phi=0.7, rescale_space=space)), steps=4)
        assert torch.isfinite(out).all(), space


# ------------------------------------------------------------------ defect 9: context windows
def context_windows(model, length=8):
    """ComfyUI's context windows over the latent's height (dim 2): a 16-row latent in windows of 8 rows, 4
    overlapping; the cond lists are rebuilt per window, as for video frames. FreeNoise (an input since ComfyUI
    0.33) off: the windows alone."""
    extra = {"freenoise": False} if "freenoise" in H.declared_inputs("ContextWindowsManual") else {}
    return H.run_node(
        "ContextWindowsManual",
        model=model,
        context_length=length,
        context_overlap=4,
        context_schedule="standard_uniform",
        context_stride=1,
        closed_loop=False,
        fuse_method="pyramid",
        dim=2,
        **extra,
    )[0]


def test_patch_and_guider_work_under_context_windows(models):
    m = context_windows(models["eps"])
    half = schedule(kind="constant", start=0.5)
    ref = ksample(m, 4.0)
    assert (ref - ksample(models["eps"], 4.0)).abs().max() > 1e-2  # the windows are in effect
    assert (ref - ksample(m, 7.0)).abs().max() > 1e-2  # the schedule matters here
    torch.testing.assert_close(ksample(patch(m, cfg_schedule=half), 7.0), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        custom_sample(m, our_guider(m, 7.0, cfg_schedule=half)),
        custom_sample(m, native_guider(m, 4.0)),
        rtol=1e-5,
        atol=1e-5,
    )
    # three-way with neg_scale = s - 1 is standard CFG, also window by window
    three = {"empty": EMPTY, "neg_scale": 4.0}
    torch.testing.assert_close(ksample(patch(m, **three), 5.0), ksample(m, 5.0), rtol=1e-4, atol=1e-4)


def test_patch_refuses_guiders_it_cannot_drive(models):
    m = patch(models["eps"], cfg_schedule=schedule(kind="constant", start=0.5))
    dual = H.run_node(
        "DualCFGGuider",
        model=m,
        cond1=POS,
        cond2=OTHER,
        negative=NEG,
        cfg_conds=5.0,
        cfg_cond2_negative=2.0,
        style="regular",
    )[0]
    with pytest.raises(GuidanceConfigError, match="Guider_DualCFG"):
        custom_sample(m, dual)


# ------------------------------------------------------------------ defect 10: multi-stage samplers
def sigmas_of(model, steps):
    return H.run_node("BasicScheduler", model=model, scheduler="normal", steps=steps, denoise=1.0)[0]


class StartNoise:
    """A NOISE input (ComfyUI's interface: .seed and generate_noise(latent)) holding a fixed tensor."""

    def __init__(self, noise):
        self.seed, self.noise = 0, noise

    def generate_noise(self, input_latent):
        return self.noise.clone()


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm_2", "dpmpp_2m"])
def test_zero_init_leaves_x_unchanged_for_whole_steps(models, sampler):
    """Zero-init K = 2 on a flow model: the first two steps keep x (zero velocity, no model call, no
    corrector half-step); the sampler then runs from step 2 with a fresh history. Reference: the same
    sampler on sigmas[2:] started from the unchanged x (native CFGGuider)."""
    m = models["flow"]
    sig = sigmas_of(m, 6)
    noise = H.run_node("RandomNoise", noise_seed=5)[0].generate_noise(H.empty_latent())
    x_start = float(sig[0]) * noise  # flow: x = sigma * noise for an empty latent
    ref = H.run_node(
        "SamplerCustomAdvanced",
        noise=StartNoise(x_start / float(sig[2])),
        guider=native_guider(m, 5.0),
        sampler=H.run_node("KSamplerSelect", sampler_name=sampler)[0],
        sigmas=sig[2:],
        latent_image=H.empty_latent(),
    )[0]["samples"]
    rc = H.RowCounter(m)
    try:
        got = custom_sample(m, our_guider(m, 5.0, post=post(zero_init_steps=2)), sampler=sampler, sigmas=sig)
        patched = patch(m, post=post(zero_init_steps=2))  # the patch under ComfyUI's own CFGGuider (as in KSampler)
        got_patch = custom_sample(patched, native_guider(patched, 5.0), sampler=sampler, sigmas=sig)
    finally:
        rc.close()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_patch, ref, rtol=1e-5, atol=1e-5)
    assert all(s <= float(sig[2]) + 1e-6 for _, s in rc.calls)  # no model call in the zero-init steps


def test_zero_init_is_refused_on_non_flow_models(models):
    for kind in ("eps", "v"):
        with pytest.raises(GuidanceConfigError, match="zero_init_steps.*flow"):
            our_guider(models[kind], 5.0, post=post(zero_init_steps=1))
        with pytest.raises(GuidanceConfigError, match="zero_init_steps.*flow"):
            patch(models[kind], post=post(zero_init_steps=1))


@pytest.mark.parametrize("sampler", ["heun", "dpm_2"])
def test_apg_momentum_advances_once_per_step(models, sampler):
    """APG momentum is a per-step state: a sampler that calls the model twice per step must give the same
    momentum sequence as one call per step would. Check: the combiner's committed running average after a
    run has exactly one entry per noise level of the schedule that the sampler visited."""
    m = models["eps"]
    g = our_guider(m, 5.0, post=post(apg=True, apg_momentum=-0.5, apg_norm_threshold=0.0))
    out = custom_sample(m, g, sampler=sampler, steps=5)
    assert torch.isfinite(out).all()
    assert g.runtime.combiner.momentum_levels() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------ defect 12: negative-prompt tagging
def test_empty_and_negative_terms_carry_negative_prompt_type():
    """SDXL-refiner conditioning depends on prompt_type (aesthetic score 2.5 for negatives, 6 otherwise).
    The empty prompt and negative-weight terms must be tagged as ComfyUI's own guiders tag them."""
    m = H.tiny_model("eps", seed=3, family="refiner")
    p, n, e = (H.cond(s, pooled=1280) for s in (11, 12, 13))
    # empty as the baseline: D = D_e + s (D_p - D_e), ComfyUI's CFGGuider with e as its negative
    ref = custom_sample(m, native_guider(m, 5.0, pos=p, neg=e), steps=3)
    torch.testing.assert_close(
        custom_sample(m, our_guider(m, 5.0, positive=p, negative=None, empty=e), steps=3), ref, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        ksample(patch(m, empty=e, neg_scale=0.0), 5.0, steps=3, pos=p, neg=n), ref, rtol=1e-5, atol=1e-5
    )
    # a term of weight -1: D = D_p - (D_e - D_n), ComfyUI's DualCFGGuider (its middle cond is tagged negative)
    dual = H.run_node(
        "DualCFGGuider", model=m, cond1=p, cond2=e, negative=n, cfg_conds=1.0, cfg_cond2_negative=0.0, style="regular"
    )[0]
    term = H.run_node("GuidanceLabTerm", conditioning=e, weight=-1.0)[0]
    torch.testing.assert_close(
        custom_sample(m, our_guider(m, 1.0, positive=p, negative=n, terms=term), steps=3),
        custom_sample(m, dual, steps=3),
        rtol=1e-5,
        atol=1e-5,
    )
