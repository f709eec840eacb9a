"""Classifier-free guidance combiners in D-space (denoised predictions) and post-processing.

Classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598):
    eps~ = (1 + w) eps(x, c) - w eps(x) ;  with s = 1 + w (ComfyUI's "cfg"):
    D = D_neg + s (D_pos - D_neg) = D_pos + (s - 1)(D_pos - D_neg).
Because D = (x - sigma*eps)/alpha is affine in eps, the same weights hold in D-space.

The combiner writes every guidance rule as  D = D_pos + sum_k c_k (D_k - D_ref_k), with
c_k = weight_k * schedule_k(step). A term whose c_k is 0 at a step needs no model
evaluation; when every c_k is 0 only the positive prompt is evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping, NamedTuple, Sequence

import torch

from . import guidance_filters
from . import schedules
from .parameterization import SPACES, default_rescale_space, from_space, per_sample, rescale_space_problem, to_space
from .errors import GuidanceConfigError, require_finite

# Defaults and ranges, imported by the node schema.
CFG_DEFAULT, CFG_MIN, CFG_MAX = 7.0, 0.0, 100.0
NEG_SCALE_DEFAULT = 6.0
TERM_WEIGHT_RANGE = (-100.0, 100.0)
MAX_RATIO_DEFAULT, MAX_RATIO_MAX = 0.0, 10.0  # a term's push cap (cap_push); 0 = none
# the guidance input of guidance-distilled models (Flux dev's embedded scale, FluxGuidance's value and range)
DISTILLED_GUIDANCE_DEFAULT, DISTILLED_GUIDANCE_RANGE = 3.5, (0.0, 100.0)
APG_ETA_DEFAULT, APG_MOMENTUM_DEFAULT, APG_NORM_DEFAULT = 0.0, -0.5, 15.0
# Accepted ranges (inclusive) of the post-processing settings; the node schema reads them, PostProcess checks them.
POST_RANGES = {
    "rescale_phi": (0.0, 1.0),
    "zero_init_steps": (0, 100),
    "apg_eta": (-10.0, 10.0),
    "apg_momentum": (-0.99, 0.99),
    "apg_norm_threshold": (0.0, 1000.0),
    "fresca_low": (0.0, 10.0),
    "fresca_high": (0.0, 10.0),
    "fresca_cutoff": (1, 10000),  # ComfyUI's FreSca
    "fdg_low": (0.0, 10.0),
    "fdg_high": (0.0, 10.0),
    "mambo_alpha": (0.0, 100.0),
    "dyn_mimic_scale": (0.0, 100.0),
    "dyn_percentile": (0.0, 1.0),
    "dyn_phi": (0.0, 1.0),
}
FRESCA_HIGH_DEFAULT, FRESCA_CUTOFF_DEFAULT = 1.25, 20  # ComfyUI's FreSca node (its scale_low default is 1)
FDG_LOW_DEFAULT, FDG_HIGH_DEFAULT = 0.5, 1.0  # diffusers' guidance_scales [10, 5]: the low band at half the scale
MAMBO_ALPHA_DEFAULT = 8.0  # diffusers' MagnitudeAwareGuidance
DYN_MIMIC_DEFAULT, DYN_PERCENTILE_DEFAULT = 7.0, 1.0  # sd-dynamic-thresholding's node
TERM_WEIGHT_DEFAULTS = {
    "prompt": 1.0,
    "perturbed": 3.0,
    "model": 1.0,
    "nag": 4.0,
}  # ComfyUI's PAG scale is 3; NAG's 5 = 1 + 4
RESCALE_SPACES = ("auto",) + SPACES
POSITIVE, NEGATIVE, EMPTY = "positive", "negative", "empty"


def _dims(t: torch.Tensor):
    return tuple(range(1, t.ndim))


# ---------------------------------------------------------------- plain formulas
def cfg_standard(d_pos: torch.Tensor, d_neg: torch.Tensor, scale: float) -> torch.Tensor:
    """Ho & Salimans 2022: D = D_neg + s (D_pos - D_neg)."""
    return d_neg + scale * (d_pos - d_neg)


def cfg_three_way(d_pos, d_neg, d_empty, s_pos: float, s_neg: float) -> torch.Tensor:
    """Positive, negative and empty prompt as separate terms:
    D = D_empty + s_pos (D_pos - D_empty) - s_neg (D_neg - D_empty).
    s_neg = s_pos - 1 reproduces standard CFG with the negative as unconditional."""
    return d_empty + s_pos * (d_pos - d_empty) - s_neg * (d_neg - d_empty)


def composable(d_empty: torch.Tensor, preds: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Composable diffusion (Liu et al. 2022, arXiv 2206.01714, eq. 10):
    D = D_empty + sum_i w_i (D_i - D_empty); a negative w_i means "not c_i"."""
    out = d_empty.clone()
    for d, w in zip(preds, weights):
        out = out + w * (d - d_empty)
    return out


