"""The example workflows (example_workflows/*.json, made by scripts/make_workflows.py), on a real ComfyUI server:

- the files are what the generator makes from the server's /object_info (nobody edited them by hand);
- every workflow converts to an API prompt (devkit/workflow_api.py) that fits /object_info: node types
  exist, widget values fit their types, ranges and options, links join existing outputs of the right type;
  the only model files allowed to be missing are the user-supplied ones listed here, in non-toy workflows;
- with stand-in files for those, ComfyUI's own validation of POST /prompt accepts the Stable Diffusion
  workflows too (they then fail where the stand-in weights are loaded, nowhere else);
- the toy workflows run end to end through POST /prompt and write real (not blank) images;
- each toy workflow has a small .jpg thumbnail; the server lists the workflows as templates;
- a real headless Chromium loads each workflow, on the pinned frontend and on the newest one (devkit/frontends.py):
  no missing nodes, no node errors (1.58 reports only the user's model files that are not there), no console
  errors, and the frontend's own graphToPrompt gives exactly the converter's API prompt.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import urllib.parse
import urllib.request

import pytest
from PIL import Image, ImageStat

from devkit import comfy_host as H
from devkit.compat_doc import comfyui_version_of_tree

from scripts import make_workflows as MW
from devkit import workflow_api as WA
from devkit import workflow_run as WR
from devkit.comfy_server import COMFY, import_problem

EXAMPLES = os.path.join(H.ROOT, "example_workflows")
ARTIFACTS = os.path.join(H.ROOT, "test-artifacts", "workflows")
NAMES = sorted(MW.WORKFLOWS)
TOY = sorted(MW.TOY_WORKFLOWS)
PACK = "guidance-lab"  # the pack's folder name in custom_nodes (devkit/comfy_server.py links it so)

# Model files a user supplies (nothing this project can ship or download): the only values allowed to be
# missing from the server's model folders, each in exactly the workflows listed. Toy workflows: none.
SD15 = ("CheckpointLoaderSimple", "ckpt_name", MW.SD15_CHECKPOINT)
USER_FILES = {
    "sd15_cfg_three_way_ksampler": {SD15},
    "sd15_cfg_three_way_guider": {SD15},
    "sd15_classifier_guidance": {SD15, ("GuidanceLabClassifierLoader", "classifier_name", MW.SD15_CLASSIFIER)},
    "sd15_clip_guidance": {SD15, ("GuidanceLabCLIPClassifierLoader", "checkpoint", MW.CLIP_CHECKPOINT)},
}
FOLDER_OF = {
    "CheckpointLoaderSimple": "checkpoints",
    "GuidanceLabClassifierLoader": "classifiers",
    "GuidanceLabCLIPClassifierLoader": "guidance_clip",
}


def load(name):
    with open(os.path.join(EXAMPLES, f"{name}.json")) as f:
        return json.load(f)


def _models(base):
    """An extra_model_paths.yaml with empty model folders (stand-ins for the user's files go there)."""
    models = base / "models"
    for folder in set(FOLDER_OF.values()):
        (models / folder).mkdir(parents=True, exist_ok=True)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(
        "guidance_lab_workflow_test:\n  base_path: "
        + str(models)
        + "\n"
        + "".join(f"  {f}: {f}\n" for f in sorted(set(FOLDER_OF.values())))
    )
    return models, yaml


@pytest.fixture(scope="module")
def start_server(start_server):
    """The servers (tests/conftest.py's `server` and `ui_server`) read a models folder of their own (srv.models)."""

    def start(base, frontend):
        models, yaml = _models(base)
        srv = start_server(base / f"out-{frontend.name}", frontend, ["--extra-model-paths-config", str(yaml)])
        srv.models = models
        return srv

    return start


@pytest.fixture(scope="module")
def stop_server(stop_server):
    def stop(srv):
        assert import_problem(stop_server(srv), os.path.join(COMFY, "custom_nodes", PACK)) is None

    return stop


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


# ---------------------------------------------------------------- files, conversion, validation


def _outputs_only_this_version_declares(generated: dict, saved: dict) -> tuple[dict, list]:
    """`generated` less the output slots its nodes have after the same node's slots in `saved` and that nothing
    links to, and those slots ("SaveImage.IMAGE"): what a core node of this ComfyUI declares beyond the one the
    files were made on (REFERENCE_COMFYUI), which the frontend adds itself when it loads the file."""
    generated = copy.deepcopy(generated)
    saved_nodes = {n["id"]: n for n in saved.get("nodes", [])}
    extra = []
    for node in generated["nodes"]:
        have = len(saved_nodes.get(node["id"], {}).get("outputs", []))
        outputs = node.get("outputs", [])
        if len(outputs) > have and not any(o.get("links") for o in outputs[have:]):
            extra += [f"{node['type']}.{o['type']}" for o in outputs[have:]]
            node["outputs"] = outputs[:have]
    return generated, extra


@pytest.mark.server
def test_files_are_generated_and_up_to_date(object_info):
    """The files are what scripts/make_workflows.py makes from this server's /object_info: exactly on the ComfyUI
    they are made on; on another version, less output slots that a core node of that version adds unlinked (read
    from its /object_info: each one must be declared there)."""
    on_disk = sorted(f[:-5] for f in os.listdir(EXAMPLES) if f.endswith(".json"))
    assert on_disk == NAMES
    assert sorted(USER_FILES) == sorted(set(NAMES) - set(TOY))
    reference = comfyui_version_of_tree() == MW.REFERENCE_COMFYUI
    for name, wf in MW.build_all(object_info).items():
        saved = load(name)
        if not reference:
            wf, extra = _outputs_only_this_version_declares(wf, saved)
            for slot in extra:
                node_type, out_type = slot.split(".", 1)
                assert out_type in object_info[node_type]["output"], slot
        assert saved == wf, f"{name}.json is out of date: run .venv/bin/python -m scripts.make_workflows"


@pytest.mark.server
@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_consistent_and_validates(name, object_info):
    wf = load(name)
    assert WA.validate_ui(wf, object_info) == []
    prompt = WA.ui_to_api(wf, object_info)
    errors, missing = WA.validate_api(prompt, object_info, user_files=WA.MODEL_FILE_INPUTS)
    assert errors == []
    assert {(ctype, inp, value) for _, ctype, inp, value in missing} == USER_FILES.get(name, set())
    # what a template shows and saves: a note, every sampler result saved
    types = [n["type"] for n in wf["nodes"]]
    assert "MarkdownNote" in types and "MarkdownNote" not in {n["class_type"] for n in prompt.values()}
    assert {n["class_type"] for n in prompt.values()} >= {"SaveImage"}
    # seeds are fixed, so a template gives the same pictures every time
    controls = [v for n in wf["nodes"] for v in n["widgets_values"] if v in ("randomize", "increment", "decrement")]
    assert controls == []


@pytest.mark.server
def test_validator_finds_mistakes(object_info):
    """The checks above can fail: wrong values, types, links and missing files are reported."""
    wf = load("toy_cfg_patch_ksampler")
    prompt = WA.ui_to_api(wf, object_info)
    ks = next(k for k, n in prompt.items() if n["class_type"] == "KSampler")
    dec = next(k for k, n in prompt.items() if n["class_type"] == "GuidanceLabToyDecode")
    toy = next(k for k, n in prompt.items() if n["class_type"] == "GuidanceLabToyModelLoader")
    bad = copy.deepcopy(prompt)
    bad[ks]["inputs"].update(steps=0, cfg="7", sampler_name="nope", positive=[toy, 0], negative=["999", 0])
    bad[dec]["inputs"]["upscale"] = 17
    bad[toy]["inputs"]["toy_model"] = "other.safetensors"
    errors, missing = WA.validate_api(bad, object_info, user_files={})
    text = "\n".join(errors)
    for want in (
        "steps=0 is below min 1",
        "cfg='7' is not a finite number",
        "sampler_name='nope' is not one of",
        "input 'positive' (CONDITIONING) is linked to a MODEL output",
        "links to node 999",
        "upscale=17 is above max 16",
        "toy_model='other.safetensors' is not one of",
    ):
        assert want in text, (want, text)
    assert missing == []
    _, missing = WA.validate_api(bad, object_info, user_files=WA.MODEL_FILE_INPUTS)
    assert missing == [(toy, "GuidanceLabToyModelLoader", "toy_model", "other.safetensors")]
    broken = copy.deepcopy(wf)
    ks_ui = next(n for n in broken["nodes"] if n["type"] == "KSampler")
    ks_ui["widgets_values"] = ks_ui["widgets_values"][:-2]
    broken["links"][0][5] = "IMAGE"
    errors = WA.validate_ui(broken, object_info)
    assert any("KSampler): 5 widget values, the frontend saves 7" in e for e in errors), errors
    assert any(e.startswith("link 1: type IMAGE") for e in errors), errors


@pytest.mark.server
def test_converter_handles_frontend_only_nodes(object_info):
    """Reroute, PrimitiveNode, muted and bypassed nodes, a linked widget input, dict widget values."""
    wf = copy.deepcopy(load("toy_cfg_patch_ksampler"))
    nodes = {n["id"]: n for n in wf["nodes"]}
    by_type = {n["type"]: n for n in wf["nodes"]}
    ks, patch = by_type["KSampler"], by_type["GuidanceLabCFGPatch"]
    # a Reroute on the MODEL link into the KSampler, and the CFG patch bypassed (mode 4)
    model_in = next(i for i in ks["inputs"] if i["name"] == "model")
    link = next(lk for lk in wf["links"] if lk[0] == model_in["link"])
    reroute_id, new_link = wf["last_node_id"] + 1, wf["last_link_id"] + 1
    wf["nodes"].append(
        {
            "id": reroute_id,
            "type": "Reroute",
            "pos": [0, 0],
            "size": [75, 26],
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": link[0]}],
            "outputs": [{"name": "", "type": "MODEL", "links": [new_link]}],
            "properties": {},
        }
    )
    link[3], link[4] = reroute_id, 0
    wf["links"].append([new_link, reroute_id, 0, ks["id"], 0, "MODEL"])
    model_in["link"] = new_link
    patch["mode"] = 4
    # a PrimitiveNode feeding the KSampler's steps widget
    prim_id, prim_link = reroute_id + 1, new_link + 1
    wf["nodes"].append(
        {
            "id": prim_id,
            "type": "PrimitiveNode",
            "pos": [0, 0],
            "size": [210, 82],
            "mode": 0,
            "outputs": [{"name": "INT", "type": "INT", "links": [prim_link], "widget": {"name": "steps"}}],
            "widgets_values": [9, "fixed"],
        }
    )
    wf["links"].append([prim_link, prim_id, 0, ks["id"], 5, "INT"])
    steps_in = next(i for i in ks["inputs"] if i["name"] == "steps")
    steps_in["link"] = prim_link
    # widget values saved as a dict (some packs do), and a muted Save node
    dec = by_type["GuidanceLabToyDecode"]
    dec["widgets_values"] = {"upscale": 2}
    by_type["SaveImage"]["mode"] = 2
    prompt = WA.ui_to_api(wf, object_info)
    toy = str(by_type["GuidanceLabToyModelLoader"]["id"])
    assert prompt[str(ks["id"])]["inputs"]["model"] == [toy, 0]  # through the reroute and the bypassed patch
    assert prompt[str(ks["id"])]["inputs"]["steps"] == 9
    assert prompt[str(dec["id"])]["inputs"]["upscale"] == 2
    assert {str(patch["id"]), str(reroute_id), str(prim_id), str(by_type["SaveImage"]["id"])}.isdisjoint(prompt)
    assert all(n["type"] != "MarkdownNote" or str(i) not in prompt for i, n in nodes.items())
    with pytest.raises(WA.WorkflowError, match="NoSuchNode.* is not installed"):
        WA.ui_to_api({"nodes": [{"id": 1, "type": "NoSuchNode"}], "links": []}, object_info)


@pytest.mark.core
def test_thumbnails_and_readme():
    with open(os.path.join(EXAMPLES, "README.md")) as f:
        readme = f.read()
    for name in NAMES:
        assert f"{name}.json" in readme, name
        # every workflow has its thumbnail beside it (the template browser's and the registry's <name>.jpg): a
        # toy one the images of a real run, a Stable Diffusion one (no weights here) a screenshot of its graph in
        # the frontend (scripts/make_workflow_thumbnails.py)
        jpg = os.path.join(EXAMPLES, f"{name}.jpg")
        assert os.path.getsize(jpg) < 100_000, name
        with Image.open(jpg) as im:
            assert im.format == "JPEG" and min(im.size) >= 200, (name, im.size)
            assert ImageStat.Stat(im.convert("L")).stddev[0] > 20  # pictures, not a blank
            if name not in TOY:
                assert im.width >= 800 and im.width > im.height, (name, im.size)  # the whole graph, wide
    assert sorted(f for f in os.listdir(EXAMPLES) if not f.endswith((".json", ".jpg"))) == ["README.md"]


@pytest.mark.server
def test_server_lists_the_templates(server):
    assert sorted(server.get("/workflow_templates")[PACK]) == NAMES
    for name in ("toy_cfg_patch_ksampler.json", "toy_cfg_patch_ksampler.jpg"):
        with open(os.path.join(EXAMPLES, name), "rb") as f:
            want = f.read()
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK}/{name}", timeout=30) as r:
            assert r.status == 200 and r.read() == want


