"""Train the toy world's noise-aware classifier with this pack's own trainer, for the toy world's
classifier-guidance points.

Fashion-MNIST's 60k training images are the toy model's latents as they are (1x32x32 in [-1, 1]), so
the latent cache is written by the "Train Classifier" node's own writer (same keys, noise facts and process_in:
eps, the toy model's discrete sigma table, identity latent format), and `python -m guidance_core.train` trains on
it: x = x0 + sigma*eps with sigma drawn from the model's own table, cross-entropy, AdamW.

    .venv/bin/python -m bench.toy.make_classifier --steps 6000 --batch-size 64 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from devkit import comfy_host as H
from bench.toy import fashion

OUT = os.path.join(ROOT, "toy_models", "classifiers", "toy_fashion_classifier.safetensors")
CACHE = os.path.join(ROOT, "out", "toy", "fashion_latents.safetensors")


def write_cache(path):
    """The cache as the Train Classifier node writes it (same meta and noise facts, from the toy MODEL)."""
    import torch

    training_nodes = H.pack_module("nodes.training_nodes")
    with torch.inference_mode():
        model, world = H.run_node("GuidanceLabToyModelLoader", toy_model="fashion_diffusion.safetensors")
    meta, extra = training_nodes.cache_facts(model, world.labels, 32, "fashion-mnist train (60k, padded 32x32)")
    x, y = fashion.load("train")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    training_nodes.write_cache(path, model, x, y, meta, extra)


def cache_is_current(path):
    ds = H.pack_module("guidance_core.datasets")
    errors = H.pack_module("guidance_core.errors")
    try:
        ds.read_latent_cache_meta(path)
    except errors.GuidanceConfigError:
        return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--base-channels", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    H.boot()
    if not os.path.exists(CACHE) or not cache_is_current(CACHE):
        write_cache(CACHE)
    train = H.pack_module("guidance_core.train")
    t0 = time.time()
    rc = train.main(
        [
            "--latents",
            CACHE,
            "--out",
            args.out,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--lr",
            str(args.lr),
            "--seed",
            str(args.seed),
            "--sigma-distribution",
            "model",
            "--base-channels",
            str(args.base_channels),
            "--device",
            "cpu",
        ]
    )
    print(f"trained in {time.time() - t0:.0f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
