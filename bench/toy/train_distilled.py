"""Distil the toy model's classifier-free guidance into a student that takes the CFG scale as an input
(Meng et al. 2023, "On Distillation of Guided Diffusion Models", arXiv 2210.03142, stage 1; the way Flux dev
is guidance-distilled): one model call per step instead of CFG's two.

Student = the teacher's network plus an embedding of the guidance scale g (nodes/toy_nodes.py GuidanceToyUNet),
initialised as the teacher's conditional model (the new embedding's last layer zero). Each step: Fashion-MNIST
images noised at t uniform over 0..999 (ComfyUI's discrete schedule), a class (the null label with p_null, so
"empty" keeps the teacher's unconditional model), g ~ U[g_min, g_max]; the target is the teacher's CFG in eps,
eps_u + g (eps_c - eps_u) (ComfyUI's cfg convention), the loss MSE; AdamW, EMA of the student's weights. The
class embeddings are the teacher's, copied and frozen (the prompts stay the same).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.toy.train_distilled --steps 1500 --batch 32 --lr 3e-4 --seed 0 \\
        --save-every 250 --out toy_models/diffusion/fashion_diffusion_distilled.safetensors   (toy_models/README.md)
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
from bench.toy.train_toy import init_weights, optimizer_step

TEACHER = os.path.join(ROOT, "toy_models", "diffusion", "fashion_diffusion.safetensors")


def student_from_teacher(toy, teacher_path: str):
    """(teacher UNet, student BaseModel, class embedding table): the student's UNet holds the teacher's weights,
    its guidance MLP default-initialised with the last layer zero (so it starts as the teacher's conditional model)."""
    import torch

    teacher, table, _ = toy.load_toy(teacher_path)
    student = toy.build_toy_model(student=True)
    unet = student.diffusion_model
    missing, unexpected = unet.load_state_dict(teacher.model.diffusion_model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("label_emb.") for k in missing):
        raise RuntimeError(f"teacher/student mismatch: missing {missing}, unexpected {unexpected}")
    init_weights(unet.label_emb)
    last = unet.label_emb[0][2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return teacher.model.diffusion_model.requires_grad_(False), student, table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--g-min", type=float, default=1.0, help="smallest guidance scale drawn (ComfyUI cfg)")
    ap.add_argument("--g-max", type=float, default=6.0, help="largest guidance scale drawn")
    ap.add_argument("--p-null", type=float, default=0.1, help="share of rows with the null label (the empty prompt)")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--teacher", default=TEACHER)
    ap.add_argument(
        "--out", default=os.path.join(ROOT, "toy_models", "diffusion", "fashion_diffusion_distilled.safetensors")
    )
    ap.add_argument("--save-every", type=int, default=250, help="write the EMA weights every N steps (atomic)")
    ap.add_argument(
        "--init",
        default=None,
        help="start from this student file's weights (a further stage of training) instead of the teacher's",
    )
    ap.add_argument(
        "--guidance-lr-mult",
        type=float,
        default=1.0,
        help="learning rate of the guidance MLP (label_emb) as a multiple of --lr",
    )
    ap.add_argument(
        "--trajectory-share",
        type=float,
        default=0.0,
        help="share of each batch taken from the teacher's own CFG sampling trajectories (states x_t the sampler "
        "visits under guidance, off the noised-data distribution) instead of noised training images",
    )
    ap.add_argument("--trajectories", type=int, default=512, help="teacher trajectories drawn up front (euler, normal)")
    ap.add_argument("--trajectory-steps", type=int, default=20, help="steps of each teacher trajectory")
    args = ap.parse_args()
    if not 0 <= args.trajectory_share <= 1:
        raise SystemExit(f"--trajectory-share {args.trajectory_share}: need a share in [0, 1]")
    if not 0 < args.g_min <= args.g_max:
        raise SystemExit(f"--g-min {args.g_min} / --g-max {args.g_max}: need 0 < g_min <= g_max")
    H.boot()
    import torch
    from tqdm import tqdm

    toy = H.pack_module("nodes.toy_nodes")
    files = H.pack_module("guidance_core.files")
    torch.manual_seed(args.seed)
    x_all, y_all = fashion.load("train")
    teacher, student, table = student_from_teacher(toy, args.teacher)
    unet = student.diffusion_model
    if args.init:
        stage, _, _ = toy.load_toy(args.init)
        unet.load_state_dict(stage.model.diffusion_model.state_dict())
    unet.train()
    emb = torch.nn.Embedding.from_pretrained(table.float(), freeze=True)
    params = list(unet.parameters())
    guidance_params = list(unet.label_emb.parameters())
    rest = [p for p in params if all(p is not q for q in guidance_params)]
    opt = torch.optim.AdamW(
        [{"params": rest, "mult": 1.0}, {"params": guidance_params, "mult": args.guidance_lr_mult}],
        lr=args.lr,
        weight_decay=0.0,
    )
    ema_unet = copy.deepcopy(unet).requires_grad_(False)
    sigmas = student.model_sampling.sigmas.float()
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    n_traj = round(args.trajectory_share * args.batch)
    if n_traj:
        states = teacher_trajectories(teacher, emb, student.model_sampling, args, gen)
    bar = tqdm(range(args.steps), desc="distil toy CFG")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = group["mult"] * args.lr * min(1.0, (step + 1) / 100) * (1 - step / args.steps) ** 0.5
        idx = torch.randint(0, x_all.shape[0], (args.batch,), generator=gen)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(args.batch, generator=gen) < args.p_null] = 10  # null label
        g = args.g_min + (args.g_max - args.g_min) * torch.rand(args.batch, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen).float()
        s = sigmas[t.long()].view(-1, 1, 1, 1)
        x_in = (x0 + s * torch.randn(x0.shape, generator=gen)) / torch.sqrt(1 + s**2)
        if n_traj:  # the last n_traj rows: states of the teacher's guided trajectories, with their label and scale
            pick = torch.randint(0, states[0].shape[0], (n_traj,), generator=gen)
            x_in[-n_traj:], t[-n_traj:], y[-n_traj:], g[-n_traj:] = (v[pick] for v in states)
        with torch.no_grad():
            ctx = torch.cat([emb(y), emb(torch.full_like(y, 10))])[:, None]
            eps_c, eps_u = teacher(torch.cat([x_in, x_in]), torch.cat([t, t]), context=ctx).chunk(2)
            target = eps_u + g.view(-1, 1, 1, 1) * (eps_c - eps_u)
        out = unet(x_in, t, context=emb(y)[:, None], guidance=g)
        loss = torch.nn.functional.mse_loss(out, target)
        optimizer_step(opt, loss, params, list(ema_unet.parameters()), args.ema)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.5f}")
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save(files, toy, ema_unet, table, args, step + 1, time.time() - t0, loss.item())


