"""Helpers of the CFG tests: sample through KSampler / SamplerCustomAdvanced with the pack's nodes or
ComfyUI's own, on the tiny real models of comfy_host."""

from . import comfy_host as H
from guidance_core import schedules as S

POS, NEG, EMPTY, OTHER = H.cond(1), H.cond(2), H.cond(3), H.cond(4)


def ksample(
    model,
    cfg,
    sampler="euler",
    steps=8,
    seed=5,
    denoise=1.0,
    pos=POS,
    neg=NEG,
    batch=1,
    scheduler="normal",
    latent=None,
):
    out = H.run_node(
        "KSampler",
        model=model,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler_name=sampler,
        scheduler=scheduler,
        positive=pos,
        negative=neg,
        latent_image=H.empty_latent(batch) if latent is None else latent,
        denoise=denoise,
    )[0]
    return out["samples"]


def custom_sample(
    model, guider, sampler="euler", steps=8, seed=5, denoise=1.0, batch=1, sigmas=None, scheduler="normal", latent=None
):
    """sampler: a name (KSamplerSelect) or a SAMPLER."""
    if sigmas is None:
        sigmas = H.run_node("BasicScheduler", model=model, scheduler=scheduler, steps=steps, denoise=denoise)[0]
    if isinstance(sampler, str):
        sampler = H.run_node("KSamplerSelect", sampler_name=sampler)[0]
    return H.run_node(
        "SamplerCustomAdvanced",
        noise=H.run_node("RandomNoise", noise_seed=seed)[0],
        guider=guider,
        sampler=sampler,
        sigmas=sigmas,
        latent_image=H.empty_latent(batch) if latent is None else latent,
    )[0]["samples"]


def our_guider(model, cfg, **kw):
    kw.setdefault("neg_scale", cfg - 1.0)
    if "negative" not in kw:
        kw["negative"] = NEG
    return H.run_node("GuidanceLabCFGGuider", model=model, positive=kw.pop("positive", POS), cfg=cfg, **kw)[0]


def native_guider(model, cfg, pos=POS, neg=NEG):
    return H.run_node("CFGGuider", model=model, positive=pos, negative=neg, cfg=cfg)[0]


def patch(model, **kw):
    kw.setdefault("neg_scale", 0.0)
    return H.run_node("GuidanceLabCFGPatch", model=model, **kw)[0]


def schedule(**kw):
    args = dict(S.DEFAULTS)
    args.update(kw)
    return H.run_node("GuidanceLabSchedule", **args)[0]


def post(**kw):
    args = dict(
        rescale_phi=0.0,
        rescale_space="auto",
        cfg_zero_star=False,
        zero_init_steps=0,
        apg=False,
        apg_eta=1.0,
        apg_momentum=0.0,
        apg_norm_threshold=0.0,
        perp_neg=False,
    )
    args.update(kw)
    return H.run_node("GuidanceLabPostProcess", **args)[0]


def one_step(model, guider):
    sig = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=1, denoise=1.0)[0]
    return custom_sample(model, guider, sigmas=sig), sig  # euler to sigma 0 returns D(x_T) itself


def raw_parts(model):
    """D of each prompt alone at the first x, and that x (recorded by a real post-CFG hook)."""
    rec = model.clone()
    xs = []
    rec.set_model_sampler_post_cfg_function(lambda a: (xs.append(a["input"].clone()), a["denoised"])[1])
    parts = {
        name: one_step(rec, our_guider(rec, 1.0, positive=c))[0]
        for name, c in (("pos", POS), ("neg", NEG), ("empty", EMPTY))
    }
    sig = one_step(model, native_guider(model, 1.0))[1]
    return parts, xs[0], float(sig[0])


def slg_simple(model):
    """ComfyUI's SkipLayerGuidanceDiTSimple on the first double block, all steps."""
    return H.run_node(
        "SkipLayerGuidanceDiTSimple",
        model=model,
        double_layers="0",
        single_layers="",
        start_percent=0.0,
        end_percent=1.0,
    )[0]
