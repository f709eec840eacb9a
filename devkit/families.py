"""Tiny random instances of ComfyUI's own model families, so the pack is tested on every family's code path without a checkpoint: each family's supported_models config
and model_base class, its model_sampling, latent format and conditioning inputs, with the network shrunk to a
few layers of small width. Weights are random (ComfyUI leaves them uninitialized without a checkpoint), so
the outputs mean nothing; what matters is that every code path of the family runs as in a real checkpoint.

FAMILIES[name] = Family(build, cond, latent): build() -> ModelPatcher; cond(seed) -> CONDITIONING as that
family's text encoder node gives it (shapes shrunk to the tiny widths); latent(batch) -> LATENT.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable, NamedTuple

import torch

from . import comfy_host as H


class Family(NamedTuple):
    build: Callable
    cond: Callable
    latent: Callable


def _patcher(model, seed: int, gain: float = 0.5):
    import comfy.model_patcher

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # ComfyUI's ops leave weights uninitialized: give every one a value
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (gain / max(1, p[0].numel()) ** 0.5))
        for name, b in model.diffusion_model.named_buffers():  # checkpoint-loaded buffers (MMDiT's pos_embed)
            if name.endswith("pos_embed"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.02)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def _config(name: str, unet_config: dict, **attrs):
    import comfy.supported_models

    cls = getattr(comfy.supported_models, name)
    cfg = cls({**cls.unet_config, **unet_config})
    for k, v in attrs.items():
        setattr(cfg, k, v)
    return cfg


def _accepted(config: dict, names) -> dict:
    """The entries of a unet config that this ComfyUI's network class takes (`names`): a checkpoint of the
    family gives only those on older versions (e.g. ComfyUI 0.3.52's NextDiT has no rope_theta, its
    HunyuanVideo no byt5 / meanflow; their defaults are the values set here)."""
    names = set(names)
    return {k: v for k, v in config.items() if k in names or k in ("image_model", "dtype")}


def _signature(cls) -> list:
    return list(inspect.signature(cls.__init__).parameters)


def _flux_fields(params_cls, config: dict) -> dict:
    """`config` plus the fields of this ComfyUI's Flux-type params dataclass (FluxParams, ChromaParams) that it
    requires and `config` lacks, at the values ComfyUI's model detection gives a Flux.1 / Chroma checkpoint:
    `txt_ids_dims` [] (no text position ids; newer ComfyUI), `vec_in_dim` None (Chroma has no pooled vector; a
    field of ChromaParams on newer ComfyUI). Older versions declare neither and get neither."""
    detected = {"txt_ids_dims": [], "vec_in_dim": None}
    fields = {f.name for f in dataclasses.fields(params_cls)}
    return {**config, **{k: v for k, v in detected.items() if k in fields and k not in config}}


def _mask(tokens: int):
    """The text encoder's attention mask (integer ones, as ComfyUI's T5 / Gemma encoders return it)."""
    return torch.ones(1, tokens, dtype=torch.long)


def _cond(seed, tokens, dim, pooled=0, **extra):
    g = torch.Generator().manual_seed(seed)
    d = {"pooled_output": torch.randn(1, pooled, generator=g)} if pooled else {}
    d.update(extra)
    return [[torch.randn(1, tokens, dim, generator=g), d]]


def _latent(channels, size=16, frames=None):
    def make(batch=1):
        shape = (batch, channels, frames, size, size) if frames else (batch, channels, size, size)
        return {"samples": torch.zeros(shape)}

    return make


# ------------------------------------------------------------------ UNet families
UNET_TINY = dict(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    num_res_blocks=[1, 1],
    channel_mult=[1, 2],
    transformer_depth=[0, 1],
    transformer_depth_output=[0, 0, 1, 1],
    transformer_depth_middle=1,
    num_head_channels=16,
    context_dim=32,
    use_linear_in_transformer=True,
    use_spatial_transformer=True,
    legacy=False,
    image_size=32,
    dtype=torch.float32,
)


def sd15():
    import comfy.model_base

    cfg = _config("SD15", dict(UNET_TINY, use_linear_in_transformer=False))
    return _patcher(comfy.model_base.BaseModel(cfg, device="cpu"), 10)


def sd21_v():
    import comfy.model_base

    cfg = _config("SD20", dict(UNET_TINY))
    return _patcher(
        comfy.model_base.BaseModel(cfg, model_type=comfy.model_base.ModelType.V_PREDICTION, device="cpu"), 11
    )


def sdxl():
    import comfy.model_base

    cfg = _config("SDXL", dict(UNET_TINY, adm_in_channels=2816, num_classes="sequential"))
    return _patcher(comfy.model_base.SDXL(cfg, device="cpu"), 12)


def playground_v25():
    """SDXL architecture, EDM sampling with sigma_data 0.5 and the per-channel Playground latent format, as
    ComfyUI's SDXL config sets them when it detects a Playground checkpoint."""
    import comfy.latent_formats
    import comfy.model_base

    cfg = _config(
        "SDXL",
        dict(UNET_TINY, adm_in_channels=2816, num_classes="sequential"),
        latent_format=comfy.latent_formats.SDXL_Playground_2_5(),
    )
    cfg.sampling_settings = {"sigma_data": 0.5, "sigma_max": 80.0, "sigma_min": 0.002}
    return _patcher(comfy.model_base.SDXL(cfg, model_type=comfy.model_base.ModelType.EDM, device="cpu"), 13)


