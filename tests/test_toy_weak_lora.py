"""The toy world's weak model as a LoRA of the shipped model (issue 22, must-show 4): the shipped LoRA file, its
loading through ComfyUI's LoRA loader as a clone sharing the shipped model's network, the fidelity its metadata
records (recomputed here with ComfyUI's own patch arithmetic), autoguidance with it through ComfyUI's sampler, and
the stored comparison table of docs/BENCHMARKS.md against its results file."""

import json
import logging
import os

import pytest

from devkit import comfy_host as H

LORA = os.path.join(H.ROOT, "bench", "toy", "weights", "fashion_weak_lora.safetensors")
RESULTS = os.path.join(H.ROOT, "docs", "toy_weak_lora.json")
STORED = os.path.join(H.ROOT, "docs", "toy_tradeoff.json")
HAS_DATA = os.path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def _meta():
    from safetensors import safe_open

    with safe_open(LORA, framework="pt") as f:
        return f.metadata() or {}


@pytest.mark.core
def test_weak_lora_file_fits_2mb_and_records_its_command():
    from bench.toy import make_weak_lora as W

    assert os.path.getsize(LORA) <= W.MAX_BYTES <= 2 * 1024 * 1024
    meta = _meta()
    assert meta["command"].startswith("python -m bench.toy.make_weak_lora"), meta["command"]
    assert int(meta["max_bytes"]) == W.MAX_BYTES


def _strong_and_clone(caplog):
    from safetensors.torch import load_file

    from bench.toy import tradeoff
    from bench.toy.make_weak_lora import lora_clone

    H.boot()
    strong = H.run_node("GuidanceLabToyModelLoader", toy_model=tradeoff.TOY_MODEL)[0]
    with caplog.at_level(logging.WARNING):
        clone = lora_clone(strong, load_file(LORA), 1.0)
    return strong, clone


@pytest.mark.comfy
def test_weak_lora_loads_as_a_clone_sharing_the_network_and_matches_its_recorded_fidelity(caplog):
    import torch

    from bench.toy import make_weak_lora as W

    strong, clone = _strong_and_clone(caplog)
    import comfy.lora  # after boot: ComfyUI on sys.path

    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert clone.model is strong.model  # a clone: one network
    sd = strong.model.state_dict()
    unet = [k for k in sd if k.startswith(W.PREFIX)]
    assert set(clone.patches) == set(unet)  # the whole difference: every weight of the network is patched
    weak = W.read_unet(W.WEAK)
    patched = {k: comfy.lora.calculate_weight(clone.patches[k], sd[k].clone().float(), k) for k in unet}
    err = sum(float((patched[k] - weak[k]).double().square().sum()) for k in unet) ** 0.5
    dif = sum(float((weak[k] - sd[k].float()).double().square().sum()) for k in unet) ** 0.5
    recorded = json.loads(_meta()["fidelity"])["weights"]["rel_to_difference"]
    assert abs(err / dif - recorded) <= 1e-3 * recorded, (err / dif, recorded)
    assert torch.isfinite(torch.tensor(err))


@pytest.mark.comfy
def test_autoguidance_with_the_lora_follows_the_separate_weak_model(caplog):
    """Same seed, few steps: the LoRA term's samples are far nearer the separate weak model's than either is to the
    unguided samples (the guidance the term adds is the weak model's)."""
    from bench.toy import tradeoff

    world = tradeoff.World()
    x = {}
    for name, p in (
        ("unguided", tradeoff.Point("u", "cfg", steps=6)),
        ("weak", tradeoff.Point("a", "autoguidance", auto=1, steps=6)),
        ("lora", tradeoff.Point("l", "autoguidance_lora", auto=1, auto_lora=True, steps=6)),
    ):
        x[name] = world.sample(p, world.labels[1], 2, seed=3)[0]
    gap = (x["lora"] - x["weak"]).abs().mean()
    effect = (x["weak"] - x["unguided"]).abs().mean()
    assert gap < 0.2 * effect, (float(gap), float(effect))
    assert world.weak_lora().model is world.model.model


@pytest.mark.core
@pytest.mark.skipif(not os.path.exists(RESULTS), reason="docs/toy_weak_lora.json not written yet")
def test_stored_comparison_table_holds_the_results_numbers():
    from bench.toy import weak_lora_report as R

    with open(RESULTS) as f:
        res = json.load(f)
    with open(STORED) as f:
        stored = json.load(f)
    with open(os.path.join(H.ROOT, "docs", "BENCHMARKS.md")) as f:
        text = f.read()
    start, end = f"<!-- bench:{R.SECTION} -->", f"<!-- /bench:{R.SECTION} -->"
    section = text[text.index(start) : text.index(end)]
    assert res["pairs"] and res["lora"]["bytes"] == os.path.getsize(LORA)
    assert f"{res['lora']['bytes']:,} bytes" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and " | " in line]
    for p in res["pairs"]:
        stored_sep = {m: stored[p["separate_point"]][m] for m in R.METRICS}
        if p["separate_source"] == "re-run":
            assert p["stored_separate"] == stored_sep
        else:
            assert p["separate"] == stored_sep
        for m in R.METRICS:
            assert p["delta"][m] == pytest.approx(p["lora"][m] - p["separate"][m])
            assert p["within_noise"][m] == (abs(p["delta"][m]) <= 2 * 2**0.5 * p["sigma"][m])
            kind = "re-run" if p["separate_source"] == "re-run" else "stored"
            cells = [
                R.fmt(m, stored_sep[m]),
                f"{R.fmt(m, p['separate'][m])} ({kind})",
                R.fmt(m, p["lora"][m]),
                f"{p['delta'][m]:+.3f}",
                f"{p['sigma'][m]:.3f}",
                "yes" if p["within_noise"][m] else "**no**",
            ]
            prefix = f"| {1 + p['weight']:g} ({p['weight']:g}) | {m} | "
            assert prefix + " | ".join(cells) + " |" in rows, (prefix, cells)
    for r in res["lora"]["fidelity"]["eps"]:
        assert f"| {r['sigma']:g} | {r['rel_to_difference']:.3f} | {r['rel_to_weak']:.4f} |" in rows
