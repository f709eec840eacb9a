"""The pack in the ecosystem's conventions: locales, node search aliases and subgraph blueprints.

- locales/<lang>/main.json + nodeDefs.json (ComfyUI's i18n, served on GET /i18n): English equals what
  scripts/make_locales.py makes from the node schemas; Simplified Chinese (zh) and Japanese (ja) have every node,
  input and output of the English file, with a non-empty name, and a tooltip and description wherever English has
  one, written in the language (not English copied);
- search aliases (nodes/search_aliases.py) in the node info where the running ComfyUI's schema has them (0.33.0),
  none and no error where it has not (0.3.52, 0.3.75);
- subgraph blueprints (subgraphs/, made by scripts/make_blueprints.py) hold only nodes the running ComfyUI
  registers; GET /global_subgraphs lists them where the server has the route (0.3.75 and later), and 0.3.52 (no
  route) starts with the folder there and answers 404;
- in a real headless Chromium: with the frontend's language set to Chinese (setting Comfy.Locale), the pack's nodes
  show their Chinese names, input names and tooltips; the blueprints are in the node library, and one added from there
  runs on the toy model. On the pinned and the newest frontend (devkit/frontends.py), as tests/test_web.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request

import pytest

from devkit import comfy_host as H
from devkit import frontends as FE
from devkit.browser import Page, launched, tree_args
from devkit.comfy_server import COMFY, ComfyServer, error_of, images_of, import_problem
from scripts import make_blueprints as MB
from scripts import make_locales as ML

LANGS = ["zh", "ja"]
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef]")  # kana, CJK ideographs, full-width forms
SUBGRAPHS = os.path.join(H.ROOT, "subgraphs")
BLUEPRINT_FILES = sorted(f for f in os.listdir(SUBGRAPHS) if f.endswith(".json"))
HAS_SUBGRAPH_ROUTE = os.path.isfile(os.path.join(COMFY, "app", "subgraph_manager.py"))  # the server's own code
PACK_IDS = None


def pack_node_ids() -> list[str]:
    global PACK_IDS
    if PACK_IDS is None:
        pack = H.pack_module("nodes")
        PACK_IDS = [cls.GET_SCHEMA().node_id for cls in pack.loadable(pack.NODES)]
    return PACK_IDS


# ---------------------------------------------------------------- locale files


@pytest.mark.comfy
def test_english_locale_is_what_the_script_makes_from_the_schemas():
    made = ML.english()
    assert sorted(made) == sorted(ML.FILES)
    assert sorted(made["nodeDefs.json"]) == sorted(pack_node_ids())
    for file, data in made.items():
        with open(os.path.join(ML.LOCALES, "en", file), encoding="utf-8") as f:
            assert f.read() == ML.dumps(data), f"locales/en/{file} is stale: run python -m scripts.make_locales"


def _translated(text) -> bool:
    return isinstance(text, str) and text.strip() != "" and CJK.search(text) is not None


@pytest.mark.comfy
@pytest.mark.parametrize("lang", LANGS)
def test_every_node_input_and_output_has_a_translation(lang):
    en, tr = ML.read("en", "nodeDefs.json"), ML.read(lang, "nodeDefs.json")
    assert sorted(tr) == sorted(en), f"locales/{lang}: nodes {sorted(set(en) ^ set(tr))} differ from English"
    bad = []
    for node, e in en.items():
        t = tr[node]
        if not _translated(t.get("display_name")):
            bad.append(f"{node}.display_name")
        if ("description" in e) != _translated(t.get("description")):
            bad.append(f"{node}.description")
        for part in ("inputs", "outputs"):
            if sorted(t.get(part, {})) != sorted(e[part]):
                bad.append(f"{node}.{part}: {sorted(t.get(part, {}))} != {sorted(e[part])}")
                continue
            for name, entry in e[part].items():
                got = t[part][name]
                if not (isinstance(got.get("name"), str) and got["name"].strip()):
                    bad.append(f"{node}.{part}.{name}.name")
                if ("tooltip" in entry) != _translated(got.get("tooltip")):
                    bad.append(f"{node}.{part}.{name}.tooltip")
    assert bad == [], f"locales/{lang}/nodeDefs.json: missing, empty or untranslated: {bad}"
    main_en, main_tr = ML.read("en", "main.json"), ML.read(lang, "main.json")
    assert sorted(main_tr["nodeCategories"]) == sorted(main_en["nodeCategories"])
    assert all(v.strip() for v in main_tr["nodeCategories"].values())


@pytest.mark.core
@pytest.mark.parametrize("lang", LANGS)
def test_no_translation_is_older_than_its_english(lang):
    """Every translated string was made from the English it stands for now (locales/translated_from.json): a changed
    tooltip is named until its translation is updated and `make_locales --mark-translated` is run."""
    assert ML.stale_translations(lang) == [], (
        f"locales/{lang}: the English of these strings changed since they were translated; update them, then run "
        f"python -m scripts.make_locales --mark-translated {lang}"
    )


# ---------------------------------------------------------------- search aliases


@pytest.mark.comfy
def test_search_aliases_where_the_schema_has_them():
    H.boot()
    aliases = H.pack_module("nodes.search_aliases")
    assert sorted(aliases.ALIASES) == sorted(pack_node_ids())
    version = H.version_tuple(H.comfyui_version())
    if version >= (0, 33, 0):
        assert aliases.supported()
    if version <= (0, 3, 75):
        assert not aliases.supported()
    for node_id, want in aliases.ALIASES.items():
        info = H.node(node_id).GET_NODE_INFO_V1()
        if aliases.supported():
            assert info["search_aliases"] == want, node_id
        else:
            assert "search_aliases" not in info, node_id


# ---------------------------------------------------------------- blueprint files


@pytest.mark.comfy
def test_blueprint_files_are_the_scripts_and_hold_registered_nodes():
    assert BLUEPRINT_FILES == sorted(f"{bp['name']}.json" for bp in MB.BLUEPRINTS)
    registered = H.boot().NODE_CLASS_MAPPINGS
    for file in BLUEPRINT_FILES:
        with open(os.path.join(SUBGRAPHS, file), encoding="utf-8") as f:
            data = json.load(f)
        name = file[: -len(".json")]
        (root,), (sub,) = data["nodes"], data["definitions"]["subgraphs"]
        assert root["type"] == sub["id"] and sub["name"] == root["title"] == name
        assert data["extra"]["BlueprintDescription"]
        types = [n["type"] for n in sub["nodes"]]
        assert [t for t in types if t not in registered] == [], file
        assert any(t.startswith("GuidanceLab") for t in types)
        ids = {n["id"] for n in sub["nodes"]} | {sub["inputNode"]["id"], sub["outputNode"]["id"]}
        assert all(link["origin_id"] in ids and link["target_id"] in ids for link in sub["links"]), file
        # the subgraph node's sockets are the subgraph's, by name and type
        for part in ("inputs", "outputs"):
            assert [(s["name"], s["type"]) for s in root[part]] == [(s["name"], s["type"]) for s in sub[part]]


@pytest.mark.server
def test_registry_zip_ships_locales_and_blueprints(tmp_path, monkeypatch):
    """The zip `comfy node publish` uploads (comfy-cli's own zip_files: git-tracked files less .comfyignore)."""
    import zipfile

    from comfy_cli.file_utils import zip_files

    monkeypatch.chdir(H.ROOT)
    zip_files(str(tmp_path / "node.zip"))
    with zipfile.ZipFile(tmp_path / "node.zip") as z:
        names = set(z.namelist())
    want = {f"locales/{lang}/{file}" for lang in ML.LANGUAGES for file in ML.FILES}
    want |= {f"subgraphs/{f}" for f in BLUEPRINT_FILES}
    assert sorted(want - names) == []
    assert not any(n.startswith(("scripts/", "tests/", "devkit/")) for n in names)


# ---------------------------------------------------------------- a real server


def start_server(frontend):
    work = tempfile.mkdtemp(prefix="gl-locales-")
    srv = ComfyServer(os.path.join(work, "out"), extra_args=[*tree_args(work), *frontend.server_args]).start()
    srv.frontend, srv.tmp = frontend, work
    return srv


def stop_server(srv):
    srv.stop()
    with open(srv.log_path) as f:
        log = f.read()
    shutil.rmtree(srv.tmp, ignore_errors=True)
    assert import_problem(log, os.path.join(COMFY, "custom_nodes", "guidance-lab")) is None


@pytest.fixture(scope="module")
def server():
    srv = start_server(FE.pinned())
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module", params=FE.NAMES)
def ui_server(request, server):
    frontend = FE.get(request.param)
    if frontend.name == "pinned":
        yield server
        return
    srv = start_server(frontend)
    yield srv
    stop_server(srv)


def get(srv, path):
    """(status, JSON body or None)."""
    try:
        with urllib.request.urlopen(srv.url + path, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


@pytest.mark.server
def test_i18n_route_serves_the_locales(server):
    status, served = get(server, "/i18n")
    assert status == 200
    ids = pack_node_ids()
    for lang in ["en", *LANGS]:
        defs = ML.read(lang, "nodeDefs.json")
        assert {i: served[lang]["nodeDefs"][i] for i in ids} == {i: defs[i] for i in ids}, lang
        cats = ML.read(lang, "main.json")["nodeCategories"]
        assert {k: served[lang]["nodeCategories"][k] for k in cats} == cats, lang


@pytest.mark.server
def test_object_info_search_aliases(server):
    status, info = get(server, "/object_info")
    assert status == 200
    aliases = H.pack_module("nodes.search_aliases")
    for node_id, want in aliases.ALIASES.items():
        got = info[node_id].get("search_aliases")
        assert got == (want if aliases.supported() else None), node_id


@pytest.mark.server
def test_global_subgraphs_route_lists_the_blueprints(server):
    status, listed = get(server, "/global_subgraphs")
    if not HAS_SUBGRAPH_ROUTE:  # 0.3.52: no route; the server started and loaded the pack with subgraphs/ there
        assert status == 404
        return
    assert status == 200
    ours = {k: v for k, v in listed.items() if v["info"]["node_pack"] == "custom_nodes.guidance-lab"}
    assert sorted(v["name"] + ".json" for v in ours.values()) == BLUEPRINT_FILES
    for key, entry in ours.items():
        status, full = get(server, f"/global_subgraphs/{key}")
        with open(os.path.join(SUBGRAPHS, entry["name"] + ".json"), encoding="utf-8") as f:
            assert status == 200 and json.loads(full["data"]) == json.load(f)


# ---------------------------------------------------------------- headless Chromium

# ComfyUI 0.3.75's pinned frontend loads a language's own messages after it merged the custom nodes' ones
# (GET /i18n) and replaces them (loadLocale: i18n.setLocaleMessage, no re-merge; newer frontends, e.g. 0.33.0's
# 1.49.6 and 1.58, merge the custom nodes' messages again): no custom pack's translation shows there.
LOSES_CUSTOM_LOCALES = {"1.32.9"}


@pytest.fixture(scope="module")
def browser():
    with launched() as b:
        yield b


@pytest.fixture()
def page(browser, ui_server, request):
    pg = Page(browser, ui_server)
    yield pg
    pg.close(request.node.name)


def slot_point(pg, node_id, slot_name):
    """Page coordinates of an input slot of a node (classic canvas renderer)."""
    return pg.js(
        """([id, name]) => {
        const n = app.graph.getNodeById(id);
        const [x, y] = app.canvas.ds.convertOffsetToCanvas(n.getConnectionPos(true, n.findInputSlot(name)));
        const r = app.canvas.canvas.getBoundingClientRect();
        return [r.left + x, r.top + y];
    }""",
        [node_id, slot_name],
    )


def hover_tooltip(pg, x, y) -> str:
    """The canvas tooltip's text after the mouse rests at (x, y)."""
    pg.page.mouse.move(x - 20, y - 20)
    pg.page.mouse.move(x, y)
    pg.wait("() => document.querySelector('.node-tooltip')?.textContent?.trim()", timeout=10_000)
    return pg.js("() => document.querySelector('.node-tooltip').textContent.trim()")


def set_locale(srv, lang):
    """The frontend's language setting (Comfy.Locale) on the server, as a user who chose it before loads the page."""
    req = urllib.request.Request(
        srv.url + "/settings/Comfy.Locale",
        data=json.dumps(lang).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=30).close()


@pytest.mark.browser
def test_chinese_names_and_tooltips(browser, ui_server, request):
    if ui_server.frontend.version in LOSES_CUSTOM_LOCALES:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason=f"frontend {ui_server.frontend.version} replaces "
                "custom nodes' messages when it loads a language (see above)",
            )
        )
    zh = ML.read("zh", "nodeDefs.json")
    set_locale(ui_server, "zh")
    page = Page(browser, ui_server)
    try:
        # the frontend's own Chinese is there: the stock KSampler has its Chinese name
        page.wait("() => LiteGraph.registered_node_types['KSampler']?.title === 'K采样器'", timeout=60_000)
        page.setup_graph(vue=False)
        titles = page.js("(ids) => ids.map((id) => LiteGraph.registered_node_types[id]?.title)", pack_node_ids())
        assert titles == [zh[i]["display_name"] for i in pack_node_ids()]
        node_type = "GuidanceLabNAGTerm"
        nid = page.add_node(node_type, 200, 150)
        shown = page.js(
            """(id) => {
            const n = app.graph.getNodeById(id);
            return {title: n.title,
                    inputs: Object.fromEntries(n.inputs.map((s) => [s.name, s.label || s.localized_name])),
                    widgets: Object.fromEntries(n.widgets.filter((w) => w.label).map((w) => [w.name, w.label]))};
        }""",
            nid,
        )
        want = zh[node_type]
        assert shown["title"] == want["display_name"]
        assert shown["inputs"] == {k: want["inputs"][k]["name"] for k in shown["inputs"]}
        assert shown["widgets"] and shown["widgets"] == {k: want["inputs"][k]["name"] for k in shown["widgets"]}
        page.page.wait_for_timeout(300)  # a frame with the node drawn
        x, y = slot_point(page, nid, "conditioning")
        assert hover_tooltip(page, x + 4, y) == want["inputs"]["conditioning"]["tooltip"]
        page.screenshot("locale-zh.png")
        page.check_console()
    finally:
        page.close(request.node.name)
        set_locale(ui_server, "en")


