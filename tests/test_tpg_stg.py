"""Issue 24 part F: TPG (token perturbation guidance) and STG (spatio-temporal skip guidance) as perturbed terms
of the combiner, batched with the prompt rows, inside a real ComfyUI.

References, each written here apart from the pack's hooks and run as a separate model call from a post-CFG hook
(the structure of ComfyUI's PAG and STG nodes): D = D_cfg + w (D_pos - D_perturbed).
- TPG (Rajabi et al. 2025, arXiv 2506.10036; the authors' SDXL pipeline): each chosen UNet transformer block
  shuffles the tokens of the hidden states it receives, h -> h[:, perm], before running; the permutation is the
  documented one (a torch.randperm seeded from the step's sigma and the transformer's place). The pack shuffles
  after the self-attention's residual instead (a middle_patch): the same numbers, because the block's
  self-attention has no positional encoding (attn(P n) = P attn(n)) and every other layer acts per token.
- STG on LTXV: ComfyUI 0.33.0's LTXVSpatioTemporalGuidance (post-CFG, its own value passthrough `out = v` in
  LTXV's CrossAttention). That ComfyUI reads the node's block set only in its audio-video model (LTXAV); on
  plain LTXV the node's extra call is unperturbed and it adds nothing (checked below), so the reference gives
  the block the flag the way LTXAV's block loop does.
- STG on Wan: the block's self-attention written as its value passthrough, o(v(x)).
Networks in float64 where the family allows it, so that a perturbed row computed in a batch of another size
rounds the same (assert_same_effect: 1% of the term's effect).
"""

import zlib

import pytest
import torch

from devkit import comfy_host as H
from devkit import families as F
from devkit.cfg_helpers import custom_sample, ksample, native_guider, our_guider, patch, schedule
from devkit.compat_matrix import SDXL_MIDDLE_DEPTH, comfy_ltxv_stg, float64, ltxav_block_rule, middle_block_unets

pytestmark = pytest.mark.comfy

GuidanceConfigError = H.pack_module("guidance_core.errors").GuidanceConfigError
PT = H.pack_module("guidance_core.perturbed_terms")
FLAG = "test_perturbed_call"  # transformer option marking the reference's separate call
CFG, W, STEPS = 5.0, 3.0, 4
LTXV, WAN = "LTXV (video, 5-D, 128 channels)", "Wan 2.1 (video, 5-D)"


def term(mode, weight=W, blocks="", **kw):
    return H.run_node("GuidanceLabPerturbedTerm", mode=mode, blocks=blocks, weight=weight, seg_sigma=10.0, **kw)[0]


def rows_per_call(model, run):
    counter = H.RowCounter(model)
    try:
        out = run()
    finally:
        counter.close()
    return out, [r for r, _ in counter.calls]


def assert_same_effect(out, ref, plain):
    effect, err = float((ref - plain).abs().max()), float((out - ref).abs().max())
    assert effect > 1e-4, f"the term has no effect ({effect}); the comparison would mean nothing"
    assert err <= 1e-2 * effect, f"difference {err} against an effect of {effect}"


def separate_call(model, scale, window=None):
    """`model` with a post-CFG hook adding scale * (D_pos - D_perturbed), D_perturbed from a call of the positive
    alone with FLAG set; window: (sigma_lo, sigma_hi], the steps where it acts (ComfyUI's nodes' percents)."""
    import comfy.samplers

    def post_cfg(args):
        sigma = float(args["sigma"].reshape(-1)[0])
        if window is not None and not window[0] < sigma <= window[1]:
            return args["denoised"]
        opts = dict(args["model_options"])
        opts["transformer_options"] = dict(opts.get("transformer_options", {}), **{FLAG: True})
        (ptb,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], opts)
        return args["denoised"] + (args["cond_denoised"] - ptb) * scale

    m = model.clone()
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


# ------------------------------------------------------------------ TPG
def paper_permutation(n, sigma, block, transformer):
    """The permutation the help page documents: torch.randperm(n) from a CPU generator seeded by the CRC-32 of
    'tpg|<sigma as float.hex()>|<part>.<index>|<transformer>|<n>'."""
    text = f"tpg|{float(sigma).hex()}|{block[0]}.{block[1]}|{transformer}|{n}"
    return torch.randperm(n, generator=torch.Generator().manual_seed(zlib.crc32(text.encode())))


