"""Train the toy world's class-conditional diffusion model on Fashion-MNIST (CPU is enough).

ComfyUI's own UNetModel (config in nodes/toy_nodes.py), eps-prediction on ComfyUI's discrete
schedule (x = x0 + sigma*eps, input x/sqrt(1+sigma^2), timestep t uniform over 0..999), MSE on eps,
label dropout p_uncond = 0.1 to the null label (Ho & Salimans 2022, Alg. 1), AdamW, EMA of weights.

    .venv/bin/python -m bench.toy.train_toy --steps 6000 --seed 0 --out toy_models/diffusion/fashion_diffusion.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from devkit import comfy_host as H
from bench.toy import fashion


def init_weights(module):
    """ComfyUI's ops skip weight init (weights are loaded from files); train from PyTorch's defaults."""
    import torch

    for m in module.modules():
        for base in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, base):
                base.reset_parameters(m)


def optimizer_step(opt, loss, params, ema_params, ema: float):
    """One AdamW step on loss (gradient norm clipped to 1), then the EMA copies (ema_params, in the order of params)
    move towards the weights by 1 - ema."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.lerp_(p, 1 - ema)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--out", default=os.path.join(ROOT, "toy_models", "diffusion", "fashion_diffusion.safetensors"))
    ap.add_argument("--save-every", type=int, default=500, help="write the EMA weights every N steps (atomic)")
    ap.add_argument(
        "--embedding-from",
        default=None,
        help="a toy model file whose class embeddings this model uses, frozen (the weak model of "
        "autoguidance shares the strong model's conditioning, as a smaller SD shares its text encoder)",
    )
    args = ap.parse_args()
    H.boot()
    import torch
    from tqdm import tqdm

    toy = H.pack_module("nodes.toy_nodes")
    files = H.pack_module("guidance_core.files")
    torch.manual_seed(args.seed)
    x_all, y_all = fashion.load("train")
    model = toy.build_toy_model()
    unet = model.diffusion_model
    init_weights(unet)
    emb = toy.class_embedding_table(10)
    if args.embedding_from:
        _, table, _ = toy.load_toy(args.embedding_from)
        with torch.no_grad():
            emb.weight.copy_(table)
        emb.requires_grad_(False)
    params = list(unet.parameters()) + [p for p in emb.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema_unet, ema_emb = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(emb).requires_grad_(False)
    sigmas = model.model_sampling.sigmas.float()
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="toy diffusion")
    for step in bar:
        lr = args.lr * min(1.0, (step + 1) / 200) * (1 - step / args.steps) ** 0.5
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, x_all.shape[0], (args.batch,), generator=gen)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(args.batch, generator=gen) < args.p_uncond] = 10  # null label
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        s = sigmas[t].view(-1, 1, 1, 1)
        eps = torch.randn(x0.shape, generator=gen)
        x_in = (x0 + s * eps) / torch.sqrt(1 + s**2)
        out = unet(x_in, t.float(), context=emb(y)[:, None])
        loss = torch.nn.functional.mse_loss(out, eps)
        optimizer_step(
            opt,
            loss,
            params,
            list(ema_unet.parameters()) + (list(ema_emb.parameters()) if emb.weight.requires_grad else []),
            args.ema,
        )
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save(files, toy, ema_unet, ema_emb, args, step + 1, time.time() - t0)


def save(files, toy, ema_unet, ema_emb, args, steps_done, seconds):
    tensors = {f"diffusion_model.{k}": v.half().contiguous() for k, v in ema_unet.state_dict().items()}
    tensors["class_embedding.weight"] = ema_emb.weight.detach().half().contiguous()
    meta = {
        "labels": toy.FASHION_LABELS,
        "steps": steps_done,
        "planned_steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "embedding_from": os.path.basename(args.embedding_from or "") or None,
        "p_uncond": args.p_uncond,
        "ema": args.ema,
        "train_seconds": round(seconds),
        "command": " ".join(["bench/toy/train_toy.py", *sys.argv[1:]]),
    }
    files.atomic_save(tensors, args.out, {"guidance_lab_toy": json.dumps(meta)})
    print("wrote", args.out, f"{os.path.getsize(args.out) / 1e6:.1f} MB", meta, flush=True)


if __name__ == "__main__":
    main()
