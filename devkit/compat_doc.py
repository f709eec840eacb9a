"""The layout of docs/COMPATIBILITY.md (no ComfyUI import: the frontends script and tests read it cheaply).

The document holds, in this order: a short header; "ComfyUI versions", a summary table computed from the
version sections; "Frontends", the rows scripts/compat_frontends.py wrote per ComfyUI version (between
`<!-- frontends -->` markers); what the statuses mean; then one section per ComfyUI version, each written by
scripts/compat_matrix.py run on that version (between `<!-- comfyui VERSION {run json} -->` and
`<!-- /comfyui VERSION -->`), newest version first. A script replaces only its own block; the rest is kept.
"""

from __future__ import annotations

import json
import os
import re

from . import ROOT

DOC = os.path.join(ROOT, "docs", "COMPATIBILITY.md")
# the ComfyUI whose section holds the full matrix: the one set-up installs as .comfyui (the others: the quick slice)
FULL_MATRIX_COMFYUI = "0.3.75"
TOL = 1e-5
STATUSES = ("exact", "finite", "refused", "limitation", "FAIL")
SAMPLERS, SCHEDULERS, NODES, CONDITIONING, FAMILIES = (
    "Samplers",
    "Schedulers",
    "ComfyUI guidance nodes",
    "Conditioning features",
    "Model families",
)
AREAS = (SAMPLERS, SCHEDULERS, NODES, CONDITIONING, FAMILIES)
COLUMNS = ("item", "check", "route", "status", "detail")
FRONTEND_CHECKS = (
    "schedule plot (classic and Vue node renderer)",
    "label picker (and the plot on every node that takes a schedule)",
    "help pages (bundle's help URL, help panel shows every page)",
    "every example workflow loads: no missing nodes, no errors, graphToPrompt = converter",
)
FRONTEND_COLUMNS = ("ComfyUI", "frontend", "role", "check", "passed", "failed", "skipped", "status", "detail")
FRONTEND_STATUSES = ("pass", "limitation", "FAIL")
SECTION = re.compile(r"<!-- comfyui (\S+) (\{.*?\}) -->\n(.*?)<!-- /comfyui \1 -->\n", re.S)
FRONTENDS = re.compile(r"<!-- frontends -->\n(.*?)<!-- /frontends -->\n", re.S)


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def version_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.+-]", v))


def comfyui_version_of_tree() -> str | None:
    """The version of the ComfyUI tree the tests run on (GL_COMFYUI, default .comfyui), read without importing it."""
    tree = os.path.abspath(os.environ.get("GL_COMFYUI", os.path.join(ROOT, ".comfyui")))
    try:
        with open(os.path.join(tree, "comfyui_version.py"), encoding="utf-8") as f:
            found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def table_rows(lines) -> list:
    """The cells of the body rows of markdown tables in `lines` (header and rule lines left out)."""
    out, header = [], False
    for line in lines:
        if line.startswith("|---"):
            continue
        if not line.startswith("| "):
            header = False
            continue
        if not header:  # the first row of a table is its header
            header = True
            continue
        out.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return out


# ------------------------------------------------------------------ the matrix sections, one per ComfyUI version
def how_made(run: dict) -> str:
    env = (
        ""
        if run["comfyui"] == "0.3.75"
        else (f"GL_COMFYUI=$PWD/.comfyui-{run['comfyui']} PYTHONPATH=$PWD/.comfyui-{run['comfyui']}/_pydeps ")
    )
    cmd = f"{env}.venv/bin/python -m scripts.compat_matrix" + (" --quick --write-section" if run["quick"] else "")
    kind = "quick slice (CI's)" if run["quick"] else "full matrix"
    took = f", {run['seconds']} s" if run.get("seconds") is not None else ""
    note = f" ({run['note']})" if run.get("note") else ""
    return f"{kind}: `{cmd}`, {run['date']}{took}, torch {run['torch']}, CPU{note}"


def render_section(run: dict) -> str:
    """The block of one run (run: comfyui, quick, seconds, date, torch, rows)."""
    rows = run["rows"]
    meta = {k: run[k] for k in ("quick", "seconds", "date", "torch", "note") if k in run}
    counts = {a: {s: 0 for s in STATUSES} for a in AREAS}
    for r in rows:
        counts[r["area"]][r["status"]] += 1
    scope = (
        " The quick slice is what CI reruns: one sampler of each kind, three schedulers, every guidance node "
        "and conditioning feature, every model family without its per-schedule-kind rows; the full matrix of "
        f"ComfyUI {FULL_MATRIX_COMFYUI} has every row."
        if run["quick"]
        else ""
    )
    lines = [
        f"<!-- comfyui {run['comfyui']} {json.dumps(meta, sort_keys=True)} -->",
        f"## ComfyUI {run['comfyui']}",
        "",
        f"Generated from real runs inside ComfyUI {run['comfyui']}, {how_made(run)}.{scope}",
        "",
        "### Summary",
        "",
        "| area | " + " | ".join(STATUSES) + " |",
        "|---|" + "---|" * len(STATUSES),
    ]
    lines += [f"| {a} | " + " | ".join(str(counts[a][s]) for s in STATUSES) + " |" for a in AREAS]
    for area in AREAS:
        lines += ["", f"### {area}", "", "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
        lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows if r["area"] == area]
    lines += [f"<!-- /comfyui {run['comfyui']} -->"]
    return "\n".join(lines) + "\n"