# ------------------------------------------------------------------ DiT families
def sd35():
    """MMDiT (hidden size = 64 * depth), flow matching with shift 3."""
    cfg = _config(
        "SD3",
        dict(
            in_channels=16,
            out_channels=16,
            patch_size=2,
            depth=1,
            input_size=None,
            adm_in_channels=16,
            pos_embed_max_size=16,
            num_patches=256,
            qk_norm="rms",
            context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 16, "out_features": 64}},
            x_block_self_attn_layers=[],
            dtype=torch.float32,
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 14)


def flux_dev(seed: int = 15, **sizes):
    """Flux.1 dev: guidance-distilled (a guidance embedding, no real CFG needed), flow with Flux's time shift. `sizes`:
    FluxParams fields that replace the tiny test sizes (a benchmark's larger network), `seed` its random weights."""
    import comfy.ldm.flux.model

    cfg = _config(
        "Flux",
        _flux_fields(
            comfy.ldm.flux.model.FluxParams,
            {
                **dict(
                    image_model="flux",
                    in_channels=16,
                    out_channels=16,
                    vec_in_dim=8,
                    context_in_dim=16,
                    hidden_size=32,
                    mlp_ratio=2.0,
                    num_heads=2,
                    depth=1,
                    depth_single_blocks=1,
                    axes_dim=[4, 6, 6],
                    theta=10000,
                    patch_size=2,
                    qkv_bias=True,
                    guidance_embed=True,
                    dtype=torch.float32,
                ),
                **sizes,
            },
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), seed)


