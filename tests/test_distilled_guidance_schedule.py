"""Distilled Guidance Schedule (nodes/distilled.py): the guidance value of a guidance-distilled model per step. A
constant schedule is bit for bit ComfyUI's FluxGuidance; a schedule changes the value the model reads at each step
(recorded on the real forwards); a model without a guidance input is refused before sampling."""

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import custom_sample, ksample, our_guider, schedule

pytestmark = pytest.mark.comfy

FLUX = "Flux.1 dev (guidance-distilled)"


def errors():
    return H.pack_module("guidance_core.errors")


def flux_guidance(cond, g):
    return H.run_node("FluxGuidance", conditioning=cond, guidance=g)[0]


def distilled(model, g, sched=None):
    return H.run_node("GuidanceLabDistilledGuidance", model=model, guidance=g, schedule=sched)[0]


@pytest.fixture(scope="module")
def flux():
    return F.model(FLUX), F.FAMILIES[FLUX]


def seen_guidance(model, run):
    """The guidance values (one per call, rows agreeing) the diffusion model received."""
    seen = []

    def hook(module, args, kwargs):
        g = kwargs.get("guidance")
        seen.append(sorted(set(g.float().tolist())))

    handle = model.model.diffusion_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = run()
    finally:
        handle.remove()
    return out, seen


@pytest.mark.parametrize("g", [3.5, 1.25, 6.0])
def test_constant_schedule_is_flux_guidance(flux, g):
    model, fam = flux
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    want = ksample(model, 1.0, steps=4, pos=flux_guidance(pos, g), neg=neg, latent=lat)
    got = ksample(distilled(model, g), 1.0, steps=4, pos=pos, neg=neg, latent=lat)
    assert torch.equal(got, want)
    assert torch.equal(
        ksample(distilled(model, g, schedule(kind="constant", start=1.0)), 1.0, steps=4, pos=pos, neg=neg, latent=lat),
        want,
    )
    # the value set here wins over the conditioning's (every prompt reads it), with a real guider too
    other = ksample(distilled(model, g), 1.0, steps=4, pos=flux_guidance(pos, g + 2.0), neg=neg, latent=lat)
    assert torch.equal(other, want)
    assert not torch.equal(want, ksample(model, 1.0, steps=4, pos=flux_guidance(pos, g + 2.0), neg=neg, latent=lat))


def test_a_linear_schedule_reaches_the_model_per_step(flux):
    model, fam = flux
    pos, neg, lat = fam.cond(1), fam.cond(2), fam.latent(1)
    sched = schedule(kind="linear", axis="progress", start=1.0, end=0.0)
    m = distilled(model, 4.0, sched)
    steps = 5
    _, seen = seen_guidance(model, lambda: ksample(m, 1.0, steps=steps, pos=pos, neg=neg, latent=lat))
    want = [[4.0 * (1 - i / (steps - 1))] for i in range(steps)]
    assert len(seen) == steps and all(abs(a[0] - b[0]) < 1e-6 and len(a) == 1 for a, b in zip(seen, want))
    # heun: both calls of a step read that step's value (whole steps)
    _, seen = seen_guidance(model, lambda: ksample(m, 1.0, sampler="heun", steps=3, pos=pos, neg=neg, latent=lat))
    assert [v[0] for v in seen] == pytest.approx([4.0, 4.0, 2.0, 2.0, 0.0])
    # with the CFG Guider at cfg 2: both rows of a call read the same value
    _, seen = seen_guidance(
        model, lambda: custom_sample(m, our_guider(m, 2.0, positive=pos, negative=neg), steps=3, latent=lat)
    )
    assert [v for v in seen] == [[4.0], [2.0], [0.0]]


def test_models_without_a_guidance_input_are_refused_before_sampling():
    E = errors().GuidanceConfigError
    for family in ("SD1.5", "SD3.5 (MMDiT, flow)", "Wan 2.1 (video, 5-D)"):
        model = F.model(family)
        with pytest.raises(E, match="no distilled-guidance input"):
            distilled(model, 3.5)
    with pytest.raises(E, match="guidance=nan"):
        distilled(F.model(FLUX), float("nan"))
