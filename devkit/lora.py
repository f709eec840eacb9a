"""LoRA weights for the dev kit's tiny models, applied by ComfyUI's own LoRA code (comfy.sd.load_lora_for_models,
what LoraLoaderModelOnly runs on a file's state dict)."""

from __future__ import annotations

import torch

# the layers a LoRA trained on prompts usually touches: attention projections (UNet attn1/attn2, DiT qkv/proj)
DEFAULT_SUFFIXES = (".to_q.weight", ".to_k.weight", ".to_v.weight", ".qkv.weight", ".proj.weight")


def lora_state_dict(patcher, rank: int = 4, seed: int = 2, gain: float = 0.3, suffixes=DEFAULT_SUFFIXES) -> dict:
    """A LoRA file's state dict (diffusion_model.<layer>.lora_up/lora_down.weight) of rank `rank` on every 2-D weight
    of the model's diffusion network whose name ends with one of `suffixes`."""
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for name, w in patcher.model.diffusion_model.state_dict().items():
        if w.ndim == 2 and name.endswith(tuple(suffixes)):
            base = "diffusion_model." + name[: -len(".weight")]
            lora[base + ".lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * gain
            lora[base + ".lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * gain
    if not lora:
        raise ValueError(f"no weight of {type(patcher.model.diffusion_model).__name__} ends with {suffixes}")
    return lora


def with_lora(patcher, lora: dict, strength: float = 1.0):
    """A clone of `patcher` with the LoRA's weight patches at `strength` (ComfyUI's LoRA loader; the network is
    shared with `patcher`, as with LoraLoaderModelOnly)."""
    import comfy.sd

    model, _ = comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0.0)
    return model
