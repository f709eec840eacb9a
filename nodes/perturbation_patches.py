"""Perturbed-self terms in ComfyUI (PAG, SEG, SLG, TPG, STG; formulas in guidance_core/perturbed_terms.py), batched with the
prompt rows: per step, a copy of the model options carries replace patches on the chosen blocks that perturb
only the rows of the perturbed terms' chunks (`cond_or_uncond`) and compute every other row as the unpatched
block does (or as the replace patch another node set there does).

- PAG / SEG: `patches_replace["attn1"][(part, index)]` of ComfyUI's UNet transformer blocks, the hook ComfyUI's
  PerturbedAttentionGuidance node uses. ComfyUI looks a transformer's attn1 patch up by the 3-part key
  (part, index, transformer index) first: where another node set one (Self-Attention Guidance sets
  ("middle", 0, 0)), the term's patch is set under that key too, wrapping it. The composition: the term's rows
  are perturbed at every transformer of the block; every other row runs what it would run without the term
  (the other node's patch, told exactly the chunks it gets, or the block's own attention with the layer's own
  attention backend where ComfyUI has per-layer backends).
- SLG: `patches_replace["dit"][("double_block" | "single_block", index)]`, the hook of SkipLayerGuidanceDiT.
- TPG: a `middle_patch` of ComfyUI's UNet transformer blocks (called with the block's hidden states after the
  self-attention's residual), acting on the blocks and rows of the term: h -> P h there. Shuffling the
  transformer's input instead (the paper's place) gives P times the same output: every layer of a SD UNet
  transformer acts per token except the self-attention, which has no positional encoding and is
  permutation-equivariant (attn(P n) = P attn(n)), so the two places give the same numbers up to the order of
  float sums in the attention.
- STG: the DiT block's `dit` replace patch runs the block with an `optimized_attention_override` in its
  transformer_options that returns V, for the term's rows, on the block's first attention call (its
  self-attention in LTXV and Wan blocks, checked: query and key token counts equal), and calls the attention
  (or the override another node set) for every other row and call. ComfyUI 0.3.75 and newer route attention
  through the override; where the block's attention never reaches it, `check_ran` refuses the term.
A block the model does not have would leave the term unperturbed: `check_blocks` refuses it before sampling,
and `Probe` records, per block, the transformers that ran on perturbed rows: `check_ran` refuses a block (or a
transformer of it) that never did, as a backstop.
"""

from __future__ import annotations

import functools
import inspect

import torch

import comfy.ldm.modules.attention as attention
import comfy.model_patcher

from ..guidance_core import perturbed_terms
from ..guidance_core.errors import GuidanceConfigError

DIT_KEYS = {"double": "double_block", "single": "single_block"}
# the attribute holding each DiT's blocks that read patches_replace["dit"] (Flux, Chroma, HunyuanVideo: both kinds;
# MMDiT (SD3.x): joint_blocks; Wan, LTXV, Lumina...: blocks)
DIT_BLOCK_LISTS = {
    "double": ("double_blocks", "joint_blocks", "blocks", "transformer_blocks"),
    "single": ("single_blocks",),
}


def _has_attention(block) -> bool:
    return any(isinstance(m, attention.BasicTransformerBlock) for m in block.modules())


