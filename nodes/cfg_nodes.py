"""CFG combiner nodes: schedule, term list, post-processing, GUIDER and MODEL patch."""

from __future__ import annotations

import math

import comfy.samplers
from comfy_api.latest import io

from ..guidance_core import cfg as cfg_core
from ..guidance_core import guidance_filters
from ..guidance_core import nag as nag_core
from ..guidance_core import perturbed_terms
from ..guidance_core import schedules
from ..guidance_core.errors import require_finite
from . import cfg_runtime
from . import sampling_facts
from . import socket_types

CATEGORY = "Guidance Lab/cfg"
SCHEDULE_DEFAULTS = schedules.DEFAULTS
VMIN, VMAX = schedules.RANGES["value"]
POST = cfg_core.POST_RANGES


class GuidanceLabSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabSchedule",
            display_name="Guidance Schedule",
            category=CATEGORY,
            description="A per-step multiplier of a guidance strength (1 = full, 0 = off). "
            "For CFG the effective scale is 1 + f*(cfg - 1).",
            inputs=[
                io.Combo.Input(
                    "kind",
                    options=list(schedules.KINDS),
                    default=SCHEDULE_DEFAULTS["kind"],
                    tooltip="Shape: constant, linear, cosine, power_up (change late), power_down "
                    "(change early), interval (on for sigma_lo < sigma <= sigma_hi), keyframes, adaptive (on "
                    "until the term's predictions agree: see threshold).",
                ),
                io.Combo.Input(
                    "axis",
                    options=list(schedules.AXES),
                    default=SCHEDULE_DEFAULTS["axis"],
                    tooltip="Position p in [0,1]: 'progress' = fraction of this run's steps; 'sigma' = "
                    "place in the model's log-sigma range (same meaning at any denoise). "
                    "Interval always uses sigma.",
                ),
                io.Float.Input(
                    "start",
                    default=SCHEDULE_DEFAULTS["start"],
                    min=VMIN,
                    max=VMAX,
                    step=0.01,
                    tooltip="Multiplier at p = 0 (first step / highest noise). Constant uses this value.",
                ),
                io.Float.Input(
                    "end",
                    default=SCHEDULE_DEFAULTS["end"],
                    min=VMIN,
                    max=VMAX,
                    step=0.01,
                    tooltip="Multiplier at p = 1 (last step / lowest noise).",
                ),
                io.Float.Input(
                    "exponent",
                    default=SCHEDULE_DEFAULTS["exponent"],
                    min=schedules.RANGES["exponent"][0],
                    max=schedules.RANGES["exponent"][1],
                    step=0.1,
                    tooltip="Exponent k of power_up (p^k) and power_down ((1-p)^k); 1 = linear.",
                ),
                io.Float.Input(
                    "sigma_lo",
                    default=SCHEDULE_DEFAULTS["sigma_lo"],
                    min=schedules.RANGES["sigma"][0],
                    max=schedules.RANGES["sigma"][1],
                    step=0.01,
                    tooltip="Interval: lower sigma bound (exclusive). Kynkaanniemi et al. use 0.28 for SDXL.",
                ),
                io.Float.Input(
                    "sigma_hi",
                    default=SCHEDULE_DEFAULTS["sigma_hi"],
                    min=schedules.RANGES["sigma"][0],
                    max=schedules.RANGES["sigma"][1],
                    step=0.01,
                    tooltip="Interval: upper sigma bound (inclusive). Kynkaanniemi et al. use 5.42 for SDXL.",
                ),
                io.Float.Input(
                    "inside",
                    default=SCHEDULE_DEFAULTS["inside"],
                    min=VMIN,
                    max=VMAX,
                    step=0.01,
                    tooltip="Interval: multiplier inside the interval.",
                ),
                io.Float.Input(
                    "outside",
                    default=SCHEDULE_DEFAULTS["outside"],
                    min=VMIN,
                    max=VMAX,
                    step=0.01,
                    tooltip="Interval: multiplier outside (0 = unguided there, only the positive runs).",
                ),
                io.String.Input(
                    "keyframes",
                    default=SCHEDULE_DEFAULTS["keyframes"],
                    multiline=False,
                    tooltip="Keyframes: 'position:value' pairs, positions in [0,1], e.g. '0:1, 0.5:0.3, 1:0'.",
                ),
                io.Float.Input(
                    "threshold",
                    default=SCHEDULE_DEFAULTS["threshold"],
                    min=schedules.RANGES["threshold"][0],
                    max=schedules.RANGES["threshold"][1],
                    step=0.00001,
                    round=0.00001,
                    optional=True,
                    tooltip="Adaptive: the term stops (0 for the rest of the run, never evaluated again) once "
                    "cos(eps_term, eps_reference) >= threshold (Castillo et al. 2023); before that "
                    "the multiplier is 'start'.",
                ),
            ],
            outputs=[socket_types.Schedule.Output(display_name="schedule")],
        )

    @classmethod
    def execute(
        cls,
        kind,
        axis,
        start,
        end,
        exponent,
        sigma_lo,
        sigma_hi,
        inside,
        outside,
        keyframes,
        threshold=SCHEDULE_DEFAULTS["threshold"],
    ):
        sched = schedules.from_fields(
            kind=kind,
            axis=axis,
            start=start,
            end=end,
            exponent=exponent,
            sigma_lo=sigma_lo,
            sigma_hi=sigma_hi,
            inside=inside,
            outside=outside,
            keyframes=keyframes,
            threshold=threshold,
        )
        # evaluate on a dense grid now, so a NaN/inf shows before sampling starts
        schedules.step_values(sched, [math.exp(3.0 - 9.0 * i / 100) for i in range(101)] + [0.0])
        return io.NodeOutput(sched)


