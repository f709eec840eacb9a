"""Issue 12, Must show 3: no NaN or inf from any setting the CFG nodes accept. Hypothesis draws every input
of the Schedule, Term, Post-processing, CFG Guider and CFG Patch nodes from the ranges their schemas declare
(read from the schemas, not restated), on eps, v and flow tiny models with several samplers. Each draw must
either be refused with a GuidanceConfigError before sampling or sample to a finite latent."""

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devkit import comfy_host as H
from devkit.cfg_helpers import EMPTY, NEG, OTHER, POS, custom_sample, ksample

pytestmark = [pytest.mark.comfy, pytest.mark.slow_sweep]

GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError
MODELS = {}
WIDGETS = ("FLOAT", "INT", "BOOLEAN", "COMBO", "STRING")


def model(kind):
    if kind not in MODELS:
        MODELS[kind] = H.tiny_model(kind, seed={"eps": 0, "v": 1, "flow": 2}[kind])
    return MODELS[kind]


def input_strategy(inp):
    """A strategy over every value a V3 schema input accepts."""
    kind = inp.get_io_type()
    if kind == "FLOAT":
        return st.floats(min_value=inp.min, max_value=inp.max, allow_nan=False)
    if kind == "INT":
        return st.integers(min_value=inp.min, max_value=inp.max)
    if kind == "BOOLEAN":
        return st.booleans()
    if kind == "COMBO":
        return st.sampled_from(inp.options)
    if kind == "STRING":  # keyframes: well-formed lists and arbitrary text
        pair = st.tuples(st.floats(0, 1), st.floats(-100, 100)).map(lambda p: f"{p[0]}:{p[1]}")
        return st.one_of(st.lists(pair, min_size=1, max_size=4).map(", ".join), st.text(max_size=12))
    raise TypeError(f"no strategy for input {inp.id} ({kind})")


def widgets(node_id, **fixed):
    """Fixed-dictionary strategy of a node's widget inputs (sockets left out)."""
    fields = {}
    for inp in H.node(node_id).define_schema().inputs:
        if inp.id in fixed or inp.get_io_type() not in WIDGETS:
            continue
        fields[inp.id] = input_strategy(inp)
    return st.fixed_dictionaries(fields).map(lambda d: {**d, **fixed})


def build(node_id, args):
    return H.run_node(node_id, **args)[0]


@st.composite
def setting(draw):
    s = {
        "kind": draw(st.sampled_from(["eps", "v", "flow"])),
        "route": draw(st.sampled_from(["guider", "patch"])),
        "sampler": draw(st.sampled_from(["euler", "heun", "dpmpp_2m", "euler_ancestral", "dpm_2"])),
        "guider": draw(widgets("GuidanceLabCFGGuider")),
        "patch": draw(widgets("GuidanceLabCFGPatch")),
        "empty": draw(st.booleans()),
        "post": draw(st.none() | widgets("GuidanceLabPostProcess")),
        "cfg_schedule": draw(st.none() | widgets("GuidanceLabSchedule")),
        "neg_schedule": draw(st.none() | widgets("GuidanceLabSchedule")),
        "terms": draw(st.lists(widgets("GuidanceLabTerm"), max_size=2)),
    }
    return s


def make_inputs(s):
    """The draw's optional socket inputs, built by the pack's own nodes (which may refuse)."""
    extra = {"empty": EMPTY if s["empty"] else None}
    for name in ("post", "cfg_schedule", "neg_schedule"):
        if s[name] is not None:
            extra[name] = build({"post": "GuidanceLabPostProcess"}.get(name, "GuidanceLabSchedule"), s[name])
    return {k: v for k, v in extra.items() if v is not None}


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(setting())
def test_no_nan_or_inf_from_any_accepted_setting(s):
    m = model(s["kind"])
    try:
        extra = make_inputs(s)
        if s["route"] == "guider":
            terms = None
            for i, t in enumerate(s["terms"]):
                terms = H.run_node("GuidanceLabTerm", conditioning=(POS, OTHER)[i % 2], terms=terms, **t)[0]
            g = s["guider"]
            guider = H.run_node("GuidanceLabCFGGuider", model=m, positive=POS, negative=NEG, terms=terms, **g, **extra)[
                0
            ]
            out = custom_sample(m, guider, sampler=s["sampler"], steps=3)
        else:
            patched = H.run_node("GuidanceLabCFGPatch", model=m, **s["patch"], **extra)[0]
            out = ksample(patched, s["guider"]["cfg"], sampler=s["sampler"], steps=3)
    except GuidanceConfigError as e:  # a refusal must name something and come before sampling
        assert str(e)
        event(f"refused: {str(e).split('=')[0].split(' ')[0]}")
        return
    event("sampled")
    assert torch.isfinite(out).all(), s
