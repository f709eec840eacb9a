"""NAG terms in ComfyUI (formula and forms in guidance_core/nag.py): per step, a copy of the model options carries
the patches that apply NAG to the positive prompt's rows (chunk 0 of the batch: the runtime evaluates the positive
first) and leave every other row as it is.

- paper form (UNet cross-attention: SD1.5, SDXL, the toy model): `patches_replace["attn2"][(part, index)]` of every
  UNet block with a transformer; the patch computes the block's own attention for every row, and for the positive
  rows also Z- = Attn(Q, to_k(c-), to_v(c-)) with the negative prompt's context c-, then NAG before the output
  projection. Cost per cross-attention layer: the key/value projections of the negative prompt's tokens and one
  attention of the positive rows' queries over them; no row of the negative prompt.
- paper form on a DiT with a cross-attention of its own (Wan 2.x text-to-video: WanT2VCrossAttention): an object
  patch of each block's cross-attention `forward` (so another node's block replace patches, e.g. SLG, still work),
  inert unless the step's transformer_options carry this term (TRANSFORMER_KEY). For the positive rows it computes
  the layer's Q, K, V as the layer does, Z+ = Attn(Q, K, V) and Z- = Attn(Q, norm_k(k(c-)), v(c-)) with c- the
  negative prompt through the network's text embedding, then NAG and the output projection; the other rows run the
  layer's own forward. Cost per block: one attention of the positive rows' queries over the negative's text tokens
  (the negative's keys and values are computed once per run); no row of the negative prompt.
- paper form on a joint-attention DiT (text and image tokens in one attention: SD3.5, Flux, Chroma, Qwen-Image,
  Lumina 2, HunyuanVideo): the text enters every block's attention as a stream of its own, so Z- needs the negative
  prompt's text stream carried through every block. The runtime adds a shadow row per positive row (SHADOW_KEY): the
  positive's conds with the text tokens (c_crossattn, attention_mask, num_tokens) of the negative prompt; pooled
  vector, guidance, timestep and x stay the positive's. At every attention call that holds text and image tokens an
  `optimized_attention_override` (ComfyUI 0.3.75 and newer) writes Z = NAG(Z+, Z-) of the image tokens into both rows,
  so the two rows keep one image stream (checked at every call) while each carries its own text stream. The shadow's
  prediction equals the positive's and is dropped. Cost: one more row per step (the image stream runs twice because
  each family's block computes both streams together; carrying the text stream alone would mean rewriting every
  family's block).
- comfyui form: `transformer_patches["attn1_output_patch"]`, the hook ComfyUI's NAGuidance sets, with the same
  arithmetic, on the rows of the positive (chunk 0) and of the NAG negative prompt (its chunk in the batch), wherever
  the network's blocks call that hook (UNet transformers; Flux and Chroma double and single blocks on ComfyUI 0.33).
  On joint-attention blocks (an `img_slice`) NAGuidance also writes the guided image features into the negative
  rows; this form does the same, so a workflow moves from NAGuidance without its images changing.
"""

from __future__ import annotations

import functools
import inspect
import uuid

import torch

import comfy.ldm.modules.attention
import comfy.model_patcher

from ..guidance_core import nag as nag_core
from ..guidance_core.errors import GuidanceConfigError
from . import sampling_facts
from . import perturbation_patches

POSITIVE_CHUNK = 0  # the runtime's batch order: the positive prompt first
TRANSFORMER_KEY = "guidance_lab_nag"  # transformer_options entry with the step's NagCall (the DiT paper form)
DIT_CROSS_ATTENTION = ("WanT2VCrossAttention",)  # classes whose forward the DiT paper form reimplements
SHADOW_KEY = "guidance_lab_nag_shadow"  # cond key (and batch entry) of the joint-attention paper form's shadow rows
# joint-attention DiTs (network class names); text tokens first in each joint attention call unless text_first() says
JOINT_ATTENTION = (
    "OpenAISignatureMMDITWrapper",  # SD3 / SD3.5 MMDiT
    "Flux",
    "Chroma",
    "QwenImageTransformer2DModel",
    "NextDiT",  # Lumina 2
    "HunyuanVideo",
)
TEXT_CONDS = ("c_crossattn", "attention_mask", "num_tokens")  # the model conds that are the prompt's text tokens
# model conds whose tokens join the text stream (HunyuanVideo 1.5's byT5 glyph tokens, image-to-video's CLIP vision
# tokens): the joint form cannot place them
OTHER_TEXT_CONDS = ("txt_byt5", "clip_fea")


