"""A real ComfyUI server with the pack: workflows run through POST /prompt and write images;
bad input gives a clear error before sampling and the server keeps running."""

import pytest
from PIL import Image


from devkit.comfy_server import error_of, images_of
from devkit import demo_prompts as DP

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def stop_server(stop_server):
    """The server (tests/conftest.py) stopped, and its log says the pack loaded."""

    def stop(srv):
        log = stop_server(srv)
        failed = [ln for ln in log.splitlines() if "IMPORT FAILED" in ln and "guidance-lab" in ln]
        assert not failed, failed
        assert "GuidanceLab" in log or "guidance-lab" in log  # the loader saw the pack

    return stop


def test_pack_nodes_registered_with_tooltips(server):
    info = server.get("/object_info")
    ours = {k: v for k, v in info.items() if v.get("category", "").startswith("Guidance Lab/")}
    assert {
        "GuidanceLabSchedule",
        "GuidanceLabTerm",
        "GuidanceLabPostProcess",
        "GuidanceLabCFGGuider",
        "GuidanceLabCFGPatch",
    } <= set(ours)
    for node_id, spec in ours.items():
        assert node_id.startswith("GuidanceLab")
        if "demo" in spec["category"]:
            continue
        assert spec["description"], node_id
        for section in ("required", "optional"):
            for name, inp in spec["input"].get(section, {}).items():
                assert len(inp) > 1 and inp[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def _check_images(entry, out):
    paths = images_of(entry, out)
    assert len(paths) == 4
    for p in paths:
        im = Image.open(p).convert("RGB")
        lo, hi = im.getextrema()[0]
        assert im.size == (128, 128) and hi - lo > 50  # a picture, not a blank


@pytest.mark.parametrize("name", list(DP.all_prompts()))
def test_demo_workflows_run_and_write_images(server, name):
    entry = server.run(DP.all_prompts()[name])
    assert error_of(entry) is None, error_of(entry)
    _check_images(entry, server.output_dir)


def test_bad_input_clear_errors_and_server_keeps_running(server):
    # missing positive: ComfyUI's validation refuses the prompt, naming the input
    p = DP.guider(prefix="bad/missing")
    del p["guider"]["inputs"]["positive"]
    status, body = server.post_prompt(p)
    assert status == 400 and "positive" in str(body.get("node_errors", body))

    # a schedule that yields NaN: error names the field, nothing sampled, no image
    p = DP.guider(prefix="bad/nan")
    p["sched"]["inputs"].update(kind="keyframes", keyframes="0:1, 0.5:nan")
    entry = server.run(p)
    err = error_of(entry)
    assert err and "keyframes[1] value=nan" in err and not images_of(entry, server.output_dir)

    # a term list with mismatched batch sizes
    p = DP.guider(prefix="bad/batch", terms=[("cross", 1.0)])
    p["pos"]["inputs"]["batch"] = 2
    p["c0"]["inputs"]["batch"] = 3
    entry = server.run(p)
    err = error_of(entry)
    assert err and "positive=2" in err and "term 1=3" in err and not images_of(entry, server.output_dir)

    # the server is alive and still samples
    assert "system" in server.get("/system_stats")
    entry = server.run(DP.ksampler_patch(prefix="after_errors"))
    assert error_of(entry) is None
    _check_images(entry, server.output_dir)
