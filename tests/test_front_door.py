"""The README's two commands in any order: the dev kit's servers leave the user-facing ComfyUI tree as they found
it (their demo nodes, user and temp folders live in a temporary folder), and the import check of scripts/test.sh
fails exactly when the pack's own folder fails to import in ComfyUI, naming that folder (a failing folder whose
name starts with the pack's, such as the demo nodes without the dev kit on PYTHONPATH, is another pack)."""

from __future__ import annotations

import glob
import os
import re

import pytest

from devkit import ROOT
from devkit import comfy_server as S
from devkit.comfy_server import ComfyServer, import_problem, leftovers, quick_test_log
from scripts import check_leftovers, import_check

COMFY = S.COMFY
PYDEPS = os.path.join(COMFY, "_pydeps")  # a side tree's own pinned packages (scripts/setup.sh)


def _tree_state(tree: str) -> dict:
    """Every path under `tree` (less compiled Python) with what it is: a link's target, a file's size and
    modification time, or 'folder'."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not os.path.islink(os.path.join(dirpath, d))]
        for name in dirnames:
            state[os.path.relpath(os.path.join(dirpath, name), tree)] = "folder"
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.endswith(".pyc"):
                continue
            st = os.lstat(path)
            state[os.path.relpath(path, tree)] = (
                os.readlink(path) if os.path.islink(path) else (st.st_size, st.st_mtime_ns)
            )
    for name in os.listdir(os.path.join(tree, "custom_nodes")):  # links to folders (packs) too
        path = os.path.join(tree, "custom_nodes", name)
        if os.path.islink(path):
            state[os.path.relpath(path, tree)] = os.readlink(path)
    return state


@pytest.mark.server
def test_a_dev_kit_server_leaves_the_comfyui_tree_as_it_was(tmp_path):
    """A real server (the one scripts/run.sh and the server tests start) loads the pack and the demo nodes, and
    after it stops the tree holds exactly what it held before: no demo link in custom_nodes, no user settings, no
    temp or input files; its temporary folder is gone too."""
    before = _tree_state(COMFY)
    srv = ComfyServer(str(tmp_path / "out")).start()
    try:
        work = srv.work
        info = srv.get("/object_info")
        assert "GuidanceLabDemoShapesModel" in info, "the demo nodes did not load"
        assert "GuidanceLabCFGGuider" in info, "the pack did not load"
        assert os.path.islink(os.path.join(work, "custom_nodes", "guidance-lab-demo"))
        assert not os.path.lexists(os.path.join(work, "custom_nodes", "guidance-lab")), (
            "the pack set-up linked into the tree must not load twice"
        )
        srv.post_prompt({})  # a request that reaches the server's folders; its answer does not matter here
    finally:
        srv.stop()
    assert not os.path.exists(work)
    after = _tree_state(COMFY)
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    removed = sorted(set(before) - set(after))
    assert (added, changed, removed) == ([], [], []), f"the server changed {COMFY}"
    assert leftovers(COMFY) == []


@pytest.mark.core
def test_a_server_with_its_own_base_directory_gets_only_the_packs_it_lacks(tmp_path):
    """A caller that gives --base-directory (the reliability checks) owns custom_nodes, user and temp there:
    the dev kit adds only the packs that folder lacks and no folder options of its own."""
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / "guidance-lab")
    work = tmp_path / "work"
    work.mkdir()
    args = S.server_folders(str(work), ["--base-directory", str(base)])
    assert sorted(os.listdir(work / "custom_nodes")) == ["guidance-lab-demo"]
    assert not {"--user-directory", "--temp-directory", "--input-directory"} & set(args)
    with open(args[args.index("--extra-model-paths-config") + 1]) as f:
        assert str(work / "custom_nodes") in f.read()


def _broken_pack(folder) -> None:
    """The pack as a custom-node folder whose core is missing: every entry of the repository linked but
    guidance_core, so its own `from ..guidance_core import ...` fails inside ComfyUI's loader."""
    folder.mkdir()
    for name in os.listdir(ROOT):
        if name != "guidance_core" and not name.startswith("."):
            os.symlink(os.path.join(ROOT, name), folder / name)


@pytest.mark.server
def test_the_import_check_fails_exactly_when_the_packs_own_folder_fails(tmp_path):
    """ComfyUI's real start-up check (--quick-test-for-ci) on a custom_nodes folder with the pack, the demo nodes
    (which fail without the dev kit on PYTHONPATH, as a user runs ComfyUI) and a broken copy of the pack: the
    pack's own folder passes although folders starting with its name failed, the broken one fails with its
    folder and ComfyUI's reason named."""
    nodes = tmp_path / "base" / "custom_nodes"
    nodes.mkdir(parents=True)
    os.symlink(ROOT, nodes / "guidance-lab")
    os.symlink(S.PACKS["guidance-lab-demo"], nodes / "guidance-lab-demo")
    _broken_pack(nodes / "guidance-lab-broken")
    log = quick_test_log(COMFY, PYDEPS if os.path.isdir(PYDEPS) else "", ["--base-directory", str(tmp_path / "base")])
    failed = [line for line in log.splitlines() if "(IMPORT FAILED)" in line]
    assert any("guidance-lab-demo" in line for line in failed), log[-3000:]  # a prefix match would fail the pack

    assert import_problem(log, str(nodes / "guidance-lab")) is None
    broken = import_problem(log, str(nodes / "guidance-lab-broken"))
    assert broken is not None and str(nodes / "guidance-lab-broken") in broken and "IMPORT FAILED" in broken
    assert "guidance_core" in broken, broken  # ComfyUI's own reason, quoted
    demo = import_problem(log, str(nodes / "guidance-lab-demo"))
    assert demo is not None and "guidance_core" in demo, demo
    assert "did not try to load" in import_problem(log, str(nodes / "not-there"))