def available_blocks(diffusion_model, mode: str) -> list[tuple]:
    """The blocks of this network a perturbation of `mode` can act on."""
    if mode in perturbed_terms.DIT_MODES:
        out = []
        for part, names in DIT_BLOCK_LISTS.items():
            blocks = next(
                (
                    getattr(diffusion_model, n)
                    for n in names
                    if isinstance(getattr(diffusion_model, n, None), torch.nn.ModuleList)
                ),
                None,
            )
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
    """Refuse, before sampling, a perturbation whose blocks this model does not have, or whose self-attention
    layers under one hook key run different attention backends (the patch could not tell which to call)."""
    net = model_patcher.model.diffusion_model
    for term_no, pert in perturbations:
        have = available_blocks(net, pert.mode)
        missing = [b for b in pert.blocks if b not in have]
        if missing:
            shown = ", ".join(f"{p}.{i}" for p, i in have[:24]) + (" ..." if len(have) > 24 else "")
            kind = (
                "DiT transformer blocks (SLG, STG)"
                if pert.mode in perturbed_terms.DIT_MODES
                else "UNet self-attention blocks (PAG, SEG, TPG)"
            )
            hint = ""
            if not have:
                hint = (
                    ". PAG and SEG need a UNet, as does TPG; for DiT models use slg or stg"
                    if pert.mode in perturbed_terms.UNET_MODES
                    else ". SLG and STG act on DiT blocks that ComfyUI's 'dit' replace hook reaches; for UNet models "
                    "use pag, seg or tpg"
                )
            raise GuidanceConfigError(
                f"term {term_no} ({pert.mode}): block(s) {', '.join(f'{p}.{i}' for p, i in missing)} not in this model "
                f"({type(net).__name__}); its {kind}: {shown or 'none'}" + hint
            )
        if pert.mode in perturbed_terms.DIT_MODES:
            unhooked = [part for part in dict.fromkeys(p for p, _ in pert.blocks) if not _calls_dit_hook(net, part)]
            if unhooked:
                raise GuidanceConfigError(
                    f"term {term_no} ({pert.mode}): {type(net).__name__} does not call ComfyUI's 'dit' replace hook for "
                    f"its {', '.join(DIT_KEYS[p] for p in unhooked)}s, so {pert.mode} cannot reach them; this model "
                    "takes no SLG / STG"
                )
        if pert.mode == "stg" and not hasattr(attention, "wrap_attn"):
            raise GuidanceConfigError(
                f"term {term_no} (stg): this ComfyUI's attention functions take no optimized_attention_override (ComfyUI "
                "0.3.75 and newer have it), so STG cannot reach the blocks' self-attention: update ComfyUI"
            )
        if pert.mode in ("pag", "seg"):
            for part, idx in pert.blocks:
                for t in range(transformer_count(net, part, idx)):
                    attention_backend(net, part, idx, t)


def _calls_dit_hook(network, part: str) -> bool:
    """Whether the network's code looks its blocks up in patches_replace["dit"] under DIT_KEYS[part] (its forward,
    in its class or a base class); True where the code cannot be read (check_ran is then the backstop)."""
    for cls in type(network).__mro__:
        if cls in (torch.nn.Module, object):
            continue
        try:
            if f'"{DIT_KEYS[part]}"' in inspect.getsource(cls) or f"'{DIT_KEYS[part]}'" in inspect.getsource(cls):
                return True
        except (OSError, TypeError):
            return True
    return False


def _unet_block(network, part: str, idx: int):
    return network.middle_block if part == "middle" else getattr(network, f"{part}_blocks")[idx]


def self_attention_layers(network, part: str, idx: int, transformer: int, attr: str = "attn1") -> list:
    """The self-attention layers (attn1; attr="attn2": the cross-attention layers) ComfyUI runs under the key
    (part, idx, transformer): the transformer-th block of each spatial transformer in that UNet block (and of its
    temporal stack, for video UNets, which ComfyUI calls under the same key)."""
    out = []
    for m in _unet_block(network, part, idx).modules():
        for name in ("transformer_blocks", "time_stack"):
            blocks = getattr(m, name, None)
            if isinstance(blocks, torch.nn.ModuleList) and transformer < len(blocks):
                layer = getattr(blocks[transformer], attr, None)
                if layer is not None:
                    out.append(layer)
    return out


def transformer_count(network, part: str, idx: int) -> int:
    """How many transformers of UNet block (part, idx) ComfyUI calls (block_index 0 .. n-1)."""
    return max(
        (
            len(m.transformer_blocks)
            for m in _unet_block(network, part, idx).modules()
            if isinstance(getattr(m, "transformer_blocks", None), torch.nn.ModuleList)
        ),
        default=0,
    )


def attention_backend(network, part: str, idx: int, transformer: int, attr: str = "attn1"):
    """The attention backend that block's own CrossAttention passes to optimized_attention (ComfyUI 0.38+:
    `preferred_attention=self.comfy_attention`, a per-layer backend a checkpoint can set); None where this
    ComfyUI's layers have none (0.3.x, 0.33) or the network is not known."""
    if network is None:
        return None
    layers = self_attention_layers(network, part, idx, transformer, attr)
    backends = [getattr(layer, "comfy_attention", None) for layer in layers]
    if not backends or backends[0] is None:
        return None
    if len({id(getattr(b, "function", None)) for b in backends}) > 1:
        raise GuidanceConfigError(
            f"block {part}.{idx}, transformer {transformer}: its {attr} layers run different attention backends under "
            "one patch key (a spatial and a temporal layer); a patch there cannot call the right one for each"
        )
    return backends[0]


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