class GuidanceLabTerm(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabTerm",
            display_name="Guidance Term",
            category=CATEGORY,
            description="Adds one weighted prompt to a term list (composable diffusion, Liu et al. 2022): "
            "D += w * schedule * (D_term - D_reference). Chain several to combine any number.",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="The prompt of this term."),
                _weight_input("prompt", "Term weight w; negative = 'not this'; 0 = off (never evaluated)."),
                _reference_input("the baseline (empty if connected, else negative)", optional=True),
                socket_types.Schedule.Input(
                    "schedule", optional=True, tooltip="Per-step multiplier of w; none = constant 1."
                ),
                socket_types.Terms.Input("terms", optional=True, tooltip="Earlier terms to append this one to."),
            ],
            outputs=[socket_types.Terms.Output(display_name="terms")],
        )

    @classmethod
    def execute(cls, conditioning, weight, reference="auto", schedule=None, terms=None):
        sampling_facts.conditioning_batch(conditioning, "term conditioning")
        return io.NodeOutput(_append_term(terms, conditioning, "prompt", weight, reference, schedule))


def _append_term(terms, conditioning, kind, weight, reference, schedule, max_ratio=0.0, **spec) -> tuple:
    """The earlier GUIDANCE_TERMS plus one term (cfg_runtime.Term); a term's own conditioning is checked here."""
    if conditioning is not None:
        sampling_facts.conditioning_batch(conditioning, "term conditioning")
    term = cfg_runtime.Term(
        weight=weight,
        schedule=schedule or schedules.CONSTANT_ONE,
        kind=kind,
        reference=reference,
        max_ratio=max_ratio,
        conditioning=conditioning,
        **spec,
    )
    return tuple(terms or ()) + (term,)


def _weight_input(kind: str, tooltip: str):
    """The weight of a term node: its default for the term kind and the one range, from the core."""
    return io.Float.Input(
        "weight",
        default=cfg_core.TERM_WEIGHT_DEFAULTS[kind],
        min=cfg_core.TERM_WEIGHT_RANGE[0],
        max=cfg_core.TERM_WEIGHT_RANGE[1],
        step=0.05,
        tooltip=tooltip,
    )


