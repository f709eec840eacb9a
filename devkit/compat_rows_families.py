"""Compatibility rows of every model family of devkit/families.py (devkit/compat_matrix.py): the patch and the guider
with every setting, classifier guidance, CLIP guidance with the family's linear latent->RGB map, Train Classifier on
the family's latent format, NAG terms, TPG and STG terms, and the guidance reshapers against their references."""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import shutil
import tempfile

import torch

from . import comfy_host as H
from . import wan_vae
from .cfg_helpers import ksample, patch, post, schedule
from .compat_doc import FAMILIES
from .compat_measure import (
    CFG,
    GUIDER,
    PATCH,
    constant,
    family_guidance_run,
    float64,
    guided,
    interval_row,
    measure,
    native,
    row,
    settings,
)

# ------------------------------------------------------------------ model families
SCHEDULE_KINDS = {  # one of each kind of the Guidance Schedule node
    "cosine 1→0": dict(kind="cosine", start=1.0, end=0.0),
    "power_up k=2": dict(kind="power_up", start=1.0, end=0.0, exponent=2.0),
    "power_down k=2": dict(kind="power_down", start=1.0, end=0.0, exponent=2.0),
    "keyframes 0:1, 0.5:0.3, 1:0": dict(kind="keyframes", keyframes="0:1, 0.5:0.3, 1:0"),
    "interval sigma 0.5..2, outside 0.2": dict(kind="interval", sigma_lo=0.5, sigma_hi=2.0, outside=0.2),
}


def family_classifier(model):
    """A tiny noise-aware classifier (random weights) made for `model`: its latent channels and format, its
    parameterization and input scaling (as Train Classifier records them)."""
    na = H.pack_module("guidance_core.classifiers.noise_aware")
    param = H.pack_module("guidance_core.parameterization")
    ms = model.get_model_object("model_sampling")
    fmt = model.model.latent_format
    with torch.inference_mode(False):
        torch.manual_seed(0)
        net = na.NoiseAwareClassifier(
            na.ClassifierConfig(in_channels=fmt.latent_channels, num_classes=2, base_channels=16)
        )
    meta = {
        "labels": ["a", "b"],
        "latent_channels": fmt.latent_channels,
        "latent_format": type(fmt).__name__,
        "parameterization": H.pack_module("nodes.sampling_facts").parameterization_of(ms),
        "input_scaling": param.identify_input_scaling(ms.calculate_input),
    }
    return H.pack_module("nodes.classifier_nodes").LoadedClassifier(net, meta, "tiny-random")


def family_rows(quick: bool = False) -> list:
    """Each of ComfyUI's model families (devkit/families.py) through the patch and the guider: plain CFG and
    unguided steps exact; three-way, a term, every post-processing and every schedule kind finite; the interval
    schedule's rows per model call; zero-init (flow models only); classifier guidance."""
    from . import families as F

    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        io = {"pos": fam.cond(1), "neg": fam.cond(2), "latent": fam.latent(1)}
        run = dict(io, steps=4)
        area_key = functools.partial(lambda check, route: (FAMILIES, name, check, route))
        cases = dict(settings(empty=fam.cond(3)))
        cases.update({f"schedule {k}": {"cfg_schedule": schedule(**v)} for k, v in SCHEDULE_KINDS.items()})
        cases["zero_init_steps 1"] = {"post": post(zero_init_steps=1)}
        if quick:
            cases = {k: v for k, v in cases.items() if not k.startswith("schedule ")}
        for route in (PATCH, GUIDER):
            plain = functools.cache(lambda: native(route, m, CFG, **run))
            rows.append(
                measure(
                    area_key("plain cfg 6", route), lambda: guided(route, m, CFG, **run), plain, exact=True, model=m
                )
            )
            rows.append(
                measure(
                    area_key("schedule 0 at cfg 6 = cfg 1", route),
                    lambda: guided(route, m, CFG, {"cfg_schedule": constant(0.0)}, **run),
                    lambda: native(route, m, 1.0, **run),
                    exact=True,
                    model=m,
                )
            )
            for check, cfg_settings in cases.items():
                rows.append(
                    measure(area_key(check, route), lambda: guided(route, m, CFG, cfg_settings, **run), plain, model=m)
                )
            rows.append(
                interval_row(
                    area_key("interval schedule: rows per model call", route), "euler", "normal", model=m, **io
                )
            )
        term = H.run_node("GuidanceLabTerm", conditioning=fam.cond(4), weight=1.5)[0]
        rows.append(
            measure(
                area_key("a Guidance Term (weight 1.5)", GUIDER),
                lambda: guided(GUIDER, m, CFG, {"terms": term}, **run),
                plain,
                model=m,
            )
        )
        rows.append(
            measure(
                area_key("classifier guidance (patch, scale 10)", PATCH),
                lambda: family_guidance_run(PATCH, m, family_classifier(m), "a", run),
                plain,
                model=m,
            )
        )
        rows.append(
            measure(
                area_key("classifier guidance (sampler wrapper, scale 10)", GUIDER),
                lambda: family_guidance_run(GUIDER, m, family_classifier(m), "a", run),
                plain,
                model=m,
            )
        )
        for route in (PATCH, GUIDER):
            rows.append(clip_row(area_key("CLIP guidance (linear decode, scale 10)", route), m, run, plain))
        rows.append(measure(area_key(TRAINER_CHECK, PATCH), lambda: family_trainer_run(m, run), plain, model=m))
    return rows


