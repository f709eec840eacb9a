"""A model term whose MODEL shares its network with the sampled model (a clone with other weight patches: the same
checkpoint with another LoRA, without the LoRA, at another strength, or a LoRA applied downstream of the CFG Patch)
runs its own weights on its rows and the sampled model's on theirs: equal to the same weights placed in separate model
objects, through the stock KSampler (CFG Patch) and SamplerCustomAdvanced (CFG Guider), in this process and in fresh
ones (ComfyUI's load order of two clones comes from iterating a set and changes from process to process)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from devkit import ROOT
from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import custom_sample, ksample, our_guider, patch
from devkit.lora import lora_state_dict, with_lora

pytestmark = pytest.mark.comfy

TOL = dict(rtol=0, atol=1e-5)
SD35 = "SD3.5 (MMDiT, flow)"


def model_term(model, weight=1.5, **kw):
    return H.run_node("GuidanceLabModelTerm", model=model, weight=weight, **kw)[0]


class World:
    """A tiny model family: build() gives a new network with the same weights each time; cond/latent for it."""

    def __init__(self, name):
        self.name = name
        if name == "unet":
            self.build = lambda: H.tiny_model("eps", seed=4)
            self.pos, self.neg, self.latent = H.cond(1), H.cond(2), None
        else:
            fam = F.FAMILIES[name]
            self.build, self.latent = fam.build, fam.latent()
            self.pos, self.neg = fam.cond(1), fam.cond(2)
        self.lora = lora_state_dict(self.build())

    def ksample(self, model, cfg=3.0):
        return ksample(model, cfg, steps=4, pos=self.pos, neg=self.neg, latent=self.latent)

    def guided(self, model, terms, cfg=3.0):
        return custom_sample(
            model,
            our_guider(model, cfg, positive=self.pos, negative=self.neg, terms=terms),
            steps=4,
            latent=self.latent,
        )


# sampled model and term model, each a function of (network, world): the network given is shared by both sides
CASES = {
    "term = sampled + LoRA": (lambda net, w: net, lambda net, w: with_lora(net, w.lora, 1.0)),
    "term = sampled - its LoRA": (lambda net, w: with_lora(net, w.lora, 1.0), lambda net, w: net),
    "term = another strength": (lambda net, w: with_lora(net, w.lora, 1.0), lambda net, w: with_lora(net, w.lora, 0.3)),
}


@pytest.fixture(scope="module", params=["unet", SD35])
def world(request):
    H.boot()
    return World(request.param)


@pytest.mark.parametrize("case", list(CASES))
def test_lora_clone_term_equals_separate_models(world, case):
    make_sampled, make_term = CASES[case]
    net = world.build()
    sampled, term = make_sampled(net, world), make_term(net, world)
    separate_term = make_term(world.build(), world)  # the same weights on a network of its own
    want_k = world.ksample(patch(make_sampled(world.build(), world), terms=model_term(separate_term)))
    want_g = world.guided(make_sampled(world.build(), world), model_term(separate_term))
    plain = world.ksample(sampled)
    assert float((want_k - plain).abs().max()) > 1e-3, "the term has no effect: the comparison would mean nothing"
    for _ in range(2):  # and again: the network left as ComfyUI leaves it after a run
        torch.testing.assert_close(world.ksample(patch(sampled, terms=model_term(term))), want_k, **TOL)
        torch.testing.assert_close(world.guided(sampled, model_term(term)), want_g, **TOL)
    torch.testing.assert_close(world.ksample(sampled), plain, rtol=0, atol=0)  # the sampled model's weights are back


def test_lora_downstream_of_the_patch_keeps_the_term(world):
    """CFG Patch (model term = the checkpoint) -> LoRA -> KSampler: the term is the checkpoint without the LoRA, not
    the sampled model itself (it was dropped: 1 row per step, the unguided LoRA model's output)."""
    net = world.build()
    sampled = with_lora(patch(net, terms=model_term(net)), world.lora)
    want = world.ksample(with_lora(patch(net, terms=model_term(world.build())), world.lora))
    plain = world.ksample(with_lora(net, world.lora))
    assert float((want - plain).abs().max()) > 1e-3
    torch.testing.assert_close(world.ksample(sampled), want, **TOL)


FRESH = r"""
import json, torch
from devkit import comfy_host as H
from devkit.cfg_helpers import ksample, patch
from devkit.lora import lora_state_dict, with_lora
H.boot()
net = H.tiny_model("eps", seed=4)
term = H.run_node("GuidanceLabModelTerm", model=with_lora(net, lora_state_dict(net)), weight=1.5)[0]
sep = H.run_node("GuidanceLabModelTerm", model=with_lora(H.tiny_model("eps", seed=4), lora_state_dict(net)), weight=1.5)[0]
out = ksample(patch(net, terms=term), 3.0, steps=4)
ref = ksample(patch(H.tiny_model("eps", seed=4), terms=sep), 3.0, steps=4)
print(json.dumps({"diff": float((out - ref).abs().max()), "sum": float(out.double().sum())}))
"""


def test_fresh_processes_give_the_same_result():
    """Two processes with different hash seeds (ComfyUI's set of models to load iterates in another order)."""
    results = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", FRESH], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )  # -c: the repository root (cwd) on sys.path
        assert run.returncode == 0, run.stderr[-3000:]
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    assert all(r["diff"] <= 1e-5 for r in results), results
    assert len({r["sum"] for r in results}) == 1, results