REFERENCE_OPTIONS = list(cfg_core.REFERENCES) + [f"term {i}" for i in range(1, 17)]


def _reference_input(auto: str, optional: bool = False):
    """optional: an input added to a released node, so that API prompts saved before it still validate."""
    return io.Combo.Input(
        "reference",
        options=REFERENCE_OPTIONS,
        default="auto",
        optional=optional,
        tooltip=f"The prediction this term is measured against; auto = {auto}. 'term N' = the N-th "
        "term of the list (1-based).",
    )


def _term_tail(conditioning_tip: str):
    return [
        socket_types.Schedule.Input(
            "schedule", optional=True, tooltip="Per-step multiplier of the weight; none = constant 1."
        ),
        io.Conditioning.Input("conditioning", optional=True, tooltip=conditioning_tip),
        socket_types.Terms.Input("terms", optional=True, tooltip="Earlier terms to append this one to."),
    ]


class GuidanceLabPerturbedTerm(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabPerturbedTerm",
            display_name="Perturbed-Attention Term (PAG / SEG / TPG / SLG / STG)",
            category=CATEGORY,
            description="A guidance term from the model itself with part of the network perturbed, moved away from: "
            "D += w * schedule * (D_reference - D_perturbed). PAG (Ahn et al. 2024): self-attention -> "
            "identity; SEG (Hong 2024): blurred queries; TPG (2025): tokens shuffled; SLG: DiT blocks "
            "skipped; STG (Hyung et al. 2024): a video DiT's self-attention -> its values. Its rows run in "
            "the same batched model call as the prompts (CFG + PAG = one call of 3 rows).",
            inputs=[
                io.Combo.Input(
                    "mode",
                    options=list(perturbed_terms.MODES),
                    default="pag",
                    tooltip="UNet transformer blocks: pag (self-attention map -> identity), seg (blurred "
                    "queries), tpg (token perturbation: the block's tokens shuffled). DiT blocks: slg "
                    "(blocks skipped), stg (video DiTs, LTXV / Wan: self-attention -> its values, "
                    "ComfyUI's LTXV STG).",
                ),
                io.String.Input(
                    "blocks",
                    default="",
                    multiline=False,
                    tooltip="Blocks to perturb, 'part.index' comma-separated: UNet input.N / middle.0 / output.N "
                    "(pag, seg, tpg), DiT double.N / single.N (slg, stg; LTXV and Wan blocks are "
                    "double.N). Empty = middle.0 (ComfyUI's PAG) for pag/seg, input.7, input.8 (the TPG "
                    "paper's SDXL layers) for tpg, double.7, double.8, double.9 (ComfyUI's SLG) for slg, "
                    "double.29 (ComfyUI's LTXV STG) for stg.",
                ),
                _weight_input("perturbed", "Scale w (ComfyUI's PAG 'scale', 3 by default); 0 = off (never evaluated)."),
                io.Float.Input(
                    "seg_sigma",
                    default=perturbed_terms.SEG_SIGMA_DEFAULT,
                    min=perturbed_terms.SEG_SIGMA_RANGE[0],
                    max=perturbed_terms.SEG_SIGMA_RANGE[1],
                    step=0.1,
                    tooltip=f"SEG only: std of the query blur in tokens; {perturbed_terms.SEG_SIGMA_INF:g} = the mean query "
                    "(the paper's infinite blur).",
                ),
                _reference_input("positive"),
                *_term_tail("The prompt the perturbed rows run with; none = the positive prompt."),
            ],
            outputs=[socket_types.Terms.Output(display_name="terms")],
        )

    @classmethod
    def execute(cls, mode, blocks, weight, seg_sigma, reference="auto", schedule=None, conditioning=None, terms=None):
        pert = perturbed_terms.Perturbation(
            mode=mode,
            blocks=perturbed_terms.parse_blocks(blocks or perturbed_terms.DEFAULT_BLOCKS[mode], mode),
            seg_sigma=seg_sigma,
        )
        return io.NodeOutput(
            _append_term(terms, conditioning, "perturbed", weight, reference, schedule, perturbation=pert)
        )


