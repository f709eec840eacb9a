"""NAG terms in ComfyUI (formula and forms in guidance_core/nag.py): per step, a copy of the model options carries
the patches that apply NAG to the positive prompt's rows (chunk 0 of the batch: the runtime evaluates the positive
first) and leave every other row as it is.

- paper form (UNet cross-attention: SD1.5, SDXL, the toy model): `patches_replace["attn2"][(part, index)]` of every
  UNet block with a transformer; the patch computes the block's own attention for every row, and for the positive
  rows also Z- = Attn(Q, to_k(c-), to_v(c-)) with the negative prompt's context c-, then NAG before the output
  projection. Cost per cross-attention layer: the key/value projections of the negative prompt's tokens and one
  attention of the positive rows' queries over them; no row of the negative prompt.
- comfyui form: `transformer_patches["attn1_output_patch"]`, the hook ComfyUI's NAGuidance sets, with the same
  arithmetic, on the rows of the positive (chunk 0) and of the NAG negative prompt (its chunk in the batch), wherever
  the network's blocks call that hook (UNet transformers; Flux and Chroma double and single blocks on ComfyUI 0.33).
  On joint-attention blocks (an `img_slice`) NAGuidance also writes the guided image features into the negative
  rows; this form does the same, so a workflow moves from NAGuidance without its images changing.
"""
from __future__ import annotations

import functools
import inspect

import torch

import comfy.model_patcher

from ..guidance_core import nag as nag_core
from ..guidance_core.errors import GuidanceConfigError
from . import perturbation_patches as perturb_patches

POSITIVE_CHUNK = 0  # the runtime's batch order: the positive prompt first


@functools.lru_cache(maxsize=256)
def _reads_attn1_output_patch(cls) -> bool:
    try:
        return "attn1_output_patch" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def comfyui_form_blocks(network) -> int:
    """How many blocks of this network call ComfyUI's attn1_output_patch hook (where NAGuidance acts)."""
    return sum(1 for m in network.modules() if _reads_attn1_output_patch(type(m)))


def cross_attention_keys(network) -> list[tuple]:
    """(part, index, transformer) of every UNet transformer with a cross-attention layer (attn2)."""
    keys = []
    for part, idx in perturb_patches.available_blocks(network, "pag"):
        for t in range(perturb_patches.transformer_count(network, part, idx)):
            if perturb_patches.self_attention_layers(network, part, idx, t, "attn2"):
                keys.append((part, idx, t))
    return keys


def check_supported(model_patcher, settings: nag_core.NAGSettings, term_no: int) -> None:
    """Refuse, before sampling, a NAG term whose form this model's network does not have a place for."""
    net = model_patcher.model.diffusion_model
    name = type(net).__name__
    if settings.form == "comfyui":
        if comfyui_form_blocks(net) == 0:
            raise GuidanceConfigError(
                f"term {term_no} (nag, form comfyui): {name}'s blocks do not call ComfyUI's attn1_output_patch hook in "
                "this ComfyUI, so ComfyUI's NAGuidance has no effect on this model (it only doubles the rows); use "
                "form paper where this model has one, or a CFG term")
        return
    keys = cross_attention_keys(net)
    if not keys:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): the paper form acts on UNet cross-attention (SD1.5, SDXL, the toy model) "
            f"and {name} has none; on Flux and Chroma use form comfyui (ComfyUI's NAGuidance)")
    for part, idx, t in keys:
        if len(perturb_patches.self_attention_layers(net, part, idx, t, "attn2")) > 1:
            raise GuidanceConfigError(
                f"term {term_no} (nag, form paper): block {part}.{idx} runs several cross-attention layers under one "
                "patch key (a spatial and a temporal transformer); the paper form cannot tell them apart on this model")
    other = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    if other:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): another node set cross-attention replace patches on this model "
            f"({', '.join('.'.join(map(str, k)) for k in list(other)[:4])}; e.g. IPAdapter); the paper form replaces "
            "cross-attention too: use form comfyui, or NAG without that node")


class Probe:
    """Counts the calls in which NAG acted on positive rows (a backstop: a hook never reached is an error)."""

    def __init__(self):
        self.hits = 0


class PaperCache:
    """What the paper form's patches reuse through a run: the network's cross-attention keys and layers, and each
    layer's keys and values of the negative prompt (they depend on neither x nor sigma)."""

    def __init__(self, network):
        self.network = network
        self.keys = cross_attention_keys(network)
        self.layers = {k: perturb_patches.self_attention_layers(network, *k, "attn2")[0] for k in self.keys}
        self.kv, self.context = {}, None

    def negative_kv(self, key, context, rows: int, like: torch.Tensor):
        """to_k(c-), to_v(c-) of layer `key` for `rows` rows, in the dtype and device of `like`."""
        if self.context is not context:
            self.kv, self.context = {}, context
        slot = (key, rows, like.dtype, like.device)
        if slot not in self.kv:
            ctx = context.to(device=like.device, dtype=like.dtype)
            if ctx.shape[0] != rows:
                if ctx.shape[0] != 1:
                    raise GuidanceConfigError(f"nag: the negative prompt's batch of {ctx.shape[0]} does not match the "
                                              f"{rows} rows of the positive; use a batch of 1 or {rows}")
                ctx = ctx.expand(rows, *ctx.shape[1:])
            layer = self.layers[key]
            self.kv[slot] = (layer.to_k(ctx), layer.to_v(ctx))
        return self.kv[slot]


