"""What users install stays clean for the registry: no eval/exec/subprocess/os.system/os.environ
in shipped files, the test/bench/script trees are in .comfyignore, pyproject is complete, and the
registry's own publish check (`comfy node validate`, from comfy-cli) passes offline, and the zip the registry
publishes (`comfy node pack`: git-tracked files less .comfyignore) loads every node in a real ComfyUI."""

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
        dirnames[:] = [
            d
            for d in dirnames
            if d not in ALWAYS_OUT
            and not d.startswith(".")
            and not any(fnmatch.fnmatch(os.path.normpath(os.path.join(rel_dir, d)), p) for p in pats)
        ]
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
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            bad += [n for n in names if n.split(".")[0] == "subprocess"]
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("system", "environ", "popen", "getenv", "putenv")
        ):
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
    owner_repo = repo[len("https://github.com/") :]
    assert icon.startswith(f"{RAW}{owner_repo}/main/"), icon
    rel = icon[len(f"{RAW}{owner_repo}/main/") :]
    from PIL import Image

    with Image.open(os.path.join(ROOT, rel)) as im:
        assert im.format == "PNG" and im.width <= 800 and im.height <= 400, (im.format, im.size)


def raw_file_of(url: str, repo: str) -> str:
    """The repository path a raw.githubusercontent.com URL of `repo`'s main branch names."""
    prefix = f"{RAW}{repo[len('https://github.com/') :]}/main/"
    assert url.startswith(prefix), url
    return url[len(prefix) :]


def test_pyproject_banner_is_drawn_by_its_script(tmp_path):
    """The registry's Banner is a wide PNG shipped in this repository, and scripts/make_banner.py draws exactly it."""
    from PIL import Image

    from scripts import make_banner

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    rel = raw_file_of(meta["tool"]["comfy"]["Banner"], meta["project"]["urls"]["Repository"])
    with Image.open(os.path.join(ROOT, rel)) as im:
        assert im.format == "PNG" and im.width >= 3 * im.height, (im.format, im.size)
    again = make_banner.main(str(tmp_path / "banner.png"))
    with Image.open(os.path.join(ROOT, rel)) as a, Image.open(again) as b:
        assert a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def test_pyproject_os_accelerator_and_frontend_range():
    """The registry's OS and accelerator classifiers are ones it accepts, and the supported frontend range (a
    comfyui-frontend-package dependency, which comfy-cli turns into that field and drops from the dependencies)
    includes every frontend the browser tests pass on and leaves out 0.3.52's 1.25.10, which they do not drive."""
    from comfy_cli.registry.config_parser import extract_node_configuration
    from packaging.specifiers import SpecifierSet

    config = extract_node_configuration(os.path.join(ROOT, "pyproject.toml"))
    proj = config.project
    assert proj.supported_os == ["OS Independent"], proj.supported_os
    assert "GPU :: NVIDIA CUDA" in proj.supported_accelerators, proj.supported_accelerators
    assert not any(d.startswith("comfyui-frontend-package") for d in proj.dependencies), proj.dependencies
    frontends = SpecifierSet(proj.supported_comfyui_frontend_version)
    assert all(v in frontends for v in ("1.32.9", "1.49.6", "1.58.1")), frontends
    assert "1.25.10" not in frontends, frontends
    assert proj.supported_comfyui_version == ">=0.3.52"
    assert config.tool_comfy.banner_url and config.tool_comfy.icon


def comfy_validate(cwd, tmp_path):
    """`comfy node validate` (comfy-cli, requirements-dev.txt) as the registry runs it before publishing:
    offline and non-interactive (no tracking prompt, no update check, a throw-away config home)."""
    env = dict(
        os.environ,
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
        DO_NOT_TRACK="1",
        COMFY_NO_UPDATE_CHECK="1",
        RUFF_CACHE_DIR=str(tmp_path / "ruff-cache"),
    )
    p = subprocess.run(
        [sys.executable, "-m", "comfy_cli", "--skip-prompt", "node", "validate"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
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


# ---------------------------------------------------------------- the registry's zip


def test_registry_zip_loads_every_node(tmp_path):
    """The archive `comfy node pack` makes (comfy-cli's own zip_files: the git-tracked files, less .comfyignore),
    unpacked as the only copy of the pack in a ComfyUI's custom_nodes, loads every node that has a help page; the
    trees .comfyignore names are not in it."""
    import glob
    import zipfile

    from devkit.comfy_server import ComfyServer

    archive = tmp_path / "node.zip"
    zip_it = "import sys; from comfy_cli.file_utils import zip_files; zip_files(sys.argv[1])"
    p = subprocess.run(
        [sys.executable, "-c", zip_it, str(archive)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert p.returncode == 0 and archive.exists(), p.stdout + p.stderr
    base = tmp_path / "comfy"
    pack = base / "custom_nodes" / "guidance-lab"
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        z.extractall(pack)
    assert "__init__.py" in names and "pyproject.toml" in names and "README.md" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "bench", "scripts", "devkit", ".ci")]
    want = sorted(os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, "web", "docs", "*.md")))
    assert len(want) >= 17, want
    srv = ComfyServer(str(tmp_path / "out"), extra_args=["--base-directory", str(base)]).start()
    try:
        info = srv.get("/object_info")
    finally:
        srv.stop()
    with open(srv.log_path) as f:
        log = f.read()
    assert [n for n in want if n not in info] == [], log[-4000:]
    assert all(info[n]["python_module"] == "custom_nodes.guidance-lab" for n in want)
    loaded = [ln for ln in log.splitlines() if "seconds" in ln and "guidance-lab" in ln and "demo" not in ln]
    assert loaded and all(str(pack) in ln and "IMPORT FAILED" not in ln for ln in loaded), loaded