def comfyui_form_blocks(network) -> int:
    """How many blocks of this network call ComfyUI's attn1_output_patch hook (where NAGuidance acts)."""
    return sum(1 for m in network.modules() if sampling_facts.source_mentions(type(m).forward, "attn1_output_patch"))


def cross_attention_keys(network) -> list[tuple]:
    """(part, index, transformer) of every UNet transformer with a cross-attention layer (attn2)."""
    keys = []
    for part, idx in perturbation_patches.available_blocks(network, "pag"):
        for t in range(perturbation_patches.transformer_count(network, part, idx)):
            if perturbation_patches.self_attention_layers(network, part, idx, t, "attn2"):
                keys.append((part, idx, t))
    return keys


def joint_override_available() -> bool:
    """Whether this ComfyUI's attention functions call transformer_options["optimized_attention_override"]."""
    wrap = getattr(comfy.ldm.modules.attention, "wrap_attn", None)
    return wrap is not None and sampling_facts.source_mentions(wrap, "optimized_attention_override")


def check_supported(model_patcher, settings: nag_core.NAGSettings, term_no: int) -> None:
    """Refuse, before sampling, a NAG term whose form this model's network does not have a place for."""
    net = model_patcher.model.diffusion_model
    name = type(net).__name__
    if settings.form == "comfyui":
        if comfyui_form_blocks(net) == 0:
            raise GuidanceConfigError(
                f"term {term_no} (nag, form comfyui): {name}'s blocks do not call ComfyUI's attn1_output_patch hook in "
                "this ComfyUI, so ComfyUI's NAGuidance has no effect on this model (it only doubles the rows); use "
                "form paper where this model has one, or a CFG term"
            )
        return
    keys = cross_attention_keys(net)
    if not keys and dit_cross_attention(net):
        check_dit_cross_attention(net, term_no)
        return
    if not keys and name in JOINT_ATTENTION:
        check_joint(model_patcher, name, term_no)
        return
    if not keys:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): the paper form acts on cross-attention (UNets: SD1.5, SDXL, the toy "
            f"model; DiTs: Wan 2.x text-to-video) or on joint attention ({', '.join(JOINT_ATTENTION)}), and {name} "
            "has neither; use a CFG term"
        )
    for part, idx, t in keys:
        if len(perturbation_patches.self_attention_layers(net, part, idx, t, "attn2")) > 1:
            raise GuidanceConfigError(
                f"term {term_no} (nag, form paper): block {part}.{idx} runs several cross-attention layers under one "
                "patch key (a spatial and a temporal transformer); the paper form cannot tell them apart on this model"
            )
    other = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    if other:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): another node set cross-attention replace patches on this model "
            f"({', '.join('.'.join(map(str, k)) for k in list(other)[:4])}; e.g. IPAdapter); the paper form replaces "
            "cross-attention too: use form comfyui, or NAG without that node"
        )


class Probe:
    """Counts the calls in which NAG acted on positive rows (a backstop: a hook never reached is an error)."""

    def __init__(self):
        self.hits = 0


