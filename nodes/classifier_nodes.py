"""Classifier guidance nodes: loader, MODEL patch (post-CFG) and SAMPLER wrapper."""

from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import folder_paths
from comfy_api.latest import io

from ..guidance_core import classifier_guidance
from ..guidance_core.classifiers import classifier_files
from ..guidance_core import parameterization
from ..guidance_core.errors import GuidanceConfigError
from . import folders, sampling_facts
from . import socket_types

CATEGORY = "Guidance Lab/classifier"
FOLDER = "classifiers"
KEY = "guidance_lab_classifier"
# |weight| of one label in a target text (weights of a repeated label add up): beyond it the guidance is nothing but
# overflow (a weight of 1e39 is not even a float32).
TARGET_WEIGHT_MAX = 100.0
# .pt/.pth/.ckpt are listed so that choosing one gives a clear "refused: pickle" message.
EXTENSIONS = {".safetensors", ".pt", ".pth", ".ckpt"}


folders.register_model_folder(FOLDER, EXTENSIONS)


def latent_format_name(model_patcher) -> str:
    """The model's latent space, as classifier files record it: the class name of its latent format
    ("SD15", "SDXL", "SDXL_Playground_2_5", ...)."""
    return type(model_patcher.get_model_object("latent_format")).__name__


def require_image_latents(model_patcher, what: str) -> None:
    """Noise-aware classifiers are 2-D image networks. They read 4-D latents [B, C, H, W], and the one-frame latents
    [B, C, 1, H, W] of models that sample images in a video latent layout (Qwen-Image, Cosmos-Predict2 text to image,
    Wan at length 1): their frame count is checked when sampling starts (require_one_frame). Other layouts (audio
    [B, C, L]) are refused here, before anything runs."""
    fmt = model_patcher.get_model_object("latent_format")
    dims = int(getattr(fmt, "latent_dimensions", 2))
    if dims not in (2, 3):
        kind = {1: "audio (3-D latents [B, C, L])"}.get(dims, f"{dims + 2}-D latents")
        raise GuidanceConfigError(
            f"{what} works on image latents ([B, C, H, W], or one frame [B, C, 1, H, W]); "
            f"this model ({type(fmt).__name__} latents) is {kind}, which noise-aware "
            "classifiers do not support"
        )


def require_one_frame(shape, what: str) -> None:
    """A 5-D latent [B, C, T, H, W] holds images for a noise-aware (2-D) classifier only when T = 1."""
    if len(shape) == 5 and int(shape[2]) != 1:
        raise GuidanceConfigError(
            f"{what} guides images: this latent {list(shape)} is a video of {int(shape[2])} "
            "frames [B, C, T, H, W]; noise-aware classifiers are 2-D image networks and guide "
            "one-frame latents (T = 1: Qwen-Image, Cosmos-Predict2 text to image, Wan with "
            "length 1). For a video, use a CLIP classifier (it reads every frame)"
        )


def model_input_scaling(model_patcher) -> dict:
    """The model's input scaling c_in(sigma)*x (parameterization.INPUT_SCALINGS), found by asking its own
    model_sampling.calculate_input (sampling_facts.sampling_form); refused when it is none of the known ones."""
    ms = sampling_facts.model_sampling_of(model_patcher)
    found = sampling_facts.sampling_form(ms).input_scaling
    if found is None:
        raise GuidanceConfigError(
            f"the model's input scaling ({type(ms).__name__}.calculate_input) is none of "
            "x/sqrt(sigma^2 + sigma_data^2), x, x/(1 + sigma); noise-aware classifiers cannot be "
            "trained for or guide this model"
        )
    return found


