"""Issue 16: under load, faults and hostile input a real ComfyUI server with the pack keeps working and loses
nothing. The quick form of scripts/reliability.py (the full form writes docs/RELIABILITY.md): two real servers
on localhost (the first gives the reference outputs, the second is a restart that runs the rest), a soak through
POST /prompt over every toy example workflow and every node of the pack, interrupts at a random step, classifier
files changed between queueing and execution, hypothesis fuzzing of the pack's routes and free-text inputs, and
bit-identical outputs across runs and a restart. Plus the file checks of guidance_core.classifiers.classifier_files on their own."""

import json
import math
import os
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from devkit import comfy_host as H

from guidance_core.classifiers import classifier_files as gio
from guidance_core import files, perturbed_terms
from guidance_core.errors import GuidanceConfigError
from scripts import reliability as R

TOY_CLASSIFIER = os.path.join(H.ROOT, "toy_models", "classifiers", "toy_fashion_classifier.safetensors")


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    out = R.run_all(str(tmp_path_factory.mktemp("reliability") / "base"), quick=True, log=print)
    print(json.dumps(R.failures(out), indent=1))
    return out


# ---------------------------------------------------------------- 1. soak
@pytest.mark.server
def test_soak_memory_models_hooks_and_outputs(res):
    s = res["soak"]
    assert s["prompts"] >= 20 and s["prompts"] % s["cycle"] == 0, s["prompts"]
    assert s["rss_growth_pct"] < 5.0, s["samples"]
    assert s["models_max"] <= s["models_warm"] and s["patchers_max"] <= s["patchers_warm"], s["samples"]
    assert not s["hooks_growing"], s["hooks_growing"]
    assert len(s["global_hooks"]) == 1, s["global_hooks"]
    assert s["hook_counts"], "the probe saw no model"
    assert not s["errors"] and not s["mismatches"], (s["errors"], s["mismatches"])
    assert set(res["pack_nodes"]) <= set(res["pack_nodes_used"]), sorted(
        set(res["pack_nodes"]) - set(res["pack_nodes_used"])
    )


# ---------------------------------------------------------------- 2. interrupts
@pytest.mark.server
def test_interrupts_leave_nothing_behind(res):
    it = res["interrupts"]
    assert it["count"] == R.QUICK["interrupts"] and it["interrupted"] == it["count"], it["rows"]
    assert all(r["step"] is not None and 1 <= r["step"] < r["max"] for r in it["rows"]), it["rows"]
    assert not it["failures"], it["failures"]


# ---------------------------------------------------------------- 3. files changed under the server
@pytest.mark.server
def test_files_changed_under_the_server(res):
    f = res["files"]
    cases = {r["case"] for r in f["rows"]}
    assert {
        "deleted",
        "truncated",
        "pickle",
        "malformed_json",
        "oversized_labels_10MB",
        "wrong_tensor_shapes",
        "nan_weights",
    } <= cases, cases
    # the CLIP classifier's checkpoint too: read again when it changes (before: ComfyUI's cache handed on the old one)
    assert {"clip_truncated", "clip_torch_zip_pickle", "clip_missing_tensor", "clip_deleted"} <= cases, cases
    for r in f["rows"]:
        assert "rel_fault" in r["error"], r
        assert not r["problems"], r
    assert not f["pickle_loaded"] and f["server_alive"]
    assert not f["failures"], f["failures"]


# ---------------------------------------------------------------- 4. hostile requests
@pytest.mark.server
def test_hostile_requests(res):
    routes, inputs = res["fuzz_routes"], res["fuzz_inputs"]
    assert all(v["cases"] >= R.QUICK["fuzz_routes"] for v in routes["routes"].values()), routes["routes"]
    assert all(v["max_s"] < R.QUICK["bound_s"] for v in routes["routes"].values()), routes["routes"]
    assert not any(int(code) >= 500 for v in routes["routes"].values() for code in v["statuses"]), routes["routes"]
    assert {"target", "keyframes", "clip_labels", "dataset", "output_name", "pag_blocks"} <= set(inputs["inputs"])
    for name, row in inputs["inputs"].items():
        assert row["cases"] >= R.QUICK["fuzz_inputs"], (name, row)
        assert row["success"] + row["pack_error"] + row["refused_400"] == row["cases"], (name, row)
    assert not routes["failures"] and not inputs["failures"], routes["failures"] + inputs["failures"]


