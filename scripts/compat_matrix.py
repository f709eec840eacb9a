"""Runs the compatibility matrices (tests/compat_matrix.py) inside an in-process ComfyUI and writes
docs/COMPATIBILITY.md.

    .venv/bin/python scripts/compat_matrix.py            # every sampler and scheduler: writes the document
    .venv/bin/python scripts/compat_matrix.py --quick    # the CI slice: checks it against the document

--quick writes nothing unless --out is given (the document holds the full run); it exits 1 when a row is
FAIL or disagrees with the document, as tests/test_compatibility.py does.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
DOC = os.path.join(ROOT, "docs", "COMPATIBILITY.md")


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the CI slice; compare it with the document")
    ap.add_argument("--out", help=f"write the document here (default without --quick: {DOC})")
    args = ap.parse_args(argv)

    import compat_matrix as M

    start = time.time()
    rows = M.all_rows(quick=args.quick)
    seconds = time.time() - start
    counts = collections.Counter(r["status"] for r in rows)
    print(f"{len(rows)} rows in {seconds:.0f} s: " + ", ".join(f"{s} {counts[s]}" for s in M.STATUSES))
    for r in rows:
        if r["status"] == "FAIL":
            print(f"FAIL {M.key_of(r)}: {r['detail']}")
    out = args.out or (None if args.quick else DOC)
    if out:
        write_atomic(out, M.render(rows))
        print(f"wrote {out}")
    problems = []
    if args.quick:
        with open(DOC, encoding="utf-8") as f:
            problems = M.mismatches(rows, M.parse(f.read()))
        for p in problems:
            print(f"out of date: {p}")
    return 1 if counts["FAIL"] or problems else 0


if __name__ == "__main__":
    sys.exit(main())
