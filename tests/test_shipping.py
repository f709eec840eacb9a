"""What users install stays clean for the registry: no eval/exec/subprocess/os.system/os.environ
in shipped files, the test/bench/script trees are in .comfyignore, pyproject is complete."""
import ast
import fnmatch
import os
import re
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALWAYS_OUT = {".git", ".venv", ".comfyui", "__pycache__", ".hypothesis", "out"}


def ignored_patterns():
    with open(os.path.join(ROOT, ".comfyignore")) as f:
        return [ln.strip().rstrip("/") for ln in f if ln.strip() and not ln.startswith("#")]


def shipped_files():
    pats = ignored_patterns()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        dirnames[:] = [d for d in dirnames if d not in ALWAYS_OUT and not d.startswith(".")
                       and not any(fnmatch.fnmatch(os.path.normpath(os.path.join(rel_dir, d)), p) for p in pats)]
        for fn in filenames:
            yield os.path.normpath(os.path.join(rel_dir, fn))


def test_comfyignore_lists_non_shipped_trees():
    assert {"tests", "bench", "scripts", ".ci"} <= set(ignored_patterns())
    files = list(shipped_files())
    assert "__init__.py" in files and any(f.startswith("guidance_core/") for f in files)
    assert not any(f.startswith(("tests/", "bench/", "scripts/")) for f in files)


def forbidden_in_python(src: str):
    bad = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            bad.append(node.func.id)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad += [n for n in names if n.split(".")[0] == "subprocess"]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("system", "environ", "popen", "getenv", "putenv"):
            bad.append("os." + node.attr)
    return bad


@pytest.mark.parametrize("path", [p for p in shipped_files() if p.endswith((".py", ".js"))])
def test_no_forbidden_calls_in_shipped_code(path):
    with open(os.path.join(ROOT, path)) as f:
        src = f.read()
    if path.endswith(".py"):
        assert forbidden_in_python(src) == [], path
    else:
        assert not re.search(r"\beval\s*\(|new\s+Function\s*\(", src), path


def test_the_checker_catches_violations():
    found = forbidden_in_python("import subprocess\nimport os\nos.system('x')\neval('1')\nx = os.environ['A']")
    assert sorted(found) == ["eval", "os.environ", "os.system", "subprocess"]


def test_pyproject_for_the_registry():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    proj = meta["project"]
    assert proj["name"] == "guidance-lab" and proj["version"] and proj["description"]
    assert not any(d.split(">")[0].split("=")[0].strip() == "torch" for d in proj["dependencies"])
    assert meta["tool"]["comfy"]["DisplayName"] == "Guidance Lab"
    assert "GNU GENERAL PUBLIC LICENSE" in open(os.path.join(ROOT, "LICENSE")).read()[:200]
