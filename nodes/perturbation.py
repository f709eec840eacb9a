"""Perturbed-self terms in ComfyUI (PAG, SEG, SLG; formulas in guidance_core/perturb.py), batched with the
prompt rows: per step, a copy of the model options carries replace patches on the chosen blocks that perturb
only the rows of the perturbed terms' chunks (`cond_or_uncond`) and compute every other row as the unpatched
block does (or as the replace patch another node set there does).

- PAG / SEG: `patches_replace["attn1"][(part, index)]` of ComfyUI's UNet transformer blocks, the hook ComfyUI's
  PerturbedAttentionGuidance node uses;
- SLG: `patches_replace["dit"][("double_block" | "single_block", index)]`, the hook of SkipLayerGuidanceDiT.
A block the model does not have would leave the term unperturbed: `check_blocks` refuses it before sampling,
and `Probe` counts the hits of the first call as a backstop.
"""
from __future__ import annotations

import functools
import inspect

import torch

import comfy.ldm.modules.attention as attention
import comfy.model_patcher

from ..guidance_core import perturb
from ..guidance_core.errors import GuidanceConfigError

DIT_KEYS = {"double": "double_block", "single": "single_block"}
# the attribute holding each DiT's blocks that read patches_replace["dit"] (Flux, Chroma, HunyuanVideo: both kinds;
# MMDiT (SD3.x): joint_blocks; Wan, LTXV, Lumina...: blocks)
DIT_BLOCK_LISTS = {"double": ("double_blocks", "joint_blocks", "blocks", "transformer_blocks"), "single": ("single_blocks",)}


def _has_attention(block) -> bool:
    return any(isinstance(m, attention.BasicTransformerBlock) for m in block.modules())


def available_blocks(diffusion_model, mode: str) -> list[tuple]:
    """The blocks of this network a perturbation of `mode` can act on."""
    if mode == "slg":
        out = []
        for part, names in DIT_BLOCK_LISTS.items():
            blocks = next((getattr(diffusion_model, n) for n in names if isinstance(getattr(diffusion_model, n, None),
                                                                                     torch.nn.ModuleList)), None)
            out += [(part, i) for i in range(len(blocks or ()))]
        return out
    out = []
    for part, attr in (("input", "input_blocks"), ("output", "output_blocks")):
        out += [(part, i) for i, b in enumerate(getattr(diffusion_model, attr, ()) or ()) if _has_attention(b)]
    middle = getattr(diffusion_model, "middle_block", None)
    if middle is not None and _has_attention(middle):
        out.append(("middle", 0))
    return out


def check_blocks(model_patcher, perturbations) -> None:
    """Refuse, before sampling, a perturbation whose blocks this model does not have."""
    net = model_patcher.model.diffusion_model
    for term_no, pert in perturbations:
        have = available_blocks(net, pert.mode)
        missing = [b for b in pert.blocks if b not in have]
        if missing:
            shown = ", ".join(f"{p}.{i}" for p, i in have[:24]) + (" ..." if len(have) > 24 else "")
            kind = "DiT transformer blocks (SLG)" if pert.mode == "slg" else "UNet self-attention blocks (PAG, SEG)"
            raise GuidanceConfigError(
                f"term {term_no} ({pert.mode}): block(s) {', '.join(f'{p}.{i}' for p, i in missing)} not in this model "
                f"({type(net).__name__}); its {kind}: {shown or 'none'}"
                + (". PAG and SEG need a UNet; for DiT models use slg" if pert.mode != "slg" and not have else ""))


class NoRowIds(Exception):
    """A perturbed block got no cond_or_uncond (the DiT blocks of ComfyUI 0.3.52 are called without
    transformer_options): its rows cannot be told apart, so the term's rows run in a call of their own."""


def _chunk_ids(options, whole: bool):
    """The chunk ids of the batch; None when the whole batch is perturbed (a call of the term's rows only)."""
    if whole:
        return None
    ids = (options or {}).get("cond_or_uncond")
    if ids is None:
        raise NoRowIds()
    return ids


@functools.lru_cache(maxsize=8)
def _takes_transformer_options(fn) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(p.name == "transformer_options" or p.kind is p.VAR_KEYWORD for p in params)


def block_attention(q, k, v, extra_options):
    """What CrossAttention.forward computes between to_q/to_k/to_v and to_out: ComfyUI's optimized_attention
    (ComfyUI 0.3.75 passes transformer_options on, for attention overrides; 0.3.52's functions take none)."""
    fn = attention.optimized_attention
    kw = {"attn_precision": extra_options.get("attn_precision")}
    if _takes_transformer_options(fn):
        kw["transformer_options"] = extra_options
    return fn(q, k, v, extra_options["n_heads"], **kw)


