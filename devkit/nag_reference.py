"""Direct implementations of NAG for the tests and the compatibility matrix, independent of the pack's code: the
paper's equations (Chen et al. 2025, arXiv 2505.21179, eq. 5-7) and a UNet clone whose cross-attention computes them
with a softmax written here."""

import math

import torch


def direct_nag(z_pos, z_neg, phi, tau, alpha):
    """The paper's eq. 5-7 as written: Z~ = Z+ + phi (Z+ - Z-); Z^ = Z~ min(r, tau) / r, r = |Z~|_1 / |Z+|_1; blend."""
    z_t = z_pos + phi * (z_pos - z_neg)
    r = z_t.abs().sum(-1, keepdim=True) / z_pos.abs().sum(-1, keepdim=True)
    return alpha * (z_t * torch.clamp(r, max=tau) / r) + (1 - alpha) * z_pos


def manual_attention(q, k, v, heads):
    b, n, d = q.shape
    dh = d // heads
    split = lambda t: t.view(t.shape[0], -1, heads, dh).transpose(1, 2)  # noqa: E731
    w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh), dim=-1)
    return (w @ split(v)).transpose(1, 2).reshape(b, n, d)


def reference_model(model, neg_context, phi, tau, alpha):
    """A clone whose every cross-attention computes the paper's NAG directly on the positive rows (chunk 0): Z+ from
    the batch's own keys, Z- from the negative context through the layer's to_k / to_v, both by a softmax written
    here; the formula of direct_nag. The layers are found by walking the network, not through the pack."""
    ref = model.clone()
    net = model.model.diffusion_model
    layers = {}
    for part, blocks in (("input", net.input_blocks), ("output", net.output_blocks), ("middle", [net.middle_block])):
        for i, block in enumerate(blocks):
            tbs = [m for m in block.modules() if m.__class__.__name__ == "BasicTransformerBlock"]
            for t, tb in enumerate(tbs):
                layers[(part, i, t)] = tb.attn2

    def make(part, i):
        def attn2(q, k, v, extra):
            heads = extra["n_heads"]
            z = manual_attention(q, k, v, heads)
            ids = list(extra["cond_or_uncond"])
            size = q.shape[0] // len(ids)
            layer = layers[(part, i, extra.get("block_index", 0))]
            ctx = neg_context.to(q.dtype).expand(size, *neg_context.shape[1:])
            z = z.clone()
            for j in [j for j, c in enumerate(ids) if c == 0]:  # every chunk of the positive prompt
                rows = slice(j * size, (j + 1) * size)
                z_neg = manual_attention(q[rows], layer.to_k(ctx), layer.to_v(ctx), heads)
                z[rows] = direct_nag(z[rows], z_neg, phi, tau, alpha)
            return z

        return attn2

    for part, i, _ in layers:
        ref.set_model_attn2_replace(make(part, i), part, i)
    return ref


def reference_wan(model, neg_context, phi, tau, alpha):
    """A clone of a Wan text-to-video model whose every block's cross-attention computes, by a softmax written here,
    Z = Attn(Q, K, V) for every row and, for the positive rows (chunk 0), the paper's NAG against
    Z- = Attn(Q, norm_k(k(E c-)), v(E c-)) with E the network's text embedding; then the output projection."""
    ref = model.clone()
    net = model.model.diffusion_model

    def make(layer):
        def forward(x, context, transformer_options={}, **kwargs):  # noqa: B006
            heads = layer.num_heads
            q = layer.norm_q(layer.q(x))
            z = manual_attention(q, layer.norm_k(layer.k(context)), layer.v(context), heads)
            ids = list(transformer_options["cond_or_uncond"])
            size = x.shape[0] // len(ids)
            ctx = net.text_embedding(neg_context.to(x.dtype).expand(size, *neg_context.shape[1:]))
            k_neg, v_neg = layer.norm_k(layer.k(ctx)), layer.v(ctx)
            z = z.clone()
            for j in [j for j, c in enumerate(ids) if c == 0]:
                rows = slice(j * size, (j + 1) * size)
                z[rows] = direct_nag(z[rows], manual_attention(q[rows], k_neg, v_neg, heads), phi, tau, alpha)
            return layer.o(z)

        return forward

    for i, block in enumerate(net.blocks):
        ref.add_object_patch(f"diffusion_model.blocks.{i}.cross_attn.forward", make(block.cross_attn))
    return ref


# (module, attribute): the attention function each joint-attention family's blocks call, by module name
JOINT_ATTENTION_SITES = (
    ("comfy.ldm.flux.layers", "attention"),  # Flux, Chroma, HunyuanVideo
    ("comfy.ldm.modules.diffusionmodules.mmdit", "optimized_attention"),  # SD3.5
    ("comfy.ldm.qwen_image.model", "optimized_attention_masked"),
    ("comfy.ldm.lumina.model", "optimized_attention_masked"),
)


