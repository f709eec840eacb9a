"""Perturbed-self guidance terms: the model's own prediction with part of the network weakened, used as the
reference the guided prediction moves away from,  D += w f (D_pos - D_perturbed).

- PAG, perturbed-attention guidance (Ahn et al. 2024, arXiv 2403.17377, eq. 7-8): in the chosen
  self-attention layers the attention map softmax(Q K^T / sqrt(d)) is replaced by the identity, so the
  layer outputs its values: Attn(Q, K, V) -> V.
- SEG, smoothed energy guidance (Hong 2024, arXiv 2408.00760, sec. 3.3): the queries are blurred over the
  token grid by a 2-D Gaussian of std sigma before the attention, Attn(G_sigma * Q, K, V); sigma -> inf
  replaces every query by their mean (the paper's limit, a uniform attention map).
- SLG, skip-layer guidance (Stability AI's SD3.5 recipe, after PAG): the chosen transformer blocks of a DiT
  are skipped, block(h) -> h.
- TPG, token perturbation guidance (Rajabi et al. 2025, arXiv 2506.10036, sec. 3 and the authors' SDXL code):
  the hidden states entering each chosen UNet transformer block (diffusers' BasicTransformerBlock, ComfyUI's
  transformer of a spatial transformer) are shuffled along the token axis, h -> P h with P a permutation
  matrix (orthogonal: norms preserved); the block runs on the shuffled tokens and its output is not put back
  in order (the spatial transformer adds it to its own unshuffled input). One permutation for every row of the
  term; a new one for each transformer and each step (the paper draws torch.randperm at every forward),
  seeded from the step's sigma and the transformer's place (`token_permutation`), so a run is reproducible
  and the batched rows equal the term run in a call of its own.
- STG, spatio-temporal skip guidance (Hyung et al. 2024, arXiv 2411.18664; the form of ComfyUI's
  LTXVSpatioTemporalGuidance): in the chosen blocks of a video DiT the self-attention outputs its values,
  Attn(Q, K, V) -> V (PAG's identity map on a DiT block), D = D_cfg + w (D_pos - D_stg). ComfyUI's node
  applies it after CFG with no rescale; it is this term with reference = positive.

Rows: a perturbed term is evaluated in the same batched forward as the prompt rows; the perturbation acts
only on its own rows (`rows_of`), so prompt rows are computed as without it.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import GuidanceConfigError, require_finite

MODES = ("pag", "seg", "slg", "tpg", "stg")
UNET_MODES = ("pag", "seg", "tpg")  # act on UNet transformer blocks
DIT_MODES = ("slg", "stg")  # act on DiT transformer blocks
UNET_PARTS = ("input", "middle", "output")  # UNet self-attention blocks (PAG, SEG, TPG)
DIT_PARTS = ("double", "single")  # DiT transformer blocks (SLG, STG)
# TPG: input.7 and input.8, SDXL's deepest down level, whose 20 transformers hold the authors' SDXL default (down
# transformers d6..d23: 18 of them; the block is this pack's unit) and SD1.5's deepest down level; STG: block 29,
# the default of ComfyUI's LTXVSpatioTemporalGuidance node
DEFAULT_BLOCKS = {
    "pag": "middle.0",
    "seg": "middle.0",
    "slg": "double.7, double.8, double.9",
    "tpg": "input.7, input.8",
    "stg": "double.29",
}
SEG_SIGMA_DEFAULT, SEG_SIGMA_INF = 10.0, 9999.0  # sigma >= SEG_SIGMA_INF: the mean query (the paper's limit)
SEG_SIGMA_RANGE = (0.01, SEG_SIGMA_INF)
_BLOCK = re.compile(r"^\s*([a-z]+)\s*[.:\s]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Perturbation:
    """What to perturb: mode (pag, seg, slg), blocks ((part, index) pairs), SEG's blur sigma."""

    mode: str = "pag"
    blocks: tuple = (("middle", 0),)
    seg_sigma: float = SEG_SIGMA_DEFAULT

    def __post_init__(self):
        if self.mode not in MODES:
            raise GuidanceConfigError(f"perturbation mode={self.mode!r}; accepted: {', '.join(MODES)}")
        parts = DIT_PARTS if self.mode in DIT_MODES else UNET_PARTS
        if not self.blocks:
            raise GuidanceConfigError(f"perturbation {self.mode}: no blocks; give e.g. {DEFAULT_BLOCKS[self.mode]!r}")
        for part, idx in self.blocks:
            if part not in parts:
                raise GuidanceConfigError(
                    f"perturbation {self.mode}: block '{part}.{idx}'; {self.mode} acts on "
                    f"{'DiT blocks double.N / single.N' if self.mode in DIT_MODES else 'UNet blocks input.N / middle.0 / output.N'}"
                )
        if not SEG_SIGMA_RANGE[0] <= require_finite("seg_sigma", self.seg_sigma):
            raise GuidanceConfigError(
                f"seg_sigma={self.seg_sigma}; use a blur std >= {SEG_SIGMA_RANGE[0]:g} tokens "
                f"({SEG_SIGMA_INF:g} or more = mean query)"
            )


