"""Classifier guidance nodes: loader, MODEL patch (post-CFG) and SAMPLER wrapper."""
from __future__ import annotations

import math
import os

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import folder_paths
from comfy_api.latest import io

from ..guidance_core import classifier_guidance as G
from ..guidance_core import io as gio
from ..guidance_core import schedules as S
from ..guidance_core.errors import GuidanceConfigError
from . import glue
from . import types as T

CATEGORY = "Guidance Lab/classifier"
FOLDER = "classifiers"
KEY = "guidance_lab_classifier"
# .pt/.pth/.ckpt are listed so that choosing one gives a clear "refused: pickle" message.
EXTENSIONS = {".safetensors", ".pt", ".pth", ".ckpt"}


def register_folder():
    """models/classifiers (plus any extra_model_paths entry), with explicit extensions."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))[0]
    if default not in paths:
        paths = [default, *paths]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))


register_folder()


class LoadedClassifier:
    """A classifier module with its metadata, managed by ComfyUI's model management."""

    def __init__(self, module: torch.nn.Module, meta: dict, name: str = ""):
        self.module, self.meta, self.name = module, meta, name
        self.labels = [str(lb) for lb in meta["labels"]]
        self.patcher = comfy.model_patcher.ModelPatcher(
            module, load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device())

    def __deepcopy__(self, memo):
        return self

    def check_model(self, model_patcher):
        """Validate before sampling: latent channels and sampling family must match."""
        fmt = model_patcher.get_model_object("latent_format")
        want, have = int(self.meta["latent_channels"]), int(fmt.latent_channels)
        if want != have:
            raise GuidanceConfigError(f"classifier {self.name!r} expects {want} latent channels, the model "
                                      f"produces {have}; use a classifier trained on this model family")
        trained = self.meta.get("parameterization", "eps")
        model_param = glue.parameterization_of(glue.model_sampling_of(model_patcher))
        if (trained == "flow") != (model_param == "flow"):
            raise GuidanceConfigError(f"classifier {self.name!r} was trained for {trained} models, the model is "
                                      f"{model_param}: their noisy inputs differ (alpha = 1 vs 1 - sigma)")


class ClassifierHook:
    """Post-CFG hook: D' = D + s*(sigma^2/alpha)*grad log p(y|x, sigma). Used by the MODEL patch and
    by the SAMPLER wrapper (one code path)."""

    def __init__(self, loaded: LoadedClassifier, weights: torch.Tensor, config: G.ClassifierGuidanceConfig):
        self.loaded = loaded
        self.guidance = G.ClassifierGuidance(self.classify, weights, config)

    def __deepcopy__(self, memo):  # model_options are deep-copied on clone; keep one hook
        return self

    def classify(self, x_in, sigma):
        return self.loaded.module(x_in, sigma)

    def check_batch(self, batch: int):
        G.batch_weights(self.guidance.weights, batch)

    def __call__(self, args):
        denoised, x, sigma, model = args["denoised"], args["input"], args["sigma"], args["model"]
        ms = model.model_sampling
        param = glue.parameterization_of(ms)
        G.make_autograd_safe(self.loaded.module, x.device)
        sample_sigmas = args["model_options"].get("transformer_options", {}).get("sample_sigmas")
        step = S.step_position(float(sigma.max()), [float(v) for v in sample_sigmas]) if sample_sigmas is not None else None
        return self.guidance(denoised, x, sigma, glue.alpha_of(param, sigma), lambda xx: ms.calculate_input(sigma, xx),
                             step)

    def outer_sample(self, executor, noise, *args, **kwargs):
        self.check_batch(noise.shape[0])  # before the first step
        return executor(noise, *args, **kwargs)


def _guidance_inputs():
    return [
        T.Classifier.Input("classifier", tooltip="From Load Classifier (Guidance Lab)."),
        io.String.Input("target", default="", multiline=True,
                        tooltip="Label(s) to steer toward: 'cat', or 'cat:1, dog:-0.5' (negative = avoid). One line per "
                                "batch image for different targets; one line for all."),
        io.Float.Input("scale", default=G.SCALE_DEFAULT, min=0.0, max=G.SCALE_MAX, step=0.1,
                       tooltip="Classifier scale s; 1 = Bayes' conditional, larger = sharper; 0 = off (unchanged output)."),
        io.Float.Input("sigma_lo", default=0.0, min=0.0, max=1.0e4, step=0.01,
                       tooltip="Guide only for sigma >= sigma_lo (0 = no lower bound)."),
        io.Float.Input("sigma_hi", default=1.0e4, min=0.0, max=1.0e4, step=0.01,
                       tooltip="Guide only for sigma <= sigma_hi (10000 = no upper bound)."),
        io.Int.Input("every_n", default=1, min=1, max=100, tooltip="Guide on every N-th step (1 = every step)."),
        io.Float.Input("rms_clamp", default=0.0, min=0.0, max=1.0e4, step=0.01,
                       tooltip="Clamp of the gradient's RMS per image; 0 = off."),
        io.Combo.Input("dtype", options=list(G.DTYPES), default="float32",
                       tooltip="Compute dtype of the classifier's forward/backward."),
    ]