def teacher_trajectories(teacher, emb, model_sampling, args, gen, batch: int = 128):
    """(x_in, t, label, g) of every state the teacher's CFG visits when sampling (euler, ComfyUI's normal schedule,
    args.trajectory_steps steps; labels with the null label at p_null, g ~ U[g_min, g_max]): `args.trajectories`
    trajectories, the UNet's scaled input x / sqrt(1 + sigma^2) and continuous timestep of each step."""
    import comfy.samplers
    import torch
    from tqdm import tqdm

    sig = comfy.samplers.calculate_sigmas(model_sampling, "normal", args.trajectory_steps).float()
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, args.trajectories, batch), desc="teacher trajectories"):
            b = min(batch, args.trajectories - start)
            y = torch.randint(0, 10, (b,), generator=gen)
            y[torch.rand(b, generator=gen) < args.p_null] = 10
            g = args.g_min + (args.g_max - args.g_min) * torch.rand(b, generator=gen)
            ctx = torch.cat([emb(y), emb(torch.full_like(y, 10))])[:, None]
            x = torch.randn(b, 1, 32, 32, generator=gen) * sig[0]
            for i in range(args.trajectory_steps):
                x_in = x / torch.sqrt(1 + sig[i] ** 2)
                t = model_sampling.timestep(sig[i]).float().expand(b)
                out.append((x_in, t, y, g))
                eps_c, eps_u = teacher(torch.cat([x_in, x_in]), torch.cat([t, t]), context=ctx).chunk(2)
                x = x + (sig[i + 1] - sig[i]) * (eps_u + g.view(-1, 1, 1, 1) * (eps_c - eps_u))
    return tuple(torch.cat(v) for v in zip(*out))


def save(files, toy, ema_unet, table, args, steps_done, seconds, loss):
    tensors = {f"diffusion_model.{k}": v.half().contiguous() for k, v in ema_unet.state_dict().items()}
    tensors["class_embedding.weight"] = table.half().contiguous()
    meta = {
        "labels": toy.FASHION_LABELS,
        "variant": toy.STUDENT_VARIANT,
        "default_guidance": toy.DEFAULT_GUIDANCE,
        "teacher": os.path.basename(args.teacher),
        "guidance_range": [args.g_min, args.g_max],
        "steps": steps_done,
        "planned_steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "p_null": args.p_null,
        "ema": args.ema,
        "last_loss": round(loss, 6),
        "train_seconds": round(seconds),
        "command": " ".join(["bench/toy/train_distilled.py", *sys.argv[1:]]),
    }
    files.atomic_save(tensors, args.out, {"guidance_lab_toy": json.dumps(meta)})
    print("wrote", args.out, f"{os.path.getsize(args.out) / 1e6:.2f} MB", meta, flush=True)


if __name__ == "__main__":
    main()