def unet_transformers(model, part, idx):
    """(object patch name, transformer index, module) of the transformers of UNet block (part, idx)."""
    net = model.model.diffusion_model
    root = {"input": "input_blocks", "output": "output_blocks"}.get(part)
    block = net.middle_block if part == "middle" else getattr(net, root)[idx]
    prefix = "middle_block" if part == "middle" else f"{root}.{idx}"
    out = []
    for name, mod in block.named_modules():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] == "transformer_blocks":
            out.append((f"diffusion_model.{prefix}.{name}", int(parts[-1]), mod))
    return out


def reference_tpg(model, blocks, scale=W, window=None):
    """TPG as the paper writes it: in the FLAG call, each transformer of `blocks` shuffles its input tokens."""
    ref = separate_call(model, scale, window)
    for part, idx in blocks:
        for name, t, mod in unet_transformers(model, part, idx):

            def forward(x, context=None, transformer_options={}, mod=mod, key=(part, idx), t=t):  # noqa: B006
                if transformer_options.get(FLAG):
                    sigma = float(transformer_options["sigmas"].reshape(-1)[0])
                    x = x[:, paper_permutation(x.shape[1], sigma, key, t)]
                return type(mod).forward(mod, x, context=context, transformer_options=transformer_options)

            ref.add_object_patch(f"{name}.forward", forward)
    return ref


@pytest.fixture(scope="module")
def sdxl_deep():
    """ComfyUI's SDXL class at tiny width with SDXL's middle block of 10 transformers, float64."""
    return middle_block_unets()[f"SDXL middle block ({SDXL_MIDDLE_DEPTH} transformers)"][:3]


@pytest.fixture(scope="module")
def sd15():
    fam = F.FAMILIES["SD1.5"]
    return float64(fam.build()), fam.cond(1), fam.cond(2)


@pytest.mark.parametrize("route", ["patch", "guider"])
def test_tpg_term_equals_the_papers_shuffle_in_a_separate_call(sd15, route):
    """SD1.5 (tiny), TPG on input.3 and middle.0: the term batched with CFG equals the paper's input shuffle run
    as a call of its own, through KSampler and the GUIDER; 3 rows per step, one call."""
    m, pos, neg = sd15
    blocks = (("input", 3), ("middle", 0))
    t = term("tpg", blocks="input.3, middle.0")
    if route == "patch":
        plain = ksample(m, CFG, steps=STEPS, pos=pos, neg=neg)
        ref = ksample(reference_tpg(m, blocks), CFG, steps=STEPS, pos=pos, neg=neg)
        out, rows = rows_per_call(m, lambda: ksample(patch(m, terms=t), CFG, steps=STEPS, pos=pos, neg=neg))
    else:
        plain = custom_sample(m, native_guider(m, CFG, pos, neg), steps=STEPS)
        r = reference_tpg(m, blocks)
        ref = custom_sample(r, native_guider(r, CFG, pos, neg), steps=STEPS)
        out, rows = rows_per_call(
            m, lambda: custom_sample(m, our_guider(m, CFG, positive=pos, negative=neg, terms=t), steps=STEPS)
        )
    assert rows == [3] * STEPS
    assert_same_effect(out, ref, plain)


def test_tpg_shuffles_each_transformer_of_a_deep_block(sdxl_deep):
    """SDXL's middle block of 10 transformers: each gets its own permutation at each step (the reference shuffles
    every one's input); one forgotten transformer is far from the result."""
    m, pos, neg = sdxl_deep
    plain = ksample(m, CFG, steps=STEPS, pos=pos, neg=neg)
    ref = ksample(reference_tpg(m, [("middle", 0)]), CFG, steps=STEPS, pos=pos, neg=neg)
    out = ksample(patch(m, terms=term("tpg", blocks="middle.0")), CFG, steps=STEPS, pos=pos, neg=neg)
    assert_same_effect(out, ref, plain)
    # a reference that leaves transformer 0 alone differs by more than the tolerance
    partial = separate_call(m, W)
    for name, t, mod in unet_transformers(m, "middle", 0)[1:]:

        def forward(x, context=None, transformer_options={}, mod=mod, t=t):  # noqa: B006
            if transformer_options.get(FLAG):
                x = x[
                    :,
                    paper_permutation(
                        x.shape[1], float(transformer_options["sigmas"].reshape(-1)[0]), ("middle", 0), t
                    ),
                ]
            return type(mod).forward(mod, x, context=context, transformer_options=transformer_options)

        partial.add_object_patch(f"{name}.forward", forward)
    off = ksample(partial, CFG, steps=STEPS, pos=pos, neg=neg)
    assert float((off - out).abs().max()) > 10 * float((out - ref).abs().max())


