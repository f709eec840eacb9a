"""Zero-shot CLIP classifier of the denoised prediction, for classifier guidance without training.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", arXiv 2103.00020) embeds images (tower f) and texts (tower g) in one space. With
label texts l_1..l_K ("a red car", "a blue car") it is a zero-shot classifier:
    p(y | image) = softmax_y( tau * cos(f(image), g(l_y)) ),
tau = exp(logit_scale), the model's learned inverse temperature (100 for OpenAI's CLIP).

CLIP was trained on clean images, not on noisy latents, so it reads the sampler's denoised
prediction x0_hat = D(x, sigma), turned into an image (CLIP-guided diffusion: Crowson 2021,
"CLIP Guided Diffusion"; Nichol et al. 2021, GLIDE, arXiv 2112.10741, sec. 2.4; Liu et al. 2021,
"More Control for Free!", arXiv 2112.05744, who guide with CLIP on the x0 estimate):
    log p(y | x) ~= log p(y | image(x0_hat))
and classifier_guidance shifts D along its gradient (D' = D + s*sigma^2/alpha*g).

image(x0_hat), selectable:
  - LinearRGB: rgb = (W^T z + b + 1)/2 per latent pixel: the fast linear latent->RGB map that
    ComfyUI's latent formats carry for previews (latent_rgb_factors, a [C, 3] matrix W, and
    latent_rgb_factors_bias b), applied to the sampling-space latent as ComfyUI's previewer does.
    An image at latent resolution; cheap and approximate. Video latents [B, C, T, H, W] map frame by
    frame (W acts on the channel axis, as ComfyUI's previewer does on a frame) to [B, 3, T, H, W].
  - DecodedRGB: rgb = (Dec(z) + 1)/2 with a decode function supplied by the caller (a VAE
    decoder, which expects [-1, 1] output). Exact and costly: the gradient flows back through it.
Preprocessing follows the CLIP model's preprocess config: resize so that the image covers the
model's input size (shortest side, antialiased, the config's interpolation), center crop,
normalize (rgb - mean)/std. Optional random cutouts (Crowson's "MakeCutouts"): besides the whole
image, n random square crops of side in [cut_min*short side, short side], each resized to the
input size; the logits are averaged over the views,
    logits_y = (1/V) * sum_v tau * <f(view_v)/|f(view_v)|, t_y>,   t_y = g(l_y)/|g(l_y)|.
The crops are drawn from a generator seeded by (seed, sigma): the same at every evaluation of
one step (so the gradient is the gradient of one function), different from step to step.
Video (an image [B, 3, T, H, W]): every frame is a view of its item, the logits are averaged over
the frames as over the cutouts (the whole clip is steered toward the label, frame by frame),
    logits_y(video) = (1/T) * sum_t logits_y(frame_t).

Weights: an open_clip architecture name plus a local .safetensors file; nothing is downloaded.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import GuidanceConfigError
from ..files import check_safetensors

# Gradient paths (see classifier_guidance): what the classifier reads and how its gradient reaches x.
DETACHED, THROUGH_MODEL = "detached", "through_model"
GRADIENT_PATHS = (DETACHED, THROUGH_MODEL)
DECODES = ("linear", "vae")
CUTOUTS_MAX = 64
CUT_MIN = 0.5  # smallest cutout side, as a fraction of the image's short side
TAU_MAX = 1000.0
INTERPOLATIONS = ("bilinear", "bicubic")
NOT_INSTALLED = "open_clip is not installed: pip install open-clip-torch"
ERROR_CHARS = 300  # of an import error quoted in a message


def _open_clip():
    """The open_clip module, or a GuidanceConfigError saying why it cannot be used and what fixes it."""
    try:
        import open_clip
    except ModuleNotFoundError as e:
        if e.name == "open_clip":
            raise GuidanceConfigError(NOT_INSTALLED) from None
        raise GuidanceConfigError(
            f"open_clip cannot be imported, it needs {e.name!r} ({e}): "
            "pip install open-clip-torch installs its dependencies"
        ) from None
    except Exception as e:  # a broken install raises anything at import (e.g. a torchvision built for another torch)
        raise GuidanceConfigError(
            f"open_clip is installed but fails to import ({type(e).__name__}: "
            f"{str(e)[:ERROR_CHARS]}): reinstall open-clip-torch (and a torchvision built for "
            "the installed torch)"
        ) from None
    return open_clip


def offline_architectures() -> list[str]:
    """open_clip architectures that build with no download: their tokenizer ships with open_clip
    (configs that name a Hugging Face tokenizer or text model would fetch it at run time)."""
    open_clip = _open_clip()
    from open_clip.factory import get_model_config

    out = []
    for name in open_clip.list_models():
        cfg = get_model_config(name) or {}
        text = cfg.get("text_cfg", {})
        if text.get("hf_tokenizer_name") or text.get("hf_model_name") or "siglip" in name.lower():
            continue
        out.append(name)
    return out


def availability() -> tuple[list[str], str | None]:
    """(offline_architectures(), None) when open_clip can be used, else ([], why not: a sentence naming the
    fix). Never raises, so that a missing or broken open_clip only disables CLIP guidance."""
    try:
        archs = offline_architectures()
        version = getattr(_open_clip(), "__version__", "(unknown version)")
    except GuidanceConfigError as e:
        return [], str(e)
    except Exception as e:  # open_clip imports but its model registry fails (a version this code does not know)
        return [], (
            f"open_clip fails to list its architectures ({type(e).__name__}: {str(e)[:ERROR_CHARS]}): "
            "reinstall open-clip-torch"
        )
    if not archs:
        return [], f"open_clip {version} lists no architecture that builds offline: reinstall open-clip-torch"
    return archs, None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_labels(text: str) -> list[str]:
    """One label per line; blank lines are skipped. Labels must be distinct (case-insensitive) and
    must not contain ',' or ';' or end in ':<number>' (the target syntax of the guidance nodes)."""
    labels = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if len(labels) < 1:
        raise GuidanceConfigError("labels is empty; type one label per line, e.g. 'a red car' and 'a blue car'")
    seen = {}
    for lb in labels:
        if "," in lb or ";" in lb:
            raise GuidanceConfigError(
                f"label {lb!r} contains ',' or ';', which separate targets; write it without them"
            )
        if ":" in lb and _is_number(lb.rsplit(":", 1)[1]):
            raise GuidanceConfigError(
                f"label {lb!r} ends in ':<number>', which the target syntax reads as a weight; reword it"
            )
        key = lb.lower()
        if key in seen:
            raise GuidanceConfigError(f"label {lb!r} is given twice (as {seen[key]!r}); labels must be distinct")
        seen[key] = lb
    return labels


def load_clip(architecture: str, path: str) -> nn.Module:
    """An open_clip model of `architecture` with the weights of the local safetensors file `path`.

    open_clip.create_model(architecture, pretrained=None) builds it (no download; pretrained tower
    weights off), then the file's state dict is loaded strictly after open_clip's usual key fixes
    ('module.' prefix, logit_scale shape, old text-tower layout, position-embedding resize).
    Weights are normal tensors (built with inference mode off), eval mode, no grad, fp32, CPU."""
    open_clip = _open_clip()
    if architecture not in open_clip.list_models():
        raise GuidanceConfigError(
            f"architecture={architecture!r} is not an open_clip model; known: {', '.join(offline_architectures())}"
        )
    if not path.lower().endswith(".safetensors"):
        raise GuidanceConfigError(
            f"{os.path.basename(path)}: only .safetensors CLIP checkpoints are accepted (pickled "
            ".pt/.bin/.ckpt files can run code when loaded); convert it to .safetensors"
        )
    check_safetensors(path, what="CLIP checkpoint", error=GuidanceConfigError)
    from safetensors.torch import load_file
    from open_clip.factory import resize_pos_embed, resize_text_pos_embed
    from open_clip.model import convert_to_custom_text_state_dict

    with torch.inference_mode(False):
        model = open_clip.create_model(architecture, pretrained=None, pretrained_image=False, pretrained_text=False)
        try:
            state = load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise GuidanceConfigError(f"{os.path.basename(path)} cannot be read as safetensors: {e}") from None
        if state and next(iter(state)).startswith("module."):
            state = {k[7:]: v for k, v in state.items()}
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = convert_to_custom_text_state_dict(state)
        if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
            state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
        try:
            resize_pos_embed(state, model)
            resize_text_pos_embed(state, model)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError, ValueError, AssertionError) as e:  # open_clip's resizes assert
            raise GuidanceConfigError(
                f"{os.path.basename(path)} does not hold weights of open_clip architecture "
                f"{architecture!r}: {str(e)[:600]}"
            ) from None
    return model.float().eval().requires_grad_(False)


def preprocess_settings(model: nn.Module) -> dict:
    """Input size (h, w), mean, std and interpolation from open_clip's preprocess config of the model
    (model.visual.preprocess_cfg), else OpenAI's mean/std at the image tower's size."""
    open_clip = _open_clip()
    visual = model.visual
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    interp = cfg.get("interpolation", "bicubic")
    return {
        "size": size,
        "mean": tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        "std": tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        "interpolation": interp if interp in INTERPOLATIONS else "bilinear",
    }


def encode_labels(model: nn.Module, tokenizer: Callable, labels: Sequence[str]) -> torch.Tensor:
    """t_y = g(l_y)/|g(l_y)|: [K, E] unit text embeddings, computed once."""
    with torch.inference_mode(False), torch.no_grad():
        feats = model.encode_text(tokenizer(list(labels)))
    return F.normalize(feats.float(), dim=-1)


def cutout_boxes(h: int, w: int, n: int, seed: int, sigma: float, cut_min: float = CUT_MIN) -> list:
    """n random square crops (top, left, side) of an h x w image, side in [cut_min*s, s], s = min(h, w).
    Seeded by (seed, sigma): the same boxes for every evaluation at one noise level."""
    if n <= 0:
        return []
    key = (int(seed) * 1_000_003 + int(round(float(sigma) * 1e6))) % (2**63)
    g = torch.Generator(device="cpu").manual_seed(key)
    short = min(h, w)
    lo = max(1, int(math.ceil(cut_min * short)))
    boxes = []
    for _ in range(n):
        side = int(torch.randint(lo, short + 1, (1,), generator=g))
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        boxes.append((top, left, side))
    return boxes


def resize_cover(img: torch.Tensor, size: tuple, mode: str) -> torch.Tensor:
    """open_clip's 'shortest' resize + center crop, differentiable: scale so that the image covers
    size = (h, w) (antialiased when shrinking), then crop the center."""
    h, w = img.shape[-2:]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        img = F.interpolate(img, size=(nh, nw), mode=mode, align_corners=False, antialias=True)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return img[..., top : top + th, left : left + tw]


class ZeroShotCLIP(nn.Module):
    """logits[b, y] = (1/V) sum_v tau * cos(f(view_v(image_b)), g(l_y)) for RGB images in [0, 1].

    Holds only the image tower; the label embeddings are computed once (encode_labels) and kept as
    a buffer, so the text tower is not kept in memory."""

    def __init__(
        self,
        visual: nn.Module,
        text_features: torch.Tensor,
        tau: float,
        size: tuple,
        mean,
        std,
        interpolation: str = "bicubic",
        cutouts: int = 0,
        seed: int = 0,
        cut_min: float = CUT_MIN,
    ):
        super().__init__()
        if int(cutouts) != cutouts or not 0 <= cutouts <= CUTOUTS_MAX:
            raise GuidanceConfigError(
                f"cutouts={cutouts}; use an integer in 0..{CUTOUTS_MAX} (0 = the whole image only)"
            )
        if not (0 < float(tau) <= TAU_MAX) or not math.isfinite(float(tau)):
            raise GuidanceConfigError(f"tau={tau}; use a number in (0, {TAU_MAX}] (0 in the node = the model's own)")
        if interpolation not in INTERPOLATIONS:
            raise GuidanceConfigError(f"interpolation={interpolation!r}; accepted: {', '.join(INTERPOLATIONS)}")
        self.visual = visual
        self.register_buffer("text_features", text_features.detach().clone())
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.size, self.interpolation = tuple(size), interpolation
        self.cutouts, self.seed, self.cut_min = int(cutouts), int(seed), float(cut_min)

    @property
    def num_classes(self) -> int:
        return int(self.text_features.shape[0])

    def views(self, rgb: torch.Tensor, sigma=None) -> torch.Tensor:
        """[V*B, 3, h, w]: the whole image, then the cutouts (view-major), normalized."""
        out = [resize_cover(rgb, self.size, self.interpolation)]
        s = 0.0 if sigma is None else float(torch.as_tensor(sigma).reshape(-1)[0])
        for top, left, side in cutout_boxes(rgb.shape[-2], rgb.shape[-1], self.cutouts, self.seed, s, self.cut_min):
            crop = rgb[..., top : top + side, left : left + side]
            out.append(
                F.interpolate(crop, size=self.size, mode=self.interpolation, align_corners=False, antialias=True)
            )
        v = torch.cat(out, 0)
        return (v - self.mean.to(v)) / self.std.to(v)

    def forward(self, rgb: torch.Tensor, sigma=None) -> torch.Tensor:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise GuidanceConfigError(f"CLIP reads RGB images [B, 3, H, W]; got shape {tuple(rgb.shape)}")
        b = rgb.shape[0]
        views = self.views(rgb, sigma)
        if not torch.is_autocast_enabled(views.device.type):
            views = views.to(self.text_features.dtype)
        out = self.visual(views)
        if isinstance(out, (tuple, list)):  # towers that also return tokens (CoCa): the pooled embedding
            out = out[0]
        feats = F.normalize(out.to(self.text_features.dtype), dim=-1)
        logits = self.tau * feats @ self.text_features.t()
        return logits.view(-1, b, self.num_classes).mean(0)


def build_zero_shot(
    model: nn.Module, tokenizer: Callable, labels: Sequence[str], tau: float = 0.0, cutouts: int = 0, seed: int = 0
) -> ZeroShotCLIP:
    """ZeroShotCLIP from a loaded open_clip model: label embeddings computed now; tau = exp(logit_scale)
    of the model unless tau > 0 is given."""
    feats = encode_labels(model, tokenizer, labels)
    if tau is None or float(tau) == 0:
        tau = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
    p = preprocess_settings(model)
    with torch.inference_mode(False):  # buffers as normal tensors, also when a node builds this
        return ZeroShotCLIP(model.visual, feats, tau, p["size"], p["mean"], p["std"], p["interpolation"], cutouts, seed)


def load_zero_shot(
    architecture: str, path: str, labels: Sequence[str], tau: float = 0.0, cutouts: int = 0, seed: int = 0
) -> ZeroShotCLIP:
    """load_clip + the tokenizer that ships with open_clip + build_zero_shot."""
    model = load_clip(architecture, path)
    tokenizer = _open_clip().get_tokenizer(architecture)
    return build_zero_shot(model, tokenizer, labels, tau, cutouts, seed)


class LinearRGB:
    """rgb = (z^T W + b + 1)/2 per latent pixel: ComfyUI's latent-preview map (latent_rgb_factors W
    [C, 3], latent_rgb_factors_bias b [3]) on the sampling-space latent, mapped from [-1, 1] to [0, 1].
    `reshape` is the latent format's latent_rgb_factors_reshape (packed latents), if any."""

    def __init__(self, factors, bias=None, reshape: Callable | None = None):
        with torch.inference_mode(False):  # normal tensors: autograd saves them for backward
            self.factors = torch.as_tensor(factors, dtype=torch.float32).detach().clone()
            self.bias = None if bias is None else torch.as_tensor(bias, dtype=torch.float32).reshape(3).clone()
        if self.factors.ndim != 2 or self.factors.shape[1] != 3:
            raise GuidanceConfigError(f"latent_rgb_factors must be [channels, 3]; got {tuple(self.factors.shape)}")
        self.reshape = reshape

    @property
    def channels(self) -> int:
        return int(self.factors.shape[0])

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, 3, H, W]; video [B, C, T, H, W] -> [B, 3, T, H, W] (each frame mapped alike)."""
        if self.reshape is not None:
            z = self.reshape(z)
        if z.ndim not in (4, 5) or z.shape[1] != self.channels:
            raise GuidanceConfigError(
                f"the linear latent->RGB map reads [B, {self.channels}, H, W] latents (video: "
                f"[B, {self.channels}, T, H, W]); got {tuple(z.shape)}"
            )
        rgb = torch.einsum("bc...,ck->bk...", z, self.factors.to(z))
        if self.bias is not None:
            rgb = rgb + self.bias.to(z).view(1, 3, *([1] * (z.ndim - 2)))
        return (rgb + 1.0) / 2.0


class DecodedRGB:
    """rgb = (decode(z) + 1)/2 for a decoder with [-1, 1] output (a VAE: exact, costly)."""

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor]):
        self.decode = decode

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return (self.decode(z) + 1.0) / 2.0


class LatentCLIPClassifier:
    """(x0_hat, sigma) -> logits: the zero-shot CLIP classifier of image(x0_hat).

    `wants` tells classifier_guidance what to feed it: the denoised prediction, with the gradient
    taken with respect to it (DENOISED_DETACHED) or through the diffusion model
    (DENOISED_THROUGH_MODEL)."""

    def __init__(self, clip: ZeroShotCLIP, to_rgb: Callable, wants: str):
        self.clip, self.to_rgb, self.wants = clip, to_rgb, wants

    def __call__(self, x0_hat: torch.Tensor, sigma=None) -> torch.Tensor:
        """logits [B, K] of image(x0_hat); a video image [B, 3, T, H, W] is classified frame by frame and its
        logits averaged over the frames: logits(video) = (1/T) * sum_t logits(frame_t) (module docstring)."""
        rgb = self.to_rgb(x0_hat)
        if rgb.ndim != 5:
            return self.clip(rgb, sigma)
        b, c, t = rgb.shape[:3]
        frames = rgb.movedim(2, 1).reshape(b * t, c, *rgb.shape[3:])  # item-major: frames of item 0, then 1, ...
        if sigma is not None and torch.as_tensor(sigma).numel() == b:
            sigma = torch.as_tensor(sigma).reshape(b, 1).expand(b, t).reshape(-1)
        return self.clip(frames, sigma).view(b, t, -1).mean(1)
