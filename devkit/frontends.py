"""The ComfyUI frontends the browser tests run on: the one ComfyUI pins (the venv's comfyui-frontend-package,
served by default) and the newest one from PyPI, installed beside it by scripts/setup_frontend.sh into
.frontends/<version>/ and served with ComfyUI's --front-end-root.

A test takes a frontend as the parameter `frontend` (ids "pinned" and "newest", stable across versions); the
newest one is skipped, with the command that installs it, when it is not there. GL_NEW_FRONTEND may name its
static folder (what scripts/setup_frontend.sh prints); otherwise the highest version in .frontends/ is used.
GL_REQUIRE_NEW_FRONTEND=1 (for CI) makes a missing newest frontend a failure instead of a skip.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re

import pytest

from . import ROOT

FRONTENDS_DIR = os.path.join(ROOT, ".frontends")
SETUP = "bash scripts/setup_frontend.sh"


@dataclasses.dataclass(frozen=True)
class Frontend:
    name: str  # "pinned" | "newest"
    version: str
    static: str  # the folder with index.html and assets/
    server_args: tuple[str, ...]  # ComfyUI command-line options that serve it

    def __str__(self):
        return f"{self.name} frontend {self.version}"


def _version_key(v: str):
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"[.+-]", v))


def _version_of(static: str) -> str:
    """The version of a comfyui_frontend_package/static folder (its dist-info beside the package)."""
    pkg = os.path.dirname(os.path.abspath(static))
    infos = glob.glob(os.path.join(os.path.dirname(pkg), "comfyui_frontend_package-*.dist-info"))
    if len(infos) == 1:
        return os.path.basename(infos[0])[len("comfyui_frontend_package-") : -len(".dist-info")]
    return os.path.basename(os.path.dirname(pkg))  # .frontends/<version>/comfyui_frontend_package/static


@functools.cache
def pinned() -> Frontend:
    import comfyui_frontend_package

    static = os.path.join(os.path.dirname(comfyui_frontend_package.__file__), "static")
    return Frontend("pinned", _version_of(static), static, ())


@functools.cache
def newest() -> Frontend | None:
    static = os.environ.get("GL_NEW_FRONTEND")
    if not static:
        found = [
            d
            for d in glob.glob(os.path.join(FRONTENDS_DIR, "*", "comfyui_frontend_package", "static"))
            if os.path.isfile(os.path.join(d, "index.html"))
        ]
        if not found:
            return None
        static = max(found, key=lambda d: _version_key(_version_of(d)))
    static = os.path.abspath(static)
    assert os.path.isfile(os.path.join(static, "index.html")), f"GL_NEW_FRONTEND={static}: no index.html there"
    return Frontend("newest", _version_of(static), static, ("--front-end-root", static))


def get(name: str) -> Frontend:
    if name == "pinned":
        return pinned()
    fe = newest()
    if fe is None:
        (pytest.fail if os.environ.get("GL_REQUIRE_NEW_FRONTEND") == "1" else pytest.skip)(
            f"the newest frontend is not installed: run `{SETUP}` (installs comfyui-frontend-package "
            f"into .frontends/<version>/) or set GL_NEW_FRONTEND to its static folder"
        )
    return fe


NAMES = ["pinned", "newest"]


def all_installed() -> list[Frontend]:
    return [pinned()] + ([newest()] if newest() is not None else [])