def test_tpg_permutation_is_a_seeded_shuffle_per_step_and_transformer():
    """The core's permutation: a permutation (norm-preserving), the documented seeded randperm, the same for the
    same step and transformer, another for another step or transformer."""
    p = PT.token_permutation(64, 3.5, ("middle", 0), 2)
    assert sorted(p.tolist()) == list(range(64))
    assert torch.equal(p, paper_permutation(64, 3.5, ("middle", 0), 2))
    assert torch.equal(p, PT.token_permutation(64, 3.5, ("middle", 0), 2))
    assert not torch.equal(p, PT.token_permutation(64, 3.4, ("middle", 0), 2))
    assert not torch.equal(p, PT.token_permutation(64, 3.5, ("middle", 0), 3))
    h = torch.randn(2, 64, 8, dtype=torch.float64)
    s = PT.shuffle_tokens(h, p)
    torch.testing.assert_close(s.norm(dim=(1, 2)), h.norm(dim=(1, 2)), rtol=1e-12, atol=0)
    assert torch.equal(s[:, 5], h[:, p[5]])
    with pytest.raises(GuidanceConfigError, match=r"not \[rows, 64 tokens, channels\]"):
        PT.shuffle_tokens(h[:, :10], p)


def test_tpg_weight_zero_and_schedule(sd15):
    """Weight 0: no extra row, plain CFG bit for bit. An interval schedule: the TPG row only on the steps inside,
    equal to the separate-call reference acting on those steps."""
    m, pos, neg = sd15
    plain = ksample(m, CFG, steps=STEPS, pos=pos, neg=neg)
    out, rows = rows_per_call(
        m, lambda: ksample(patch(m, terms=term("tpg", 0.0, blocks="middle.0")), CFG, steps=STEPS, pos=pos, neg=neg)
    )
    assert rows == [2] * STEPS and torch.equal(out, plain)
    sigmas = H.run_node("BasicScheduler", model=m, scheduler="normal", steps=STEPS, denoise=1.0)[0]
    lo = float(sigmas[2] + sigmas[3]) / 2  # steps 0, 1, 2 inside (sigma > lo), step 3 outside
    window = schedule(kind="interval", sigma_lo=lo, sigma_hi=1.0e4, inside=1.0, outside=0.0)
    out, rows = rows_per_call(
        m,
        lambda: ksample(
            patch(m, terms=term("tpg", blocks="middle.0", schedule=window)), CFG, steps=STEPS, pos=pos, neg=neg
        ),
    )
    assert rows == [3, 3, 3, 2]
    ref = ksample(reference_tpg(m, [("middle", 0)], window=(lo, 1.0e4)), CFG, steps=STEPS, pos=pos, neg=neg)
    assert_same_effect(out, ref, plain)


def test_tpg_on_a_dit_and_stg_on_a_unet_are_refused(sd15):
    dit = F.model("SD3.5 (MMDiT, flow)")
    with pytest.raises(
        GuidanceConfigError,
        match=r"term 1 \(tpg\).*PAG and SEG need a UNet, as does TPG; for DiT models use slg or stg",
    ):
        patch(dit, terms=term("tpg"))
    with pytest.raises(
        GuidanceConfigError,
        match=r"term 1 \(stg\).*SLG and STG act on DiT blocks .*; for UNet models use pag, seg or tpg",
    ):
        patch(sd15[0], terms=term("stg", blocks="double.0"))
    with pytest.raises(GuidanceConfigError, match=r"perturbation tpg: block 'double.0'"):
        term("tpg", blocks="double.0")


