"""A real ComfyUI, in-process, with Guidance Lab loaded through ComfyUI's own custom-node loader.

Also builds tiny real models: ComfyUI's own UNetModel at small width inside BaseModel +
ModelPatcher, for eps, v-prediction and flow parameterizations.
"""

from __future__ import annotations

import asyncio
import os
import sys

from . import ROOT

COMFY = os.path.abspath(os.environ.get("GL_COMFYUI", os.path.join(ROOT, ".comfyui")))
PACK = os.path.join(COMFY, "custom_nodes", "guidance-lab")

_booted = None


def boot():
    """Import ComfyUI on the CPU, load its built-in extra nodes and this pack. Returns comfy's `nodes`."""
    global _booted
    if _booted is not None:
        return _booted
    if not os.path.isfile(os.path.join(COMFY, "main.py")):
        raise RuntimeError(f"no ComfyUI at {COMFY}; run scripts/setup.sh first")
    if COMFY not in sys.path:
        sys.path.insert(0, COMFY)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.disable_all_custom_nodes = False
    import comfy.model_management  # noqa: F401  (after --cpu)
    import utils.install_util  # noqa: F401  ComfyUI's utils package, before nodes.py puts comfy/ first on sys.path
    import nodes

    asyncio.run(nodes.init_builtin_extra_nodes())
    ok = asyncio.run(nodes.load_custom_node(PACK))
    if not ok:
        raise RuntimeError(f"ComfyUI's loader failed to load {PACK}")
    _booted = nodes
    return nodes


def node(node_id):
    return boot().NODE_CLASS_MAPPINGS[node_id]


def declared_inputs(node_id) -> set:
    """The input names the running ComfyUI's node declares (required and optional)."""
    declared = node(node_id).INPUT_TYPES()
    return {n for part in ("required", "optional") for n in declared.get(part, {})}


def run_node(node_id, **inputs):
    """Execute a node class as ComfyUI does (V3: classmethod execute -> NodeOutput; V1: FUNCTION)."""
    cls = node(node_id)
    if hasattr(cls, "define_schema"):
        out = cls.execute(**inputs)
        return tuple(out.args) if hasattr(out, "args") else out
    obj = cls()
    return getattr(obj, cls.FUNCTION)(**inputs)


