"""Which step a model call is in: one definition (schedules.StepCounter) for every sampler, so that adaptive
stops, APG momentum, the classifier's every_n and progress schedules act on whole steps of multi-stage samplers
(heun's corrector at sigma_{i+1} is in step i), and on runs whose sigmas increase (FlipSigmas, inversion).

The reference of a call's step is the sampler's own loop: the index i of the k-diffusion sampler function on the
call stack (uni_pc, whose loop evaluates the next step's point, by the run sigma the call is at)."""

import pytest
import torch

from devkit import comfy_host as H
from devkit.cfg_helpers import custom_sample, ksample, our_guider, patch, post, schedule
from devkit.sampler_steps import mixed_steps, rows_by_step, sampler_step
from guidance_core import schedules as S

pytestmark = pytest.mark.comfy

SAMPLERS = ["heun", "dpm_2", "dpmpp_2s_ancestral", "dpmpp_3m_sde", "uni_pc"]
STEPS = 5


MODEL_KINDS = ("eps", "flow")  # the tiny models of the `models` fixture (tests/conftest.py)


def guided_steps(by_step: dict, guided_rows: int = 2) -> list:
    """The steps whose calls are guided, after checking that each step's calls are all guided or all not."""
    assert not mixed_steps(by_step), f"steps {mixed_steps(by_step)} mix guided and unguided calls: {by_step}"
    return sorted(s for s, rows in by_step.items() if rows[0] == guided_rows)


def flipped(model, steps=STEPS):
    sig = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=steps, denoise=1.0)[0]
    return H.run_node("FlipSigmas", sigmas=sig)[0]


# ---------------------------------------------------------------- the rule, on the call sequences samplers make
@pytest.mark.parametrize(
    "sampler, calls, steps",
    [
        ("euler", [8, 4, 2, 1], [0, 1, 2, 3]),
        ("heun", [8, 4, 4, 2, 2, 1, 1], [0, 0, 1, 1, 2, 2, 3]),  # corrector at sigma_{i+1} is in step i
        ("dpm_2", [8, 5.6, 4, 2.8, 2, 1.4, 1], [0, 0, 1, 1, 2, 2, 3]),  # midpoints
        ("dpmpp_2s_ancestral", [8, 4 * (1 - 1e-7), 4, 2 * (1 + 1e-7), 2, 1], [0, 0, 1, 1, 2, 2]),  # eta 1: ~sigma_{i+1}
        ("dpmpp_2s_ancestral", [8, 5, 4, 2.5, 2, 1], [0, 0, 1, 1, 2, 2]),  # eta < 1: a midpoint
        ("heunpp2", [8, 4, 2, 4, 2, 1, 2, 1, 1], [0, 0, 0, 1, 1, 1, 2, 2, 3]),
        ("sa_solver_pece", [8, 8, 4, 4, 2, 2, 1], [0, 0, 1, 1, 2, 2, 3]),  # corrector at the same sigma
        ("euler", [8, 4, 2, 1, 8, 4], [0, 1, 2, 3, 0, 1]),  # a second run of the same sigmas
        ("heun", [8, 4, 4, 2, 8, 4, 4], [0, 0, 1, 1, 0, 0, 1]),  # after an interrupted run
    ],
)
def test_step_counter_on_sampler_call_sequences(sampler, calls, steps):
    counter = S.StepCounter(sampler)
    assert [counter.step_of(float(s), [8.0, 4.0, 2.0, 1.0, 0.0]) for s in calls] == steps


def test_step_counter_on_increasing_sigmas():
    sig = [0.0001, 1.0, 2.0, 4.0]
    euler, heun = S.StepCounter("euler"), S.StepCounter("heun")
    assert [euler.step_of(s, sig) for s in sig[:-1]] == [0, 1, 2]
    assert [heun.step_of(s, sig) for s in (0.0001, 1.0, 1.0, 2.0, 2.0)] == [0, 0, 1, 1, 2]
    assert S.step_values(S.Schedule(kind="linear", start=7.0, end=1.0), sig) == [7.0, 4.0, 1.0]


