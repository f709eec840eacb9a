"""The prompts (API form): every toy example workflow, as shipped and at a small batch, and hand-built prompts (CLIP
guidance on the tiny random CLIP, perturbed-attention and model terms, the distilled toy student with NAG, Train
Classifier) that together use every node of the pack."""

from __future__ import annotations

import json
import re

from devkit import demo_prompts
from devkit.reliability.common import CLIP_ARCH, CLIP_LABELS
from devkit.workflow_api import WorkflowError, is_widget, ordered_inputs, ui_to_api
from devkit.workflow_run import load, toy_workflow_names


def set_seed(prompt: dict, seed: int) -> dict:
    for node in prompt.values():
        ins = node["inputs"]
        for key in ("seed", "noise_seed"):
            if key in ins and not isinstance(ins[key], list):
                ins[key] = seed
    return prompt


def set_steps(prompt: dict, steps: int | None) -> dict:
    if steps:
        for node in prompt.values():
            if node["class_type"] in ("KSampler", "BasicScheduler") and not isinstance(
                node["inputs"].get("steps"), list
            ):
                node["inputs"]["steps"] = steps
    return prompt


def _toy(prompt, loader="model"):
    prompt[loader] = {
        "class_type": "GuidanceLabToyModelLoader",
        "inputs": {"toy_model": "fashion_diffusion.safetensors"},
    }
    return prompt


def _toy_tail(p, samples, prefix):
    p["decode"] = {"class_type": "GuidanceLabToyDecode", "inputs": {"samples": samples, "upscale": 1}}
    p["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}}
    return p


def _ksampler(model, pos, neg, latent, steps, seed, cfg=1.0):
    return {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": pos,
            "negative": neg,
            "latent_image": latent,
            "denoise": 1.0,
        },
    }


def _guide_inputs(target, scale=6.0):
    return {
        "target": target,
        "scale": scale,
        "sigma_lo": 0.0,
        "sigma_hi": 10000.0,
        "every_n": 1,
        "rms_clamp": 0.0,
        "dtype": "float32",
        "allow_other_latent_format": False,
    }


def _custom_sampling(p: dict, seed: int, steps: int, sampler: list, cfg: float, prefix: str, terms=None) -> dict:
    """SamplerCustomAdvanced with the pack's CFG Guider (positive p["pos"], negative p["empty"]) on the toy model."""
    p["ksel"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    p["guider"] = {
        "class_type": "GuidanceLabCFGGuider",
        "inputs": {
            "model": ["model", 0],
            "positive": ["pos", 0],
            "negative": ["empty", 0],
            "cfg": cfg,
            "neg_scale": 0.0,
            **({"terms": terms} if terms else {}),
        },
    }
    p["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}}
    p["sigmas"] = {
        "class_type": "BasicScheduler",
        "inputs": {"model": ["model", 0], "scheduler": "normal", "steps": steps, "denoise": 1.0},
    }
    p["sca"] = {
        "class_type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": ["noise", 0],
            "guider": ["guider", 0],
            "sampler": sampler,
            "sigmas": ["sigmas", 0],
            "latent_image": ["latent", 0],
        },
    }
    return _toy_tail(p, ["sca", 0], prefix)


def clip_prompt(seed: int, gradient: str, steps: int = 6, route: str = "patch", labels=None, target="a bag") -> dict:
    """CLIP guidance (tiny random open_clip file, VAE decode) on the toy model: MODEL patch + KSampler, or the
    SAMPLER wrapper + the pack's CFG Guider."""
    p = _toy({})
    p["vae"] = {"class_type": "GLReliabilityTinyVAE", "inputs": {"seed": 0}}
    p["empty"] = {
        "class_type": "GuidanceLabToyClass",
        "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1},
    }
    p["pos"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "Bag", "batch": 1}}
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["clip"] = {
        "class_type": "GuidanceLabCLIPClassifierLoader",
        "inputs": {
            "architecture": CLIP_ARCH,
            "checkpoint": "tiny_clip.safetensors",
            "labels": "\n".join(labels or CLIP_LABELS),
            "decode": "vae",
            "gradient": gradient,
            "cutouts": 1,
            "tau": 0.0,
            "vae": ["vae", 0],
        },
    }
    if route == "patch":
        p["guided"] = {
            "class_type": "GuidanceLabClassifierGuidance",
            "inputs": {"model": ["model", 0], "classifier": ["clip", 0], **_guide_inputs(target)},
        }
        p["ks"] = _ksampler(["guided", 0], ["empty", 0], ["empty", 0], ["latent", 0], steps, seed)
        return _toy_tail(p, ["ks", 0], f"rel/clip_{gradient}")
    p["sampler"] = {
        "class_type": "GuidanceLabClassifierSampler",
        "inputs": {"sampler": ["ksel", 0], "model": ["model", 0], "classifier": ["clip", 0], **_guide_inputs(target)},
    }
    return _custom_sampling(p, seed, steps, ["sampler", 0], cfg=2.0, prefix=f"rel/clip_{gradient}_sampler")