@pytest.mark.server
def test_every_string_input_checked_in_the_server_by_its_nodes(res):
    """Each free-text input, QUICK["fuzz_checks"] hypothesis values through the nodes that read it (in the server):
    accepted or the pack's error naming the field or the value; never another exception, never an escape."""
    checks = res["fuzz_checks"]
    assert set(checks["inputs"]) == set(res["fuzz_inputs"]["inputs"]) == set(R.FIELD_WORDS)
    for name, row in checks["inputs"].items():
        assert row["cases"] >= R.QUICK["fuzz_checks"] and row["distinct"] > row["cases"] // 2, (name, row)
        assert row["accepted"] > 0 and row["clear"] > 0, (name, row)  # both paths reached
        assert row["accepted"] + row["clear"] == row["cases"], (name, row)
        assert row["max_s"] < R.QUICK["bound_s"], (name, row)
    assert not checks["failures"] and not checks["refusal_failures"], checks["failures"] + checks["refusal_failures"]
    assert not R.hostile_failures(res), R.hostile_failures(res)


@pytest.mark.server
def test_no_file_outside_comfyui_folders_is_opened_or_read(res):
    rd = res["files_read"]
    assert rd["audit_selftest"] and rd["audited_events"] > 100, rd["audited_events"]
    assert rd["atime_tracked"] and rd["canaries"] >= 3, rd
    assert not rd["outside"] and not rd["canaries_read"], (rd["outside"], rd["canaries_read"])


@pytest.mark.core
def test_block_index_of_thousands_of_digits_is_the_packs_error():
    """'middle.' + 5000 digits failed with Python's int() ValueError (its 4300-digit limit) instead of the pack's
    message (found by the in-server fuzzing of pag_blocks)."""
    with pytest.raises(GuidanceConfigError, match=r"blocks item 0 'middle\.9+': an index of 5000 digits"):
        perturbed_terms.parse_blocks("middle." + "9" * 5000, "pag")
    assert perturbed_terms.parse_blocks("output.123456, input.4", "pag") == (("output", 123456), ("input", 4))


@pytest.mark.server
def test_out_of_range_keyframe_values_are_refused(res):
    """A keyframe value outside the multiplier range (-100..100, the widgets' range) is refused: '0:1e39' sampled
    with a guidance scale of 1e39 and saved a wrong image before (found by this fuzzing)."""
    assert not res["fuzz_inputs"]["refusal_failures"], res["fuzz_inputs"]["refusal_failures"]
    assert not res["fuzz_checks"]["refusal_failures"], res["fuzz_checks"]["refusal_failures"]


# ---------------------------------------------------------------- 5. determinism
@pytest.mark.server
def test_determinism_across_runs_and_a_restart(res):
    d = res["determinism"]
    assert d["restart_checked"] >= 2 and res["reference"]["prompts"] >= 2 * len(d["workflows"])
    assert not d["run_mismatches"] and not d["restart_mismatches"], d


