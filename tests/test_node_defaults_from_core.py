"""Issue 15: one home per default and range. Every numeric input of the CFG nodes takes its default, min and max
from a constant of the core (guidance_core), so the node schema and the core cannot drift apart: this test lists
where each value lives and fails when a schema says anything else, or when a numeric input has no listed home."""

import pytest

from devkit import comfy_host as H

pytestmark = pytest.mark.comfy

C = H.pack_module("guidance_core.cfg")
S = H.pack_module("guidance_core.schedules")
PT = H.pack_module("guidance_core.perturbed_terms")
G = H.pack_module("guidance_core.classifier_guidance")
NAG = H.pack_module("guidance_core.nag")


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
    ("GuidanceLabModelTerm", "max_ratio"): (C.MAX_RATIO_DEFAULT, 0.0, C.MAX_RATIO_MAX),
    ("GuidanceLabNAGTerm", "weight"): (C.TERM_WEIGHT_DEFAULTS["nag"], *C.TERM_WEIGHT_RANGE),
    ("GuidanceLabNAGTerm", "tau"): (NAG.TAU_DEFAULT, *NAG.TAU_RANGE),
    ("GuidanceLabNAGTerm", "alpha"): (NAG.ALPHA_DEFAULT, *NAG.ALPHA_RANGE),
    ("GuidanceLabDistilledGuidance", "guidance"): (C.DISTILLED_GUIDANCE_DEFAULT, *C.DISTILLED_GUIDANCE_RANGE),
    **{("GuidanceLabPostProcess", k): _post(k) for k in C.POST_RANGES},
    ("GuidanceLabCFGGuider", "cfg"): (C.CFG_DEFAULT, C.CFG_MIN, C.CFG_MAX),
    ("GuidanceLabCFGGuider", "neg_scale"): (C.NEG_SCALE_DEFAULT, -C.CFG_MAX, C.CFG_MAX),
    ("GuidanceLabCFGPatch", "neg_scale"): (C.NEG_SCALE_DEFAULT, -C.CFG_MAX, C.CFG_MAX),
    **{
        (node, k): (G.DEFAULTS[k], *G.RANGES["sigma" if k.startswith("sigma") else k])
        for node in ("GuidanceLabClassifierGuidance", "GuidanceLabClassifierSampler")
        for k in ("scale", "sigma_lo", "sigma_hi", "every_n", "rms_clamp")
    },
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
    assert list({i.id: i for i in H.node("GuidanceLabPerturbedTerm").define_schema().inputs}["mode"].options) == list(
        PT.MODES
    )


def test_core_accepts_exactly_the_schema_ranges():
    """The core checks the same ranges the schema declares: the ends are accepted, a step outside refused."""
    for name, (lo, hi) in C.POST_RANGES.items():
        for v in (lo, hi):
            C.PostProcess(**{name: v})
        step = 1 if isinstance(lo, int) else 1e-3
        for v in (lo - step, hi + step):
            with pytest.raises(C.GuidanceConfigError, match=name):
                C.PostProcess(**{name: v})


# ------------------------------------------------------------ training: the Train Classifier node and the command line
TR = H.pack_module("guidance_core.classifier_training")
NA = H.pack_module("guidance_core.classifiers.noise_aware")
CLI = H.pack_module("guidance_core.train")
TN = H.pack_module("nodes.training_nodes")

TRAIN_NODE = "GuidanceLabTrainClassifier"
# node input -> (config class, field) of the core: the same setting in the node, the core and the command line
TRAIN_SETTINGS = {
    **{k: (TR.TrainConfig, k) for k in ("steps", "batch_size", "lr", "seed", "sigma_distribution", "class_balance")},
    "width": (NA.ClassifierConfig, "base_channels"),
}


def _range(config, name):
    return TR.setting_field(config, name).metadata["range"]


# (node, input) -> (default, min, max), each read from the core (defaults from a fresh config, not the metadata)
TRAIN_HOMES = {
    (TRAIN_NODE, "steps"): (TR.TrainConfig().steps, TR.STEPS_CACHE_ONLY, _range(TR.TrainConfig, "steps")[1]),
    **{
        (TRAIN_NODE, k): (getattr(TR.TrainConfig(), k), *_range(TR.TrainConfig, k))
        for k in ("batch_size", "lr", "seed")
    },
    (TRAIN_NODE, "width"): (NA.ClassifierConfig().base_channels, *_range(NA.ClassifierConfig, "base_channels")),
    (TRAIN_NODE, "resolution"): (TR.RESOLUTION_DEFAULT, *TR.RESOLUTION_RANGE),
}


def test_training_numeric_inputs_read_the_core():
    node_ids = [cls.define_schema().node_id for cls in TN.TRAINING_NODES]
    assert node_ids == [TRAIN_NODE]  # a new training node must be listed in TRAIN_HOMES
    for node_id in node_ids:
        inputs = numeric_inputs(node_id)
        listed = {k for n, k in TRAIN_HOMES if n == node_id}
        assert set(inputs) == listed, f"{node_id}: inputs without a listed home {sorted(set(inputs) - listed)}"
        for name, inp in inputs.items():
            assert (inp.default, inp.min, inp.max) == TRAIN_HOMES[(node_id, name)], f"{node_id}.{name}"
            assert all(v is not None and abs(v) != float("inf") for v in (inp.default, inp.min, inp.max)), name


def test_training_choices_and_flags_read_the_core():
    schema = {i.id: i for i in H.node(TRAIN_NODE).define_schema().inputs}
    assert list(schema["sigma_distribution"].options) == list(TR.SIGMA_DISTRIBUTIONS)
    assert schema["sigma_distribution"].default == TR.TrainConfig().sigma_distribution
    assert schema["class_balance"].default is TR.TrainConfig().class_balance


