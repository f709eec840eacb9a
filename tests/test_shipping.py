"""What users install stays clean for the registry: no eval/exec/subprocess/os.system/os.environ
in shipped files, the test/bench/script trees are in .comfyignore, pyproject is complete, and the
registry's own publish check (`comfy node validate`, from comfy-cli) passes offline."""
import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

pytestmark = pytest.mark.core

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
    assert {"tests", "bench", "scripts", "devkit", ".ci"} <= set(ignored_patterns())
    files = list(shipped_files())
    assert "__init__.py" in files and any(f.startswith("guidance_core/") for f in files)
    assert not any(f.startswith(("tests/", "bench/", "scripts/", "devkit/")) for f in files)


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


# ---------------------------------------------------------------- registry metadata and `comfy node validate`
RAW = "https://raw.githubusercontent.com/"


def test_pyproject_urls_and_icon():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    repo = meta["project"]["urls"]["Repository"]
    assert repo.startswith("https://github.com/"), repo
    desc = meta["project"]["description"].lower()
    assert "classifier guidance" in desc and "classifier-free guidance" in desc
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["requires-comfyui"].startswith(">=")
    # the Icon is a URL of a file shipped in this repository (the registry takes PNG up to 800x400)
    icon = comfy["Icon"]
    owner_repo = repo[len("https://github.com/"):]
    assert icon.startswith(f"{RAW}{owner_repo}/main/"), icon
    rel = icon[len(f"{RAW}{owner_repo}/main/"):]
    from PIL import Image

    with Image.open(os.path.join(ROOT, rel)) as im:
        assert im.format == "PNG" and im.width <= 800 and im.height <= 400, (im.format, im.size)


def comfy_validate(cwd, tmp_path):
    """`comfy node validate` (comfy-cli, requirements-dev.txt) as the registry runs it before publishing:
    offline and non-interactive (no tracking prompt, no update check, a throw-away config home)."""
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
               DO_NOT_TRACK="1", COMFY_NO_UPDATE_CHECK="1", RUFF_CACHE_DIR=str(tmp_path / "ruff-cache"))
    p = subprocess.run([sys.executable, "-m", "comfy_cli", "--skip-prompt", "node", "validate"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def test_comfy_node_validate_passes(tmp_path):
    rc, out = comfy_validate(ROOT, tmp_path)
    assert rc == 0, out
    assert "Validating node configuration" in out and "Running security checks" in out, out
    assert "All validation checks passed successfully" in out, out
    assert "Warning" not in out and "Security warnings" not in out, out


def test_comfy_node_validate_catches_problems(tmp_path):
    """The check above is real: the same command flags eval in a copy of the metadata, and fails
    without a version."""
    pack = tmp_path / "pack"
    pack.mkdir()
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), pack / "pyproject.toml")
    shutil.copy(os.path.join(ROOT, "LICENSE"), pack / "LICENSE")
    (pack / "bad.py").write_text("x = eval('1')\n")
    rc, out = comfy_validate(str(pack), tmp_path)
    assert rc == 0 and "Security warnings" in out and "S307" in out, out
    assert "All validation checks passed successfully" not in out, out
    text = (pack / "pyproject.toml").read_text()
    (pack / "pyproject.toml").write_text(re.sub(r'(?m)^version = ".*"$', 'version = ""', text))
    rc, out = comfy_validate(str(pack), tmp_path)
    assert rc != 0 and "version is empty" in out, out