class PaperCache:
    """What the paper form's patches reuse through a run: the network's cross-attention layers (UNet attn2 by
    (part, index, transformer); a DiT's by object patch name), and each layer's keys and values of the negative prompt
    (they depend on neither x nor sigma), and the negative context as the layers read it (`contexts`: on a DiT, through
    the network's text embedding), per row count, dtype and device."""

    def __init__(self, network):
        self.network = network
        self.keys = cross_attention_keys(network)
        if self.keys:
            self.layers = {k: perturbation_patches.self_attention_layers(network, *k, "attn2")[0] for k in self.keys}
        else:
            self.layers = dict(dit_cross_attention(network))
        self.kv, self.contexts, self.context = {}, {}, None

    def _keys_values(self, layer, ctx):
        if self.keys:
            return layer.to_k(ctx), layer.to_v(ctx)
        return layer.norm_k(layer.k(ctx)), layer.v(ctx)

    def negative_kv(self, key, context, rows: int, like: torch.Tensor):
        """The keys and values of layer `key` for the negative context, `rows` rows, in the dtype and device of `like`."""
        if self.context is not context:
            self.kv, self.contexts, self.context = {}, {}, context
        slot = (key, rows, like.dtype, like.device)
        if slot not in self.kv:
            self.kv[slot] = self._keys_values(self.layers[key], self._context(context, rows, like))
        return self.kv[slot]

    def _context(self, context, rows: int, like: torch.Tensor):
        slot = (rows, like.dtype, like.device)
        if slot not in self.contexts:
            ctx = context.to(device=like.device, dtype=like.dtype)
            if ctx.shape[0] != rows:
                if ctx.shape[0] != 1:
                    raise GuidanceConfigError(
                        f"nag: the negative prompt's batch of {ctx.shape[0]} does not match the "
                        f"{rows} rows of the positive; use a batch of 1 or {rows}"
                    )
                ctx = ctx.expand(rows, *ctx.shape[1:])
            self.contexts[slot] = ctx if self.keys else self.network.text_embedding(ctx)
        return self.contexts[slot]


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
            backends[t] = perturbation_patches.attention_backend(cache.network, block[0], block[1], t, "attn2")
        z = perturbation_patches.block_attention(q, k, v, extra_options, backends[t])
        ids = list(extra_options.get("cond_or_uncond") or ())
        mine = [j for j, c in enumerate(ids) if c == POSITIVE_CHUNK]  # every entry of the positive (combined prompts)
        if not mine:
            return z
        size = q.shape[0] // len(ids)
        k_neg, v_neg = cache.negative_kv((*block, t), neg_context, size, q)
        z = z.clone()
        for j in mine:
            rows = slice(j * size, (j + 1) * size)
            z_neg = perturbation_patches.block_attention(q[rows], k_neg, v_neg, extra_options, backends[t])
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
        view = out[:, img[0] : img[1]] if img is not None else out
        pos = _chunk_rows(out.shape[0], ids, POSITIVE_CHUNK)
        neg = _chunk_rows(out.shape[0], ids, neg_chunk)
        z = nag_core.nag_attention(view[pos], view[neg], scale, settings.tau, settings.alpha)
        if img is not None:  # as NAGuidance: the guided image features go to the negative rows too
            out[neg, img[0] : img[1]] = z
            out[pos, img[0] : img[1]] = z
        else:
            out[pos] = z
        return out

    return patch


# ------------------------------------------------------------------ paper form on a DiT's cross-attention (Wan)
def dit_cross_attention(network) -> list[tuple[str, torch.nn.Module]]:
    """(object patch name, layer) of every block's text cross-attention of a DiT that has one (Wan 2.x)."""
    blocks = getattr(network, "blocks", None)
    if blocks is None or not hasattr(network, "text_embedding"):
        return []
    return [
        (f"diffusion_model.blocks.{i}.cross_attn", b.cross_attn)
        for i, b in enumerate(blocks)
        if type(getattr(b, "cross_attn", None)).__name__ in DIT_CROSS_ATTENTION
    ]


def check_dit_cross_attention(network, term_no: int) -> None:
    """Refuse the DiT paper form where this ComfyUI does not hand the batch's rows to the cross-attention."""
    layers = dit_cross_attention(network)
    if len(layers) != len(network.blocks):
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): some blocks of {type(network).__name__} have another cross-attention "
            "than Wan's text-to-video one (image-to-video adds CLIP image tokens); the paper form covers text-to-video"
        )
    forward = type(layers[0][1]).forward
    if "transformer_options" not in inspect.signature(forward).parameters:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): in this ComfyUI, {type(layers[0][1]).__name__} does not receive the "
            "batch's transformer_options, so the paper form cannot tell the positive rows (ComfyUI 0.3.75 and newer "
            "pass them): update ComfyUI"
        )