def _hook(model, classifier, target, scale, sigma_lo, sigma_hi, every_n, rms_clamp, dtype):
    classifier.check_model(model)
    targets = G.parse_targets(target, classifier.labels)
    cfg = G.ClassifierGuidanceConfig(scale=scale, sigma_lo=sigma_lo, sigma_hi=math.inf if sigma_hi >= 1.0e4 else sigma_hi,
                                     every_n=every_n, rms_clamp=rms_clamp, dtype=dtype)
    return ClassifierHook(classifier, G.target_matrix(targets, classifier.labels), cfg)


class GuidanceLabClassifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabClassifierLoader",
            display_name="Load Classifier (Guidance Lab)",
            category=CATEGORY,
            description="Loads a noise-aware classifier (.safetensors with Guidance Lab metadata) from models/classifiers. "
                        "Pickled checkpoints are refused.",
            inputs=[io.Combo.Input("classifier_name", options=folder_paths.get_filename_list(FOLDER),
                                   tooltip="A file in models/classifiers.")],
            outputs=[T.Classifier.Output(display_name="classifier")],
        )

    @classmethod
    def execute(cls, classifier_name):
        path = folder_paths.get_full_path_or_raise(FOLDER, classifier_name)
        module, meta = gio.load_classifier(path)
        return io.NodeOutput(LoadedClassifier(module, meta, classifier_name))


class GuidanceLabClassifierGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabClassifierGuidance",
            display_name="Classifier Guidance (Guidance Lab)",
            category=CATEGORY,
            description="MODEL patch for the stock KSampler: shifts the denoised prediction along the classifier's "
                        "gradient, D' = D + s*sigma^2/alpha*grad log p(y|x,sigma) (Dhariwal & Nichol 2021). A post-CFG "
                        "hook: stacks with other patches and with the CFG Guider.",
            inputs=[io.Model.Input("model", tooltip="The diffusion model (cloned; the input stays unchanged)."),
                    *_guidance_inputs()],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, classifier, **kw):
        hook = _hook(model, classifier, **kw)
        m = model.clone()
        m.set_model_sampler_post_cfg_function(hook)
        m.set_additional_models(KEY, [classifier.patcher])
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY, hook.outer_sample)
        return io.NodeOutput(m)


class GuidedSampler(comfy.samplers.Sampler):
    """Wraps any SAMPLER: adds the classifier hook to this run's post-CFG functions."""

    def __init__(self, inner, hook: ClassifierHook, model):
        self.inner, self.hook, self.model = inner, hook, model

    def max_denoise(self, model_wrap, sigmas):
        return self.inner.max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.hook.check_batch(noise.shape[0])
        comfy.model_management.load_models_gpu([self.hook.loaded.patcher])
        extra = dict(extra_args)
        mo = comfy.model_patcher.create_model_options_clone(extra.get("model_options", {}))
        mo["sampler_post_cfg_function"] = list(mo.get("sampler_post_cfg_function", [])) + [self.hook]
        extra["model_options"] = mo
        return self.inner.sample(model_wrap, sigmas, extra, callback, noise, latent_image, denoise_mask, disable_pbar)


class GuidanceLabClassifierSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabClassifierSampler",
            display_name="Classifier Guidance Sampler (Guidance Lab)",
            category=CATEGORY,
            description="Wraps a SAMPLER (e.g. from KSamplerSelect) for SamplerCustom / SamplerCustomAdvanced so that every "
                        "step is classifier-guided. Works with any GUIDER, including the CFG Guider of this pack.",
            inputs=[io.Sampler.Input("sampler", tooltip="The sampler to wrap."),
                    io.Model.Input("model", tooltip="The model the sampler will run (checked against the classifier)."),
                    *_guidance_inputs()],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls, sampler, model, classifier, **kw):
        return io.NodeOutput(GuidedSampler(sampler, _hook(model, classifier, **kw), model))


CLASSIFIER_NODES = [GuidanceLabClassifierLoader, GuidanceLabClassifierGuidance, GuidanceLabClassifierSampler]
