"""Demo world for Guidance Lab (not shipped): an exact Gaussian-mixture "shapes" model.

Data: a mixture of K isotropic Gaussians in a 3x32x32 RGB latent, p(x0) = sum_k pi_k N(mu_k, tau^2 I),
whose means mu_k are pictures of shapes. Its exact denoiser is known in closed form
(x = x0 + sigma*eps, alpha = 1, eps-prediction on ComfyUI's discrete SD schedule):
    r_k(x)   = softmax_k( log pi_k - ||x - mu_k||^2 / (2 (tau^2 + sigma^2)) )
    E[x0|x]  = sum_k r_k(x) (mu_k + tau^2/(tau^2 + sigma^2) (x - mu_k))
The prompt is a weight vector over the classes (the conditioning tensor); the empty prompt
(all zeros) is the unconditional mixture. A real ComfyUI MODEL, so every sampler and every
Guidance Lab node runs on it unchanged, on a CPU, in milliseconds.
"""

from __future__ import annotations

import math

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
from comfy_api.latest import ComfyExtension, io

CLASSES = ("circle", "square", "triangle", "cross")
COLORS = ((0.9, 0.2, 0.2), (0.2, 0.8, 0.3), (0.25, 0.4, 0.95), (0.95, 0.85, 0.2))
SIZE, TAU = 32, 0.15


def shape_means(size: int = SIZE) -> torch.Tensor:
    """K x 3 x size x size pictures in [-1, 1]: one colored shape on a dark background."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    masks = [
        (xx**2 + yy**2 < 0.55**2),
        (xx.abs() < 0.5) & (yy.abs() < 0.5),
        (yy < 0.55) & (yy > -0.6 + 2.0 * xx.abs() * 1.0),
        ((xx.abs() < 0.17) | (yy.abs() < 0.17)) & (xx.abs() < 0.65) & (yy.abs() < 0.65),
    ]
    out = torch.full((len(CLASSES), 3, size, size), -0.7)
    for k, (m, col) in enumerate(zip(masks, COLORS)):
        for c in range(3):
            out[k, c][m] = col[c] * 2 - 1
    return out


# guidance_core is importable here: the server runs with the repository root on PYTHONPATH (devkit.python_env),
# and in-process hosts run from the repository root.
from guidance_core.reference.gmm import GaussianMixture  # noqa: E402


class GMMDenoiser(torch.nn.Module):
    """Exact prediction (eps, v, EDM, flow velocity, x0: whatever the model's model_sampling expects) of a
    Gaussian mixture, as ComfyUI's diffusion model.

    The conditioning tensor's first token holds class weights: a non-zero vector restricts the
    mixture's prior to those classes (a class prompt), all zeros is the unconditional mixture."""

    def __init__(
        self,
        means=None,
        tau: float = TAU,
        priors=None,
        parameterization: str = "eps",
        image_size: int = SIZE,
        device=None,
        operations=None,
        dtype=None,
        **kw,
    ):
        super().__init__()
        means = shape_means(image_size) if means is None else torch.as_tensor(means, dtype=torch.float32)
        self.gmm = GaussianMixture(means, tau, None if priors is None else torch.as_tensor(priors))
        self.parameterization = parameterization
        self.dtype = torch.float32
        self.owner = ()  # (the BaseModel,), set by gmm_model: its model_sampling is read at call time

    def forward(self, x, timesteps=None, context=None, transformer_options={}, **kwargs):
        rows = x.shape[0]
        sig = transformer_options["sigmas"].reshape(-1).to(x)
        sig = sig.repeat(math.ceil(rows / sig.shape[0]))[:rows]
        s = sig.view(rows, *([1] * (x.ndim - 1)))
        k = self.gmm.means.shape[0]
        alpha = 1.0 - s if self.parameterization == "flow" else torch.ones_like(s)
        ms = self.owner[0].model_sampling  # the model's own, patched or not
        xr = x / ms.calculate_input(sig, torch.ones_like(x))  # undo its input scaling (linear in x)
        w = context[:, 0, :k].clamp(min=0).to(x) if context is not None else torch.zeros(rows, k).to(x)
        total = w.sum(1, keepdim=True)
        prior = torch.where(total > 0, w / total.clamp(min=1e-12), self.gmm.priors.to(x)[None].expand(rows, -1))
        denoised = self.gmm.denoise(xr, sig, alpha.reshape(-1), prior)
        # the output whose calculate_denoised is `denoised` (calculate_denoised is affine in the output): the eps,
        # v, EDM, flow-velocity or x0 prediction, whatever the model type
        d0 = ms.calculate_denoised(sig, torch.zeros_like(x), xr)
        return (denoised - d0) / (ms.calculate_denoised(sig, torch.ones_like(x), xr) - d0)


def gmm_model(
    means=None,
    tau: float = TAU,
    priors=None,
    parameterization: str = "eps",
    sampling_settings=None,
    model_type: str | None = None,
):
    """A real ComfyUI MODEL (BaseModel + ModelPatcher) whose diffusion model is the exact GMM denoiser.
    sampling_settings: ComfyUI's schedule settings (default: SD's scaled-linear betas; shift 1 for flow).
    model_type: a name of comfy.model_base.ModelType (e.g. "EDM" with sampling_settings {"sigma_data": 0.5, ...}
    as Playground v2.5, "FLOW_COSMOS", "IMG_TO_IMG"); default: EPS / V_PREDICTION / FLOW by parameterization
    (which also gives alpha: 1 - sigma for "flow", else 1)."""
    channels = 3 if means is None else int(torch.as_tensor(means).shape[1])
    size = SIZE if means is None else int(torch.as_tensor(means).shape[-1])

    if sampling_settings is None:
        sampling_settings = {"shift": 1.0, "multiplier": 1000} if parameterization == "flow" else {}
    settings = sampling_settings

    class Latent(comfy.latent_formats.LatentFormat):
        latent_channels = channels

    class Config(comfy.supported_models_base.BASE):
        unet_config = {}
        unet_extra_config = {}
        latent_format = Latent
        sampling_settings = settings

    cfg = Config(
        {"means": means, "tau": tau, "priors": priors, "parameterization": parameterization, "image_size": size}
    )
    if model_type is None:
        model_type = {"eps": "EPS", "v": "V_PREDICTION", "flow": "FLOW"}[parameterization]
    model = comfy.model_base.BaseModel(
        cfg, model_type=comfy.model_base.ModelType[model_type], device="cpu", unet_model=GMMDenoiser
    )
    model.diffusion_model.owner = (model,)
    dev = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=dev, offload_device=torch.device("cpu"))


