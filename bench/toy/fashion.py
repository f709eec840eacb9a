"""Fashion-MNIST from the Debian package dataset-fashion-mnist (official idx files), padded to 32x32."""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch

DIR = "/usr/share/datasets/fashion-mnist/"


def _read(name, offset):
    path = os.path.join(DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: apt-get install -y dataset-fashion-mnist")
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=offset)


def load(split: str = "train"):
    """(images [N, 1, 32, 32] float in [-1, 1], labels [N] int64)."""
    pre = "train" if split == "train" else "t10k"
    x = _read(f"{pre}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = _read(f"{pre}-labels-idx1-ubyte.gz", 8)
    img = torch.from_numpy(x.copy()).float().div(127.5).sub(1.0)
    img = torch.nn.functional.pad(img, (2, 2, 2, 2), value=-1.0)[:, None]
    return img, torch.from_numpy(y.astype(np.int64))


N_CLASSES = 10


def class_counts(n: int) -> list[int]:
    """Samples per class when n samples are spread over the 10 classes as evenly as possible (the first n % 10
    classes get one more)."""
    return [n // N_CLASSES + (1 if c < n % N_CLASSES else 0) for c in range(N_CLASSES)]