def install_dit_patches(model_patcher) -> None:
    """Object patches of each block's cross-attention forward (inert without the step's TRANSFORMER_KEY)."""
    for name, layer in dit_cross_attention(model_patcher.model.diffusion_model):
        model_patcher.add_object_patch(f"{name}.forward", _dit_cross_attention_forward(layer, name))


class NagCall:
    """What one step's DiT cross-attention patches read from transformer_options."""

    def __init__(self, cache: "PaperCache", context, scale: float, settings, probe: Probe):
        self.cache, self.context, self.scale, self.settings, self.probe = cache, context, scale, settings, probe


def _dit_cross_attention_forward(layer, name: str):
    """WanT2VCrossAttention.forward with NAG on the positive rows (the layer's own forward for the other rows)."""
    own = type(layer).forward

    def forward(x, context, transformer_options={}, **kwargs):  # noqa: B006 (the signature of the layer it patches)
        call = transformer_options.get(TRANSFORMER_KEY)
        ids = list(transformer_options.get("cond_or_uncond") or ())
        mine = [j for j, c in enumerate(ids) if c == POSITIVE_CHUNK] if call is not None else []
        if not mine:
            return own(layer, x, context, transformer_options=transformer_options, **kwargs)
        size = x.shape[0] // len(ids)
        k_neg, v_neg = call.cache.negative_kv(name, call.context, size, x)
        out = (
            own(layer, x, context, transformer_options=transformer_options, **kwargs) if len(mine) < len(ids) else None
        )
        guided = []
        for j in mine:
            rows = slice(j * size, (j + 1) * size)
            q = layer.norm_q(layer.q(x[rows]))
            attend = functools.partial(
                comfy.ldm.modules.attention.optimized_attention,
                q,
                heads=layer.num_heads,
                transformer_options=transformer_options,
            )
            z_pos = attend(layer.norm_k(layer.k(context[rows])), layer.v(context[rows]))
            z = nag_core.nag_attention(z_pos, attend(k_neg, v_neg), call.scale, call.settings.tau, call.settings.alpha)
            guided.append((rows, layer.o(z)))
        call.probe.hits += 1
        if out is None:  # every row is the positive's (cfg 1): no row runs twice
            return torch.cat([g for _, g in guided])
        out = out.clone()
        for rows, g in guided:
            out[rows] = g
        return out

    return forward


# ------------------------------------------------------------------ paper form on joint attention (shadow rows)
def check_joint(model_patcher, name: str, term_no: int) -> None:
    """Refuse the joint-attention paper form where this ComfyUI has no attention override, or where another node on
    the model would keep the shadow rows out of the positive's batch or change the two rows' image streams apart."""
    where = f"term {term_no} (nag, form paper): on {name} (joint attention)"
    if not joint_override_available():
        raise GuidanceConfigError(
            f"{where} the paper form acts through ComfyUI's optimized_attention_override, which this ComfyUI does not "
            "have (0.3.75 and newer do): update ComfyUI"
        )
    if model_patcher.model_options.get("transformer_options", {}).get("patches", {}).get("attn1_output_patch"):
        raise GuidanceConfigError(
            f"{where} another node patches the attention outputs (attn1_output_patch, e.g. ComfyUI's NAGuidance) and "
            "would move the positive's image stream away from its shadow row's: use that node or this term, not both "
            "(this term's form comfyui is NAGuidance)"
        )
    if "sampler_calc_cond_batch_function" in model_patcher.model_options:
        raise GuidanceConfigError(
            f"{where} another node runs the model's batches its own way (sampler_calc_cond_batch_function, e.g. "
            "SkipLayerGuidanceDiTSimple), so the shadow rows cannot share the positive's batch; use a Perturbed Term "
            "(slg) of Guidance Lab instead of that node"
        )


def joint_family(network) -> bool:
    return type(network).__name__ in JOINT_ATTENTION and not cross_attention_keys(network)