@pytest.mark.server
def test_the_import_check_script_passes_on_the_tree_as_set_up(capsys):
    """scripts/import_check.py (what scripts/test.sh runs on each tree) on the tree under test: exit 0."""
    rc = import_check.main([COMFY, "--pythonpath", PYDEPS if os.path.isdir(PYDEPS) else ""])
    assert rc == 0, capsys.readouterr().out[-3000:]


@pytest.mark.core
@pytest.mark.parametrize("kind", ["link", "folder"])
def test_leftovers_name_what_is_not_comfyuis_or_set_ups(tmp_path, kind):
    """The leftover check (.ci/run, after the README's commands) on a tree like set-up's, with one more pack."""
    tree = tmp_path / "tree"
    (tree / "custom_nodes" / "__pycache__").mkdir(parents=True)
    (tree / "custom_nodes" / "websocket_image_save.py").write_text("")
    os.symlink(ROOT, tree / "custom_nodes" / "guidance-lab")
    assert leftovers(str(tree)) == []
    extra = tree / "custom_nodes" / "guidance-lab-demo"
    if kind == "link":
        os.symlink(S.PACKS["guidance-lab-demo"], extra)
    else:
        extra.mkdir()
    found = leftovers(str(tree))
    assert len(found) == 1 and str(extra) in found[0], found


@pytest.mark.comfy  # reads the ComfyUI trees set-up made
def test_the_leftover_check_passes_on_this_checkout(capsys):
    """Every ComfyUI tree set-up made here holds nothing but ComfyUI's files and the pack's link."""
    assert check_leftovers.main() == 0, capsys.readouterr().out


# ---------------------------------------------------------------- the README as a front page, and the docs it links
README = os.path.join(ROOT, "README.md")
# where the README's former sections live now (issue 25): each is linked from the README
MOVED_DOCS = [
    "docs/GUIDE.md",
    "docs/MATH.md",
    "docs/BENCHMARKS.md",
    "docs/COMPATIBILITY.md",
    "docs/RELIABILITY.md",
    "docs/DEVELOPING.md",
]
MARKDOWN = ["README.md", "example_workflows/README.md", *MOVED_DOCS]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _help_pages() -> list[str]:
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "web", "docs", "*.md")))


@pytest.mark.core
def test_readme_is_a_front_page():
    """At most 150 lines; a picture of a real graph in the frontend; one node-table row per node, linking its help
    page; every doc the README's former sections moved to is linked; the two commands in a bash block."""
    text = _read("README.md")
    assert len(text.splitlines()) <= 150, len(text.splitlines())
    pictures = re.findall(r"!\[[^\]]+\]\((docs/images/graph_[^)]+\.png)\)", text)
    assert pictures, "no picture of a graph (docs/images/graph_*.png)"
    from PIL import Image

    for rel in pictures:
        with Image.open(os.path.join(ROOT, rel)) as im:
            assert im.format == "PNG" and im.width >= 1000, (rel, im.size)
    pages = _help_pages()
    assert len(pages) >= 17, pages
    for node_id in pages:
        rows = [
            ln
            for ln in text.splitlines()
            if ln.startswith("|") and f"`{node_id}`" in ln and f"](web/docs/{node_id}.md)" in ln
        ]
        assert len(rows) == 1, (node_id, rows)
    links = set(LINK.findall(text))
    assert [d for d in MOVED_DOCS if d not in links] == []
    block = re.search(r"```bash\n(.*?)```", text[text.index("## Quick start") :], re.S)
    assert block and "bash scripts/run.sh" in block[1] and "bash scripts/test.sh" in block[1]


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.core
def test_links_in_the_readme_and_docs_resolve():
    """Every relative link (and image) of the README, the docs it links and the example workflows' README names a
    file of this repository, and an anchor names a heading of that file."""
    bad = []
    for rel in MARKDOWN:
        for target in LINK.findall(_read(rel)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(rel), path)) if path else os.path.join(ROOT, rel)
            if not os.path.exists(full):
                bad.append(f"{rel}: {target} (no such file)")
            elif anchor and full.endswith(".md"):
                with open(full, encoding="utf-8") as f:
                    slugs = {_slug(m) for m in re.findall(r"(?m)^#+ (.+)$", f.read())}
                if anchor not in slugs:
                    bad.append(f"{rel}: {target} (no such heading)")
    assert bad == []


@pytest.mark.core
def test_commands_in_the_readme_and_docs_name_real_files():
    """Every `python -m MODULE` (also torchrun's `-m`) and `bash scripts/X.sh` the README and the docs give names a
    module or script of this repository (a moved or renamed one fails here)."""
    bad = []
    for rel in MARKDOWN:
        text = _read(rel)
        for module in set(re.findall(r"-m ((?:bench|scripts|devkit|guidance_core|nodes)(?:\.\w+)+)", text)):
            base = os.path.join(ROOT, *module.split("."))
            if not (os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__main__.py"))):
                bad.append(f"{rel}: python -m {module}")
        for script in set(re.findall(r"bash (scripts/[\w.-]+\.sh)", text)):
            if not os.path.isfile(os.path.join(ROOT, script)):
                bad.append(f"{rel}: bash {script}")
    assert bad == []