def test_stateless_progress_is_the_reached_step():
    sig = [4.0, 2.0, 1.0, 0.0]
    assert [S.reached_step(s, sig) for s in (4.0, 3.0, 2.0, 1.5, 1.0, 0.5)] == [0, 0, 1, 1, 2, 2]
    lin = S.Schedule(kind="linear", start=1.0, end=0.0)
    assert S.value(lin, 3.0, sig) == 1.0 and S.value(lin, 3.0, sig, step=1) == 0.5


# ---------------------------------------------------------------- whole steps on multi-stage samplers
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_adaptive_stop_keeps_whole_steps(models, sampler):
    """Adaptive guidance whose criterion holds at once (threshold -1) guides step 0, all of its calls, and no
    call after it, through KSampler + CFG Patch and through the guider."""
    m = models["eps"]
    sched = schedule(kind="adaptive", threshold=-1.0)
    by_step = rows_by_step(m, lambda: ksample(patch(m, cfg_schedule=sched), 5.0, sampler=sampler, steps=STEPS))
    assert sorted(by_step) == list(range(STEPS)) and guided_steps(by_step) == [0]
    by_step = rows_by_step(
        m, lambda: custom_sample(m, our_guider(m, 5.0, cfg_schedule=sched), sampler=sampler, steps=STEPS)
    )
    assert guided_steps(by_step) == [0]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_progress_schedule_keeps_whole_steps(models, sampler):
    """A keyframes schedule on the progress axis that is 1 up to p = 0.25 and 0 from p = 0.26: of 5 steps
    (p = 0, 0.25, 0.5, 0.75, 1) steps 0 and 1 are guided, every call of them, and no call of the others."""
    m = models["eps"]
    sched = schedule(kind="keyframes", keyframes="0:1, 0.25:1, 0.26:0, 1:0")
    by_step = rows_by_step(m, lambda: ksample(patch(m, cfg_schedule=sched), 5.0, sampler=sampler, steps=STEPS))
    assert guided_steps(by_step) == [0, 1]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_apg_momentum_is_per_step(models, sampler):
    """Every call of step i reads the momentum committed by step i - 1 and commits step i's: the step the
    combiner keys the momentum by is the sampler's own step, for every call."""
    m = models["eps"]
    sig = H.run_node("BasicScheduler", model=m, scheduler="normal", steps=STEPS, denoise=1.0)[0]
    g = our_guider(m, 5.0, post=post(apg=True, apg_momentum=-0.5, apg_norm_threshold=0.0))
    comb = g.runtime.combiner
    seen = []
    combine = comb.combine

    def recording(plan, preds, x, sigma, alpha, level=None, *rest):
        seen.append((sampler_step(float(sigma.max()), sig), level))
        return combine(plan, preds, x, sigma, alpha, level, *rest)

    comb.combine = recording
    try:
        out = custom_sample(m, g, sampler=sampler, sigmas=sig)
    finally:
        del comb.combine
    assert torch.isfinite(out).all()
    assert [level for _, level in seen] == [step for step, _ in seen], seen
    assert comb.momentum_levels() == list(range(STEPS))


@pytest.fixture(scope="module")
def gmm():
    demo = H.demo_module()
    gmm_mod = H.pack_module("guidance_core.reference.gmm")
    nodes_mod = H.pack_module("nodes.classifier_nodes")
    means = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    priors = torch.tensor([0.5, 0.3, 0.2])
    model = demo.gmm_model(means, 0.3, priors, "eps", None)
    net = gmm_mod.GMMClassifier(gmm_mod.GaussianMixture(means, 0.3, priors), "eps")
    meta = {"labels": ["a", "b", "c"], "latent_channels": 4, "parameterization": "eps"}
    return model, net, nodes_mod.LoadedClassifier(net, meta, "exact-gmm")