def parse_blocks(text: str, mode: str) -> tuple:
    """'middle.0, output.1' -> (('middle', 0), ('output', 1)); 'double 7; single 3' for DiTs."""
    if mode not in MODES:
        raise GuidanceConfigError(f"perturbation mode={mode!r}; accepted: {', '.join(MODES)}")
    out = []
    for j, item in enumerate(c for c in re.split(r"[,;\n]", text or "") if c.strip()):
        m = _BLOCK.match(item.lower())
        if not m:
            raise GuidanceConfigError(
                f"blocks item {j} {item.strip()!r}; write 'part.index', e.g. {DEFAULT_BLOCKS[mode]!r}"
            )
        if len(m.group(2)) > 6:  # int() of thousands of digits is Python's ValueError, not a message
            raise GuidanceConfigError(
                f"blocks item {j} {item.strip()[:40]!r}: an index of {len(m.group(2))} digits; "
                f"a block index is a small whole number, e.g. {DEFAULT_BLOCKS[mode]!r}"
            )
        out.append((m.group(1), int(m.group(2))))
    if not out:
        raise GuidanceConfigError(f"blocks {text!r} lists no block; e.g. {DEFAULT_BLOCKS[mode]!r}")
    return tuple(dict.fromkeys(out))


def rows_of(n_rows: int, chunk_ids: Sequence[int], wanted) -> list[slice]:
    """Row slices of the chunks whose id is in `wanted`, for a batch of n_rows made of len(chunk_ids) equal
    chunks in order (ComfyUI's calc_cond_batch concatenates one chunk per cond, `cond_or_uncond`)."""
    n = len(chunk_ids)
    if n == 0 or n_rows % n:
        raise GuidanceConfigError(f"a batch of {n_rows} rows does not split into {n} equal chunks")
    size = n_rows // n
    return [slice(j * size, (j + 1) * size) for j, c in enumerate(chunk_ids) if c in wanted]


def gaussian_kernel_1d(sigma: float, radius: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """g_i = exp(-i^2 / (2 sigma^2)) / sum, i = -radius..radius."""
    i = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(i * i) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def blur_queries(q: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """SEG (Hong 2024, sec. 3.3): Q~ = G_sigma * Q over the token grid, per channel, separable, reflect padding,
    kernel radius ceil(3 sigma) (clamped to the grid); sigma >= SEG_SIGMA_INF gives the mean query.
    q: [B, height*width, C] (tokens row-major, as ComfyUI's SpatialTransformer flattens them)."""
    b, n, c = q.shape
    if n != height * width:
        raise GuidanceConfigError(f"SEG: {n} tokens do not form the {height}x{width} grid of this block")
    if sigma >= SEG_SIGMA_INF:
        return q.mean(dim=1, keepdim=True).expand(b, n, c)
    grid = q.transpose(1, 2).reshape(b * c, 1, height, width)
    for dim, size in ((3, width), (2, height)):
        radius = min(int(math.ceil(3.0 * sigma)), size - 1)
        if radius < 1:
            continue
        k = gaussian_kernel_1d(sigma, radius, grid.dtype, grid.device)
        pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
        weight = k.view(1, 1, 1, -1) if dim == 3 else k.view(1, 1, -1, 1)
        grid = torch.nn.functional.conv2d(torch.nn.functional.pad(grid, pad, mode="reflect"), weight)
    return grid.reshape(b, c, n).transpose(1, 2)


def token_permutation(n_tokens: int, sigma: float, block: tuple, transformer: int, device=None) -> torch.Tensor:
    """TPG's permutation of n_tokens tokens (an index vector, `h[:, perm]` = P h) for one transformer of one block at
    one step: torch.randperm from a generator seeded by a stable hash of (sigma, block, transformer, n_tokens).
    The paper draws a fresh randperm at every forward; this draws a fresh one at every step and transformer, and
    the same at the same step, so the term's rows get the same shuffle in a batched call as in a call of their
    own, and a run repeats exactly."""
    text = f"tpg|{float(sigma).hex()}|{block[0]}.{int(block[1])}|{int(transformer)}|{int(n_tokens)}"
    g = torch.Generator(device="cpu").manual_seed(zlib.crc32(text.encode()))
    perm = torch.randperm(int(n_tokens), generator=g)
    return perm if device is None else perm.to(device)


def shuffle_tokens(h: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """TPG's norm-preserving shuffle of tokens [B, N, C] -> [B, N, C], the same permutation for every row."""
    if h.ndim != 3 or h.shape[1] != perm.numel():
        raise GuidanceConfigError(
            f"TPG: hidden states of shape {tuple(h.shape)} are not [rows, {perm.numel()} tokens, channels]"
        )
    return h[:, perm.to(h.device)]