class GuidanceLabModelTerm(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabModelTerm",
            display_name="Model Term (Autoguidance)",
            category=CATEGORY,
            description="A guidance term from another MODEL of the same family, moved away from: D += w * schedule * "
            "(D_reference - D_model). With a weaker version of the sampled model (smaller or trained less) "
            "this is autoguidance (Karras et al. 2024): at cfg 1, w = Karras's w - 1. One extra model call "
            "per step where w * schedule is not 0; ComfyUI loads and offloads the model with the sampled one.",
            inputs=[
                io.Model.Input(
                    "model", tooltip="The guiding model: same model class, latent format and parameterization."
                ),
                _weight_input(
                    "model", "w; Karras et al.'s guidance weight minus 1 (their best: w_K about 2-3); 0 = off."
                ),
                _reference_input("positive"),
                *_term_tail("The prompt the guiding model runs with; none = the positive prompt."),
                io.Float.Input(
                    "max_ratio",
                    default=cfg_core.MAX_RATIO_DEFAULT,
                    min=0.0,
                    max=cfg_core.MAX_RATIO_MAX,
                    step=0.01,
                    optional=True,
                    tooltip="Cap of the term's push per sample: |w * schedule * (D_reference - D_model)| at most "
                    "max_ratio * |D_positive| (L2); 0 = no cap. Keeps a strong weight from overcooking.",
                ),
            ],
            outputs=[socket_types.Terms.Output(display_name="terms")],
        )

    @classmethod
    def execute(
        cls,
        model,
        weight,
        reference="auto",
        schedule=None,
        conditioning=None,
        terms=None,
        max_ratio=cfg_core.MAX_RATIO_DEFAULT,
    ):
        return io.NodeOutput(
            _append_term(terms, conditioning, "model", weight, reference, schedule, max_ratio, model=model)
        )


class GuidanceLabNAGTerm(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabNAGTerm",
            display_name="NAG Term (Normalized Attention Guidance)",
            category=CATEGORY,
            description="A negative prompt that works at cfg 1 (guidance-distilled models): normalized attention guidance "
            "(Chen et al. 2025) inside the positive prompt's forward: Z~ = Z+ + w (Z+ - Z-), its L1 norm capped "
            "at tau |Z+|, blended by alpha. Paper form: the negative prompt enters only where attention reads the "
            "text: the cross-attention of the positive row (no extra row; UNets, Wan), or the text tokens of joint "
            "attention (one shadow row; SD3.5, Flux, Chroma, Qwen-Image, Lumina 2, HunyuanVideo). ComfyUI form: the "
            "same as ComfyUI's NAGuidance node (a full row of the negative prompt; UNets, Flux, Chroma).",
            inputs=[
                io.Combo.Input(
                    "form",
                    options=list(nag_core.FORMS),
                    default="paper",
                    tooltip="paper: cross-attention of the positive row with the negative prompt's keys and values "
                    "(UNet: SD1.5, SDXL; Wan 2.x), about the cost of one row; on joint attention (SD3.5, Flux, "
                    "Chroma, Qwen-Image, Lumina 2, HunyuanVideo) a shadow row with the negative's text tokens, two "
                    "rows; comfyui: ComfyUI's NAGuidance (self-attention outputs of a full negative row; UNet, Flux, "
                    "Chroma), two rows.",
                ),
                _weight_input(
                    "nag",
                    "phi, the extrapolation away from the negative prompt (ComfyUI's nag_scale - 1: "
                    "NAGuidance's 5 is 4); 0 = off (nothing evaluated).",
                ),
                io.Float.Input(
                    "tau",
                    default=nag_core.TAU_DEFAULT,
                    min=nag_core.TAU_RANGE[0],
                    max=nag_core.TAU_RANGE[1],
                    step=0.01,
                    tooltip="Cap of |Z~| / |Z+| per token (L1). The paper: 2.5; ComfyUI's node: 1.5.",
                ),
                io.Float.Input(
                    "alpha",
                    default=nag_core.ALPHA_DEFAULT,
                    min=nag_core.ALPHA_RANGE[0],
                    max=nag_core.ALPHA_RANGE[1],
                    step=0.01,
                    tooltip="Blend of the normalized features into the positive's; 0 = off. The paper: 0.25 "
                    "(Flux, SD3.5), 0.5 for some models; ComfyUI's node: 0.5.",
                ),
                io.Combo.Input(
                    "reference",
                    options=["auto", cfg_core.POSITIVE],
                    default="auto",
                    tooltip="The row NAG acts on: the positive prompt (auto).",
                ),
                *_term_tail("The negative prompt NAG steers away from; none = the sampler's negative prompt."),
            ],
            outputs=[socket_types.Terms.Output(display_name="terms")],
        )

    @classmethod
    def execute(cls, form, weight, tau, alpha, reference="auto", schedule=None, conditioning=None, terms=None):
        settings = nag_core.NAGSettings(form=form, tau=tau, alpha=alpha)
        return io.NodeOutput(
            _append_term(terms, conditioning, "nag", weight if alpha > 0 else 0.0, reference, schedule, nag=settings)
        )


