"""Per-node help pages (web/docs/<node_id>.md): one for every node the pack registers, listing exactly
the node's inputs and outputs with the defaults and ranges of its schema, linked from the README, and
served by a real ComfyUI server at the URL the frontend's help panel fetches, and shown by the help panel of the
pinned and of the newest frontend (devkit/frontends.py) in a real headless Chromium."""

import functools
import glob
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from devkit import comfy_host as H
from devkit import frontends as FE

DOCS = os.path.join(H.ROOT, "web", "docs")
PACK_MODULE = "custom_nodes.guidance-lab"


@functools.lru_cache(maxsize=None)
def registered():
    """{node_id: ComfyUI's node info (V1 form, as /object_info serves it)} of every node the pack registers."""
    H.boot()
    return {cls.GET_NODE_INFO_V1()["name"]: cls.GET_NODE_INFO_V1() for cls in H.pack_module("nodes").NODES}


NODE_IDS = sorted(registered())


def page(node_id):
    with open(os.path.join(DOCS, f"{node_id}.md"), encoding="utf-8") as f:
        return f.read()


def table(text, heading):
    """{first cell without backticks: [cells]} of the markdown table under '## heading'."""
    m = re.search(rf"(?m)^## {heading}\s*$(.*?)(?=^## |\Z)", text, re.S)
    assert m, f"no '## {heading}' section"
    rows = {}
    for line in m.group(1).splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows[cells[0].strip("`")] = cells
    rows.pop(heading.lower()[:-1], None)  # the header row ("input" / "output")
    return rows


def numbers(cell):
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell.replace("−", "-"))]


def inputs_of(info):
    return {name: spec for sect in ("required", "optional") for name, spec in info["input"].get(sect, {}).items()}


@pytest.mark.comfy
def test_every_registered_node_has_a_page_and_nothing_else():
    assert len(NODE_IDS) >= 13 and all(n.startswith("GuidanceLab") for n in NODE_IDS)
    pages = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(DOCS, "*.md"))}
    assert pages == set(NODE_IDS), (sorted(set(NODE_IDS) - pages), sorted(pages - set(NODE_IDS)))
    # the loader registered exactly these for the pack (nothing registered elsewhere is missed)
    mapped = {
        k
        for k, cls in H.boot().NODE_CLASS_MAPPINGS.items()
        if getattr(cls, "RELATIVE_PYTHON_MODULE", None) == PACK_MODULE
    }
    assert mapped == set(NODE_IDS)


@pytest.mark.comfy
@pytest.mark.parametrize("node_id", NODE_IDS)
def test_page_documents_the_schema(node_id):
    info = registered()[node_id]
    text = page(node_id)
    assert text.startswith("# ") and f"`{node_id}`" in text.splitlines()[0]
    for section in ("Inputs", "Outputs", "Example"):
        assert re.search(rf"(?m)^## {section}", text), f"{node_id}: no '## {section}' section"
    assert re.search(r"(?m)^## (Formula|Formulas|How it works|File format)", text), node_id
    rows = table(text, "Inputs")
    schema = inputs_of(info)
    assert set(rows) == set(schema), f"{node_id}: page lists {sorted(rows)}, the node has {sorted(schema)}"
    for name, spec in schema.items():
        kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
        cells = rows[name]
        assert len(cells) == 5, f"{node_id}.{name}: expected input | type | default | range | meaning"
        default, rng = cells[2], cells[3]
        if "default" in opts and kind in ("INT", "FLOAT"):
            assert numbers(default)[:1] == [float(opts["default"])], f"{node_id}.{name}: default {default!r}"
        if "min" in opts and "max" in opts:
            assert numbers(rng)[:2] == [float(opts["min"]), float(opts["max"])], f"{node_id}.{name}: range {rng!r}"
        if kind == "BOOLEAN":
            assert default == str(opts["default"]).lower(), f"{node_id}.{name}: default {default!r}"
        if kind == "COMBO" and "default" in opts:
            assert default.strip("`") == opts["default"], f"{node_id}.{name}: default {default!r}"
        if kind == "COMBO" and "default" in opts and len(opts["options"]) <= 12:  # fixed short lists: spelled out
            for option in opts["options"]:
                assert f"`{option}`" in rng, f"{node_id}.{name}: option {option!r} missing from {rng!r}"
    outs = table(text, "Outputs")
    assert set(outs) == set(info["output_name"]), f"{node_id}: outputs {sorted(outs)} vs {info['output_name']}"