class LoadedClassifier:
    """A noise-aware classifier module with its metadata, managed by ComfyUI's model management.

    The GUIDANCE_CLASSIFIER interface (also implemented by clip_nodes.LoadedCLIPClassifier):
    `labels`, `name`, `wants` (what it reads, see guidance_core.classifier_guidance),
    `bind(model_patcher)` -> classify(input, sigma) -> logits (validates against the model first),
    and `model_patchers()` (what ComfyUI must load for sampling). Noise-aware classifiers also have
    `input_scaling` (what they read: c_in(sigma)*x, from the file) and `check_model`."""

    wants = classifier_guidance.NOISY_INPUT

    def __init__(self, module: torch.nn.Module, meta: dict, name: str = ""):
        self.module, self.meta, self.name = module, meta, name
        self.labels = [str(lb) for lb in meta["labels"]]
        self.input_scaling = classifier_files.input_scaling_of(meta)
        self.patcher = comfy.model_patcher.ModelPatcher(
            module,
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )

    def __deepcopy__(self, memo):
        return self

    def model_patchers(self) -> list:
        return [self.patcher]

    def classify(self, x_in, sigma):
        classifier_guidance.make_autograd_safe(self.module, x_in.device)
        if x_in.ndim == 5:  # one frame [B, C, 1, H, W] of a 5-D model (checked when sampling started): the 2-D network
            require_one_frame(x_in.shape, f"classifier {self.name!r}")  # reads [B, C, H, W]; the gradient keeps T = 1
            x_in = x_in[:, :, 0]
        return self.module(x_in, sigma)

    def check_latent(self, shape):
        """When sampling starts: the latent must be an image (4-D, or 5-D with one frame)."""
        require_one_frame(shape, f"classifier {self.name!r}")

    def bind(self, model_patcher, allow_other_latent_format: bool = False):
        self.check_model(model_patcher, allow_other_latent_format)
        return self.classify

    def check_model(self, model_patcher, allow_other_latent_format: bool = False):
        """Validate before sampling: latent channels, latent space, sampling family and input scaling must match."""
        require_image_latents(model_patcher, f"classifier {self.name!r}")
        fmt = model_patcher.get_model_object("latent_format")
        want, have = int(self.meta["latent_channels"]), int(fmt.latent_channels)
        if want != have:
            raise GuidanceConfigError(
                f"classifier {self.name!r} expects {want} latent channels, the model "
                f"produces {have}; use a classifier trained on this model family"
            )
        trained_fmt, model_fmt = str(self.meta.get("latent_format") or ""), latent_format_name(model_patcher)
        if trained_fmt and trained_fmt != model_fmt and not allow_other_latent_format:
            raise GuidanceConfigError(
                f"classifier {self.name!r} was trained on {trained_fmt} latents, the model uses "
                f"{model_fmt} latents: the same {have} channels, but another latent space; use a "
                f"classifier trained for this model, or set allow_other_latent_format = true "
                "if you know the two spaces are the same"
            )
        trained = self.meta.get("parameterization", "eps")
        form = sampling_facts.guidable_form(
            sampling_facts.model_sampling_of(model_patcher), f"classifier {self.name!r}"
        )
        if (trained == "flow") != (form.parameterization == "flow"):
            raise GuidanceConfigError(
                f"classifier {self.name!r} was trained for {trained} models, the model is "
                f"{form.parameterization}: their noisy inputs differ (alpha = 1 vs 1 - sigma)"
            )
        trained_noise = float(self.meta.get("noise_scale", 1.0))
        if not math.isclose(trained_noise, form.noise, rel_tol=1e-4):
            raise GuidanceConfigError(
                f"classifier {self.name!r} was trained on noise of scale {trained_noise:g} "
                f"(noise_scale), the model's sampling is {form.describe()}: their noisy inputs "
                "differ; use a classifier trained for this model's noise_scale"
            )
        model_scaling = model_input_scaling(model_patcher)
        if not parameterization.same_input_scaling(self.input_scaling, model_scaling):
            raise GuidanceConfigError(
                f"classifier {self.name!r} was trained on inputs "
                f"{parameterization.describe_input_scaling(self.input_scaling)}, the model's input scaling is "
                f"{parameterization.describe_input_scaling(model_scaling)}; use a classifier trained for this "
                "model (Train Classifier records the model's input scaling)"
            )


class NoClassifier:
    """What Train Classifier outputs when it trained nothing (steps = 0): any guidance node it reaches
    stops before sampling with `reason`, instead of failing on a missing object."""

    wants = classifier_guidance.NOISY_INPUT
    labels: list = []

    def __init__(self, reason: str):
        self.reason, self.name = reason, ""

    def __deepcopy__(self, memo):
        return self

    def model_patchers(self) -> list:
        return []

    def bind(self, model_patcher, **kw):
        raise GuidanceConfigError(self.reason)


def _control_modules(conds: list) -> list:
    """The networks of ControlNets / T2I adapters attached to the conds (and their chains)."""
    found = {}
    for cond in conds:
        for c in cond:
            ctrl = c.get("control") if isinstance(c, dict) else None
            while ctrl is not None:
                for attr in ("control_model", "t2i_model"):
                    net = getattr(ctrl, attr, None)
                    if isinstance(net, torch.nn.Module):
                        found[id(net)] = net
                ctrl = getattr(ctrl, "previous_controlnet", None)
    return list(found.values())