def nag_rows() -> list:
    """NAG terms and the Distilled Guidance Schedule on every family, through the patch (KSampler): the paper form at
    cfg 1 exact against a direct implementation of the formula (devkit/nag_reference.py) where the family has UNet
    cross-attention, Wan's text cross-attention or joint attention (on both DiT kinds also at cfg 4: a batch with the
    negative's rows), refused elsewhere (and on joint attention where this ComfyUI has no attention override); the comfyui form at cfg 1 and 4 exact against ComfyUI's NAGuidance where this
    ComfyUI has it, finite where it has not, refused where the family's blocks never call NAGuidance's hook; a
    constant distilled guidance schedule exact against FluxGuidance where the family has a guidance input, refused
    elsewhere."""
    from . import families as F
    from .nag_reference import reference_joint, reference_model, reference_wan

    have_nag = "NAGuidance" in H.boot().NODE_CLASS_MAPPINGS
    nag_patches = H.pack_module("nodes.nag_patches")
    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
        run = dict(pos=pos, neg=neg, latent=lat, steps=4)

        def term(form, m=m):
            return H.run_node("GuidanceLabNAGTerm", form=form, weight=4.0, tau=2.5, alpha=0.5)[0]

        key = functools.partial(lambda check: (FAMILIES, name, check, PATCH))
        # float64 where the form applies (a softmax written out against ComfyUI's attention: float32 rounding apart)
        unet = bool(nag_patches.cross_attention_keys(m.model.diffusion_model))
        dit = bool(nag_patches.dit_cross_attention(m.model.diffusion_model))
        joint = nag_patches.joint_family(m.model.diffusion_model)
        # DiTs in float32 (Wan casts its input to float32; ComfyUI 0.33's rope kernels take no float64), their
        # difference relative to the output's scale: the max abs difference, a few float32 ulps of a latent of
        # magnitude 10-16, came within 5% of TOL at cfg 4
        m64 = float64(fam.build()) if unet else m
        if joint:
            reference = lambda model, _ctx, *a: reference_joint(model, neg, *a)  # noqa: E731
        else:
            reference = reference_model if unet else reference_wan
        for cfg in (1.0, 4.0) if dit or joint else (1.0,):
            rows.append(
                measure(
                    key(f"NAG term, paper form, cfg {cfg:g} = the formula"),
                    lambda: ksample(patch(m64, terms=term("paper")), cfg, **run),
                    lambda: ksample(reference(m64, neg[0][0], 4.0, 2.5, 0.5), cfg, **run),
                    exact=True,
                    model=m64,
                    relative=dit or joint,
                )
            )
        for cfg in (1.0, 4.0):
            comfy_nag = lambda: ksample(
                H.run_node(
                    "NAGuidance",
                    model=m,
                    nag_scale=5.0,
                    nag_alpha=0.5,  # noqa: E731
                    nag_tau=2.5,
                )[0],
                cfg,
                **run,
            )
            plain = lambda: ksample(m, cfg, **run)  # noqa: E731
            check = f"NAG term, comfyui form, cfg {cfg:g}" + (" = NAGuidance" if have_nag else "")
            rows.append(
                measure(
                    key(check),
                    lambda: ksample(patch(m, terms=term("comfyui")), cfg, **run),
                    comfy_nag if have_nag else plain,
                    exact=have_nag,
                    model=m,
                )
            )
        g = (
            H.run_node("FluxGuidance", conditioning=pos, guidance=2.5)[0]
            if "FluxGuidance" in H.boot().NODE_CLASS_MAPPINGS
            else pos
        )
        rows.append(
            measure(
                key("Distilled Guidance Schedule, constant = FluxGuidance"),
                lambda: ksample(H.run_node("GuidanceLabDistilledGuidance", model=m, guidance=2.5)[0], 1.0, **run),
                lambda: ksample(m, 1.0, **dict(run, pos=g)),
                exact=True,
                model=m,
            )
        )
    return rows