def classifier_steps(gmm, sampler, route) -> dict:
    """{step: [2 where the classifier ran in that call, else 1]} of a run with every_n = 2, through KSampler +
    Classifier Guidance (route "patch") or SamplerCustomAdvanced with the Classifier Guidance Sampler."""
    model, net, clf = gmm
    calls = []  # [step, 2 if the classifier ran in the call else 1], the classifier's hook running after `record`
    handle = net.register_forward_pre_hook(lambda module, args: calls[-1].__setitem__(1, 2))

    def record(args):
        opts = args["model_options"]["transformer_options"]
        calls.append([sampler_step(float(args["sigma"].max()), opts["sample_sigmas"]), 1])
        return args["denoised"]

    m = model.clone()
    m.set_model_sampler_post_cfg_function(record)
    guide = dict(
        classifier=clf, target="b", scale=1.0, sigma_lo=0.0, sigma_hi=1.0e4, every_n=2, rms_clamp=0.0, dtype="float32"
    )
    empty = [[torch.zeros(1, 1, 3), {}]]
    latent = {"samples": torch.zeros(1, 4, 4, 4)}
    try:
        with torch.inference_mode():
            if route == "patch":
                m = H.run_node("GuidanceLabClassifierGuidance", model=m, **guide)[0]
                H.run_node(
                    "KSampler",
                    model=m,
                    seed=3,
                    steps=STEPS,
                    cfg=1.0,
                    sampler_name=sampler,
                    scheduler="normal",
                    positive=empty,
                    negative=empty,
                    latent_image=latent,
                    denoise=1.0,
                )
            else:  # the sampler adds the classifier's hook after the model's own post-CFG functions
                wrapped = H.run_node(
                    "GuidanceLabClassifierSampler",
                    model=model,
                    **guide,
                    sampler=H.run_node("KSamplerSelect", sampler_name=sampler)[0],
                )[0]
                custom_sample(
                    m,
                    H.run_node("CFGGuider", model=m, positive=empty, negative=empty, cfg=1.0)[0],
                    sampler=wrapped,
                    steps=STEPS,
                    latent=latent,
                )
    finally:
        handle.remove()
    by_step = {}
    for step, rows in calls:
        by_step.setdefault(step, []).append(rows)
    return by_step


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_classifier_every_n_keeps_whole_steps(gmm, sampler):
    """every_n = 2 guides steps 0, 2, 4, every call of them (the classifier runs) and no call of steps 1 and 3,
    through KSampler + Classifier Guidance."""
    by_step = classifier_steps(gmm, sampler, "patch")
    assert sorted(by_step) == list(range(STEPS)) and guided_steps(by_step) == [0, 2, 4]


def test_classifier_sampler_every_n_keeps_heuns_steps(gmm):
    """The same through SamplerCustomAdvanced with the Classifier Guidance Sampler wrapping heun."""
    assert guided_steps(classifier_steps(gmm, "heun", "sampler")) == [0, 2, 4]


# ---------------------------------------------------------------- increasing sigmas (FlipSigmas, inversion)
def test_flipped_sigmas_progress_schedule_moves(models):
    """A linear progress schedule 7 -> 1 of the guidance strength on FlipSigmas' run: this step's scale
    s' = 1 + f (cfg 2), what post-CFG hooks see, goes 8, 6.5, 5, 3.5, 2."""
    m = models["eps"].clone()
    scales = []
    m.set_model_sampler_post_cfg_function(lambda a: (scales.append(float(a["cond_scale"])), a["denoised"])[1])
    g = our_guider(m, 2.0, cfg_schedule=schedule(kind="linear", start=7.0, end=1.0))
    out = custom_sample(m, g, sigmas=flipped(m))
    assert torch.isfinite(out).all()
    assert scales == pytest.approx([8.0, 6.5, 5.0, 3.5, 2.0])


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_flipped_sigmas_adaptive_stop_and_apg_momentum(models, sampler):
    """On FlipSigmas' run an adaptive stop takes effect after step 0 (as on the descending run), and the APG
    momentum holds one committed value per step."""
    m = models["eps"]
    sched = schedule(kind="adaptive", threshold=-1.0)
    by_step = rows_by_step(
        m, lambda: custom_sample(m, our_guider(m, 5.0, cfg_schedule=sched), sampler=sampler, sigmas=flipped(m))
    )
    assert sorted(by_step) == list(range(STEPS)) and guided_steps(by_step) == [0]
    g = our_guider(m, 5.0, post=post(apg=True, apg_momentum=-0.5, apg_norm_threshold=0.0))
    assert torch.isfinite(custom_sample(m, g, sampler=sampler, sigmas=flipped(m))).all()
    assert g.runtime.combiner.momentum_levels() == list(range(STEPS))
