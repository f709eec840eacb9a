"""Generate example_workflows/*.json (the pack's workflow templates, UI format) from the node definitions of a
real ComfyUI server with the pack (/object_info), through devkit/workflow_builder.py. Not shipped.

    .venv/bin/python -m scripts.make_workflows            # starts a headless server, writes the files
    .venv/bin/python -m scripts.make_workflows --check    # only compare with the files on disk

The generated files are committed; tests/test_workflows.py checks that they are up to date, convert to
valid API prompts, run (toy ones) and load in the frontend. Thumbnails: scripts/make_workflow_thumbnails.py.
They are made on one ComfyUI, REFERENCE_COMFYUI (set-up's .comfyui): a node's output slots come from that
version's /object_info, and other versions declare other ones for some core nodes (0.33's SaveImage passes its
images on), so the files are written there only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from devkit.workflow_builder import Graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "example_workflows")

REFERENCE_COMFYUI = "0.3.75"  # the ComfyUI whose /object_info the committed files are made from
TOY_MODEL = "fashion_diffusion.safetensors"
TOY_WEAK_MODEL = "fashion_diffusion_weak.safetensors"
TOY_CLASSIFIER = "toy_fashion_classifier.safetensors"
SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
SD15_CLASSIFIER = "my_sd15_classifier.safetensors"
CLIP_CHECKPOINT = "open_clip_vit_b_32.safetensors"
TOY_BATCH, TOY_STEPS, SEED = 16, 16, 7
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

TOY_NOTE = (
    "The toy world runs in seconds on a CPU with nothing to download: the pack's Fashion-MNIST diffusion "
    "model (1x32x32 latents, which are the images). **Empty Latent Image** at 256x256 px is a 32x32 latent; "
    "ComfyUI's samplers give an empty latent the model's one channel."
)


def toy_base(g: Graph, note: str, batch: int = TOY_BATCH):
    g.note(f"{note}\n\n{TOY_NOTE}", col=0, size=(420, 300))
    toy = g.add("GuidanceLabToyModelLoader", col=0, toy_model=TOY_MODEL)
    latent = g.add(
        "EmptyLatentImage",
        col=0,
        title="Empty Latent Image (32x32 toy latent)",
        width=256,
        height=256,
        batch_size=batch,
    )
    return toy, latent


def toy_save(g: Graph, samples, name: str, col: int):
    image = g.add("GuidanceLabToyDecode", col=col, samples=samples, upscale=4)
    g.add("SaveImage", col=col + 1, images=image["image"], filename_prefix=f"guidance-lab/{name}")


def toy_cfg_guider(g: Graph, name: str):
    """SamplerCustomAdvanced + CFG Guider: three-way CFG, a guidance interval, a scheduled term."""
    toy, latent = toy_base(
        g,
        (
            "## CFG Guider (Guidance Lab) with schedules\n\n"
            "**Sneaker** with the **empty** prompt as the unconditional (three-way CFG) and **Ankle boot** as a "
            "negative whose strength fades out (linear schedule 1 -> 0). CFG acts only inside a **guidance "
            "interval** of noise levels; outside it only the positive prompt is evaluated. A **Guidance Term** adds "
            "**Sandal** at weight 0.5 in the early steps (power_down schedule).\n\n"
            "Every active term runs in one batched model call per step."
        ),
    )
    pos = g.add("GuidanceLabToyClass", col=1, title="Positive: Sneaker", toy_world=toy["toy_world"], label="Sneaker")
    neg = g.add(
        "GuidanceLabToyClass", col=1, title="Negative: Ankle boot", toy_world=toy["toy_world"], label="Ankle boot"
    )
    empty = g.add("GuidanceLabToyClass", col=1, title="Empty prompt", toy_world=toy["toy_world"], label="empty")
    extra = g.add("GuidanceLabToyClass", col=1, title="Term: Sandal", toy_world=toy["toy_world"], label="Sandal")
    interval = g.add(
        "GuidanceLabSchedule",
        col=2,
        title="CFG schedule: guidance interval",
        kind="interval",
        axis="sigma",
        sigma_lo=0.28,
        sigma_hi=5.42,
        inside=1.0,
        outside=0.0,
    )
    fade = g.add(
        "GuidanceLabSchedule", col=2, title="Negative schedule: linear 1 -> 0", kind="linear", start=1.0, end=0.0
    )
    early = g.add(
        "GuidanceLabSchedule",
        col=3,
        title="Term schedule: early steps",
        kind="power_down",
        start=1.0,
        end=0.0,
        exponent=3.0,
    )
    term = g.add("GuidanceLabTerm", col=3, conditioning=extra["conditioning"], weight=0.5, schedule=early["schedule"])
    guider = g.add(
        "GuidanceLabCFGGuider",
        col=4,
        model=toy["model"],
        positive=pos["conditioning"],
        negative=neg["conditioning"],
        empty=empty["conditioning"],
        cfg=4.0,
        neg_scale=1.5,
        cfg_schedule=interval["schedule"],
        neg_schedule=fade["schedule"],
        terms=term["terms"],
    )
    noise = g.add("RandomNoise", col=4, noise_seed=SEED)
    sampler = g.add("KSamplerSelect", col=4, sampler_name="dpmpp_2m")
    sigmas = g.add("BasicScheduler", col=4, model=toy["model"], scheduler="karras", steps=TOY_STEPS, denoise=1.0)
    sca = g.add(
        "SamplerCustomAdvanced",
        col=5,
        noise=noise["NOISE"],
        guider=guider["guider"],
        sampler=sampler["SAMPLER"],
        sigmas=sigmas["SIGMAS"],
        latent_image=latent["LATENT"],
    )
    toy_save(g, sca["output"], name, col=5)


def toy_cfg_patch(g: Graph, name: str):
    """Stock KSampler + CFG Patch: a CFG schedule and CFG rescale."""
    toy, latent = toy_base(
        g,
        (
            "## CFG Patch (Guidance Lab) on the stock KSampler\n\n"
            "The patch gives the KSampler's **cfg** a per-step schedule (here cosine, from full strength at high "
            "noise down to 0.25 of it) and post-processing (**CFG rescale** 0.5). It clones the MODEL and stacks "
            "with other packs' patches."
        ),
    )
    pos = g.add("GuidanceLabToyClass", col=1, title="Positive: Trouser", toy_world=toy["toy_world"], label="Trouser")
    empty = g.add(
        "GuidanceLabToyClass", col=1, title="Negative: empty prompt", toy_world=toy["toy_world"], label="empty"
    )
    post = g.add("GuidanceLabPostProcess", col=1, rescale_phi=0.5)
    sched = g.add(
        "GuidanceLabSchedule", col=2, title="CFG schedule: cosine 1 -> 0.25", kind="cosine", start=1.0, end=0.25
    )
    patch = g.add(
        "GuidanceLabCFGPatch",
        col=3,
        model=toy["model"],
        neg_scale=0.0,
        cfg_schedule=sched["schedule"],
        post=post["post"],
    )
    ks = g.add(
        "KSampler",
        col=4,
        model=patch["model"],
        seed=SEED,
        steps=TOY_STEPS,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        positive=pos["conditioning"],
        negative=empty["conditioning"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    toy_save(g, ks["LATENT"], name, col=4)


def toy_pag_ksampler(g: Graph, name: str):
    """Stock KSampler + CFG Patch with a perturbed-attention (PAG) term, batched with the CFG rows."""
    toy, latent = toy_base(
        g,
        (
            "## Perturbed-attention guidance (PAG) on the stock KSampler\n\n"
            "A **Perturbed-Attention Term** (PAG: the middle block's self-attention map replaced by the identity, Ahn "
            "et al. 2024) moves each step away from the model's own perturbed prediction: "
            "D += 2 (D_pos - D_perturbed), on top of CFG 3. The perturbed rows run in the same batched model call "
            "as the prompt rows: 3 rows in one call per step (ComfyUI's PAG node: 2 calls). Switch the mode to "
            "**seg** for smoothed energy guidance (blurred queries)."
        ),
    )
    pos = g.add("GuidanceLabToyClass", col=1, title="Positive: Dress", toy_world=toy["toy_world"], label="Dress")
    empty = g.add(
        "GuidanceLabToyClass", col=1, title="Negative: empty prompt", toy_world=toy["toy_world"], label="empty"
    )
    pag = g.add("GuidanceLabPerturbedTerm", col=2, mode="pag", blocks="middle.0", weight=2.0)
    patch = g.add("GuidanceLabCFGPatch", col=3, model=toy["model"], neg_scale=0.0, terms=pag["terms"])
    ks = g.add(
        "KSampler",
        col=4,
        model=patch["model"],
        seed=SEED,
        steps=TOY_STEPS,
        cfg=3.0,
        sampler_name="euler",
        scheduler="normal",
        positive=pos["conditioning"],
        negative=empty["conditioning"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    toy_save(g, ks["LATENT"], name, col=4)


def toy_autoguidance(g: Graph, name: str):
    """SamplerCustomAdvanced + CFG Guider at cfg 1 with a model term: autoguidance by the weak toy model."""
    toy, latent = toy_base(
        g,
        (
            "## Autoguidance (Karras et al. 2024) with the CFG Guider\n\n"
            "No CFG (cfg 1, no negative): the guidance comes from a **weaker version of the same model**, the pack's "
            "weak toy model (same network, trained on 1/40 of the images the shipped one saw). A **Model Term** of "
            "weight 1 gives D = D_weak + 2 (D_good - D_weak), Karras et al.'s w = 2. ComfyUI loads the weak model with "
            "the sampled one; it runs one extra call per step. Compare with the CFG examples: more variety at a "
            "similar class fidelity is what the paper reports."
        ),
        batch=TOY_BATCH,
    )
    weak = g.add("GuidanceLabToyModelLoader", col=1, title="Load the weak toy model", toy_model=TOY_WEAK_MODEL)
    pos = g.add("GuidanceLabToyClass", col=1, title="Positive: Bag", toy_world=toy["toy_world"], label="Bag")
    term = g.add("GuidanceLabModelTerm", col=2, model=weak["model"], weight=1.0)
    guider = g.add(
        "GuidanceLabCFGGuider",
        col=3,
        model=toy["model"],
        positive=pos["conditioning"],
        cfg=1.0,
        neg_scale=0.0,
        terms=term["terms"],
    )
    noise = g.add("RandomNoise", col=3, noise_seed=SEED)
    sampler = g.add("KSamplerSelect", col=3, sampler_name="euler")
    sigmas = g.add("BasicScheduler", col=3, model=toy["model"], scheduler="normal", steps=TOY_STEPS, denoise=1.0)
    sca = g.add(
        "SamplerCustomAdvanced",
        col=4,
        noise=noise["NOISE"],
        guider=guider["guider"],
        sampler=sampler["SAMPLER"],
        sigmas=sigmas["SIGMAS"],
        latent_image=latent["LATENT"],
    )
    toy_save(g, sca["output"], name, col=4)


def toy_nag_ksampler(g: Graph, name: str):
    """Stock KSampler at cfg 1 + CFG Patch with a NAG term: a negative prompt where CFG is off."""
    toy, latent = toy_base(
        g,
        (
            "## A negative prompt at CFG 1: normalized attention guidance (NAG)\n\n"
            "Guidance-distilled models (Flux dev, Lightning/turbo LoRAs) sample at **cfg 1**, where ComfyUI never runs the "
            "negative prompt. A **NAG Term** (Chen et al. 2025) makes it work inside attention: the positive row's "
            "cross-attention is pushed away from the negative prompt's (paper form: no extra row, one model row per "
            "step). Here the positive is the **empty** prompt (any class) and the negative **Trouser**: "
            "trousers become rare. Set the term's weight to 0 to compare."
        ),
    )
    pos = g.add("GuidanceLabToyClass", col=1, title="Positive: empty prompt", toy_world=toy["toy_world"], label="empty")
    neg = g.add("GuidanceLabToyClass", col=1, title="Negative: Trouser", toy_world=toy["toy_world"], label="Trouser")
    nag = g.add("GuidanceLabNAGTerm", col=2, form="paper", weight=4.0, tau=2.5, alpha=0.5)
    patch = g.add("GuidanceLabCFGPatch", col=3, model=toy["model"], neg_scale=0.0, terms=nag["terms"])
    ks = g.add(
        "KSampler",
        col=4,
        model=patch["model"],
        seed=SEED,
        steps=TOY_STEPS,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=pos["conditioning"],
        negative=neg["conditioning"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    toy_save(g, ks["LATENT"], name, col=4)


def toy_reshapers_ksampler(g: Graph, name: str):
    """Stock KSampler at a high cfg + CFG Patch with three reshapers of the guidance step and a TPG term."""
    toy, latent = toy_base(
        g,
        (
            "## A high CFG scale, reshaped: TCFG, FDG, dynamic thresholding, and a TPG term\n\n"
            "CFG 9 on **Coat**, which alone oversaturates. **Guidance Post-processing** applies, in this order: "
            "**TCFG** (the unconditional's score keeps only its part along the positive's; ComfyUI's TCFG node), "
            "**FDG** (the guidance's low frequencies at half the scale, the detail at the full one; diffusers' FDG) and "
            "**dynamic thresholding** (mimic 3: the result keeps the dynamic range of CFG 3). A **Perturbed-Attention "
            "Term** in mode **tpg** (token perturbation: the middle block's tokens shuffled) adds structure, batched with "
            "the prompt rows: 3 rows in one call per step. Switch a setting off to compare."
        ),
    )
    pos = g.add("GuidanceLabToyClass", col=1, title="Positive: Coat", toy_world=toy["toy_world"], label="Coat")
    empty = g.add(
        "GuidanceLabToyClass", col=1, title="Negative: empty prompt", toy_world=toy["toy_world"], label="empty"
    )
    post = g.add(
        "GuidanceLabPostProcess",
        col=2,
        rescale_phi=0.0,
        rescale_space="auto",
        cfg_zero_star=False,
        zero_init_steps=0,
        apg=False,
        apg_eta=0.0,
        apg_momentum=-0.5,
        apg_norm_threshold=15.0,
        perp_neg=False,
        tcfg=True,
        fresca=False,
        fresca_low=1.0,
        fresca_high=1.25,
        fresca_cutoff=20,
        fdg=True,
        fdg_low=0.5,
        fdg_high=1.0,
        mambo_alpha=0.0,
        dyn_thresh="mimic",
        dyn_mimic_scale=3.0,
        dyn_percentile=1.0,
        dyn_phi=1.0,
    )
    tpg = g.add("GuidanceLabPerturbedTerm", col=2, mode="tpg", blocks="middle.0", weight=1.0)
    patch = g.add(
        "GuidanceLabCFGPatch", col=3, model=toy["model"], neg_scale=0.0, post=post["post"], terms=tpg["terms"]
    )
    ks = g.add(
        "KSampler",
        col=4,
        model=patch["model"],
        seed=SEED,
        steps=TOY_STEPS,
        cfg=9.0,
        sampler_name="euler",
        scheduler="normal",
        positive=pos["conditioning"],
        negative=empty["conditioning"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    toy_save(g, ks["LATENT"], name, col=4)


def toy_classifier_ksampler(g: Graph, name: str):
    """Classifier guidance (MODEL patch) with the toy world's noise-aware classifier, no prompt."""
    toy, latent = toy_base(
        g,
        (
            "## Classifier guidance on the stock KSampler\n\n"
            "No class prompt at all: the model samples with the **empty** prompt (cfg 1), and the toy world's "
            "**noise-aware classifier** steers every step toward **Bag**: D' = D + s*sigma^2*grad log p(Bag | x, "
            "sigma). Try other labels in **target** (the *insert label* list fills it), or 'Bag:1, Coat:-1'."
        ),
    )
    empty = g.add("GuidanceLabToyClass", col=1, title="Empty prompt", toy_world=toy["toy_world"], label="empty")
    clf = g.add("GuidanceLabClassifierLoader", col=1, classifier_name=TOY_CLASSIFIER)
    cg = g.add(
        "GuidanceLabClassifierGuidance",
        col=2,
        model=toy["model"],
        classifier=clf["classifier"],
        target="Bag",
        scale=8.0,
    )
    ks = g.add(
        "KSampler",
        col=3,
        model=cg["model"],
        seed=SEED,
        steps=TOY_STEPS,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=empty["conditioning"],
        negative=empty["conditioning"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    toy_save(g, ks["LATENT"], name, col=3)


def toy_classifier_sampler(g: Graph, name: str):
    """Classifier Guidance Sampler around KSamplerSelect's SAMPLER; one target per image."""
    toy, latent = toy_base(
        g,
        (
            "## Classifier Guidance Sampler (SamplerCustomAdvanced)\n\n"
            "Wraps any SAMPLER so every step is classifier-guided, with any GUIDER (here the stock Basic Guider with "
            "the empty prompt). **target** has one line per batch image: the ten Fashion-MNIST classes, one "
            "image each."
        ),
        batch=len(FASHION),
    )
    empty = g.add("GuidanceLabToyClass", col=1, title="Empty prompt", toy_world=toy["toy_world"], label="empty")
    clf = g.add("GuidanceLabClassifierLoader", col=1, classifier_name=TOY_CLASSIFIER)
    select = g.add("KSamplerSelect", col=1, sampler_name="euler")
    guided = g.add(
        "GuidanceLabClassifierSampler",
        col=2,
        sampler=select["SAMPLER"],
        model=toy["model"],
        classifier=clf["classifier"],
        target="\n".join(FASHION),
        scale=8.0,
    )
    guider = g.add("BasicGuider", col=2, model=toy["model"], conditioning=empty["conditioning"])
    noise = g.add("RandomNoise", col=3, noise_seed=SEED)
    sigmas = g.add("BasicScheduler", col=3, model=toy["model"], scheduler="normal", steps=TOY_STEPS, denoise=1.0)
    sca = g.add(
        "SamplerCustomAdvanced",
        col=3,
        noise=noise["NOISE"],
        guider=guider["GUIDER"],
        sampler=guided["sampler"],
        sigmas=sigmas["SIGMAS"],
        latent_image=latent["LATENT"],
    )
    toy_save(g, sca["output"], name, col=4)


# ---------------------------------------------------------------- Stable Diffusion 1.5 (user-supplied weights)

SD_NOTE = (
    f"Needs Stable Diffusion 1.5 weights: put `{SD15_CHECKPOINT}` (or any SD1.5 checkpoint, then pick it) "
    "in `models/checkpoints`."
)


def sd15_base(g: Graph, note: str, negative: bool = True, empty: bool = True):
    g.note(f"{note}\n\n{SD_NOTE}", col=0, size=(420, 300))
    ckpt = g.add("CheckpointLoaderSimple", col=0, ckpt_name=SD15_CHECKPOINT)
    latent = g.add("EmptyLatentImage", col=0, width=512, height=512, batch_size=1)
    clip = ckpt["CLIP"]
    conds = {
        "positive": g.add(
            "CLIPTextEncode",
            col=1,
            title="Positive prompt",
            clip=clip,
            text="a cozy cabin in a snowy pine forest at dusk, warm light in the windows, detailed illustration",
        )
    }
    if negative:
        conds["negative"] = g.add(
            "CLIPTextEncode", col=1, title="Negative prompt", clip=clip, text="blurry, low quality, text, watermark"
        )
    if empty:
        conds["empty"] = g.add(
            "CLIPTextEncode", col=1, title="Empty prompt (unconditional)", clip=clip, text="", size=(400, 100)
        )
    return ckpt, latent, {k: v["CONDITIONING"] for k, v in conds.items()}


def sd15_decode_save(g: Graph, ckpt, samples, name: str, col: int):
    image = g.add("VAEDecode", col=col, samples=samples, vae=ckpt["VAE"])
    g.add("SaveImage", col=col, images=image["IMAGE"], filename_prefix=f"guidance-lab/{name}")


def sd15_interval(g: Graph, col: int):
    return g.add(
        "GuidanceLabSchedule",
        col=col,
        title="CFG schedule: guidance interval",
        kind="interval",
        axis="sigma",
        sigma_lo=0.28,
        sigma_hi=5.42,
        inside=1.0,
        outside=0.0,
    )


def sd15_cfg_ksampler(g: Graph, name: str):
    ckpt, latent, c = sd15_base(
        g,
        (
            "## Three-way CFG on the stock KSampler (CFG Patch)\n\n"
            "Positive, negative and **empty** prompts as separate terms: D = D_empty + cfg*(D_pos - D_empty) - "
            "neg_scale*(D_neg - D_empty); neg_scale = cfg - 1 is standard CFG. The empty prompt goes into the patch, "
            "the negative into the KSampler. CFG acts only inside a **guidance interval** (Kynkaanniemi et al. 2024); "
            "outside it only the positive prompt is evaluated."
        ),
    )
    sched = sd15_interval(g, col=2)
    patch = g.add(
        "GuidanceLabCFGPatch",
        col=2,
        model=ckpt["MODEL"],
        empty=c["empty"],
        neg_scale=4.0,
        cfg_schedule=sched["schedule"],
    )
    ks = g.add(
        "KSampler",
        col=3,
        model=patch["model"],
        seed=SEED,
        steps=25,
        cfg=7.0,
        sampler_name="dpmpp_2m",
        scheduler="karras",
        positive=c["positive"],
        negative=c["negative"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    sd15_decode_save(g, ckpt, ks["LATENT"], name, col=4)


def sd15_cfg_guider(g: Graph, name: str):
    ckpt, latent, c = sd15_base(
        g,
        (
            "## Three-way CFG as a GUIDER (SamplerCustomAdvanced)\n\n"
            "The CFG Guider takes positive, negative and **empty** prompts, a **guidance interval** for cfg, a fading "
            "negative (linear 1 -> 0), CFG rescale 0.7 and an extra weighted prompt (Guidance Term): all active terms "
            "in one batched model call per step."
        ),
    )
    interval = sd15_interval(g, col=2)
    fade = g.add(
        "GuidanceLabSchedule", col=2, title="Negative schedule: linear 1 -> 0", kind="linear", start=1.0, end=0.0
    )
    style = g.add(
        "CLIPTextEncode", col=1, title="Term: style", clip=ckpt["CLIP"], text="oil painting, impasto", size=(400, 100)
    )
    term = g.add("GuidanceLabTerm", col=3, conditioning=style["CONDITIONING"], weight=2.0)
    post = g.add("GuidanceLabPostProcess", col=3, rescale_phi=0.7)
    guider = g.add(
        "GuidanceLabCFGGuider",
        col=4,
        model=ckpt["MODEL"],
        positive=c["positive"],
        negative=c["negative"],
        empty=c["empty"],
        cfg=7.0,
        neg_scale=6.0,
        cfg_schedule=interval["schedule"],
        neg_schedule=fade["schedule"],
        post=post["post"],
        terms=term["terms"],
    )
    noise = g.add("RandomNoise", col=4, noise_seed=SEED)
    sampler = g.add("KSamplerSelect", col=4, sampler_name="dpmpp_2m")
    sigmas = g.add("BasicScheduler", col=4, model=ckpt["MODEL"], scheduler="karras", steps=25, denoise=1.0)
    sca = g.add(
        "SamplerCustomAdvanced",
        col=5,
        noise=noise["NOISE"],
        guider=guider["guider"],
        sampler=sampler["SAMPLER"],
        sigmas=sigmas["SIGMAS"],
        latent_image=latent["LATENT"],
    )
    sd15_decode_save(g, ckpt, sca["output"], name, col=5)


def sd15_classifier(g: Graph, name: str):
    ckpt, latent, c = sd15_base(
        g,
        (
            "## Classifier guidance with your own trained classifier (SD1.5)\n\n"
            f"`{SD15_CLASSIFIER}` stands for a noise-aware classifier you trained for SD1.5 with **Train Classifier "
            "(Guidance Lab)** (it lands in `models/classifiers`); pick yours in Load Classifier and a label of it in "
            "**target** (the *insert label* list shows them). The patch stacks with the KSampler's normal CFG."
        ),
        empty=False,
    )
    clf = g.add("GuidanceLabClassifierLoader", col=2, classifier_name=SD15_CLASSIFIER)
    cg = g.add(
        "GuidanceLabClassifierGuidance",
        col=2,
        model=ckpt["MODEL"],
        classifier=clf["classifier"],
        target="winter",
        scale=2.0,
        rms_clamp=1.0,
    )
    ks = g.add(
        "KSampler",
        col=3,
        model=cg["model"],
        seed=SEED,
        steps=25,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        positive=c["positive"],
        negative=c["negative"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    sd15_decode_save(g, ckpt, ks["LATENT"], name, col=4)


def sd15_clip(g: Graph, name: str):
    ckpt, latent, c = sd15_base(
        g,
        (
            "## CLIP guidance: zero-shot labels, no training (SD1.5)\n\n"
            "Load CLIP Classifier turns an open_clip model and labels typed as text into a classifier of the denoised "
            "image; Classifier Guidance steers toward one label. Needs an open_clip ViT-B-32 checkpoint "
            f"(`.safetensors`, both towers) in `models/guidance_clip` (here `{CLIP_CHECKPOINT}`: pick yours)."
        ),
        empty=False,
    )
    clf = g.add(
        "GuidanceLabCLIPClassifierLoader",
        col=2,
        architecture="ViT-B-32",
        checkpoint=CLIP_CHECKPOINT,
        labels="a photo of a cabin in summer\na photo of a cabin in winter",
        decode="linear",
        gradient="detached",
        cutouts=0,
        tau=0.0,
    )
    cg = g.add(
        "GuidanceLabClassifierGuidance",
        col=2,
        model=ckpt["MODEL"],
        classifier=clf["classifier"],
        target="a photo of a cabin in summer",
        scale=5.0,
        sigma_hi=10.0,
        rms_clamp=1.0,
    )
    ks = g.add(
        "KSampler",
        col=3,
        model=cg["model"],
        seed=SEED,
        steps=25,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        positive=c["positive"],
        negative=c["negative"],
        latent_image=latent["LATENT"],
        denoise=1.0,
    )
    sd15_decode_save(g, ckpt, ks["LATENT"], name, col=4)


# name -> (builder, runs here on the toy world)
WORKFLOWS = {
    "toy_cfg_guider_schedules": toy_cfg_guider,
    "toy_cfg_patch_ksampler": toy_cfg_patch,
    "toy_classifier_guidance_ksampler": toy_classifier_ksampler,
    "toy_classifier_guidance_sampler": toy_classifier_sampler,
    "toy_pag_ksampler": toy_pag_ksampler,
    "toy_autoguidance_guider": toy_autoguidance,
    "toy_nag_ksampler": toy_nag_ksampler,
    "toy_reshapers_ksampler": toy_reshapers_ksampler,
    "sd15_cfg_three_way_ksampler": sd15_cfg_ksampler,
    "sd15_cfg_three_way_guider": sd15_cfg_guider,
    "sd15_classifier_guidance": sd15_classifier,
    "sd15_clip_guidance": sd15_clip,
}
TOY_WORKFLOWS = [n for n in WORKFLOWS if n.startswith("toy_")]


def build_all(object_info: dict) -> dict:
    """name -> UI-format workflow."""
    out = {}
    for name, build in WORKFLOWS.items():
        g = Graph(object_info)
        build(g, name)
        out[name] = g.to_json(name)
    return out


def dumps(workflow: dict) -> str:
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--object-info", help="a saved /object_info JSON instead of starting a server")
    ap.add_argument("--check", action="store_true", help="only report files that differ from the generated ones")
    args = ap.parse_args(argv)
    if args.object_info:
        with open(args.object_info) as f:
            info = json.load(f)
    else:
        from devkit.comfy_server import ComfyServer
        from devkit.compat_doc import comfyui_version_of_tree

        version = comfyui_version_of_tree()
        if version != REFERENCE_COMFYUI:
            print(
                f"the example workflows are made on ComfyUI {REFERENCE_COMFYUI} (REFERENCE_COMFYUI), this is "
                f"{version}: run without GL_COMFYUI (set-up's .comfyui); tests/test_workflows.py compares them "
                f"with what other versions make"
            )
            return 2
        with ComfyServer(tempfile.mkdtemp(prefix="make-workflows-")) as srv:
            info = srv.get("/object_info")
    stale = 0
    for name, wf in build_all(info).items():
        path = os.path.join(args.out, f"{name}.json")
        text = dumps(wf)
        old = None
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
        if args.check:
            if old != text:
                stale += 1
                print(f"out of date: {path}")
            continue
        os.makedirs(args.out, exist_ok=True)
        if old != text:
            with open(path, "w") as f:
                f.write(text)
        print(f"{'wrote' if old != text else 'unchanged'} {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
