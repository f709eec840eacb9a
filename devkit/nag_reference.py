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