def tiny_model(
    kind: str = "eps",
    seed: int = 0,
    channels: int = 4,
    context_dim: int = 32,
    width: int = 32,
    cross_gain: float = 3.0,
    family: str = "base",
):
    """ComfyUI's UNetModel at tiny width, as a real MODEL (ModelPatcher). kind: eps | v | flow.
    family "refiner": ComfyUI's SDXLRefiner class (ADM vector from the pooled output, size and aesthetic
    score; the score depends on the cond's prompt_type), conds from cond(..., pooled=1280)."""
    boot()
    import torch
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base

    class TinyConfig(comfy.supported_models_base.BASE):
        unet_config = {}
        unet_extra_config = {}
        latent_format = comfy.latent_formats.LatentFormat
        sampling_settings = {"shift": 3.0, "multiplier": 1000} if kind == "flow" else {}

    unet = dict(
        image_size=32,
        in_channels=channels,
        out_channels=channels,
        model_channels=width,
        num_res_blocks=[1, 1],
        channel_mult=[1, 2],
        num_head_channels=16,  # per level, as ComfyUI detects it
        use_spatial_transformer=True,
        transformer_depth=[0, 1],
        transformer_depth_output=[0, 0, 1, 1],
        transformer_depth_middle=1,
        context_dim=context_dim,
        use_linear_in_transformer=True,
        adm_in_channels=None,
        legacy=False,
        dtype=torch.float32,
    )
    if family == "refiner":
        unet.update(adm_in_channels=2560, num_classes="sequential")
    cfg = TinyConfig(unet)
    cfg.latent_format = comfy.latent_formats.LatentFormat()
    mtype = {
        "eps": comfy.model_base.ModelType.EPS,
        "v": comfy.model_base.ModelType.V_PREDICTION,
        "flow": comfy.model_base.ModelType.FLOW,
    }[kind]
    torch.manual_seed(seed)
    model_class = {"base": comfy.model_base.BaseModel, "refiner": comfy.model_base.SDXLRefiner}[family]
    model = model_class(cfg, model_type=mtype, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # ComfyUI zero-inits output layers; give every weight a value
        for name, p in model.diffusion_model.named_parameters():
            gain = cross_gain if ".attn2." in name else 0.3  # strong prompt influence: guidance must show
            p.copy_(torch.randn(p.shape, generator=g) * (gain / max(1, p[0].numel()) ** 0.5))
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def cond(seed: int, batch: int = 1, tokens: int = 4, dim: int = 32, pooled: int = 0):
    """A CONDITIONING like CLIPTextEncode's: [[tensor(B, T, dim), {}]], with a pooled_output of that width
    when pooled > 0 (SDXL-style models)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(batch, pooled, generator=g)} if pooled else {}
    return [[torch.randn(batch, tokens, dim, generator=g), extra]]


def empty_latent(batch: int = 1, size: int = 16, channels: int = 4):
    import torch

    return {"samples": torch.zeros(batch, channels, size, size)}


def comfyui_version() -> str:
    """The version of the ComfyUI under test (its comfyui_version.py), e.g. "0.3.52"."""
    boot()
    import comfyui_version

    return comfyui_version.__version__


def version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


def pixel_space_vae():
    """ComfyUI's pixel-space VAE: IMAGE <-> 3-channel LATENT in [-1, 1], identity network, no resampling
    (comfy.sd.VAE(sd={"pixel_space_vae": ...}), comfy/pixel_space_convert.py). Built under inference mode, as
    ComfyUI loads a VAE. ComfyUI 0.3.52 has no pixel-space VAE: there the same object (same ratios, channels,
    pre/post-processing, identity first_stage_model) is assembled from ComfyUI's own VAE class."""
    boot()
    import logging

    import torch
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd

    with torch.inference_mode():
        try:
            import comfy.pixel_space_convert  # noqa: F401
        except ImportError:
            pass
        else:
            return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})

        class PixelspaceConversionVAE(torch.nn.Module):  # ComfyUI 0.3.75's comfy/pixel_space_convert.py
            def __init__(self):
                super().__init__()
                self.pixel_space_vae = torch.nn.Parameter(torch.tensor(1.0))

            def encode(self, pixels, *_args, **_kwargs):
                return pixels

            def decode(self, samples, *_args, **_kwargs):
                return samples

        log = logging.getLogger()
        level = log.level
        log.setLevel(logging.ERROR)  # "No VAE weights detected": the defaults are set, the network comes next
        try:
            vae = comfy.sd.VAE(sd={})
        finally:
            log.setLevel(level)

        def size(shape, dtype):
            return shape[2] * shape[3] * comfy.model_management.dtype_size(dtype)

        vae.memory_used_encode = vae.memory_used_decode = size
        vae.downscale_ratio = vae.upscale_ratio = 1
        vae.latent_channels = vae.output_channels = 3
        vae.latent_dim = 2
        vae.first_stage_model = PixelspaceConversionVAE().eval()
        vae.device = comfy.model_management.vae_device()
        vae.vae_dtype = comfy.model_management.vae_dtype(vae.device, vae.working_dtypes)
        vae.first_stage_model.to(vae.vae_dtype)
        vae.output_device = comfy.model_management.intermediate_device()
        vae.patcher = comfy.model_patcher.ModelPatcher(
            vae.first_stage_model, load_device=vae.device, offload_device=comfy.model_management.vae_offload_device()
        )
        return vae