def _post_float(name: str, step: float, tooltip: str):
    """An optional float input of PostProcess `name` (optional: prompts made before it existed still validate)."""
    return io.Float.Input(
        name,
        default=cfg_core.PostProcess.default(name),
        min=POST[name][0],
        max=POST[name][1],
        step=step,
        optional=True,
        tooltip=tooltip,
    )


def _reshaper_inputs() -> list:
    """The guidance term's reshapers (guidance_core/guidance_filters.py), applied in the order the help page gives."""
    return [
        io.Boolean.Input(
            "tcfg",
            default=False,
            optional=True,
            tooltip="TCFG tangential damping (Kwon et al. 2025): the reference's score keeps only its part "
            "along the positive's; as ComfyUI's TCFG node. Off = plain.",
        ),
        io.Boolean.Input(
            "fresca",
            default=False,
            optional=True,
            tooltip="FreSca (Huang et al. 2025): scale the guidance's low and high spatial frequencies "
            "(FFT); as ComfyUI's FreSca node.",
        ),
        _post_float("fresca_low", 0.01, "FreSca: factor of the low frequencies of the guidance (1 = unchanged)."),
        _post_float("fresca_high", 0.01, "FreSca: factor of the high frequencies of the guidance (1 = unchanged)."),
        io.Int.Input(
            "fresca_cutoff",
            default=cfg_core.PostProcess.default("fresca_cutoff"),
            min=POST["fresca_cutoff"][0],
            max=POST["fresca_cutoff"][1],
            optional=True,
            tooltip="FreSca: half-width, in frequency indices, of the centred low-frequency block.",
        ),
        io.Boolean.Input(
            "fdg",
            default=False,
            optional=True,
            tooltip="FDG frequency-decoupled guidance (Sadat et al. 2025): the guidance's low and high "
            "bands of a Laplacian pyramid at their own factors; as diffusers' guider.",
        ),
        _post_float(
            "fdg_low",
            0.05,
            "FDG: factor of the low band (the scale there is cfg x this); the paper keeps it below the high band's.",
        ),
        _post_float("fdg_high", 0.05, "FDG: factor of the high band (detail); equal factors of 1 = plain CFG."),
        _post_float(
            "mambo_alpha",
            0.5,
            "MaMBo-G: damp the CFG coefficient by exp(-alpha r), r = the guidance's size "
            "against the reference's network output; 0 = off, diffusers' default 8.",
        ),
        io.Combo.Input(
            "dyn_thresh",
            options=list(guidance_filters.DYN_THRESH_MODES),
            default="off",
            optional=True,
            tooltip="Dynamic thresholding of the result: mimic = sd-dynamic-thresholding (high cfg with the "
            "dynamic range of the mimic scale, per channel); imagen = Saharia et al.'s percentile "
            "clamp of D; off.",
        ),
        _post_float(
            "dyn_mimic_scale", 0.5, "Dynamic thresholding (mimic): the CFG scale whose range the result keeps."
        ),
        _post_float(
            "dyn_percentile",
            0.005,
            "Dynamic thresholding: percentile of |values| that sets the threshold "
            "(mimic: of the guided result; imagen: of D, the paper uses 0.995).",
        ),
        _post_float("dyn_phi", 0.05, "Dynamic thresholding: blend of the thresholded result (1 = full, 0 = off)."),
    ]