def image_tokens(net, x, references=()) -> int:
    """The network's image tokens for latent x and its reference latents (Kontext, Qwen-Image Edit: image tokens
    too): frames x (H / p) x (W / p) each, p the network's spatial patch size."""
    p = net.patch_size if isinstance(net.patch_size, int) else net.patch_size[-1]
    frames = lambda t: t.shape[2] if t.ndim == 5 else 1  # noqa: E731
    return sum(frames(t) * (t.shape[-2] // p) * (t.shape[-1] // p) for t in (x, *references))


def _rows(v, rows, n):
    """v's rows `rows` where v (a tensor, or a list of tensors as ref_latents) has n rows; v itself otherwise."""
    if isinstance(v, list) and v and all(torch.is_tensor(t) and t.shape[0] == n for t in v):
        return [t[rows] for t in v]
    return v[rows] if torch.is_tensor(v) and v.shape[0] == n else v


def _twice(v, n):
    """v with its n rows stacked twice (tensors, lists of tensors); v itself otherwise."""
    if isinstance(v, list) and v and all(torch.is_tensor(t) and t.shape[0] == n for t in v):
        return [torch.cat([t, t]) for t in v]
    return torch.cat([v, v]) if torch.is_tensor(v) and v.shape[0] == n else v


def reference_joint(model, negative, phi, tau, alpha):
    """A clone of a joint-attention DiT (text and image tokens in one attention) whose positive rows (chunk 0) run as a
    pair [positive, positive with the negative prompt's text tokens]: at every attention call of the family's blocks
    that holds more tokens than the image has, the image tokens' outputs of the two rows become the paper's NAG of
    them (direct_nag), in both rows, so the pair keeps one image stream and two text streams. The image token count
    comes from the latent and the patch size; the pair is built here from the CONDITIONING `negative` (its first
    entry's tokens and attention mask). Other rows run as they are."""
    import importlib

    ref = model.clone()
    net = model.model.diffusion_model
    blocks = getattr(net, "double_blocks", None)  # Flux-type blocks built flipped put the image tokens first
    image_first = bool(blocks is not None and len(blocks) and getattr(blocks[0], "flipped_img_txt", False))
    neg_tokens, neg_mask = negative[0][0], negative[0][1].get("attention_mask")

    def nag_site(original, n_img):
        def site(*args, **kwargs):
            out = original(*args, **kwargs)
            o = out.transpose(1, 2) if kwargs.get("skip_output_reshape") else out  # [2 rows, L, ...]
            if o.shape[1] <= n_img:
                return out  # image tokens only (or text only): no text read here
            img = slice(0, n_img) if image_first else slice(o.shape[1] - n_img, o.shape[1])
            flat = lambda t: t.reshape(*t.shape[:2], -1)  # noqa: E731
            size = o.shape[0] // 2
            z = direct_nag(flat(o[:size, img]), flat(o[size:, img]), phi, tau, alpha).view_as(o[:size, img])
            o[:size, img] = z
            o[size:, img] = z
            return out

        return site

    def wrapper(apply_model, args):
        x, t, c, ids = args["input"], args["timestep"], args["c"], list(args["cond_or_uncond"])
        size = x.shape[0] // len(ids)
        outs = []
        for j, chunk in enumerate(ids):
            rows = slice(j * size, (j + 1) * size)
            cj = {k: _rows(v, rows, x.shape[0]) for k, v in c.items()}
            t_opts = cj.get("transformer_options", {})  # row patches (an SLG term's) see this call's rows
            if chunk != 0:
                cj["transformer_options"] = {**t_opts, "cond_or_uncond": [chunk]}
                outs.append(apply_model(x[rows], t[rows], **cj))
                continue
            pair = {k: _twice(v, size) for k, v in cj.items()}
            pair["transformer_options"] = {**t_opts, "cond_or_uncond": [0, 0]}
            text = neg_tokens.to(cj["c_crossattn"]).expand(size, *neg_tokens.shape[1:])
            pair["c_crossattn"] = torch.cat([cj["c_crossattn"], text])
            if neg_mask is not None and "attention_mask" in cj:
                pair["attention_mask"] = torch.cat([cj["attention_mask"], neg_mask.to(cj["attention_mask"])])
            n_img = image_tokens(net, x, cj.get("ref_latents") or ())
            saved = []
            for mod_name, attr in JOINT_ATTENTION_SITES:
                mod = importlib.import_module(mod_name)
                if hasattr(mod, attr):
                    saved.append((mod, attr, getattr(mod, attr)))
                    setattr(mod, attr, nag_site(getattr(mod, attr), n_img))
            try:
                outs.append(apply_model(torch.cat([x[rows], x[rows]]), torch.cat([t[rows], t[rows]]), **pair)[:size])
            finally:
                for mod, attr, fn in saved:
                    setattr(mod, attr, fn)
        return torch.cat(outs)

    ref.set_model_unet_function_wrapper(wrapper)
    return ref
