"""Guidance-scale schedules: a multiplier f for each sampling step.

A schedule returns a multiplier f of a guidance *strength* (the part of the guided
prediction beyond the unguided one). For standard CFG, D = D_pos + f*(s - 1)*(D_pos - D_neg),
so f = 1 is plain CFG at scale s and f = 0 is no guidance (the negative is not evaluated).

Position of a step, p in [0, 1]:
  - axis "progress": p = i / (n - 1) for step i of this run's n steps; every model call of a step has
    its step's i (see StepCounter for which step a call is in), so a multi-stage sampler's calls of one
    step share one value;
  - axis "sigma": p = (log sigma_max - log sigma) / (log sigma_max - log sigma_min) over the
    model's whole noise range, so a schedule means the same at any denoise value.

Kinds (start -> end means f(0) = start, f(1) = end):
  constant    f = start
  linear      f = start + (end - start) * p
  cosine      f = end + (start - end) * (1 + cos(pi * p)) / 2
  power_up    f = start + (end - start) * p^k            (the change comes late)
  power_down  f = end + (start - end) * (1 - p)^k        (the change comes early)
  interval    f = inside if sigma_lo < sigma <= sigma_hi else outside
              (guidance interval, Kynkaanniemi et al. 2024, arXiv 2404.07724; always by sigma)
  keyframes   piecewise-linear through (p_j, f_j), constant before the first / after the last
  adaptive    f = start until the term's two predictions agree, cos(eps_key, eps_ref) >= threshold, then 0
              for the rest of the run (adaptive guidance, Castillo et al. 2023, arXiv 2312.12487); decided
              while sampling (cfg.CFGCombiner.observe), so value() gives `start`, what it is until it stops
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from .errors import GuidanceConfigError, require_finite

KINDS = ("constant", "linear", "cosine", "power_up", "power_down", "interval", "keyframes", "adaptive")
AXES = ("progress", "sigma")

# Defaults and ranges, imported by the node schema (one place).
DEFAULTS = {
    "kind": "constant",
    "axis": "progress",
    "start": 1.0,
    "end": 0.0,
    "exponent": 2.0,
    "sigma_lo": 0.28,
    "sigma_hi": 5.42,
    "inside": 1.0,
    "outside": 0.0,
    "keyframes": "0:1, 0.5:1, 1:0",
    "threshold": 0.99,
}
RANGES = {"value": (-100.0, 100.0), "exponent": (0.01, 100.0), "sigma": (0.0, 1.0e4), "threshold": (-1.0, 1.0)}
# A sigma_hi of this value means "no upper bound": it lies above every model's sigma_max (EDM/Playground 80,
# SD1.5 14.6, zero-terminal-SNR ~4.5e3). The one spelling of "no upper bound" for the node schemas and the core.
SIGMA_NO_BOUND = RANGES["sigma"][1]


def in_window(sigma: float, lo: float, hi: float) -> bool:
    """The pack's one sigma-window convention, for schedules' guidance interval and classifier guidance alike:
    a step is inside when lo < sigma <= hi (half-open like Kynkaanniemi et al. 2024's interval (sigma_lo, sigma_hi]:
    with lo = 0 every step a sampler evaluates, sigma > 0, is inside)."""
    return lo < sigma <= hi


@dataclass(frozen=True)
class Schedule:
    """A guidance multiplier schedule (see the module docstring for the formulas)."""

    kind: str = DEFAULTS["kind"]
    start: float = DEFAULTS["start"]
    end: float = DEFAULTS["end"]
    exponent: float = DEFAULTS["exponent"]
    sigma_lo: float = DEFAULTS["sigma_lo"]
    sigma_hi: float = DEFAULTS["sigma_hi"]
    inside: float = DEFAULTS["inside"]
    outside: float = DEFAULTS["outside"]
    keyframes: tuple = field(default_factory=lambda: parse_keyframes(DEFAULTS["keyframes"]))
    axis: str = DEFAULTS["axis"]
    threshold: float = DEFAULTS["threshold"]

    def __post_init__(self):
        validate(self)


def validate(s: Schedule) -> None:
    """Raise GuidanceConfigError naming the field when a schedule is unusable."""
    if s.kind not in KINDS:
        raise GuidanceConfigError(f"schedule kind={s.kind!r}; accepted: {', '.join(KINDS)}")
    if s.axis not in AXES:
        raise GuidanceConfigError(f"schedule axis={s.axis!r}; accepted: {', '.join(AXES)}")
    vlo, vhi = RANGES["value"]
    for name in ("start", "end", "inside", "outside"):
        v = require_finite(f"schedule {name}", getattr(s, name))
        if not vlo <= v <= vhi:
            raise GuidanceConfigError(f"schedule {name}={v}; a multiplier lies in [{vlo:g}, {vhi:g}]")
    th = require_finite("schedule threshold", s.threshold)
    if not RANGES["threshold"][0] <= th <= RANGES["threshold"][1]:
        raise GuidanceConfigError(f"schedule threshold={th}; a cosine similarity lies in [-1, 1]")
    ex = require_finite("schedule exponent", s.exponent)
    if ex <= 0:
        raise GuidanceConfigError(f"schedule exponent={ex}; use a number > 0")
    lo = require_finite("schedule sigma_lo", s.sigma_lo)
    hi = float(s.sigma_hi)
    if math.isnan(hi):
        raise GuidanceConfigError("schedule sigma_hi=nan is not a number; use a sigma > sigma_lo (inf allowed)")
    if lo < 0:
        raise GuidanceConfigError(f"schedule sigma_lo={lo}; use a sigma >= 0")
    if lo > hi:
        raise GuidanceConfigError(
            f"schedule sigma_lo={lo} is greater than sigma_hi={hi}; the interval needs sigma_lo <= sigma_hi"
        )
    if s.kind == "keyframes":
        if len(s.keyframes) == 0:
            raise GuidanceConfigError("schedule keyframes is empty; give at least one 'position:value' pair")
        prev = -math.inf
        for j, kf in enumerate(s.keyframes):
            if len(kf) != 2:
                raise GuidanceConfigError(f"schedule keyframes[{j}]={kf!r}; each keyframe is (position, value)")
            p = require_finite(f"schedule keyframes[{j}] position", kf[0])
            v = require_finite(f"schedule keyframes[{j}] value", kf[1])
            if not vlo <= v <= vhi:
                raise GuidanceConfigError(f"schedule keyframes[{j}] value={v}; a multiplier lies in [{vlo:g}, {vhi:g}]")
            if not 0.0 <= p <= 1.0:
                raise GuidanceConfigError(f"schedule keyframes[{j}] position={p}; positions lie in [0, 1]")
            if p <= prev:
                raise GuidanceConfigError(
                    f"schedule keyframes[{j}] position={p} does not increase (previous {prev}); "
                    "list keyframes with strictly increasing positions"
                )
            prev = p


def parse_keyframes(text: str) -> tuple:
    """Parse "0:7, 0.5:3, 1:1" (or one pair per line) into ((0.0, 7.0), (0.5, 3.0), (1.0, 1.0))."""
    pairs = []
    for j, chunk in enumerate(c for c in text.replace("\n", ",").replace(";", ",").split(",") if c.strip()):
        if ":" not in chunk:
            raise GuidanceConfigError(
                f"schedule keyframes item {j} {chunk.strip()!r}; write 'position:value', e.g. '0.5:3'"
            )
        p, v = chunk.split(":", 1)
        try:
            pairs.append((float(p), float(v)))
        except ValueError:
            raise GuidanceConfigError(f"schedule keyframes item {j} {chunk.strip()!r} is not 'number:number'") from None
    return tuple(sorted(pairs, key=lambda kv: kv[0]))


CONSTANT_ONE = Schedule()


def _shape(s: Schedule, p: float) -> float:
    p = min(max(p, 0.0), 1.0)
    if s.kind == "constant":
        return s.start
    if s.kind == "linear":
        return s.start + (s.end - s.start) * p
    if s.kind == "cosine":
        return s.end + (s.start - s.end) * 0.5 * (1.0 + math.cos(math.pi * p))
    if s.kind == "power_up":
        return s.start + (s.end - s.start) * p**s.exponent
    if s.kind == "power_down":
        return s.end + (s.start - s.end) * (1.0 - p) ** s.exponent
    if s.kind == "keyframes":
        kf = s.keyframes
        if p <= kf[0][0]:
            return kf[0][1]
        for (p0, v0), (p1, v1) in zip(kf, kf[1:]):
            if p <= p1:
                return v0 + (v1 - v0) * ((p - p0) / (p1 - p0))  # fraction first: exact at p = p1
        return kf[-1][1]
    raise AssertionError(s.kind)


def sigma_position(sigma: float, sigma_min: float, sigma_max: float) -> float:
    """p = (log sigma_max - log sigma) / (log sigma_max - log sigma_min), clamped to [0, 1]."""
    if sigma <= sigma_min:
        return 1.0
    if sigma >= sigma_max:
        return 0.0
    return (math.log(sigma_max) - math.log(sigma)) / (math.log(sigma_max) - math.log(sigma_min))


# ---------------------------------------------------------------- which step a model call is in
# k-diffusion samplers (ComfyUI's names) whose step i may call the model at the next steps' sigmas, and how far:
# heun evaluates its corrector at sigma_{i+1}; heunpp2 at sigma_{i+1} and sigma_{i+2}; the ancestral 2-stage
# samplers at the log-midpoint of sigma_i and sigma_down, which is sigma_{i+1} itself at eta = 1
# (sigma_down = sigma_{i+1}^2 / sigma_i). Every other sampler's later calls of a step lie between sigma_i and
# sigma_{i+1} (dpm_2, dpmpp_sde, seeds_2/3), at sigma_i again (sa_solver_pece) or it calls once per step.
SAMPLER_REACH = {
    "heun": 1,
    "heunpp2": 2,
    "dpm_2_ancestral": 1,
    "dpm_2_ancestral_RF": 1,
    "dpmpp_2s_ancestral": 1,
    "dpmpp_2s_ancestral_RF": 1,
    "dpmpp_2s_ancestral_cfg_pp": 1,
}
STEP_RTOL = 1e-5  # two sigmas within this relative distance are the same noise level (float32 rounding)


def run_sigmas(sample_sigmas: Sequence[float] | None) -> list | None:
    """This run's sigmas as floats, or None when there is no run (fewer than 2 entries: no step)."""
    if sample_sigmas is None:
        return None
    sig = [float(v) for v in sample_sigmas]
    return sig if len(sig) >= 2 else None


