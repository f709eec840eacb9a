"""Distilled guidance as a schedule: the guidance value a guidance-distilled model reads as an input (Flux dev's and
HunyuanVideo's guidance embedding, what ComfyUI's FluxGuidance node sets in the conditioning; the toy world's
distilled student) follows a per-step schedule, g_i = g * f(i), for every row of every model call.

The value reaches the model as ComfyUI's `guidance` model input (comfy.model_base: extra_conds -> kwargs of
apply_model); an APPLY_MODEL wrapper replaces it per call with the step's value, before the model casts it, so a
constant schedule (f = 1) is bit for bit FluxGuidance at g. The step of each call is schedules.StepCounter's (whole
steps for multi-stage samplers), restarted per run by an OUTER_SAMPLE wrapper.
"""

from __future__ import annotations

import torch

import comfy.patcher_extension
from comfy_api.latest import io

from ..guidance_core import schedules
from ..guidance_core.cfg import DISTILLED_GUIDANCE_DEFAULT, DISTILLED_GUIDANCE_RANGE as GUIDANCE_RANGE
from ..guidance_core.errors import GuidanceConfigError, require_finite
from . import sampling_facts
from . import socket_types

MARK = "guidance_lab_distilled_guidance"


def check_guidance_input(model_patcher) -> None:
    """Refuse a model that has no guidance input (not guidance-distilled, or Flux schnell's switched-off embedding)."""
    base = model_patcher.model
    params = getattr(base.diffusion_model, "params", None)
    extra_conds = getattr(type(base), "extra_conds", None)
    reads = extra_conds is not None and sampling_facts.source_mentions(extra_conds, '"guidance"')
    if not reads or getattr(params, "guidance_embed", True) is False:
        raise GuidanceConfigError(
            f"{type(base).__name__} has no distilled-guidance input (a guidance embedding as in Flux dev or HunyuanVideo); "
            "for this model use the CFG Guider or CFG Patch (a cfg schedule), or a NAG term at cfg 1"
        )


class DistilledGuidance:
    """g_i = guidance * f(i) on the model's `guidance` input, per call."""

    def __init__(self, guidance: float, schedule: schedules.Schedule):
        self.guidance, self.schedule = guidance, schedule
        self.steps = schedules.StepCounter()

    def __deepcopy__(self, memo):
        return self

    def install(self, model_patcher):
        model_patcher.model_options[MARK] = True
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, MARK, self.outer_sample)
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, MARK, self.apply_model)
        return model_patcher

    def outer_sample(self, executor, *args, **kwargs):
        self.steps.reset(sampling_facts.sampler_name(args[2] if len(args) > 2 else kwargs.get("sampler")))
        return executor(*args, **kwargs)

    def value(self, sigma: torch.Tensor, transformer_options: dict, model_sampling) -> float:
        ctx = sampling_facts.step_context(sigma, {"transformer_options": transformer_options}, model_sampling)
        step = self.steps.step_of(ctx.sigma, ctx.sample_sigmas)
        f = schedules.value(self.schedule, ctx.sigma, ctx.sample_sigmas, ctx.sigma_min, ctx.sigma_max, step)
        return self.guidance if f == 1.0 else self.guidance * f

    def apply_model(
        self,
        executor,
        x,
        t,
        c_concat=None,
        c_crossattn=None,
        control=None,
        transformer_options={},  # noqa: B006
        **kwargs,
    ):
        if "guidance" not in kwargs:
            raise GuidanceConfigError(
                f"{type(executor.class_obj).__name__} got no guidance input in this call; the "
                "Distilled Guidance Schedule needs a guidance-distilled model (Flux dev, HunyuanVideo)"
            )
        g = kwargs["guidance"]
        kwargs["guidance"] = torch.full_like(g, self.value(t, transformer_options, executor.class_obj.model_sampling))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


class GuidanceLabDistilledGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GuidanceLabDistilledGuidance",
            display_name="Distilled Guidance Schedule",
            category="Guidance Lab/cfg",
            description="The guidance value of a guidance-distilled model (Flux dev, Flux Kontext, HunyuanVideo: what "
            "FluxGuidance sets) per step: guidance * schedule. A constant schedule is exactly FluxGuidance at "
            "that value; the value set here replaces the conditioning's for every prompt. One model call per "
            "step, as without it.",
            inputs=[
                io.Model.Input("model", tooltip="A guidance-distilled model (its guidance embedding is the input)."),
                io.Float.Input(
                    "guidance",
                    default=DISTILLED_GUIDANCE_DEFAULT,
                    min=GUIDANCE_RANGE[0],
                    max=GUIDANCE_RANGE[1],
                    step=0.1,
                    tooltip="The distilled guidance value g at schedule 1 (FluxGuidance's 'guidance'; Flux dev's "
                    "default 3.5).",
                ),
                socket_types.Schedule.Input(
                    "schedule",
                    optional=True,
                    tooltip="Per-step multiplier f: the model reads g * f at each step. None = constant 1.",
                ),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, guidance, schedule=None):
        g = require_finite("guidance", guidance)
        if not GUIDANCE_RANGE[0] <= g <= GUIDANCE_RANGE[1]:
            raise GuidanceConfigError(f"guidance={g}; use a value in [{GUIDANCE_RANGE[0]:g}, {GUIDANCE_RANGE[1]:g}]")
        check_guidance_input(model)
        if model.model_options.get(MARK):
            raise GuidanceConfigError("this MODEL already carries a Distilled Guidance Schedule; use one per model")
        return io.NodeOutput(DistilledGuidance(g, schedule or schedules.CONSTANT_ONE).install(model.clone()))


DISTILLED_NODES = [GuidanceLabDistilledGuidance]
