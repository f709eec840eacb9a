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


def import_graph():
    files = python_files()
    modules = set(files.values())
    graph = {m: set() for m in modules}
    for rel, mod in files.items():
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
                    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                subs = [f"{prefix}.{a.name}" if prefix else a.name for a in node.names]
                found = [s for s in subs if s in modules]
                targets = found if found else [prefix]  # `from pkg import name`: the package's __init__
            for t in targets:
                while t and t not in modules and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


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
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            bare += [f"{rel}: {n}" for n in names if n.split(".")[0] in leaves]
    assert bare == []


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


SYS_PATH_EDIT = re.compile(r"sys\.path\s*(\.\s*(insert|append|extend|remove)\s*\(|\[[^\]]*\]\s*=|\+=|=)")


def test_sys_path_is_edited_in_one_place_only():
    editors = sorted(rel for rel in python_files()
                     if SYS_PATH_EDIT.search(open(os.path.join(ROOT, rel), encoding="utf-8").read()))
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

    code = ("import importlib, pkgutil, sys, guidance_core\n"
            "for m in pkgutil.walk_packages(guidance_core.__path__, 'guidance_core.'):\n"
            "    importlib.import_module(m.name)\n"
            f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {COMFYUI_MODULES!r})\n"
            "print(len([n for n in sys.modules if n.startswith('guidance_core')]), bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    count, bad = out.stdout.strip().split(" ", 1)
    assert int(count) >= 15 and bad == "[]", out.stdout
