"""The independent evaluation classifier of the toy world: a plain CNN trained on CLEAN
Fashion-MNIST images only, never used for guidance. It scores samples (intended-class accuracy) and
gives the feature space (penultimate layer, 128-d) for the Frechet distance and precision/recall.

    .venv/bin/python -m bench.toy.eval_classifier --epochs 4 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
from bench.toy import fashion

WEIGHTS = os.path.join(HERE, "weights", "fashion_eval.safetensors")
FEATURES = 128


class EvalNet(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(128)-conv(128)-pool(2x2)-fc(128)-fc(10), BatchNorm, ReLU."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            *block(128, 128),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(512, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def load(path: str = WEIGHTS) -> EvalNet:
    from safetensors.torch import load_file

    net = EvalNet()
    net.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return net.eval()


@torch.no_grad()
def predict(net: EvalNet, x: torch.Tensor, batch: int = 500):
    """(logits [N, 10], features [N, 128]) for images in [-1, 1], 1x32x32."""
    logits, feats = [], []
    for i in range(0, x.shape[0], batch):
        f = net.features(x[i : i + batch].float().clamp(-1, 1))
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(logits), torch.cat(feats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=WEIGHTS)
    args = ap.parse_args()
    from tqdm import tqdm

    from guidance_core.files import atomic_save

    torch.manual_seed(args.seed)
    x, y = fashion.load("train")
    xt, yt = fashion.load("test")
    net = EvalNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (x.shape[0] // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    bar = tqdm(total=steps, desc="eval classifier")
    for _ in range(args.epochs):
        net.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0] - args.batch + 1, args.batch):
            idx = perm[i : i + args.batch]
            xb = x[idx]
            flip = torch.rand(xb.shape[0], generator=gen) < 0.5  # horizontal flips: clothes are symmetric
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.cross_entropy(net(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()
    acc = float((predict(net, xt)[0].argmax(1) == yt).float().mean())
    meta = {
        "test_accuracy": round(acc, 4),
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "train_seconds": round(time.time() - t0),
        "command": " ".join(["bench/toy/eval_classifier.py", *sys.argv[1:]]),
    }
    tensors = {k: v.detach().half().contiguous() for k, v in net.state_dict().items() if v.dtype.is_floating_point}
    tensors.update({k: v for k, v in net.state_dict().items() if not v.dtype.is_floating_point})
    atomic_save(tensors, args.out, {"fashion_eval": json.dumps(meta)})
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
