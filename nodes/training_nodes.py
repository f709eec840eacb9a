"""Train a noise-aware classifier inside ComfyUI: encode a labeled image folder with the model's VAE
(cached), train with guidance_core.classifier_training, save to models/classifiers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from io import BytesIO

import numpy as np
import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..guidance_core import datasets, files
from ..guidance_core import report
from ..guidance_core import classifier_training
from ..guidance_core.classifiers import classifier_files
from ..guidance_core.classifiers.noise_aware import ClassifierConfig
from ..guidance_core.errors import GuidanceConfigError
from . import sampling_facts
from . import socket_types
from .classifier_nodes import (
    FOLDER,
    LoadedClassifier,
    NoClassifier,
    latent_format_name,
    model_input_scaling,
    require_image_latents,
    require_one_frame,
)

CATEGORY = "Guidance Lab/classifier"
ENCODE_BATCH = 16


def resolve_dataset(name: str) -> str:
    """A folder or .csv inside ComfyUI's input directory; no absolute paths, no '..'."""
    name = name.strip().replace("\\", "/")
    if not name or os.path.isabs(name) or ".." in name.split("/"):
        raise GuidanceConfigError(
            f"dataset={name!r}: give a folder or .csv inside ComfyUI's input directory "
            f"({folder_paths.get_input_directory()}), without '..' or an absolute path"
        )
    root = folder_paths.get_input_directory()
    path = os.path.join(root, name)
    if not os.path.exists(path):
        raise GuidanceConfigError(f"dataset {name!r} not found in {root}")
    return path


def output_path(name: str) -> str:
    stem = name.strip()
    if stem.endswith(".safetensors"):
        stem = stem[: -len(".safetensors")]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}", stem):
        raise GuidanceConfigError(f"output_name={name!r}: use letters, digits, '_', '-', '.' (no folders)")
    return os.path.join(folder_paths.get_folder_paths(FOLDER)[0], stem + ".safetensors")