@pytest.mark.comfy
def test_readme_links_every_page():
    with open(os.path.join(H.ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    missing = [n for n in NODE_IDS if f"(web/docs/{n}.md)" not in readme]
    assert not missing, missing


# ---------------------------------------------------------------- where the frontend fetches them
def frontend_sources(frontend, *markers):
    """The frontend's JavaScript files that contain any of `markers`, joined (NodeHelpService: 1.32.9 index-*.js,
    1.58 GraphView-*.js; helpers such as normalizePackId may live in a shared chunk)."""
    text = []
    for path in sorted(glob.glob(os.path.join(frontend.static, "assets", "*.js"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            src = f.read()
        if any(m in src for m in markers):
            text.append(src)
    return "\n".join(text)


@pytest.mark.comfy
@pytest.mark.parametrize("frontend", FE.NAMES)
def test_frontend_fetches_custom_node_help_from_the_web_directory(frontend):
    """The frontend's NodeHelpService asks /extensions/<pack>/docs/<name>/<locale>.md and then
    /extensions/<pack>/docs/<name>.md (pack = 2nd part of python_module, anything after '@' dropped), in the
    pinned frontend and in the newest one. If a frontend update changes this, the pages must move: this test
    says so (and test_help_panel_shows_every_page below sees it in the browser)."""
    fe = FE.get(frontend)
    src = frontend_sources(fe, "NodeHelpService", "function normalizePackId")
    assert "NodeHelpService" in src, f"no NodeHelpService in the {fe} bundle"
    v = r"\$\{\w+\}"
    assert re.search(rf"`/extensions/{v}/docs/\$\{{\w+\.name\}}/{v}\.md`", src), f"{fe}: locale URL pattern changed"
    assert re.search(rf"`/extensions/{v}/docs/\$\{{\w+\.name\}}\.md`", src), f"{fe}: fallback URL pattern changed"
    # pack = normalizePackId(2nd part of python_module), the part before '@'
    assert re.search(r"""\[0\]===["`]custom_nodes["`]\?\w+\(\w+\[1\]\)""", src), f"{fe}: pack name rule changed"
    assert re.search(r"""function normalizePackId\(\w+\)\{return \w+\.split\(["`]@["`]\)\[0\]\}""", src), (
        f"{fe}: normalizePackId changed"
    )


def help_urls(info):
    """The frontend's URLs for a node's help, in the order it tries them (locale 'en', then no locale)."""
    parts = info["python_module"].split(".")
    assert parts[0] == "custom_nodes" and len(parts) >= 2, info["python_module"]
    pack = parts[1].split("@")[0]
    return [f"/extensions/{pack}/docs/{info['name']}/en.md", f"/extensions/{pack}/docs/{info['name']}.md"]


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), ""


@pytest.mark.server
def test_server_serves_every_page_where_the_frontend_looks(server):
    info = server.get("/object_info")
    ours = {k: v for k, v in info.items() if v.get("python_module") == PACK_MODULE}
    assert set(ours) == set(NODE_IDS)
    for node_id, node in ours.items():
        status, ctype, body = None, "", ""
        for url in help_urls(node):  # the frontend's order: the first answer that is OK wins
            status, ctype, body = fetch(server.url + url)
            if status == 200:
                break
        assert status == 200, f"{node_id}: {help_urls(node)} -> {status}"
        # aiohttp's own MIME table has no .md (Python 3.11): served as application/octet-stream, which the
        # frontend does not look at (it reads the body with fetch().text() and renders it as markdown)
        # 1.58's NodeHelpService also drops an answer whose content-type is text/html (a server's index page)
        assert ctype.startswith(("text/", "application/octet-stream")) and "text/html" not in ctype, (node_id, ctype)
        assert body == page(node_id) and body.startswith("# "), node_id
    status, _, _ = fetch(server.url + "/extensions/guidance-lab/docs/NoSuchNode.md")
    assert status == 404


# ---------------------------------------------------------------- the help panel of each frontend (headless Chromium)

ARTIFACTS = os.path.join(H.ROOT, "test-artifacts", "help")


@pytest.fixture(scope="module")
def help_page(ui_server):
    """A ComfyUI page (devkit.browser's Page) on the pinned and on the newest frontend (tests/conftest.py's
    ui_server)."""
    from devkit import browser as W

    if not os.path.exists(W.CHROMIUM):
        pytest.skip(f"Debian chromium is not installed ({W.CHROMIUM}); scripts/test.sh installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed (requirements-dev.txt)")
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=W.CHROMIUM, args=W.BROWSER_ARGS)
        pg = W.Page(browser, ui_server)
        yield pg
        with open(os.path.join(ARTIFACTS, f"console-{ui_server.frontend.name}.json"), "w") as f:
            json.dump(pg.log(), f, indent=1)
        browser.close()


def rendered_title(node_id):
    """The page's first line as the help panel shows it: '# Guidance Schedule (`X`)' -> 'Guidance Schedule (X)'."""
    return page(node_id).splitlines()[0][2:].replace("`", "").strip()


@pytest.mark.browser
def test_help_panel_shows_every_page(help_page):
    """What a user does: select a node of the pack on the canvas, press the selection toolbox's info button. The
    frontend's help panel (1.32.9: in the node library sidebar; 1.58: the Info tab of the right-hand panel) fetches
    the node's page where it looks (first the locale URL, a 404, then the fallback) and renders our page, not the
    node's description."""
    pg = help_page
    seen = []
    pg.page.on("response", lambda r: "/docs/" in r.url and seen.append((r.status, urllib.parse.urlsplit(r.url).path)))
    pg.setup_graph(vue=False)
    since = pg.mark()
    info = {
        k: v
        for k, v in pg.js("async () => await (await fetch('/object_info')).json()").items()
        if v.get("python_module") == PACK_MODULE
    }
    for node_id in NODE_IDS:
        nid = pg.add_node(node_id, 300, 200)
        pg.js("(id) => { app.canvas.deselectAll?.(); app.canvas.selectNode(app.graph.getNodeById(id)); }", nid)
        pg.page.locator("[data-testid='info-button']").first.click()
        title = rendered_title(node_id)
        pg.wait(
            "(t) => [...document.querySelectorAll('.node-help-content')].some((e) => e.innerText.trim().startsWith(t))",
            title,
        )
        urls = help_urls(info[node_id])
        got = [(st, u) for st, u in seen if u in urls]
        assert got[-2:] == [(404, urls[0]), (200, urls[1])], (node_id, got)
        if node_id == "GuidanceLabSchedule":
            pg.page.screenshot(path=os.path.join(ARTIFACTS, f"help-panel-{pg.frontend.name}.png"))
        pg.js("(id) => { app.graph.remove(app.graph.getNodeById(id)); }", nid)
    # the locale URL's 404s are the lookup working as designed (every locale falls back to the one page); the
    # browser also reports each of them as an aborted request (the frontend does not read a 404's body)
    locale = {pg.page.url.rstrip("/") + help_urls(info[n])[0] for n in NODE_IDS}
    pg.failed[since[1] :] = [
        (st, u) for st, u in pg.failed[since[1] :] if not (u in locale and st in (404, "net::ERR_ABORTED"))
    ]
    pg.check_console(since)
