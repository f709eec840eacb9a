"""Issue 15: the code's structure in numbers. No import circle among the repository's modules (the imports are
walked with ast, lazy ones inside functions included); nothing edits sys.path except devkit/comfy_host.py, the one
place that must put ComfyUI itself on the path; guidance_core's docstring lists every module it has."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys

import pytest

pytestmark = pytest.mark.core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("guidance_core", "nodes", "devkit", "bench", "scripts", "tests")
SYS_PATH_HOME = os.path.join("devkit", "comfy_host.py")


def python_files():
    """Repository path -> dotted module name ('' for the pack's own __init__.py at the root)."""
    out = {"__init__.py": ""}
    for top in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for fn in filenames:
                if fn.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, fn), ROOT)
                    parts = rel[:-3].split(os.sep)
                    out[rel] = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return out


def _imports(rel: str, mod: str, modules: set):
    """The modules one file imports (lazy imports inside functions included): a repository module's dotted name
    where the import names one (the nearest package for `from pkg import name`), else the name as written."""
    is_pkg = rel.endswith("__init__.py")
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        tree = ast.parse(f.read(), rel)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if mod else []
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            subs = [f"{prefix}.{a.name}" if prefix else a.name for a in node.names]
            found = [s for s in subs if s in modules]
            targets = found if found else [prefix]  # `from pkg import name`: the package's __init__
        for t in targets:
            name = t
            while t and t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            yield t if t in modules else name


def import_graph():
    """Repository module -> the repository modules it imports."""
    files = python_files()
    modules = set(files.values())
    graph = {m: set() for m in modules}
    for rel, mod in files.items():
        graph[mod] |= {t for t in _imports(rel, mod, modules) if t in modules and t != mod}
    return graph


def outside_imports():
    """Repository module -> the top-level names of the modules outside the repository it imports (torch, comfy)."""
    files = python_files()
    modules = set(files.values())
    return {
        mod: {t.split(".")[0] for t in _imports(rel, mod, modules) if t and t not in modules}
        for rel, mod in files.items()
    }


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    graph = import_graph()
    assert sum(len(v) for v in graph.values()) > 100, "the walk found too few imports to mean anything"
    assert graph["bench.toy.tradeoff"] >= {"bench.toy.toy_report", "bench.toy.fashion", "devkit.comfy_host"}
    assert cycles(graph) == []


def test_no_import_by_a_bare_sibling_name():
    """Every import of a repository module names it from the root (devkit.comfy_host, bench.bench_classifier) or
    relatively: a bare sibling name (`import comfy_host`, `from bench_classifier import ...`) only worked while
    sys.path was edited, and fails when the file runs as a module (found: bench/bench_clip.py)."""
    files = python_files()
    tops = {m.split(".")[0] for m in files.values() if m}
    leaves = {m.rsplit(".", 1)[-1] for m in files.values() if m} - tops - {"__init__"}
    # names that are also the standard library's or an installed package's (io, types, ...) are those, not ours
    leaves = {n for n in leaves if n not in sys.stdlib_module_names and importlib.util.find_spec(n) is None}
    bare = []
    for rel in files:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            tree = ast.parse(f.read(), rel)
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and not node.level and node.module
                else []
            )
            bare += [f"{rel}: {n}" for n in names if n.split(".")[0] in leaves]
    assert bare == []


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


SYS_PATH_EDIT = re.compile(r"sys\.path\s*(\.\s*(insert|append|extend|remove)\s*\(|\[[^\]]*\]\s*=|\+=|=)")


def test_sys_path_is_edited_in_one_place_only():
    editors = sorted(
        rel for rel in python_files() if SYS_PATH_EDIT.search(open(os.path.join(ROOT, rel), encoding="utf-8").read())
    )
    assert editors == [SYS_PATH_HOME]


def test_core_docstring_lists_every_module():
    import guidance_core

    core = os.path.join(ROOT, "guidance_core")
    have = {n[:-3] for n in os.listdir(core) if n.endswith(".py") and n != "__init__.py"}
    have |= {n for n in os.listdir(core) if os.path.isfile(os.path.join(core, n, "__init__.py"))}
    listed = set(re.findall(r"^  (\w+)\s{2,}", guidance_core.__doc__, re.M))
    assert listed == have


COMFYUI_MODULES = ("comfy", "comfy_api", "comfy_extras", "nodes", "folder_paths", "server", "execution")


def test_the_core_imports_no_comfyui():
    """Every module of guidance_core, imported in a fresh interpreter, pulls in no module of ComfyUI (directly or
    through another module): the core stays usable from plain torch and diffusers."""
    import subprocess

    code = (
        "import importlib, pkgutil, sys, guidance_core\n"
        "for m in pkgutil.walk_packages(guidance_core.__path__, 'guidance_core.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {COMFYUI_MODULES!r})\n"
        "print(len([n for n in sys.modules if n.startswith('guidance_core')]), bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    count, bad = out.stdout.strip().split(" ", 1)
    assert int(count) >= 15 and bad == "[]", out.stdout


RELIABILITY_MAX_LINES = 800


def test_reliability_modules_stay_small():
    """The reliability checks are a package split along their checks (devkit/reliability/): no module of it grows
    past RELIABILITY_MAX_LINES lines (scripts/reliability.py was one file of 2,080)."""
    folder = os.path.join(ROOT, "devkit", "reliability")
    sizes = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".py"):
            with open(os.path.join(folder, fn), encoding="utf-8") as f:
                sizes[fn] = len(f.read().splitlines())
    assert len(sizes) >= 8, sizes
    assert {fn: n for fn, n in sizes.items() if n > RELIABILITY_MAX_LINES} == {}, sizes