def _chunk_rows(n_rows: int, ids, chunk) -> slice:
    size = n_rows // len(ids)
    j = ids.index(chunk)
    return slice(j * size, (j + 1) * size)


def _attn2_patch(cache: PaperCache, block, neg_context, scale, settings, probe):
    """Cross-attention of UNet block `block`: every row as the block computes it; the positive rows with NAG
    against Attn(Q, to_k(c-), to_v(c-))."""
    backends = {}

    def patch(q, k, v, extra_options):
        t = extra_options.get("block_index", 0)
        if t not in backends:
            backends[t] = perturb_patches.attention_backend(cache.network, block[0], block[1], t, "attn2")
        z = perturb_patches.block_attention(q, k, v, extra_options, backends[t])
        ids = list(extra_options.get("cond_or_uncond") or ())
        mine = [j for j, c in enumerate(ids) if c == POSITIVE_CHUNK]  # every entry of the positive (combined prompts)
        if not mine:
            return z
        size = q.shape[0] // len(ids)
        k_neg, v_neg = cache.negative_kv((*block, t), neg_context, size, q)
        z = z.clone()
        for j in mine:
            rows = slice(j * size, (j + 1) * size)
            z_neg = perturb_patches.block_attention(q[rows], k_neg, v_neg, extra_options, backends[t])
            z[rows] = nag_core.nag_attention(z[rows], z_neg, scale, settings.tau, settings.alpha)
        probe.hits += 1
        return z

    return patch


def _attn1_output_patch(neg_chunk: int, scale, settings, probe):
    """ComfyUI's NAGuidance patch with the NAG negative at chunk `neg_chunk` (NAGuidance: always chunk 1)."""

    def patch(out, extra_options):
        ids = list(extra_options.get("cond_or_uncond") or ())
        if POSITIVE_CHUNK not in ids or neg_chunk not in ids:
            return out
        probe.hits += 1
        img = extra_options.get("img_slice")
        view = out[:, img[0]:img[1]] if img is not None else out
        pos = _chunk_rows(out.shape[0], ids, POSITIVE_CHUNK)
        neg = _chunk_rows(out.shape[0], ids, neg_chunk)
        z = nag_core.nag_attention(view[pos], view[neg], scale, settings.tau, settings.alpha)
        if img is not None:  # as NAGuidance: the guided image features go to the negative rows too
            out[neg, img[0]:img[1]] = z
            out[pos, img[0]:img[1]] = z
        else:
            out[pos] = z
        return out

    return patch


def negative_context(cond_list, term_no: int) -> torch.Tensor:
    """The cross-attention context of the NAG negative prompt, from ComfyUI's processed conds."""
    if len(cond_list) != 1:
        raise GuidanceConfigError(f"term {term_no} (nag, form paper): its negative prompt has {len(cond_list)} entries "
                                  "(areas, masks or timestep ranges); the paper form takes a single prompt")
    c = cond_list[0].get("model_conds", {}).get("c_crossattn")
    if c is None:
        raise GuidanceConfigError(f"term {term_no} (nag, form paper): its negative prompt has no cross-attention "
                                  "context for this model")
    return c.cond


def patched_options(model_options: dict, cache: PaperCache | None, settings, scale: float, probe: Probe,
                    neg_context=None, neg_chunk: int | None = None) -> dict:
    """A copy of model_options with NAG at s = `scale` on the positive rows: the paper form's attn2 patches (with
    the negative prompt's context and the run's PaperCache) or the comfyui form's attn1 output patch (with the
    negative prompt's chunk)."""
    opts = comfy.model_patcher.create_model_options_clone(model_options)
    if settings.form == "comfyui":
        patches = opts.setdefault("transformer_options", {}).setdefault("patches", {})
        patches["attn1_output_patch"] = list(patches.get("attn1_output_patch", [])) + [
            _attn1_output_patch(neg_chunk, scale, settings, probe)]
        return opts
    for part, idx in dict.fromkeys((p, i) for p, i, _ in cache.keys):
        opts = comfy.model_patcher.set_model_options_patch_replace(
            opts, _attn2_patch(cache, (part, idx), neg_context, scale, settings, probe), "attn2", part, idx)
    return opts


def check_ran(probe: Probe, network, term_no: int, settings) -> None:
    if probe.hits == 0:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form {settings.form}): NAG never reached the positive prompt's rows in "
            f"{type(network).__name__}: "
            + ("the positive and the negative prompt ran in separate model calls (ComfyUI splits a batch that does not "
               "fit in memory; ComfyUI's NAGuidance then silently does nothing); use the paper form or a smaller batch"
               if settings.form == "comfyui" else "another node runs the model's batches its own way; remove that node")
            + ", or the model does not call the hook")
