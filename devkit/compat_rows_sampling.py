"""Compatibility rows of samplers and schedulers (devkit/compat_matrix.py): every sampler and scheduler through the
patch and the guider, and which step a call is in (adaptive stops on multi-stage samplers and on FlipSigmas' run)."""

from __future__ import annotations

import functools
import math

import torch

from . import comfy_host as H
from .cfg_helpers import custom_sample, our_guider, post, schedule
from .compat_doc import SAMPLERS, SCHEDULERS
from .compat_measure import (
    CFG,
    GUIDER,
    PATCH,
    QUICK_SAMPLERS,
    QUICK_SCHEDULERS,
    classifier_guided,
    constant,
    eps_model,
    error_text,
    guided,
    interval_row,
    measure,
    native,
    row,
    settings,
)
from .sampler_steps import mixed_steps, rows_by_step


# ------------------------------------------------------------------ samplers and schedulers
def sampler_rows(quick: bool = False) -> list:
    import comfy.samplers

    names = QUICK_SAMPLERS if quick else comfy.samplers.KSampler.SAMPLERS
    return [r for name in names for r in sampling_rows(SAMPLERS, name, sampler=name, scheduler="normal")]


def scheduler_rows(quick: bool = False) -> list:
    import comfy.samplers

    names = QUICK_SCHEDULERS if quick else comfy.samplers.KSampler.SCHEDULERS
    return [r for name in names for r in sampling_rows(SCHEDULERS, name, sampler="euler", scheduler=name)]


def sampling_rows(area, item, **kw) -> list:
    """Plain CFG and unguided steps exact, every setting finite, the interval schedule's rows per model call,
    classifier guidance finite; through the patch and the guider."""
    m = eps_model()
    rows = []
    for route in (PATCH, GUIDER):
        plain = functools.cache(lambda: native(route, m, CFG, **kw))  # the lambdas below run in this iteration
        rows.append(measure((area, item, "plain cfg 6", route), lambda: guided(route, m, CFG, **kw), plain, exact=True))
        rows.append(
            measure(
                (area, item, "schedule 0 at cfg 6 = cfg 1", route),
                lambda: guided(route, m, CFG, dict(cfg_schedule=constant(0.0)), **kw),
                lambda: native(route, m, 1.0, **kw),
                exact=True,
            )
        )
        for name, cfg_settings in settings().items():
            rows.append(measure((area, item, name, route), lambda: guided(route, m, CFG, cfg_settings, **kw), plain))
        rows.append(interval_row((area, item, "interval schedule: rows per model call", route), **kw))
        rows.append(
            measure(
                (area, item, "classifier guidance (scale 10)", route), lambda: classifier_guided(route, m, **kw), plain
            )
        )
    return rows


# ------------------------------------------------------------------ which step a call is in
STEP_SAMPLERS = ["heun", "dpm_2", "dpmpp_2s_ancestral", "dpmpp_3m_sde", "uni_pc"]
STEP_CHECK_STEPS = 5


def whole_steps_row(key, run, model, guided: list) -> dict:
    """run() with an adaptive stop after step 0: every call of the guided steps has 2 rows, every other call 1,
    steps as the sampler's own loop counts them (devkit.sampler_steps)."""
    try:
        with torch.inference_mode():
            by_step = rows_by_step(model, run)
    except Exception as e:  # any crash is a FAIL row, with its text
        return row(*key, "FAIL", error_text(e))
    got = sorted(s for s, rows in by_step.items() if rows[0] == 2)
    if mixed_steps(by_step) or got != guided:
        return row(*key, "FAIL", f"rows per step {by_step}; guided steps expected {guided}", 1.0)
    calls = sum(len(r) for r in by_step.values())
    return row(*key, "exact", f"{calls} model calls in {len(by_step)} steps, each step all guided or all not", 0.0)


def step_rows() -> list:
    """Adaptive stop after step 0 on multi-stage samplers (every call of a step guided or none), and on
    FlipSigmas' increasing run (inversion): a progress schedule moves, the APG momentum keeps one value per step,
    an adaptive stop takes effect."""
    m, n = eps_model(), STEP_CHECK_STEPS
    stop = dict(cfg_schedule=schedule(kind="adaptive", threshold=-1.0))
    rows = []
    for sampler in STEP_SAMPLERS:
        for route in (PATCH, GUIDER):
            key = (SAMPLERS, sampler, "adaptive stop after step 0: whole steps", route)
            rows.append(whole_steps_row(key, lambda: guided(route, m, CFG, stop, sampler=sampler, steps=n), m, [0]))
    flip = functools.cache(
        lambda: H.run_node(
            "FlipSigmas", sigmas=H.run_node("BasicScheduler", model=m, scheduler="normal", steps=n, denoise=1.0)[0]
        )[0]
    )
    item = "FlipSigmas (increasing sigmas)"
    for sampler in ("euler", "heun"):
        key = (SAMPLERS, item, f"{sampler}: adaptive stop after step 0", GUIDER)
        rows.append(whole_steps_row(key, lambda: guided(GUIDER, m, CFG, stop, sampler=sampler, sigmas=flip()), m, [0]))
    rows += [flipped_schedule_row(m, flip, item), flipped_apg_row(m, flip, item)]
    return rows


def flipped_schedule_row(m, flip, item) -> dict:
    """A linear progress schedule 7 -> 1 at cfg 2 on the increasing run: the step scale 1 + f that post-CFG
    hooks see goes 8 .. 2 in equal steps."""
    key = (SAMPLERS, item, "euler: linear progress schedule 7→1 moves", GUIDER)
    scales, rec = [], m.clone()
    rec.set_model_sampler_post_cfg_function(lambda a: (scales.append(float(a["cond_scale"])), a["denoised"])[1])
    lin = dict(cfg_schedule=schedule(kind="linear", start=7.0, end=1.0))
    done = measure(key, lambda: guided(GUIDER, rec, 2.0, lin, sigmas=flip()))
    if done["status"] != "finite":
        return done
    want = [8.0 - 6.0 * i / (STEP_CHECK_STEPS - 1) for i in range(STEP_CHECK_STEPS)]
    err = max((abs(a - b) for a, b in zip(scales, want)), default=math.inf) if len(scales) == len(want) else math.inf
    if not err < 1e-6:
        return row(*key, "FAIL", f"step scales {scales}, expected {want}", err)
    return row(*key, "exact", "step scales " + ", ".join(f"{v:g}" for v in scales), 0.0)


def flipped_apg_row(m, flip, item) -> dict:
    """APG with momentum on the increasing run: the combiner holds one committed momentum per step."""
    key = (SAMPLERS, item, "heun: APG momentum, one value per step", GUIDER)
    g = our_guider(m, CFG, post=post(apg=True, apg_momentum=-0.5))
    done = measure(key, lambda: custom_sample(m, g, sampler="heun", sigmas=flip()))
    if done["status"] != "finite":
        return done
    levels = g.runtime.combiner.momentum_levels()
    if levels != list(range(STEP_CHECK_STEPS)):
        return row(*key, "FAIL", f"momentum held at steps {levels}", 1.0)
    return row(*key, "exact", f"momentum committed at steps {levels}", 0.0)
