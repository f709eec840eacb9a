"""API-format prompts that exercise Guidance Lab on the demo shapes world (scripts/demo_nodes)."""

from __future__ import annotations


def _base(label="triangle", batch=4, seed=7):
    return {
        "model": {"class_type": "GuidanceLabDemoShapesModel", "inputs": {}},
        "pos": {"class_type": "GuidanceLabDemoClass", "inputs": {"label": label}},
        "empty": {"class_type": "GuidanceLabDemoClass", "inputs": {"label": "empty"}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": batch}},
    }


def _save(p, samples_ref, prefix):
    p["image"] = {"class_type": "GuidanceLabDemoToImage", "inputs": {"samples": samples_ref}}
    p["save"] = {"class_type": "SaveImage", "inputs": {"images": ["image", 0], "filename_prefix": prefix}}
    return p


def schedule_node(**kw):
    inputs = {
        "kind": "constant",
        "axis": "progress",
        "start": 1.0,
        "end": 0.0,
        "exponent": 2.0,
        "sigma_lo": 0.28,
        "sigma_hi": 5.42,
        "inside": 1.0,
        "outside": 0.0,
        "keyframes": "0:1, 1:0",
    }
    inputs.update(kw)
    return {"class_type": "GuidanceLabSchedule", "inputs": inputs}


def post_node(**kw):
    inputs = {
        "rescale_phi": 0.0,
        "rescale_space": "auto",
        "cfg_zero_star": False,
        "zero_init_steps": 0,
        "apg": False,
        "apg_eta": 1.0,
        "apg_momentum": 0.0,
        "apg_norm_threshold": 0.0,
        "perp_neg": False,
    }
    inputs.update(kw)
    return {"class_type": "GuidanceLabPostProcess", "inputs": inputs}


def ksampler_patch(cfg=4.0, seed=7, prefix="guidance-lab/ksampler_patch"):
    """Stock KSampler + the CFG patch: linear-down schedule and rescale 0.5."""
    p = _base(seed=seed)
    p["sched"] = schedule_node(kind="linear", start=1.0, end=0.0)
    p["post"] = post_node(rescale_phi=0.5)
    p["patch"] = {
        "class_type": "GuidanceLabCFGPatch",
        "inputs": {"model": ["model", 0], "neg_scale": 0.0, "cfg_schedule": ["sched", 0], "post": ["post", 0]},
    }
    p["ks"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": ["patch", 0],
            "seed": seed,
            "steps": 20,
            "cfg": cfg,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": ["pos", 0],
            "negative": ["empty", 0],
            "latent_image": ["latent", 0],
            "denoise": 1.0,
        },
    }
    return _save(p, ["ks", 0], prefix)


def guider(prefix="guidance-lab/guider_interval", cfg=5.0, seed=7, sampler="dpmpp_2m", terms=None, label="circle"):
    """SamplerCustomAdvanced + the CFG GUIDER with an interval schedule (and optional extra terms)."""
    p = _base(label=label, seed=seed)
    p["sched"] = schedule_node(kind="interval", sigma_lo=0.28, sigma_hi=5.42)
    inputs = {
        "model": ["model", 0],
        "positive": ["pos", 0],
        "negative": ["empty", 0],
        "cfg": cfg,
        "neg_scale": 0.0,
        "cfg_schedule": ["sched", 0],
    }
    if terms:
        prev = None
        for i, (label_i, w) in enumerate(terms):
            p[f"c{i}"] = {"class_type": "GuidanceLabDemoClass", "inputs": {"label": label_i}}
            t_in = {"conditioning": [f"c{i}", 0], "weight": w}
            if prev:
                t_in["terms"] = [prev, 0]
            p[f"t{i}"] = {"class_type": "GuidanceLabTerm", "inputs": t_in}
            prev = f"t{i}"
        inputs["terms"] = [prev, 0]
    p["guider"] = {"class_type": "GuidanceLabCFGGuider", "inputs": inputs}
    p["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}}
    p["sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    p["sigmas"] = {
        "class_type": "BasicScheduler",
        "inputs": {"model": ["model", 0], "scheduler": "normal", "steps": 20, "denoise": 1.0},
    }
    p["sca"] = {
        "class_type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": ["noise", 0],
            "guider": ["guider", 0],
            "sampler": ["sampler", 0],
            "sigmas": ["sigmas", 0],
            "latent_image": ["latent", 0],
        },
    }
    return _save(p, ["sca", 0], prefix)


def all_prompts():
    return {
        "ksampler_patch": ksampler_patch(),
        "guider_interval": guider(),
        "composable_circle_and_cross": guider(
            prefix="guidance-lab/composable", cfg=1.0, label="circle", terms=[("cross", 1.0)]
        ),
    }