class GuidanceLabPostProcess(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabPostProcess",
            display_name="Guidance Post-processing",
            category=CATEGORY,
            description="Optional post-processing of the guided prediction: CFG rescale, CFG-Zero*, APG, Perp-Neg, "
            "TCFG, FreSca, FDG, MaMBo-G, dynamic thresholding. Every option's default is off.",
            inputs=[
                io.Float.Input(
                    "rescale_phi",
                    default=cfg_core.PostProcess.default("rescale_phi"),
                    min=POST["rescale_phi"][0],
                    max=POST["rescale_phi"][1],
                    step=0.01,
                    tooltip="CFG rescale strength phi (Lin et al. 2024, arXiv 2305.08891); 0 = off, 0.7 is the paper's.",
                ),
                io.Combo.Input(
                    "rescale_space",
                    options=list(cfg_core.RESCALE_SPACES),
                    default="auto",
                    tooltip="Space of the rescale std: auto = v-prediction for eps/v models, x0 for flow "
                    "(eps is refused for flow models).",
                ),
                io.Boolean.Input(
                    "cfg_zero_star",
                    default=False,
                    tooltip="CFG-Zero* optimized scale of the unconditional (Fan et al. 2025); off = plain.",
                ),
                io.Int.Input(
                    "zero_init_steps",
                    default=cfg_core.PostProcess.default("zero_init_steps"),
                    min=POST["zero_init_steps"][0],
                    max=POST["zero_init_steps"][1],
                    tooltip="CFG-Zero* zero-init, flow models only: the first K sampler steps keep x (zero velocity, "
                    "no model call); 0 = off.",
                ),
                io.Boolean.Input(
                    "apg",
                    default=False,
                    tooltip="Adaptive projected guidance (Sadat et al. 2025, arXiv 2410.02416); off = plain CFG.",
                ),
                io.Float.Input(
                    "apg_eta",
                    default=cfg_core.APG_ETA_DEFAULT,
                    min=POST["apg_eta"][0],
                    max=POST["apg_eta"][1],
                    step=0.05,
                    tooltip="APG: weight of the guidance part parallel to D_pos (1 = keep, 0 = drop).",
                ),
                io.Float.Input(
                    "apg_momentum",
                    default=cfg_core.APG_MOMENTUM_DEFAULT,
                    min=POST["apg_momentum"][0],
                    max=POST["apg_momentum"][1],
                    step=0.05,
                    tooltip="APG momentum beta (negative in the paper, -0.5); 0 = off.",
                ),
                io.Float.Input(
                    "apg_norm_threshold",
                    default=cfg_core.APG_NORM_DEFAULT,
                    min=POST["apg_norm_threshold"][0],
                    max=POST["apg_norm_threshold"][1],
                    step=0.5,
                    tooltip="APG: clamp of the guidance norm r (per sample); 0 = off.",
                ),
                io.Boolean.Input(
                    "perp_neg",
                    default=False,
                    tooltip="Perp-Neg: use only the part of the negative orthogonal to the positive "
                    "(needs an empty conditioning); off = plain negative.",
                ),
                *_reshaper_inputs(),
            ],
            outputs=[socket_types.PostProcess.Output(display_name="post")],
        )

    @classmethod
    def execute(cls, **kw):
        return io.NodeOutput(cfg_core.PostProcess(**kw))


