"""The toy world's weak model (autoguidance's guiding model) written as a LoRA of the shipped toy model, so
autoguidance can be run with the guiding model given the way users give one (a LoRA of the model they sample).

The weak model (toy_models/diffusion/fashion_diffusion_weak.safetensors) is the same UNetModel trained from another
random init, so W_weak - W_strong is close to full rank in every layer (its singular values fall off slowly) and is
as large as the weights themselves (|W_weak - W_strong| = 1.14 |W_weak|); all of it in fp16 is 2.8 MB. Two ways to
fit it in the byte budget (default 2,000,000 bytes), both in ComfyUI's LoRA formats:

  --method fp8 (default, shipped)  every difference stored whole: every 1-D tensor (biases, norm scales) as an fp16
      ".diff" / ".diff_b" patch; a weight matrix / conv kernel either as an fp16 ".diff" or, where the budget runs
      out, as a LoKr patch (kron(lokr_w1, lokr_w2), LyCORIS' format that ComfyUI's LoRA loader reads) with
      lokr_w1 = [[scale]] (fp32) and lokr_w2 = difference / scale in float8_e4m3fn (scale = max |difference| / 448);
      the tensors kept in fp16 are those whose fp8 rounding error is largest per stored value.
  --method svd  fp16 LoRA (lora_up [out, r] / lora_down [r, in(, kh, kw)]) of the truncated SVD of every matrix's
      difference (conv kernels as [out, in*kh*kw]), ranks chosen together for the whole network (the rank-1 pieces
      with the most difference energy per stored value first, a Lagrangian split of the budget), a full fp16 ".diff"
      where that is cheaper than its rank, 1-D tensors as fp16 diffs. Its eps error is larger than the whole
      weak-strong difference (docs/BENCHMARKS.md, section toy-weak-lora): not the weak model.

The file is applied by ComfyUI's own LoRA loader (comfy.sd.load_lora_for_models = LoraLoaderModelOnly) at
strength 1. Its metadata records the command, the budget, the per-tensor plan and the fidelity (unless
--no-check): the relative error of the weights and of the denoiser's eps prediction over sigmas (LoRA clone, its
weights put on the network by ComfyUI's model patcher, vs the real weak model, on noised Fashion-MNIST test
images, class and empty prompts).

    .venv/bin/python -m bench.toy.make_weak_lora            # writes bench/toy/weights/fashion_weak_lora.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

from devkit import comfy_host as H

DIFFUSION = os.path.join(ROOT, "toy_models", "diffusion")
STRONG = os.path.join(DIFFUSION, "fashion_diffusion.safetensors")
WEAK = os.path.join(DIFFUSION, "fashion_diffusion_weak.safetensors")
OUT = os.path.join(HERE, "weights", "fashion_weak_lora.safetensors")
MAX_BYTES = 2_000_000
PREFIX = "diffusion_model."


def read_unet(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k).float() for k in f.keys() if k.startswith(PREFIX)}  # noqa: SIM118 (safe_open is not iterable)


def differences(strong: dict, weak: dict) -> dict:
    if strong.keys() != weak.keys():
        raise ValueError(f"the two toy models differ in their keys: {sorted(strong.keys() ^ weak.keys())[:5]}")
    return {k: weak[k] - strong[k] for k in strong}


def spectra(diff: dict) -> dict:
    """{weight key: (U, S, Vh, shape)} of every matrix / conv kernel difference (as [out, in*kh*kw])."""
    import torch

    out = {}
    for k, d in diff.items():
        if d.ndim >= 2:
            u, s, vh = torch.linalg.svd(d.reshape(d.shape[0], -1).double(), full_matrices=False)
            out[k] = (u, s, vh, tuple(d.shape))
    return out


def allocate(svd: dict, budget_values: int) -> dict:
    """{weight key: rank, or "full"} maximizing the kept difference energy with at most budget_values values.
    For a price lam per stored value, each layer takes the option (rank r, or the full difference) with the most
    energy - lam * values; lam is bisected to the budget."""

    def choose(lam):
        plan, used = {}, 0
        for k, (_, s, _, shape) in svd.items():
            m, n = shape[0], s.numel() and int(svd[k][2].shape[1])
            e = (s**2).cumsum(0).tolist()
            best, best_v, best_cost = 0, 0.0, 0
            for r in range(1, len(e) + 1):
                v = e[r - 1] - lam * r * (m + n)
                if v > best_v:
                    best, best_v, best_cost = r, v, r * (m + n)
            full_v = e[-1] - lam * m * n
            if full_v >= best_v and full_v > 0:
                best, best_cost = "full", m * n
            plan[k] = best
            used += best_cost
        return plan, used

    lo, hi = 0.0, max(float(s[0] ** 2) for _, s, _, _ in svd.values())
    for _ in range(60):
        mid = (lo + hi) / 2
        if choose(mid)[1] > budget_values:
            lo = mid
        else:
            hi = mid
    return choose(hi)[0]


def lora_tensors(diff: dict, svd: dict, plan: dict) -> dict:
    """The LoRA state dict (fp16) of the plan: ComfyUI key names."""
    out = {}
    for k, d in diff.items():
        layer = k[: -len(".weight")] if k.endswith(".weight") else None
        if d.ndim == 1:
            if k.endswith(".bias"):
                out[k[: -len(".bias")] + ".diff_b"] = d.half()
            else:
                out[layer + ".diff"] = d.half()
            continue
        r = plan[k]
        if r == 0:
            continue
        if r == "full":
            out[layer + ".diff"] = d.half()
            continue
        u, s, vh, shape = svd[k]
        root = s[:r].sqrt()
        up = (u[:, :r] * root).float()
        down = (root[:, None] * vh[:r]).float()
        if len(shape) == 4:  # conv: down [r, in, kh, kw], up [out, r, 1, 1]
            up, down = up.reshape(shape[0], r, 1, 1), down.reshape(r, *shape[1:])
        out[layer + ".lora_up.weight"] = up.half().contiguous()
        out[layer + ".lora_down.weight"] = down.half().contiguous()
    return {k: v.contiguous() for k, v in out.items()}


def fp8_tensors(diff: dict, budget_bytes: int) -> tuple:
    """(state dict, plan): every difference stored whole; a weight matrix / kernel either as an fp16 ".diff" or as a
    LoKr patch (ComfyUI's LyCORIS adapter: kron(lokr_w1, lokr_w2)) with lokr_w1 = [[scale]] (fp32) and lokr_w2 =
    difference / scale in float8_e4m3fn, scale = max |difference| / 448 (the format's largest value). The tensors
    kept in fp16 are those whose fp8 rounding error is largest per stored value, as many as the budget holds."""
    import torch

    out, quant, err = {}, {}, {}
    for k, d in diff.items():
        if d.ndim == 1:
            out[(k[: -len(".bias")] + ".diff_b") if k.endswith(".bias") else (k[: -len(".weight")] + ".diff")] = (
                d.half()
            )
            continue
        scale = float(d.abs().max()) / 448.0
        q = (d / scale).to(torch.float8_e4m3fn)
        quant[k] = (q, scale)
        err[k] = float((q.float() * scale - d).square().sum())
    used = sum(v.numel() * 2 for v in out.values()) + sum(q.numel() for q, _ in quant.values())
    plan = {k: "fp8" for k in quant}
    for k in sorted(quant, key=lambda k: -err[k] / diff[k].numel()):
        extra = diff[k].numel()  # fp16 costs one byte more per value than fp8
        if used + extra <= budget_bytes:
            plan[k], used = "fp16", used + extra
    for k, (q, scale) in quant.items():
        layer = k[: -len(".weight")]
        if plan[k] == "fp16":
            out[layer + ".diff"] = diff[k].half()
        else:
            out[layer + ".lokr_w1"] = torch.full([1] * diff[k].ndim if diff[k].ndim == 2 else [1, 1], scale)
            out[layer + ".lokr_w2"] = q
    return {k: v.contiguous() for k, v in out.items()}, plan


def file_bytes(tensors: dict, metadata: dict) -> int:
    from safetensors.torch import save

    return len(save(tensors, metadata=metadata))


def weight_error(strong: dict, weak: dict, patched: dict) -> dict:
    """Relative errors of the patched weights: ||W_lora - W_weak|| / ||W_weak - W_strong|| (the part of the
    difference not reproduced) and / ||W_weak||, over the whole network."""
    import torch

    num = sum(float((patched[k] - weak[k]).double().square().sum()) for k in weak)
    dif = sum(float((weak[k] - strong[k]).double().square().sum()) for k in weak)
    ref = sum(float(weak[k].double().square().sum()) for k in weak)
    return {
        "rel_to_difference": (num / dif) ** 0.5,
        "rel_to_weak": (num / ref) ** 0.5,
        "difference_rel_to_weak": (dif / ref) ** 0.5,
        "params": int(sum(torch.tensor(v.shape).prod() for v in weak.values())),
    }


def lora_clone(patcher, lora: dict, strength: float = 1.0):
    """A clone of the toy model's patcher with the LoRA's patches, by ComfyUI's LoRA loader (devkit.lora.with_lora =
    comfy.sd.load_lora_for_models, what LoraLoaderModelOnly runs); the clone shares the network."""
    from devkit.lora import with_lora

    return with_lora(patcher, {k: v.clone() for k, v in lora.items()}, strength)


def eps_error(lora: dict, n_per: int = 64, seed: int = 0) -> list:
    """Per sigma: ||eps_lora - eps_weak|| / ||eps_weak - eps_strong|| and / ||eps_weak||, on noised test images
    (the first n_per, their classes, and the empty prompt for every fourth), the clone's weights put on the
    network by ComfyUI's model patcher (patch_model)."""
    import torch

    from bench.toy import fashion

    H.boot()
    toy = H.pack_module("nodes.toy_nodes")
    strong, table, _ = toy.load_toy(STRONG)
    weak, _, _ = toy.load_toy(WEAK)
    clone = lora_clone(toy.load_toy(STRONG)[0], lora)
    clone.patch_model()
    x0, y = fashion.load("test")
    x0, y = x0[:n_per], y[:n_per].clone()
    y[::4] = 10
    ctx = table[y][:, None]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    ms = strong.model.model_sampling
    rows = []
    with torch.no_grad():
        for t in (999, 800, 600, 400, 250, 150, 80, 40, 15, 0):
            sigma = ms.sigmas[t].float()
            x = x0 + sigma * noise
            s = torch.full((n_per,), float(sigma))
            e = {}
            for name, m in (("strong", strong.model), ("weak", weak.model), ("lora", clone.model)):
                den = m.apply_model(x, s, c_crossattn=ctx)
                e[name] = (x - den) / sigma
            d = (e["weak"] - e["strong"]).norm()
            err = (e["lora"] - e["weak"]).norm()
            rows.append(
                {
                    "sigma": round(float(sigma), 4),
                    "rel_to_difference": float(err / d),
                    "rel_to_weak": float(err / e["weak"].norm()),
                    "difference_rel_to_weak": float(d / e["weak"].norm()),
                }
            )
    clone.unpatch_model()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="the file's size limit (bytes)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument(
        "--method",
        choices=("fp8", "svd"),
        default="fp8",
        help="fp8: whole differences, fp16 where the budget allows and fp8 (scaled, LoKr) elsewhere; "
        "svd: fp16 truncated SVD (ranks chosen for the budget), fp16 full diffs where cheaper",
    )
    ap.add_argument("--no-check", action="store_true", help="skip the fidelity measurement")
    args = ap.parse_args(argv)
    from guidance_core.files import atomic_save

    strong, weak = read_unet(STRONG), read_unet(WEAK)
    diff = differences(strong, weak)
    svd = spectra(diff) if args.method == "svd" else None
    small = sum(d.numel() for d in diff.values() if d.ndim == 1)
    command = "python -m bench.toy.make_weak_lora " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": command.strip(), "max_bytes": str(args.max_bytes), "method": args.method}
    budget = (args.max_bytes - 100_000) // 2 - small  # values; the header is far below 100 kB
    while True:  # shrink the budget until the file (header included) fits
        if args.method == "fp8":
            tensors, plan = fp8_tensors(diff, budget * 2 + small * 2)
        else:
            plan = allocate(svd, budget)
            tensors = lora_tensors(diff, svd, plan)
        size = file_bytes(tensors, {**meta, "plan": json.dumps(plan), "fidelity": "x" * 2000})
        if size <= args.max_bytes:
            break
        budget -= (size - args.max_bytes) // 2 + 1000
    patched = {k: strong[k] + _from_lora(tensors, k, diff[k]) for k in strong}
    fidelity = {"weights": weight_error(strong, weak, patched)}
    if not args.no_check:
        fidelity["eps"] = eps_error(tensors)
    meta.update(
        plan=json.dumps(plan),
        fidelity=json.dumps(fidelity),
        strong=os.path.basename(STRONG),
        weak=os.path.basename(WEAK),
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_save(tensors, args.out, meta)
    kinds = {}
    for v in plan.values():
        kinds[str(v)] = kinds.get(str(v), 0) + 1
    print(f"{args.out}: {os.path.getsize(args.out)} bytes, {len(tensors)} tensors; matrices/kernels: {kinds}")
    print(json.dumps(fidelity, indent=1))
    return fidelity


def _from_lora(tensors: dict, key: str, like):
    """The weight difference the LoRA state dict stores for one model key (zeros if none), in float32."""
    import torch

    layer = key[: -len(".weight")] if key.endswith(".weight") else key[: -len(".bias")]
    names = [layer + ".diff_b"] if key.endswith(".bias") else [layer + ".diff"]
    for n in names:
        if n in tensors:
            return tensors[n].float()
    if key.endswith(".weight") and layer + ".lora_up.weight" in tensors:
        up, down = tensors[layer + ".lora_up.weight"].float(), tensors[layer + ".lora_down.weight"].float()
        return (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(like.shape)
    if key.endswith(".weight") and layer + ".lokr_w1" in tensors:
        return tensors[layer + ".lokr_w2"].float() * float(tensors[layer + ".lokr_w1"].flatten()[0])
    return torch.zeros_like(like)


if __name__ == "__main__":
    main()