def _attn1_patch(prev, by_chunk: dict, key, probe, whole: bool = False):
    """attn1 replacement: perturbed chunks get PAG's identity (V) or SEG's blurred queries; the others the
    block's own attention (or `prev`, another node's replacement)."""

    def attend(q, k, v, extra_options):
        if prev is not None:
            return prev(q, k, v, extra_options)
        return block_attention(q, k, v, extra_options)

    def patch(q, k, v, extra_options, mask=None):
        ids = _chunk_ids(extra_options, whole) or [0]  # whole: the batch is one chunk of the term (id 0)
        mine = {c: p for c, p in by_chunk.items() if key in p.blocks}
        if not any(c in mine for c in ids):
            return attend(q, k, v, extra_options)
        probe.hit(key)
        if q.shape[0] % len(ids):
            raise GuidanceConfigError(f"block {key[0]}.{key[1]}: {q.shape[0]} rows do not split into {len(ids)} equal chunks")
        size = q.shape[0] // len(ids)
        outs, plain = [], []

        def flush():
            if plain:
                a, b = plain[0], plain[-1] + size
                outs.append(attend(q[a:b], k[a:b], v[a:b], extra_options))
                plain.clear()

        for j, c in enumerate(ids):
            rows = slice(j * size, (j + 1) * size)
            pert = mine.get(c)
            if pert is None:
                plain.append(j * size)
                continue
            flush()
            if pert.mode == "pag":
                outs.append(v[rows])
            else:  # seg
                h, w = extra_options["activations_shape"][-2:]
                outs.append(attend(perturb.blur_queries(q[rows], h, w, pert.seg_sigma), k[rows], v[rows], extra_options))
        flush()
        return torch.cat(outs)

    return patch


def _dit_patch(prev, by_chunk: dict, key, probe, whole: bool = False):
    """DiT block replacement: perturbed chunks keep the block's input (the block is skipped), the others get
    the block's output (or `prev`'s)."""

    def patch(args, extra):
        run = (lambda a: prev(a, extra)) if prev is not None else extra["original_block"]
        ids = _chunk_ids(args.get("transformer_options") or extra.get("transformer_options"), whole) or [0]
        skip = {c for c in ids if c in by_chunk and key in by_chunk[c].blocks}
        if not skip:
            return run(args)
        probe.hit(key)
        # the block's input rows of the skipped chunks, copied first: some blocks (Flux's) update their input in place
        kept = {name: [(rows, args[name][rows].clone()) for rows in perturb.rows_of(args[name].shape[0], ids, skip)]
                for name in ("img", "txt", "x") if torch.is_tensor(args.get(name))}
        out = dict(run(args))
        for name, parts in kept.items():
            if torch.is_tensor(out.get(name)) and out[name].shape[0] == args[name].shape[0]:
                t = out[name].clone()
                for rows, value in parts:
                    if t[rows].shape != value.shape:
                        raise GuidanceConfigError(f"SLG: block {key[0]}.{key[1]} changes the shape of '{name}'; it cannot be skipped")
                    t[rows] = value
                out[name] = t
        return out

    return patch


class Probe:
    """Counts how often each perturbed block ran on a perturbed row."""

    def __init__(self):
        self.hits = {}

    def hit(self, key):
        self.hits[key] = self.hits.get(key, 0) + 1


def patched_options(model_options: dict, by_chunk: dict, probe: Probe, whole: bool = False) -> dict:
    """A copy of model_options whose blocks perturb the chunks in by_chunk ({cond index: Perturbation}); whole:
    every row of every call (a call of one perturbed term's rows, by_chunk = {0: its Perturbation})."""
    opts = comfy.model_patcher.create_model_options_clone(model_options)
    blocks = {b: p.mode for p in by_chunk.values() for b in p.blocks}
    replace = opts.get("transformer_options", {}).get("patches_replace", {})
    for (part, idx), mode in blocks.items():
        if mode == "slg":
            key = (DIT_KEYS[part], idx)
            prev = replace.get("dit", {}).get(key)
            opts = comfy.model_patcher.set_model_options_patch_replace(
                opts, _dit_patch(prev, by_chunk, (part, idx), probe, whole), "dit", DIT_KEYS[part], idx)
        else:
            prev = replace.get("attn1", {}).get((part, idx))
            opts = comfy.model_patcher.set_model_options_patch_replace(
                opts, _attn1_patch(prev, by_chunk, (part, idx), probe, whole), "attn1", part, idx)
    return opts