def perturbation_kind_rows() -> list:
    """TPG and STG terms (weight 3, with cfg 6) on every family, through the patch (KSampler), on the family's first
    block each acts on: TPG finite on UNets, refused on DiTs (the paper's shuffle is defined on UNet transformers);
    STG finite on DiTs whose blocks' first attention takes ComfyUI's attention override, refused on UNets; on
    LTXV exact against ComfyUI's LTXVSpatioTemporalGuidance where this ComfyUI has it, its block set read by the
    block as ComfyUI's LTXAV model reads it (plain LTXV ignores it: the node alone adds nothing there)."""
    from . import families as F

    perturbation = H.pack_module("nodes.perturbation_patches")
    have_stg_node = "LTXVSpatioTemporalGuidance" in H.boot().NODE_CLASS_MAPPINGS
    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        run = dict(pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1), steps=4)
        plain = functools.cache(lambda m=m, run=run: ksample(m, CFG, **run))
        for mode in ("tpg", "stg"):
            have = perturbation.available_blocks(m.model.diffusion_model, mode)
            blocks = f"{have[0][0]}.{have[0][1]}" if have else ""
            term = H.run_node("GuidanceLabPerturbedTerm", mode=mode, blocks=blocks, weight=3.0, seg_sigma=10.0)[0]
            key = (FAMILIES, name, f"{mode.upper()} term (weight 3)", PATCH)
            ours = lambda m=m, term=term, run=run: ksample(patch(m, terms=term), CFG, **run)  # noqa: E731
            if not have:
                rows.append(measure(key, ours, refuse=True, model=m))
            elif mode == "stg" and have_stg_node and type(m.model.diffusion_model).__name__ == "LTXVModel":
                node = comfy_ltxv_stg(ltxav_block_rule(m, have[0][1]), 3.0, have[0][1])
                rows.append(
                    measure(
                        key[:2] + (key[2] + " = LTXVSpatioTemporalGuidance",) + key[3:],
                        ours,
                        lambda node=node, run=run: ksample(node, CFG, **run),
                        exact=True,
                        model=m,
                        relative=True,  # float32 (ComfyUI 0.33's kernels): a few ulps of the output's scale
                    )
                )
            else:
                rows.append(measure(key, ours, plain, model=m))
    return rows


def ltxav_block_rule(model, block: int = 0):
    """`model` (LTXV) whose block `block` reads the STG block set of ComfyUI's LTXVSpatioTemporalGuidance as
    ComfyUI's LTXAV block loop does: a block in transformer_options["stg_self_attn_blocks"] runs with
    "stg_skip_self_attn" (LTXV's CrossAttention then returns V for its self-attention)."""
    ref = model.clone()

    def run(args, extra):
        opts = args["transformer_options"]
        if block in opts.get("stg_self_attn_blocks", ()):
            args = dict(args, transformer_options={**opts, "stg_skip_self_attn": True})
        return extra["original_block"](args)

    ref.set_model_patch_replace(run, "dit", "double_block", block)
    return ref


def comfy_ltxv_stg(model, scale: float, block: int, start: float = 0.0, end: float = 1.0):
    """ComfyUI's LTXVSpatioTemporalGuidance on `block` of `model` as it is (ltxav_block_rule: its block set read)."""
    return H.run_node(
        "LTXVSpatioTemporalGuidance", model=model, scale=scale, blocks=str(block), start_percent=start, end_percent=end
    )[0]


