"""CFG combiner nodes: schedule, term list, post-processing, GUIDER and MODEL patch."""
from __future__ import annotations

import math

import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers
from comfy_api.latest import io

from ..guidance_core import cfg as C
from ..guidance_core import schedules as S
from . import glue
from . import types as T

CATEGORY = "Guidance Lab/cfg"
D = S.DEFAULTS
VMIN, VMAX = S.RANGES["value"]


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
                io.Combo.Input("kind", options=list(S.KINDS), default=D["kind"],
                               tooltip="Shape: constant, linear, cosine, power_up (change late), power_down "
                                       "(change early), interval (on for sigma_lo < sigma <= sigma_hi), keyframes."),
                io.Combo.Input("axis", options=list(S.AXES), default=D["axis"],
                               tooltip="Position p in [0,1]: 'progress' = fraction of this run's steps; 'sigma' = "
                                       "place in the model's log-sigma range (same meaning at any denoise). "
                                       "Interval always uses sigma."),
                io.Float.Input("start", default=D["start"], min=VMIN, max=VMAX, step=0.01,
                               tooltip="Multiplier at p = 0 (first step / highest noise). Constant uses this value."),
                io.Float.Input("end", default=D["end"], min=VMIN, max=VMAX, step=0.01,
                               tooltip="Multiplier at p = 1 (last step / lowest noise)."),
                io.Float.Input("exponent", default=D["exponent"], min=S.RANGES["exponent"][0],
                               max=S.RANGES["exponent"][1], step=0.1,
                               tooltip="Exponent k of power_up (p^k) and power_down ((1-p)^k); 1 = linear."),
                io.Float.Input("sigma_lo", default=D["sigma_lo"], min=0.0, max=S.RANGES["sigma"][1], step=0.01,
                               tooltip="Interval: lower sigma bound (exclusive). Kynkaanniemi et al. use 0.28 for SDXL."),
                io.Float.Input("sigma_hi", default=D["sigma_hi"], min=0.0, max=S.RANGES["sigma"][1], step=0.01,
                               tooltip="Interval: upper sigma bound (inclusive). Kynkaanniemi et al. use 5.42 for SDXL."),
                io.Float.Input("inside", default=D["inside"], min=VMIN, max=VMAX, step=0.01,
                               tooltip="Interval: multiplier inside the interval."),
                io.Float.Input("outside", default=D["outside"], min=VMIN, max=VMAX, step=0.01,
                               tooltip="Interval: multiplier outside (0 = unguided there, only the positive runs)."),
                io.String.Input("keyframes", default=D["keyframes"], multiline=False,
                                tooltip="Keyframes: 'position:value' pairs, positions in [0,1], e.g. '0:1, 0.5:0.3, 1:0'."),
            ],
            outputs=[T.Schedule.Output(display_name="schedule")],
        )

    @classmethod
    def execute(cls, kind, axis, start, end, exponent, sigma_lo, sigma_hi, inside, outside, keyframes):
        sched = S.from_fields(kind=kind, axis=axis, start=start, end=end, exponent=exponent, sigma_lo=sigma_lo,
                              sigma_hi=sigma_hi, inside=inside, outside=outside, keyframes=keyframes)
        # evaluate on a dense grid now, so a NaN/inf shows before sampling starts
        S.step_values(sched, [math.exp(3.0 - 9.0 * i / 100) for i in range(101)] + [0.0])
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
                io.Float.Input("weight", default=1.0, min=C.TERM_WEIGHT_RANGE[0], max=C.TERM_WEIGHT_RANGE[1],
                               step=0.05, tooltip="Term weight w; negative = 'not this'; 0 = off (never evaluated)."),
                T.Schedule.Input("schedule", optional=True, tooltip="Per-step multiplier of w; none = constant 1."),
                T.Terms.Input("terms", optional=True, tooltip="Earlier terms to append this one to."),
            ],
            outputs=[T.Terms.Output(display_name="terms")],
        )

    @classmethod
    def execute(cls, conditioning, weight, schedule=None, terms=None):
        glue.conditioning_batch(conditioning, "term conditioning")
        term = C.ExtraTerm(weight=weight, schedule=schedule or S.CONSTANT_ONE)
        return io.NodeOutput(tuple(terms or ()) + ((conditioning, term),))


