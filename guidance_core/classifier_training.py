"""Training of noise-aware classifiers (pure torch).

Recipe of Dhariwal & Nichol 2021 (arXiv 2105.05233, Sec. 4 / App. D): for clean latents x0
with labels y, draw a noise level sigma, form the noisy input the sampler will show,
    x = alpha(sigma)*x0 + sigma*eps,   eps ~ N(0, I)
and minimize cross-entropy  L = -log softmax(f(c_in*x, sigma))_y  with AdamW (lr 3e-4,
weight decay 0.05) and a linear learning-rate anneal lr_t = lr*(1 - t/T). c_in is the target model's
own input scaling (parameterization.INPUT_SCALINGS), recorded in the classifier file for guidance.

Noise levels: log-uniform over [sigma_min, sigma_max] (default), or the model's own training
distribution (uniform over its sigma table: the discrete timesteps of eps/v models, the shifted
t grid of flow models). Validation accuracy is reported per log-sigma bucket.
Deterministic given a seed (one torch.Generator drives data order, sigmas and noise);
resumable from a checkpoint that holds weights, optimizer state, step and generator state.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch
from safetensors import safe_open
from torch.nn import functional as F

from . import parameterization
from .files import atomic_save
from .classifiers.noise_aware import ClassifierConfig, NoiseAwareClassifier
from .errors import GuidanceConfigError

SIGMA_DISTRIBUTIONS = ("log_uniform", "model")


def setting(default, help_text: str, lo=None, hi=None, choices=None):
    """A config field that carries its own help text and accepted range [lo, hi] (inclusive; hi = math.inf:
    no upper bound) or choices. The Train Classifier node's schema and the command line (train.build_parser)
    read them from here, check_settings checks them: one home per default and range."""
    meta = {"help": help_text}
    if lo is not None:
        meta["range"] = (lo, hi)
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


def setting_field(cls, name: str):
    """The dataclasses.Field of setting `name` of a config class (TrainConfig, ClassifierConfig)."""
    found = {f.name: f for f in fields(cls)}
    if name not in found:
        raise GuidanceConfigError(f"{name!r} is not a setting of {cls.__name__}; accepted: {', '.join(found)}")
    return found[name]


def _number(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe_range(lo, hi) -> str:
    """'in [lo, hi]', or 'lo or more' when hi = math.inf (no upper bound)."""
    return f"{_number(lo)} or more" if hi == math.inf else f"in [{_number(lo)}, {_number(hi)}]"


def check_settings(cls, values: dict):
    """Raise GuidanceConfigError naming the field, the bad value and what is accepted, for the first value
    outside its field's range or choices (see `setting`)."""
    for name, value in values.items():
        meta = setting_field(cls, name).metadata
        if "choices" in meta and value not in meta["choices"]:
            raise GuidanceConfigError(f"{name}={value!r}; accepted: {', '.join(meta['choices'])}")
        if "range" in meta:
            lo, hi = meta["range"]
            kind = "an integer" if isinstance(lo, int) else "a number"
            finite = isinstance(value, int) or math.isfinite(value)
            if not (finite and lo <= value <= hi):
                raise GuidanceConfigError(f"{name}={value}; use {kind} {describe_range(lo, hi)} ({meta['help']})")


# Train Classifier node settings that are not TrainConfig fields: steps = STEPS_CACHE_ONLY only encodes and
# caches the latents (for the command line trainer); images are resized to `resolution` pixels (datasets.load_image).
STEPS_CACHE_ONLY = 0
RESOLUTION_DEFAULT, RESOLUTION_RANGE = 512, (8, 4096)


@dataclass
class TrainConfig:
    steps: int = setting(2000, "training steps", 1, 1_000_000)
    batch_size: int = setting(64, "examples per step (per process under torchrun)", 1, 4096)
    lr: float = setting(3e-4, "AdamW learning rate, annealed linearly to 0 (ADM: 3e-4)", 1e-6, 1.0)
    weight_decay: float = setting(0.05, "AdamW weight decay (0 = none)", 0.0, math.inf)
    seed: int = setting(0, "seed: same seed, same classifier", 0, 2**31 - 1)
    sigma_distribution: str = setting(
        "log_uniform",
        "noise levels: log-uniform over the model's sigma range, or the model's own training distribution",
        choices=SIGMA_DISTRIBUTIONS,
    )
    class_balance: bool = setting(False, "sample labels equally often (off = as in the data)")
    val_fraction: float = 0.1  # held out for the report; in [0, 1)
    buckets: int = setting(5, "validation buckets over log sigma", 1, math.inf)
    eval_batches: int = setting(4, "validation batches per bucket", 1, math.inf)
    checkpoint_every: int = setting(0, "steps between checkpoints (0 = none)", 0, math.inf)
    arch: dict = field(default_factory=dict)  # ClassifierConfig overrides

    def validate(self):
        check_settings(TrainConfig, {f.name: getattr(self, f.name) for f in fields(self) if f.metadata})
        check_settings(ClassifierConfig, self.arch)
        if not 0.0 <= self.val_fraction < 1.0:
            raise GuidanceConfigError(f"val_fraction={self.val_fraction}; use a value in [0, 1)")


