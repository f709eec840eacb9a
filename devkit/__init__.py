"""The dev kit: what tests, benchmarks and scripts share to drive a real ComfyUI with the pack. Not shipped
(.comfyignore). Run everything from the repository root: pytest puts the root on the path (tests/pytest.ini
`pythonpath`), benchmarks and scripts run as modules (`python -m bench.bench_cfg`, `python -m scripts.reliability`),
and a ComfyUI server started here gets it through PYTHONPATH (python_env).

  comfy_host        a real ComfyUI in-process with the pack loaded by ComfyUI's own loader; tiny real models.
                    The one place that puts ComfyUI itself on sys.path.
  comfy_server      a real ComfyUI server (subprocess, localhost) with the pack and the demo nodes
  workflow_api      UI workflow JSON -> API prompt, validated against /object_info
  workflow_builder  builds the example workflows node by node
  workflow_run      runs a workflow on a server and collects its images
  demo_prompts      API prompts of the demo nodes (exact Gaussian-mixture models)
  families          tiny instances of every model family ComfyUI ships, with their conditionings
  cfg_helpers       guiders, patches and samplers for the CFG tests
  compat_doc        the compatibility vocabulary and docs/COMPATIBILITY.md reader/writer
  compat_matrix     the compatibility matrix runs (all_rows); compat_measure its measuring core, compat_rows_* its
                    rows by theme (sampling, ComfyUI's nodes, model families, model sampling forms)
  frontends         the ComfyUI frontends installed for the browser tests
  bench             docs/BENCHMARKS.md sections and side-by-side timing
  reliability       the reliability checks in a real server (soak, interrupts, faults, hostile input, report)
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_env(*first: str, base: dict | None = None) -> dict:
    """The environment for a child Python (a ComfyUI server, a fresh interpreter): PYTHONPATH gets `first`,
    then the repository root (so the child imports devkit and guidance_core as this process does), then what
    PYTHONPATH already held."""
    env = dict(os.environ if base is None else base)
    parts = [*first, ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env