class GuidanceLabPostProcess(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabPostProcess",
            display_name="Guidance Post-processing",
            category=CATEGORY,
            description="Optional post-processing of the guided prediction: CFG rescale, CFG-Zero*, APG, Perp-Neg. "
                        "Every option's default is off.",
            inputs=[
                io.Float.Input("rescale_phi", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="CFG rescale strength phi (Lin et al. 2024, arXiv 2305.08891); 0 = off, 0.7 is the paper's."),
                io.Combo.Input("rescale_space", options=list(C.RESCALE_SPACES), default="auto",
                               tooltip="Space of the rescale std: auto = v-prediction for eps/v models, x0 for flow."),
                io.Boolean.Input("cfg_zero_star", default=False,
                                 tooltip="CFG-Zero* optimized scale of the unconditional (Fan et al. 2025); off = plain."),
                io.Int.Input("zero_init_steps", default=0, min=0, max=100,
                             tooltip="CFG-Zero* zero-init: the first K steps output zero velocity (no model call); 0 = off."),
                io.Boolean.Input("apg", default=False,
                                 tooltip="Adaptive projected guidance (Sadat et al. 2025, arXiv 2410.02416); off = plain CFG."),
                io.Float.Input("apg_eta", default=C.APG_ETA_DEFAULT, min=-10.0, max=10.0, step=0.05,
                               tooltip="APG: weight of the guidance part parallel to D_pos (1 = keep, 0 = drop)."),
                io.Float.Input("apg_momentum", default=C.APG_MOMENTUM_DEFAULT, min=-0.99, max=0.99, step=0.05,
                               tooltip="APG momentum beta (negative in the paper, -0.5); 0 = off."),
                io.Float.Input("apg_norm_threshold", default=C.APG_NORM_DEFAULT, min=0.0, max=1000.0, step=0.5,
                               tooltip="APG: clamp of the guidance norm r (per sample); 0 = off."),
                io.Boolean.Input("perp_neg", default=False,
                                 tooltip="Perp-Neg: use only the part of the negative orthogonal to the positive "
                                         "(needs an empty conditioning); off = plain negative."),
            ],
            outputs=[T.PostProcess.Output(display_name="post")],
        )

    @classmethod
    def execute(cls, **kw):
        return io.NodeOutput(C.PostProcess(**kw))