def terms_prompt(seed: int, steps: int = 6, blocks: str = "") -> dict:
    """The pack's CFG Guider on the toy model with a perturbed-attention term (PAG) and a model term chained."""
    p = _toy({})
    p["pos"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "Coat", "batch": 1}}
    p["empty"] = {
        "class_type": "GuidanceLabToyClass",
        "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1},
    }
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["pag"] = {"class_type": "GuidanceLabPerturbedTerm", "inputs": {"mode": "pag", "blocks": blocks, "weight": 1.5}}
    p["mterm"] = {
        "class_type": "GuidanceLabModelTerm",
        "inputs": {"model": ["model", 0], "weight": 0.5, "terms": ["pag", 0]},
    }
    return _custom_sampling(p, seed, steps, ["ksel", 0], cfg=3.0, prefix="rel/terms", terms=["mterm", 0])


def distilled_prompt(seed: int, steps: int = 6) -> dict:
    """The distilled toy student at cfg 1 on the stock KSampler: its embedded scale on a Distilled Guidance Schedule
    and a NAG term (paper form) against the negative prompt."""
    p = {
        "model": {
            "class_type": "GuidanceLabToyModelLoader",
            "inputs": {"toy_model": "fashion_diffusion_distilled.safetensors"},
        }
    }
    p["pos"] = {
        "class_type": "GuidanceLabToyClass",
        "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1},
    }
    p["neg"] = {
        "class_type": "GuidanceLabToyClass",
        "inputs": {"toy_world": ["model", 1], "label": "Trouser", "batch": 1},
    }
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["sched"] = {"class_type": "GuidanceLabSchedule", "inputs": {"kind": "linear", "start": 1.5, "end": 0.5}}
    p["dg"] = {
        "class_type": "GuidanceLabDistilledGuidance",
        "inputs": {"model": ["model", 0], "guidance": 3.0, "schedule": ["sched", 0]},
    }
    p["nag"] = {
        "class_type": "GuidanceLabNAGTerm",
        "inputs": {"form": "paper", "weight": 4.0, "tau": 2.5, "alpha": 0.25},
    }
    p["patch"] = {
        "class_type": "GuidanceLabCFGPatch",
        "inputs": {"model": ["dg", 0], "neg_scale": 0.0, "terms": ["nag", 0]},
    }
    p["ks"] = _ksampler(["patch", 0], ["pos", 0], ["neg", 0], ["latent", 0], steps, seed)
    return _toy_tail(p, ["ks", 0], "rel/distilled")


def train_prompt(
    seed: int,
    steps: int = 12,
    dataset: str = "rel_set",
    output_name: str = "rel_trained",
    target: str = "light",
    sample_steps: int = 4,
) -> dict:
    """Train Classifier (tiny dataset, tiny VAE) -> its classifier guides the toy model on the stock KSampler."""
    p = _toy({})
    p["vae"] = {"class_type": "GLReliabilityTinyVAE", "inputs": {"seed": 0}}
    p["empty"] = {
        "class_type": "GuidanceLabToyClass",
        "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1},
    }
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["train"] = {
        "class_type": "GuidanceLabTrainClassifier",
        "inputs": {
            "model": ["model", 0],
            "vae": ["vae", 0],
            "dataset": dataset,
            "output_name": output_name,
            "steps": steps,
            "batch_size": 8,
            "lr": 0.001,
            "seed": seed,
            "resolution": 32,
            "sigma_distribution": "log_uniform",
            "class_balance": False,
            "width": 8,
        },
    }
    p["guided"] = {
        "class_type": "GuidanceLabClassifierGuidance",
        "inputs": {"model": ["model", 0], "classifier": ["train", 0], **_guide_inputs(target, 3.0)},
    }
    p["ks"] = _ksampler(["guided", 0], ["empty", 0], ["empty", 0], ["latent", 0], sample_steps, seed)
    return _toy_tail(p, ["ks", 0], "rel/train")


