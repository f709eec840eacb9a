"""Reference implementations of the combiner's guidance reshapers (guidance_core/guidance_filters.py) for the tests and
the compatibility matrix, independent of the pack's code: MODEL clones whose ComfyUI sampler_cfg_function computes the
method as its reference defines it, on ComfyUI's own scores (x - D) or the network's outputs.

- FDG: diffusers' FrequencyDecoupledGuidance (kornia's Laplacian pyramid) with guidance_scales [s f_high, s f_low];
- MaMBo-G: diffusers' mambo_guidance on the network outputs F (D = a x + b F, a and b asked of ComfyUI's
  calculate_denoised), the tensors flattened per sample (diffusers' torch.norm over 3+ dims fails on torch 2.14);
- dynamic thresholding: the sd-dynamic-thresholding algorithm (mimic scale, MEAN start, AD measure, separate feature
  channels, constant modes) as its ComfyUI node runs it, and Imagen's percentile clamp of D, written here;
- TCFG and FreSca: ComfyUI's own TCFG and FreSca nodes (devkit users call them by node id)."""

from __future__ import annotations

import torch


def _cfg_clone(model, fn):
    m = model.clone()
    m.set_model_sampler_cfg_function(fn)
    return m


def _frames_as_channels(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1, t.shape[-2], t.shape[-1])


def fdg_model(model, f_low: float, f_high: float):
    from diffusers.guiders import FrequencyDecoupledGuidance

    def fn(args):
        s = args["cond_scale"]
        guider = FrequencyDecoupledGuidance(guidance_scales=[s * f_high, s * f_low])
        c, u = args["cond"], args["uncond"]
        score = guider.forward(_frames_as_channels(c), _frames_as_channels(u)).pred
        return score.reshape(c.shape)

    return _cfg_clone(model, fn)


def _affine(model, sigma, x):
    """(a x, b) of ComfyUI's D = a x + b F at sigma."""
    ms = model.model.model_sampling
    ax = ms.calculate_denoised(sigma, torch.zeros_like(x), x)
    b = ms.calculate_denoised(sigma, torch.ones_like(x), torch.zeros_like(x))
    return ax, b


def mambo_model(model, alpha: float):
    from diffusers.guiders.magnitude_aware_guidance import mambo_guidance

    def fn(args):
        x = args["input"]
        ax, b = _affine(model, args["sigma"], x)
        f_c, f_u = (args["cond_denoised"] - ax) / b, (args["uncond_denoised"] - ax) / b
        f = mambo_guidance(f_c.flatten(1), f_u.flatten(1), args["cond_scale"], alpha).reshape(x.shape)
        return x - (ax + b * f)

    return _cfg_clone(model, fn)


def sd_dynamic_thresholding(cond, uncond, cfg_scale, mimic_scale, percentile, phi=1.0):
    """sd-dynamic-thresholding's DynThresh.dynthresh in its node's default settings, on scores."""
    relative = cond - uncond
    return thresholded_targets(uncond + relative * cfg_scale, uncond + relative * mimic_scale, percentile, phi)


def thresholded_targets(cfg_target, mim_target, percentile, phi=1.0):
    """The thresholding part of DynThresh.dynthresh (MEAN, AD, per channel) on the CFG and mimic targets."""
    mim_flat, cfg_flat = mim_target.flatten(2), cfg_target.flatten(2)
    cfg_means = cfg_flat.mean(dim=2).unsqueeze(2)
    mim_centered = mim_flat - mim_flat.mean(dim=2).unsqueeze(2)
    cfg_centered = cfg_flat - cfg_means
    mim_ref = mim_centered.abs().max(dim=2).values.unsqueeze(2)
    cfg_ref = torch.quantile(cfg_centered.abs(), percentile, dim=2).unsqueeze(2)
    top = torch.maximum(mim_ref, cfg_ref)
    result = (cfg_centered.clamp(-top, top) / top) * mim_ref + cfg_means
    out = result.unflatten(2, mim_target.shape[2:])
    return out * phi + cfg_target * (1.0 - phi) if phi != 1.0 else out


def dyn_mimic_model(model, mimic_scale: float, percentile: float, phi: float = 1.0):
    def fn(args):
        return sd_dynamic_thresholding(args["cond"], args["uncond"], args["cond_scale"], mimic_scale, percentile, phi)

    return _cfg_clone(model, fn)


def dyn_imagen_model(model, percentile: float):
    def fn(args):
        d = args["uncond_denoised"] + args["cond_scale"] * (args["cond_denoised"] - args["uncond_denoised"])
        t = torch.quantile(d.flatten(1).abs(), percentile, dim=1).clamp(min=1.0)
        t = t.reshape(-1, *([1] * (d.dim() - 1)))
        return args["input"] - d.clamp(-t, t) / t

    return _cfg_clone(model, fn)