def _common_inputs():
    return [
        io.Conditioning.Input("empty", optional=True,
                              tooltip="Empty-prompt conditioning. When connected: D = D_empty + cfg*(D_pos - D_empty) "
                                      "- neg_scale*(D_neg - D_empty). Not connected = standard CFG."),
        io.Float.Input("neg_scale", default=C.NEG_SCALE_DEFAULT, min=-C.CFG_MAX, max=C.CFG_MAX, step=0.1,
                       tooltip="Scale of the negative term; used only with an empty conditioning. "
                               "cfg - 1 reproduces standard CFG; 0 = negative off."),
        T.Schedule.Input("cfg_schedule", optional=True,
                         tooltip="Per-step multiplier f of the CFG strength: scale 1 + f*(cfg - 1). None = constant 1."),
        T.Schedule.Input("neg_schedule", optional=True, tooltip="Per-step multiplier of neg_scale. None = constant 1."),
        T.PostProcess.Input("post", optional=True, tooltip="Post-processing options; none = off."),
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
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Negative prompt: the unconditional of standard CFG."),
                io.Float.Input("cfg", default=C.CFG_DEFAULT, min=C.CFG_MIN, max=C.CFG_MAX, step=0.1, round=0.01,
                               tooltip="CFG scale s (Ho & Salimans w = s - 1); 1 = no guidance (one model row)."),
                *_common_inputs(),
                T.Terms.Input("terms", optional=True, tooltip="Extra weighted prompts from Guidance Term nodes."),
            ],
            outputs=[io.Guider.Output(display_name="guider")],
        )

    @classmethod
    def execute(cls, model, positive, cfg, neg_scale, negative=None, empty=None, cfg_schedule=None,
                neg_schedule=None, post=None, terms=None):
        terms = tuple(terms or ())
        named = {"positive": positive, "negative": negative, "empty": empty}
        named.update({f"term {i + 1}": c for i, (c, _) in enumerate(terms)})
        glue.check_batches(named)
        config = C.CFGConfig(cfg=cfg, cfg_schedule=cfg_schedule or S.CONSTANT_ONE, neg_scale=neg_scale,
                             neg_schedule=neg_schedule or S.CONSTANT_ONE, terms=tuple(t for _, t in terms),
                             post=post or C.PostProcess())
        if negative is None and empty is None and cfg != 1.0:
            raise C.GuidanceConfigError(f"cfg={cfg} needs an unconditional: connect 'negative' or 'empty', or set cfg to 1")
        return io.NodeOutput(Guider(model, config, positive, negative, empty, [c for c, _ in terms]))