# ---------------------------------------------------------------- running them


def _batch(wf):
    return next(n["widgets_values"][2] for n in wf["nodes"] if n["type"] == "EmptyLatentImage")


@pytest.mark.server
@pytest.mark.parametrize("name", TOY)
def test_toy_workflow_runs_and_writes_images(name, server, object_info):
    wf = load(name)
    entry, paths, err = WR.run_workflow(server, wf, object_info)
    assert err is None, err
    assert entry["status"]["status_str"] == "success"
    assert len(paths) == _batch(wf) and all(f"guidance-lab{os.sep}{name}_" in p for p in paths)
    for p in paths:
        with Image.open(p) as im:
            assert im.size == (128, 128)  # 32x32 latent, Toy Decode upscale 4
            gray = im.convert("L")
            lo, hi = gray.getextrema()
            assert hi - lo > 100 and ImageStat.Stat(gray).stddev[0] > 25, (p, lo, hi)


@pytest.mark.server
def test_main_command_runs_every_toy_workflow(tmp_path):
    """The README's main command, as a user runs it (bash scripts/run.sh OUTDIR): every toy workflow
    writes its images, and the contact sheet is written."""
    import subprocess

    out = tmp_path / "run"
    proc = subprocess.run(
        ["bash", os.path.join(H.ROOT, "scripts", "run.sh"), str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert WR.toy_workflow_names() == TOY and f"{len(TOY)} workflows ran, 0 failed" in proc.stdout
    for name in TOY:
        images = [f for f in os.listdir(out / PACK) if f.startswith(f"{name}_") and f.endswith(".png")]
        assert len(images) == _batch(load(name)), (name, images)
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size[0] > 512 and sheet.size[1] >= 96 * len(TOY)


@pytest.mark.server
def test_sd15_workflows_pass_comfyuis_own_validation(server):
    """With empty stand-ins for the user's model files, POST /prompt accepts every Stable Diffusion workflow
    (ComfyUI's validate_prompt: types, links, required inputs, ranges, options); running them then fails
    only where the stand-in weights are read."""
    made = []
    try:
        for files in USER_FILES.values():
            for ctype, _, value in files:
                path = server.models / FOLDER_OF[ctype] / value
                if not path.exists():
                    path.write_bytes(b"")
                    made.append(path)
        info = server.get("/object_info")
        for name in USER_FILES:
            status, body = server.post_prompt(WA.ui_to_api(load(name), info))
            assert status == 200, (name, body)
            entry = server.wait(body["prompt_id"], timeout=120)
            errs = [d for kind, d in entry["status"]["messages"] if kind == "execution_error"]
            assert len(errs) == 1 and errs[0]["node_type"] in FOLDER_OF, (name, errs)
    finally:
        for path in made:
            path.unlink()


# ---------------------------------------------------------------- the frontend (headless Chromium)


@pytest.fixture(scope="module")
def page(ui_server):
    from devkit import browser as W

    if not os.path.exists(W.CHROMIUM):
        pytest.skip(f"Debian chromium is not installed ({W.CHROMIUM}); scripts/test.sh installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed (requirements-dev.txt)")
    artifacts = os.path.join(ARTIFACTS, ui_server.frontend.name)
    shutil.rmtree(artifacts, ignore_errors=True)
    os.makedirs(artifacts)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=W.CHROMIUM, args=W.BROWSER_ARGS)
        pg = W.Page(browser, ui_server)
        pg.artifacts = artifacts
        yield pg
        with open(os.path.join(artifacts, "console.json"), "w") as f:
            json.dump(pg.log(), f, indent=1)
        browser.close()


# Where a frontend reports a workflow's problems (missing nodes): 1.32.9 opens a modal dialog (.p-dialog);
# newer ones (1.58) show a non-modal card over the canvas (data-testid error-overlay) and outline the node.
REPORTS = ".p-dialog, [data-testid='error-overlay']"


def _load_in_frontend(page, wf, name):
    page.js("async ([wf, name]) => { await app.loadGraphData(wf, true, true, name); }", [wf, name])
    page.page.wait_for_timeout(500)  # a dialog opens after the graph is configured
    # node ids as the frontend saves them (the live graph's ids are strings in newer frontends)
    return page.js(
        """async (reports) => ({
        dialogs: [...document.querySelectorAll(reports)].map((d) => d.innerText),
        nodes: app.graph.nodes.map((n) => { const s = n.serialize();
            return {id: s.id, type: s.type, errors: !!n.has_errors, values: s.widgets_values ?? []}; }),
        prompt: (await app.graphToPrompt()).output,
    })""",
        REPORTS,
    )


@pytest.mark.browser
def test_missing_node_dialog_is_seen(page):
    """The dialog check below works: a workflow with an unknown node type shows it."""
    wf = copy.deepcopy(load("toy_cfg_patch_ksampler"))
    wf["nodes"][1]["type"] = "GuidanceLabNoSuchNode"
    got = _load_in_frontend(page, wf, "broken")
    assert any("missing node" in d.lower() and "GuidanceLabNoSuchNode" in d for d in got["dialogs"]), got["dialogs"]
    page.page.keyboard.press("Escape")  # the dialog; the overlay card has a close button
    page.js("() => document.querySelector(\"[data-testid='error-overlay-dismiss']\")?.click()")
    page.wait("(reports) => !document.querySelector(reports)", REPORTS)


def _label_picker_expectations(wf, name):
    """(node id, 'labels' | 'first', value) for each node with the label picker: the toy classifier's labels,
    '(labels unavailable...' for a user's classifier file that is not there, a hint for a CLIP classifier."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    missing = {v for c, _, v in USER_FILES.get(name, ()) if c == "GuidanceLabClassifierLoader"}
    out = []
    for n in wf["nodes"]:
        if n["type"] not in ("GuidanceLabClassifierGuidance", "GuidanceLabClassifierSampler"):
            continue
        src = next(nodes[lk[1]] for lk in wf["links"] if lk[3] == n["id"] and lk[5] == "GUIDANCE_CLASSIFIER")
        if src["type"] == "GuidanceLabCLIPClassifierLoader":
            out.append((n["id"], "first", "(labels: connect a Load Classifier node)"))
        elif src["widgets_values"][0] in missing:
            out.append((n["id"], "first", "(labels unavailable"))
        else:
            out.append((n["id"], "labels", MW.FASHION))
    return out


def _issue_details(page):
    """{group: text} of the frontend's issue list behind an error-overlay card (newer frontends: the Issues tab of
    the properties panel, opened by the card's 'View details'); None when there is no such card. Closes both."""
    if not page.js("() => !!document.querySelector(\"[data-testid='error-overlay-see-errors']\")"):
        return None
    page.page.click("[data-testid='error-overlay-see-errors']")
    page.wait("() => document.querySelectorAll(\"[data-testid^='error-group-']\").length > 0")
    groups = page.js("""() => Object.fromEntries([...document.querySelectorAll("[data-testid^='error-group-']")]
        .map((e) => [e.getAttribute('data-testid').slice('error-group-'.length), e.innerText]))""")
    page.page.get_by_role("button", name="Toggle properties panel").click()
    page.js("() => document.querySelector(\"[data-testid='error-overlay-dismiss']\")?.click()")
    page.wait("(reports) => !document.querySelector(reports)", REPORTS)
    groups.pop("display-message", None)  # the group's help line, not a group
    return groups


def _default_titles_dropped(prompt, wf):
    """The prompt without the _meta of nodes that have no title of their own in the workflow."""
    titled = {str(n["id"]) for n in wf["nodes"] if n.get("title")}
    return {k: v if k in titled else {f: x for f, x in v.items() if f != "_meta"} for k, v in prompt.items()}


MODEL_FILE = re.compile(r"[\w.-]+\.(?:safetensors|ckpt|pt|pth|bin|sft)\b")


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_in_the_frontend(page, name, object_info):
    wf = load(name)
    since = page.mark()
    got = _load_in_frontend(page, wf, name)
    # no missing node, ever; the only problem a frontend may report is the user's model files not being there
    # (1.58 lists them in an issues card, outlines their loader nodes in red and marks them has_errors;
    # 1.32.9 does not check model files when loading)
    assert not [d for d in got["dialogs"] if "missing node" in d.lower()], got["dialogs"]
    user_files = {v for _, _, v in USER_FILES.get(name, ())}
    flagged = {v for c, _, v in USER_FILES.get(name, ()) for n in got["nodes"] if n["type"] == c and n["errors"]}
    if got["dialogs"]:
        issues = _issue_details(page)
        assert issues is not None, got["dialogs"]  # a modal dialog: never expected
        assert list(issues) == ["missing-model"], issues
        assert set(MODEL_FILE.findall(issues["missing-model"])) == user_files != set(), issues
        assert flagged == user_files, got["nodes"]
    assert sorted(n["id"] for n in got["nodes"]) == sorted(n["id"] for n in wf["nodes"])
    saved = {n["id"]: n for n in wf["nodes"]}
    for n in got["nodes"]:
        assert n["type"] == saved[n["id"]]["type"]
        assert not n["errors"] or (got["dialogs"] and any(n["type"] == c for c, _, _ in USER_FILES[name])), n
        assert n["values"] == saved[n["id"]]["widgets_values"], (n["type"], n["values"])
    want = WA.ui_to_api(wf, object_info)
    if page.frontend.name == "pinned":
        assert got["prompt"] == want  # the frontend's own conversion = ours
    else:
        # newer frontends give a node without a saved title their own (localized) display name, e.g. 1.58:
        # BasicGuider -> "Basic Guider" where the server says "BasicGuider"; _meta is not used to run a prompt
        assert _default_titles_dropped(got["prompt"], wf) == _default_titles_dropped(want, wf)
    # the label picker of the guidance nodes: the toy classifier's labels come from its file's metadata
    expect = _label_picker_expectations(wf, name)
    page.wait(
        """(exp) => exp.every(([id, kind, v]) => {
        const st = app.graph.getNodeById(id)?.__guidanceLabLabels;
        if (!st) return false;
        return kind === 'labels' ? JSON.stringify(st.labels) === JSON.stringify(v)
                                 : (st.select.options[0]?.textContent ?? '').startsWith(v);
    })""",
        expect,
    )
    page.page.screenshot(path=os.path.join(page.artifacts, f"{name}.png"))
    # a user's classifier file that is not there is a 404 of the label route (shown in the picker), nothing else
    allowed = {
        f"/api/guidance_lab/classifier_labels?name={urllib.parse.quote(v, safe='')}"
        for c, _, v in USER_FILES.get(name, ())
        if c == "GuidanceLabClassifierLoader"
    }
    new = page.failed[since[1] :]
    expected = [f for f in new if f[0] == 404 and any(f[1].endswith(a) for a in allowed)]
    assert len({u for _, u in expected}) == len(allowed)
    page.failed[since[1] :] = [f for f in new if f not in expected]
    page.check_console(since)