@pytest.mark.skipif(
    not HAS_SUBGRAPH_ROUTE,
    reason=f"ComfyUI {H.comfyui_version()} serves no subgraph blueprints "
    "(no /global_subgraphs route; 0.3.75 and later do)",
)
def add_from_library(page, name):
    """Add a node from the open node library, as a user would: the pinned frontend adds it on a click; the newest
    selects the item, and a second click adds it."""
    count = "(name) => app.graph.nodes.filter((n) => n.isSubgraphNode?.() && n.title === name).length"
    item = page.page.get_by_text(name, exact=True).first
    item.click()
    page.page.wait_for_timeout(1500)
    if page.js(count, name) == 0:
        item.click()
    page.wait(f"(name) => ({count})(name) === 1", arg=name, timeout=30_000)


@pytest.mark.browser
def test_blueprints_in_the_node_library_and_one_runs(page, ui_server):
    names = [f[: -len(".json")] for f in BLUEPRINT_FILES]
    autoguidance = "Autoguidance sampler (Guidance Lab)"
    page.setup_graph(vue=False)
    page.js("async () => { await app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library'); }")
    folder = page.page.get_by_text("Subgraph Blueprints", exact=True).first
    folder.wait_for(timeout=30_000)
    folder.click()  # the pinned frontend's folder of blueprints
    page.page.wait_for_timeout(500)
    packs = page.page.get_by_text("Comfy Blueprints", exact=True)  # newer: the installed ones' folder in that section
    if packs.count():
        packs.first.click()
    for name in names:
        page.page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    page.screenshot("blueprints-library.png")
    # added from the library as a user would, then wired to the toy model
    add_from_library(page, autoguidance)
    prompt = page.js("""async () => {
        const bp = app.graph.nodes.find((n) => n.isSubgraphNode?.());  // the only one yet
        const add = (type, widgets = {}) => {
            const n = LiteGraph.createNode(type);
            app.graph.add(n);
            for (const [k, v] of Object.entries(widgets)) n.widgets.find((w) => w.name === k).value = v;
            return n;
        };
        const link = (from, out, to, inp) => from.connect(from.findOutputSlot(out), to, to.findInputSlot(inp));
        const good = add("GuidanceLabToyModelLoader"), weak = add("GuidanceLabToyModelLoader",
            {toy_model: "fashion_diffusion_weak.safetensors"});
        const cond = add("GuidanceLabToyClass", {label: "Bag"});
        const latent = add("EmptyLatentImage", {width: 256, height: 256, batch_size: 1});
        const decode = add("GuidanceLabToyDecode"), save = add("SaveImage");
        const wired = [link(good, "toy_world", cond, "toy_world"), link(good, "model", bp, "model"), link(weak, "model", bp, "weak_model"),
                       link(cond, "conditioning", bp, "positive"), link(latent, "LATENT", bp, "latent_image"),
                       link(bp, "LATENT", decode, "samples"), link(decode, "image", save, "images")];
        if (!wired.every(Boolean)) throw new Error(`not wired: ${wired}`);
        return (await app.graphToPrompt()).output;
    }""")
    types = sorted(n["class_type"] for n in prompt.values())
    with open(os.path.join(SUBGRAPHS, f"{autoguidance}.json"), encoding="utf-8") as f:
        inner = {n["type"] for n in json.load(f)["definitions"]["subgraphs"][0]["nodes"]}
    assert inner <= set(types)  # the frontend sends the subgraph's nodes
    entry = ui_server.run(prompt, timeout=300)
    assert error_of(entry) is None, error_of(entry)
    assert len(images_of(entry, ui_server.output_dir)) == 1
    # the extension's schedule plots draw inside a blueprint's subgraph too
    schedule = "CFG with schedule (Guidance Lab)"
    add_from_library(page, schedule)
    inner = "(name) => app.graph.nodes.find((n) => n.title === name).subgraph.nodes.filter((n) => n.__guidanceLabPlot)"
    page.wait(f"(name) => ({inner})(name).every((n) => n.__guidanceLabPlot.fetches > 0)", arg=schedule)
    plots = page.js(f"(name) => ({inner})(name).map((n) => [n.type, n.__guidanceLabPlot.error])", schedule)
    assert plots == [["GuidanceLabSchedule", None], ["GuidanceLabCFGPatch", None]]
    page.check_console()