# ---------------------------------------------------------------- the file checks of guidance_core.classifiers.classifier_files, directly
def _rewrite(tmp_path, meta_edit=None, tensor_edit=None, name="c.safetensors"):
    with safe_open(TOY_CLASSIFIER, framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    gl = json.loads(meta["guidance_lab"])
    meta["guidance_lab"] = json.dumps(meta_edit(gl) if meta_edit else gl)
    path = tmp_path / name
    save_file(tensor_edit(tensors) if tensor_edit else tensors, str(path), metadata=meta)
    return str(path)


@pytest.mark.core
def test_io_refuses_nan_weights_naming_the_file_and_tensor(tmp_path):
    def nan(t):
        k = sorted(t)[0]
        t[k] = t[k].clone()
        t[k].view(-1)[0] = math.nan
        return t

    with pytest.raises(gio.ClassifierFileError, match=r"c\.safetensors: 1 weight tensors hold NaN"):
        gio.load_classifier(_rewrite(tmp_path, tensor_edit=nan))


@pytest.mark.core
def test_io_refuses_a_huge_config_before_allocating(tmp_path):
    path = _rewrite(tmp_path, meta_edit=lambda g: dict(g, config=dict(g["config"], base_channels=1 << 20)))
    with pytest.raises(gio.ClassifierFileError, match=r"c\.safetensors: its config asks for \d+ parameters"):
        gio.load_classifier(path)
    path = _rewrite(
        tmp_path, meta_edit=lambda g: dict(g, config=dict(g["config"], base_channels=16)), name="d.safetensors"
    )
    with pytest.raises(gio.ClassifierFileError, match=r"d\.safetensors: weights do not match its config: \d+ tensors"):
        gio.load_classifier(path)
    path = _rewrite(
        tmp_path, meta_edit=lambda g: dict(g, config=dict(g["config"], base_channels="wide")), name="e.safetensors"
    )
    with pytest.raises(gio.ClassifierFileError, match=r"e\.safetensors: config .* does not build"):
        gio.load_classifier(path)


@pytest.mark.core
@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(labels=5), r"labels=5; expected a non-empty list"),
        (dict(labels=[]), r"labels=\[\]; expected a non-empty list"),
        (dict(labels=["a", {"b": 1}]), r"labels\[1\]=.*expected a name"),
        (dict(latent_channels="one"), r"latent_channels='one'; expected a whole number"),
        (dict(config=[1, 2]), r"config=.*expected an object"),
        (dict(parameterization="x0"), r"parameterization='x0'; accepted: eps, v, flow"),
        (dict(sigma_max="big"), r"sigma_max='big'; expected a finite number"),
    ],
)
def test_io_refuses_metadata_of_the_wrong_type(tmp_path, edit, message):
    path = _rewrite(tmp_path, meta_edit=lambda g: dict(g, **edit))
    with pytest.raises(gio.ClassifierFileError, match=r"c\.safetensors: " + message):
        gio.read_metadata(path)


@pytest.mark.core
def test_io_refuses_oversized_headers_and_label_lists_unparsed(tmp_path):
    big = tmp_path / "big.safetensors"
    raw = json.dumps({"__metadata__": {"guidance_lab": "x" * (files.MAX_HEADER_BYTES + 1)}}).encode()
    big.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(
        gio.ClassifierFileError, match=r"big\.safetensors: safetensors header of \d+ bytes; .* at most 8 MiB"
    ):
        gio.read_metadata(str(big))
    many = _rewrite(tmp_path, meta_edit=lambda g: dict(g, labels=[str(i) for i in range(gio.MAX_LABELS + 1)]))
    with pytest.raises(gio.ClassifierFileError, match=r"c\.safetensors: 100001 labels; at most 100000"):
        gio.read_metadata(many)
    # a valid file still loads, with its 10 labels
    module, meta = gio.load_classifier(TOY_CLASSIFIER)
    assert len(meta["labels"]) == 10 and all(bool(torch.isfinite(p).all()) for p in module.parameters())


@pytest.mark.core
def test_traceback_detection_is_a_traceback_not_the_word():
    """A Python traceback in an answer is a failure; a fuzzed request that holds the word "Traceback" and is echoed
    by an error naming the bad value is not (found by the full run: a JSON key 'Traceback' sent to the schedule
    route)."""
    import traceback

    try:
        {}["missing"]
    except KeyError:
        real = traceback.format_exc()
    assert R.has_traceback(real) and R.has_traceback(json.dumps({"error": real}))  # also JSON-escaped
    assert not R.has_traceback("schedule field 'Traceback' is unknown; accepted: kind, axis, start")
    assert not R.has_traceback('{"error": "kind=\'Traceback (most\' is not a schedule kind"}')


@pytest.mark.core
def test_the_reports_error_excerpt_keeps_the_file_name():
    """The files check records an excerpt of each error; a long message whose file name comes late (ComfyUI 0.33's
    validation errors quote the whole input first) keeps the part that names the file, a short one is whole."""
    late = "Prompt outputs failed validation: " + "x" * 400 + " checkpoint 'rel_fault_clip.safetensors' not found"
    cut = R.excerpt(late, R.CLIP_FAULT)
    assert R.CLIP_FAULT in cut and len(cut) <= 243 and cut.startswith("...")
    assert R.excerpt("cannot read rel_fault.safetensors", "rel_fault") == "cannot read rel_fault.safetensors"
    assert R.excerpt("y" * 500, "rel_fault") == "y" * 240  # no file name to keep: the start
