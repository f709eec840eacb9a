import os
import re

import pytest

from devkit.compat_doc import comfyui_version_of_tree


# ---------------------------------------------------------------- browser tests on ComfyUI 0.3.52's own frontend
def pytest_collection_modifyitems(config, items):
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
        skip = pytest.mark.skip(reason=f"{'/'.join(skipped)} frontend cases run in the ComfyUI 0.3.75 pass of "
                                       f"scripts/test.sh (GL_BROWSER={browser})")
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
    reason = (f"ComfyUI {version} pins comfyui-frontend-package {frontend}, older than the browser tests drive: "
              "no Vue node renderer (setting Comfy.VueNodes.Enabled), an older node help panel (no normalizePackId), "
              "a missing-nodes dialog worded 'Some Nodes Are Missing' that Escape does not close; they run on "
              "1.32.9 (ComfyUI 0.3.75's) and newer")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pinned" in params.values():
            item.add_marker(pytest.mark.skip(reason=reason))
