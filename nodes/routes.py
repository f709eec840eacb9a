"""HTTP routes for the frontend extension (web/js/guidance_lab.js). Glue only: the math is guidance_core's.

  POST /guidance_lab/schedule
      body: the schedule node's fields (kind, axis, start, end, exponent, sigma_lo, sigma_hi, inside,
      outside, keyframes; missing ones take the node's defaults), "steps" (default 20) and optionally
      "sigma_min" + "sigma_max" (default: an SD1.5-like model with ComfyUI's "normal" scheduler).
      200: {"steps", "sigmas" (steps + 1, descending, last 0), "values" (one per step), "sigma_min", "sigma_max"}
      400: {"error": the core's GuidanceConfigError message}
  GET /guidance_lab/classifier_labels?name=FILE
      FILE is resolved only through folder_paths (folder "classifiers"); names with "..", absolute
      paths or backslashes are refused (400). 404 for an unknown name, 422 for a file that is not a
      Guidance Lab classifier (pickles included: only the safetensors header is read).
      200: {"name", "labels", "latent_channels", "parameterization", "architecture"}
Every error is JSON: {"error": message naming the value and what is accepted}.
"""

from __future__ import annotations

import json
import os
import re
import sys

from aiohttp import web

import folder_paths

from ..guidance_core.classifiers import classifier_files
from ..guidance_core import preview, schedules
from ..guidance_core.errors import GuidanceConfigError
from .classifier_nodes import FOLDER

PREFIX = "/guidance_lab"
TEXT_FIELDS = ("kind", "axis", "keyframes")
NUMBER_FIELDS = tuple(k for k in schedules.DEFAULTS if k not in TEXT_FIELDS)
EXTRA_FIELDS = ("steps", "sigma_min", "sigma_max")
DRIVE = re.compile(r"^[A-Za-z]:")


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _number(body: dict, name: str):
    v = body[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GuidanceConfigError(f"{name}={v!r}; use a number")
    return v


def schedule_request(body) -> tuple[schedules.Schedule, int, float | None, float | None]:
    """(schedule, steps, sigma_min, sigma_max) from a request body; GuidanceConfigError when unusable."""
    if not isinstance(body, dict):
        raise GuidanceConfigError(f"request body is {type(body).__name__}; send a JSON object of the schedule's fields")
    unknown = sorted(set(body) - set(schedules.DEFAULTS) - set(EXTRA_FIELDS))
    if unknown:
        raise GuidanceConfigError(
            f"unknown field(s) {unknown}; accepted: {', '.join((*schedules.DEFAULTS, *EXTRA_FIELDS))}"
        )
    fields = {}
    for name in TEXT_FIELDS:
        if name in body:
            if not isinstance(body[name], str):
                raise GuidanceConfigError(f"{name}={body[name]!r}; use a string")
            fields[name] = body[name]
    for name in NUMBER_FIELDS:
        if name in body:
            fields[name] = _number(body, name)
    steps = body.get("steps", preview.PREVIEW_STEPS_DEFAULT)
    lo = _number(body, "sigma_min") if body.get("sigma_min") is not None else None
    hi = _number(body, "sigma_max") if body.get("sigma_max") is not None else None
    return schedules.from_fields(**fields), steps, lo, hi


async def schedule_preview(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return error(400, f"request body is not JSON ({e}); send a JSON object of the schedule's fields")
    try:
        sched, steps, lo, hi = schedule_request(body)
        sigmas, sigma_min, sigma_max = preview.preview_sigmas(steps, lo, hi)
        values = schedules.step_values(sched, sigmas, sigma_min, sigma_max)
    except GuidanceConfigError as e:
        return error(400, str(e))
    out = {"steps": steps, "sigmas": sigmas, "values": values, "sigma_min": sigma_min, "sigma_max": sigma_max}
    if sched.kind == "adaptive":  # where it stops depends on the predictions: the plot says so (dashed line)
        out["note"] = f"stops once cos >= {sched.threshold:g}"
    return web.json_response(out)


def unsafe_name_reason(name: str) -> str | None:
    """Why a classifier name is refused before any file system access, or None."""
    if "\x00" in name:
        return "contains a NUL character"
    if "\\" in name:
        return "contains a backslash; use '/' between sub-folders"
    if ".." in name:
        return "contains '..'; give a name as listed in models/classifiers"
    if os.path.isabs(name) or name.startswith(("/", "~")) or DRIVE.match(name):
        return "is an absolute path; give a name relative to models/classifiers"
    return None


async def classifier_labels(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    if not name:
        return error(400, "query parameter 'name' is missing; give a file name from models/classifiers")
    reason = unsafe_name_reason(name)
    if reason:
        return error(400, f"classifier name {name!r} {reason}")
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        return error(
            404,
            f"classifier {name!r} not found in the '{FOLDER}' model folders; "
            "give a name listed by Load Classifier (Guidance Lab)",
        )
    try:
        meta = classifier_files.read_metadata(path)
    except classifier_files.ClassifierFileError as e:
        return error(422, str(e))
    return web.json_response(
        {
            "name": name,
            "labels": [str(lb) for lb in meta["labels"]],
            "latent_channels": meta.get("latent_channels"),
            "parameterization": meta.get("parameterization"),
            "architecture": meta.get("architecture"),
        }
    )


def register(routes) -> bool:
    """Add the routes to an aiohttp RouteTableDef (ComfyUI's PromptServer.instance.routes), once."""
    if any(isinstance(r, web.RouteDef) and r.path.startswith(PREFIX + "/") for r in routes):
        return False
    routes.post(PREFIX + "/schedule")(schedule_preview)
    routes.get(PREFIX + "/classifier_labels")(classifier_labels)
    return True


def register_with_server() -> bool:
    """Register on the running ComfyUI server. Without one (the pack imported by tests, or ComfyUI's
    server module never imported) nothing is done and False is returned."""
    server = sys.modules.get("server")
    prompt_server = getattr(server, "PromptServer", None)
    instance = getattr(prompt_server, "instance", None)
    routes = getattr(instance, "routes", None)
    if routes is None:
        return False
    return register(routes)
