"""A tiny real Wan 2.1 VAE (the VAE of Wan 2.1, Qwen-Image and Cosmos-Predict2): ComfyUI's own
comfy.ldm.wan.vae.WanVAE at a small width, loaded through comfy.sd.VAE from a state dict exactly as ComfyUI
loads a Wan VAE checkpoint (it recognises the architecture by its keys and reads the width from
decoder.head.0.gamma). Random weights; what matters is that ComfyUI's video-VAE code paths run as with a
real checkpoint: VAE.encode reads a stack of images [N, H, W, 3] as ONE N-frame video and compresses time
(1 + (N - 1) // 4 latent frames), 8x spatial compression, 16 latent channels."""

from __future__ import annotations

import functools

from . import comfy_host as H

WAN21_LATENT_CHANNELS = 16
REAL_WIDTH = 96  # the released Wan 2.1 VAE's width (decoder.head.0.gamma)


def wan21_state_dict(dim: int = 8, seed: int = 0) -> dict:
    """A Wan 2.1 VAE checkpoint's state dict at width `dim` (real: 96), random weights from `seed`: convolutions
    and linears ~ N(0, 1/fan_in), RMS-norm gains 1, biases 0."""
    import torch

    H.boot()
    import comfy.ldm.wan.vae as wan_vae

    with torch.inference_mode(False):
        shapes = wan_vae.WanVAE(
            dim=dim,
            z_dim=WAN21_LATENT_CHANNELS,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            attn_scales=[],
            temperal_downsample=[False, True, True],
            dropout=0.0,
        ).state_dict()
    g = torch.Generator().manual_seed(seed)

    def value(key, v):
        if key.endswith("gamma"):
            return torch.ones(v.shape)
        if v.ndim > 1:
            return torch.randn(v.shape, generator=g) / max(1, v[0].numel()) ** 0.5
        return torch.zeros(v.shape)

    return {k: value(k, v) for k, v in shapes.items()}


def tiny_wan21_vae(dim: int = 8, seed: int = 0):
    """ComfyUI's VAE (comfy.sd.VAE) holding a Wan 2.1 VAE of width `dim`, built from its state dict under
    inference mode as ComfyUI's VAELoader does (comfy.sd.VAE picks WanVAE from the keys). A ComfyUI that does not
    read the width from the checkpoint (0.3.52 builds every Wan 2.1 VAE at the real width) refuses the tiny
    state dict with a size mismatch: the VAE is then built at that real width (REAL_WIDTH, slower)."""
    import torch

    H.boot()
    import comfy.ldm.wan.vae as wan_vae
    import comfy.sd

    try:
        with torch.inference_mode():
            vae = comfy.sd.VAE(sd=wan21_state_dict(dim, seed))
    except RuntimeError as e:
        if "size mismatch" not in str(e) or dim == REAL_WIDTH:
            raise
        with torch.inference_mode():
            vae = comfy.sd.VAE(sd=wan21_state_dict(REAL_WIDTH, seed))
    if not isinstance(vae.first_stage_model, wan_vae.WanVAE):
        raise RuntimeError(f"comfy.sd.VAE built {type(vae.first_stage_model).__name__} from a Wan 2.1 state dict")
    return vae


@functools.cache
def shared_wan21_vae():
    """One tiny Wan 2.1 VAE per process (seed 0, width 8) for the compatibility matrix's trainer rows."""
    return tiny_wan21_vae()