def _along(sig: list) -> float:
    """+1 for a run whose sigmas increase (FlipSigmas, inversion), -1 for the usual decreasing run."""
    return 1.0 if sig[-1] > sig[0] else -1.0


def _reached(sigma: float, target: float, d: float) -> bool:
    """sigma is at `target` or beyond it in the run's direction d (within STEP_RTOL)."""
    return d * (sigma - target) >= -STEP_RTOL * abs(target)


def _beyond(sigma: float, other: float, d: float) -> bool:
    """sigma lies strictly beyond `other` in the run's direction d (by more than STEP_RTOL)."""
    return d * (sigma - other) > STEP_RTOL * max(abs(sigma), abs(other))


def reached_step(sigma: float, sample_sigmas: Sequence[float]) -> int:
    """The last step of the run whose sigma this call's sigma has reached: the largest j <= n - 1 with sigma
    at sigma_j or beyond it in the run's direction (0 before sigma_0). For a sampler that calls the model once
    per step this is the call's step; StepCounter gives it for every sampler."""
    sig = run_sigmas(sample_sigmas)
    if sig is None:
        raise GuidanceConfigError(
            f"sample_sigmas has {len(sample_sigmas or ())} entries; a run needs at least 1 step (2 sigmas)"
        )
    d = _along(sig)
    j = 0
    for i in range(1, len(sig) - 1):
        if _reached(sigma, sig[i], d):
            j = i
    return j