def wan21():
    """Wan 2.1 text-to-video: 5-D latents [B, 16, T, H, W], flow with shift."""
    cfg = _config(
        "WAN21_T2V",
        dict(
            model_type="t2v",
            patch_size=(1, 2, 2),
            text_len=8,
            in_dim=16,
            dim=32,
            ffn_dim=64,
            freq_dim=32,
            text_dim=16,
            out_dim=16,
            num_heads=2,
            num_layers=1,
            window_size=(-1, -1),
            qk_norm=True,
            cross_attn_norm=True,
            eps=1e-6,
            dtype=torch.float32,
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 16)


def cosmos_predict2():
    """Cosmos-Predict2 text-to-image: EDM-style sampling (sigma_data 1, sigma_max 80), Wan 2.1 latents [B, 16, 1, H, W]."""
    cfg = _config(
        "CosmosT2IPredict2",
        dict(
            image_model="cosmos_predict2",
            max_img_h=32,
            max_img_w=32,
            max_frames=4,
            in_channels=16,
            out_channels=16,
            patch_spatial=2,
            patch_temporal=1,
            model_channels=32,
            concat_padding_mask=True,
            crossattn_emb_channels=16,
            pos_emb_cls="rope3d",
            pos_emb_learnable=True,
            pos_emb_interpolation="crop",
            min_fps=1,
            max_fps=30,
            use_adaln_lora=True,
            adaln_lora_dim=8,
            num_blocks=1,
            num_heads=2,
            extra_per_block_abs_pos_emb=False,
            rope_h_extrapolation_ratio=4.0,
            rope_w_extrapolation_ratio=4.0,
            rope_t_extrapolation_ratio=1.0,
            dtype=torch.float32,
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 17)


def chroma():
    """Chroma: Flux's double/single stream blocks without the pooled vector, modulations from the distilled
    guidance approximator (in_dim 64 = timestep 16 + guidance 16 + index 32), flow with Flux's time shift
    (multiplier 1); 16-channel Flux latents packed 2x2 (in_channels 64); T5-only conditioning (no pooled output)."""
    import comfy.ldm.chroma.model

    cfg = _config(
        "Chroma",
        _flux_fields(
            comfy.ldm.chroma.model.ChromaParams,
            dict(
                image_model="chroma",
                in_channels=64,
                out_channels=64,
                context_in_dim=16,
                hidden_size=32,
                mlp_ratio=2.0,
                num_heads=2,
                depth=1,
                depth_single_blocks=1,
                axes_dim=[4, 6, 6],
                theta=10000,
                patch_size=2,
                qkv_bias=True,
                in_dim=64,
                out_dim=32,
                hidden_dim=32,
                n_layers=1,
                dtype=torch.float32,
            ),
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 18)


def lumina2():
    """Lumina Image 2.0 (NextDiT): flow with shift 6, Flux latents, Gemma conditioning with its attention mask."""
    import comfy.ldm.lumina.model

    cfg = _config(
        "Lumina2",
        _accepted(
            dict(
                image_model="lumina2",
                patch_size=2,
                in_channels=16,
                dim=32,
                cap_feat_dim=16,
                n_layers=1,
                n_refiner_layers=1,
                n_heads=2,
                n_kv_heads=1,
                multiple_of=16,
                ffn_dim_multiplier=2.0,
                qk_norm=True,
                axes_dims=[4, 6, 6],
                axes_lens=[300, 64, 64],
                rope_theta=10000.0,
                dtype=torch.float32,
            ),
            _signature(comfy.ldm.lumina.model.NextDiT),
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 19)


def qwen_image():
    """Qwen-Image (MMDiT): Flux-type time shift (1.15, multiplier 1), Wan 2.1 latents (sampled as [B, 16, 1, H, W]),
    Qwen2.5-VL conditioning (no pooled output; the all-ones attention mask is dropped by its encoder)."""
    cfg = _config(
        "QwenImage",
        dict(
            image_model="qwen_image",
            patch_size=2,
            in_channels=64,
            out_channels=16,
            num_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            axes_dims_rope=[4, 6, 6],
            dtype=torch.float32,
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 20)


def ltxv():
    """LTX-Video: 5-D latents [B, 128, T, H, W], Flux-type time shift 2.37, T5 conditioning with its attention mask
    (integer) and the frame rate (default 25)."""
    cfg = _config(
        "LTXV",
        dict(
            image_model="ltxv",
            in_channels=128,
            cross_attention_dim=32,
            attention_head_dim=16,
            num_attention_heads=2,
            caption_channels=16,
            num_layers=1,
            dtype=torch.float32,
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 21)


def hunyuan_video():
    """HunyuanVideo: 5-D latents [B, 16, T, H, W], flow with shift 7, LLaMA tokens + CLIP pooled vector and the
    guidance embedding (guidance 6 by default)."""
    import comfy.ldm.hunyuan_video.model

    fields = [f.name for f in dataclasses.fields(comfy.ldm.hunyuan_video.model.HunyuanVideoParams)]
    cfg = _config(
        "HunyuanVideo",
        _accepted(
            dict(
                image_model="hunyuan_video",
                in_channels=16,
                out_channels=16,
                vec_in_dim=8,
                context_in_dim=16,
                hidden_size=32,
                mlp_ratio=2.0,
                num_heads=2,
                depth=1,
                depth_single_blocks=1,
                axes_dim=[4, 6, 6],
                theta=256,
                patch_size=[1, 2, 2],
                qkv_bias=True,
                guidance_embed=True,
                byt5=False,
                meanflow=False,
                meanflow_sum=False,
                use_cond_type_embedding=False,
                vision_in_dim=None,
                dtype=torch.float32,
            ),
            fields,
        ),
    )
    return _patcher(cfg.get_model({}, device="cpu"), 22)


def _with_reference(cond, shape, seed=9):
    """The conditioning with a reference latent, as ComfyUI's ReferenceLatent node attaches it (Flux Kontext,
    Qwen-Image Edit: the VAE latent of the input image, here random)."""
    latent = {"samples": torch.randn(*shape, generator=torch.Generator().manual_seed(seed))}
    return H.run_node("ReferenceLatent", conditioning=cond, latent=latent)[0]


FAMILIES = {
    "SD1.5": Family(sd15, lambda s: _cond(s, 4, 32), _latent(4)),
    "SD2.x v-prediction": Family(sd21_v, lambda s: _cond(s, 4, 32), _latent(4)),
    "SDXL": Family(sdxl, lambda s: _cond(s, 4, 32, pooled=1280), _latent(4)),
    "Playground v2.5 (EDM, sigma_data 0.5)": Family(playground_v25, lambda s: _cond(s, 4, 32, pooled=1280), _latent(4)),
    "SD3.5 (MMDiT, flow)": Family(sd35, lambda s: _cond(s, 4, 16, pooled=16), _latent(16)),
    "Flux.1 dev (guidance-distilled)": Family(flux_dev, lambda s: _cond(s, 4, 16, pooled=8, guidance=3.5), _latent(16)),
    "Wan 2.1 (video, 5-D)": Family(wan21, lambda s: _cond(s, 4, 16), _latent(16, size=8, frames=3)),
    "Cosmos-Predict2 (text to image)": Family(
        cosmos_predict2, lambda s: _cond(s, 4, 16), _latent(16, size=8, frames=1)
    ),
    "Chroma (flow, no pooled vector)": Family(chroma, lambda s: _cond(s, 4, 16, pooled_output=None), _latent(16)),
    "Lumina 2 (NextDiT, flow)": Family(lumina2, lambda s: _cond(s, 4, 16, attention_mask=_mask(4)), _latent(16)),
    "Qwen-Image (MMDiT, Wan latents)": Family(qwen_image, lambda s: _cond(s, 4, 16), _latent(16)),
    "Qwen-Image Edit (reference latent)": Family(
        qwen_image, lambda s: _with_reference(_cond(s, 4, 16), (1, 16, 1, 16, 16)), _latent(16)
    ),
    "Flux.1 Kontext (reference latent)": Family(
        flux_dev, lambda s: _with_reference(_cond(s, 4, 16, pooled=8, guidance=2.5), (1, 16, 16, 16)), _latent(16)
    ),
    "LTXV (video, 5-D, 128 channels)": Family(
        ltxv, lambda s: _cond(s, 4, 16, attention_mask=_mask(4)), _latent(128, size=4, frames=2)
    ),
    "HunyuanVideo (video, 5-D)": Family(
        hunyuan_video, lambda s: _cond(s, 4, 16, pooled=8, guidance=6.0), _latent(16, size=8, frames=3)
    ),
}


@functools.cache
def model(name: str):
    H.boot()
    return FAMILIES[name].build()


def latent_dims(name: str) -> int:
    """Spatial(-temporal) dimensions of the family's latents as ComfyUI samples them (its latent format's
    latent_dimensions): 2 for [B, C, H, W], 3 for [B, C, T, H, W] (also Qwen-Image's and Cosmos-Predict2's
    image latents, sampled as T = 1)."""
    return int(getattr(model(name).get_model_object("latent_format"), "latent_dimensions", 2))
