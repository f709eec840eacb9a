"""Runs the browser tests on each installed frontend (devkit/frontends.py: `pinned`, the one ComfyUI pins, and
`newest`, the newest comfyui-frontend-package from PyPI) and writes their results as this ComfyUI version's rows of
the Frontends table of docs/COMPATIBILITY.md (the rows of other ComfyUI versions and the matrices stay).

    .venv/bin/python -m scripts.compat_frontends          # on ComfyUI 0.3.75 (.comfyui), several minutes
    GL_COMFYUI=$PWD/.comfyui-0.3.52 PYTHONPATH=$PWD/.comfyui-0.3.52/_pydeps .venv/bin/python -m scripts.compat_frontends

It runs pytest on the browser cases (parameter `pinned` / `newest`) of tests/test_web.py (schedule plot, label
picker), tests/test_help_pages.py (help pages) and tests/test_workflows.py (every example workflow loads with no
missing nodes) with --junitxml, and counts passed / failed / skipped per frontend and check. The newest frontend
is the one scripts/setup_frontend.sh installed (or GL_NEW_FRONTEND). --from-junit summarizes a saved report
instead of running. Exits 1 when a browser test fails.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "COMPATIBILITY.md")
FILES = ["tests/test_web.py", "tests/test_help_pages.py", "tests/test_workflows.py"]
SELECT = "pinned or newest"  # the frontend-parametrized cases (browser tests, and the bundle check of help pages)


def check_of(classname: str, name: str) -> str | None:
    """The check of the Frontends table a test case belongs to (tests/compat_doc.FRONTEND_CHECKS), None if none."""
    from devkit import compat_doc as D

    module = classname.rsplit(".", 1)[-1]
    func = name.split("[", 1)[0]
    if module == "test_web":
        return D.FRONTEND_CHECKS[1] if "label_picker" in func else D.FRONTEND_CHECKS[0]
    if module == "test_help_pages":
        return D.FRONTEND_CHECKS[2]
    if module == "test_workflows":
        return D.FRONTEND_CHECKS[3]
    return None


def frontend_of(name: str) -> str | None:
    params = name.split("[", 1)[1].rstrip("]") if "[" in name else ""
    found = re.findall(r"(?<![A-Za-z0-9])(pinned|newest)(?![A-Za-z0-9])", params)
    return found[0] if found else None


def summarize(junit: str) -> dict:
    """{(frontend id, check): {"passed", "failed", "skipped", "reasons"}} of a junit report."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        fe, check = frontend_of(case.get("name", "")), check_of(case.get("classname", ""), case.get("name", ""))
        if fe is None or check is None:
            continue
        c = out.setdefault((fe, check), {"passed": 0, "failed": 0, "skipped": 0, "reasons": [], "failures": []})
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            c["failed"] += 1
            c["failures"].append(f"{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:200]}")
        elif skip is not None:
            c["skipped"] += 1
            reason = re.sub(r"^Skipped: ", "", skip.get("message") or "")
            if reason not in c["reasons"]:
                c["reasons"].append(reason)
        else:
            c["passed"] += 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--junit",
        default=os.path.join(ROOT, "test-artifacts", "compat_frontends.xml"),
        help="where pytest writes its report",
    )
    ap.add_argument("--from-junit", action="store_true", help="summarize the report at --junit; run nothing")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds the browser tests may take")
    ap.add_argument("--out", help=f"write the document here instead of {DOC}")
    args = ap.parse_args(argv)

    from devkit import compat_doc as D
    from devkit import frontends as FE

    env = dict(os.environ)
    newest = FE.newest()
    if newest is not None:
        env["GL_NEW_FRONTEND"] = newest.static
    env["GL_REQUIRE_NEW_FRONTEND"] = "1"  # a missing newest frontend is a failure, not a silent skip
    env.setdefault("OMP_NUM_THREADS", "1")
    if not args.from_junit:
        os.makedirs(os.path.dirname(args.junit), exist_ok=True)
        start = time.time()
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            "tests/pytest.ini",
            *FILES,
            "-k",
            SELECT,
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={args.junit}",
        ]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.timeout, check=False)
        print(f"pytest took {time.time() - start:.0f} s")
    found = summarize(args.junit)
    comfyui = D.comfyui_version_of_tree()
    versions = {"pinned": FE.pinned().version, "newest": newest.version if newest else "not installed"}
    date = datetime.date.fromtimestamp(os.path.getmtime(args.junit)).isoformat()
    rows = []
    for fe in ("pinned", "newest"):
        for check in D.FRONTEND_CHECKS:
            c = found.get((fe, check), {"passed": 0, "failed": 0, "skipped": 0, "reasons": [], "failures": []})
            if c["failed"]:
                status, detail = "FAIL", "; ".join(c["failures"][:3])
            elif c["passed"]:
                status, detail = "pass", ("; ".join(f"skipped: {r}" for r in c["reasons"]) if c["skipped"] else "")
            elif c["skipped"]:
                status, detail = "limitation", "skipped: " + "; ".join(c["reasons"])
            else:
                status, detail = "FAIL", "no test ran"
            rows.append(
                D.frontend_row(comfyui, versions[fe], fe, check, c["passed"], c["failed"], c["skipped"], status, detail)
            )
    for r in rows:
        print(" | ".join(str(r[k]) for k in D.FRONTEND_COLUMNS))
    with open(DOC, encoding="utf-8") as f:
        doc_text = f.read()
    suite = ET.parse(args.junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    prefix = (
        "" if comfyui == "0.3.75" else f"GL_COMFYUI=$PWD/.comfyui-{comfyui} PYTHONPATH=$PWD/.comfyui-{comfyui}/_pydeps "
    )
    how = (
        f"`{prefix}.venv/bin/python -m scripts.compat_frontends`, {date}, pytest "
        f"{float(suite.get('time', 0)):.0f} s, headless Chromium"
    )
    out = args.out or DOC
    D.write_atomic(out, D.replace_frontend_rows(doc_text, comfyui, rows, how))
    print(f"wrote the ComfyUI {comfyui} rows of the Frontends table of {out}")
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
