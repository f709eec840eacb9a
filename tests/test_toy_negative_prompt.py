"""The toy world's negative prompt at cfg 1 (bench/toy/negative_prompt.py, issue 21): the BENCHMARKS section is the
stored results file, with its rows counted and its reading true of those numbers."""

import json
import os

import pytest

from devkit import comfy_host as H

pytestmark = pytest.mark.core

RESULTS = os.path.join(H.ROOT, "docs", "toy_nag_fashion_diffusion_distilled.json")


def test_section_is_the_results_file_and_its_reading_holds():
    from bench.toy import negative_prompt as NP

    with open(RESULTS) as f:
        results = json.load(f)
    assert results["_config"]["n"] == 1000 and {p.name for p in NP.POINTS} <= set(results)
    with open(os.path.join(H.ROOT, "docs", "BENCHMARKS.md")) as f:
        text = f.read()
    start, end = (
        "<!-- bench:toy-nag-fashion_diffusion_distilled -->",
        "<!-- /bench:toy-nag-fashion_diffusion_distilled -->",
    )
    assert NP.table(results).strip() in text[text.index(start) : text.index(end)]
    rows = {k: v["rows_per_step"] for k, v in results.items() if k != "_config"}
    assert all(rows[p.name] == (2.0 if p.cfg > 1 else 1.0) for p in NP.POINTS)  # NAG paper form: no extra row
    base, nag = results["unguided"], results["nag_paper_w4_a0.25"]
    assert nag["rate"] + 2 * nag["rate_se"] < base["rate"] - 2 * base["rate_se"]  # "the rate falls"
    assert nag["fd_rest"] < results["cfg_2"]["fd_rest"]  # "CFG ... moves that FD" further
