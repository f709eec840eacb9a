"""Perturbed-attention terms (PAG, SEG) chained with other nodes' attention patches on the same block, inside a
real ComfyUI.

ComfyUI looks an attn1 replacement up by the 3-part key (block name, number, transformer index) before the
2-part key (block name, number). Self-Attention Guidance sets ("middle", 0, 0) to record the uncond's attention
map; a PAG term set only under ("middle", 0) would be shadowed on that transformer (SDXL's middle block: 9 of
10 transformers perturbed; SD1.5's: none). The right composition, tested here against a direct reference:
the term's rows are perturbed at every transformer of the block; every other row runs the other node's patch
there (SAG records the real uncond's attention and SAG's own extra call is unchanged)."""

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import custom_sample, ksample, native_guider, our_guider, patch
from devkit.compat_matrix import (
    SDXL_MIDDLE_DEPTH,
    float64,
    middle_block_unets,
    pag_term,
    pag_then_sag,
    reference_pag,
    sag,
    comfy_pag_with_sag_row,
)

pytestmark = pytest.mark.comfy

GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError
TOL = dict(rtol=0.0, atol=1e-5)
CFG, STEPS = 5.0, 4


@pytest.fixture(scope="module")
def sdxl():
    return middle_block_unets()[f"SDXL middle block ({SDXL_MIDDLE_DEPTH} transformers)"][:3]


@pytest.fixture(scope="module")
def sd15():
    return middle_block_unets()["SD1.5 middle block (1 transformer)"][:3]


def middle_depth(model) -> int:
    return sum(
        1
        for name, _ in model.model.diffusion_model.middle_block.named_modules()
        if name.count(".") == 2 and ".transformer_blocks." in name
    )


def native(route, model, pos, neg):
    """ComfyUI's own sampling of `model`: KSampler, or CFGGuider under SamplerCustomAdvanced."""
    if route == "patch":
        return ksample(model, CFG, steps=STEPS, pos=pos, neg=neg)
    return custom_sample(model, native_guider(model, CFG, pos, neg), steps=STEPS)


def chains(route, model, pos, neg) -> dict:
    """SAG + our PAG term: SAG before and after the CFG Patch (KSampler), or SAG's model in the CFG Guider."""
    if route == "patch":
        return {
            "SAG → patch": lambda: ksample(patch(sag(model), terms=pag_term()), CFG, steps=STEPS, pos=pos, neg=neg),
            "patch → SAG": lambda: ksample(sag(patch(model, terms=pag_term())), CFG, steps=STEPS, pos=pos, neg=neg),
        }
    m = sag(model)
    return {
        "SAG → guider": lambda: custom_sample(
            m, our_guider(m, CFG, positive=pos, negative=neg, terms=pag_term()), steps=STEPS
        )
    }


@pytest.mark.parametrize("route", ["patch", "guider"])
def test_sag_and_pag_term_on_sdxl_middle_block_perturb_every_transformer(sdxl, route):
    """SAG + our PAG term on a middle block of 10 transformers (SAG's patch under ("middle", 0, 0)): equal to a
    reference perturbing all 10 on the PAG rows with SAG applied to the real uncond, in either chain order; the
    reference that perturbs 9 (the term shadowed by SAG on the first transformer) is far from it."""
    m, pos, neg = sdxl
    assert middle_depth(m) == SDXL_MIDDLE_DEPTH
    every = range(SDXL_MIDDLE_DEPTH)
    ref = native(route, pag_then_sag(m, every), pos, neg)
    effect = float((ref - native(route, sag(m), pos, neg)).abs().max())
    shadowed = float((ref - native(route, pag_then_sag(m, every[1:]), pos, neg)).abs().max())
    assert effect > 1e-2 and shadowed > 1e-3, (effect, shadowed)  # the comparison below tells them apart
    for name, chained in chains(route, m, pos, neg).items():
        torch.testing.assert_close(
            chained(),
            ref,
            **TOL,
            msg=lambda text, name=name: f"{name}: {text} (PAG effect {effect}, one transformer short: {shadowed})",
        )


@pytest.mark.parametrize("route", ["patch", "guider"])
def test_sag_and_pag_term_on_sd15_middle_block_run_exact(sd15, route):
    """SD1.5's middle block has one transformer, the one SAG patches: the PAG term is neither refused nor lost
    there; equal to the direct reference."""
    m, pos, neg = sd15
    assert middle_depth(m) == 1
    ref = native(route, pag_then_sag(m, [0]), pos, neg)
    effect = float((ref - native(route, sag(m), pos, neg)).abs().max())
    assert effect > 1e-2, effect
    for name, chained in chains(route, m, pos, neg).items():
        torch.testing.assert_close(
            chained(), ref, **TOL, msg=lambda text, name=name: f"{name}: {text} (PAG effect {effect})"
        )


def test_another_nodes_transformer_patch_sees_its_own_rows(sd15):
    """A 3-part attn1 patch of another node, chained under the term, runs on the prompt rows only and is told
    their chunk ids (cond_or_uncond, uuids) — what ComfyUI would give it for a batch of those rows."""
    m, pos, neg = sd15
    seen = []

    def recorder(q, k, v, extra_options):
        import comfy.ldm.modules.attention as attention

        seen.append((q.shape[0], sorted(extra_options["cond_or_uncond"]), len(extra_options["uuids"])))
        return attention.optimized_attention(q, k, v, extra_options["n_heads"])

    other = m.clone()
    other.set_model_attn1_replace(recorder, "middle", 0, 0)
    ksample(patch(other, terms=pag_term()), CFG, steps=2, pos=pos, neg=neg)
    assert seen and all(s == (2, [0, 1], 2) for s in seen), seen