# ------------------------------------------------------------------ STG
def family_io(name, steps=STEPS):
    fam = F.FAMILIES[name]
    return dict(pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1), steps=steps)


def as_float64(name):
    """The family's tiny model in float64 where its forward keeps it (else in float32, as built)."""
    patcher = F.FAMILIES[name].build()
    try:
        float64(patcher)
        ksample(patcher, 1.0, **family_io(name, steps=1))
    except Exception:  # noqa: BLE001  a family whose ops refuse float64 on this ComfyUI
        patcher.model.diffusion_model.to(torch.float32)
        patcher.model.diffusion_model.dtype = torch.float32
    return patcher


def one_step(model, guider, latent):
    """D(x_T) of one guided step (euler to sigma 0)."""
    sig = H.run_node("BasicScheduler", model=model, scheduler="normal", steps=1, denoise=1.0)[0]
    return custom_sample(model, guider, sigmas=sig, latent=latent)


@pytest.fixture(scope="module")
def ltxv():
    return as_float64(LTXV)


def has_attention_override() -> bool:
    H.boot()
    import comfy.ldm.modules.attention as attention

    return hasattr(attention, "wrap_attn")


needs_override = pytest.mark.skipif(
    not has_attention_override(), reason="STG needs ComfyUI's optimized_attention_override (0.3.75 and newer)"
)
needs_ltxv_stg = pytest.mark.skipif(
    "LTXVSpatioTemporalGuidance" not in H.boot().NODE_CLASS_MAPPINGS,
    reason="this ComfyUI has no LTXVSpatioTemporalGuidance (ComfyUI 0.33.0 has it)",
)


@needs_ltxv_stg
@pytest.mark.parametrize("scale,start,end", [(1.0, 0.0, 1.0), (3.0, 0.0, 1.0), (2.0, 0.0, 0.5)])
def test_stg_term_equals_comfyui_ltxv_stg_node(ltxv, scale, start, end):
    """LTXV (tiny), block 0: the STG term (weight = the node's scale; its start/end percent as an interval
    schedule) equals ComfyUI's LTXVSpatioTemporalGuidance with LTXAV's block rule, through KSampler; the term's
    rows run in the CFG call (3 rows per step where it acts; the node: 2 + 1)."""
    m = ltxv
    io = family_io(LTXV)
    plain = ksample(m, CFG, **io)
    node = comfy_ltxv_stg(ltxav_block_rule(m), scale, 0, start, end)
    ref, ref_rows = rows_per_call(m, lambda: ksample(node, CFG, **io))
    ms = m.get_model_object("model_sampling")
    sig_hi, sig_lo = float(ms.percent_to_sigma(start)), float(ms.percent_to_sigma(end))
    window = None
    if (start, end) != (0.0, 1.0):  # the node acts where sig_lo <= sigma <= sig_hi; ours where lo < sigma <= hi
        window = schedule(
            kind="interval", sigma_lo=sig_lo * (1 - 1e-6), sigma_hi=min(sig_hi, 1.0e4), inside=1.0, outside=0.0
        )
    t = term("stg", scale, blocks="double.0", **({"schedule": window} if window else {}))
    out, rows = rows_per_call(m, lambda: ksample(patch(m, terms=t), CFG, **io))
    assert_same_effect(out, ref, plain)
    acting = sum(1 for r in ref_rows if r == 1)  # the node's extra calls: one row each
    assert acting == (STEPS if end == 1.0 else 2)
    assert rows == [3] * acting + [2] * (STEPS - acting)


@needs_ltxv_stg
def test_comfyui_ltxv_stg_node_alone_does_not_perturb_plain_ltxv(ltxv):
    """Why the reference above adds LTXAV's block rule: on plain LTXV, ComfyUI 0.33.0's node makes its extra call
    with a block set no LTXV block reads, so it adds (D_pos - D_pos) * scale: rounding only."""
    m = ltxv
    io = family_io(LTXV)
    plain = ksample(m, CFG, **io)
    alone = ksample(comfy_ltxv_stg(m, 3.0, 0), CFG, **io)
    ours = ksample(patch(m, terms=term("stg", 3.0, blocks="double.0")), CFG, **io)
    assert float((alone - plain).abs().max()) < 1e-3 * float((ours - plain).abs().max())


