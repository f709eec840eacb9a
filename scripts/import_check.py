"""ComfyUI's own import check of one ComfyUI tree with the pack loaded (scripts/test.sh runs it on each tree):
main.py --quick-test-for-ci, as a user runs it (no dev kit on PYTHONPATH), then the pack's own folder
(custom_nodes/guidance-lab, matched exactly) must have loaded and no node of the pack may have been left out.
Usage: python -m scripts.import_check TREE [--pythonpath PATHS]     (exit 1 naming the folder that failed)"""

from __future__ import annotations

import argparse
import os
import sys

from devkit.comfy_server import import_problem, quick_test_log

PACK_FOLDER = "guidance-lab"  # the pack's folder in custom_nodes (scripts/setup.sh links it so)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("tree")
    ap.add_argument("--pythonpath", default="", help="PYTHONPATH for that tree (its own pinned packages)")
    args = ap.parse_args(argv)
    tree = os.path.abspath(args.tree)
    print(f"[test] ComfyUI import check (--quick-test-for-ci) with the pack loaded: {tree}", flush=True)
    log = quick_test_log(tree, args.pythonpath)
    problem = import_problem(log, os.path.join(tree, "custom_nodes", PACK_FOLDER))
    left_out = [line for line in log.splitlines() if "Guidance Lab: node" in line and "is left out" in line]
    if problem is None and not left_out:
        return 0
    print(log)
    if problem:
        print(f"[test] the pack failed to import in ComfyUI: {problem}")
    for line in left_out:
        print(f"[test] ComfyUI ({tree}) left out a node of the pack: {line.strip()}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