def block_attention(q, k, v, extra_options, backend=None):
    """What CrossAttention.forward computes between to_q/to_k/to_v and to_out: ComfyUI's optimized_attention
    (ComfyUI 0.3.75 passes transformer_options on, for attention overrides; 0.3.52's functions take none), with
    the layer's own attention backend where this ComfyUI has one (`attention_backend`)."""
    fn = attention.optimized_attention
    kw = {"attn_precision": extra_options.get("attn_precision")}
    if _takes_transformer_options(fn):
        kw["transformer_options"] = extra_options
    if backend is not None:
        kw["preferred_attention"] = backend
    return fn(q, k, v, extra_options["n_heads"], **kw)


PER_CHUNK = ("cond_or_uncond", "uuids")  # transformer options ComfyUI gives one entry per chunk of the batch


def chunk_options(extra_options: dict, first: int, stop: int, n_chunks: int) -> dict:
    """The options of the chunks first..stop-1 alone: what ComfyUI gives a patch called on a batch of those
    chunks (SAG finds the uncond's rows from cond_or_uncond)."""
    out = dict(extra_options)
    for name in PER_CHUNK:
        value = extra_options.get(name)
        if isinstance(value, (list, tuple)) and len(value) == n_chunks:
            out[name] = list(value[first:stop])
    return out


def _attn1_patch(prev, by_chunk: dict, key, probe, whole: bool = False, network=None):
    """attn1 replacement for UNet block `key` (at every transformer without a patch of its own, or at one
    transformer where `prev`, another node's 3-part patch, sat): perturbed chunks get PAG's identity (V) or
    SEG's blurred queries; the other chunks what they get without the term, `prev` (told their chunk ids) or
    the block's own attention with its layer's backend."""
    backends = {}

    def attend(q, k, v, extra_options):
        if prev is not None:
            return prev(q, k, v, extra_options)
        t = extra_options.get("block_index", 0)
        if t not in backends:
            backends[t] = attention_backend(network, key[0], key[1], t)
        return block_attention(q, k, v, extra_options, backends[t])

    def patch(q, k, v, extra_options, mask=None):
        ids = _chunk_ids(extra_options, whole) or [0]  # whole: the batch is one chunk of the term (id 0)
        mine = {c: p for c, p in by_chunk.items() if key in p.blocks and p.mode in ("pag", "seg")}
        if not any(c in mine for c in ids):
            return attend(q, k, v, extra_options)
        probe.hit(key, extra_options.get("block_index"))
        if q.shape[0] % len(ids):
            raise GuidanceConfigError(
                f"block {key[0]}.{key[1]}: {q.shape[0]} rows do not split into {len(ids)} equal chunks"
            )
        size = q.shape[0] // len(ids)
        outs, plain = [], []

        def part(first, stop):  # rows and options of chunks first..stop-1
            rows = slice(first * size, stop * size)
            return rows, (extra_options if whole else chunk_options(extra_options, first, stop, len(ids)))

        def flush():
            if plain:
                rows, opts = part(plain[0], plain[-1] + 1)
                outs.append(attend(q[rows], k[rows], v[rows], opts))
                plain.clear()

        for j, c in enumerate(ids):
            pert = mine.get(c)
            if pert is None:
                plain.append(j)
                continue
            flush()
            rows, opts = part(j, j + 1)
            if pert.mode == "pag":
                outs.append(v[rows])
            else:  # seg
                h, w = extra_options["activations_shape"][-2:]
                outs.append(attend(perturbed_terms.blur_queries(q[rows], h, w, pert.seg_sigma), k[rows], v[rows], opts))
        flush()
        return torch.cat(outs)

    return patch


def _dit_patch(prev, by_chunk: dict, key, probe, whole: bool = False):
    """DiT block replacement: SLG chunks keep the block's input (the block is skipped), STG chunks get the block
    with the self-attention's map replaced by the identity (`_stg_override`), the others the block's output (or
    `prev`'s)."""

    def patch(args, extra):
        run = (lambda a: prev(a, extra)) if prev is not None else extra["original_block"]
        ids = _chunk_ids(args.get("transformer_options") or extra.get("transformer_options"), whole) or [0]
        mine = {c: by_chunk[c].mode for c in ids if c in by_chunk and key in by_chunk[c].blocks}
        skip = {c for c, mode in mine.items() if mode == "slg"}
        stg = [j for j, c in enumerate(ids) if mine.get(c) == "stg"]
        if not mine:
            return run(args)
        if stg:
            options = dict(args.get("transformer_options") or {})
            options["optimized_attention_override"] = _stg_override(
                options.get("optimized_attention_override"), stg, len(ids), key, probe
            )
            args = dict(args, transformer_options=options)
        if not skip:
            return run(args)
        probe.hit(key)
        # the block's input rows of the skipped chunks, copied first: some blocks (Flux's) update their input in place
        kept = {
            name: [(rows, args[name][rows].clone()) for rows in perturbed_terms.rows_of(args[name].shape[0], ids, skip)]
            for name in ("img", "txt", "x")
            if torch.is_tensor(args.get(name))
        }
        out = dict(run(args))
        for name, parts in kept.items():
            if torch.is_tensor(out.get(name)) and out[name].shape[0] == args[name].shape[0]:
                t = out[name].clone()
                for rows, value in parts:
                    if t[rows].shape != value.shape:
                        raise GuidanceConfigError(
                            f"SLG: block {key[0]}.{key[1]} changes the shape of '{name}'; it cannot be skipped"
                        )
                    t[rows] = value
                out[name] = t
        return out

    return patch


