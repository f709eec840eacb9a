"""The sampling noise of the toy world's Frechet distance: the standard deviation of FD over class-stratified
bootstrap resamples of one point's samples (the reference: the 10k test images' features), for the reports that set
two points side by side (weak_lora_report, toy_report's reshapers)."""

from __future__ import annotations


def fd_bootstrap_std(samples, labels, b: int, seed: int = 0) -> float:
    """Std of FD over b class-stratified bootstrap resamples of the samples (reference: the 10k test features)."""
    import torch

    from bench.toy import eval_classifier as E
    from bench.toy import fashion
    from bench.toy import metrics as M

    ev = E.load()
    with torch.no_grad():
        _, real = E.predict(ev, fashion.load("test")[0])
        _, feats = E.predict(ev, samples)
    g = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(labels == k).flatten() for k in range(10)]
    vals = []
    for _ in range(b):
        idx = torch.cat([c[torch.randint(0, len(c), (len(c),), generator=g)] for c in by_class])
        vals.append(M.frechet_distance(feats[idx], real))
    return float(torch.tensor(vals, dtype=torch.float64).std())
