"""Per-node help pages (web/docs/<node_id>.md): one for every node the pack registers, listing exactly
the node's inputs and outputs with the defaults and ranges of its schema, linked from the README, and
served by a real ComfyUI server at the URL the frontend's help panel fetches."""
import functools
import glob
import os
import re
import sys
import urllib.error
import urllib.request

import pytest

import comfy_host as H

sys.path.insert(0, os.path.join(H.ROOT, "scripts"))
from comfy_server import ComfyServer  # noqa: E402

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


def test_every_registered_node_has_a_page_and_nothing_else():
    assert len(NODE_IDS) >= 13 and all(n.startswith("GuidanceLab") for n in NODE_IDS)
    pages = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(DOCS, "*.md"))}
    assert pages == set(NODE_IDS), (sorted(set(NODE_IDS) - pages), sorted(pages - set(NODE_IDS)))
    # the loader registered exactly these for the pack (nothing registered elsewhere is missed)
    mapped = {k for k, cls in H.boot().NODE_CLASS_MAPPINGS.items()
              if getattr(cls, "RELATIVE_PYTHON_MODULE", None) == PACK_MODULE}
    assert mapped == set(NODE_IDS)


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


def test_readme_links_every_page():
    with open(os.path.join(H.ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    missing = [n for n in NODE_IDS if f"(web/docs/{n}.md)" not in readme]
    assert not missing, missing


# ---------------------------------------------------------------- where the frontend fetches them
def frontend_bundle():
    import comfyui_frontend_package

    static = os.path.join(os.path.dirname(comfyui_frontend_package.__file__), "static", "assets")
    text = ""
    for path in glob.glob(os.path.join(static, "*.js")):
        with open(path, encoding="utf-8", errors="replace") as f:
            src = f.read()
        if "NodeHelpService" in src:
            text += src
    return text


def test_frontend_fetches_custom_node_help_from_the_web_directory():
    """The installed frontend's NodeHelpService asks /extensions/<pack>/docs/<name>/<locale>.md and then
    /extensions/<pack>/docs/<name>.md (pack = 2nd part of python_module). If a frontend update changes
    this, the pages must move: this test says so."""
    src = frontend_bundle()
    assert src, "no NodeHelpService in the frontend bundle"
    v = r"\$\{\w+\}"
    assert re.search(rf"`/extensions/{v}/docs/\$\{{\w+\.name\}}/{v}\.md`", src), "locale URL pattern changed"
    assert re.search(rf"`/extensions/{v}/docs/\$\{{\w+\.name\}}\.md`", src), "fallback URL pattern changed"


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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ComfyServer(str(tmp_path_factory.mktemp("help-out"))).start()
    yield srv
    srv.stop()


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
        assert ctype.startswith(("text/", "application/octet-stream")), (node_id, ctype)
        assert body == page(node_id) and body.startswith("# "), node_id
    status, _, _ = fetch(server.url + "/extensions/guidance-lab/docs/NoSuchNode.md")
    assert status == 404