class Guider(comfy.samplers.CFGGuider):
    """CFGGuider whose predict_noise runs the Guidance Lab combiner."""

    def __init__(self, model_patcher, config, positive, negative, empty, term_conds):
        if model_patcher.model_options.get(PATCH_MARK):
            raise C.GuidanceConfigError("this MODEL already carries the Guidance Lab CFG patch; use the patch "
                                        "(with KSampler) or the CFG Guider, not both")
        super().__init__(model_patcher)
        conds = {C.POSITIVE: positive}
        if negative is not None:
            conds[C.NEGATIVE] = negative
        if empty is not None:
            conds[C.EMPTY] = empty
        for i, c in enumerate(term_conds):
            conds[f"term{i}"] = c
        self.inner_set_conds(conds)
        self.cfg = config.cfg
        param = glue.parameterization_of(glue.model_sampling_of(model_patcher))
        self.combiner = C.CFGCombiner(config, negative is not None, empty is not None, param)

    def set_cfg(self, cfg):
        self.cfg = cfg
        self.combiner = C.CFGCombiner(C.CFGConfig(**{**self.combiner.config.__dict__, "cfg": cfg}),
                                      self.combiner.has_negative, self.combiner.has_empty,
                                      self.combiner.parameterization)

    def outer_sample(self, *args, **kwargs):
        self.combiner.reset()
        return super().outer_sample(*args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        return glue.guided_predict(self.inner_model, self.conds, self.combiner, self.cfg, x, timestep, model_options)


PATCH_MARK = "guidance_lab_cfg_patch"
EMPTY_KEY = "guidance_lab_empty"


class PatchState:
    """Hooks of the MODEL patch. ComfyUI's own sampling_function keeps running; we
    (1) add the empty prompt to the guider's conds before they are processed (OUTER_SAMPLE wrapper),
    (2) choose which conds this step evaluates, in ComfyUI's single batched call (CALC_COND_BATCH wrapper),
    (3) combine and fold into (cond, uncond) in a pre-CFG hook, so any sampler_cfg_function
        (RescaleCFG, ...) and post-CFG hooks of other packs still act, in order."""

    def __init__(self, combiner: C.CFGCombiner, empty):
        self.combiner = combiner
        self.empty = empty
        self.guiders = []
        self.stash = None

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options (which holds our pre-CFG hook) but not
        # the wrappers: every clone must keep talking to this one state object.
        return self

    def outer_sample(self, executor, *args, **kwargs):
        guider = executor.class_obj
        self.combiner.reset()
        if self.empty is not None:
            guider.conds[EMPTY_KEY] = [c.copy() for c in comfy.sampler_helpers.convert_cond(self.empty)]
        self.guiders.append(guider)
        try:
            return executor(*args, **kwargs)
        finally:
            self.guiders.pop()
            self.stash = None

    def calc_cond_batch(self, executor, model, conds, x_in, timestep, model_options):
        guider = self.guiders[-1] if self.guiders else None
        if guider is None or len(conds) != 2 or conds[0] is not guider.conds.get("positive"):
            return executor(model, conds, x_in, timestep, model_options)
        plan = self.combiner.plan(glue.step_context(timestep, model_options, model.model_sampling))
        if plan.zero_init:
            self.stash = (x_in, None, True)
            return [x_in.new_zeros(x_in.shape), x_in.new_zeros(x_in.shape)]
        new = [conds[0], conds[1] if C.NEGATIVE in plan.needed else None]
        if C.EMPTY in plan.needed:
            new.append(guider.conds[EMPTY_KEY])
        out = executor(model, new, x_in, timestep, model_options)
        self.stash = (x_in, out[2] if len(out) > 2 else None, False)
        return out[:2]

    def pre_cfg(self, args):
        out, x, s = args["conds_out"], args["input"], args["cond_scale"]
        stash, self.stash = self.stash, None
        if stash is None or stash[0] is not x:
            return out  # not a call of ours (another guider): leave it as it is
        if stash[2]:
            return list(C.fold_to_pair(x.clone(), x.clone(), s))
        model, timestep = args["model"], args["timestep"]
        plan = self.combiner.plan(glue.step_context(timestep, args["model_options"], model.model_sampling), s)
        preds = {C.POSITIVE: out[0], C.NEGATIVE: out[1]}
        if stash[1] is not None:
            preds[C.EMPTY] = stash[1]
        if glue.is_plain(plan, self.combiner, s):
            return out
        alpha = glue.alpha_of(self.combiner.parameterization, timestep).to(x.dtype)
        guided = self.combiner.combine(plan, preds, x, timestep, alpha)
        return list(C.fold_to_pair(out[0], guided, s))


class GuidanceLabCFGPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabCFGPatch",
            display_name="CFG Patch (Guidance Lab)",
            category=CATEGORY,
            description="Gives the stock KSampler per-step CFG schedules, post-processing and an optional empty-prompt "
                        "term. Uses wrappers and a pre-CFG hook, so it stacks with other packs' patches "
                        "(RescaleCFG etc.) instead of taking the single sampler_cfg_function slot.",
            inputs=[io.Model.Input("model", tooltip="The model to patch (it is cloned; the input stays unchanged)."),
                    *_common_inputs()],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, neg_scale, empty=None, cfg_schedule=None, neg_schedule=None, post=None):
        if empty is not None:
            glue.conditioning_batch(empty, "empty")
        config = C.CFGConfig(cfg=None, cfg_schedule=cfg_schedule or S.CONSTANT_ONE, neg_scale=neg_scale,
                             neg_schedule=neg_schedule or S.CONSTANT_ONE, post=post or C.PostProcess())
        param = glue.parameterization_of(glue.model_sampling_of(model))
        state = PatchState(C.CFGCombiner(config, True, empty is not None, param), empty)
        m = model.clone()
        m.model_options[PATCH_MARK] = True
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, PATCH_MARK, state.outer_sample)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, PATCH_MARK, state.calc_cond_batch)
        m.set_model_sampler_pre_cfg_function(state.pre_cfg, disable_cfg1_optimization=empty is not None)
        return io.NodeOutput(m)


CFG_NODES = [GuidanceLabSchedule, GuidanceLabTerm, GuidanceLabPostProcess, GuidanceLabCFGGuider, GuidanceLabCFGPatch]