@dataclass
class NoiseSpec:
    """The target model's noise: parameterization (alpha), sigma range, (optionally) its sigma table, and its
    input scaling c_in (parameterization.INPUT_SCALINGS; default: the eps/v or flow convention)."""

    parameterization: str
    sigma_min: float
    sigma_max: float
    sigma_table: torch.Tensor | None = None
    input_scaling: dict | None = None

    def __post_init__(self):
        if self.parameterization not in parameterization.PARAMETERIZATIONS:
            raise GuidanceConfigError(
                f"parameterization={self.parameterization!r}; accepted: {', '.join(parameterization.PARAMETERIZATIONS)}"
            )
        self.input_scaling = parameterization.check_input_scaling(
            self.input_scaling or parameterization.default_input_scaling(self.parameterization)
        )

    @classmethod
    def from_cache(cls, meta: dict, sigma_table: torch.Tensor | None = None) -> "NoiseSpec":
        """The spec recorded in a latent cache's metadata (guidance_core.datasets)."""
        return cls(
            meta["parameterization"],
            float(meta["sigma_min"]),
            float(meta["sigma_max"]),
            sigma_table,
            meta.get("input_scaling"),
        )

    def sample(self, n: int, gen: torch.Generator, distribution: str) -> torch.Tensor:
        if distribution == "model":
            if self.sigma_table is None:
                raise GuidanceConfigError("sigma_distribution='model' needs the model's sigma table")
            idx = torch.randint(0, self.sigma_table.numel(), (n,), generator=gen)
            return self.sigma_table.flatten()[idx].float()
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen))

    def bucket_edges(self, buckets: int) -> list[float]:
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return [math.exp(lo + (hi - lo) * i / buckets) for i in range(buckets + 1)]


def split_indices(labels: torch.Tensor, val_fraction: float, seed: int):
    """Stratified, seeded train/validation split: (train_idx, val_idx)."""
    gen = torch.Generator().manual_seed(seed + 7919)
    tr, va = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        k = int(round(idx.numel() * val_fraction))
        if val_fraction > 0 and idx.numel() > 1:
            k = max(1, k)
        va.append(idx[:k])
        tr.append(idx[k:])
    return torch.cat(tr), torch.cat(va)


def noisy_batch(x0, sigma, noise, spec: NoiseSpec):
    """Classifier input c_in(sigma)*(alpha*x0 + sigma*eps) for a batch, c_in the model's input scaling."""
    x = parameterization.add_noise(x0, noise, sigma, spec.parameterization)
    return parameterization.scale_input(x, sigma, spec.input_scaling)


@torch.no_grad()
def evaluate(
    model, latents, labels, spec: NoiseSpec, buckets: int, batches: int, batch_size: int, seed: int, device
) -> list[dict]:
    """Accuracy per log-sigma bucket, with a fixed generator (same noise at every evaluation)."""
    gen = torch.Generator().manual_seed(seed + 104729)
    edges = spec.bucket_edges(buckets)
    model.eval()
    out = []
    for b in range(buckets):
        correct = total = 0
        lo, hi = math.log(edges[b]), math.log(edges[b + 1])
        for _ in range(batches):
            idx = torch.randint(0, latents.shape[0], (min(batch_size, latents.shape[0]),), generator=gen)
            sig = torch.exp(lo + (hi - lo) * torch.rand(idx.numel(), generator=gen))
            noise = torch.randn(latents[idx].shape, generator=gen)
            x0 = latents[idx]
            inp = noisy_batch(x0, sig, noise, spec).to(device)
            pred = model(inp, sig.to(device)).argmax(1).cpu()
            correct += int((pred == labels[idx]).sum())
            total += idx.numel()
        out.append({"sigma_lo": edges[b], "sigma_hi": edges[b + 1], "accuracy": correct / max(1, total), "n": total})
    model.train()
    return out