def vae_identity(vae) -> str:
    """A cheap fingerprint of the VAE weights (shape and a few values of every tensor)."""
    parts = []
    for k, v in sorted(vae.first_stage_model.state_dict().items()):
        flat = v.flatten()
        parts.append(f"{k}{tuple(v.shape)}{flat[:4].tolist() if flat.numel() else ''}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16] if parts else "none"


def encodes_batch_as_time(vae) -> bool:
    """Whether ComfyUI's VAE.encode reads a stack of images [N, H, W, 3] as ONE N-frame video: a video VAE
    (latent_dim 3) not flagged `not_video` (Wan 2.1 / 2.2, which Qwen-Image and Cosmos-Predict2 use too,
    HunyuanVideo, LTXV, ...). Such a VAE compresses time (Wan: 1 + (N - 1) // 4 latent frames), so each still
    image must reach it alone, as a one-frame video. ComfyUI 0.3.52 has no `not_video` flag: there every
    latent_dim 3 VAE reads the batch as time."""
    return int(getattr(vae, "latent_dim", 2)) == 3 and not getattr(vae, "not_video", False)


def encode_images(vae, imgs) -> torch.Tensor:
    """VAE latents of still images [N, H, W, 3] in [0, 1], one latent per image: [N, C, H', W'] from an image VAE,
    [N, C, 1, H', W'] (one frame each) from a video VAE, which is given one image at a time (encodes_batch_as_time)."""
    pixels = torch.from_numpy(np.stack(imgs))
    if encodes_batch_as_time(vae):
        out = torch.cat([vae.encode(pixels[i : i + 1]).float().cpu() for i in range(len(imgs))])
    else:
        out = vae.encode(pixels).float().cpu()
    if out.shape[0] != len(imgs):
        raise GuidanceConfigError(
            f"the VAE encoded {len(imgs)} images as a latent of shape {list(out.shape)} "
            "(not one latent per image); connect the model's own image or video VAE"
        )
    return out


def encode_dataset(vae, items, resolution: int, pbar=None):
    """VAE latents of the readable images (ComfyUI's VAE.encode takes [B, H, W, 3] in [0, 1]), in chunks of
    ENCODE_BATCH images; the progress bar counts images."""
    latents, labels, skipped = [], [], []
    for start in range(0, len(items), ENCODE_BATCH):
        chunk = items[start : start + ENCODE_BATCH]
        imgs, labs = [], []
        for path, label in chunk:
            arr = datasets.load_image(path, resolution)
            if arr is None:
                skipped.append(path)
                continue
            imgs.append(arr)
            labs.append(label)
        if imgs:
            latents.append(encode_images(vae, imgs))
            labels += labs
        comfy.model_management.throw_exception_if_processing_interrupted()
        if pbar is not None:
            pbar.update(len(chunk))
    if not latents:
        raise GuidanceConfigError(f"none of the {len(items)} images could be read")
    return torch.cat(latents), torch.tensor(labels), skipped


def cache_facts(model, label_names, resolution: int, dataset: str):
    """(meta, extra tensors) of a latent cache: the labels and the model's latent format and noise facts
    (parameterization, input scaling, sigma range, its discrete sigma table when it has one), as the trainer reads them."""
    ms = sampling_facts.model_sampling_of(model)
    meta = {
        "labels": list(label_names),
        "latent_format": latent_format_name(model),
        "parameterization": sampling_facts.trainable_parameterization(ms, "Train Classifier"),
        "input_scaling": model_input_scaling(model),
        "sigma_min": float(ms.sigma_min),
        "sigma_max": float(ms.sigma_max),
        "resolution": resolution,
        "dataset": dataset,
    }
    sigma_table = getattr(ms, "sigmas", None)
    extra = {"sigma_table": sigma_table.detach().float().cpu().clone()} if sigma_table is not None else {}
    return meta, extra


def write_cache(path: str, model, raw_latents, labels, meta: dict, extra: dict):
    """Write a latent cache whose latents are in the sampler's space: the model's own latent_format.process_in
    (ComfyUI's, per-channel formats included) applied to the VAE's latents. Returns those latents, always 4-D
    [N, C, H, W]: a model with 5-D latents (Qwen-Image, Cosmos-Predict2, Wan) samples an image as one frame
    [N, C, 1, H, W], where process_in (per-channel statistics shaped for 5-D) is applied, then the frame axis dropped."""
    fmt = model.get_model_object("latent_format")
    raw = raw_latents.clone()
    five_d = int(getattr(fmt, "latent_dimensions", 2)) == 3
    if five_d and raw.ndim == 4:
        raw = raw.unsqueeze(2)  # a 2-D VAE's latents, as the sampler would hold them
    if raw.ndim == 5:
        require_one_frame(raw.shape, "Train Classifier")
        if not five_d:
            raw = raw[:, :, 0]  # a video VAE's one-frame latents for a model sampling [N, C, H, W]
    with torch.inference_mode(False):
        latents = fmt.process_in(raw).float()
    if latents.ndim == 5:
        latents = latents[:, :, 0]
    datasets.save_latent_cache(path, latents, labels, meta, extra)
    return latents


def load_or_encode(model, vae, dataset_path: str, resolution: int):
    """(latents in the sampler's space, labels, label names, cache meta, cache path, encoded?)."""
    items, label_names = datasets.scan_dataset(dataset_path)
    meta, extra = cache_facts(model, label_names, resolution, os.path.basename(dataset_path))
    key = datasets.cache_key(
        items, resolution, f"{vae_identity(vae)}|v{datasets.CACHE_VERSION}|{json.dumps(meta, sort_keys=True)}"
    )
    cache_dir = os.path.join(folder_paths.get_user_directory(), "guidance_lab", "latent_cache")
    cache = os.path.join(cache_dir, f"latents-{key}.safetensors")
    if os.path.exists(cache):
        tensors, meta = datasets.load_latent_cache(cache)
        return tensors["latents"], tensors["labels"], meta["labels"], meta, cache, False
    counts = [sum(1 for _, k in items if k == i) for i in range(len(label_names))]
    logging.info(
        "Guidance Lab: encoding %d images (%s) with the VAE",
        len(items),
        ", ".join(f"{n}: {c}" for n, c in zip(label_names, counts)),
    )
    raw, labels, skipped = encode_dataset(vae, items, resolution, comfy.utils.ProgressBar(len(items)))
    meta["skipped"] = [os.path.relpath(p, dataset_path) for p in skipped]
    latents = write_cache(cache, model, raw, labels, meta, extra)
    return latents, labels, label_names, meta, cache, True


def _setting_default(name: str, config=classifier_training.TrainConfig):
    return classifier_training.setting_field(config, name).default


def _setting_input(
    widget, input_id: str, config=classifier_training.TrainConfig, name: str | None = None, **widget_args
):
    """A numeric input whose default and range are the core's (classifier_training.setting field metadata); widget_args
    (tooltip, step, ...) may widen min for a node-only value such as steps = STEPS_CACHE_ONLY."""
    lo, hi = classifier_training.setting_field(config, name or input_id).metadata["range"]
    return widget.Input(
        input_id, **{"default": _setting_default(name or input_id, config), "min": lo, "max": hi, **widget_args}
    )


class GuidanceLabTrainClassifier(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabTrainClassifier",
            display_name="Train Classifier (Guidance Lab)",
            category=CATEGORY,
            description="Trains a noise-aware classifier on your labeled images for classifier guidance: images are "
            "encoded with the VAE (cached for later runs), noised over the model's noise range and learned "
            "with cross-entropy (Dhariwal & Nichol 2021). Saves to models/classifiers.",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The diffusion model the classifier will guide (its noise schedule and latent format).",
                ),
                io.Vae.Input(
                    "vae", tooltip="The model's VAE, used to encode the images (latent channels must match the model)."
                ),
                io.String.Input(
                    "dataset",
                    default="my_dataset",
                    tooltip="Folder inside ComfyUI/input with one subfolder per label, or a .csv of path,label there.",
                ),
                io.String.Input(
                    "output_name",
                    default="my_classifier",
                    tooltip="File name in models/classifiers (letters, digits, _ - .); .safetensors is added.",
                ),
                _setting_input(
                    io.Int,
                    "steps",
                    min=classifier_training.STEPS_CACHE_ONLY,
                    tooltip="Training steps; 0 = only encode and cache the latents (for the command line "
                    "trainer): the classifier output then stops any guidance node with a message.",
                ),
                _setting_input(io.Int, "batch_size", tooltip="Examples per step."),
                _setting_input(
                    io.Float,
                    "lr",
                    step=1e-5,
                    round=1e-6,
                    tooltip="AdamW learning rate (ADM: 3e-4), annealed linearly to 0.",
                ),
                _setting_input(io.Int, "seed", tooltip="Seed: same seed, same classifier."),
                io.Int.Input(
                    "resolution",
                    default=classifier_training.RESOLUTION_DEFAULT,
                    min=classifier_training.RESOLUTION_RANGE[0],
                    max=classifier_training.RESOLUTION_RANGE[1],
                    step=8,
                    tooltip="Images are resized (shorter side) and center-cropped to this size in pixels.",
                ),
                io.Combo.Input(
                    "sigma_distribution",
                    options=list(classifier_training.SIGMA_DISTRIBUTIONS),
                    default=_setting_default("sigma_distribution"),
                    tooltip="Noise levels: log-uniform over the model's range, or the model's own training distribution.",
                ),
                io.Boolean.Input(
                    "class_balance",
                    default=_setting_default("class_balance"),
                    tooltip="Sample labels equally often (off = as in the data).",
                ),
                _setting_input(
                    io.Int,
                    "width",
                    ClassifierConfig,
                    "base_channels",
                    step=8,
                    tooltip="Base channels of the classifier network.",
                ),
            ],
            outputs=[
                socket_types.Classifier.Output(display_name="classifier"),
                io.Image.Output(display_name="report_plot"),
                io.String.Output(display_name="report"),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        vae,
        dataset,
        output_name,
        steps,
        batch_size,
        lr,
        seed,
        resolution,
        sigma_distribution,
        class_balance,
        width,
    ):
        config = classifier_training.TrainConfig(
            steps=max(1, steps),
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            sigma_distribution=sigma_distribution,
            class_balance=class_balance,
            arch={"base_channels": width},
        )
        config.validate()  # the core's check, before any work (the Trainer runs the same one)
        require_image_latents(model, "Train Classifier")
        path = resolve_dataset(dataset)
        out = output_path(output_name)
        want = int(model.get_model_object("latent_format").latent_channels)
        have = int(getattr(vae, "latent_channels", want))
        if want != have:
            raise GuidanceConfigError(
                f"the VAE makes {have}-channel latents, the model uses {want}; connect the model's own VAE"
            )
        cached, labels, names, meta, cache, _ = load_or_encode(model, vae, path, resolution)
        if steps == 0:
            none = NoClassifier(
                f"Train Classifier ran with steps = 0 (cache only: it encoded the images to {cache}) "
                "and produced no classifier; set its steps > 0, or train from the cache with "
                "python -m guidance_core.train and load the file with Load Classifier"
            )
            return io.NodeOutput(none, torch.zeros(1, 8, 8, 3), json.dumps({"latent_cache": cache}))
        with torch.inference_mode(False), torch.enable_grad():
            latents = cached.clone()  # already in the sampler's space (write_cache)
            ms = sampling_facts.model_sampling_of(model)
            table = getattr(ms, "sigmas", None)
            spec = classifier_training.NoiseSpec.from_cache(
                meta, table.detach().float().cpu().clone() if table is not None else None
            )
            trainer = classifier_training.Trainer(
                latents, labels.clone(), names, spec, config, device=comfy.model_management.get_torch_device()
            )
            pbar = comfy.utils.ProgressBar(steps)

            def on_step(step, loss):
                pbar.update(1)
                comfy.model_management.throw_exception_if_processing_interrupted()

            trainer.run(on_step)
            train_report = trainer.report()
        train_report["latent_cache"], train_report["skipped_images"] = cache, meta.get("skipped", [])
        classifier_files.save_classifier(
            out, trainer.model, classifier_training.classifier_metadata(trainer, meta["latent_format"], train_report)
        )
        plot = report.accuracy_plot(train_report)
        buf = BytesIO()
        plot.save(buf, format="PNG")
        files.atomic_bytes(out[: -len(".safetensors")] + ".report.png", buf.getvalue())
        files.atomic_bytes(out[: -len(".safetensors")] + ".report.json", json.dumps(train_report, indent=1).encode())
        module, file_meta = classifier_files.load_classifier(out)
        image = torch.from_numpy(np.asarray(plot, dtype=np.float32) / 255.0)[None]
        return io.NodeOutput(
            LoadedClassifier(module, file_meta, os.path.basename(out)), image, json.dumps(train_report, indent=1)
        )


TRAINING_NODES = [GuidanceLabTrainClassifier]