def reshaper_rows() -> list:
    """The guidance reshapers of Guidance Post-processing (guidance_core/guidance_filters.py) on every family, through
    the patch (KSampler, cfg 4, 2 steps), each against its reference (relative difference: they compute the formula
    in another order): ComfyUI's TCFG and FreSca nodes, diffusers' FDG
    and MaMBo-G, the sd-dynamic-thresholding algorithm (devkit/guidance_references.py). FreSca on 5-D latents is
    exact against ComfyUI 0.33's node; older ComfyUI narrows the frame axis too (finite there, the difference shown).
    Where float32 rounding of another operation order passes TOL (EDM's sigma 80) a row is finite with the difference;
    tests/test_guidance_filters.py holds each formula exact in float64."""
    import inspect

    from . import families as F
    from . import guidance_references as R

    fresca_node = importlib.import_module("comfy_extras.nodes_fresca")  # 0.3.x narrows a 5-D latent's frame axis
    fresca_frames_fixed = "range(2)" in inspect.getsource(fresca_node.Fourier_filter)

    rows = []
    for name, fam in F.FAMILIES.items():
        m = F.model(name)
        run = dict(pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1), steps=2)
        video = getattr(m.model.latent_format, "latent_dimensions", 2) == 3  # sampled as [B, C, T, H, W]
        cases = [
            ("TCFG = ComfyUI's TCFG", dict(tcfg=True), lambda: H.run_node("TCFG", model=m)[0], True),
            (
                "FreSca = ComfyUI's FreSca",
                dict(fresca=True, fresca_low=0.9, fresca_high=1.4, fresca_cutoff=2),
                lambda: H.run_node("FreSca", model=m, scale_low=0.9, scale_high=1.4, freq_cutoff=2)[0],
                None if fresca_frames_fixed or not video else False,
            ),
            ("FDG = diffusers' FDG", dict(fdg=True, fdg_low=0.4, fdg_high=1.3), lambda: R.fdg_model(m, 0.4, 1.3), None),
            ("MaMBo-G = diffusers' MaMBo-G", dict(mambo_alpha=2.0), lambda: R.mambo_model(m, 2.0), None),
            (
                "dynamic thresholding (mimic) = sd-dynamic-thresholding",
                dict(dyn_thresh="mimic", dyn_mimic_scale=2.0, dyn_percentile=0.9),
                lambda: R.dyn_mimic_model(m, 2.0, 0.9),
                None,
            ),
        ]
        for check, post_settings, reference, exact in cases:
            rows.append(
                measure(
                    (FAMILIES, name, check, PATCH),
                    lambda post_settings=post_settings: ksample(patch(m, post=post(**post_settings)), 4.0, **run),
                    lambda reference=reference: ksample(reference(), 4.0, **run),
                    exact=exact,
                    model=m,
                    relative=True,
                )
            )
    return rows


# ------------------------------------------------------------------ CLIP guidance and Train Classifier per family
CLIP_ARCH = "GLCompatTinyCLIP"
TINY_CLIP = H.tiny_clip_config(layers=2)  # the tiny open_clip architecture of tests/test_clip.py (random weights)
CLIP_LABELS = ("a red car", "a blue car")


def scratch_folder() -> str:
    folder = tempfile.mkdtemp(prefix="guidance-lab-compat-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.cache
def clip_checkpoint() -> str | None:
    """A tiny random open_clip checkpoint in a guidance_clip folder (file name), or None without open_clip."""
    import folder_paths
    from safetensors.torch import save_file

    try:
        import open_clip
    except ImportError:
        return None
    folder = scratch_folder()
    with open(os.path.join(folder, f"{CLIP_ARCH}.json"), "w", encoding="utf-8") as f:
        json.dump(TINY_CLIP, f)
    open_clip.add_model_config(os.path.join(folder, f"{CLIP_ARCH}.json"))
    with torch.inference_mode(False):
        torch.manual_seed(0)
        net = open_clip.create_model(CLIP_ARCH, pretrained=None, pretrained_text=False, pretrained_image=False)
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(folder, "compat_clip.safetensors")
        )
    folder_paths.add_model_folder_path("guidance_clip", folder)
    return "compat_clip.safetensors"


