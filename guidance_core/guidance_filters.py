"""Reshapers of the classifier-free guidance step, in D-space (denoised predictions), for the combiner's
post-processing (cfg.PostProcess; their order in cfg.CFGCombiner.combine). Notation: D_pos the positive prompt's
prediction, D_ref the guidance term's reference (the negative or empty prompt), delta = D_pos - D_ref, s the CFG
scale and c = s - 1 the guidance coefficient (D = D_pos + c delta), x the noisy latent. Latents are [B, C, H, W] or
[B, C, T, H, W]; frequencies are over the last two (spatial) dims, per frame.

- TCFG, tangential damping (Kwon et al. 2025, arXiv 2503.18137): the reference's score x - D_ref is projected on
  the first right singular vector v1 of the 2-row matrix [x - D_ref; x - D_pos] (per sample, flattened):
      D_ref' = x - <x - D_ref, v1> v1.
  As ComfyUI's TCFG node (on the scores x - D). The scores are sigma*eps for eps models and sigma*v for flow
  models, so it is also diffusers' TangentialClassifierFreeGuidance (which projects the network outputs) there.
- FreSca, frequency scaling (Huang et al. 2025, arXiv 2504.02154): delta' = IFFT(M * FFT(delta)) over (H, W) with
  the spectrum centred, M = scale_low on the centred (2 f_c) x (2 f_c) block of frequencies (f_c = min(cutoff,
  side // 2)) and scale_high elsewhere. As ComfyUI's FreSca node (0.33's form: the block over the last two dims).
- FDG, frequency-decoupled guidance (Sadat et al. 2025, arXiv 2506.19713), two levels of a Laplacian pyramid:
      L = up(down(delta)),  delta' = f_low L + f_high (delta - L),
  with down = blur by the 5x5 binomial kernel (reflect border) then bilinear halving, up = bilinear doubling then
  the same blur (kornia's pyrdown / pyrup, which diffusers' FrequencyDecoupledGuidance uses). With the CFG scale
  s this is diffusers' guider with guidance_scales [s f_high, s f_low]; f_low = f_high = 1 is plain CFG. Linear in
  delta, so the same in every parameterization. An odd side is brought back to its size by the bilinear `up`.
- MaMBo-G, magnitude-aware guidance (arXiv 2508.03442; diffusers' MagnitudeAwareGuidance): the coefficient is
  damped where the guidance step is large against the reference's network output:
      c' = c exp(-alpha r),  r = |delta| / |a x - D_ref|   (per sample, L2 over all dims),
  a x - D_ref being -c_out times the reference's network output (D = a x + b F: ComfyUI's calculate_denoised), so r
  is diffusers' |F_pos - F_ref| / |F_ref| in every parameterization.
- Dynamic thresholding, "mimic" form (the sd-dynamic-thresholding behaviour, MEAN start, AD measure, per channel),
  on the scores y = x - D of the guided result (y_s) and of the same step at the mimic scale m (y_m): per sample and
  channel, with means mu and centred parts y~,
      r_m = max|y~_m|,  r_s = quantile(|y~_s|, p),  R = max(r_m, r_s),
      y = clamp(y~_s, -R, R) / R * r_m + mu_s,   D = x - y   (blended with the unthresholded D by phi).
  m = s with p = 1 is the plain result (r_m = r_s = R), returned as it is.
- Dynamic thresholding, "imagen" form (Saharia et al. 2022, arXiv 2205.11487, sec. 2.3): per sample,
  t = max(1, quantile(|D|, p)),  D' = clamp(D, -t, t) / t. (Defined for pixels in [-1, 1]; on latents it bounds D.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import GuidanceConfigError

DYN_THRESH_MODES = ("off", "mimic", "imagen")


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], 1, -1)


def tcfg_reference(d_pos: torch.Tensor, d_ref: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """TCFG (module docstring): D_ref with its score's tangential part dropped."""
    score_ref, score_pos = _flat(x - d_ref).float(), _flat(x - d_pos).float()
    _, _, vh = torch.linalg.svd(torch.cat((score_ref, score_pos), dim=1), full_matrices=False)
    v1 = vh[:, 0:1, :]
    damped = (score_ref @ v1.transpose(-2, -1)) * v1
    return x - damped.reshape_as(d_ref).to(d_ref.dtype)


