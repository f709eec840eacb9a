"""The compatibility matrices of docs/COMPATIBILITY.md, as real runs inside ComfyUI (devkit/comfy_host.py):
Guidance Lab's CFG Patch (stock KSampler) and CFG Guider (SamplerCustomAdvanced) with every sampler and
scheduler, ComfyUI's own guidance nodes and conditioning features, on ComfyUI's UNet at tiny width (eps);
and every model family of devkit/families.py (CFG Patch, CFG Guider, classifier guidance through both nodes,
CLIP guidance with the family's linear latent->RGB map, Train Classifier on the family's latent format).

One function per area returns rows {area, item, check, route, status, detail, value}; status is
- exact: the output equals ComfyUI's own result (value = max abs difference, below TOL);
- finite: it runs and the output is finite (value = max abs difference from plain CFG: how much the
  setting changed the result);
- refused: a GuidanceConfigError before the first model call (detail = its text);
- limitation: the combination cannot take effect (detail = why);
- FAIL: anything else (another exception, NaN/inf, a difference, a refusal after sampling started).

The measuring core (measure, row, the tiny models, the routes) is devkit/compat_measure.py; the rows by theme are
devkit/compat_rows_sampling.py (samplers, schedulers, which step a call is in), compat_rows_nodes.py (ComfyUI's
guidance nodes and guiders, chains, model terms, conditioning, attention chains with SAG), compat_rows_families.py
(every model family: settings, classifier / CLIP guidance, Train Classifier, NAG, TPG/STG, reshapers) and
compat_rows_forms.py (model sampling forms). This module builds all_rows() from them, reads the document's rows, and
re-exports the names tests and scripts import from it.

`scripts/compat_matrix.py` writes the running ComfyUI version's section of the doc (layout: devkit/compat_doc.py)
from all_rows() or all_rows(quick=True); `tests/test_compat_matrix_quick.py` runs all_rows(quick=True) and compares it
with that version's section. Nodes run as the running ComfyUI declares them (node_inputs_of_this_comfyui). Every run is made as ComfyUI runs a prompt (under
torch.inference_mode), on one CPU thread (see cpu_settings).
"""

from __future__ import annotations

import contextlib

import torch

from . import comfy_host as H
from .compat_doc import (
    AREAS,
    CONDITIONING,
    FAMILIES,
    NODES,
    SAMPLERS,
    SCHEDULERS,
    STATUSES,
    TOL,
    render_section,
    replace_section,
    versions,
)
from .compat_measure import cpu_settings, float64  # noqa: F401
from .compat_rows_families import (
    comfy_ltxv_stg,
    family_rows,
    ltxav_block_rule,
    nag_rows,  # noqa: F401
    perturbation_kind_rows,
    reshaper_rows,
)
from .compat_rows_forms import sampling_form_rows
from .compat_rows_nodes import (
    NODE_INPUTS,
    SDXL_MIDDLE_DEPTH,
    attention_chain_rows,
    chain_rows,  # noqa: F401
    comfy_pag_with_sag_row,
    conditioning_rows,
    guidance_node_rows,
    middle_block_unets,
    model_term_rows,
    pag_term,
    pag_then_sag,
    reference_pag,
    sag,
)
from .compat_rows_sampling import sampler_rows, scheduler_rows, step_rows

ROUNDING_BAND = 10  # see mismatches(): how far past TOL a rounding-decided row's difference may move between runs


def all_rows(quick: bool = False) -> list:
    with cpu_settings(), node_inputs_of_this_comfyui():
        return (
            sampler_rows(quick)
            + scheduler_rows(quick)
            + guidance_node_rows()
            + chain_rows()
            + model_term_rows()
            + conditioning_rows()
            + family_rows(quick)
            + nag_rows()
            + perturbation_kind_rows()
            + reshaper_rows()
            + sampling_form_rows()
            + attention_chain_rows()
            + step_rows()
        )


def inputs_this_comfyui_lacks() -> dict:
    """{node_id: [input names]} of NODE_INPUTS that this ComfyUI's node does not declare. ComfyUI 0.3.52's
    DifferentialDiffusion has no `strength` (later versions added it, default 1.0 = 0.3.52's behaviour)."""
    lacks = {}
    for node_id, inputs in NODE_INPUTS.items():
        if node_id not in H.boot().NODE_CLASS_MAPPINGS:
            continue  # a missing node: the matrix's own row says so
        missing = set(inputs) - H.declared_inputs(node_id)
        if missing:
            lacks[node_id] = sorted(missing)
    return lacks


@contextlib.contextmanager
def node_inputs_of_this_comfyui():
    """NODE_INPUTS without the inputs this ComfyUI's nodes lack (the node as this version has it: its rows still
    run, never skipped); restored afterwards."""
    saved = {k: dict(v) for k, v in NODE_INPUTS.items()}
    for node_id, names in inputs_this_comfyui_lacks().items():
        NODE_INPUTS[node_id] = {k: v for k, v in NODE_INPUTS[node_id].items() if k not in names}
    try:
        yield
    finally:
        NODE_INPUTS.clear()
        NODE_INPUTS.update(saved)


# ------------------------------------------------------------------ the document (layout: devkit/compat_doc.py)
def comfyui_version() -> str:
    H.boot()
    import comfyui_version as v

    return v.__version__


def torch_version() -> str:
    return torch.__version__.split("+")[0]


def parse(text: str, version: str | None = None) -> list:
    """The rows of the section of ComfyUI `version` (default: the one running) in a rendered document."""
    from . import compat_doc

    return compat_doc.parse(text, version or comfyui_version())


def key_of(r: dict) -> tuple:
    return r["area"], r["item"], r["check"], r["route"]


def mismatches(rows: list, doc_rows: list) -> list:
    """Where `rows` disagree with the document: a missing row, another status, or another text of a refusal /
    limitation (measured numbers are not compared: they may differ in the last bits between machines). A row whose
    status is its measured difference against TOL (`rounding`: float32 rounding of two operation orders, e.g. at
    EDM's sigma 80) may read exact in one run and finite in the next while that difference stays within
    ROUNDING_BAND x TOL: the value moves with what ran before it in the process (measured: 5.9e-6 to 1.3e-5 on the
    same machine), so that flip is a measured number too; a difference beyond the band is a mismatch."""
    doc = {key_of(r): r for r in doc_rows}
    out = []
    for r in rows:
        d = doc.get(key_of(r))
        if d is None:
            out.append(f"not in the document: {key_of(r)}")
        elif (
            r.get("rounding") and {d["status"], r["status"]} == {"exact", "finite"} and r["value"] < ROUNDING_BAND * TOL
        ):
            continue
        elif d["status"] != r["status"]:
            out.append(f"{key_of(r)}: document says {d['status']}, the run gives {r['status']} ({r['detail']})")
        elif r["status"] in ("refused", "limitation") and d["detail"] != r["detail"]:
            out.append(f"{key_of(r)}: document says {d['detail']!r}, the run gives {r['detail']!r}")
    return out