def rescale(
    d_pos: torch.Tensor, d_cfg: torch.Tensor, phi: float, x: torch.Tensor, sigma, alpha, space: str = "v"
) -> torch.Tensor:
    """CFG rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", arXiv 2305.08891, Alg. 2), computed in prediction space `space` (y = a*D + b*x):
        y_resc = y_cfg * std(y_pos) / std(y_cfg)     (std per sample over C, H, W)
        y      = phi * y_resc + (1 - phi) * y_cfg
    """
    if phi == 0:
        return d_cfg
    y_pos = to_space(space, d_pos, x, sigma, alpha)
    y_cfg = to_space(space, d_cfg, x, sigma, alpha)
    dims = _dims(y_cfg)
    ratio = y_pos.std(dim=dims, keepdim=True) / y_cfg.std(dim=dims, keepdim=True).clamp(min=1e-12)
    y = phi * (y_cfg * ratio) + (1.0 - phi) * y_cfg
    return from_space(space, y, x, sigma, alpha)


def cfg_zero_star_alpha(d_pos: torch.Tensor, d_uncond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """CFG-Zero* optimized scale (Fan et al. 2025, arXiv 2503.18886, eq. 9), per sample:
    alpha* = <v_c, v_u> / (||v_u||^2 + 1e-8) with v = x - D (the velocity up to the factor
    1/sigma, which cancels; for eps models this is eps-space)."""
    v_c, v_u = (x - d_pos).flatten(1), (x - d_uncond).flatten(1)
    a = (v_c * v_u).sum(1) / (v_u.pow(2).sum(1) + 1e-8)
    return per_sample(a, x)


def cfg_zero_star_uncond(d_pos, d_uncond, x) -> torch.Tensor:
    """Scaled unconditional of CFG-Zero*: v_u' = alpha* v_u, i.e. D_u' = x - alpha*(x - D_u).
    Then D = D_u' + s (D_pos - D_u') is the paper's v = alpha* v_u + s (v_c - alpha* v_u)."""
    a = cfg_zero_star_alpha(d_pos, d_uncond, x)
    return x - a * (x - d_uncond)


def project(v: torch.Tensor, onto: torch.Tensor):
    """Split v into parts parallel and orthogonal to `onto`, per sample (all dims but batch)."""
    dims = _dims(v)
    u = onto / onto.norm(p=2, dim=dims, keepdim=True).clamp(min=1e-12)
    par = (v * u).sum(dim=dims, keepdim=True) * u
    return par, v - par


def apg_delta(
    delta: torch.Tensor,
    d_pos: torch.Tensor,
    eta: float,
    norm_threshold: float,
    running: torch.Tensor | None,
    momentum: float,
):
    """Adaptive projected guidance (Sadat et al. 2025, "Eliminating Oversaturation and Artifacts
    of High Guidance Scales in Diffusion Models", arXiv 2410.02416, Alg. 1):
        delta_bar = delta + beta * delta_bar_prev          (momentum beta, usually < 0)
        delta    *= min(1, r / ||delta||)                   (norm threshold r; 0 = off)
        delta     = delta_perp + eta * delta_par            (w.r.t. D_pos)
    and D = D_pos + (s - 1) * delta. eta = 1, beta = 0, r = 0 is exactly CFG.
    Returns (new delta, new running average)."""
    if momentum != 0.0:
        running = delta if running is None else delta + momentum * running
        delta = running
    if norm_threshold > 0:
        n = delta.norm(p=2, dim=_dims(delta), keepdim=True)
        delta = delta * torch.clamp(norm_threshold / n.clamp(min=1e-12), max=1.0)
    par, perp = project(delta, d_pos)
    return perp + eta * par, running


def cap_push(push: torch.Tensor, d_pos: torch.Tensor, max_ratio: float) -> torch.Tensor:
    """A term's push capped relative to the prediction it moves, per sample (the autoguidance packs' "max ratio"):
        push *= min(1, max_ratio * ||D_pos|| / ||push||)      (L2 over all dims but the batch; 0 = no cap)
    A cap at or above the push leaves it bit for bit as it is."""
    if max_ratio <= 0:
        return push
    n_push = push.norm(p=2, dim=_dims(push), keepdim=True)
    limit = max_ratio * d_pos.norm(p=2, dim=_dims(d_pos), keepdim=True)
    over = n_push > limit
    if not bool(over.any()):
        return push
    return torch.where(over, push * (limit / n_push.clamp(min=1e-30)), push)


def perp_neg_delta(d_neg_delta: torch.Tensor, d_pos_delta: torch.Tensor) -> torch.Tensor:
    """Perp-Neg (Armandpour et al. 2023, arXiv 2304.04968): keep only the part of
    d- = D_neg - D_empty orthogonal to d+ = D_pos - D_empty, per sample:
        d-_perp = d- - (<d-, d+> / ||d+||^2) d+ ,  D = D_empty + s (d+ - w_n d-_perp)."""
    return project(d_neg_delta, d_pos_delta)[1]


def fold_to_pair(d_cond: torch.Tensor, d_guided: torch.Tensor, scale: float):
    """Express a guided prediction as a (cond, uncond) pair for ComfyUI's cfg formula:
    returns (c, u') with u' + scale (c - u') = D, for a sampler_cfg_function of another node that
    replaces the CFG formula. Computed as u' = c - (D - c)/(scale - 1) in float64: the pair is
    exact to float64 rounding even for a scale near 1, where u' grows like 1/(scale - 1) and a
    float32 pair would lose (scale/(scale - 1)) * 6e-8 of relative precision. The caller casts the
    other node's result back to the model's dtype. scale must differ from 1 (at scale 1 a pair
    (D, anything) is exact)."""
    if scale == 1.0:
        raise GuidanceConfigError("fold_to_pair needs a scale other than 1; at scale 1 use (D, uncond)")
    c = d_cond.to(torch.float64)
    return c, c - (d_guided.to(torch.float64) - c) / (scale - 1.0)


def zero_init_start_noise(x_start: torch.Tensor, scaled_zero: torch.Tensor, scaled_one: torch.Tensor) -> torch.Tensor:
    """CFG-Zero* zero-init (Fan et al. 2025, arXiv 2503.18886, sec. 3.3): the first K steps of the ODE
    solver output zero velocity, so x stays x_start and the solver starts from step K. A sampler builds
    its start as x = a(sigma_K) * n + b(sigma_K) (its noise scaling, affine in the noise n); this returns
    the n with a * n + b = x_start, from b = scaled_zero (n = 0) and a + b = scaled_one (n = 1)."""
    return (x_start - scaled_zero) / (scaled_one - scaled_zero)


# ---------------------------------------------------------------- configuration
TERM_KINDS = ("prompt", "perturbed", "model", "nag")
REFERENCES = ("auto", POSITIVE, NEGATIVE, EMPTY)  # and "term N" (1-based) for another term


@dataclass(frozen=True)
class ExtraTerm:
    """One term with weight w (negative = "not") and its own schedule f, of one of four kinds:
    - prompt: D += w f (D_term - D_ref); reference auto = the baseline (composable diffusion);
    - perturbed: the model itself with part of the network perturbed (PAG, SEG, SLG; see perturbed_terms.py),
      D += w f (D_ref - D_term); reference auto = positive (Ahn et al. 2024, eq. 8);
    - model: another model (a weaker one: autoguidance, Karras et al. 2024, arXiv 2406.02507, eq. 2),
      D += w f (D_ref - D_term); reference auto = positive. With cfg 1, w = Karras's w - 1:
      D = D_bad + w_K (D_good - D_bad);
    - nag: normalized attention guidance (nag.py) inside the positive row's forward, phi = w f: it changes D_pos
      itself (every term that reads D_pos reads the NAG one); reference auto = positive, the only row it acts on.
    reference: "auto", "positive", "negative", "empty" or "term N" (another term's prediction, 1-based)."""

    weight: float
    schedule: schedules.Schedule = schedules.CONSTANT_ONE
    kind: str = "prompt"
    reference: str = "auto"
    max_ratio: float = (
        MAX_RATIO_DEFAULT  # cap of the push |w f (D_key - D_ref)| at max_ratio |D_pos| per sample (cap_push)
    )

    def __post_init__(self):
        require_finite("term weight", self.weight)
        if not 0.0 <= require_finite("term max_ratio", self.max_ratio) <= MAX_RATIO_MAX:
            raise GuidanceConfigError(
                f"term max_ratio={self.max_ratio}; use a value in [0, {MAX_RATIO_MAX:g}] (the push's "
                "largest size relative to the prediction; 0 = no cap)"
            )
        if self.kind == "nag" and self.max_ratio:
            raise GuidanceConfigError(
                "a nag term has no push of its own to cap (NAG caps itself: tau); set max_ratio 0"
            )
        if self.kind not in TERM_KINDS:
            raise GuidanceConfigError(f"term kind={self.kind!r}; accepted: {', '.join(TERM_KINDS)}")
        if self.kind == "nag" and self.schedule.kind == "adaptive":
            raise GuidanceConfigError(
                "a nag term with an adaptive schedule: its stop criterion compares a term's prediction "
                "with its reference, and NAG has no prediction of its own; use another schedule kind"
            )
        if self.kind == "nag" and self.reference not in ("auto", POSITIVE):
            raise GuidanceConfigError(
                f"nag term reference={self.reference!r}; NAG acts on the positive prompt's row: use auto or positive"
            )
        if self.reference not in REFERENCES and not re.fullmatch(r"term [1-9][0-9]*", self.reference):
            raise GuidanceConfigError(
                f"term reference={self.reference!r}; accepted: {', '.join(REFERENCES)} or "
                "'term N' (another term, 1-based)"
            )

    @property
    def moves_away(self) -> bool:
        """Perturbed and model terms are the reference moved away from: D += c (D_ref - D_term)."""
        return self.kind != "prompt"


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cos(a, b) = <a, b> / (|a| |b|) over all dims but the batch (0 where a norm is 0)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)