class StepCounter:
    """Which step of a sampling run each model call is in: one definition for every sampler, used by
    progress schedules, adaptive stops, APG momentum and the classifier's every_n.

    The run's sigmas s_0 .. s_n (n steps, in the run's order: decreasing, or increasing for inverted runs) and
    the sequence of calls decide. Step i's first call is at s_i; its later calls lie
    between s_i and s_{i+1} (dpm_2's midpoint), at s_i again (sa_solver_pece), or, for a sampler that evaluates
    ahead (SAMPLER_REACH r > 0: heun r = 1, heunpp2 r = 2), at s_{i+1} .. s_{i+r}. With j = reached_step(sigma)
    for a call at sigma, k the step of the previous call, c the calls made in step k and sigma_p the previous
    call's sigma, the call is
      - the first call of the run (step j) when there is no previous call, the run's sigmas changed, or it is
        back at s_0 after a call beyond it (a new run of the same sigmas);
      - in step k when j == k, or when 0 < c <= r, it moves beyond sigma_p in the run's direction and j <= k + r
        (heun: s_i, then s_{i+1} in step i; the next call at s_{i+1} again does not move on: step i + 1);
      - else the first call of step max(j, k + 1) (capped at n - 1).
    Whole steps, so a step's calls all see one schedule value, one adaptive state and one APG momentum.
    Not covered (the calls alone cannot tell): a sampler not in SAMPLER_REACH that
    evaluates at the next step's sigma within a step (it is assigned by sigma, r = 0: its call at s_{i+1} starts
    step i + 1); s_churn > 0 (no ComfyUI node sets it: a step's first call above s_i); an ancestral 2-stage sampler
    at eta > 1, whose steps with sigma_down = 0 make one call."""

    def __init__(self, sampler: str | None = None):
        self.reset(sampler)

    def reset(self, sampler: str | None = None):
        """A new run (or none yet) of `sampler` (ComfyUI's sampler name; None = not known)."""
        self.reach = SAMPLER_REACH.get(sampler, 0) if sampler else 0
        self.sigmas, self.step, self.calls, self.last = None, None, 0, None
        self.started = False  # whether the latest call started a run

    def step_of(self, sigma: float, sample_sigmas: Sequence[float] | None) -> int | None:
        """The step of this call (see the class docstring); None without the run's sigmas. Call once per model
        call, in order."""
        sig = run_sigmas(sample_sigmas)
        if sig is None:
            self.started = False
            return None
        d, j = _along(sig), reached_step(sigma, sig)
        restart = (
            self.step is None or sig != self.sigmas or not _beyond(sigma, sig[0], d) and _beyond(self.last, sig[0], d)
        )  # back at s_0
        self.started = restart
        if restart:
            self.sigmas, self.step, self.calls = sig, j, 0
        elif not (
            j == self.step
            or (0 < self.calls <= self.reach and j <= self.step + self.reach and _beyond(sigma, self.last, d))
        ):
            self.step, self.calls = min(max(j, self.step + 1), len(sig) - 2), 0
        self.calls += 1
        self.last = sigma
        return self.step


