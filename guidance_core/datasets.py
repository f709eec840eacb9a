"""Labeled image datasets and the latent cache (pure Python/PIL/torch; no ComfyUI).

A dataset is either a folder with one subfolder per label (the ImageFolder convention) or a
CSV file of `path,label` rows (paths relative to the CSV's folder, and inside it). Images of
different sizes are accepted: each is resized so that its shorter side equals `resolution` and
center-cropped to resolution x resolution (documented behaviour). Unreadable images are skipped
with a warning naming them.

The latent cache is a safetensors file holding the encoded latents, their labels and the
metadata needed to train without the VAE (a second run does no encoding). Its latents are in the
sampler's space: the writer (nodes.training_nodes, inside ComfyUI) applies the model's own
latent_format.process_in to the VAE's output, so every trainer reads x0 exactly as the sampler sees it
(per-channel formats such as Playground v2.5's included), without re-implementing process_in here.
Version 1 caches held raw VAE latents plus a scalar scale/shift; they are refused with a message
saying how to rewrite them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import safe_open

from .errors import GuidanceConfigError
from .files import atomic_save

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_FORMAT = "guidance-lab-latent-cache"
CACHE_VERSION = 2  # 2: latents after the latent format's process_in; 1: raw VAE latents (refused)


def _inside(root: str, path: str) -> bool:
    root, path = os.path.realpath(root), os.path.realpath(path)
    return os.path.commonpath([root, path]) == root


def scan_dataset(source: str):
    """(items, labels): items = [(path, label index)], labels = sorted label names."""
    if os.path.isdir(source):
        labels = sorted(
            d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)) and not d.startswith(".")
        )
        if not labels:
            raise GuidanceConfigError(
                f"dataset folder {source!r} has no label subfolders; expected one subfolder "
                "per label holding its images (ImageFolder layout), or a CSV of path,label"
            )
        items = []
        for k, lb in enumerate(labels):
            files = sorted(f for f in os.listdir(os.path.join(source, lb)) if f.lower().endswith(IMAGE_EXTS))
            if not files:
                raise GuidanceConfigError(
                    f"label {lb!r} has no images in {os.path.join(source, lb)!r} (accepted: {', '.join(IMAGE_EXTS)})"
                )
            items += [(os.path.join(source, lb, f), k) for f in files]
        return items, labels
    if os.path.isfile(source) and source.lower().endswith(".csv"):
        root = os.path.dirname(os.path.abspath(source))
        rows = []
        with open(source, newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                if not row or (i == 0 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
                    continue
                if len(row) < 2:
                    raise GuidanceConfigError(f"{source} line {i + 1}: expected 'path,label', got {row!r}")
                path = os.path.join(root, row[0].strip())
                if not _inside(root, path):
                    raise GuidanceConfigError(f"{source} line {i + 1}: {row[0]!r} lies outside the CSV's folder")
                rows.append((path, row[1].strip()))
        if not rows:
            raise GuidanceConfigError(f"{source} lists no images; expected rows of path,label")
        labels = sorted({lb for _, lb in rows})
        index = {lb: k for k, lb in enumerate(labels)}
        return [(p, index[lb]) for p, lb in rows], labels
    raise GuidanceConfigError(f"dataset {source!r} is neither a folder nor a .csv file")


def load_image(path: str, resolution: int):
    """RGB float array [H, W, 3] in [0, 1], resized (shorter side) and center-cropped; None if unreadable."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = resolution / min(w, h)
            im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            return np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as e:
        logging.warning("Guidance Lab: skipping unreadable image %s (%s)", path, e)
        return None


def cache_key(items, resolution: int, extra: str) -> str:
    """Hash of the file list (path, size, mtime, label), the resolution and the encoder/model identity."""
    h = hashlib.sha256()
    for path, label in items:
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    h.update(f"res={resolution}|{extra}".encode())
    return h.hexdigest()[:24]


def save_latent_cache(path: str, latents: torch.Tensor, labels: torch.Tensor, meta: dict, extra=None):
    """`latents`: in the sampler's space (after the latent format's process_in, see the module docstring)."""
    tensors = {"latents": latents.float().contiguous(), "labels": labels.long().contiguous()}
    tensors.update(extra or {})
    head = {"format": CACHE_FORMAT, "version": CACHE_VERSION}
    atomic_save(tensors, path, {"guidance_lab_cache": json.dumps({**meta, **head})})


def read_latent_cache_meta(path: str) -> dict:
    """A latent cache's metadata (without reading its tensors). Refuses caches of another format or version."""
    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("guidance_lab_cache")
    except Exception as e:
        raise GuidanceConfigError(f"{path} cannot be read as a latent cache: {e}") from None
    meta = json.loads(raw) if raw is not None else {}
    if meta.get("format") != CACHE_FORMAT:
        raise GuidanceConfigError(f"{path} is not a Guidance Lab latent cache")
    if meta.get("version", 1) != CACHE_VERSION:
        raise GuidanceConfigError(
            f"{path}: latent cache version {meta.get('version', 1)}; this Guidance Lab reads "
            f"version {CACHE_VERSION} (latents after the latent format's process_in). Run Train "
            "Classifier (Guidance Lab) with steps = 0 on the same images to write a new cache"
        )
    return meta


def load_latent_cache(path: str):
    """(tensors dict, meta). Refuses caches of another format or version."""
    meta = read_latent_cache_meta(path)
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise GuidanceConfigError(f"{path} cannot be read as a latent cache: {e}") from None
    return tensors, meta