def differentiable_denoised(args: dict, x: torch.Tensor) -> torch.Tensor:
    """D(x) with gradients, recomputed inside a post-CFG hook from what the hook receives: the
    processed positive (and negative) conds, combined as ComfyUI's CFG, D_u + s*(D_c - D_u) (D_c alone
    when the step had no negative). One calc_cond_batch call, so the model's patches, wrappers and
    ControlNets act as in the step. Other post-processing of the step (CFG rescale, this pack's CFG
    patch) is not repeated: the gradient uses plain CFG's Jacobian (the value of D is the step's own,
    see classifier_guidance.straight_through). ComfyUI's weights (diffusion model, ControlNets) are
    inference tensors: they are swapped for normal copies during this forward and put back right after
    (autograd_safe_weights), so the model is unchanged between steps."""
    model, cond, uncond, scale = args["model"], args["cond"], args.get("uncond"), float(args["cond_scale"])
    use_uncond = uncond is not None and not math.isclose(scale, 1.0)
    # Copies of the cond lists: wrappers that recognise the guider's own lists (this pack's CFG patch)
    # leave this extra call alone.
    conds = [list(cond)] + ([list(uncond)] if use_uncond else [])
    sigma = args["sigma"].detach().clone()
    try:
        with classifier_guidance.autograd_safe_weights(model.diffusion_model, *_control_modules(conds)):
            outs = comfy.samplers.calc_cond_batch(model, conds, x, sigma, args["model_options"])
    except RuntimeError as e:
        if "Inference tensors" not in str(e):
            raise
        raise GuidanceConfigError(
            "gradient path 'through_model': a module taking part in the model call (beyond the "
            "diffusion model and ControlNets) has inference-tensor weights, which cannot be "
            f"backpropagated; use the 'detached' path ({e})"
        ) from None
    d = outs[1] + scale * (outs[0] - outs[1]) if use_uncond else outs[0]
    if not d.requires_grad:
        raise GuidanceConfigError(
            "gradient path 'through_model': the diffusion model's output does not depend "
            "differentiably on x (a caching or compiled patch?); use the 'detached' path"
        )
    return d


class ClassifierHook:
    """Post-CFG hook: D' = D + s*(c^2 sigma^2/alpha)*g (alpha and c from the model's sampling form, probed), g the
    classifier's gradient (grad_x log p(y|x, sigma)
    for noise-aware classifiers, which read the input scaling recorded in their file, the one they were
    trained on; for classifiers of the denoised prediction see guidance_core.classifier_guidance). Used by
    the MODEL patch and by the SAMPLER wrapper (one code path)."""

    def __init__(
        self,
        loaded,
        weights: torch.Tensor,
        config: classifier_guidance.ClassifierGuidanceConfig,
        classify=None,
        allow_other_latent_format: bool = False,
    ):
        self.loaded = loaded
        self._classify = classify if classify is not None else loaded.classify
        self.allow_other_latent_format = allow_other_latent_format
        self.input_scaling = getattr(loaded, "input_scaling", None)
        self.guidance = classifier_guidance.ClassifierGuidance(
            self.classify, weights, config, wants=getattr(loaded, "wants", classifier_guidance.NOISY_INPUT)
        )

    def __deepcopy__(self, memo):  # model_options are deep-copied on clone; keep one hook
        return self

    def classify(self, x_in, sigma):
        return self._classify(x_in, sigma)

    def check_run(self, shape, model_patcher=None):
        """Before the first step: the target rows against the batch, the latent's layout (a noise-aware classifier
        guides images: one frame of a 5-D latent at most), the model's sampling form and the classifier against the
        model that actually samples (a model patch applied after this node may have changed its sampling or
        latent format)."""
        classifier_guidance.batch_weights(self.guidance.weights, int(shape[0]))
        if model_patcher is not None:
            sampling_facts.guidable_form(sampling_facts.model_sampling_of(model_patcher), "classifier guidance")
        check_latent = getattr(self.loaded, "check_latent", None)
        if check_latent is not None:
            check_latent(tuple(shape))
        check = getattr(self.loaded, "check_model", None)
        if check is not None and model_patcher is not None:
            check(model_patcher, self.allow_other_latent_format)

    def __call__(self, args):
        denoised, x, sigma, model = args["denoised"], args["input"], args["sigma"], args["model"]
        ms = model.model_sampling
        form = sampling_facts.guidable_form(
            ms, "classifier guidance"
        )  # checked before sampling (check_run): never raises here
        run_sigmas = sampling_facts.step_context(sigma, args["model_options"], ms).sample_sigmas
        through = self.guidance.wants == classifier_guidance.DENOISED_THROUGH_MODEL
        if self.input_scaling is not None:
            model_input = lambda xx: parameterization.scale_input(xx, sigma, self.input_scaling)  # noqa: E731
        else:
            model_input = lambda xx: ms.calculate_input(sigma, xx)  # noqa: E731
        return self.guidance(
            denoised,
            x,
            sigma,
            form.alpha(sigma),
            model_input,
            run_sigmas,
            denoise_fn=(lambda xx: differentiable_denoised(args, xx)) if through else None,
            noise=form.noise,
        )

    def outer_sample(self, executor, noise, *args, **kwargs):
        self.check_run(noise.shape, getattr(executor.class_obj, "model_patcher", None))  # before the first step
        self.guidance.steps.reset(sampling_facts.sampler_name(args[1] if len(args) > 1 else kwargs.get("sampler")))
        return executor(noise, *args, **kwargs)