def shadow_conds(positive, negative, term_no: int) -> list:
    """The shadow rows' cond list: the positive's single entry with the negative prompt's text tokens (TEXT_CONDS;
    one the negative lacks is dropped), under a uuid of its own."""
    for what, conds in (("positive", positive), ("negative", negative)):
        if len(conds) != 1:
            raise GuidanceConfigError(
                f"term {term_no} (nag, form paper): the {what} prompt has {len(conds)} entries (areas, masks or "
                "timestep ranges); on a joint-attention model the paper form takes a single prompt on each side"
            )
    pos, neg = positive[0], negative[0]
    model_conds = dict(pos.get("model_conds", {}))
    extra = [k for k in OTHER_TEXT_CONDS if k in model_conds]
    if extra:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): the positive prompt carries more tokens in the text stream "
            f"({', '.join(extra)}: HunyuanVideo 1.5 glyphs, image-to-video) than the joint form can place; use a CFG term"
        )
    for key in TEXT_CONDS:
        model_conds.pop(key, None)
        if key in neg.get("model_conds", {}):
            model_conds[key] = neg["model_conds"][key]
    if "c_crossattn" not in model_conds:
        raise GuidanceConfigError(f"term {term_no} (nag, form paper): its negative prompt has no text tokens")
    a, b = (c["model_conds"]["c_crossattn"].cond for c in (pos, {"model_conds": model_conds}))
    if a.shape[1] != b.shape[1]:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): on a joint-attention model the negative prompt needs as many text "
            f"tokens as the positive (one attention holds both rows): {b.shape[1]} against {a.shape[1]}; make the "
            "prompts the same length (e.g. pad the shorter one), or use form comfyui"
        )
    return [{**pos, "model_conds": model_conds, "uuid": uuid.uuid4()}]


def text_first(network) -> bool:
    """Whether the text tokens come first in the network's joint attention calls (Flux-type blocks built with
    flipped_img_txt put the image first: HunyuanVideo in ComfyUI 0.3.75)."""
    blocks = getattr(network, "double_blocks", None)
    return not (blocks is not None and len(blocks) and getattr(blocks[0], "flipped_img_txt", False))


def text_tokens(network, shadow) -> int:
    """How many text tokens each joint attention call of `network` holds for the prompt of `shadow`."""
    n = shadow[0]["model_conds"]["c_crossattn"].cond.shape[1] + int(getattr(network, "register_length", 0) or 0)
    multiple = getattr(network, "pad_tokens_multiple", None)  # Lumina 2 / Z-Image pad the caption
    return n + (-n) % multiple if multiple else n