@dataclass(frozen=True)
class PostProcess:
    """Optional post-processing; the defaults switch everything off."""

    rescale_phi: float = 0.0  # Lin et al. rescale strength in [0, 1]; 0 = off
    rescale_space: str = "auto"  # auto = v for eps/v models, x0 for flow models
    cfg_zero_star: bool = False  # Fan et al. optimized scale
    zero_init_steps: int = 0  # Fan et al. zero-init: x unchanged for the first K steps (flow)
    apg: bool = False  # Sadat et al. adaptive projected guidance
    apg_eta: float = APG_ETA_DEFAULT
    apg_momentum: float = APG_MOMENTUM_DEFAULT
    apg_norm_threshold: float = APG_NORM_DEFAULT
    perp_neg: bool = False  # Perp-Neg projection of the negative term
    # the guidance term's reshapers (guidance_core/guidance_filters.py); each default is off
    tcfg: bool = False  # Kwon et al. tangential damping of the reference
    fresca: bool = False  # Huang et al. frequency scaling of delta (FFT)
    fresca_low: float = 1.0
    fresca_high: float = FRESCA_HIGH_DEFAULT
    fresca_cutoff: int = FRESCA_CUTOFF_DEFAULT
    fdg: bool = False  # Sadat et al. frequency-decoupled guidance (Laplacian pyramid)
    fdg_low: float = FDG_LOW_DEFAULT
    fdg_high: float = FDG_HIGH_DEFAULT
    mambo_alpha: float = 0.0  # MaMBo-G damping of the coefficient; 0 = off
    dyn_thresh: str = "off"  # dynamic thresholding of the result: off, mimic, imagen
    dyn_mimic_scale: float = DYN_MIMIC_DEFAULT
    dyn_percentile: float = DYN_PERCENTILE_DEFAULT
    dyn_phi: float = 1.0

    def __post_init__(self):
        if self.rescale_space not in RESCALE_SPACES:
            raise GuidanceConfigError(f"rescale_space={self.rescale_space!r}; accepted: {', '.join(RESCALE_SPACES)}")
        if self.dyn_thresh not in guidance_filters.DYN_THRESH_MODES:
            raise GuidanceConfigError(
                f"dyn_thresh={self.dyn_thresh!r}; accepted: {', '.join(guidance_filters.DYN_THRESH_MODES)}"
            )
        for name in ("zero_init_steps", "fresca_cutoff"):
            if int(getattr(self, name)) != getattr(self, name):
                raise GuidanceConfigError(f"{name}={getattr(self, name)}; use a whole number")
        for name, (lo, hi) in POST_RANGES.items():
            v = require_finite(name, getattr(self, name))
            if not lo <= v <= hi:
                raise GuidanceConfigError(f"{name}={v}; use a value in [{lo:g}, {hi:g}]")

    @property
    def reshapes(self) -> bool:
        """Whether a reshaper of guidance_filters is on."""
        return self.tcfg or self.fresca or self.fdg or self.mambo_alpha > 0 or self.dyn_thresh != "off"

    @classmethod
    def default(cls, name: str):
        """The default of a setting (what 'off' is), for the node schema."""
        return cls.__dataclass_fields__[name].default


