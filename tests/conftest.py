"""What the test files share: the test tiers, the browser cases per pass of scripts/test.sh, and the fixtures several
files use (tiny models, the pack's classifier modules, a real ComfyUI server per module and per frontend).

Tiers (pytest markers, registered in pytest.ini): every test carries exactly one, the most it needs -
  core     no ComfyUI: the core's math, the repository's files (`-m core` is the quick check)
  comfy    ComfyUI in this process (devkit.comfy_host boots it), or its files and pinned packages
  server   a real ComfyUI process (devkit.comfy_server): POST /prompt, routes, ComfyUI's own start-up check
  browser  a real headless Chromium on a real server, once per frontend (devkit/frontends.py)
A file of one tier says so in `pytestmark`; a file that mixes tiers marks each test. `slow_sweep` marks tests that
repeat other tests' code paths many times over (the hypothesis sweep of the CFG settings, the toy tradeoff
benchmark): scripts/test.sh runs them in the ComfyUI 0.3.75 pass only."""

import os
import re

import pytest

from devkit import comfy_host as H
from devkit import frontends as FE
from devkit.comfy_server import ComfyServer
from devkit.compat_doc import comfyui_version_of_tree

TIERS = ("core", "comfy", "server", "browser")


def pytest_collection_modifyitems(config, items):
    check_tiers(items)
    skip_browser_cases(items)


def check_tiers(items):
    """Every test has exactly one tier: a new test without one (or with two) stops the collection, named."""
    wrong = [
        f"{item.nodeid}: {tiers or 'none'}"
        for item in items
        if len(tiers := sorted({m.name for m in item.iter_markers()} & set(TIERS))) != 1
    ]
    if wrong:
        raise pytest.UsageError(
            f"each test needs exactly one tier marker of {', '.join(TIERS)} (tests/conftest.py); "
            f"{len(wrong)} tests have none or several: " + "; ".join(wrong)
        )


# ---------------------------------------------------------------- browser tests on ComfyUI 0.3.52's own frontend
def skip_browser_cases(items):
    """On ComfyUI 0.3.52 (the second pass of scripts/test.sh) the `pinned` frontend is the one 0.3.52 pins,
    comfyui-frontend-package 1.25.10: no Vue node renderer (setting Comfy.VueNodes.Enabled), an older node help
    panel (no normalizePackId), another missing-nodes dialog, all of which the browser tests drive. Their `pinned`
    cases are skipped on a frontend older than 1.32, with this reason; the browser tests run on 0.3.75's pinned
    1.32.9 and on the newest frontend (on 0.3.52 too). (Checked by hand on 1.25.10: the extension loads without
    console errors and the schedule plot draws and follows its widgets in the classic canvas.)

    GL_BROWSER=0 (scripts/test.sh's 0.3.52 pass) skips every browser case, pinned and newest: the frontends are
    tested in the 0.3.75 pass, both of them; the 0.3.52 pass tests the pack's Python on that ComfyUI.
    GL_BROWSER=pinned (the 0.33.0 pass) skips the newest-frontend cases only: that ComfyUI's own pinned frontend
    (1.49.6) is tested there, the newest one in the 0.3.75 pass."""
    browser = os.environ.get("GL_BROWSER")
    if browser in ("0", "pinned"):
        skipped = ("pinned", "newest") if browser == "0" else ("newest",)
        skip = pytest.mark.skip(
            reason=f"{'/'.join(skipped)} frontend cases run in the ComfyUI 0.3.75 pass of "
            f"scripts/test.sh (GL_BROWSER={browser})"
        )
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {}).values()
            if any(isinstance(v, str) and v in skipped for v in params):
                item.add_marker(skip)
        if browser == "0":
            return
    try:
        from importlib.metadata import version as dist_version

        frontend = dist_version("comfyui_frontend_package")
    except Exception:  # noqa: BLE001  (no frontend package: the tests say so themselves)
        return
    if tuple(int(x) for x in re.findall(r"\d+", frontend)[:2]) >= (1, 32):
        return
    version = comfyui_version_of_tree()
    reason = (
        f"ComfyUI {version} pins comfyui-frontend-package {frontend}, older than the browser tests drive: "
        "no Vue node renderer (setting Comfy.VueNodes.Enabled), an older node help panel (no normalizePackId), "
        "a missing-nodes dialog worded 'Some Nodes Are Missing' that Escape does not close; they run on "
        "1.32.9 (ComfyUI 0.3.75's) and newer"
    )
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pinned" in params.values():
            item.add_marker(pytest.mark.skip(reason=reason))


# ---------------------------------------------------------------- tiny models and the pack's modules
@pytest.fixture(scope="module")
def models(request):
    """{kind: ComfyUI's UNet at tiny width (devkit.comfy_host.tiny_model)} for the kinds in the module's
    MODEL_KINDS (eps, v and flow when it names none), each seeded by its place in that list."""
    kinds = getattr(request.module, "MODEL_KINDS", ("eps", "v", "flow"))
    return {k: H.tiny_model(k, seed=i) for i, k in enumerate(kinds)}


@pytest.fixture(scope="module")
def env():
    """The pack's modules as ComfyUI's loader imported them, for the classifier tests: the demo world with the
    Gaussian mixture's exact denoiser (scripts/demo_nodes), the mixture itself, the classifier and training nodes,
    the trainer, the parameterizations, classifier guidance and the errors."""
    return {
        "demo": H.demo_module(),
        "gmm": H.pack_module("guidance_core.reference.gmm"),
        "nodes": H.pack_module("nodes.classifier_nodes"),
        "training_nodes": H.pack_module("nodes.training_nodes"),
        "TR": H.pack_module("guidance_core.classifier_training"),
        "P": H.pack_module("guidance_core.parameterization"),
        "G": H.pack_module("guidance_core.classifier_guidance"),
        "errors": H.pack_module("guidance_core.errors"),
    }


# ---------------------------------------------------------------- a real ComfyUI server per module (and frontend)
@pytest.fixture(scope="module")
def start_server():
    """How the module starts a real ComfyUI server with the pack (devkit.comfy_server): a function
    (folder, frontend, extra ComfyUI options) -> the started server, writing into `folder`, serving `frontend`
    (devkit/frontends.py), which it names as .frontend. A module overrides this fixture to give its servers more
    (a models folder), calling this one."""

    def start(folder, frontend, extra_args=()):
        srv = ComfyServer(str(folder), extra_args=[*extra_args, *frontend.server_args]).start()
        srv.frontend = frontend
        return srv

    return start


@pytest.fixture(scope="module")
def stop_server():
    """How the module stops its servers: a function (server) -> the server's log, read after it stopped. A module
    overrides this fixture to check that log, calling this one."""

    def stop(srv):
        srv.stop()
        with open(srv.log_path) as f:
            return f.read()

    return stop


@pytest.fixture(scope="module")
def server(start_server, stop_server, tmp_path_factory):
    """The module's real ComfyUI server, on the pinned frontend."""
    srv = start_server(tmp_path_factory.mktemp("server"), FE.pinned())
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module", params=FE.NAMES)
def ui_server(request, server, start_server, stop_server, tmp_path_factory):
    """The server of the browser tests, once per frontend (devkit/frontends.py; pinned: the module's server)."""
    frontend = FE.get(request.param)
    if frontend.name == "pinned":
        yield server
        return
    srv = start_server(tmp_path_factory.mktemp(f"server-{frontend.name}"), frontend)
    yield srv
    stop_server(srv)