def clip_row(key, model, run, plain) -> dict:
    """CLIP guidance (Load CLIP Classifier, decode 'linear': the family's own latent->RGB factors, per frame on
    video latents) through the patch or the sampler wrapper."""
    name = clip_checkpoint()
    if name is None:
        return row(*key, "limitation", "open_clip is not installed (only CLIP guidance needs it)")

    def run_it():
        clf = H.run_node(
            "GuidanceLabCLIPClassifierLoader",
            architecture=CLIP_ARCH,
            checkpoint=name,
            labels="\n".join(CLIP_LABELS),
            decode="linear",
            gradient="detached",
            cutouts=0,
            tau=0.0,
        )[0]
        return family_guidance_run(key[3], model, clf, CLIP_LABELS[1], run)

    return measure(key, run_it, plain, model=model)


TRAINER_CHECK = "Train Classifier (4 steps), then classifier guidance (patch)"
TRAIN_LABELS = ("a", "b")


@functools.cache
def trainer_root() -> str:
    """ComfyUI user folders for Train Classifier (H.user_folders) with a tiny labeled dataset:
    input/compat_data/<label>/ holds 4 random 32x32 PNG images per label."""
    import numpy as np
    from PIL import Image

    root = scratch_folder()
    rng = np.random.default_rng(0)
    for k, label in enumerate(TRAIN_LABELS):
        folder = os.path.join(root, "input", "compat_data", label)
        os.makedirs(folder)
        for i in range(4):
            arr = np.clip(rng.normal(80 + 100 * k, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(folder, f"{i}.png"))
    return root


@functools.cache
def tiny_vae(channels: int):
    """A tiny random VAE making `channels`-channel latents (devkit.comfy_host.tiny_vae), one per channel count."""
    return H.tiny_vae(channels, seed=channels)


def family_vae(fmt):
    """The VAE a family's trainer row encodes with: the real Wan 2.1 VAE (comfy.ldm.wan.vae.WanVAE, tiny width,
    devkit.wan_vae) for families on Wan 2.1 latents (Wan 2.1, Cosmos-Predict2, Qwen-Image), which ComfyUI's
    VAE.encode treats as a video VAE; ComfyUI's 2-D VAE class with the family's latent channels for the others."""
    if type(fmt).__name__ == "Wan21":
        return wan_vae.shared_wan21_vae()
    return tiny_vae(int(fmt.latent_channels))


def family_trainer_run(model, run):
    """Train Classifier on the family's latent format (its own VAE-latent channels; the cache must hold ComfyUI's
    latent_format.process_in of the VAE latents, per-channel formats included), then guide with the result."""
    fmt = model.get_model_object("latent_format")
    vae = family_vae(fmt)
    DS = H.pack_module("guidance_core.datasets")
    TN = H.pack_module("nodes.training_nodes")
    with H.user_folders(trainer_root()) as root:
        clf, _, report = H.run_node(
            "GuidanceLabTrainClassifier",
            model=model,
            vae=vae,
            dataset="compat_data",
            output_name=f"compat_{type(fmt).__name__}",
            steps=4,
            batch_size=4,
            lr=1e-3,
            seed=0,
            resolution=32,
            sigma_distribution="log_uniform",
            class_balance=False,
            width=8,
        )
        cache = DS.load_latent_cache(json.loads(report)["latent_cache"])[0]["latents"]
        items, _ = DS.scan_dataset(os.path.join(root, "input", "compat_data"))
        raw = TN.encode_dataset(vae, items, 32)[0].clone()
        if int(getattr(fmt, "latent_dimensions", 2)) == 3:  # an image as the sampler holds it: one frame
            want = fmt.process_in(raw.unsqueeze(2) if raw.ndim == 4 else raw).float()[:, :, 0]
        else:
            want = fmt.process_in(raw).float()
        if cache.shape != want.shape or not torch.allclose(cache, want, rtol=1e-5, atol=1e-5):
            raise AssertionError(f"the latent cache is not {type(fmt).__name__}.process_in of the VAE latents")
    return family_guidance_run(PATCH, model, clf, TRAIN_LABELS[0], run)