def test_comfyui_pag_node_with_sag_is_shadowed_on_the_first_transformer():
    """ComfyUI's own PerturbedAttentionGuidance + SAG (ComfyUI's behaviour, documented, not changed): PAG's
    2-part patch loses to SAG's 3-part key on the middle block's first transformer: equal to PAG on the other
    9 of 10 on SDXL, to SAG alone on SD1.5 (the compatibility row checks both)."""
    r = comfy_pag_with_sag_row()
    assert r["status"] == "limitation", r
    assert "9 of 10 perturbed" in r["detail"] and r["value"] < 1e-5


def test_each_patch_call_resolves_the_layer_comfyui_runs(sdxl):
    """The self-attention layer the term's patch takes the attention backend from (self_attention_layers) is
    the one whose to_q ComfyUI ran just before calling the patch, at every transformer of every UNet block a
    perturbation can act on."""
    import comfy.ldm.modules.attention as attention

    PB = H.pack_module("nodes.perturbation_patches")
    m, pos, neg = sdxl
    net = m.model.diffusion_model
    last, checked = [], []
    hooks = [
        mod.attn1.to_q.register_forward_hook(lambda mod, i, o, layer=mod.attn1: last.append(layer))
        for mod in net.modules()
        if isinstance(mod, attention.BasicTransformerBlock)
    ]

    def recorder(q, k, v, extra_options):
        part, idx = extra_options["block"]
        checked.append((part, idx, extra_options["block_index"]))
        assert PB.self_attention_layers(net, part, idx, extra_options["block_index"]) == [last[-1]]
        return attention.optimized_attention(q, k, v, extra_options["n_heads"])

    other = m.clone()
    blocks = PB.available_blocks(net, "pag")
    for part, idx in blocks:
        other.set_model_attn1_replace(recorder, part, idx)
    try:
        ksample(other, CFG, steps=1, pos=pos, neg=neg)
    finally:
        for h in hooks:
            h.remove()
    assert sorted(set(checked)) == sorted((p, i, t) for p, i in blocks for t in range(PB.transformer_count(net, p, i)))
    assert ("middle", 0, SDXL_MIDDLE_DEPTH - 1) in checked


def test_prompt_rows_keep_the_layers_own_attention_backend():
    """ComfyUI 0.38+: each CrossAttention calls optimized_attention with its own backend (preferred_attention =
    its comfy_attention). With a backend on the middle block's layers that changes their output, the prompt rows
    the PAG term's patch computes use it: equal to a reference whose prompt rows run the unpatched layers."""
    import comfy.ldm.modules.attention as attention

    if not hasattr(attention, "ComfyAttention"):
        pytest.skip(
            f"ComfyUI {H.comfyui_version()} has no per-layer attention backend "
            "(CrossAttention.comfy_attention, ComfyUI 0.38+)"
        )
    m, pos, neg = float64(F.sd15()), F.FAMILIES["SD1.5"].cond(1), F.FAMILIES["SD1.5"].cond(2)
    before = ksample(reference_pag(m, [0]), CFG, steps=STEPS, pos=pos, neg=neg)

    @attention.wrap_attn  # as ComfyUI's own per-layer backends: it takes tensors or the layer's tensor containers
    def halved(q, k, v, heads, *args, **kw):
        return 0.5 * attention.attention_basic(q, k, v, heads, attn_precision=kw.get("attn_precision"))

    for layer in H.pack_module("nodes.perturbation_patches").self_attention_layers(
        m.model.diffusion_model, "middle", 0, 0
    ):
        layer.comfy_attention.function = halved
    ref = ksample(reference_pag(m, [0]), CFG, steps=STEPS, pos=pos, neg=neg)
    assert float((ref - before).abs().max()) > 1e-3  # the backend acts
    torch.testing.assert_close(ksample(patch(m, terms=pag_term()), CFG, steps=STEPS, pos=pos, neg=neg), ref, **TOL)


def test_a_patch_set_while_the_model_runs_is_refused_naming_the_transformer(sdxl):
    """A 3-part attn1 patch that another node sets only while the model runs (here a diffusion-model wrapper)
    cannot be wrapped: it would shadow the term on that transformer. The first call shows it and the term is
    refused, naming the transformer, instead of perturbing 9 of 10."""
    import comfy.ldm.modules.attention as attention
    import comfy.patcher_extension

    m, pos, neg = sdxl

    def plain(q, k, v, extra_options):
        return attention.optimized_attention(q, k, v, extra_options["n_heads"])

    def wrapper(executor, *args, **kwargs):
        args = list(args)
        to = dict(args[5] if len(args) > 5 else kwargs["transformer_options"])
        replace = dict(to.get("patches_replace", {}))
        replace["attn1"] = {**replace.get("attn1", {}), ("middle", 0, 0): plain}
        to["patches_replace"] = replace
        if len(args) > 5:
            args[5] = to
        else:
            kwargs["transformer_options"] = to
        return executor(*args, **kwargs)

    other = m.clone()
    other.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test", wrapper)
    counter = H.RowCounter(other)
    try:
        with pytest.raises(GuidanceConfigError, match=r"transformer\(s\) 0 of block middle\.0 ran another attention"):
            ksample(patch(other, terms=pag_term()), CFG, steps=STEPS, pos=pos, neg=neg)
    finally:
        counter.close()
    assert len(counter.calls) == 1  # refused at the first call