def _common_inputs():
    return [
        io.Conditioning.Input(
            "empty",
            optional=True,
            tooltip="Empty-prompt conditioning. When connected: D = D_empty + cfg*(D_pos - D_empty) "
            "- neg_scale*(D_neg - D_empty). Not connected = standard CFG.",
        ),
        io.Float.Input(
            "neg_scale",
            default=cfg_core.NEG_SCALE_DEFAULT,
            min=-cfg_core.CFG_MAX,
            max=cfg_core.CFG_MAX,
            step=0.1,
            tooltip="Scale of the negative term; used only with an empty conditioning. "
            "cfg - 1 reproduces standard CFG; 0 = negative off.",
        ),
        socket_types.Schedule.Input(
            "cfg_schedule",
            optional=True,
            tooltip="Per-step multiplier f of the CFG strength: scale 1 + f*(cfg - 1). None = constant 1.",
        ),
        socket_types.Schedule.Input(
            "neg_schedule", optional=True, tooltip="Per-step multiplier of neg_scale. None = constant 1."
        ),
        socket_types.PostProcess.Input("post", optional=True, tooltip="Post-processing options; none = off."),
        socket_types.Terms.Input(
            "terms",
            optional=True,
            tooltip="Extra terms: weighted prompts (Guidance Term), perturbed "
            "attention (PAG/SEG/SLG) and model terms (autoguidance).",
        ),
    ]


class GuidanceLabCFGGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabCFGGuider",
            display_name="CFG Guider (Guidance Lab)",
            category=CATEGORY,
            description="Classifier-free guidance GUIDER for SamplerCustomAdvanced: positive, negative and empty "
            "prompts as separate terms, any number of weighted terms, per-step schedules and "
            "post-processing; all active terms in one batched model call per step.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model."),
                io.Conditioning.Input("positive", tooltip="Positive prompt (required)."),
                io.Conditioning.Input(
                    "negative", optional=True, tooltip="Negative prompt: the unconditional of standard CFG."
                ),
                io.Float.Input(
                    "cfg",
                    default=cfg_core.CFG_DEFAULT,
                    min=cfg_core.CFG_MIN,
                    max=cfg_core.CFG_MAX,
                    step=0.1,
                    round=0.01,
                    tooltip="CFG scale s (Ho & Salimans w = s - 1); 1 = no guidance (one model row).",
                ),
                *_common_inputs(),
            ],
            outputs=[io.Guider.Output(display_name="guider")],
        )

    @classmethod
    def execute(
        cls,
        model,
        positive,
        cfg,
        neg_scale,
        negative=None,
        empty=None,
        cfg_schedule=None,
        neg_schedule=None,
        post=None,
        terms=None,
    ):
        terms = tuple(terms or ())
        named = {"positive": positive, "negative": negative, "empty": empty}
        named.update({f"term {i + 1}": t.conditioning for i, t in enumerate(terms)})
        sampling_facts.check_batches(named)
        require_finite("cfg", cfg)
        if negative is None and empty is None and cfg != 1.0:
            raise cfg_core.GuidanceConfigError(
                f"cfg={cfg} needs an unconditional: connect 'negative' or 'empty', or set cfg to 1"
            )
        runtime = _cfg_runtime(
            model,
            "use the patch (with KSampler) or the CFG Guider, not both",
            negative is not None,
            empty,
            terms,
            neg_scale,
            cfg_schedule,
            neg_schedule,
            post,
        )
        return io.NodeOutput(Guider(model, runtime, cfg, positive, negative, empty, terms))


