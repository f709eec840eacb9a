"""Command-line training of a noise-aware classifier from a latent cache, for long runs on a GPU
server. Run from the pack's folder:

    python -m guidance_core.train --latents CACHE.safetensors --out my_classifier.safetensors \
        [--steps 20000] [--batch-size 64] [--lr 3e-4] [--seed 0] [--checkpoint-every 1000] [--resume CKPT]
    torchrun --nproc_per_node 4 -m guidance_core.train ...      (multi-GPU, DistributedDataParallel)

The latent cache is written by the "Train Classifier" node (it encodes the images with the
model's VAE inside ComfyUI and applies the model's own latent_format.process_in); it holds the latents in
the sampler's space, the labels and the model's noise facts (including its input scaling, which the
classifier file records for guidance).
Ctrl-C stops the run: the classifier file is written only at the very end (atomically), and
checkpoints are complete files, so nothing half-written is ever left behind.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

import torch
import torch.distributed as dist

from .classifiers import classifier_files
from .classifiers.noise_aware import ClassifierConfig
from .datasets import load_latent_cache
from .errors import GuidanceConfigError
from .classifier_training import NoiseSpec, TrainConfig, Trainer, classifier_metadata, describe_range, setting_field


def build(tensors: dict, meta: dict, config: TrainConfig, device, distributed=None) -> Trainer:
    """A Trainer on a latent cache: its latents are already in the sampler's space (the node applied the
    model's own latent_format.process_in), its metadata holds the model's noise facts and input scaling."""
    spec = NoiseSpec.from_cache(meta, tensors.get("sigma_table"))
    return Trainer(
        tensors["latents"], tensors["labels"], meta["labels"], spec, config, device=device, distributed=distributed
    )


# (config class, field) of each training setting on the command line; the flag is --field-with-dashes
SETTINGS = [
    (TrainConfig, name)
    for name in (
        "steps",
        "batch_size",
        "lr",
        "weight_decay",
        "seed",
        "sigma_distribution",
        "class_balance",
        "checkpoint_every",
    )
] + [(ClassifierConfig, "base_channels")]


def add_setting(ap: argparse.ArgumentParser, config, name: str):
    """--name for a config field: default, choices, type and help (with the accepted range) from its metadata."""
    f = setting_field(config, name)
    flag, meta = "--" + name.replace("_", "-"), f.metadata
    if isinstance(f.default, bool):
        ap.add_argument(flag, action="store_true", help=meta["help"])
    elif "choices" in meta:
        ap.add_argument(
            flag, default=f.default, choices=list(meta["choices"]), help=f"{meta['help']} (default: %(default)s)"
        )
    else:
        ap.add_argument(
            flag,
            type=type(f.default),
            default=f.default,
            help=f"{meta['help']} (default: %(default)s; {describe_range(*meta['range'])})",
        )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m guidance_core.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latents", required=True, help="latent cache (.safetensors) written by the Train Classifier node")
    ap.add_argument("--out", required=True, help="classifier file to write (.safetensors)")
    for config, name in SETTINGS:
        add_setting(ap, config, name)
    ap.add_argument("--checkpoint", default=None, help="checkpoint path (default: OUT with .ckpt.safetensors)")
    ap.add_argument("--resume", default=None, help="checkpoint to resume from")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {name: getattr(args, name) for config, name in SETTINGS if config is TrainConfig}
    arch = {name: getattr(args, name) for config, name in SETTINGS if config is ClassifierConfig}
    return TrainConfig(**values, arch=arch)


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    config = config_from_args(args)
    try:
        config.validate()  # before any work
    except GuidanceConfigError as e:
        ap.error(str(e))

    distributed = None
    if dist.is_torchelastic_launched():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        distributed = (dist.get_rank(), dist.get_world_size())
    rank = distributed[0] if distributed else 0
    if args.device:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")

    tensors, meta = load_latent_cache(args.latents)
    trainer = build(tensors, meta, config, device, distributed)
    ckpt = (
        args.checkpoint
        or (args.out[: -len(".safetensors")] if args.out.endswith(".safetensors") else args.out) + ".ckpt.safetensors"
    )
    if args.resume:
        trainer.load_checkpoint(args.resume)

    from tqdm import tqdm

    bar = tqdm(total=config.steps, initial=trainer.step, desc="training", disable=rank != 0)

    # Ctrl-C asks the loop to stop after the step it is in (a second one stops at once): a KeyboardInterrupt raised
    # asynchronously can land in a finalizer or callback, where Python prints and drops it, and training goes on.
    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, on_sigint)

    def on_step(step, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if stop.is_set():
            raise KeyboardInterrupt

    def on_checkpoint(step):
        if rank == 0:
            trainer.save_checkpoint(ckpt)

    try:
        trainer.run(on_step, on_checkpoint)
    except KeyboardInterrupt:
        bar.close()
        if rank == 0:
            print(
                f"interrupted at step {trainer.step}; no classifier written"
                + (f"; last checkpoint: {ckpt}" if config.checkpoint_every else ""),
                file=sys.stderr,
            )
        return 130
    bar.close()
    if rank == 0:
        report = trainer.report()
        classifier_files.save_classifier(
            args.out, trainer.model, classifier_metadata(trainer, meta.get("latent_format", ""), report)
        )
        print(json.dumps({"out": args.out, "buckets": report["buckets"]}, indent=1))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