def reference_wan_stg(model, blocks, scale=W):
    """Wan with the self-attention of `blocks` written as its value passthrough o(v(x)) in the FLAG call."""
    ref = separate_call(model, scale)
    for i in blocks:
        layer = model.model.diffusion_model.blocks[i].self_attn

        def forward(x, freqs, transformer_options={}, layer=layer, **kw):  # noqa: B006
            if transformer_options.get(FLAG):
                return layer.o(layer.v(x))
            return type(layer).forward(layer, x, freqs, transformer_options=transformer_options, **kw)

        ref.add_object_patch(f"diffusion_model.blocks.{i}.self_attn.forward", forward)
    return ref


@needs_override
@pytest.mark.parametrize("route", ["patch", "guider"])
def test_stg_term_on_wan_equals_a_direct_value_passthrough(route):
    m = as_float64(WAN)
    io = family_io(WAN)
    ref_m = reference_wan_stg(m, [0])
    t = term("stg", blocks="double.0")
    if route == "patch":
        plain = ksample(m, CFG, **io)
        ref = ksample(ref_m, CFG, **io)
        out, rows = rows_per_call(m, lambda: ksample(patch(m, terms=t), CFG, **io))
    else:
        run = dict(steps=io["steps"], latent=io["latent"])
        plain = custom_sample(m, native_guider(m, CFG, io["pos"], io["neg"]), **run)
        ref = custom_sample(ref_m, native_guider(ref_m, CFG, io["pos"], io["neg"]), **run)
        out, rows = rows_per_call(
            m, lambda: custom_sample(m, our_guider(m, CFG, positive=io["pos"], negative=io["neg"], terms=t), **run)
        )
    assert rows == [3] * STEPS
    assert_same_effect(out, ref, plain)


@needs_override
def test_stg_weight_zero_evaluates_nothing(ltxv):
    io = family_io(LTXV)
    plain = ksample(ltxv, CFG, **io)
    out, rows = rows_per_call(ltxv, lambda: ksample(patch(ltxv, terms=term("stg", 0.0, blocks="double.0")), CFG, **io))
    assert rows == [2] * STEPS and torch.equal(out, plain)


@needs_override
def test_stg_and_slg_terms_on_one_block_each_act_on_their_rows():
    """An STG and an SLG term on the same Wan block: one call of 4 rows, each term equal to itself alone."""
    m = as_float64(WAN)
    io = family_io(WAN)
    stg, slg = term("stg", blocks="double.0"), term("slg", 2.0, blocks="double.0")
    both = term("slg", 2.0, blocks="double.0", terms=stg)
    _, rows = rows_per_call(m, lambda: ksample(patch(m, terms=both), CFG, **io))
    assert rows == [4] * STEPS
    # one step: D_both - D_cfg = (D_stg - D_cfg) + (D_slg - D_cfg), each term's push computed on its own rows
    pos, neg, lat = io["pos"], io["neg"], io["latent"]
    d = {
        k: one_step(m, our_guider(m, CFG, positive=pos, negative=neg, **({"terms": t} if t else {})), lat)
        for k, t in (("both", both), ("stg", stg), ("slg", slg), ("cfg", None))
    }
    push = float((d["stg"] - d["cfg"]).abs().max()) + float((d["slg"] - d["cfg"]).abs().max())
    assert push > 1e-3
    err = float((d["both"] - (d["stg"] + d["slg"] - d["cfg"])).abs().max())
    assert err <= 1e-3 * push, f"difference {err} against pushes of {push}"


@pytest.mark.skipif(has_attention_override(), reason="this ComfyUI has the attention override STG uses")
def test_stg_is_refused_before_sampling_without_the_attention_override(ltxv):
    """ComfyUI 0.3.52: its attention functions take no override, so STG could not act: refused before sampling."""
    io = family_io(LTXV)
    counter = H.RowCounter(ltxv)
    try:
        with pytest.raises(
            GuidanceConfigError,
            match=r"term 1 \(stg\): this ComfyUI's attention functions take no "
            r"optimized_attention_override.*update ComfyUI",
        ):
            ksample(patch(ltxv, terms=term("stg", blocks="double.0")), CFG, **io)
    finally:
        counter.close()
    assert counter.calls == []