def _guidance_inputs():
    return [
        socket_types.Classifier.Input(
            "classifier", tooltip="From Load Classifier, Train Classifier or Load CLIP Classifier (Guidance Lab)."
        ),
        io.String.Input(
            "target",
            default="",
            multiline=True,
            tooltip="Label(s) to steer toward: 'cat', or 'cat:1, dog:-0.5' (negative = avoid). One line per "
            "batch image for different targets; one line for all.",
        ),
        io.Float.Input(
            "scale",
            default=classifier_guidance.SCALE_DEFAULT,
            min=0.0,
            max=classifier_guidance.SCALE_MAX,
            step=0.1,
            tooltip="Classifier scale s; 1 = Bayes' conditional, larger = sharper; 0 = off (unchanged output).",
        ),
        io.Float.Input(
            "sigma_lo",
            default=classifier_guidance.DEFAULTS["sigma_lo"],
            min=classifier_guidance.RANGES["sigma"][0],
            max=classifier_guidance.RANGES["sigma"][1],
            step=0.01,
            tooltip="Guide only for sigma > sigma_lo (0 = no lower bound).",
        ),
        io.Float.Input(
            "sigma_hi",
            default=classifier_guidance.DEFAULTS["sigma_hi"],
            min=classifier_guidance.RANGES["sigma"][0],
            max=classifier_guidance.RANGES["sigma"][1],
            step=0.01,
            tooltip=f"Guide only for sigma <= sigma_hi ({classifier_guidance.SIGMA_NO_BOUND:g} = no upper bound).",
        ),
        io.Int.Input(
            "every_n",
            default=classifier_guidance.DEFAULTS["every_n"],
            min=classifier_guidance.RANGES["every_n"][0],
            max=classifier_guidance.RANGES["every_n"][1],
            tooltip="Guide on every N-th step (1 = every step).",
        ),
        io.Float.Input(
            "rms_clamp",
            default=classifier_guidance.DEFAULTS["rms_clamp"],
            min=classifier_guidance.RANGES["rms_clamp"][0],
            max=classifier_guidance.RANGES["rms_clamp"][1],
            step=0.01,
            tooltip="Clamp of the gradient's RMS per image; 0 = off.",
        ),
        io.Combo.Input(
            "dtype",
            options=list(classifier_guidance.DTYPES),
            default=classifier_guidance.DEFAULTS["dtype"],
            tooltip="Compute dtype of the classifier's forward/backward.",
        ),
        io.Boolean.Input(
            "allow_other_latent_format",
            default=False,
            tooltip="Off (default): a noise-aware classifier trained on another latent format than the "
            "model's (e.g. SD1.5 vs SDXL, both 4 channels) is refused. On: use it anyway, when you "
            "know the two latent spaces are the same. CLIP classifiers are not affected.",
        ),
    ]