def progress(step: int, sample_sigmas: Sequence[float]) -> float:
    """p = i / (n - 1) for step i of n (0 for a single step)."""
    n = len(sample_sigmas) - 1
    if n < 1:
        raise GuidanceConfigError(f"steps={n}; a schedule needs at least 1 step")
    if n == 1:
        return 0.0
    return min(max(step / (n - 1), 0.0), 1.0)


def value(
    s: Schedule,
    sigma: float,
    sample_sigmas: Sequence[float] | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    step: int | None = None,
) -> float:
    """The multiplier f at noise level `sigma`, in step `step` of the run.

    sample_sigmas (this run's sigmas) is needed for axis "progress", with the call's step (StepCounter;
    without it, reached_step(sigma), right for one call per step); sigma_min/sigma_max (the model's full
    range) for axis "sigma". Interval schedules need neither.
    """
    if s.kind == "interval":
        return s.inside if in_window(sigma, s.sigma_lo, s.sigma_hi) else s.outside
    if s.kind in ("constant", "adaptive"):
        return s.start
    if s.axis == "sigma":
        if sigma_min is None or sigma_max is None:
            raise GuidanceConfigError("axis='sigma' needs the model's sigma_min and sigma_max")
        p = sigma_position(sigma, sigma_min, sigma_max)
    else:
        if sample_sigmas is None:
            raise GuidanceConfigError("axis='progress' needs this run's sample_sigmas")
        p = progress(reached_step(sigma, sample_sigmas) if step is None else step, sample_sigmas)
    return _shape(s, p)


def step_values(
    s: Schedule, sample_sigmas: Sequence[float], sigma_min: float | None = None, sigma_max: float | None = None
) -> list[float]:
    """The multiplier at each of the run's steps (sample_sigmas[:-1]): what a plot shows."""
    sig = [float(v) for v in sample_sigmas]
    if len(sig) < 2:
        raise GuidanceConfigError(f"steps={len(sig) - 1}; a schedule needs at least 1 step")
    if sigma_min is None:
        sigma_min = min(v for v in sig if v > 0) if any(v > 0 for v in sig) else 1e-3
    if sigma_max is None:
        sigma_max = max(sig)
    out = [value(s, v, sig, sigma_min, sigma_max, step=i) for i, v in enumerate(sig[:-1])]
    for i, v in enumerate(out):
        if not math.isfinite(v):
            raise GuidanceConfigError(f"schedule gives {v} at step {i}; check start/end/keyframes")
    return out


def scaled(s: Schedule, factor: float) -> Schedule:
    """The same schedule with every value multiplied by `factor` (matched mean-scale sweeps)."""
    return replace(
        s,
        start=s.start * factor,
        end=s.end * factor,
        inside=s.inside * factor,
        outside=s.outside * factor,
        keyframes=tuple((p, v * factor) for p, v in s.keyframes),
    )


def from_fields(
    kind: str = DEFAULTS["kind"],
    axis: str = DEFAULTS["axis"],
    start: float = DEFAULTS["start"],
    end: float = DEFAULTS["end"],
    exponent: float = DEFAULTS["exponent"],
    sigma_lo: float = DEFAULTS["sigma_lo"],
    sigma_hi: float = DEFAULTS["sigma_hi"],
    inside: float = DEFAULTS["inside"],
    outside: float = DEFAULTS["outside"],
    keyframes: str = DEFAULTS["keyframes"],
    threshold: float = DEFAULTS["threshold"],
) -> Schedule:
    """A Schedule from the schedule node's fields (keyframes as text, parsed only for kind 'keyframes').
    Used by the node and by the preview route, so both build the same schedule."""
    kf = parse_keyframes(keyframes) if kind == "keyframes" else ()
    return Schedule(
        kind=kind,
        axis=axis,
        start=start,
        end=end,
        exponent=exponent,
        sigma_lo=sigma_lo,
        sigma_hi=sigma_hi,
        inside=inside,
        outside=outside,
        keyframes=kf,
        threshold=threshold,
    )