def fresca(delta: torch.Tensor, scale_low: float, scale_high: float, cutoff: int) -> torch.Tensor:
    """FreSca (module docstring) over the last two dims; equal factors f give f delta (1: delta itself)."""
    if scale_low == scale_high:
        return delta if scale_low == 1.0 else scale_low * delta
    dtype = delta.dtype
    spec = torch.fft.fftshift(torch.fft.fftn(delta.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.full(spec.shape, float(scale_high), device=delta.device)
    block = mask
    for dim in (mask.dim() - 2, mask.dim() - 1):
        centre = mask.shape[dim] // 2
        fc = min(int(cutoff), centre)
        block = block.narrow(dim, centre - fc, 2 * fc)
    block[:] = float(scale_low)
    out = torch.fft.ifftn(torch.fft.ifftshift(spec * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return out.to(dtype)


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def _blur(img: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur (outer([1,4,6,4,1])/256), reflect border, per channel."""
    k = torch.outer(_BINOMIAL, _BINOMIAL).to(img) / 256.0
    c = img.shape[1]
    padded = F.pad(img, (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, k.expand(c, 1, 5, 5), groups=c)


def laplacian_low(delta: torch.Tensor) -> torch.Tensor:
    """up(down(delta)) of FDG's two-level Laplacian pyramid (module docstring), per frame of a 5-D latent."""
    shape = delta.shape
    img = delta.reshape(shape[0], -1, shape[-2], shape[-1])  # [B, C(*T), H, W]: the blur is per channel
    h, w = img.shape[-2:]
    down = F.interpolate(_blur(img), size=(h // 2, w // 2), mode="bilinear", align_corners=False)
    up = F.interpolate(down, size=(2 * (h // 2), 2 * (w // 2)), mode="bilinear", align_corners=False)
    if up.shape[-2:] != (h, w):
        up = F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)
    return _blur(up).reshape(shape)


def fdg(delta: torch.Tensor, f_low: float, f_high: float) -> torch.Tensor:
    """FDG (module docstring): delta' = f_low L + f_high (delta - L); equal factors f give f delta (1: delta itself)."""
    if f_low == f_high:
        return delta if f_low == 1.0 else f_low * delta
    if delta.shape[-1] < 3 or delta.shape[-2] < 3:
        raise GuidanceConfigError(
            f"FDG needs a latent of at least 3x3 (got {tuple(delta.shape[-2:])}): its blur reflects "
            "2 pixels at the border; switch FDG off (fdg_low = fdg_high = 1) for this size"
        )
    low = laplacian_low(delta)
    return f_low * low + f_high * (delta - low)


def mambo_factor(delta: torch.Tensor, d_ref: torch.Tensor, x_skip: torch.Tensor, alpha: float) -> torch.Tensor:
    """exp(-alpha r) per sample, shaped to broadcast (MaMBo-G, module docstring); x_skip = a x."""
    dims = list(range(1, delta.dim()))
    r = torch.linalg.vector_norm(delta, dim=dims, keepdim=True) / torch.linalg.vector_norm(
        x_skip - d_ref, dim=dims, keepdim=True
    )
    return torch.exp(-alpha * r)


def dynamic_threshold_mimic(
    d_guided: torch.Tensor, d_mimic: torch.Tensor, x: torch.Tensor, percentile: float, phi: float = 1.0
) -> torch.Tensor:
    """The mimic form of dynamic thresholding (module docstring)."""
    y_s, y_m = (x - d_guided).flatten(2), (x - d_mimic).flatten(2)
    mu_s = y_s.mean(dim=2, keepdim=True)
    cen_s, cen_m = y_s - mu_s, y_m - y_m.mean(dim=2, keepdim=True)
    r_m = cen_m.abs().max(dim=2, keepdim=True).values
    r_s = torch.quantile(cen_s.abs(), percentile, dim=2, keepdim=True)
    top = torch.maximum(r_m, r_s)
    y = cen_s.clamp(-top, top) / top * r_m + mu_s
    out = x - y.unflatten(2, d_guided.shape[2:])
    return out if phi == 1.0 else out * phi + d_guided * (1.0 - phi)


def dynamic_threshold_imagen(d: torch.Tensor, percentile: float) -> torch.Tensor:
    """Imagen's dynamic thresholding (module docstring), per sample."""
    v = d.flatten(1).abs()
    v = v if v.dtype in (torch.float32, torch.float64) else v.float()  # quantile takes no half precision
    t = torch.quantile(v, percentile, dim=1).clamp(min=1.0).to(d.dtype)
    t = t.reshape(-1, *([1] * (d.dim() - 1)))
    return torch.maximum(torch.minimum(d, t), -t) / t
