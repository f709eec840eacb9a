"""The toy world (category "Guidance Lab/toy"): a small class-conditional diffusion model trained by
this project on Fashion-MNIST (ComfyUI's own UNetModel at small width, eps-prediction on ComfyUI's
discrete schedule, 1x32x32 images), its class conditionings and a decoder to IMAGE. Weights ship
in toy_models/ (made by bench/toy/train_toy.py; command and seed in toy_models/README.md).

A guidance-distilled student of the toy model (bench/toy/train_distilled.py; Meng et al. 2023) takes the CFG
scale as an input, as Flux dev does: the value travels in the CONDITIONING as "guidance" (ComfyUI's FluxGuidance
node sets it), reaches the UNet as the forward kwarg `guidance` (one value per batch row) and is embedded
(sinusoidal, then the UNet's own label_emb / y path) into the timestep embedding. One model call per step."""

from __future__ import annotations

import json
import os

import torch

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
import folder_paths
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding
from comfy_api.latest import io
from safetensors import safe_open

from ..guidance_core.errors import GuidanceConfigError
from . import classifier_nodes, folders

CATEGORY = "Guidance Lab/toy"
TOY_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toy_models")
TOY_DIR = os.path.join(TOY_ROOT, "diffusion")
TOY_CLASSIFIER_DIR = os.path.join(TOY_ROOT, "classifiers")
TOY_FOLDER = "guidance_lab_toy"
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CONTEXT_DIM = 32
TOY_UNET = dict(
    image_size=32,
    in_channels=1,
    out_channels=1,
    model_channels=32,
    num_res_blocks=[1, 1, 1],
    channel_mult=[1, 2, 2],
    num_head_channels=32,
    use_spatial_transformer=True,
    transformer_depth=[0, 0, 1],
    transformer_depth_output=[0, 0, 0, 0, 1, 1],
    transformer_depth_middle=1,
    context_dim=CONTEXT_DIM,
    use_linear_in_transformer=True,
    adm_in_channels=None,
    legacy=False,
)
# The guidance-distilled student: TOY_UNET plus an MLP (label_emb, "sequential") from the guidance scale's sinusoidal
# embedding (GUIDANCE_DIM wide, of g * GUIDANCE_FACTOR, as Flux's guidance_in embeds g * 1000 at width 256; at width 32
# a factor of 100 keeps half the frequencies smooth over g in [1, 6]) into the timestep embedding.
GUIDANCE_DIM = 32
GUIDANCE_FACTOR = 100.0
DEFAULT_GUIDANCE = 3.0  # the student's scale when the conditioning carries none (ComfyUI's cfg convention)
STUDENT_VARIANT = "guidance_distilled"  # metadata "variant" of a student file
TOY_STUDENT_UNET = dict(TOY_UNET, num_classes="sequential", adm_in_channels=GUIDANCE_DIM)

# The pack's own toy_models/ folders, registered so files resolve through ComfyUI's folder registry:
# the diffusion model in its own folder, the toy world's noise-aware classifier as one more path of
# the "classifiers" folder (registered by classifier_nodes, imported above; after models/classifiers), so the
# classifier loader lists it.
folder_paths.folder_names_and_paths[TOY_FOLDER] = ([TOY_DIR], {".safetensors"})
if TOY_CLASSIFIER_DIR not in folder_paths.folder_names_and_paths[classifier_nodes.FOLDER][0]:
    folder_paths.folder_names_and_paths[classifier_nodes.FOLDER][0].append(TOY_CLASSIFIER_DIR)


class ToyLatent(comfy.latent_formats.LatentFormat):
    """Pixels in [-1, 1], one channel."""

    latent_channels = 1


class ToyConfig(comfy.supported_models_base.BASE):
    unet_config = {}
    unet_extra_config = {}
    latent_format = ToyLatent
    sampling_settings = {}


def guidance_embedding(guidance, batch: int):
    """[batch, GUIDANCE_DIM] sinusoidal embedding of the guidance scale (one value, or one per row)."""
    g = guidance.float().reshape(-1)
    if g.numel() == 1:
        g = g.expand(batch)
    if g.numel() != batch:
        raise GuidanceConfigError(f"guidance has {g.numel()} values for a batch of {batch}; accepted: 1 or {batch}")
    return timestep_embedding(g * GUIDANCE_FACTOR, GUIDANCE_DIM)


class GuidanceToyUNet(UNetModel):
    """The toy UNetModel with the CFG scale as an input: forward kwarg `guidance` (a tensor, one value per batch
    row, as ComfyUI hands Flux its guidance), embedded through the UNet's y path. Without one, DEFAULT_GUIDANCE."""

    def forward(
        self, x, timesteps=None, context=None, y=None, control=None, transformer_options=None, guidance=None, **kwargs
    ):
        if guidance is None:
            guidance = torch.full((1,), DEFAULT_GUIDANCE)
        y = guidance_embedding(guidance.to(x.device), x.shape[0]).to(x.dtype)
        return super().forward(
            x,
            timesteps,
            context=context,
            y=y,
            control=control,
            transformer_options={} if transformer_options is None else transformer_options,
            **kwargs,
        )


class GuidanceToyModel(comfy.model_base.BaseModel):
    """BaseModel of the student: the conditioning's "guidance" (FluxGuidance) reaches the UNet as a cond, as in
    comfy.model_base.Flux; DEFAULT_GUIDANCE where the conditioning has none."""

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        out["guidance"] = comfy.conds.CONDRegular(torch.FloatTensor([kwargs.get("guidance", DEFAULT_GUIDANCE)]))
        return out