def to_api(workflow: dict, object_info: dict) -> dict:
    """workflow_api.ui_to_api; a node saved before an input was appended to its schema (the example files lag the
    schema while a change is in progress) gets that input's default, as the frontend does when it loads the file."""
    wf = json.loads(json.dumps(workflow))
    for _ in range(20):
        try:
            return ui_to_api(wf, object_info)
        except WorkflowError as e:
            m = re.match(r"node (\S+) \((\w+)\): (\d+) widget values, the node has", str(e))
            if not m:
                raise
            node = next(n for n in wf["nodes"] if str(n["id"]) == m.group(1))
            widgets = [(name, spec) for name, spec, _ in ordered_inputs(object_info[m.group(2)]) if is_widget(spec)]
            have = len(node["widgets_values"])
            if have >= len(widgets):
                raise
            name, spec = widgets[have]
            node["widgets_values"].append(
                spec[1].get("default") if len(spec) > 1 and isinstance(spec[1], dict) else None
            )
    raise RuntimeError("workflow conversion did not converge")


def fill_defaults(prompt: dict, object_info: dict) -> dict:
    """Required widget inputs a hand-built prompt lacks get their schema default (inputs added since it was written)."""
    for node in prompt.values():
        for name, spec, required in ordered_inputs(object_info.get(node["class_type"], {})):
            if (
                required
                and name not in node["inputs"]
                and is_widget(spec)
                and len(spec) > 1
                and isinstance(spec[1], dict)
                and "default" in spec[1]
            ):
                node["inputs"][name] = spec[1]["default"]
    return prompt


def shrink(prompt: dict, batch: int = 2) -> dict:
    """Quick form: batch `batch` (a per-image target list cut to as many lines)."""
    for node in prompt.values():
        ins = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            ins["batch_size"] = min(ins["batch_size"], batch)
        if isinstance(ins.get("target"), str) and "\n" in ins["target"]:
            ins["target"] = "\n".join(ins["target"].split("\n")[:batch])
    return prompt


def shipped_workflows(object_info: dict) -> dict:
    """name -> function(seed) -> API prompt of every toy example workflow exactly as shipped (batch, steps)."""
    out = {}
    for name in toy_workflow_names():
        api = to_api(load(name), object_info)
        out[name + " (as shipped)"] = (lambda api: lambda seed: set_seed(json.loads(json.dumps(api)), seed))(api)
    return out


def specs(object_info: dict, quick: bool) -> dict:
    """name -> function(seed) -> API prompt. Together they use every node of the pack. The toy example workflows at
    batch 2 (the soak's load is the number of prompts, not their size); the quick form also at 6 steps."""
    steps = 6 if quick else None
    out = {}
    for name in toy_workflow_names():
        api = shrink(to_api(load(name), object_info))
        out[name] = (lambda api: lambda seed: set_steps(set_seed(json.loads(json.dumps(api)), seed), steps))(api)
    out["demo_ksampler_patch"] = lambda seed: set_steps(
        demo_prompts.ksampler_patch(seed=seed, prefix="rel/demo_patch"), steps
    )
    out["demo_guider_terms"] = lambda seed: set_steps(
        demo_prompts.guider(prefix="rel/demo_terms", seed=seed, cfg=1.0, terms=[("cross", 1.0)]), steps
    )
    out["toy_perturbed_and_model_terms"] = lambda seed: terms_prompt(seed)
    out["toy_distilled_nag"] = lambda seed: distilled_prompt(seed)
    out["clip_detached"] = lambda seed: clip_prompt(seed, "detached")
    out["clip_through_model"] = lambda seed: clip_prompt(seed, "through_model", route="sampler")
    out["train_classifier"] = lambda seed: train_prompt(seed)
    return {k: (lambda fn: lambda seed: keep_alive(fill_defaults(fn(seed), object_info)))(fn) for k, fn in out.items()}


def keep_alive(prompt: dict) -> dict:
    """Unconnected toy-model and VAE loaders in every prompt: never executed, but their cache keys stay in every
    prompt, so ComfyUI keeps the one toy model and VAE for the whole soak, and the hooks counted on them are those
    of hundreds of prompts on the same objects."""
    prompt["keep_toy"] = {
        "class_type": "GuidanceLabToyModelLoader",
        "inputs": {"toy_model": "fashion_diffusion.safetensors"},
    }
    prompt["keep_vae"] = {"class_type": "GLReliabilityTinyVAE", "inputs": {"seed": 0}}
    return prompt
