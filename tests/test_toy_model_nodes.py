"""The toy world's nodes load the shipped Fashion-MNIST diffusion model and sample through ComfyUI."""

import os

import pytest
import torch

from devkit import comfy_host as H

pytestmark = pytest.mark.comfy

WEIGHTS = os.path.join(H.ROOT, "toy_models", "diffusion", "fashion_diffusion.safetensors")


@pytest.fixture(scope="module")
def toy():
    H.boot()
    with torch.inference_mode():
        return H.run_node("GuidanceLabToyModelLoader", toy_model="fashion_diffusion.safetensors")


def sample(model, pos, neg, cfg, n=8, seed=1, steps=12):
    lat = {"samples": torch.zeros(n, 1, 32, 32)}
    with torch.inference_mode():
        return H.run_node(
            "KSampler",
            model=model,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name="euler",
            scheduler="normal",
            positive=pos,
            negative=neg,
            latent_image=lat,
            denoise=1.0,
        )[0]


def test_shipped_weights_are_small_and_documented():
    assert os.path.getsize(WEIGHTS) < 15e6
    readme = open(os.path.join(H.ROOT, "toy_models", "README.md")).read()
    assert "python -m bench.toy.train_toy" in readme and "--seed" in readme


def test_toy_nodes_sample_and_decode(toy):
    model, world = toy
    assert world.labels[1] == "Trouser" and len(world.labels) == 10
    trouser = H.run_node("GuidanceLabToyClass", toy_world=world, label="Trouser", batch=1)[0]
    bag = H.run_node("GuidanceLabToyClass", toy_world=world, label="Bag", batch=1)[0]
    empty = H.run_node("GuidanceLabToyClass", toy_world=world, label="empty", batch=1)[0]
    a = sample(model, trouser, empty, 3.0)
    b = sample(model, bag, empty, 3.0)
    img = H.run_node("GuidanceLabToyDecode", samples=a, upscale=2)[0]
    assert img.shape == (8, 64, 64, 3) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    xa, xb = a["samples"], b["samples"]
    assert torch.isfinite(xa).all() and xa.abs().max() < 3
    # a class prompt shapes the picture: trousers are tall and narrow, bags wide (mean column/row extent)
    ink = lambda x: (x > 0).float()  # noqa: E731
    width = lambda x: ink(x).mean(dim=(1, 2)).gt(0.1).float().sum(-1).mean()  # noqa: E731
    assert float(width(xb)) > float(width(xa)) + 3, (float(width(xa)), float(width(xb)))


def test_unknown_label_is_refused(toy):
    errors = H.pack_module("guidance_core.errors")
    with pytest.raises(errors.GuidanceConfigError, match="unknown"):
        H.run_node("GuidanceLabToyClass", toy_world=toy[1], label="Hat", batch=1)


def test_comfyuis_lora_loader_applies_to_the_toy_model():
    """LoraLoaderModelOnly's code (comfy.sd.load_lora_for_models) on the toy model: its LoRA key map reads the UNet's
    num_res_blocks per level (an int there raised TypeError); every key of a LoRA on its attention layers is patched."""
    import torch
    from devkit.lora import lora_state_dict, with_lora

    with torch.inference_mode():
        model = H.run_node("GuidanceLabToyModelLoader", toy_model="fashion_diffusion.safetensors")[0]
    lora = lora_state_dict(model, rank=2, suffixes=(".to_q.weight", ".to_k.weight", ".to_v.weight"))
    clone = with_lora(model, lora, 1.0)
    assert clone.model is model.model and len(clone.patches) == len(lora) // 2