def _values_as_output(v, heads: int, kwargs) -> torch.Tensor:
    """V in the layout the attention function returns, [B, N, heads * d] (or [B, heads, N, d] with
    skip_output_reshape), from V as the block passes it: [B, N, heads * d] or [B, N, heads, d] (MMDiT), or with
    skip_reshape [B, heads, N, d]."""
    if kwargs.get("skip_reshape"):
        return v if kwargs.get("skip_output_reshape") else v.transpose(1, 2).reshape(v.shape[0], v.shape[2], -1)
    out = v.reshape(v.shape[0], v.shape[1], -1)
    return out if not kwargs.get("skip_output_reshape") else out.view(v.shape[0], v.shape[1], heads, -1).transpose(1, 2)


def _stg_override(prev, chunks: list, n_chunks: int, key, probe):
    """optimized_attention_override for one call of DiT block `key`: on the block's first attention call (its
    self-attention) the rows of `chunks` get V (PAG's identity map, ComfyUI's STG passthrough `out = v`); every
    other row and call gets the attention (through `prev`, another node's override, where one is set)."""
    calls = [0]

    def override(func, q, k, v, heads, *args, **kwargs):
        def attend(q_, k_, v_, **kw):
            return (
                prev(func, q_, k_, v_, heads, *args, **kw) if prev is not None else func(q_, k_, v_, heads, *args, **kw)
            )

        calls[0] += 1
        if calls[0] != 1:
            return attend(q, k, v, **kwargs)
        tokens = 2 if kwargs.get("skip_reshape") else 1
        if q.shape[tokens] != k.shape[tokens]:
            raise GuidanceConfigError(
                f"STG: the first attention of block {key[0]}.{key[1]} is not a self-attention ({q.shape[tokens]} queries, "
                f"{k.shape[tokens]} keys); STG acts on video DiT blocks that start with their self-attention (LTXV, Wan)"
            )
        if q.shape[0] % n_chunks:
            raise GuidanceConfigError(
                f"STG: block {key[0]}.{key[1]}: {q.shape[0]} rows do not split into {n_chunks} equal chunks"
            )
        probe.hit(key)
        size = q.shape[0] // n_chunks
        passthrough = _values_as_output(v, heads, kwargs)
        if len(chunks) == n_chunks:
            return passthrough
        keep = torch.ones(q.shape[0], dtype=torch.bool, device=q.device)
        for j in chunks:
            keep[j * size : (j + 1) * size] = False
        mask = kwargs.get("mask")
        if mask is None:  # the attention of the other rows only
            out = passthrough.clone()
            out[keep] = attend(q[keep], k[keep], v[keep], **kwargs)
            return out
        out = attend(q, k, v, **kwargs).clone()  # a mask: the whole batch, as it is given
        out[~keep] = passthrough[~keep]
        return out

    return override


def _tpg_middle_patch(by_chunk: dict, probe, whole: bool = False):
    """middle_patch of ComfyUI's UNet transformer blocks: the hidden states of the TPG chunks' rows, in their
    blocks, shuffled along the tokens (perturbed_terms.token_permutation, per transformer and step); every other row as
    it is."""

    def patch(x, extra_options):
        block = extra_options.get("block")
        if block is None:
            return x
        key = (block[0], block[1])
        ids = _chunk_ids(extra_options, whole) or [0]
        mine = [
            j for j, c in enumerate(ids) if c in by_chunk and by_chunk[c].mode == "tpg" and key in by_chunk[c].blocks
        ]
        if not mine:
            return x
        t = extra_options.get("block_index", 0)
        probe.hit(key, t)
        if x.shape[0] % len(ids):
            raise GuidanceConfigError(
                f"TPG: block {key[0]}.{key[1]}: {x.shape[0]} rows do not split into {len(ids)} equal chunks"
            )
        sigmas = extra_options.get("sigmas")
        sigma = float(sigmas.reshape(-1)[0]) if torch.is_tensor(sigmas) and sigmas.numel() else 0.0
        perm = perturbed_terms.token_permutation(x.shape[1], sigma, key, t, device=x.device)
        size = x.shape[0] // len(ids)
        out = x.clone()
        for j in mine:
            rows = slice(j * size, (j + 1) * size)
            out[rows] = perturbed_terms.shuffle_tokens(x[rows], perm)
        return out

    return patch


