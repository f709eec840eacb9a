"""Reliability of Guidance Lab in a real ComfyUI server: soak, interrupts, files changed under the server, hostile
requests, determinism. Localhost only; every request loop is bounded in count and time. The checks live in
devkit/reliability/ (its docstring lists the modules); this is the entry point.

    .venv/bin/python -m scripts.reliability           # full form, rewrites docs/RELIABILITY.md (atomically)
    .venv/bin/python -m scripts.reliability --quick   # the CI slice (tests/test_reliability.py runs it)
    .venv/bin/python -m scripts.reliability --only hostile   # check 4 again, merged into the last full run's figures

The servers run with `--base-directory` in a temporary folder (models/, input/, user/, custom_nodes/ there), so the
shared ComfyUI tree is never written. Its custom_nodes/ links the pack, the demo nodes and the probe
(devkit/reliability/probe.py, as `gl_reliability_probe.py`). Not shipped (scripts/ and devkit/ are in .comfyignore).
"""

from __future__ import annotations

import sys

# what tests/test_reliability.py uses besides the run
from devkit.reliability.common import FIELD_WORDS, has_traceback  # noqa: F401
from devkit.reliability.faults import CLIP_FAULT, excerpt  # noqa: F401
from devkit.reliability.report import failures, hostile_failures  # noqa: F401
from devkit.reliability.run import FULL, QUICK, main, run_all  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
