"""The frontend extension (web/js/guidance_lab.js) and its server routes (nodes/routes.py).

- preview sigmas of the core equal ComfyUI's own "normal" scheduler on its default discrete model;
- the routes, on a real ComfyUI server: schedule values equal the core's step_values, bad input is a
  400 JSON error, classifier names go through the folder registry only (404 / 400 / 422 JSON errors);
- a real headless Chromium (Debian's chromium) loads the ComfyUI page with the pack: the extension
  loads without console errors, the plot draws, changing a widget (by mouse, in both the classic
  canvas and the Vue node renderer) redraws it, the label picker fills `target`. Screenshots are kept
  in test-artifacts/web/. The browser tests run on the pinned frontend and on the newest one (devkit/frontends.py),
  and fail when the extension calls a litegraph API the frontend reports as deprecated.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request

import pytest

from devkit import comfy_host as H
from devkit.browser import ARTIFACTS, Page, launched
from guidance_core.classifiers import classifier_files as gio
from guidance_core import preview as PV
from guidance_core import schedules as S
from guidance_core.classifiers.noise_aware import ClassifierConfig, NoiseAwareClassifier

JS = os.path.join(H.ROOT, "web", "js", "guidance_lab.js")
LABELS = ["cat", "dog", "ship"]
EXT_URL = "/extensions/guidance-lab/js/guidance_lab.js"
CURVE_RGB = (0x4F, 0xC3, 0xF7)  # the first series' colour in guidance_lab.js


# ---------------------------------------------------------------- preview sigmas


@pytest.mark.comfy
@pytest.mark.parametrize("steps", [1, 2, 5, 20, 33, 200])
def test_preview_sigmas_equal_comfyui_normal_scheduler(steps):
    H.boot()
    import comfy.model_sampling
    import comfy.samplers

    ms = comfy.model_sampling.ModelSamplingDiscrete()  # SD1.5 defaults
    want = comfy.samplers.calculate_sigmas(ms, "normal", steps).tolist()
    got, lo, hi = PV.preview_sigmas(steps)
    assert len(got) == len(want) == steps + 1 and got[-1] == 0.0
    assert got[:-1] == pytest.approx(want[:-1], rel=2e-6)  # ComfyUI computes in float32
    assert (lo, hi) == pytest.approx((float(ms.sigma_min), float(ms.sigma_max)), rel=1e-6)


@pytest.mark.core
def test_preview_sigmas_log_spaced_and_errors():
    sig, lo, hi = PV.preview_sigmas(4, 0.1, 10.0)
    assert sig == pytest.approx([10.0, 10 ** (1 / 3), 10 ** (-1 / 3), 0.1, 0.0]) and (lo, hi) == (0.1, 10.0)
    with pytest.raises(PV.GuidanceConfigError, match=r"steps=0; use a whole number from 1 to 200"):
        PV.preview_sigmas(0)
    with pytest.raises(PV.GuidanceConfigError, match=r"sigma_min=5.0, sigma_max=1.0"):
        PV.preview_sigmas(4, 5.0, 1.0)
    with pytest.raises(S.GuidanceConfigError, match="both sigma_min and sigma_max"):
        PV.preview_sigmas(4, 0.1, None)


@pytest.mark.comfy
def test_node_builds_the_same_schedule_as_from_fields():
    out = H.run_node(
        "GuidanceLabSchedule",
        kind="keyframes",
        axis="sigma",
        start=1.0,
        end=0.0,
        exponent=2.0,
        sigma_lo=0.28,
        sigma_hi=5.42,
        inside=1.0,
        outside=0.0,
        keyframes="0:1, 0.5:0.2, 1:0",
    )[0]
    ref = S.from_fields(kind="keyframes", axis="sigma", keyframes="0:1, 0.5:0.2, 1:0")
    assert dataclasses.asdict(out) == dataclasses.asdict(ref)


@pytest.mark.comfy
def test_routes_register_once_and_not_without_a_server():
    H.boot()
    from aiohttp import web

    routes = H.pack_module("nodes.routes")
    assert routes.register_with_server() is False  # in-process ComfyUI, no PromptServer
    table = web.RouteTableDef()
    assert routes.register(table) is True and routes.register(table) is False
    assert sorted((r.method, r.path) for r in table) == [
        ("GET", "/guidance_lab/classifier_labels"),
        ("POST", "/guidance_lab/schedule"),
    ]


# ---------------------------------------------------------------- a real server with a classifier folder


@pytest.fixture(scope="module")
def models_yaml(tmp_path_factory):
    """An extra_model_paths.yaml whose classifiers folder holds two real classifiers and three bad files."""
    base = tmp_path_factory.mktemp("web")
    cls_dir = base / "classifiers"
    (cls_dir / "sub").mkdir(parents=True)
    net = NoiseAwareClassifier(ClassifierConfig(in_channels=4, num_classes=3, base_channels=16))
    meta = {
        "architecture": "noise_aware",
        "config": net.config.to_dict(),
        "labels": LABELS,
        "latent_channels": 4,
        "latent_format": "SD15",
        "parameterization": "eps",
        "sigma_min": 0.03,
        "sigma_max": 14.6,
    }
    gio.save_classifier(str(cls_dir / "tiny.safetensors"), net, meta)
    gio.save_classifier(str(cls_dir / "sub" / "nested.safetensors"), net, {**meta, "labels": ["a", "b", "c"]})
    (cls_dir / "old.ckpt").write_bytes(b"\x80\x02fake pickle")
    (cls_dir / "disguised.safetensors").write_bytes(b"\x80\x04\x95fake pickle renamed")
    (cls_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"guidance_lab_web_test:\n  base_path: {base}\n  classifiers: classifiers\n")
    return yaml


@pytest.fixture(scope="module")
def start_server(start_server, models_yaml):
    """The servers of the route and browser tests (tests/conftest.py's `server` and `ui_server`) read models_yaml."""
    return lambda folder, frontend: start_server(folder, frontend, ["--extra-model-paths-config", str(models_yaml)])


@pytest.fixture(scope="module")
def stop_server(stop_server):
    def stop(srv):
        log = stop_server(srv)
        assert not [ln for ln in log.splitlines() if "IMPORT FAILED" in ln and "guidance-lab" in ln]
        # the extension imports no deprecated frontend module (ComfyUI logs a warning when one is fetched)
        assert "DEPRECATION WARNING" not in log, [ln for ln in log.splitlines() if "DEPRECATION" in ln]

    return stop


def request(srv, method, path, body=None, raw: bytes | None = None):
    """(status, JSON body) of an HTTP request to the server."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        srv.url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers.get_content_type() == "application/json", (e.code, e.read()[:200])
        return e.code, json.loads(e.read())


def labels(srv, name, prefix=""):
    return request(srv, "GET", f"{prefix}/guidance_lab/classifier_labels?name={urllib.parse.quote(name, safe='')}")


# ---------------------------------------------------------------- schedule route

SCHEDULES = [
    dict(kind="constant", start=0.7),
    dict(kind="linear", start=1.0, end=0.0),
    dict(kind="cosine", axis="sigma", start=1.5, end=0.25),
    dict(kind="power_up", start=0.0, end=2.0, exponent=3.0),
    dict(kind="power_down", axis="sigma", start=1.0, end=0.0, exponent=0.5),
    dict(kind="interval", sigma_lo=0.28, sigma_hi=5.42, inside=1.0, outside=0.0),
    dict(kind="keyframes", keyframes="0:1, 0.3:0.2, 1:0.8"),
    dict(kind="keyframes", axis="sigma", keyframes="0.2:2, 0.8:-1"),
]


@pytest.mark.server
@pytest.mark.parametrize("fields", SCHEDULES, ids=[f"{d['kind']}-{d.get('axis', 'progress')}" for d in SCHEDULES])
@pytest.mark.parametrize("steps", [1, 7, 30])
def test_schedule_route_equals_the_core(server, fields, steps):
    status, body = request(server, "POST", "/guidance_lab/schedule", {**fields, "steps": steps})
    assert status == 200, body
    sigmas, lo, hi = PV.preview_sigmas(steps)
    assert body["steps"] == steps and body["sigmas"] == sigmas and (body["sigma_min"], body["sigma_max"]) == (lo, hi)
    assert body["values"] == S.step_values(S.from_fields(**fields), sigmas, lo, hi)  # exactly, same code


@pytest.mark.server
def test_schedule_route_equals_sampling_on_comfyui_sigmas(server):
    """The plotted values are what the sampler applies: ComfyUI's own sigmas for a normal-scheduler run
    on the default discrete model, evaluated as a sampling step does (S.value with the model range)."""
    H.boot()
    import comfy.model_sampling
    import comfy.samplers

    ms = comfy.model_sampling.ModelSamplingDiscrete()
    for fields in SCHEDULES:
        sig = comfy.samplers.calculate_sigmas(ms, "normal", 25).tolist()
        sched = S.from_fields(**fields)
        applied = [S.value(sched, s, sig, float(ms.sigma_min), float(ms.sigma_max)) for s in sig[:-1]]
        status, body = request(server, "POST", "/api/guidance_lab/schedule", {**fields, "steps": 25})
        # ComfyUI's sigmas are float32: near p = 1 power_down's (1 - p)^0.5 turns 1e-7 into 1e-4
        assert status == 200 and body["values"] == pytest.approx(applied, abs=1e-3), fields


@pytest.mark.server
def test_schedule_route_marks_adaptive_schedules(server):
    """An adaptive schedule is plotted at its value until it stops, with the stopping rule in a note (the frontend
    draws it dashed): where it stops is known only while sampling. Other kinds carry no note."""
    status, body = request(
        server, "POST", "/guidance_lab/schedule", {"kind": "adaptive", "start": 0.8, "threshold": 0.9995, "steps": 6}
    )
    assert status == 200 and body["values"] == [0.8] * 6 and body["note"] == "stops once cos >= 0.9995"
    assert "note" not in request(server, "POST", "/guidance_lab/schedule", {"kind": "linear", "steps": 6})[1]


@pytest.mark.server
def test_schedule_route_custom_sigma_range(server):
    status, body = request(
        server,
        "POST",
        "/guidance_lab/schedule",
        {"kind": "linear", "axis": "sigma", "steps": 5, "sigma_min": 0.002, "sigma_max": 80.0},
    )
    assert status == 200
    sig = PV.log_spaced_sigmas(5, 0.002, 80.0)
    assert body["sigmas"] == sig and body["values"] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


@pytest.mark.server
@pytest.mark.parametrize(
    "body, message",
    [
        ({"kind": "interval", "sigma_lo": 6.0, "sigma_hi": 5.0}, "sigma_lo=6.0 is greater than sigma_hi=5.0"),
        ({"kind": "spline"}, "schedule kind='spline'; accepted: constant, linear"),
        ({"axis": "time"}, "schedule axis='time'; accepted: progress, sigma"),
        ({"kind": "keyframes", "keyframes": "0:1, half:0"}, "keyframes item 1 'half:0' is not 'number:number'"),
        ({"kind": "keyframes", "keyframes": "0:1, 1.5:0"}, "keyframes[1] position=1.5; positions lie in [0, 1]"),
        ({"exponent": 0}, "schedule exponent=0.0; use a number > 0"),
        ({"start": "1"}, "start='1'; use a number"),
        ({"start": True}, "start=True; use a number"),
        ({"kind": 3}, "kind=3; use a string"),
        ({"steps": 0}, "steps=0; use a whole number from 1 to 200"),
        ({"steps": 201}, "steps=201; use a whole number from 1 to 200"),
        ({"steps": 2.5}, "steps=2.5; use a whole number"),
        ({"sigma_min": 1.0}, "give both sigma_min and sigma_max"),
        ({"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min=2.0, sigma_max=1.0; use 0 < sigma_min < sigma_max"),
        ({"colour": "red"}, "unknown field(s) ['colour']; accepted: kind, axis"),
        ([1, 2], "request body is list; send a JSON object"),
    ],
)
def test_schedule_route_bad_input_is_400_json(server, body, message):
    status, out = request(server, "POST", "/guidance_lab/schedule", body)
    assert status == 400 and message in out["error"], out


@pytest.mark.server
def test_schedule_route_non_json_and_nan(server):
    status, out = request(server, "POST", "/guidance_lab/schedule", raw=b"kind=linear")
    assert status == 400 and "not JSON" in out["error"]
    status, out = request(server, "POST", "/guidance_lab/schedule", raw=b'{"start": NaN}')
    assert status == 400 and "schedule start=nan is not finite" in out["error"]


# ---------------------------------------------------------------- classifier label route


@pytest.mark.server
def test_labels_of_a_classifier(server):
    assert labels(server, "tiny.safetensors") == (
        200,
        {
            "name": "tiny.safetensors",
            "labels": LABELS,
            "latent_channels": 4,
            "parameterization": "eps",
            "architecture": "noise_aware",
        },
    )
    status, body = labels(server, "sub/nested.safetensors", prefix="/api")
    assert status == 200 and body["labels"] == ["a", "b", "c"]


@pytest.mark.server
def test_unknown_classifier_is_404_json(server):
    status, body = labels(server, "nope.safetensors")
    assert status == 404 and "'nope.safetensors' not found" in body["error"]


@pytest.mark.server
@pytest.mark.parametrize(
    "name, reason",
    [
        ("../tiny.safetensors", "contains '..'"),
        ("sub/../tiny.safetensors", "contains '..'"),
        ("../../../../etc/passwd", "contains '..'"),
        ("..", "contains '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("~/tiny.safetensors", "is an absolute path"),
        ("C:/Windows/win.ini", "is an absolute path"),
        ("sub\\nested.safetensors", "contains a backslash"),
        ("..\\tiny.safetensors", "contains a backslash"),
        ("tiny\x00.safetensors", "contains a NUL character"),
        ("", "query parameter 'name' is missing"),
    ],
)
def test_unsafe_classifier_names_are_refused(server, name, reason):
    status, body = labels(server, name)
    assert status == 400 and reason in body["error"], body


@pytest.mark.server
def test_absolute_path_to_a_real_classifier_is_refused(server, tmp_path):
    net = NoiseAwareClassifier(ClassifierConfig(in_channels=4, num_classes=3, base_channels=16))
    outside = gio.save_classifier(
        str(tmp_path / "elsewhere.safetensors"),
        net,
        {
            "architecture": "noise_aware",
            "config": net.config.to_dict(),
            "labels": LABELS,
            "latent_channels": 4,
            "parameterization": "eps",
        },
    )
    status, body = labels(server, outside)
    assert status == 400 and "absolute path" in body["error"]


@pytest.mark.server
@pytest.mark.parametrize(
    "name, message",
    [
        ("old.ckpt", "pickled checkpoints"),
        ("disguised.safetensors", "is a pickle/zip checkpoint, not safetensors; refused"),
        ("broken.safetensors", "is not a safetensors file (corrupt or truncated)"),
    ],
)
def test_files_that_are_not_classifiers_are_422_json(server, name, message):
    status, body = labels(server, name)
    assert status == 422 and message in body["error"], body


# ---------------------------------------------------------------- the extension file


@pytest.mark.core
def test_extension_imports_only_the_app_module():
    with open(JS) as f:
        src = f.read()
    imports = re.findall(r"^\s*import\b.*?from\s+[\"']([^\"']+)[\"']", src, flags=re.M)
    assert imports == ["../../../scripts/app.js"]
    assert "/scripts/ui" not in src and "/extensions/core" not in src
    assert "import(" not in src  # no dynamic imports either


@pytest.mark.server
def test_extension_is_served(server):
    assert EXT_URL in server.get("/extensions")
    with urllib.request.urlopen(server.url + EXT_URL, timeout=30) as r:
        assert r.status == 200 and b"GuidanceLab.Frontend" in r.read()


# ---------------------------------------------------------------- headless Chromium


@pytest.fixture(scope="module")
def browser():
    with launched() as b:
        shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots and consoles only
        yield b


def _rgb(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)


def curve_pixels(png: bytes) -> int:
    """Pixels of the first series' colour: the drawn curve."""
    return int((abs(_rgb(png) - CURVE_RGB).sum(axis=2) < 60).sum())


def changed_pixels(a: bytes, b: bytes) -> int:
    ia, ib = _rgb(a), _rgb(b)
    assert ia.shape == ib.shape
    return int((abs(ia - ib).max(axis=2) > 40).sum())


@pytest.fixture()
def page(browser, ui_server, request):
    pg = Page(browser, ui_server)
    yield pg
    pg.close(request.node.name)


@pytest.mark.browser
def test_plot_draws_and_follows_widgets_classic_renderer(page):
    page.setup_graph(vue=False)
    sched = page.add_node("GuidanceLabSchedule", 90, 150)
    st = page.wait_plot(sched)
    assert st["error"] is None and st["series"][0]["values"] == [1.0] * 20  # constant 1 by default
    before = page.plot_png(sched)
    assert curve_pixels(before) > 150  # a drawn line, not a blank widget

    # a real click on the right arrow of the 'kind' combo: constant -> linear
    x, y, left, width = page.widget_center(sched, "kind")
    page.page.mouse.click(left + width - 22, y)
    page.wait("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'kind').value === 'linear'", sched)
    st = page.wait_plot(sched, st["fetches"])
    sigmas, lo, hi = PV.preview_sigmas(20)
    assert st["series"][0]["values"] == S.step_values(S.from_fields(kind="linear"), sigmas, lo, hi)
    after = page.plot_png(sched)
    assert curve_pixels(after) > 150 and changed_pixels(before, after) > 200

    # the preview step count (frontend only: a node property, not an input of the node)
    page.js(
        """(id) => { const n = app.graph.getNodeById(id); const w = n.widgets.find((w) => w.name === 'preview steps');
               w.setValue(7, {e: null, node: n, canvas: app.canvas}); }""",
        sched,
    )
    st = page.wait_plot(sched, st["fetches"])
    assert len(st["series"][0]["values"]) == 7
    assert page.js("(id) => app.graph.getNodeById(id).properties.guidance_lab_preview_steps", sched) == 7

    # our widgets are not inputs of the node: workflow and prompt keep their shape
    ser = page.js(
        """async (id) => {
        const n = app.graph.getNodeById(id);
        const p = await app.graphToPrompt();
        return {values: n.serialize().widgets_values, inputs: Object.keys(p.output[String(id)].inputs)};
    }""",
        sched,
    )
    assert len(ser["values"]) == len(S.DEFAULTS)  # one widget value per field of the node, none for the plot
    assert sorted(ser["inputs"]) == sorted(S.DEFAULTS)
    page.check_console()

    # a bad value shows the core's message in the plot; the only console error is the browser's own
    # "Failed to load resource" line for the route's 400 answer
    n_console, n_failed = len(page.console), len(page.failed)
    page.js(
        """(id) => { const n = app.graph.getNodeById(id);
               n.widgets.find((w) => w.name === 'kind').setValue('interval', {e: null, node: n, canvas: app.canvas});
               n.widgets.find((w) => w.name === 'sigma_lo').setValue(9, {e: null, node: n, canvas: app.canvas}); }""",
        sched,
    )
    page.wait("(id) => (app.graph.getNodeById(id).__guidanceLabPlot.error ?? '').includes('sigma_lo=9')", sched)
    msg = page.js("(id) => app.graph.getNodeById(id).__guidanceLabPlot.error", sched)
    assert msg == "schedule sigma_lo=9.0 is greater than sigma_hi=5.42; the interval needs sigma_lo <= sigma_hi"
    assert curve_pixels(page.plot_png(sched)) < 20  # the message replaces the curve
    page.js(
        """(id) => { const n = app.graph.getNodeById(id);
               n.widgets.find((w) => w.name === 'sigma_lo').setValue(0.28, {e: null, node: n, canvas: app.canvas}); }""",
        sched,
    )
    page.wait("(id) => app.graph.getNodeById(id).__guidanceLabPlot.error === null", sched)
    new_failed = page.failed[n_failed:]
    assert new_failed and all(st == 400 and u.endswith("/api/guidance_lab/schedule") for st, u in new_failed)
    new_errors = [m for t, m in page.console[n_console:] if t in ("error", "pageerror")]
    assert all(m.startswith("Failed to load resource: the server responded with a status of 400") for m in new_errors)

    # a saved workflow loads back with its preview step count and redraws
    page.js("async () => { await app.loadGraphData(app.graph.serialize()); }")
    st = page.wait_plot(sched)
    sigmas, lo, hi = PV.preview_sigmas(7)
    assert st["series"][0]["values"] == S.step_values(S.from_fields(kind="interval"), sigmas, lo, hi)
    assert (
        page.js("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'preview steps').value", sched) == 7
    )


@pytest.mark.browser
@pytest.mark.parametrize("vue", [False, True], ids=["classic", "vue"])
def test_plot_on_nodes_that_take_a_schedule_and_label_picker(page, vue):
    page.setup_graph(vue=vue)
    sched = page.add_node("GuidanceLabSchedule", 90, 150)
    guider = page.add_node("GuidanceLabCFGGuider", 480, 150)
    loader = page.add_node("GuidanceLabClassifierLoader", 480, 660)
    cg = page.add_node("GuidanceLabClassifierGuidance", 880, 170)
    page.js(
        """([s, g, l, c]) => {
        const [S, G, L, C] = [s, g, l, c].map((id) => app.graph.getNodeById(id));
        S.widgets.find((w) => w.name === 'kind').setValue('interval', {e: null, node: S, canvas: app.canvas});
        S.connect(0, G, G.inputs.findIndex((i) => i.name === 'cfg_schedule'));
        L.widgets.find((w) => w.name === 'classifier_name').setValue('tiny.safetensors', {e: null, node: L, canvas: app.canvas});
        L.connect(0, C, C.inputs.findIndex((i) => i.name === 'classifier'));
    }""",
        [sched, guider, loader, cg],
    )
    sigmas, lo, hi = PV.preview_sigmas(20)
    interval = S.step_values(S.from_fields(kind="interval"), sigmas, lo, hi)
    page.wait("(id) => app.graph.getNodeById(id).__guidanceLabPlot.series?.[0]?.label === 'cfg_schedule'", guider)
    st = page.wait_plot(guider)
    assert st["series"][0]["values"] == interval and st["series"][1]["values"] == [1.0] * 20
    assert curve_pixels(page.plot_png(guider)) > 100

    # the label picker: filled from the classifier's metadata; choosing a label appends it to target
    page.wait("(id) => app.graph.getNodeById(id).__guidanceLabLabels.labels.length > 0", cg)
    select = page.page.evaluate_handle("(id) => app.graph.getNodeById(id).__guidanceLabLabels.select", cg)
    assert select.evaluate("(s) => [...s.options].map((o) => o.textContent)") == ["(pick a label)", *LABELS]
    for label, want in (("dog", "dog"), ("ship", "dog, ship")):
        select.select_option(label)
        page.wait(
            "([id, t]) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'target').value === t", [cg, want]
        )
        assert select.evaluate("(s) => s.value") == ""  # back to the prompt, ready for the next label
    # what the user sees in target's text box is the new text too
    if vue:
        shown = page.page.locator(f"[data-node-id='{cg}'] textarea").first.input_value()
    else:
        shown = page.js("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'target').element.value", cg)
    assert shown == "dog, ship"
    # and it is what the prompt sends
    prompt = page.js("async () => (await app.graphToPrompt()).output")
    assert prompt[str(cg)]["inputs"]["target"] == "dog, ship" and "insert label" not in prompt[str(cg)]["inputs"]
    path = page.screenshot(f"schedule_plot_{'vue' if vue else 'classic'}.png")
    assert os.path.getsize(path) > 10_000
    page.check_console()


@pytest.mark.browser
def test_plot_in_the_vue_node_renderer(page):
    page.setup_graph(vue=True)
    sched = page.add_node("GuidanceLabSchedule", 120, 120)
    st = page.wait_plot(sched)
    assert st["series"][0]["values"] == [1.0] * 20
    before = page.plot_png(sched)
    assert curve_pixels(before) > 150
    # a real choice in the Vue node's dropdown: kind -> cosine
    node = page.page.locator(f"[data-node-id='{sched}']")
    node.get_by_text("constant", exact=True).first.click()
    page.page.get_by_role("option", name="cosine", exact=True).click()
    page.wait("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'kind').value === 'cosine'", sched)
    st = page.wait_plot(sched, st["fetches"])
    sigmas, lo, hi = PV.preview_sigmas(20)
    assert st["series"][0]["values"] == S.step_values(S.from_fields(kind="cosine"), sigmas, lo, hi)
    after = page.plot_png(sched)
    assert curve_pixels(after) > 150 and changed_pixels(before, after) > 200
    page.screenshot("schedule_node_vue.png")
    page.check_console()
