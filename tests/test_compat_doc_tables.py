"""Issue 13: the version tables of docs/COMPATIBILITY.md. "ComfyUI versions" must be what the version sections
hold (the document is exactly what devkit/compat_doc.py assembles from its own blocks), the newest ComfyUI's section
is the full matrix, and the Frontends table names exactly the frontends installed for the ComfyUI under test
(devkit/frontends.py: the pinned one and the newest one), with a row per check and no FAIL. Cheap: reads files only;
the rows come from real runs (scripts/compat_matrix.py, scripts/compat_frontends.py)."""

import os

import pytest

from devkit import compat_doc as D
from devkit import frontends as FE

pytestmark = pytest.mark.comfy  # the frontends installed for the ComfyUI under test, its section


@pytest.fixture(scope="module")
def doc_text():
    with open(D.DOC, encoding="utf-8") as f:
        return f.read()


def test_document_is_what_its_blocks_assemble_to(doc_text):
    """The ComfyUI versions table, counts included, is computed from the sections: regenerate, never hand-edit."""
    blocks = {v: b for v, (_, b) in D.sections(doc_text).items()}
    assert D.assemble(blocks, D.frontends_block(doc_text)) == doc_text, (
        "docs/COMPATIBILITY.md differs from what its sections assemble to: rerun scripts/compat_matrix.py"
    )


def test_comfyui_versions_table(doc_text):
    secs = D.sections(doc_text)
    assert len(secs) >= 2, f"sections for ComfyUI {sorted(secs)} only; issue 13 needs 0.3.75 and 0.3.52"
    full = sorted(v for v, (meta, _) in secs.items() if not meta["quick"])
    assert full == [D.FULL_MATRIX_COMFYUI], (
        f"full matrices: {full}; the ComfyUI {D.FULL_MATRIX_COMFYUI} section must hold it"
    )
    here = D.comfyui_version_of_tree()
    assert here in secs, f"no section for the ComfyUI under test ({here})"
    table = D.table_rows(doc_text.split("## ComfyUI versions", 1)[1].split("## Frontends", 1)[0].splitlines())
    assert [r[0] for r in table] == D.versions(doc_text)
    for r in table:
        assert int(r[1]) == sum(int(x) for x in r[2 : 2 + len(D.STATUSES)]) == len(D.parse(doc_text, r[0])), r
        assert r[2 + D.STATUSES.index("FAIL")] == "0", r


def test_frontends_table_names_the_installed_frontends(doc_text):
    here = D.comfyui_version_of_tree()
    rows = [r for r in D.frontend_rows(doc_text) if r["ComfyUI"] == here]
    assert rows, (
        f"the Frontends table has no rows for ComfyUI {here}: run scripts/compat_frontends.py on it "
        "(GL_COMFYUI, docs/DEVELOPING.md)"
    )
    installed = {"pinned": FE.pinned().version}
    newest = FE.newest()
    if newest is not None:
        installed["newest"] = newest.version
    elif os.environ.get("GL_REQUIRE_NEW_FRONTEND") == "1":
        pytest.fail(f"the newest frontend is not installed: run `{FE.SETUP}`")
    for role, version in installed.items():
        named = {r["frontend"] for r in rows if r["role"] == role}
        assert named == {version}, f"ComfyUI {here}, {role} frontend: the table names {named}, installed {version}"
        assert {r["check"] for r in rows if r["role"] == role} == set(D.FRONTEND_CHECKS), role
    assert {r["role"] for r in rows} == {"pinned", "newest"}
    assert here in D.frontend_how(doc_text)


def test_frontend_rows_are_well_formed(doc_text):
    rows = D.frontend_rows(doc_text)
    assert rows
    for r in rows:
        assert r["status"] in D.FRONTEND_STATUSES, r
        assert r["status"] != "FAIL", r
        if r["status"] == "pass":
            assert r["passed"] > 0 and r["failed"] == 0, r
        if r["status"] == "limitation":
            assert r["passed"] == r["failed"] == 0 and r["skipped"] > 0 and r["detail"].startswith("skipped:"), r