@dataclass(frozen=True)
class CFGConfig:
    """The guidance of a run but its CFG scale: the scale s is the sampler's (ComfyUI's cfg, which the GUIDER sets
    from its own input and the KSampler from its widget), given to CFGCombiner.plan at every call."""

    cfg_schedule: schedules.Schedule = schedules.CONSTANT_ONE
    neg_scale: float = NEG_SCALE_DEFAULT
    neg_schedule: schedules.Schedule = schedules.CONSTANT_ONE
    terms: tuple = ()
    post: PostProcess = field(default_factory=PostProcess)

    def __post_init__(self):
        require_finite("neg_scale", self.neg_scale)
        for i, t in enumerate(self.terms):
            require_finite(f"terms[{i}].weight", t.weight)


class Role(str, Enum):
    GUIDANCE = "guidance"  # D_pos - D_baseline, coefficient f * (s - 1)
    NEGATIVE = "negative"  # D_neg - D_empty of three-way CFG, coefficient -neg_scale * f
    TERM = "term"  # D_term - D_baseline, coefficient w * f


class ActiveTerm(NamedTuple):
    """One term of D = D_pos + sum_k coef_k (D_key - D_ref) at this step; `name` identifies it across steps
    ("cfg", "neg", "term{i}"), for adaptive schedules."""

    key: str
    ref: str
    coef: float
    role: Role
    name: str = ""
    max_ratio: float = 0.0  # the term's cap (cap_push); 0 = none