class Trainer:
    """One training run. `latents` are clean latents in the sampler's space (after the latent
    format's process_in), `labels` int64 class indices. The loop calls `on_step(step, loss)` after
    every step (raise from it to interrupt: nothing is written then) and `on_checkpoint(step)`."""

    def __init__(
        self,
        latents: torch.Tensor,
        labels: torch.Tensor,
        label_names: list[str],
        spec: NoiseSpec,
        config: TrainConfig,
        device="cpu",
        distributed=None,
    ):
        config.validate()
        if latents.shape[0] != labels.shape[0]:
            raise GuidanceConfigError(f"{latents.shape[0]} latents but {labels.shape[0]} labels")
        if latents.shape[0] < 2:
            raise GuidanceConfigError(f"{latents.shape[0]} examples; a classifier needs at least 2")
        self.config, self.spec, self.device = config, spec, torch.device(device)
        self.label_names = list(label_names)
        self.latents, self.labels = latents.float().cpu(), labels.long().cpu()
        self.train_idx, self.val_idx = split_indices(self.labels, config.val_fraction, config.seed)
        arch = dict(in_channels=latents.shape[1], num_classes=len(label_names))
        arch.update(config.arch)
        torch.manual_seed(config.seed)
        self.model = NoiseAwareClassifier(ClassifierConfig(**arch)).to(self.device)
        self.net = self.model
        self.dist = distributed  # (rank, world_size) when running under torch.distributed
        if distributed is not None:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        rank = distributed[0] if distributed else 0
        self.gen = torch.Generator().manual_seed(config.seed * 1000003 + rank)
        self.step = 0
        counts = torch.bincount(self.labels[self.train_idx], minlength=len(label_names)).float()
        self.sample_weights = (1.0 / counts.clamp(min=1))[self.labels[self.train_idx]] if config.class_balance else None

    def next_batch(self):
        n = self.config.batch_size
        if self.sample_weights is not None:
            pick = torch.multinomial(self.sample_weights, n, replacement=True, generator=self.gen)
        else:
            pick = torch.randint(0, self.train_idx.numel(), (n,), generator=self.gen)
        idx = self.train_idx[pick]
        sig = self.spec.sample(n, self.gen, self.config.sigma_distribution)
        noise = torch.randn(self.latents[idx].shape, generator=self.gen)
        return noisy_batch(self.latents[idx], sig, noise, self.spec), sig, self.labels[idx]

    def lr_at(self, step: int) -> float:
        """Linear anneal: lr * (1 - step / steps)."""
        return self.config.lr * (1.0 - step / self.config.steps)

    def run(self, on_step: Callable | None = None, on_checkpoint: Callable | None = None):
        self.model.train()
        while self.step < self.config.steps:
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
            inp, sig, y = self.next_batch()
            logits = self.net(inp.to(self.device), sig.to(self.device))
            loss = F.cross_entropy(logits, y.to(self.device))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            if on_step is not None:
                on_step(self.step, float(loss.detach()))
            ce = self.config.checkpoint_every
            if on_checkpoint is not None and ce > 0 and self.step % ce == 0 and self.step < self.config.steps:
                on_checkpoint(self.step)
        return self.model

    def report(self) -> dict:
        c = self.config
        val = self.val_idx if self.val_idx.numel() > 0 else self.train_idx
        buckets = evaluate(
            self.model,
            self.latents[val],
            self.labels[val],
            self.spec,
            c.buckets,
            c.eval_batches,
            c.batch_size,
            c.seed,
            self.device,
        )
        return {
            "labels": self.label_names,
            "steps": self.step,
            "train_examples": int(self.train_idx.numel()),
            "val_examples": int(self.val_idx.numel()),
            "parameterization": self.spec.parameterization,
            "input_scaling": dict(self.spec.input_scaling),
            "buckets": buckets,
            "config": asdict(c),
        }

    # -- checkpoints: safetensors tensors + JSON metadata, written atomically
    def state_tensors(self) -> dict:
        t = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.model.parameters()):
            for k, v in self.opt.state.get(p, {}).items():
                t[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        t["rng"] = self.gen.get_state()
        return t

    def save_checkpoint(self, path: str):
        meta = {"step": self.step, "config": asdict(self.config), "labels": self.label_names}
        atomic_save(self.state_tensors(), path, {"guidance_lab_checkpoint": json.dumps(meta)})
        return path

    def load_checkpoint(self, path: str):
        with safe_open(path, framework="pt") as f:
            meta = json.loads(f.metadata()["guidance_lab_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta["labels"] != self.label_names:
            raise GuidanceConfigError(f"checkpoint labels {meta['labels']} differ from the data's {self.label_names}")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        params = list(self.model.parameters())
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                self.opt.state[params[int(i)]][name] = v.to(self.device) if name != "step" else v
        self.gen.set_state(tensors["rng"])
        self.step = int(meta["step"])


def classifier_metadata(trainer: Trainer, latent_format: str = "", report: dict | None = None) -> dict:
    """Metadata of the classifier file format (guidance_core.classifiers.classifier_files)."""
    meta = {
        "architecture": "noise_aware",
        "config": trainer.model.config.to_dict(),
        "labels": trainer.label_names,
        "latent_channels": int(trainer.latents.shape[1]),
        "latent_format": latent_format,
        "parameterization": trainer.spec.parameterization,
        "input_scaling": dict(trainer.spec.input_scaling),
        "sigma_min": trainer.spec.sigma_min,
        "sigma_max": trainer.spec.sigma_max,
        "train_steps": trainer.step,
    }
    if report is not None:
        meta["val_accuracy"] = [round(b["accuracy"], 4) for b in report["buckets"]]
    return meta
