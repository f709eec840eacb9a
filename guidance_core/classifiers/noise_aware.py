"""A small ADM-style noise-aware classifier for latents.

Architecture after the classifier of Dhariwal & Nichol 2021 (arXiv 2105.05233, App. C,
"EncoderUNetModel" with attention pooling), scaled down for latents:
  - noise-level embedding: Fourier features of c_noise = log(sigma)/4 -> MLP (EDM, Karras et al. 2022);
  - conv stem, then per level `num_res_blocks` residual blocks whose GroupNorm output is
    modulated by the embedding (scale-shift, "AdaGN"), and a strided-conv downsample;
  - attention pooling: a query from the mean feature attends over all positions -> logits.
Inputs are the model's input scaling of x (see classifier_guidance) and sigma; output: logits [B, K].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ClassifierConfig:
    in_channels: int = 4
    num_classes: int = 10
    # field metadata as guidance_core.classifier_training.setting writes it (that module imports this one): the
    # Train Classifier node's `width` and the command line's --base-channels read it
    base_channels: int = field(
        default=64, metadata={"help": "base channels of the classifier network", "range": (8, 512)}
    )
    channel_mult: list = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    emb_dim: int = 128
    attn_heads: int = 4

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class FourierEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * 4.0, persistent=True)

    def forward(self, c):
        f = c[:, None] * self.freqs[None] * 2 * math.pi
        return torch.cat([f.cos(), f.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class AttentionPool(nn.Module):
    def __init__(self, ch: int, heads: int, out_dim: int):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.out = nn.Linear(ch, out_dim)

    def forward(self, x):
        b, c, h, w = x.shape
        t = F.silu(self.norm(x)).flatten(2).transpose(1, 2)  # B, HW, C
        t = torch.cat([t.mean(1, keepdim=True), t], dim=1)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        split = lambda z: z.view(b, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q[:, :1]), split(k), split(v))
        return self.out(o.transpose(1, 2).reshape(b, c))


class NoiseAwareClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Sequential(
            FourierEmbedding(c.emb_dim), nn.Linear(c.emb_dim, c.emb_dim), nn.SiLU(), nn.Linear(c.emb_dim, c.emb_dim)
        )
        ch = c.base_channels * c.channel_mult[0]
        self.stem = nn.Conv2d(c.in_channels, ch, 3, padding=1)
        blocks, downs = [], []
        for level, mult in enumerate(c.channel_mult):
            out = c.base_channels * mult
            level_blocks = []
            for _ in range(c.num_res_blocks):
                level_blocks.append(ResBlock(ch, out, c.emb_dim))
                ch = out
            blocks.append(nn.ModuleList(level_blocks))
            downs.append(
                nn.Conv2d(ch, ch, 3, stride=2, padding=1) if level < len(c.channel_mult) - 1 else nn.Identity()
            )
        self.blocks, self.downs = nn.ModuleList(blocks), nn.ModuleList(downs)
        self.mid = ResBlock(ch, ch, c.emb_dim)
        self.pool = AttentionPool(ch, c.attn_heads, c.num_classes)

    def forward(self, x_in: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x_in.device, dtype=torch.float32).reshape(-1)
        if sigma.shape[0] != x_in.shape[0]:
            sigma = sigma.expand(x_in.shape[0])
        emb = self.embed(torch.log(sigma.clamp(min=1e-6)) / 4.0).to(x_in.dtype)
        h = self.stem(x_in)
        for level_blocks, down in zip(self.blocks, self.downs):
            for blk in level_blocks:
                h = blk(h, emb)
            h = down(h)
        return self.pool(self.mid(h, emb))
