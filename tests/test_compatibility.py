"""Issue 12: docs/COMPATIBILITY.md is generated from real runs inside ComfyUI (scripts/compat_matrix.py). This
test reruns the quick slice of the matrices (tests/compat_matrix.py): no combination may FAIL, the exact ones
must be below tolerance, and the document must say what the runs say (regenerate it with
`.venv/bin/python scripts/compat_matrix.py` when this fails)."""
import os

import pytest

import compat_matrix as M

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "COMPATIBILITY.md")


@pytest.fixture(scope="module")
def rows():
    return M.all_rows(quick=True)


@pytest.fixture(scope="module")
def doc_text():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def test_no_combination_fails(rows):
    assert {r["area"] for r in rows} == set(M.AREAS)
    fails = [f"{M.key_of(r)}: {r['detail']}" for r in rows if r["status"] == "FAIL"]
    assert not fails, "\n".join(fails)


def test_exact_rows_are_below_tolerance(rows):
    exact = [r for r in rows if r["status"] == "exact"]
    assert exact
    for r in exact:
        assert r["value"] is not None and r["value"] < M.TOL, r


def test_document_matches_the_runs(rows, doc_text):
    assert M.doc_version(doc_text) == M.comfyui_version()
    problems = M.mismatches(rows, M.parse(doc_text))
    assert not problems, "docs/COMPATIBILITY.md is out of date (run scripts/compat_matrix.py):\n" + "\n".join(problems)


def test_document_rows_are_well_formed(doc_text):
    doc_rows = M.parse(doc_text)
    assert {r["area"] for r in doc_rows} == set(M.AREAS)
    for r in doc_rows:
        assert r["status"] in M.STATUSES, r
        if r["status"] == "exact" and "model calls" not in r["detail"]:  # the interval rows count calls
            assert float(r["detail"]) < M.TOL, r