def _cfg_runtime(
    model, patched_twice: str, has_negative: bool, empty, terms, neg_scale, cfg_schedule, neg_schedule, post
) -> cfg_runtime.CFGRuntime:
    """The CFG runtime of the GUIDER and of the MODEL patch, built one way from their common inputs (the CFG scale
    is not among them: it is the sampler's, given at every step); a MODEL that already carries the patch is
    refused, `patched_twice` saying what to do instead."""
    if model.model_options.get(cfg_runtime.MARK):
        raise cfg_core.GuidanceConfigError(f"this MODEL already carries the Guidance Lab CFG patch; {patched_twice}")
    config = cfg_core.CFGConfig(
        cfg_schedule=cfg_schedule or schedules.CONSTANT_ONE,
        neg_scale=neg_scale,
        neg_schedule=neg_schedule or schedules.CONSTANT_ONE,
        terms=terms,
        post=post or cfg_core.PostProcess(),
    )
    param = sampling_facts.parameterization_of(sampling_facts.model_sampling_of(model))
    return cfg_runtime.CFGRuntime(
        cfg_core.CFGCombiner(config, has_negative, empty is not None, param), empty, terms, model
    )


class Guider(comfy.samplers.CFGGuider):
    """ComfyUI's CFGGuider on a clone of the model that carries the Guidance Lab CFG runtime; every step runs
    CFGRuntime.predict, the same code as the MODEL patch. Extra conds: the empty prompt and the terms, tagged
    as ComfyUI's guiders tag negatives (prompt_type) where they act as one."""

    def __init__(self, model_patcher, runtime, cfg, positive, negative, empty, terms):
        self.runtime = runtime
        super().__init__(self.runtime.install(model_patcher.clone()))
        conds = {cfg_runtime.POSITIVE_KEY: positive}
        if negative is not None:
            conds[cfg_runtime.NEGATIVE_KEY] = negative
        if empty is not None:
            conds[cfg_runtime.EMPTY_KEY] = cfg_runtime.tag_negative(empty)
        conds.update(cfg_runtime.term_conds(terms, positive))
        self.inner_set_conds(conds)
        self.set_cfg(cfg)

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006  (ComfyUI's signature)
        return self.runtime.predict(self.inner_model, self.conds, self.cfg, x, timestep, model_options)


class GuidanceLabCFGPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabCFGPatch",
            display_name="CFG Patch (Guidance Lab)",
            category=CATEGORY,
            description="Gives the stock KSampler per-step CFG schedules, post-processing and an optional empty-prompt "
            "term. Uses wrappers, not the single sampler_cfg_function slot, so it stacks with other nodes' "
            "patches (RescaleCFG, APG, CFGNorm...), which see each step's effective scale. Works with "
            "ComfyUI's CFGGuider (KSampler); other guiders are refused.",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (it is cloned; the input stays unchanged)."),
                *_common_inputs(),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, neg_scale, empty=None, cfg_schedule=None, neg_schedule=None, post=None, terms=None):
        terms = tuple(terms or ())
        if empty is not None:
            sampling_facts.conditioning_batch(empty, "empty")
            cfg_runtime.refuse_hooks(empty, "empty")
        for i, t in enumerate(terms):
            if t.conditioning is not None:
                cfg_runtime.refuse_hooks(t.conditioning, f"term {i + 1}")
        runtime = _cfg_runtime(
            model,
            "patch it once (one CFG Patch per model)",
            True,
            empty,
            terms,
            neg_scale,
            cfg_schedule,
            neg_schedule,
            post,
        )
        return io.NodeOutput(runtime.install(model.clone()))


CFG_NODES = [
    GuidanceLabSchedule,
    GuidanceLabTerm,
    GuidanceLabPerturbedTerm,
    GuidanceLabModelTerm,
    GuidanceLabNAGTerm,
    GuidanceLabPostProcess,
    GuidanceLabCFGGuider,
    GuidanceLabCFGPatch,
]
