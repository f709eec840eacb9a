"""The one CFG runtime of Guidance Lab: every guided step of the CFG GUIDER and of the MODEL patch runs
`CFGRuntime.predict`.

Both install the same wrappers on a clone of the model (`CFGRuntime.install`):
- OUTER_SAMPLE: checks the guider, resets per-run state, adds the empty prompt to the stock KSampler's
  CFGGuider and makes the runtime its predict_noise for the run (so other nodes' PREDICT_NOISE wrappers,
  e.g. LazyCache, still wrap it);
- SAMPLER_SAMPLE: CFG-Zero* zero-init, as whole steps of the sampler.

Contract with other nodes' hooks (what ComfyUI's own sampling_function would give them if the KSampler's
cfg were this step's scale s' = 1 + f (s - 1), f the schedule):
- ComfyUI's uncond slot (the second of every pair below, index 1 of `cond_or_uncond` for attention patches such as
  NAGuidance's and SAG's, the second of the [cond, uncond-or-None] pair another node's sampler_calc_cond_batch_function
  gets) holds the user's negative prompt where one is connected, else the baseline; never the empty prompt of
  three-way CFG or a term;
- pre-CFG hooks: [cond, uncond] = the real positive and uncond-slot predictions with cond_scale s'; on a step
  where the guidance term is off, ComfyUI's cfg 1 form: uncond cond None, an all-zero uncond output,
  cond_scale 1 (unless a node set disable_cfg1_optimization, e.g. the CFG++ samplers, NAGuidance: then the
  real uncond-slot prediction at cond_scale 1, as ComfyUI does);
- a plain step (one guidance term against the uncond slot, no post-processing) goes through ComfyUI's own
  cfg_function with the real pair at s' (bit-exact with native CFG at that scale);
- any other step (three-way, terms, post-processing): the combined D; a sampler_cfg_function of another
  node (the single slot, e.g. RescaleCFG) gets (cond, uncond') with uncond' + s'(cond - uncond') = D in
  float64 (at s' = 1: (D, zeros)); post-CFG hooks get denoised = that result and the real pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import comfy.model_patcher
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers

from ..guidance_core import cfg as cfg_core
from ..guidance_core import nag as nag_core
from ..guidance_core import perturbed_terms
from ..guidance_core.errors import GuidanceConfigError
from . import nag_patches, sampling_facts
from . import perturbation_patches
from . import shared_network

MARK = "guidance_lab_cfg_patch"
EMPTY_KEY = "guidance_lab_empty"
POSITIVE_KEY, NEGATIVE_KEY = "positive", "negative"  # ComfyUI's own guider keys
HOLE = "guidance_lab_no_uncond"  # an empty entry at ComfyUI's uncond slot (index 1) of a batch without the uncond
NEGATIVE_PROMPT = "negative"  # ComfyUI's prompt_type of negatives (SDXL refiner's aesthetic score reads it)


def term_key(i: int) -> str:
    return f"guidance_lab_term{i}"


@dataclass(frozen=True)
class Term(cfg_core.ExtraTerm):
    """One entry of a GUIDANCE_TERMS list: the core's term (weight, schedule, kind, reference, cap; cfg.ExtraTerm)
    with what it runs on in ComfyUI: its conditioning (None = the positive prompt; for a NAG term the negative
    prompt), for a perturbed term its Perturbation, for a model term its MODEL, for a NAG term its NAGSettings.
    The CFG config holds these terms as they are; ComfyUI objects take no part in comparing terms."""

    conditioning: Any = field(default=None, compare=False)
    perturbation: perturbed_terms.Perturbation | None = None
    model: Any = field(default=None, compare=False)
    nag: nag_core.NAGSettings | None = None


def term_conds(terms, positive) -> dict:
    """The guider cond of each term, keyed by term_key: its own conditioning, else the positive; a negative
    prompt weight tags it as ComfyUI's guiders tag negatives. A NAG term without a conditioning has no cond of its
    own (it reads the negative prompt); with one, that is its negative prompt."""
    out = {}
    for i, t in enumerate(terms):
        if t.kind == "nag":
            if t.conditioning is not None:
                out[term_key(i)] = tag_negative(t.conditioning)
            continue
        c = t.conditioning if t.conditioning is not None else positive
        out[term_key(i)] = tag_negative(c) if t.kind == "prompt" and t.weight < 0 else c
    return out


def cond_key(role: str) -> str:
    """The guider's cond key of a combiner role ("positive", "negative", "empty", "term{i}")."""
    if role == cfg_core.EMPTY:
        return EMPTY_KEY
    if role.startswith("term"):
        return term_key(int(role[4:]))
    return role