def _hook(
    model, classifier, target, scale, sigma_lo, sigma_hi, every_n, rms_clamp, dtype, allow_other_latent_format=False
):
    if classifier is None:
        raise GuidanceConfigError(
            "classifier is None (nothing came from the node connected to 'classifier'); connect "
            "Load Classifier, Train Classifier (steps > 0) or Load CLIP Classifier"
        )
    sampling_facts.guidable_form(sampling_facts.model_sampling_of(model), "classifier guidance")
    if isinstance(classifier, LoadedClassifier):  # validates the classifier against this model
        classify = classifier.bind(model, allow_other_latent_format=allow_other_latent_format)
    else:
        classify = classifier.bind(model)
    targets = classifier_guidance.parse_targets(target, classifier.labels)
    for i, item in enumerate(targets):
        for label, w in item.items():
            if not -TARGET_WEIGHT_MAX <= w <= TARGET_WEIGHT_MAX:
                raise GuidanceConfigError(
                    f"target weight of {label!r} (item {i + 1}) = {w:g}; use a weight from "
                    f"{-TARGET_WEIGHT_MAX:g} to {TARGET_WEIGHT_MAX:g} (1 = the label once, "
                    "negative = avoid; the node's scale multiplies it)"
                )
    cfg = classifier_guidance.ClassifierGuidanceConfig(
        scale=scale, sigma_lo=sigma_lo, sigma_hi=sigma_hi, every_n=every_n, rms_clamp=rms_clamp, dtype=dtype
    )
    return ClassifierHook(
        classifier,
        classifier_guidance.target_matrix(targets, classifier.labels),
        cfg,
        classify,
        allow_other_latent_format,
    )


class GuidanceLabClassifierLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabClassifierLoader",
            display_name="Load Classifier (Guidance Lab)",
            category=CATEGORY,
            description="Loads a noise-aware classifier (.safetensors with Guidance Lab metadata) from models/classifiers. "
            "Pickled checkpoints are refused.",
            inputs=[
                io.Combo.Input(
                    "classifier_name",
                    options=folders.filename_list(FOLDER, EXTENSIONS),
                    tooltip="A file in models/classifiers.",
                )
            ],
            outputs=[socket_types.Classifier.Output(display_name="classifier")],
        )

    @classmethod
    def fingerprint_inputs(cls, classifier_name):
        """ComfyUI runs the loader again when this value changes: a file replaced, rewritten or deleted under a
        running server is read (and checked) again instead of ComfyUI handing on the classifier cached before."""
        return folders.file_fingerprint(FOLDER, classifier_name)

    @classmethod
    def execute(cls, classifier_name):
        path = folder_paths.get_full_path_or_raise(FOLDER, classifier_name)
        module, meta = classifier_files.load_classifier(path)
        return io.NodeOutput(LoadedClassifier(module, meta, classifier_name))


class GuidanceLabClassifierGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabClassifierGuidance",
            display_name="Classifier Guidance (Guidance Lab)",
            category=CATEGORY,
            description="MODEL patch for the stock KSampler: shifts the denoised prediction along the classifier's "
            "gradient, D' = D + s*c^2*sigma^2/alpha*grad log p(y|x,sigma) (Dhariwal & Nichol 2021; c the model's "
            "noise_scale, usually 1); with a CLIP "
            "classifier, the gradient of log p(y|image(D)). A post-CFG hook: stacks with other patches and "
            "with the CFG Guider.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (cloned; the input stays unchanged)."),
                *_guidance_inputs(),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, classifier, **kw):
        hook = _hook(model, classifier, **kw)
        m = model.clone()
        m.set_model_sampler_post_cfg_function(hook)
        m.set_additional_models(KEY, classifier.model_patchers())
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY, hook.outer_sample)
        return io.NodeOutput(m)


class GuidedSampler(comfy.samplers.Sampler):
    """Wraps any SAMPLER: adds the classifier hook to this run's post-CFG functions."""

    def __init__(self, inner, hook: ClassifierHook, model):
        self.inner, self.hook, self.model = inner, hook, model

    def max_denoise(self, model_wrap, sigmas):
        return self.inner.max_denoise(model_wrap, sigmas)

    def sample(
        self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        self.hook.check_run(noise.shape, getattr(model_wrap, "model_patcher", None))
        self.hook.guidance.steps.reset(sampling_facts.sampler_name(self.inner))
        comfy.model_management.load_models_gpu(self.hook.loaded.model_patchers())
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
            inputs=[
                io.Sampler.Input("sampler", tooltip="The sampler to wrap."),
                io.Model.Input("model", tooltip="The model the sampler will run (checked against the classifier)."),
                *_guidance_inputs(),
            ],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls, sampler, model, classifier, **kw):
        return io.NodeOutput(GuidedSampler(sampler, _hook(model, classifier, **kw), model))


CLASSIFIER_NODES = [GuidanceLabClassifierLoader, GuidanceLabClassifierGuidance, GuidanceLabClassifierSampler]