DEVKIT_MAX_LINES = 800


def devkit_module_sizes() -> dict:
    """{repository path: lines} of every Python module of devkit/, its packages (devkit/reliability/) included."""
    sizes = {}
    for rel in python_files():
        if rel.startswith("devkit" + os.sep):
            with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
                sizes[rel] = len(f.read().splitlines())
    return sizes


def test_devkit_modules_stay_small():
    """No module of the dev kit grows past DEVKIT_MAX_LINES lines: the compatibility matrix is a measuring core
    (devkit/compat_measure.py) and rows by theme (devkit/compat_rows_*.py) behind devkit/compat_matrix.py, which
    was one file of 1,267 lines."""
    sizes = devkit_module_sizes()
    assert len(sizes) >= 20 and os.path.join("devkit", "compat_measure.py") in sizes, sizes
    assert {rel: n for rel, n in sizes.items() if n > DEVKIT_MAX_LINES} == {}, sizes


CORE = "guidance_core"


def rooms(graph, package: str = CORE):
    """The import graph among a package's rooms: its top-level modules and subpackages (guidance_core.classifiers
    stands for every module in it); a room's imports of itself and of the package's own __init__ are left out."""

    def room(m):
        return ".".join(m.split(".")[:2])

    out = {room(m): set() for m in graph if m.startswith(package + ".")}
    for m, targets in graph.items():
        if m.startswith(package + "."):
            out[room(m)] |= {room(t) for t in targets if t.startswith(package + ".") and room(t) != room(m)}
    return out


def test_the_core_rooms_form_no_import_circle():
    """No loop between the core's rooms either (found: io.py imported classifiers.noise_aware while
    classifiers/clip.py imported io; a loop of modules that is no loop of files)."""
    graph = rooms(import_graph())
    assert len(graph) >= 15 and f"{CORE}.errors" in graph[f"{CORE}.classifiers"]
    assert cycles(graph) == []


def test_the_room_walk_finds_a_loop_through_a_subpackage():
    graph = {
        "guidance_core.io": {"guidance_core.classifiers.noise_aware"},
        "guidance_core.classifiers.noise_aware": set(),
        "guidance_core.classifiers.clip": {"guidance_core.io"},
    }
    assert cycles(graph) == []
    assert cycles(rooms(graph)) == [["guidance_core.classifiers", "guidance_core.io"]]


def comfyui_paths(graph, outside, roots):
    """root -> the first import chain from it that reaches a ComfyUI module (through any repository module, lazy
    imports included), ending in that module's name; roots that reach none are left out."""
    found = {}
    for root in sorted(roots):
        parent, queue = {root: None}, [root]
        while queue and root not in found:
            m = queue.pop(0)
            bad = sorted(outside.get(m, set()) & set(COMFYUI_MODULES))
            if bad or m == "nodes" or m.startswith("nodes."):  # the pack's own nodes/ import ComfyUI
                chain = bad[:1]
                while m is not None:
                    chain.insert(0, m)
                    m = parent[m]
                found[root] = chain
            for t in sorted(graph.get(m, ())):
                if t not in parent:
                    parent[t] = m
                    queue.append(t)
    return found


def test_no_core_module_imports_comfyui_even_through_another_module():
    """Read from the source (no import runs): every module of guidance_core, and every repository module it
    imports in turn, imports no ComfyUI module and not the pack's nodes/ (which do)."""
    graph, outside = import_graph(), outside_imports()
    core = {m for m in graph if m == CORE or m.startswith(CORE + ".")}
    assert len(core) >= 15 and "torch" in outside[f"{CORE}.cfg"]
    assert comfyui_paths(graph, outside, core) == {}


def test_the_comfyui_walk_finds_an_import_through_another_module():
    graph = {
        "guidance_core.a": {"guidance_core.b"},
        "guidance_core.b": {"devkit.x"},
        "devkit.x": set(),
        "guidance_core.c": {"nodes"},
        "nodes": set(),
        "guidance_core.d": set(),
    }
    outside = {"devkit.x": {"torch", "folder_paths"}, "guidance_core.d": {"torch"}}
    assert comfyui_paths(graph, outside, ["guidance_core.a", "guidance_core.c", "guidance_core.d"]) == {
        "guidance_core.a": ["guidance_core.a", "guidance_core.b", "devkit.x", "folder_paths"],
        "guidance_core.c": ["guidance_core.c", "nodes"],
    }


def test_shipped_code_has_no_one_letter_import_alias():
    """`import schedules as S` makes a reader look the letter up; the shipped code names what it imports. PyTorch's
    own `functional as F` is the one alias every torch reader knows."""
    short = []
    for rel in python_files():
        if rel == "__init__.py" or rel.startswith(("nodes" + os.sep, CORE + os.sep)):
            with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
                tree = ast.parse(f.read(), rel)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    short += [
                        f"{rel}: {a.name} as {a.asname}"
                        for a in node.names
                        if a.asname and len(a.asname) == 1 and a.name.split(".")[-1] != "functional"
                    ]
    assert short == []


def test_the_tree_is_in_ruff_format():
    """Every tracked Python file is as `ruff format` writes it, at the line length pyproject.toml states (120)."""
    import subprocess

    files = subprocess.run(["git", "-C", ROOT, "ls-files", "*.py"], capture_output=True, text=True, check=True)
    paths = files.stdout.split()
    assert len(paths) > 100
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