def tag_negative(conditioning):
    """Tag a CONDITIONING as a negative prompt, as ComfyUI's own guiders do (PerpNeg's empty, DualCFG's
    middle): prompt_type "negative" unless the user set one."""
    return [[c[0], {"prompt_type": NEGATIVE_PROMPT, **c[1]}] for c in conditioning]


def refuse_hooks(conditioning, name: str):
    """The patch adds its empty prompt after ComfyUI registered the conds' hooks: hooks there would be lost."""
    if any(c[1].get("hooks") is not None for c in conditioning):
        raise GuidanceConfigError(
            f"the {name} conditioning carries hooks (e.g. LoRA keyframes); the CFG Patch cannot "
            "register them: use the CFG Guider (Guidance Lab) or a conditioning without hooks"
        )


class CFGRuntime:
    """Per-step guided prediction, shared by the GUIDER and the MODEL patch."""

    def __init__(self, combiner: cfg_core.CFGCombiner, empty=None, terms=(), model_patcher=None):
        self.combiner = combiner
        self.empty = tag_negative(empty) if empty is not None else None
        self.terms = tuple(terms)
        self.perturbed = {f"term{i}": t.perturbation for i, t in enumerate(self.terms) if t.perturbation is not None}
        self.models = {}  # model terms by cond key; how each runs is decided per run, for the model sampled (bind)
        for i, t in enumerate(self.terms):
            if t.model is not None:
                check_same_family(model_patcher, t.model, i + 1)
                self.models[f"term{i}"] = t.model
        self.aliases, self.shared = {}, {}  # set by bind()
        self.nag = self._nag_source(model_patcher)
        self.nag_cache = None  # the paper form's nag_patches.PaperCache of a run
        self.shadow_cache = None  # the joint paper form's (positive, negative, shadow rows) of a run
        if model_patcher is not None:
            perturbation_patches.check_blocks(model_patcher, [(int(k[4:]) + 1, p) for k, p in self.perturbed.items()])
        self.probe = perturbation_patches.Probe()
        self._pre_run = set()
        self.separate = (
            False  # perturbed rows in calls of their own (perturbation_patches.NoRowIds), found at the first call
        )

    def _nag_source(self, model_patcher):
        """(settings, cond key of its negative prompt, term number) of the NAG term, checked against the model; None
        without."""
        for i, t in enumerate(self.terms):
            if t.kind != "nag":
                continue
            settings = t.nag or nag_core.NAGSettings()
            if model_patcher is not None:
                nag_patches.check_supported(model_patcher, settings, i + 1)
            if t.conditioning is None and not self.combiner.has_negative:
                raise GuidanceConfigError(
                    f"term {i + 1} (nag) has no conditioning and no negative prompt is connected: "
                    "connect its conditioning (the prompt to steer away from) or a negative"
                )
            return settings, (f"term{i}" if t.conditioning is not None else cfg_core.NEGATIVE), i + 1
        return None

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options: every clone keeps talking to this one runtime.
        return self

    # ------------------------------------------------------------------ wiring
    def install(self, model_patcher):
        """Add the runtime's wrappers to `model_patcher` (a clone the caller owns) and mark it."""
        model_patcher.model_options[MARK] = True
        if self.nag is not None and self.nag[0].form == "paper":
            nag_patches.install_dit_patches(model_patcher)  # a DiT's cross-attention (none on a UNet)
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, MARK, self.outer_sample)
        model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, MARK, self.sampler_sample)
        self.bind(model_patcher)
        return model_patcher

    def bind(self, sampled):
        """How each model term runs with the model `sampled` (the one a run samples, which a LoRA or another patch
        node after the CFG Patch may have changed): a term with the sampled model's very weights and the positive
        prompt is the positive's prediction (no row); a term on the sampled model's network with other weights
        (a clone with another LoRA, without it, at another strength) swaps its weights in for its own calls
        (shared_network); any other MODEL is its own network, loaded and offloaded by ComfyUI with the sampled one."""
        self.aliases, self.shared = {}, {}
        self.combiner.null_terms = set()
        separate = []
        for key, other in self.models.items():
            i = int(key[4:])
            if other.model is not sampled.model:
                if self.terms[i].weight != 0:
                    separate.append(other)
            elif self.terms[i].conditioning is None and shared_network.same_weights(other, sampled):
                self.aliases[key] = cfg_core.POSITIVE  # same weights, same input: the positive's prediction
                if self.combiner.term_refs[i] == cfg_core.POSITIVE:
                    self.combiner.null_terms.add(i)  # D_pos - D_pos: the term is exactly 0
            else:
                self.shared[key] = shared_network.SharedNetwork(sampled, other, i + 1)
        sampled.set_additional_models(MARK, separate)  # ComfyUI's model management loads (and offloads) them

    def outer_sample(self, executor, *args, **kwargs):
        guider = executor.class_obj
        own = getattr(guider, "runtime", None) is self
        if not own and type(guider) is not comfy.samplers.CFGGuider:
            raise GuidanceConfigError(
                f"the CFG Patch (Guidance Lab) drives ComfyUI's CFGGuider (KSampler, CFGGuider node); this model went "
                f"into {type(guider).__name__}, whose own CFG rule it cannot combine with: remove the patch, or use "
                "the CFG Guider (Guidance Lab)"
            )
        self.combiner.reset(sampling_facts.sampler_name(args[2] if len(args) > 2 else kwargs.get("sampler")))
        self.probe = perturbation_patches.Probe()
        self._pre_run = set()
        self.nag_cache = self.shadow_cache = None
        self.bind(guider.model_patcher)
        if self.nag is not None:  # again on the model sampled: nodes after the patch may have changed it
            nag_patches.check_supported(guider.model_patcher, self.nag[0], self.nag[2])
        if own:
            return executor(*args, **kwargs)
        if self.empty is not None:
            guider.conds[EMPTY_KEY] = [c.copy() for c in comfy.sampler_helpers.convert_cond(self.empty)]
        own_conds = term_conds(self.terms, None)  # None where a term runs with the KSampler's positive prompt
        for key, cond in own_conds.items():
            guider.conds[key] = [
                c.copy()
                for c in (comfy.sampler_helpers.convert_cond(cond) if cond is not None else guider.conds[POSITIVE_KEY])
            ]
        guider.predict_noise = lambda x, timestep, model_options={}, seed=None: self.predict(  # noqa: B006
            guider.inner_model, guider.conds, guider.cfg, x, timestep, model_options
        )
        try:
            return executor(*args, **kwargs)
        finally:
            del guider.predict_noise

    def sampler_sample(
        self,
        executor,
        guider,
        sigmas,
        extra_args,
        callback,
        noise,
        latent_image=None,
        denoise_mask=None,
        disable_pbar=False,
    ):
        """CFG-Zero* zero-init as whole sampler steps: x stays at the sampler's start for the first K steps
        (no model call, no noise, no corrector stage); the sampler then runs sigmas[K:] from that x."""
        k = self.combiner.config.post.zero_init_steps
        if k <= 0:
            return executor(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        if denoise_mask is not None:
            raise GuidanceConfigError(
                "zero_init_steps > 0 with an inpainting mask (noise_mask) is not supported: set zero_init_steps to 0"
            )
        sampler = executor.class_obj
        ms = guider.inner_model.model_sampling
        # the start noise is solved from noise_scaling = A*n + B*z: only a known form with A = c*sigma > 0 has one
        sampling_facts.guidable_form(ms, f"zero_init_steps={k} (CFG-Zero* zero-init)")
        latent = latent_image if latent_image is not None else torch.zeros_like(noise)
        x_start = ms.noise_scaling(sigmas[0], noise, latent, sampler.max_denoise(guider, sigmas))
        if k >= len(sigmas) - 1:
            return ms.inverse_noise_scaling(sigmas[-1], x_start)
        rest = sigmas[k:]
        md = sampler.max_denoise(guider, rest)
        zero = ms.noise_scaling(rest[0], torch.zeros_like(noise), latent, md)
        one = ms.noise_scaling(rest[0], torch.ones_like(noise), latent, md)
        start_noise = cfg_core.zero_init_start_noise(x_start, zero, one)
        return executor(guider, rest, extra_args, callback, start_noise, latent_image, denoise_mask, disable_pbar)

    # ------------------------------------------------------------------ one step
    def predict(self, model, conds: dict, cond_scale: float, x, timestep, model_options):
        """One guided denoised prediction: every active term in ONE batched model call."""
        comb = self.combiner
        ctx = sampling_facts.step_context(timestep, model_options, model.model_sampling)
        plan = comb.plan(ctx, cond_scale)
        scale = comb.step_scale(plan, cond_scale)
        # hooks see an uncond on a guided step, and at scale 1 where a node asked ComfyUI for one
        # (disable_cfg1_optimization: CFG++ samplers, SAG, NAGuidance), as ComfyUI's sampling_function does; the
        # uncond they see is ComfyUI's uncond slot: the user's negative where connected, else the baseline
        # the comfyui form of NAG reads the uncond slot's row as NAGuidance does (which also asks for an uncond at cfg 1)
        nag_rows = [self.nag[1]] if plan.nag and self.nag[0].form == "comfyui" else []
        asked = model_options.get("disable_cfg1_optimization", False) or comb.uncond_slot in nag_rows
        uncond = comb.uncond_slot if scale != 1.0 or asked else None
        keys = comb.evaluation_order(plan.needed + ([uncond] if uncond else []) + nag_rows)
        if plan.nag and self.nag[0].form == "paper" and nag_patches.joint_family(model.diffusion_model):
            # joint attention: the shadow rows (the positive with the negative's text tokens) in the same batch
            shadow = self.shadow_rows(conds[POSITIVE_KEY], conds[cond_key(self.nag[1])], plan.nag.index + 1)
            conds, keys = {**conds, nag_patches.SHADOW_KEY: shadow}, keys + [nag_patches.SHADOW_KEY]
        preds = self.evaluate_terms(model, conds, keys, x, timestep, model_options, plan.nag)
        preds.pop(nag_patches.SHADOW_KEY, None)  # equal to the positive's: one image stream
        comb.observe(plan, preds, x, ctx)
        conds_pair = [conds[POSITIVE_KEY], conds[cond_key(uncond)] if uncond else None]
        out_pair = run_pre_cfg_hooks(
            model,
            conds_pair,
            [preds[cfg_core.POSITIVE], preds[uncond] if uncond else torch.zeros_like(x)],
            scale,
            x,
            timestep,
            model_options,
        )
        preds[cfg_core.POSITIVE] = out_pair[0]
        if uncond:
            preds[uncond] = out_pair[1]
        # ComfyUI's own cfg_function where the step is its CFG on that very pair
        if comb.is_plain(plan) and (not plan.active or uncond == comb.baseline):
            return comfy.samplers.cfg_function(
                model,
                out_pair[0],
                out_pair[1],
                scale,
                x,
                timestep,
                model_options=model_options,
                cond=conds_pair[0],
                uncond=conds_pair[1],
            )
        alpha = sampling_facts.alpha_of(comb.parameterization, timestep).to(x.dtype)
        x_skip = None  # a x of D = a x + b F (ComfyUI's calculate_denoised with F = 0): MaMBo-G's output space
        if comb.config.post.mambo_alpha > 0:
            x_skip = model.model_sampling.calculate_denoised(timestep, torch.zeros_like(x), x)
        guided = comb.combine(plan, preds, x, timestep, alpha, ctx.level(), x_skip)
        return cfg_stage(model, guided, out_pair, conds_pair, scale, x, timestep, model_options)

    def evaluate_terms(self, model, conds, keys, x, timestep, model_options, nag=None) -> dict:
        """Predictions of `keys`: prompt and perturbed rows in one batched call of the sampled model (the
        perturbation on its own rows, NAG (a cfg.NAGStep) on the positive's), each model term in one call of its
        model, aliases copied."""
        batch = [k for k in keys if k not in self.models and k not in self.aliases]
        # another node's sampler_calc_cond_batch_function calls the model its own way: perturbed rows go alone
        own_batching = "sampler_calc_cond_batch_function" in model_options
        alone = [k for k in batch if k in self.perturbed] if self.separate or own_batching else []
        batch = [k for k in batch if k not in alone]
        by_chunk = {i: self.perturbed[k] for i, k in enumerate(batch) if k in self.perturbed}
        opts = (
            perturbation_patches.patched_options(model_options, by_chunk, self.probe, network=model.diffusion_model)
            if by_chunk
            else model_options
        )
        if batch[1:2] == [nag_patches.SHADOW_KEY] and not own_batching:
            batch.insert(1, HOLE)  # the shadow rows must not sit at the uncond slot (attention patches read it so)
        paired = len(batch) > 1 and batch[1] == self.combiner.uncond_slot
        first = self.nag_options(model, conds, batch, opts, nag) if nag else None
        lists = [None if k == HOLE else conds[cond_key(k)] for k in batch]
        try:
            preds = dict(zip(batch, evaluate(model, lists, x, timestep, opts, paired, first)))
            preds.pop(HOLE, None)
        except (
            perturbation_patches.NoRowIds
        ):  # this ComfyUI does not tell the blocks their rows: the perturbed rows run alone
            self.separate = True
            return self.evaluate_terms(model, conds, keys, x, timestep, model_options, nag)
        for k in alone:
            opts = perturbation_patches.patched_options(
                model_options, {0: self.perturbed[k]}, self.probe, whole=True, network=model.diffusion_model
            )
            preds[k] = evaluate(model, [conds[cond_key(k)]], x, timestep, opts)[0]
        for k in set(self.perturbed) & (set(batch) | set(alone)):
            perturbation_patches.check_ran(self.probe, model.diffusion_model, int(k[4:]) + 1, self.perturbed[k])
        if nag:
            nag_patches.check_ran(self.nag_probe, model.diffusion_model, nag.index + 1, self.nag[0])
        for k in keys:
            if k in self.aliases:
                preds[k] = (
                    preds[self.aliases[k]]
                    if self.aliases[k] in preds
                    else evaluate(model, [conds[POSITIVE_KEY]], x, timestep, model_options)[0]
                )
            elif k in self.shared:
                with self.shared[k].active():
                    preds[k] = self.evaluate_other(self.models[k], conds[cond_key(k)], x, timestep, model_options)
            elif k in self.models:
                preds[k] = self.evaluate_other(self.models[k], conds[cond_key(k)], x, timestep, model_options)
        return preds

    def shadow_rows(self, positive, negative, term_no: int) -> list:
        """The joint paper form's shadow cond list, built once a run (one uuid for the run's shadow rows)."""
        cached = self.shadow_cache
        if cached is None or cached[0] is not positive or cached[1] is not negative:
            self.shadow_cache = cached = (positive, negative, nag_patches.shadow_conds(positive, negative, term_no))
        return cached[2]

    def nag_options(self, model, conds, batch, opts, nag) -> dict:
        """The batch's model options with the NAG term at this step's s on the positive rows (chunk 0)."""
        settings, source, _ = self.nag
        self.nag_probe = nag_patches.Probe()
        if settings.form == "comfyui":
            return nag_patches.patched_options(
                opts, None, settings, nag.scale, self.nag_probe, neg_chunk=batch.index(source)
            )
        if nag_patches.SHADOW_KEY in batch:
            net = model.diffusion_model
            joint = nag_patches.JointCall(
                batch.index(nag_patches.SHADOW_KEY),
                nag_patches.text_tokens(net, conds[nag_patches.SHADOW_KEY]),
                nag_patches.text_first(net),
                nag.scale,
                settings,
                self.nag_probe,
            )
            return nag_patches.patched_options(opts, None, settings, nag.scale, self.nag_probe, joint=joint)
        if self.nag_cache is None or self.nag_cache.network is not model.diffusion_model:
            self.nag_cache = nag_patches.PaperCache(model.diffusion_model)
        context = nag_patches.negative_context(conds[cond_key(source)], nag.index + 1)
        return nag_patches.patched_options(
            opts, self.nag_cache, settings, nag.scale, self.nag_probe, neg_context=context
        )

    def evaluate_other(self, other, cond_list, x, timestep, model_options):
        """A model term: ComfyUI's batched evaluation on the other MODEL, with its own patches and options, at
        the same x and sigma (this run's sigmas passed on for its hooks)."""
        if id(other) not in self._pre_run:
            other.pre_run()
            self._pre_run.add(id(other))
        opts = comfy.model_patcher.create_model_options_clone(other.model_options)
        t_opts = opts.setdefault("transformer_options", {})
        for k in ("sample_sigmas",):
            if k in model_options.get("transformer_options", {}):
                t_opts[k] = model_options["transformer_options"][k]
        return comfy.samplers.calc_cond_batch(other.model, [cond_list], x, timestep, opts)[0]


def check_same_family(model_patcher, other, term_no: int) -> None:
    """A model term's MODEL must read the same latents and conditioning as the sampled model: the same
    model class (conditioning), latent format, parameterization and noise coefficient (noise_scale: x is
    alpha*x0 + c*sigma*eps for both, or the term reads another input than the sampled model)."""
    if model_patcher is None:
        return
    if not hasattr(other, "model") or not hasattr(other, "clone_has_same_weights"):
        raise GuidanceConfigError(f"term {term_no}: the model term needs a MODEL, got {type(other).__name__}")
    a, b = model_patcher.model, other.model
    form_a, form_b = (sampling_facts.sampling_form(sampling_facts.model_sampling_of(p)) for p in (model_patcher, other))
    facts = [
        ("model class", type(a).__name__, type(b).__name__),
        ("latent format", type(a.latent_format).__name__, type(b.latent_format).__name__),
        ("parameterization", form_a.parameterization, form_b.parameterization),
        ("noise_scale", f"{form_a.noise:g}", f"{form_b.noise:g}"),
    ]
    for what, mine, theirs in facts:
        if mine != theirs:
            raise GuidanceConfigError(
                f"term {term_no}: the model term's MODEL has {what} {theirs}, the sampled model "
                f"{mine}; a model term needs a model of the same family (e.g. a smaller or "
                "less trained version of the same architecture)"
            )


def evaluate(model, cond_lists, x, timestep, model_options, paired: bool = False, first_options=None):
    """ComfyUI's batched evaluation (calc_cond_batch: context windows, hooks, areas, ControlNet) of the cond lists,
    in one batch. Where another node set a sampler_calc_cond_batch_function (SkipLayerGuidanceDiTSimple...), it gets
    what ComfyUI's sampling_function gives it, exactly [cond, uncond-or-None]: the first two lists as that pair when
    `paired` (the second is ComfyUI's uncond slot), every other list as [cond, None]. first_options: the options of
    the call holding the first list (the positive), e.g. with NAG's patches; every other call gets model_options."""
    fn = model_options.get("sampler_calc_cond_batch_function")
    if fn is None:
        return comfy.samplers.calc_cond_batch(model, cond_lists, x, timestep, first_options or model_options)

    def call(pair, opts=model_options):
        return fn({"conds": pair, "input": x, "sigma": timestep, "model": model, "model_options": opts})

    first = 2 if paired and len(cond_lists) > 1 else 1
    out = list(call(list(cond_lists[:2]) if first == 2 else [cond_lists[0], None], first_options or model_options))
    return out[:first] + [call([c, None])[0] for c in cond_lists[first:]]


def run_pre_cfg_hooks(model, conds_pair, out_pair, cond_scale, x, timestep, model_options):
    """Other nodes' pre-CFG hooks, called exactly as ComfyUI's sampling_function calls them."""
    for fn in model_options.get("sampler_pre_cfg_function", []):
        args = {
            "conds": conds_pair,
            "conds_out": out_pair,
            "cond_scale": cond_scale,
            "timestep": timestep,
            "input": x,
            "sigma": timestep,
            "model": model,
            "model_options": model_options,
        }
        out_pair = fn(args)
    return out_pair


def cfg_stage(model, guided, out_pair, conds_pair, scale, x, timestep, model_options):
    """ComfyUI's cfg_function for a combined D that is not a plain CFG pair (see the module docstring)."""
    cond_pred, uncond_pred = out_pair
    result = guided
    fn = model_options.get("sampler_cfg_function")
    if fn is not None:
        c, u = cfg_core.fold_to_pair(cond_pred, guided, scale) if scale != 1.0 else (guided, uncond_pred)
        args = {
            "cond": x - c,
            "uncond": x - u,
            "cond_scale": scale,
            "timestep": timestep,
            "input": x,
            "sigma": timestep,
            "cond_denoised": c,
            "uncond_denoised": u,
            "model": model,
            "model_options": model_options,
            "input_cond": conds_pair[0],
            "input_uncond": conds_pair[1],
        }
        result = (x - fn(args)).to(x.dtype)
    for post in model_options.get("sampler_post_cfg_function", []):
        args = {
            "denoised": result,
            "cond": conds_pair[0],
            "uncond": conds_pair[1],
            "cond_scale": scale,
            "model": model,
            "uncond_denoised": uncond_pred,
            "cond_denoised": cond_pred,
            "sigma": timestep,
            "model_options": model_options,
            "input": x,
        }
        result = post(args)
    return result
