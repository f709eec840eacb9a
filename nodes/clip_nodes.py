"""Zero-shot CLIP classifier (open_clip) as a GUIDANCE_CLASSIFIER: loader node and its ComfyUI wiring.

The classifier plugs into the same Classifier Guidance patch / SAMPLER wrapper as noise-aware
classifiers (nodes/classifier_nodes.py); the math is in guidance_core.classifiers.clip and
guidance_core.classifier_guidance.
"""

from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.model_patcher
import folder_paths
from comfy_api.latest import io

from ..guidance_core import classifier_guidance
from ..guidance_core.classifiers import clip as clip_core
from ..guidance_core.errors import GuidanceConfigError
from . import folders
from . import socket_types

CATEGORY = "Guidance Lab/classifier"
FOLDER = "guidance_clip"
EXTENSIONS = {".safetensors"}
NO_FILES = "(no files: put an open_clip .safetensors in models/guidance_clip)"
ONLY_CLIP = "only CLIP guidance needs open_clip; every other Guidance Lab node works without it"
WANTS = {
    clip_core.DETACHED: classifier_guidance.DENOISED_DETACHED,
    clip_core.THROUGH_MODEL: classifier_guidance.DENOISED_THROUGH_MODEL,
}


folders.register_model_folder(FOLDER, EXTENSIONS)
_warned = set()  # open_clip problems already logged (the schema is rebuilt for every /object_info)


def warn_once(problem: str) -> None:
    """Log why open_clip cannot be used, once per distinct problem (ComfyUI's console at start-up)."""
    if problem not in _warned:
        _warned.add(problem)
        logging.warning("Guidance Lab: Load CLIP Classifier cannot run: %s (%s)", problem, ONLY_CLIP)


def checkpoint_files() -> list[str]:
    return folders.filename_list(FOLDER, EXTENSIONS)


def checkpoint_path(name: str) -> str:
    """Full path of a file in the folder; errors name the folder's paths."""
    where = ", ".join(folder_paths.get_folder_paths(FOLDER))
    if not name or name == NO_FILES or not checkpoint_files():
        raise GuidanceConfigError(
            f"no CLIP checkpoint: the folder {FOLDER} ({where}) has no .safetensors files. Put an "
            "open_clip checkpoint (both towers, e.g. open_clip_model.safetensors) there; nothing "
            "is downloaded"
        )
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise GuidanceConfigError(
            f"checkpoint={name!r} is not in the folder {FOLDER} ({where}); files there: {', '.join(checkpoint_files())}"
        )
    return path