class Probe:
    """Counts how often each perturbed block ran on a perturbed row, and which of its transformers did."""

    def __init__(self):
        self.hits = {}
        self.transformers = {}

    def hit(self, key, transformer=None):
        self.hits[key] = self.hits.get(key, 0) + 1
        if transformer is not None:
            self.transformers.setdefault(key, set()).add(transformer)


def check_ran(probe: Probe, network, term_no: int, pert) -> None:
    """Refuse a term whose perturbation did not act where it says, after the first call that had its rows: a
    block that never ran on them (the model does not call that hook), or a UNet block some of whose
    transformers ran something else on them (an attention patch set where the term could not wrap it)."""
    missed = ", ".join(f"{p}.{i}" for p, i in pert.blocks if probe.hits.get((p, i), 0) == 0)
    if missed:
        hook = {
            "slg": "'dit' replace hook",
            "stg": "'dit' replace hook with an optimized_attention_override",
            "tpg": "transformer 'middle_patch'",
        }.get(pert.mode, "'attn1' replace hook")
        raise GuidanceConfigError(
            f"term {term_no} ({pert.mode}): block(s) {missed} never ran on its rows in {type(network).__name__}: the "
            f"model does not call ComfyUI's {hook} there; perturb other blocks"
        )
    if pert.mode in perturbed_terms.DIT_MODES or network is None:
        return
    for part, idx in pert.blocks:
        skipped = sorted(set(range(transformer_count(network, part, idx))) - probe.transformers.get((part, idx), set()))
        if skipped:
            raise GuidanceConfigError(
                f"term {term_no} ({pert.mode}): transformer(s) {', '.join(map(str, skipped))} of block {part}.{idx} "
                "ran another attention patch on the term's rows instead of the perturbation (a patch set while the "
                "model runs, e.g. by a model wrapper of another node); remove that node or perturb other blocks"
            )


def patched_options(model_options: dict, by_chunk: dict, probe: Probe, whole: bool = False, network=None) -> dict:
    """A copy of model_options whose blocks perturb the chunks in by_chunk ({cond index: Perturbation}); whole:
    every row of every call (a call of one perturbed term's rows, by_chunk = {0: its Perturbation}). network:
    the diffusion model, for the attention backend of each layer (ComfyUI 0.38+).

    A UNet block's patch is set under its 2-part key (part, index) and under every 3-part key (part, index,
    transformer) another node set for it, which ComfyUI looks up first; each wraps the patch it replaces."""
    opts = comfy.model_patcher.create_model_options_clone(model_options)
    blocks = {}  # block -> the modes acting there
    for p in by_chunk.values():
        for b in p.blocks:
            blocks.setdefault(b, set()).add(p.mode)
    replace = opts.get("transformer_options", {}).get("patches_replace", {})
    for (part, idx), modes in blocks.items():
        if modes & set(perturbed_terms.DIT_MODES):
            key = (DIT_KEYS[part], idx)
            prev = replace.get("dit", {}).get(key)
            opts = comfy.model_patcher.set_model_options_patch_replace(
                opts, _dit_patch(prev, by_chunk, (part, idx), probe, whole), "dit", DIT_KEYS[part], idx
            )
        if not modes & {"pag", "seg"}:
            continue
        attn1 = replace.get("attn1", {})
        for t in [None] + [k[2] for k in attn1 if len(k) == 3 and tuple(k[:2]) == (part, idx)]:
            prev = attn1.get((part, idx) if t is None else (part, idx, t))
            opts = comfy.model_patcher.set_model_options_patch_replace(
                opts, _attn1_patch(prev, by_chunk, (part, idx), probe, whole, network), "attn1", part, idx, t
            )
    if any("tpg" in modes for modes in blocks.values()):
        patches = opts.setdefault("transformer_options", {}).setdefault("patches", {})  # opts is a nested copy
        patches["middle_patch"] = list(patches.get("middle_patch", [])) + [_tpg_middle_patch(by_chunk, probe, whole)]
    return opts