def build_toy_model(dtype=torch.float32, device="cpu", student: bool = False):
    """ComfyUI BaseModel (eps, discrete SD-style schedule) around the toy UNetModel; student = the
    guidance-distilled variant (GuidanceToyModel around GuidanceToyUNet)."""
    if student:
        cfg = ToyConfig(dict(TOY_STUDENT_UNET, dtype=dtype))
        return GuidanceToyModel(
            cfg, model_type=comfy.model_base.ModelType.EPS, device=device, unet_model=GuidanceToyUNet
        )
    cfg = ToyConfig(dict(TOY_UNET, dtype=dtype))
    return comfy.model_base.BaseModel(cfg, model_type=comfy.model_base.ModelType.EPS, device=device)


def class_embedding_table(n_classes: int = 10):
    """Learned class embeddings (index n_classes = the null label, the "empty prompt")."""
    return torch.nn.Embedding(n_classes + 1, CONTEXT_DIM)


def load_toy(path: str):
    """(ModelPatcher, embedding table [11, 32], labels) from a toy model file (safetensors)."""
    with torch.inference_mode(False):
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("guidance_lab_toy", "{}"))
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        if "class_embedding.weight" not in state:
            raise GuidanceConfigError(f"{os.path.basename(path)} is not a Guidance Lab toy model file")
        variant = meta.get("variant")
        if variant not in (None, STUDENT_VARIANT):
            raise GuidanceConfigError(
                f"{os.path.basename(path)}: toy model variant {variant!r} unknown; accepted: "
                f"none (the toy model) or {STUDENT_VARIANT!r}"
            )
        model = build_toy_model(student=variant == STUDENT_VARIANT)
        unet_state = {k[len("diffusion_model.") :]: v for k, v in state.items() if k.startswith("diffusion_model.")}
        model.diffusion_model.load_state_dict(unet_state, strict=True)
    dev = comfy.model_management.get_torch_device()
    patcher = comfy.model_patcher.ModelPatcher(
        model, load_device=dev, offload_device=comfy.model_management.unet_offload_device()
    )
    return patcher, state["class_embedding.weight"], meta.get("labels", FASHION_LABELS)


class ToyModel:
    """What the loader hands on: the MODEL plus its labels and class embeddings."""

    def __init__(self, patcher, table, labels):
        self.patcher, self.table, self.labels = patcher, table, list(labels)

    def conditioning(self, label: str):
        idx = len(self.labels) if label == "empty" else self.labels.index(label)
        return [[self.table[idx].clone().view(1, 1, -1), {}]]


ToyType = io.Custom("GUIDANCE_TOY_WORLD")


class GuidanceLabToyModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabToyModelLoader",
            display_name="Load Toy Model (Guidance Lab)",
            category=CATEGORY,
            description="The project's Fashion-MNIST diffusion model (ComfyUI UNet, eps, 1x32x32): a MODEL for any "
            "sampler and a TOY WORLD for class prompts. Runs in seconds on a CPU.",
            inputs=[
                io.Combo.Input(
                    "toy_model",
                    options=folder_paths.get_filename_list(TOY_FOLDER) or ["(none)"],
                    tooltip="A toy model file shipped in the pack's toy_models folder.",
                )
            ],
            outputs=[io.Model.Output(display_name="model"), ToyType.Output(display_name="toy_world")],
        )

    @classmethod
    def fingerprint_inputs(cls, toy_model, **_):
        """A toy model file rewritten under a running server is loaded again (folders.file_fingerprint)."""
        return folders.file_fingerprint(TOY_FOLDER, toy_model)

    @classmethod
    def execute(cls, toy_model):
        path = folder_paths.get_full_path(TOY_FOLDER, toy_model)
        if path is None:
            raise GuidanceConfigError(f"toy model {toy_model!r} not found in {TOY_DIR}")
        patcher, table, labels = load_toy(path)
        return io.NodeOutput(patcher, ToyModel(patcher, table, labels))


class GuidanceLabToyClass(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabToyClass",
            display_name="Toy Class Prompt (Guidance Lab)",
            category=CATEGORY,
            description="CONDITIONING for one Fashion-MNIST class; 'empty' is the null label (the unconditional prompt).",
            inputs=[
                ToyType.Input("toy_world", tooltip="From Load Toy Model."),
                io.Combo.Input(
                    "label",
                    options=["empty", *FASHION_LABELS],
                    default="Trouser",
                    tooltip="The class to prompt; 'empty' = unconditional (null label).",
                ),
                io.Int.Input("batch", default=1, min=1, max=4096, tooltip="Batch size of the conditioning."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, toy_world, label, batch=1):
        if label != "empty" and label not in toy_world.labels:
            raise GuidanceConfigError(f"label {label!r} unknown; known: {', '.join(toy_world.labels)}, empty")
        c = toy_world.conditioning(label)
        return io.NodeOutput([[c[0][0].repeat(batch, 1, 1), {}]])


class GuidanceLabToyDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabToyDecode",
            display_name="Toy Decode (Guidance Lab)",
            category=CATEGORY,
            description="The toy latent is the image itself (1 channel in [-1, 1]): shown as RGB, upscaled.",
            inputs=[
                io.Latent.Input("samples", tooltip="Latent from a sampler running the toy model."),
                io.Int.Input("upscale", default=4, min=1, max=16, tooltip="Nearest-neighbour upscale factor."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, samples, upscale=4):
        x = samples["samples"][:, :1].float()
        img = ((x + 1) / 2).clamp(0, 1).repeat_interleave(upscale, -1).repeat_interleave(upscale, -2)
        return io.NodeOutput(img.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).contiguous())


TOY_NODES = [GuidanceLabToyModelLoader, GuidanceLabToyClass, GuidanceLabToyDecode]
