"""Issue 15: one home per default and range. Every numeric input of the CFG nodes takes its default, min and max
from a constant of the core (guidance_core), so the node schema and the core cannot drift apart: this test lists
where each value lives and fails when a schema says anything else, or when a numeric input has no listed home."""
import pytest

import comfy_host as H

C = H.pack_module("guidance_core.cfg")
S = H.pack_module("guidance_core.schedules")
PT = H.pack_module("guidance_core.perturb")


def _post(name):
    return (C.PostProcess.default(name), *C.POST_RANGES[name])


# (node, input) -> (default, min, max), each read from the core
HOMES = {
    **{("GuidanceLabSchedule", k): (S.DEFAULTS[k], *S.RANGES["value"]) for k in ("start", "end", "inside", "outside")},
    ("GuidanceLabSchedule", "exponent"): (S.DEFAULTS["exponent"], *S.RANGES["exponent"]),
    ("GuidanceLabSchedule", "sigma_lo"): (S.DEFAULTS["sigma_lo"], *S.RANGES["sigma"]),
    ("GuidanceLabSchedule", "sigma_hi"): (S.DEFAULTS["sigma_hi"], *S.RANGES["sigma"]),
    ("GuidanceLabSchedule", "threshold"): (S.DEFAULTS["threshold"], *S.RANGES["threshold"]),
    ("GuidanceLabTerm", "weight"): (C.TERM_WEIGHT_DEFAULTS["prompt"], *C.TERM_WEIGHT_RANGE),
    ("GuidanceLabPerturbedTerm", "weight"): (C.TERM_WEIGHT_DEFAULTS["perturbed"], *C.TERM_WEIGHT_RANGE),
    ("GuidanceLabPerturbedTerm", "seg_sigma"): (PT.SEG_SIGMA_DEFAULT, *PT.SEG_SIGMA_RANGE),
    ("GuidanceLabModelTerm", "weight"): (C.TERM_WEIGHT_DEFAULTS["model"], *C.TERM_WEIGHT_RANGE),
    **{("GuidanceLabPostProcess", k): _post(k) for k in C.POST_RANGES},
    ("GuidanceLabCFGGuider", "cfg"): (C.CFG_DEFAULT, C.CFG_MIN, C.CFG_MAX),
    ("GuidanceLabCFGGuider", "neg_scale"): (C.NEG_SCALE_DEFAULT, -C.CFG_MAX, C.CFG_MAX),
    ("GuidanceLabCFGPatch", "neg_scale"): (C.NEG_SCALE_DEFAULT, -C.CFG_MAX, C.CFG_MAX),
}
NODES = sorted({n for n, _ in HOMES})


def numeric_inputs(node_id):
    return {i.id: i for i in H.node(node_id).define_schema().inputs if i.get_io_type() in ("INT", "FLOAT")}


@pytest.mark.parametrize("node_id", NODES)
def test_numeric_inputs_read_the_core(node_id):
    inputs = numeric_inputs(node_id)
    listed = {k for n, k in HOMES if n == node_id}
    assert set(inputs) == listed, f"{node_id}: inputs without a listed home {sorted(set(inputs) - listed)}"
    for name, inp in inputs.items():
        assert (inp.default, inp.min, inp.max) == HOMES[(node_id, name)], f"{node_id}.{name}"


def test_text_defaults_read_the_core():
    schema = {i.id: i for i in H.node("GuidanceLabSchedule").define_schema().inputs}
    for name in ("kind", "axis", "keyframes"):
        assert schema[name].default == S.DEFAULTS[name]
    assert list(schema["kind"].options) == list(S.KINDS) and list(schema["axis"].options) == list(S.AXES)
    post = {i.id: i for i in H.node("GuidanceLabPostProcess").define_schema().inputs}
    assert list(post["rescale_space"].options) == list(C.RESCALE_SPACES)
    assert list({i.id: i for i in H.node("GuidanceLabPerturbedTerm").define_schema().inputs}["mode"].options) == list(PT.MODES)


def test_core_accepts_exactly_the_schema_ranges():
    """The core checks the same ranges the schema declares: the ends are accepted, a step outside refused."""
    for name, (lo, hi) in C.POST_RANGES.items():
        for v in (lo, hi):
            C.PostProcess(**{name: v})
        step = 1 if isinstance(lo, int) else 1e-3
        for v in (lo - step, hi + step):
            with pytest.raises(C.GuidanceConfigError, match=name):
                C.PostProcess(**{name: v})