class LoadedCLIPClassifier:
    """GUIDANCE_CLASSIFIER for a zero-shot CLIP classifier of the denoised prediction (same interface
    as classifier_nodes.LoadedClassifier: labels, name, wants, bind, model_patchers)."""

    def __init__(
        self,
        clip: clip_core.ZeroShotCLIP,
        labels: list,
        name: str,
        decode: str,
        vae=None,
        gradient: str = clip_core.DETACHED,
    ):
        self.check_settings(decode, gradient, vae)
        self.clip, self.labels, self.name, self.decode, self.vae = clip, list(labels), name, decode, vae
        self.wants = WANTS[gradient]
        self.meta = {"labels": self.labels, "kind": "clip", "decode": decode, "gradient": gradient}
        self.patcher = comfy.model_patcher.ModelPatcher(
            clip,
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )

    @staticmethod
    def check_settings(decode: str, gradient: str, vae) -> None:
        """The one check of the loader's settings: the node runs it before loading any weights."""
        if decode not in clip_core.DECODES:
            raise GuidanceConfigError(f"decode={decode!r}; accepted: {', '.join(clip_core.DECODES)}")
        if gradient not in WANTS:
            raise GuidanceConfigError(f"gradient={gradient!r}; accepted: {', '.join(WANTS)}")
        if decode == "vae" and vae is None:
            raise GuidanceConfigError("decode='vae' needs a VAE: connect the vae input (or use decode='linear')")

    def __deepcopy__(self, memo):
        return self

    def model_patchers(self) -> list:
        return [self.patcher] + ([self.vae.patcher] if self.decode == "vae" else [])

    def to_rgb(self, latent_format):
        """image(x0_hat) for this model's latent format: the linear preview map or the VAE. Video latent formats
        (latent_dimensions 3: [B, C, T, H, W]) with decode='linear': the map per frame, CLIP on every frame
        (guidance_core.classifiers.clip.LatentCLIPClassifier averages the frames' logits)."""
        fmt_name = type(latent_format).__name__
        dims = int(getattr(latent_format, "latent_dimensions", 2))
        if dims not in (2, 3):
            raise GuidanceConfigError(
                f"CLIP guidance reads images; the model's latent format {fmt_name} has "
                f"{dims}-D latents (audio), accepted: image (2-D) and video (3-D) latents"
            )
        if dims == 3 and self.decode != "linear":
            raise GuidanceConfigError(
                f"decode={self.decode!r} on the model's video latent format {fmt_name} "
                "([B, C, T, H, W]) is not supported; use decode='linear' (the latent format's "
                "latent->RGB map, frame by frame)"
            )
        if self.decode == "linear":
            if latent_format.latent_rgb_factors is None:
                raise GuidanceConfigError(
                    f"decode='linear': the model's latent format {fmt_name} has no "
                    "latent_rgb_factors; use decode='vae' with the model's VAE"
                )
            # packed latents (latent_rgb_factors_reshape): ComfyUI 0.3.52's LatentFormat has no such attribute
            reshape = getattr(latent_format, "latent_rgb_factors_reshape", None)
            rgb = clip_core.LinearRGB(latent_format.latent_rgb_factors, latent_format.latent_rgb_factors_bias, reshape)
            if reshape is None and rgb.channels != int(latent_format.latent_channels):
                raise GuidanceConfigError(
                    f"latent format {fmt_name}: {rgb.channels} rows of latent_rgb_factors for "
                    f"{latent_format.latent_channels} latent channels"
                )
            return rgb
        want, have = int(self.vae.latent_channels), int(latent_format.latent_channels)
        if want != have:
            raise GuidanceConfigError(
                f"the VAE reads {want} latent channels, the model produces {have}; connect the VAE of this model"
            )
        return clip_core.DecodedRGB(lambda d: self.vae_decode(latent_format, d))

    def vae_decode(self, latent_format, d: torch.Tensor) -> torch.Tensor:
        """Dec(process_out(D)) in [-1, 1], differentiable. Sampling-space latents are process_in-ed
        (e.g. x0.18215 for SD1.5); the VAE reads them after process_out, as VAEDecode does after
        sampling. ComfyUI's VAE weights are inference tensors: swapped for copies during the decode
        (not ComfyUI's vae.decode, which clamps to [0, 1] and would cut the gradient)."""
        vae = self.vae
        comfy.model_management.load_models_gpu([vae.patcher])  # as VAE.decode does; a no-op when loaded
        z = latent_format.process_out(d).to(device=vae.device, dtype=vae.vae_dtype)
        with classifier_guidance.autograd_safe_weights(vae.first_stage_model):
            out = vae.first_stage_model.decode(z)
        return out.to(device=d.device, dtype=d.dtype)

    def bind(self, model_patcher):
        """classify(x0_hat, sigma) -> logits for this model; validates the decode against its latent format."""
        core = clip_core.LatentCLIPClassifier(
            self.clip, self.to_rgb(model_patcher.get_model_object("latent_format")), self.wants
        )

        def classify(x0_hat, sigma):
            classifier_guidance.make_autograd_safe(self.clip, x0_hat.device)
            return core(x0_hat, sigma)

        return classify


class GuidanceLabCLIPClassifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        archs, problem = clip_core.availability()
        unavailable = ""
        if problem is not None:  # the node stays (workflows keep it) and says why it cannot run
            warn_once(problem)
            archs, unavailable = [f"({problem})"], f"UNAVAILABLE: {problem}; {ONLY_CLIP}. "
        files = checkpoint_files() or [NO_FILES]
        return io.Schema(
            node_id="GuidanceLabCLIPClassifierLoader",
            display_name="Load CLIP Classifier (Guidance Lab)",
            category=CATEGORY,
            description=unavailable
            + (
                "Zero-shot classifier from a CLIP model and labels typed as text: p(y|x) = softmax(tau * "
                "cos(CLIP_image(image(x0_hat)), CLIP_text(label_y))) on the denoised prediction x0_hat. "
                "Connect it to Classifier Guidance / Classifier Guidance Sampler; no training needed. Weights: "
                "an open_clip .safetensors from models/guidance_clip (nothing is downloaded)."
            ),
            inputs=[
                io.Combo.Input(
                    "architecture",
                    options=archs,
                    default="ViT-B-32" if "ViT-B-32" in archs else archs[0],
                    tooltip="open_clip architecture of the checkpoint (e.g. ViT-B-32, ViT-L-14); must match "
                    "the file. OpenAI's original CLIP weights need the -quickgelu variant.",
                ),
                io.Combo.Input(
                    "checkpoint",
                    options=files,
                    tooltip="An open_clip checkpoint (.safetensors, image and text towers) in models/guidance_clip.",
                ),
                io.String.Input(
                    "labels",
                    default="a photo of a cat\na photo of a dog",
                    multiline=True,
                    tooltip="One label per line (free text, e.g. 'a red car'). The target of the guidance "
                    "node names one of these lines.",
                ),
                io.Combo.Input(
                    "decode",
                    options=list(clip_core.DECODES),
                    default="linear",
                    tooltip="How CLIP sees the latent: 'linear' = the latent format's fast linear "
                    "latent->RGB preview map (cheap, approximate); 'vae' = the VAE decoder (exact, "
                    "costly; needs the vae input).",
                ),
                io.Combo.Input(
                    "gradient",
                    options=list(clip_core.GRADIENT_PATHS),
                    default=clip_core.DETACHED,
                    tooltip="'detached' = the gradient with respect to the denoised prediction is used as "
                    "the gradient with respect to x (cheap); 'through_model' = backpropagate "
                    "through the diffusion model (exact for plain CFG; about 3x a model call "
                    "per guided step, plus a copy of the model's weights in memory).",
                ),
                io.Int.Input(
                    "cutouts",
                    default=0,
                    min=0,
                    max=clip_core.CUTOUTS_MAX,
                    tooltip="Random crops (besides the whole image) whose CLIP logits are averaged; "
                    "new crops each step. 0 = whole image only.",
                ),
                io.Float.Input(
                    "tau",
                    default=0.0,
                    min=0.0,
                    max=clip_core.TAU_MAX,
                    step=0.5,
                    tooltip="Inverse temperature tau multiplying the cosine similarity; larger = "
                    "sharper p(y|x). 0 = the model's own exp(logit_scale) (100 for OpenAI CLIP).",
                ),
                io.Vae.Input(
                    "vae", optional=True, tooltip="The model's VAE, needed for decode='vae' (unused with 'linear')."
                ),
            ],
            outputs=[socket_types.Classifier.Output(display_name="classifier")],
        )

    @classmethod
    def fingerprint_inputs(cls, checkpoint, **_):
        """A CLIP checkpoint replaced, rewritten or deleted under a running server is read (and checked) again
        (folders.file_fingerprint)."""
        return folders.file_fingerprint(FOLDER, checkpoint)

    @classmethod
    def execute(cls, architecture, checkpoint, labels, decode, gradient, cutouts, tau, vae=None):
        problem = clip_core.availability()[1]
        if problem is not None:
            raise GuidanceConfigError(f"Load CLIP Classifier cannot run: {problem} ({ONLY_CLIP})")
        names = clip_core.parse_labels(labels)
        LoadedCLIPClassifier.check_settings(decode, gradient, vae)
        clip = clip_core.load_zero_shot(architecture, checkpoint_path(checkpoint), names, tau=tau, cutouts=cutouts)
        return io.NodeOutput(LoadedCLIPClassifier(clip, names, checkpoint, decode, vae, gradient))


CLIP_NODES = [GuidanceLabCLIPClassifierLoader]
