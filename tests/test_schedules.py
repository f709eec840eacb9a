"""Schedules: property tests (hypothesis) and clear errors."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guidance_core import cfg as C
from guidance_core import schedules as S
from guidance_core.errors import GuidanceConfigError

pytestmark = pytest.mark.core

finite = st.floats(min_value=-50, max_value=50, allow_nan=False)
pos_sigma = st.floats(min_value=1e-3, max_value=200, allow_nan=False)


@st.composite
def sigma_lists(draw):
    n = draw(st.integers(min_value=1, max_value=60))
    hi = draw(st.floats(min_value=1.0, max_value=100.0))
    lo = draw(st.floats(min_value=0.005, max_value=0.9))
    sig = [math.exp(math.log(hi) + (math.log(lo) - math.log(hi)) * i / max(1, n - 1)) for i in range(n)]
    return sig + [0.0]


@settings(max_examples=200, deadline=None)
@given(sig=sigma_lists(), scale=st.floats(min_value=0, max_value=30), sigma=pos_sigma)
def test_constant_one_equals_no_schedule(sig, scale, sigma):
    ctx = C.StepContext(sigma=sigma, sample_sigmas=sig, sigma_min=0.01, sigma_max=100)
    a = C.CFGCombiner(C.CFGConfig(), True, False).plan(ctx, scale)
    b = C.CFGCombiner(C.CFGConfig(cfg_schedule=S.Schedule(kind="constant", start=1.0)), True, False).plan(ctx, scale)
    assert a.active == b.active and a.needed == b.needed
    assert S.step_values(S.Schedule(kind="constant", start=1.0), sig) == [1.0] * (len(sig) - 1)


@settings(max_examples=200, deadline=None)
@given(sig=sigma_lists(), lo=st.floats(0, 20), width=st.floats(0, 50), denoise=st.floats(0.05, 1.0))
def test_interval_switches_at_sigmas_any_denoise(sig, lo, width, denoise):
    hi = lo + width
    sched = S.Schedule(kind="interval", sigma_lo=lo, sigma_hi=hi)
    # denoise < 1 runs the tail of the sigma list; the interval is a property of sigma alone
    k = int(round((len(sig) - 1) * (1 - denoise)))
    run = sig[k:] if len(sig) - k >= 2 else sig[-2:]
    vals = S.step_values(sched, run)
    for s_, v in zip(run[:-1], vals):
        assert v == (1.0 if lo < s_ <= hi else 0.0)


@settings(max_examples=200, deadline=None)
@given(
    pts=st.lists(st.tuples(st.floats(0, 1), finite), min_size=1, max_size=8, unique_by=lambda p: p[0]),
    p=st.floats(0, 1),
)
def test_keyframes_interpolate(pts, p):
    pts = sorted(pts)
    sched = S.Schedule(kind="keyframes", keyframes=tuple(pts))
    v = S._shape(sched, p)
    # at a keyframe: its value; between two: the linear interpolation, within their range
    for q, w in pts:
        if q == p:
            assert math.isclose(S._shape(sched, q), w, abs_tol=1e-9)
    if p <= pts[0][0]:
        assert v == pts[0][1]
    elif p >= pts[-1][0]:
        assert v == pts[-1][1]
    else:
        (p0, v0), (p1, v1) = next((a, b) for a, b in zip(pts, pts[1:]) if a[0] <= p <= b[0])
        assert math.isclose(v, v0 + (v1 - v0) * ((p - p0) / (p1 - p0)), rel_tol=1e-9, abs_tol=1e-9)
        assert min(v0, v1) - 1e-9 <= v <= max(v0, v1) + 1e-9


@settings(max_examples=100, deadline=None)
@given(sig=sigma_lists(), a=finite, b=finite, k=st.floats(0.1, 8))
def test_shapes_hit_start_and_end(sig, a, b, k):
    n = len(sig) - 1
    for kind in ("linear", "cosine", "power_up", "power_down"):
        vals = S.step_values(S.Schedule(kind=kind, start=a, end=b, exponent=k), sig)
        assert math.isclose(vals[0], a, abs_tol=1e-9)
        if n > 1:
            assert math.isclose(vals[-1], b, abs_tol=1e-9)
        lo, hi = min(a, b) - 1e-9, max(a, b) + 1e-9
        assert all(lo <= v <= hi for v in vals)


def test_formulas_by_hand():
    sig = [8.0, 4.0, 2.0, 1.0, 0.5, 0.0]  # 5 steps: p = 0, .25, .5, .75, 1
    assert S.step_values(S.Schedule(kind="linear", start=2, end=0), sig) == [2, 1.5, 1, 0.5, 0]
    cos = S.step_values(S.Schedule(kind="cosine", start=1, end=0), sig)
    assert [round(v, 6) for v in cos] == [
        1,
        round((1 + math.cos(math.pi / 4)) / 2, 6),
        0.5,
        round((1 + math.cos(3 * math.pi / 4)) / 2, 6),
        0,
    ]
    assert S.step_values(S.Schedule(kind="power_up", start=0, end=1, exponent=2), sig) == [0, 0.0625, 0.25, 0.5625, 1]
    assert S.step_values(S.Schedule(kind="power_down", start=0, end=1, exponent=2), sig) == [0, 0.4375, 0.75, 0.9375, 1]
    # sigma axis: position along log sigma of the model's range [0.5, 8]
    lin = S.Schedule(kind="linear", start=0, end=1, axis="sigma")
    assert S.step_values(lin, sig, 0.5, 8.0) == pytest.approx([0, 0.25, 0.5, 0.75, 1], abs=1e-12)
    assert S.step_values(lin, sig[2:], 0.5, 8.0) == pytest.approx(
        [0.5, 0.75, 1], abs=1e-12
    )  # denoise < 1: same meaning


def test_a_steps_calls_share_its_progress():
    """A multi-stage sampler's call between two steps' sigmas is in its step (schedules.StepCounter): p = i / (n - 1)."""
    sig = [4.0, 1.0, 0.0]
    counter = S.StepCounter("dpm_2")
    assert [counter.step_of(s, sig) for s in (4.0, 2.0, 1.0)] == [0, 0, 1]
    assert S.progress(0, sig) == 0.0 and S.progress(1, sig) == 1.0


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(kind="interval", sigma_lo=5.0, sigma_hi=1.0), "sigma_lo=5.0 is greater than sigma_hi=1.0"),
        (dict(kind="linear", start=float("nan")), "start"),
        (dict(kind="linear", end=float("inf")), "end"),
        (dict(kind="keyframes", keyframes=()), "keyframes is empty"),
        (dict(kind="keyframes", keyframes=((0.5, 1.0), (0.5, 2.0))), "does not increase"),
        (dict(kind="keyframes", keyframes=((1.5, 1.0),)), "positions lie in"),
        (dict(kind="keyframes", keyframes=((0.5, float("nan")),)), "keyframes\\[0\\] value"),
        (
            dict(kind="keyframes", keyframes=((0.0, 1e39),)),
            "keyframes\\[0\\] value=1e\\+39; a multiplier lies in \\[-100, 100\\]",
        ),
        (dict(kind="linear", start=250.0), "start=250.0; a multiplier lies in"),
        (dict(kind="adaptive", threshold=1.5), "threshold=1.5"),
        (dict(kind="power_up", exponent=0.0), "exponent"),
        (dict(kind="wiggle"), "kind='wiggle'"),
        (dict(axis="time"), "axis='time'"),
    ],
)
def test_bad_schedules_name_the_field(kw, field):
    with pytest.raises(GuidanceConfigError, match=field):
        S.Schedule(**kw)


def test_no_steps_is_an_error():
    with pytest.raises(GuidanceConfigError, match="steps=0"):
        S.step_values(S.Schedule(kind="linear"), [1.0])
    with pytest.raises(GuidanceConfigError, match="steps=0"):
        S.progress(0, [1.0])


def test_parse_keyframes():
    assert S.parse_keyframes("1:0, 0:7\n0.5:3") == ((0.0, 7.0), (0.5, 3.0), (1.0, 0.0))
    with pytest.raises(GuidanceConfigError, match="position:value"):
        S.parse_keyframes("0.5")
    with pytest.raises(GuidanceConfigError, match="not 'number:number'"):
        S.parse_keyframes("a:b")