def sections(text: str) -> dict:
    """{ComfyUI version: (meta dict, block text)} of the document."""
    return {m.group(1): (json.loads(m.group(2)), m.group(0)) for m in SECTION.finditer(text)}


def parse(text: str, version: str) -> list:
    """The rows of the section of ComfyUI `version` ([] when the document has none)."""
    found = sections(text).get(version)
    if found is None:
        return []
    rows, area = [], None
    for line in found[1].splitlines():
        if line.startswith("### "):
            area = line[4:].strip() if line[4:].strip() in AREAS else None
        elif area and line.startswith("| ") and not line.startswith("| item |") and not line.startswith("|---"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append(
                {
                    "area": area,
                    "item": cells[0],
                    "check": cells[1],
                    "route": cells[2],
                    "status": cells[3],
                    "detail": cells[4],
                    "value": None,
                }
            )
    return rows


def versions(text: str) -> list:
    return sorted(sections(text), key=version_key, reverse=True)


def replace_section(text: str, block: str) -> str:
    """The document with `block` (render_section) as its version's section, the other sections and the
    Frontends rows kept."""
    version = SECTION.match(block).group(1)
    secs = {v: b for v, (_, b) in sections(text).items()}
    secs[version] = block
    return assemble(secs, frontends_block(text))


# ------------------------------------------------------------------ the Frontends table
def frontend_row(comfyui, frontend, role, check, passed, failed, skipped, status, detail="") -> dict:
    return dict(zip(FRONTEND_COLUMNS, (comfyui, frontend, role, check, passed, failed, skipped, status, detail)))


def frontends_block(text: str) -> str | None:
    found = FRONTENDS.search(text)
    return found.group(0) if found else None


def frontend_rows(text: str) -> list:
    block = frontends_block(text)
    if block is None:
        return []
    rows = [dict(zip(FRONTEND_COLUMNS, cells)) for cells in table_rows(block.splitlines())]
    for r in rows:
        for k in ("passed", "failed", "skipped"):
            r[k] = int(r[k])
    return rows


def frontend_how(text: str) -> dict:
    """{ComfyUI version: how its rows were made}."""
    block = frontends_block(text) or ""
    return dict(re.findall(r"^- ComfyUI (\S+): (.*)$", block, re.M))


def render_frontends(rows: list, how: dict) -> str:
    rows = sorted(
        rows,
        key=lambda r: (
            tuple(-x for x in version_key(r["ComfyUI"])),
            r["role"] != "pinned",
            FRONTEND_CHECKS.index(r["check"]) if r["check"] in FRONTEND_CHECKS else 99,
        ),
    )
    lines = [
        "<!-- frontends -->",
        "The browser tests (headless Debian Chromium, a real ComfyUI server) on the frontend each ComfyUI "
        "version pins (`pinned`, comfyui-frontend-package of its requirements) and on the newest on PyPI "
        "(`newest`, served with `--front-end-root`; `bash scripts/setup_frontend.sh`), counted per check from "
        "pytest's junit report. **pass**: every case of the check passed; **limitation**: every case skipped "
        "(detail = why); **FAIL**: a case failed.",
        "",
        "| " + " | ".join(FRONTEND_COLUMNS) + " |",
        "|---" * len(FRONTEND_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell(r[c]) for c in FRONTEND_COLUMNS) + " |" for r in rows]
    lines += [""] + [f"- ComfyUI {v}: {how[v]}" for v in sorted(how, key=version_key, reverse=True)]
    lines += ["<!-- /frontends -->"]
    return "\n".join(lines) + "\n"


def replace_frontend_rows(text: str, comfyui: str, rows: list, how_text: str) -> str:
    """The document with `rows` as the Frontends rows of ComfyUI `comfyui` (other versions' rows kept)."""
    kept = [r for r in frontend_rows(text) if r["ComfyUI"] != comfyui]
    how = {**frontend_how(text), comfyui: how_text}
    return assemble({v: b for v, (_, b) in sections(text).items()}, render_frontends(kept + rows, how))


# ------------------------------------------------------------------ the whole document
def summary_rows(secs: dict) -> list:
    """Rows of the ComfyUI versions table: (version, rows, counts per status, how it was made)."""
    out = []
    for v in sorted(secs, key=version_key, reverse=True):
        meta, block = secs[v]
        rows = parse(block, v)
        counts = [sum(r["status"] == s for r in rows) for s in STATUSES]
        out.append([v, len(rows), *counts, how_made({"comfyui": v, **meta})])
    return out


def assemble(blocks: dict, frontends: str | None) -> str:
    """The document from the version sections {version: block} and the Frontends block."""
    text = "".join(blocks[v] for v in sorted(blocks, key=version_key, reverse=True))
    secs = sections(text)
    lines = [
        "# Compatibility",
        "",
        "Generated from real runs; do not edit by hand. Each ComfyUI version's section is written by "
        "`scripts/compat_matrix.py` run on that ComfyUI (`GL_COMFYUI`, see `docs/DEVELOPING.md`): the full matrix, "
        "or the quick slice with `--quick --write-section`; the Frontends table by `scripts/compat_frontends.py`. "
        "`tests/test_compat_matrix_quick.py` reruns the quick slice on the ComfyUI under test in CI (every pass of "
        "`scripts/test.sh`, on each ComfyUI) and fails when that version's section is missing or disagrees with it; "
        "`tests/test_compat_doc_tables.py` checks the tables below against the sections and the installed frontends.",
        "",
        "## ComfyUI versions",
        "",
        "| ComfyUI | rows | " + " | ".join(STATUSES) + " | how it was made |",
        "|---" * (len(STATUSES) + 3) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in summary_rows(secs)]
    lines += [
        "",
        "## Frontends",
        "",
        (frontends or render_frontends([], {})).rstrip("\n"),
        "",
        "## What the rows mean",
        "",
        "Every row is one combination, sampled with ComfyUI's own nodes (KSampler, SamplerCustomAdvanced, the "
        "nodes named) on ComfyUI's UNet at tiny width (eps prediction, 8 steps, cfg 6 unless stated). Routes: "
        "`patch` = CFG Patch (Guidance Lab) on the stock KSampler, `guider` = CFG Guider (Guidance Lab) in "
        "SamplerCustomAdvanced; for ComfyUI's guidance nodes, `node → patch` applies the node first and our "
        "patch to its output, `patch → node` the other way round. Classifier guidance (a tiny noise-aware "
        "classifier, random weights): `patch` = Classifier Guidance on the CFG-patched model, `guider` = "
        "Classifier Guidance Sampler around the sampler, with the CFG Guider.",
        "",
        f"- **exact**: the result equals ComfyUI's own (native KSampler / CFGGuider / node at the scale "
        f"stated); detail = max abs difference (< {TOL:g}); `relative`: that difference over max(1, max |reference|), "
        "for float32 runs on the DiTs and for the reshapers, whose references compute the formula in another order "
        "(a reshaper row then reads exact or finite by its float32 rounding against the tolerance, and may read "
        "the other way in another run while under 10x the tolerance). For the interval schedule: every model call "
        "evaluates the rows the schedule says (2 inside, 1 outside).",
        "- **finite**: runs and the output is finite; detail = max abs difference from plain CFG at the same "
        "settings (how much the setting changed the result).",
        "- **refused**: stops before the first model call with the error in detail.",
        "- **limitation**: cannot take effect; detail says why.",
        "- **FAIL**: a defect (a crash, NaN, a wrong result).",
        "",
        "Model families: tiny random instances of ComfyUI's own model classes and configs "
        "(`devkit/families.py`: SD1.5, SD2.x v-prediction, SDXL, Playground v2.5 with EDM sigma_data 0.5 and its "
        "per-channel latent format, SD3.5 MMDiT, Flux.1 dev with its guidance embedding, Wan 2.1 with 5-D video "
        "latents, Cosmos-Predict2 text-to-image on Wan latents, Chroma, Lumina 2, Qwen-Image on Wan latents, "
        "Qwen-Image Edit and Flux.1 Kontext with a reference latent (ComfyUI's ReferenceLatent node), LTXV with "
        "128-channel 5-D latents, HunyuanVideo), each with its own model_sampling, latent format and conditioning inputs; euler, 4 steps. "
        "Classifier guidance there uses a tiny noise-aware classifier made for the family's latent channels, "
        "format and input scaling; CLIP guidance a tiny random open_clip model through Load CLIP Classifier "
        "with decode `linear` (the family's own latent_rgb_factors; on 5-D latents frame by frame, logits "
        "averaged over the frames); the trainer row runs Train Classifier (4 steps, 8 images, ComfyUI's VAE "
        "class at tiny width with the family's latent channels, on Wan 2.1 latents a real Wan 2.1 VAE "
        "(comfy.ldm.wan.vae.WanVAE, each image encoded alone as one frame); the latent cache must equal the family's "
        "`latent_format.process_in` of the VAE latents; on 5-D families an image is one frame, the cache "
        "holds it as [B, C, H, W]) and guides with the result; on 5-D families the guided latent is the "
        "family's own (a video of 2-3 frames is refused when sampling starts, a one-frame image is guided). "
        "Exactness of classifier "
        "guidance under every family's model_sampling (the analytic Gaussian mixture, guided D = E[x0 | x, y] "
        "at every step) is `tests/test_family_exactness.py`.",
        "",
        "Samplers run with the `normal` scheduler, schedulers with `euler`. Note: KSampler drops the "
        "penultimate sigma for dpm_2, dpm_2_ancestral, uni_pc and uni_pc_bh2 (SamplerCustomAdvanced does not), "
        "so the two routes' references differ there; each route is compared with ComfyUI on the same route.",
        "",
    ]
    return "\n".join(lines) + "\n" + text
