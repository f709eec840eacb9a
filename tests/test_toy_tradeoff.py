"""The toy tradeoff benchmark (bench/toy/tradeoff.py): its metrics against closed forms, and its
quick mode (N = 64, 10 steps) through ComfyUI's sampler with the pack's nodes, checking the
direction of each effect the papers report."""

import os

import pytest
import torch

from devkit import comfy_host as H

TOY = os.path.join(H.ROOT, "bench", "toy")
from bench.toy import metrics as M

HAS_DATA = os.path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.core
def test_frechet_distance_matches_the_gaussian_closed_form():
    g = torch.Generator().manual_seed(0)
    d, n = 4, 200_000
    a = torch.randn(n, d, generator=g)
    m = torch.tensor([1.0, -2.0, 0.5, 0.0])
    b = m + 2.0 * torch.randn(n, d, generator=g)
    # N(0, I) vs N(m, 4I): |m|^2 + tr(I + 4I - 2*(4I)^1/2) = |m|^2 + d
    exact = float(m.square().sum()) + d
    assert abs(M.frechet_distance(a, b) - exact) < 0.03 * exact
    assert abs(M.frechet_distance(a, a)) < 1e-6


@pytest.mark.core
def test_precision_recall_of_identical_disjoint_and_collapsed_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 8, generator=g)
    assert M.precision_recall(real, real.clone()) == (1.0, 1.0)
    assert M.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # mode collapse: all fakes near one real point -> inside the real manifold, but cover little of it
    collapsed = real[:1] + 0.01 * torch.randn(500, 8, generator=g)
    p, r = M.precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.05


@pytest.mark.comfy
@pytest.mark.slow_sweep
@pytest.mark.skipif(not HAS_DATA, reason="apt-get install dataset-fashion-mnist (scripts/install_apt.sh)")
def test_quick_mode_shows_the_papers_directions(tmp_path):
    from bench.toy import tradeoff

    calls = {"n": 0}
    sampler_cls = H.node("SamplerCustomAdvanced")
    # the node's entry point: V3 `execute` (ComfyUI 0.3.75), V1 FUNCTION "sample" (ComfyUI 0.3.52)
    entry = "execute" if hasattr(sampler_cls, "define_schema") else sampler_cls.FUNCTION
    orig = getattr(sampler_cls, entry)

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    setattr(sampler_cls, entry, counting)
    try:
        results, directions = tradeoff.main(["--quick", "--out", str(tmp_path)])
    finally:
        setattr(sampler_cls, entry, orig)
    points = tradeoff.quick_points()
    # sampled through ComfyUI's SamplerCustomAdvanced node: one call per class per point
    assert calls["n"] == 10 * len(points)
    for p in points:
        r = results[p.name]
        assert r["n"] == 64 and r["finite"] and 0.2 < r["mean_abs"] < 1.5, r
    assert results["cls_uncond_s0"]["accuracy"] < 0.35  # unconditional, unguided: about chance (10%)
    failed = [k for k in tradeoff.QUICK_CHECKS if not directions[k]]
    assert not failed, (
        failed,
        {k: {m: results[k][m] for m in ("accuracy", "fd", "precision", "recall")} for k in results if k != "_config"},
    )