def shapes_model():
    return gmm_model()


def class_conditioning(weights) -> list:
    return [[torch.tensor(weights, dtype=torch.float32).view(1, 1, -1), {}]]


class GuidanceLabDemoShapesModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabDemoShapesModel",
            display_name="Demo Shapes Model (exact GMM)",
            category="Guidance Lab/demo",
            description="Exact denoiser of a 4-class Gaussian mixture of shape pictures (3x32x32 latent).",
            inputs=[],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls):
        return io.NodeOutput(shapes_model())


class GuidanceLabDemoClass(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabDemoClass",
            display_name="Demo Class Prompt",
            category="Guidance Lab/demo",
            description="Conditioning for one shape class; 'empty' = none.",
            inputs=[
                io.Combo.Input(
                    "label",
                    options=["empty", *CLASSES],
                    default="circle",
                    tooltip="Shape class; 'empty' is the unconditional prompt.",
                ),
                io.Int.Input(
                    "batch", default=1, min=1, max=64, optional=True, tooltip="Batch size of the conditioning tensor."
                ),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, label, batch=1):
        cond = class_conditioning([1.0 if c == label else 0.0 for c in CLASSES])
        return io.NodeOutput([[cond[0][0].repeat(batch, 1, 1), {}]])


class GuidanceLabDemoToImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabDemoToImage",
            display_name="Demo Latent to Image",
            category="Guidance Lab/demo",
            description="The shapes latent is RGB in [-1, 1]: shown x4.",
            inputs=[io.Latent.Input("samples", tooltip="Latent from the shapes model.")],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, samples):
        x = samples["samples"][:, :3].float()
        img = ((x + 1) / 2).clamp(0, 1).repeat_interleave(4, -1).repeat_interleave(4, -2)
        return io.NodeOutput(img.permute(0, 2, 3, 1).contiguous())


class DemoExtension(ComfyExtension):
    async def get_node_list(self):
        return [GuidanceLabDemoShapesModel, GuidanceLabDemoClass, GuidanceLabDemoToImage]


async def comfy_entrypoint():
    return DemoExtension()