class RowCounter:
    """Counts the rows (batch entries) of every diffusion-model forward, per sigma."""

    def __init__(self, patcher):
        self.calls = []  # (rows, sigma)
        self.handle = patcher.model.diffusion_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        t_opts = kwargs.get("transformer_options", {})
        sig = t_opts.get("sigmas")
        self.calls.append((int(x.shape[0]), float(sig.max()) if sig is not None else None))

    def close(self):
        self.handle.remove()

    @property
    def rows(self):
        return sum(r for r, _ in self.calls)


def pack_module(name: str):
    """A module of the pack as ComfyUI's loader imported it (e.g. 'guidance_core.errors')."""
    import importlib

    boot()
    pack = next(k for k, m in sys.modules.items() if k.endswith("guidance-lab") and hasattr(m, "comfy_entrypoint"))
    return importlib.import_module(f"{pack}.{name}")


def user_folders(root):
    """A context manager: ComfyUI's input and user directories are root/input and root/user, and root/classifiers
    is the first classifiers folder (all created), until it exits."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        boot()
        import folder_paths

        for sub in ("input", "user", "classifiers"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        old = folder_paths.get_input_directory(), folder_paths.get_user_directory()
        folder_paths.set_input_directory(os.path.join(root, "input"))
        folder_paths.set_user_directory(os.path.join(root, "user"))
        folder_paths.folder_names_and_paths["classifiers"][0].insert(0, os.path.join(root, "classifiers"))
        try:
            yield root
        finally:
            folder_paths.set_input_directory(old[0])
            folder_paths.set_user_directory(old[1])
            folder_paths.folder_names_and_paths["classifiers"][0].remove(os.path.join(root, "classifiers"))

    return scope()


DEMO = os.path.join(ROOT, "scripts", "demo_nodes")


def demo_module():
    """The demo shapes world (scripts/demo_nodes), loaded through ComfyUI's loader."""
    nodes = boot()
    if "GuidanceLabDemoShapesModel" not in nodes.NODE_CLASS_MAPPINGS:
        if not asyncio.run(nodes.load_custom_node(DEMO)):
            raise RuntimeError(f"ComfyUI's loader failed to load {DEMO}")
    for key, mod in sys.modules.items():
        if key.endswith("demo_nodes") and hasattr(mod, "GMMDenoiser"):
            return mod
    raise KeyError("demo_nodes")


def tiny_clip_config(layers: int = 2) -> dict:
    """A tiny open_clip architecture (both towers, random weights in the tests): 32-pixel images, width 64."""
    return {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": layers, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": layers},
    }


def tiny_vae_ddconfig(channels: int = 4) -> dict:
    return {
        "double_z": True,
        "z_channels": channels,
        "resolution": 32,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def tiny_vae(channels: int = 4, seed: int = 0, dtype=None):
    """ComfyUI's VAE (comfy.sd.VAE with AutoencoderKL, width 32, 2x down/upscale) making `channels`-channel latents,
    random weights from `seed`, built under inference mode as ComfyUI loads one. The config path of comfy.sd.VAE
    keeps its default latent_channels (4): set here from z_channels, as ComfyUI's own detection does."""
    import torch

    import comfy.ldm.models.autoencoder as AE
    import comfy.sd

    dd = tiny_vae_ddconfig(channels)
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode(False):
        shapes = AE.AutoencoderKL(ddconfig=dd, embed_dim=channels).state_dict()
    sd = {
        k: (
            torch.randn(v.shape, generator=g) / max(1, v[0].numel()) ** 0.5
            if v.ndim > 1
            else torch.ones(v.shape)
            if ("norm" in k and k.endswith("weight"))
            else torch.zeros(v.shape)
        )
        for k, v in shapes.items()
    }
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": dd, "embed_dim": channels}}, dtype=dtype)
    vae.latent_channels = channels
    vae.downscale_ratio = vae.upscale_ratio = 2 ** (len(dd["ch_mult"]) - 1)
    return vae
