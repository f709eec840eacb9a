"""Issues 12 and 13: docs/COMPATIBILITY.md is generated from real runs inside ComfyUI (scripts/compat_matrix.py), one
section per ComfyUI version. This test reruns the quick slice of the matrices (devkit/compat_matrix.py) on the
ComfyUI under test (GL_COMFYUI: both passes of scripts/test.sh): no combination may FAIL, the exact ones must be
below tolerance, and that version's section must exist and say what the runs say (regenerate it with
`.venv/bin/python -m scripts.compat_matrix`, or with `--quick --write-section` for a version whose section holds
the quick slice, when this fails)."""

import pytest

from devkit import compat_doc as D
from devkit import compat_matrix as M

pytestmark = pytest.mark.comfy

DOC = D.DOC


@pytest.fixture(scope="module")
def rows():
    return M.all_rows(quick=True)  # the nodes as this version has them (M.node_inputs_of_this_comfyui)


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


def test_document_has_a_section_for_this_comfyui(doc_text):
    here = M.comfyui_version()
    assert here in D.versions(doc_text), (
        f"docs/COMPATIBILITY.md has no section for ComfyUI {here} (it has {D.versions(doc_text)}): run "
        f"`scripts/compat_matrix.py --quick --write-section` on ComfyUI {here} (GL_COMFYUI, docs/DEVELOPING.md)"
    )


def test_document_matches_the_runs(rows, doc_text):
    here = M.comfyui_version()
    if here not in D.versions(doc_text):
        pytest.fail(f"no section for ComfyUI {here} (test_document_has_a_section_for_this_comfyui)")
    problems = M.mismatches(rows, M.parse(doc_text, here))
    assert not problems, (
        f"the ComfyUI {here} section of docs/COMPATIBILITY.md is out of date (run "
        "scripts/compat_matrix.py on it):\n" + "\n".join(problems)
    )


def test_document_rows_are_well_formed(doc_text):
    assert D.versions(doc_text)
    for version in D.versions(doc_text):
        doc_rows = M.parse(doc_text, version)
        assert {r["area"] for r in doc_rows} == set(M.AREAS), version
        for r in doc_rows:
            assert r["status"] in M.STATUSES, (version, r)
            assert r["status"] != "FAIL", (version, r)
            if r["status"] == "exact":  # the max abs difference, or what a structural check counted
                try:
                    diff = float(r["detail"])
                except ValueError:  # rows per model call, step scales, momentum steps: said in words
                    assert r["detail"].strip(), (version, r)
                else:
                    assert diff < M.TOL, (version, r)


def test_a_rounding_decided_row_may_flip_only_within_the_band():
    """A row whose status is its float32 rounding against TOL (the reshapers at EDM's sigma 80: 5.9e-6 in one run,
    1.3e-5 in the next) is no mismatch when it flips near TOL; far past it, or for any other row, it is."""
    key = dict(area="Model families", item="Playground v2.5", check="FreSca = ComfyUI's FreSca", route="patch")
    doc = [dict(key, status="exact", detail="5.9e-06 relative", value=None)]
    near = dict(key, status="finite", detail="1.3e-05 relative", value=1.3e-5, rounding=True)
    far = dict(near, detail="0.002 relative", value=2e-3)
    assert M.mismatches([near], doc) == []
    assert len(M.mismatches([far], doc)) == 1
    assert len(M.mismatches([{k: v for k, v in near.items() if k != "rounding"}], doc)) == 1