def _rows_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the rounding of one batched computation (the two rows are computed side by side)."""
    if a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return float((a - b).abs().max()) <= 1e-4 * float(a.abs().max()) + 1e-6


class JointCall:
    """One step's joint-attention NAG: the shadow rows' chunk, the text token count and side, and the settings."""

    def __init__(self, shadow_chunk: int, n_text: int, text_first: bool, scale: float, settings, probe: Probe):
        self.shadow_chunk, self.n_text, self.text_first = shadow_chunk, n_text, text_first
        self.scale, self.settings, self.probe = scale, settings, probe


def _joint_override(call: JointCall, previous):
    """optimized_attention_override: the attention as it runs, then NAG on the image tokens of the positive rows
    (chunk 0) against the shadow rows, written into both."""

    def override(func, *args, **kwargs):
        out = previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)
        ids = list(kwargs.get("transformer_options", {}).get("cond_or_uncond") or ())
        if POSITIVE_CHUNK not in ids or call.shadow_chunk not in ids:
            return out
        call.probe.hits += 1  # the pair reached the attention (a negative equal to the positive changes nothing)
        q = args[0] if args else kwargs["q"]
        tokens = q.shape[2] if kwargs.get("skip_reshape") else q.shape[1]
        if tokens <= call.n_text:
            return out  # text tokens only (a text refiner)
        pos, sh = _chunk_rows(q.shape[0], ids, POSITIVE_CHUNK), _chunk_rows(q.shape[0], ids, call.shadow_chunk)
        q_tok = q.transpose(1, 2) if kwargs.get("skip_reshape") else q  # [B, L, ...]
        img, txt = (
            (slice(call.n_text, tokens), slice(0, call.n_text))
            if call.text_first
            else (slice(0, tokens - call.n_text), slice(tokens - call.n_text, tokens))
        )
        if not _rows_equal(q_tok[pos, img], q_tok[sh, img]):
            raise GuidanceConfigError(
                "nag (form paper): the shadow rows' image stream left the positive's (another node changes the rows "
                "differently, e.g. a ControlNet that reads the text); remove that node or use form comfyui"
            )
        if _rows_equal(q_tok[pos, txt], q_tok[sh, txt]):
            return out  # no text read here (an image refiner), or a negative equal to the positive: Z- = Z+
        o = out.transpose(1, 2) if kwargs.get("skip_output_reshape") else out  # [B, L, ...], a view
        flat = lambda t: t.reshape(*t.shape[:2], -1)  # noqa: E731  (per token: every head's features)
        z = nag_core.nag_attention(
            flat(o[pos, img]), flat(o[sh, img]), call.scale, call.settings.tau, call.settings.alpha
        ).view_as(o[pos, img])
        o[pos, img] = z
        o[sh, img] = z
        return out

    return override


def negative_context(cond_list, term_no: int) -> torch.Tensor:
    """The cross-attention context of the NAG negative prompt, from ComfyUI's processed conds."""
    if len(cond_list) != 1:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): its negative prompt has {len(cond_list)} entries "
            "(areas, masks or timestep ranges); the paper form takes a single prompt"
        )
    c = cond_list[0].get("model_conds", {}).get("c_crossattn")
    if c is None:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form paper): its negative prompt has no cross-attention context for this model"
        )
    return c.cond


def patched_options(
    model_options: dict,
    cache: PaperCache | None,
    settings,
    scale: float,
    probe: Probe,
    neg_context=None,
    neg_chunk: int | None = None,
    joint: JointCall | None = None,
) -> dict:
    """A copy of model_options with NAG at s = `scale` on the positive rows: the paper form's attn2 patches (with
    the negative prompt's context and the run's PaperCache) or the comfyui form's attn1 output patch (with the
    negative prompt's chunk) or, on joint attention, the attention override of `joint` (a JointCall)."""
    opts = comfy.model_patcher.create_model_options_clone(model_options)
    if settings.form == "comfyui":
        patches = opts.setdefault("transformer_options", {}).setdefault("patches", {})
        patches["attn1_output_patch"] = list(patches.get("attn1_output_patch", [])) + [
            _attn1_output_patch(neg_chunk, scale, settings, probe)
        ]
        return opts
    if joint is not None:  # joint attention: the override on the positive and shadow rows
        t_opts = opts.setdefault("transformer_options", {})
        t_opts["optimized_attention_override"] = _joint_override(joint, t_opts.get("optimized_attention_override"))
        return opts
    if not cache.keys:  # a DiT's cross-attention: its object patches (install_dit_patches) read this call
        opts.setdefault("transformer_options", {})[TRANSFORMER_KEY] = NagCall(
            cache, neg_context, scale, settings, probe
        )
        return opts
    for part, idx in dict.fromkeys((p, i) for p, i, _ in cache.keys):
        opts = comfy.model_patcher.set_model_options_patch_replace(
            opts, _attn2_patch(cache, (part, idx), neg_context, scale, settings, probe), "attn2", part, idx
        )
    return opts


def check_ran(probe: Probe, network, term_no: int, settings) -> None:
    if probe.hits == 0:
        raise GuidanceConfigError(
            f"term {term_no} (nag, form {settings.form}): NAG never reached the positive prompt's rows in "
            f"{type(network).__name__}: "
            + (
                "the positive and the negative prompt ran in separate model calls (ComfyUI splits a batch that does not "
                "fit in memory; ComfyUI's NAGuidance then silently does nothing); use the paper form or a smaller batch"
                if settings.form == "comfyui"
                else "another node runs the model's batches its own way; remove that node"
            )
            + ", or the model does not call the hook"
        )
