"""Runs the compatibility matrices (devkit/compat_matrix.py) inside an in-process ComfyUI and writes this ComfyUI
version's section of docs/COMPATIBILITY.md (the other versions' sections and the Frontends table stay as they are).

    .venv/bin/python -m scripts.compat_matrix                          # the full matrix: writes this version's section
    .venv/bin/python -m scripts.compat_matrix --quick                  # the CI slice: checks it against the section
    GL_COMFYUI=$PWD/.comfyui-0.3.52 PYTHONPATH=$PWD/.comfyui-0.3.52/_pydeps \\
        .venv/bin/python -m scripts.compat_matrix --quick --write-section  # the CI slice on 0.3.52: writes its section

Which ComfyUI runs is GL_COMFYUI's (devkit/comfy_host.py; default .comfyui, 0.3.75). --quick writes nothing unless
--write-section is given; it exits 1 when a row is FAIL or disagrees with this version's section, as
tests/test_compat_matrix_quick.py does. --json saves the rows of the run (and --from-json renders saved rows without
running anything).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "COMPATIBILITY.md")


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the CI slice; compare it with this version's section")
    ap.add_argument(
        "--write-section",
        action="store_true",
        help="write the run as this ComfyUI version's section (replacing only it); default without --quick",
    )
    ap.add_argument("--out", help=f"write the document here instead of {DOC} (the sections kept come from {DOC})")
    ap.add_argument("--json", help="also save the rows of the run (and how it was made) in this JSON file")
    ap.add_argument("--from-json", help="render the rows saved by --json instead of running the matrices")
    args = ap.parse_args(argv)

    from devkit import compat_matrix as M

    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            run = json.load(f)
    else:
        start = time.time()
        rows = M.all_rows(quick=args.quick)
        run = {
            "comfyui": M.comfyui_version(),
            "torch": M.torch_version(),
            "quick": args.quick,
            "seconds": round(time.time() - start),
            "date": datetime.date.today().isoformat(),
            "rows": rows,
        }
        if args.json:
            write_atomic(args.json, json.dumps(run, indent=1))
    rows = run["rows"]
    counts = collections.Counter(r["status"] for r in rows)
    print(
        f"ComfyUI {run['comfyui']}, {'quick slice' if run['quick'] else 'full matrix'}: {len(rows)} rows in "
        f"{run['seconds']} s: " + ", ".join(f"{s} {counts[s]}" for s in M.STATUSES)
    )
    for r in rows:
        if r["status"] == "FAIL":
            print(f"FAIL {M.key_of(r)}: {r['detail']}")
    with open(DOC, encoding="utf-8") as f:
        doc_text = f.read()
    if args.write_section or not run["quick"]:
        out = args.out or DOC
        write_atomic(out, M.replace_section(doc_text, M.render_section(run)))
        print(f"wrote the ComfyUI {run['comfyui']} section of {out}")
        return 1 if counts["FAIL"] else 0
    problems = M.mismatches(rows, M.parse(doc_text, run["comfyui"]))
    for p in problems:
        print(f"out of date: {p}")
    return 1 if counts["FAIL"] or problems else 0


if __name__ == "__main__":
    sys.exit(main())