class NAGStep(NamedTuple):
    """The NAG term of this step: its index and NAG's s = 1 + phi, phi = w f (nag.nag_attention)."""

    index: int
    scale: float


@dataclass
class StepPlan:
    """What one step needs: its active terms, the cond keys to evaluate (positive first) and the NAG term acting
    inside the positive row's forward (None where none is active)."""

    active: list[ActiveTerm]
    needed: list[str]
    nag: NAGStep | None = None

    def guidance(self) -> ActiveTerm | None:
        return next((t for t in self.active if t.role is Role.GUIDANCE), None)


@dataclass
class StepContext:
    """One model call: its sigma, the run's sigmas, the model's sigma range and the call's step, which
    CFGCombiner.plan fills in (schedules.StepCounter: one definition for every sampler)."""

    sigma: float
    sample_sigmas: Sequence[float] | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    step: int | None = None

    def level(self) -> int | None:
        """The step i of the run this call is in (every call of a multi-stage sampler's step has the same i);
        None without the run's sigmas or before plan()."""
        return self.step


class CFGCombiner:
    """Turns a CFGConfig into per-step plans and combined predictions.

    Roles of the conditionings: "positive" (required), "negative" and "empty" (optional),
    "term{i}" for the extra terms. Baseline (the reference of the CFG term and of the extra
    terms) = empty if connected, else negative. With both connected the rule is three-way:
    D = D_empty + s (D_pos - D_empty) - s_neg (D_neg - D_empty).
    """

    def __init__(self, config: CFGConfig, has_negative: bool, has_empty: bool, parameterization: str = "eps"):
        self.config = config
        self.has_negative, self.has_empty = has_negative, has_empty
        self.parameterization = parameterization
        self.baseline = EMPTY if has_empty else (NEGATIVE if has_negative else None)
        # ComfyUI's uncond slot (the second of the pair its hooks get, index 1 of `cond_or_uncond` that other nodes'
        # attention patches read as the negative prompt): the user's negative where one is connected
        self.uncond_slot = NEGATIVE if has_negative else self.baseline
        post = config.post
        if post.perp_neg and not (has_negative and has_empty):
            raise GuidanceConfigError(
                "perp_neg needs both a negative and an empty conditioning; connect 'empty' or turn perp_neg off"
            )
        self.term_refs = [self._term_ref(i, t) for i, t in enumerate(config.terms)]
        nag_terms = [i + 1 for i, t in enumerate(config.terms) if t.kind == "nag"]
        if len(nag_terms) > 1:
            raise GuidanceConfigError(
                f"terms {', '.join(map(str, nag_terms))} are all NAG terms; one NAG term acts on "
                "the positive row: keep one (its negative prompt can be a combined conditioning)"
            )
        self.null_terms = set()  # terms known to be exactly 0 (D_term is D_ref itself): never active
        if post.rescale_phi > 0 and post.rescale_space == "eps" and parameterization == "flow":
            raise GuidanceConfigError(
                "rescale_space='eps' is undefined for flow models: at sigma = 1 (the first step) alpha = 0 and D "
                "cannot be recovered from eps; use rescale_space auto, x0 or velocity"
            )
        if post.zero_init_steps > 0 and parameterization != "flow":
            raise GuidanceConfigError(
                f"zero_init_steps={post.zero_init_steps} is defined for flow models only (CFG-Zero*, Fan et al. 2025: "
                f"zero velocity in the first steps); this model is {parameterization}: set zero_init_steps to 0"
            )
        space_problem = rescale_space_problem(parameterization, post.rescale_space) if post.rescale_phi > 0 else None
        if space_problem:
            raise GuidanceConfigError(space_problem)
        self._running = {}  # APG momentum: committed running average per step
        self._steps = schedules.StepCounter()  # which step each call is in; restarts per-run state on a new run
        self._stopped = {}  # adaptive schedules: term name -> step at which its criterion held

    def _term_ref(self, i: int, term: ExtraTerm) -> str:
        """The cond key of term i's reference (see ExtraTerm), checked against what is connected."""
        ref = term.reference
        if ref == "auto":
            ref = POSITIVE if term.moves_away else self.baseline
            if ref is None:
                raise GuidanceConfigError(
                    f"term {i + 1} (prompt) needs a reference: connect a negative or an empty "
                    "conditioning, or set its reference to positive or another term"
                )
            return ref
        if ref.startswith("term "):
            j = int(ref[5:]) - 1
            if j == i or j >= len(self.config.terms):
                raise GuidanceConfigError(
                    f"term {i + 1} reference={ref!r}; name another of the {len(self.config.terms)} "
                    "terms (1-based), or auto, positive, negative, empty"
                )
            return f"term{j}"
        if (ref == NEGATIVE and not self.has_negative) or (ref == EMPTY and not self.has_empty):
            raise GuidanceConfigError(
                f"term {i + 1} reference={ref!r} but no {ref} conditioning is connected; "
                f"connect one or use reference auto or positive"
            )
        return ref

    # -- per-run state (APG momentum, adaptive schedules)
    def reset(self, sampler: str | None = None):
        """A new sampling run of `sampler` (ComfyUI's sampler name, None = not known): per-run state restarts."""
        self._running = {}
        self._steps.reset(sampler)
        self._stopped = {}

    def momentum_levels(self) -> list:
        """Steps at which the APG momentum holds a committed value (one per step of the run)."""
        return sorted(k for k in self._running if k is not None)

    def _schedule(self, sched: schedules.Schedule, ctx: StepContext, name: str = "") -> float:
        if sched.kind == "adaptive" and self._is_stopped(name, ctx.level()):
            return 0.0
        return schedules.value(sched, ctx.sigma, ctx.sample_sigmas, ctx.sigma_min, ctx.sigma_max, ctx.level())

    def _is_stopped(self, name: str, level) -> bool:
        """Adaptive guidance: off from the step after the one where its criterion held (every call of that
        step keeps it, whichever sampler: StepCounter)."""
        if name not in self._stopped:
            return False
        at = self._stopped[name]
        return level is None or at is None or level > at

    def observe(self, plan: StepPlan, preds: Mapping[str, torch.Tensor], x: torch.Tensor, ctx: StepContext):
        """Adaptive guidance (Castillo et al. 2023, arXiv 2312.12487, sec. 4): a term whose schedule is adaptive
        stops for the rest of the run once cos(x - D_key, x - D_ref) >= threshold for every sample (x - D is
        sigma * eps for eps/v models and sigma * velocity for flow models: the paper's criterion on the two
        noise predictions, up to a positive factor that cos ignores). Called after plan() of the same step, which
        has already restarted the per-run state where a new run began."""
        for term in plan.active:
            sched = self._term_schedule(term.name)
            if sched is None or sched.kind != "adaptive" or term.name in self._stopped:
                continue
            cos = cosine_similarity(x - preds[term.key], x - preds[term.ref])
            if bool((cos >= sched.threshold).all()):
                self._stopped[term.name] = ctx.level()

    def _term_schedule(self, name: str):
        cfg = self.config
        if name == "cfg":
            return cfg.cfg_schedule
        if name == "neg":
            return cfg.neg_schedule
        if name.startswith("term"):
            return cfg.terms[int(name[4:])].schedule
        return None

    def stopped(self) -> dict:
        """Adaptive terms that stopped in this run: name -> the step where the criterion held."""
        return dict(self._stopped)

    def plan(self, ctx: StepContext, cond_scale: float) -> StepPlan:
        """Active terms at this step: those whose coefficient is not 0; cond_scale is the CFG scale s (the sampler's
        cfg). Call once per model call, in order: it sets ctx.step (schedules.StepCounter) and restarts the per-run
        state where the call starts a new run."""
        cfg, s = self.config, cond_scale
        ctx.step = self._steps.step_of(ctx.sigma, ctx.sample_sigmas)
        if self._steps.started:  # this call starts a run (another run of the same node, or the first)
            self._running, self._stopped = {}, {}
        active = []
        if self.baseline is not None:
            f = self._schedule(cfg.cfg_schedule, ctx, "cfg")
            c = s - 1.0 if f == 1.0 else f * (s - 1.0)
            if c != 0.0:
                active.append(ActiveTerm(POSITIVE, self.baseline, c, Role.GUIDANCE, "cfg"))
        if self.has_negative and self.has_empty:
            c = -cfg.neg_scale * self._schedule(cfg.neg_schedule, ctx, "neg")
            if c != 0.0:
                active.append(ActiveTerm(NEGATIVE, EMPTY, c, Role.NEGATIVE, "neg"))
        nag = None
        for i, t in enumerate(cfg.terms):
            if i in self.null_terms:
                continue
            c = t.weight * self._schedule(t.schedule, ctx, f"term{i}")
            if t.kind == "nag":
                nag = NAGStep(i, 1.0 + c) if c != 0.0 else None
            elif c != 0.0:
                own, ref = f"term{i}", self.term_refs[i]
                active.append(
                    ActiveTerm(ref, own, c, Role.TERM, own, t.max_ratio)
                    if t.moves_away
                    else ActiveTerm(own, ref, c, Role.TERM, own, t.max_ratio)
                )
        return StepPlan(
            active=active, needed=self.evaluation_order([k for t in active for k in (t.key, t.ref)]), nag=nag
        )

    def evaluation_order(self, keys) -> list:
        """Cond keys in batch order: positive first, the uncond slot second (the negative where connected, else
        the baseline: index 1 of `cond_or_uncond`, which other nodes' attention patches read as the negative),
        then the rest, each once."""
        order = [POSITIVE] + ([self.uncond_slot] if self.uncond_slot in keys else []) + list(keys)
        return list(dict.fromkeys(order))

    @staticmethod
    def step_scale(plan: StepPlan, cond_scale: float) -> float:
        """This step's CFG scale s' = 1 + coefficient of the guidance term (1 when it is off): what other
        nodes' hooks see as cond_scale. Equals cond_scale exactly when the schedule is 1."""
        g = plan.guidance()
        if g is None:
            return 1.0
        if g.coef == cond_scale - 1.0:
            return cond_scale
        return 1.0 + g.coef

    def is_plain(self, plan: StepPlan) -> bool:
        """True when the step is ComfyUI's own CFG at the step's scale: D = D_u + s' (D_pos - D_u) with u
        the baseline (or no guidance at all), no other term and no post-processing."""
        post = self.config.post
        if not plan.active:
            return True
        if post.apg or post.cfg_zero_star or post.rescale_phi > 0 or len(plan.active) != 1 or post.reshapes:
            return False
        return plan.active[0].role is Role.GUIDANCE

    def combine(
        self,
        plan: StepPlan,
        preds: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        sigma,
        alpha,
        level: int | None = None,
        x_skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """D = D_pos + sum_k c_k (D_k - D_ref_k), then APG / CFG-Zero* / Perp-Neg on their terms
        and rescale on the result. `preds` maps cond keys to denoised predictions; the scale is
        already in the plan's coefficients. `level` is the call's step (StepContext.level, set by plan()):
        the APG momentum advances once per step, so every call of a multi-stage sampler's step reads the
        momentum the previous step committed (heun: its corrector at sigma_{i+1} is in step i and reads step
        i - 1's momentum, as its first call did), and the step's last call commits. Without the run's sigmas
        (level None) the momentum advances per call and a new run needs reset().

        The guidance term's reshapers, in this order (each reads what the one before gave): TCFG and CFG-Zero* on
        the reference (TCFG as ComfyUI runs it, a pre-CFG hook, before the scale that CFG-Zero* fits), then the
        MaMBo-G coefficient (from the step's delta as it enters), FreSca and FDG on delta (linear filters of the
        whole step from the reference, as their references apply them: D_ref + s delta'), APG (projection and
        momentum of the filtered delta); after the sum, rescale, then dynamic thresholding (it
        bounds the final prediction, as in Imagen). x_skip = a x of D = a x + b F (MaMBo-G; x where None)."""
        post = self.config.post
        d_pos = preds[POSITIVE]
        out = d_pos
        guidance_delta = guidance = None
        if post.perp_neg and EMPTY in preds:
            guidance_delta = d_pos - preds[EMPTY]
        for term in plan.active:
            d_ref = preds[term.ref]
            coef = term.coef
            if term.role is Role.GUIDANCE:
                coef, delta, reshaped = self._guidance_step(d_pos, d_ref, coef, x, x_skip, level)
                if reshaped is not None:
                    out = out + reshaped
            else:
                delta = preds[term.key] - d_ref
                if term.role is Role.NEGATIVE and post.perp_neg:
                    delta = perp_neg_delta(delta, guidance_delta)
            if term.max_ratio > 0:
                out = out + cap_push(coef * delta, d_pos, term.max_ratio)
                continue
            out = out + coef * delta
            if term.role is Role.GUIDANCE:
                guidance = (coef, delta)
        summed = out
        if post.rescale_phi > 0 and plan.active:
            space = default_rescale_space(self.parameterization) if post.rescale_space == "auto" else post.rescale_space
            out = rescale(d_pos, out, post.rescale_phi, x, sigma, alpha, space)
        return self._threshold(out, summed, guidance, x, bool(plan.active))

    def _guidance_step(self, d_pos, d_ref, coef, x, x_skip, level):
        """(coefficient, delta, reshaped) of the guidance term after its reshapers, in combine()'s order; `reshaped`
        is what the frequency filters add besides c delta' (they reshape the whole step: D_ref + (c + 1) delta'),
        None without them."""
        post = self.config.post
        if post.tcfg:
            d_ref = guidance_filters.tcfg_reference(d_pos, d_ref, x)
        if post.cfg_zero_star:
            d_ref = cfg_zero_star_uncond(d_pos, d_ref, x)
        delta = d_pos - d_ref
        if post.mambo_alpha > 0:
            skip = x if x_skip is None else x_skip
            coef = coef * guidance_filters.mambo_factor(delta, d_ref, skip, post.mambo_alpha)
        raw = delta
        if post.fresca:
            delta = guidance_filters.fresca(delta, post.fresca_low, post.fresca_high, post.fresca_cutoff)
        if post.fdg:
            delta = guidance_filters.fdg(delta, post.fdg_low, post.fdg_high)
        reshaped = delta - raw if delta is not raw else None
        if post.apg:
            momentum = self._momentum_before(level)
            delta, running = apg_delta(delta, d_pos, post.apg_eta, post.apg_norm_threshold, momentum, post.apg_momentum)
            if post.apg_momentum != 0.0:
                self._running[level] = running
        return coef, delta, reshaped

    def _threshold(self, out, summed, guidance, x, active: bool):
        """Dynamic thresholding of the step's result (mimic: against the same step, before rescale, with the guidance
        term at the mimic scale m; m = s at percentile 1 is the plain result, returned as it is)."""
        post = self.config.post
        if post.dyn_thresh == "mimic" and guidance is not None:
            coef, delta = guidance
            if isinstance(coef, float) and post.dyn_percentile == 1.0 and post.dyn_mimic_scale - 1.0 == coef:
                return out
            mimic = summed + (post.dyn_mimic_scale - 1.0 - coef) * delta
            return guidance_filters.dynamic_threshold_mimic(out, mimic, x, post.dyn_percentile, post.dyn_phi)
        if post.dyn_thresh == "imagen" and active:
            thresholded = guidance_filters.dynamic_threshold_imagen(out, post.dyn_percentile)
            return thresholded if post.dyn_phi == 1.0 else thresholded * post.dyn_phi + out * (1.0 - post.dyn_phi)
        return out

    def _momentum_before(self, level):
        """The running average committed by the latest step before `level` (per call without levels)."""
        if level is None:
            return self._running.get(None)
        earlier = [k for k in self._running if k is not None and k < level]
        return self._running[max(earlier)] if earlier else None