def test_cli_defaults_and_choices_equal_the_node_and_core():
    parser = CLI.build_parser()
    args = vars(parser.parse_args(["--latents", "cache.safetensors", "--out", "out.safetensors"]))
    schema = {i.id: i for i in H.node(TRAIN_NODE).define_schema().inputs}
    for node_input, (config, name) in TRAIN_SETTINGS.items():
        assert args[name] == schema[node_input].default == getattr(config(), name), node_input
    actions = {a.dest: a for a in parser._actions}
    assert (
        list(actions["sigma_distribution"].choices)
        == list(TR.SIGMA_DISTRIBUTIONS)
        == list(schema["sigma_distribution"].options)
    )
    # every typed option of the command line is a core setting with the core's default (CLI-only ones included)
    typed = {d for d, a in actions.items() if a.type in (int, float)}
    assert typed == {name for _, name in CLI.SETTINGS if name not in ("sigma_distribution", "class_balance")}
    core = {**vars(TR.TrainConfig()), **vars(NA.ClassifierConfig())}
    for dest in typed:
        assert args[dest] == core[dest] and actions[dest].type is type(core[dest]), dest
    config = CLI.config_from_args(parser.parse_args(["--latents", "c", "--out", "o", "--base-channels", "16"]))
    assert config.arch == {"base_channels": 16} and config.steps == TR.TrainConfig().steps


@pytest.mark.parametrize(
    "config_name",
    [(TR.TrainConfig, n) for n in ("steps", "batch_size", "lr", "seed", "weight_decay", "checkpoint_every")]
    + [(NA.ClassifierConfig, "base_channels")],
    ids=lambda c: c[1],
)
def test_training_core_accepts_exactly_its_ranges(config_name):
    """TrainConfig.validate (the one check, run by the node and the CLI) accepts the range ends and refuses a step
    outside, naming the field, the value and the accepted range; the CLI refuses the same value."""
    config, name = config_name
    lo, hi = _range(config, name)
    make = (
        (lambda v: TR.TrainConfig(**{name: v}))
        if config is TR.TrainConfig
        else (lambda v: TR.TrainConfig(arch={name: v}))
    )
    step = 1 if isinstance(lo, int) else lo / 10 if lo > 0 else 1e-3
    for v in (lo, hi) if hi != float("inf") else (lo, 10**9):
        make(v).validate()
    outside = [lo - step] + ([hi + step] if hi != float("inf") else [])
    for v in outside:
        with pytest.raises(TR.GuidanceConfigError, match=rf"{name}={v}; use an? (integer|number) (in \[|.* or more)"):
            make(v).validate()
        with pytest.raises(SystemExit) as exit_info:
            CLI.main(
                ["--latents", "missing.safetensors", "--out", "o.safetensors", f"--{name.replace('_', '-')}", str(v)]
            )
        assert exit_info.value.code == 2  # refused before the cache is read


def test_training_errors_name_field_value_and_accepted():
    with pytest.raises(TR.GuidanceConfigError, match=r"lr=0\.0; use a number in \[1e-06, 1\]"):
        TR.TrainConfig(lr=0.0).validate()
    with pytest.raises(TR.GuidanceConfigError, match=r"lr=nan"):
        TR.TrainConfig(lr=float("nan")).validate()
    with pytest.raises(TR.GuidanceConfigError, match="sigma_distribution='uniform'; accepted: log_uniform, model"):
        TR.TrainConfig(sigma_distribution="uniform").validate()
    with pytest.raises(TR.GuidanceConfigError, match="'depth' is not a setting of ClassifierConfig; accepted: in_chan"):
        TR.TrainConfig(arch={"depth": 3}).validate()
    with pytest.raises(TR.GuidanceConfigError, match=r"val_fraction=1\.0; use a value in \[0, 1\)"):
        TR.TrainConfig(val_fraction=1.0).validate()


def test_train_node_checks_settings_before_any_work():
    """A bad setting is refused by the core's check before the node touches the model, the dataset or the VAE."""
    args = {
        "model": None,
        "vae": None,
        "dataset": "no_such_dataset",
        "output_name": "x",
        "steps": 10,
        "batch_size": 0,
        "lr": 1e-3,
        "seed": 0,
        "resolution": 32,
        "sigma_distribution": "log_uniform",
        "class_balance": False,
        "width": 32,
    }
    with pytest.raises(TR.GuidanceConfigError, match=r"batch_size=0; use an integer in \[1, 4096\]"):
        H.run_node(TRAIN_NODE, **args)
    with pytest.raises(TR.GuidanceConfigError, match=r"base_channels=4; use an integer in \[8, 512\]"):
        H.run_node(TRAIN_NODE, **{**args, "batch_size": 8, "width": 4})


def test_classifier_guidance_defaults_are_the_core_config_and_one_no_bound():
    """The classifier nodes' defaults are the core config's, and "no upper bound" is one value (SIGMA_NO_BOUND)
    that the node passes on unchanged; the sigma window is the schedules' lo < sigma <= hi."""
    cfg = G.ClassifierGuidanceConfig()
    assert {k: getattr(cfg, k) for k in G.DEFAULTS} == G.DEFAULTS
    assert G.DEFAULTS["sigma_hi"] == S.SIGMA_NO_BOUND == G.RANGES["sigma"][1] == S.RANGES["sigma"][1]
    assert S.in_window(1.0, 0.5, 1.0) and not S.in_window(0.5, 0.5, 1.0) and S.in_window(80.0, 0.0, S.SIGMA_NO_BOUND)
