"""Training noise-aware classifiers on labeled images, inside a real ComfyUI and on the command line."""

import glob
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from devkit import comfy_host as H

pytestmark = pytest.mark.comfy

LABELS = ["circle", "square", "triangle", "cross"]


@pytest.fixture(scope="module")
def shapes_world(tmp_path_factory):
    """A folder of labeled shape pictures (input/shapes), the demo world's model and a pixel-space VAE."""
    demo = H.demo_module()
    root = tmp_path_factory.mktemp("gl-train")
    with H.user_folders(root):
        make_shapes(root / "input" / "shapes", demo, per_class=60)
        vae = H.pixel_space_vae()  # ComfyUI's pixel-space VAE: 3 channels
        yield {
            "demo": demo,
            "root": root,
            "vae": vae,
            "model": demo.gmm_model(),
            "errors": H.pack_module("guidance_core.errors"),
        }


def make_shapes(folder, demo, per_class, seed=0):
    """Jittered pictures of the demo shapes: shifted, recolored, noisy; 32x32 PNG, one folder per label."""
    rng = np.random.default_rng(seed)
    means = demo.shape_means(32).numpy()
    for k, lb in enumerate(LABELS):
        os.makedirs(folder / lb, exist_ok=True)
        for i in range(per_class):
            img = np.roll(means[k], shift=(rng.integers(-3, 4), rng.integers(-3, 4)), axis=(1, 2))
            img = img * rng.uniform(0.8, 1.1) + rng.normal(0, 0.15, img.shape)
            arr = ((np.clip(img, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(1, 2, 0)
            Image.fromarray(arr).save(folder / lb / f"{i:03d}.png")


def train(shapes_world, **kw):
    args = dict(
        model=shapes_world["model"],
        vae=shapes_world["vae"],
        dataset="shapes",
        output_name="shapes_test",
        steps=600,
        batch_size=32,
        lr=1e-3,
        seed=0,
        resolution=32,
        sigma_distribution="log_uniform",
        class_balance=False,
        width=32,
    )
    args.update(kw)
    with torch.inference_mode():  # as ComfyUI runs nodes
        return H.run_node("GuidanceLabTrainClassifier", **args)


def class_of(samples, demo):
    means = demo.shape_means(32)
    return ((samples[:, None] - means[None]) ** 2).flatten(2).sum(-1).argmin(1)


# ------------------------------------------------------------ Must show 1 and 3
def test_train_report_load_and_guide(shapes_world):
    calls = []
    fsm = shapes_world["vae"].first_stage_model
    original = fsm.encode
    fsm.encode = lambda *a, **k: (calls.append(1), original(*a, **k))[1]  # count the VAE's encoder calls
    try:
        clf, plot, report_text = train(shapes_world)
        first_calls = len(calls)
        train(shapes_world, output_name="shapes_test_again", steps=5)  # same data: latents come from the cache
        assert first_calls > 0 and len(calls) == first_calls, (first_calls, len(calls))
    finally:
        fsm.encode = original
    import json

    report = json.loads(report_text)
    acc = [b["accuracy"] for b in report["buckets"]]
    assert acc[0] >= 0.95, acc
    assert acc[-1] <= acc[0] - 0.2 and all(a >= b - 0.05 for a, b in zip(acc, acc[1:])), acc  # falls with noise
    out = shapes_world["root"] / "classifiers" / "shapes_test.safetensors"
    assert out.exists() and (shapes_world["root"] / "classifiers" / "shapes_test.report.png").exists()
    assert plot.shape[-1] == 3 and float(plot.std()) > 0
    # the file loads in the classifier loader and guiding with it raises the target-class rate
    with torch.inference_mode():
        loaded = H.run_node("GuidanceLabClassifierLoader", classifier_name="shapes_test.safetensors")[0]
    assert loaded.labels == sorted(LABELS)  # label order: sorted folder names
    empty = shapes_world["demo"].class_conditioning([0.0] * 4)
    lat = {"samples": torch.zeros(64, 3, 32, 32)}

    def sample(model):
        with torch.inference_mode():
            return H.run_node(
                "KSampler",
                model=model,
                seed=11,
                steps=20,
                cfg=1.0,
                sampler_name="euler",
                scheduler="normal",
                positive=empty,
                negative=empty,
                latent_image=lat,
                denoise=1.0,
            )[0]["samples"]

    free = class_of(sample(shapes_world["model"]), shapes_world["demo"])
    guided_model = H.run_node(
        "GuidanceLabClassifierGuidance",
        model=shapes_world["model"],
        classifier=loaded,
        target="triangle",
        scale=10.0,
        sigma_lo=0.0,
        sigma_hi=1.0e4,
        every_n=1,
        rms_clamp=0.0,
        dtype="float32",
    )[0]
    guided = class_of(sample(guided_model), shapes_world["demo"])
    rate_free, rate_guided = float((free == 2).float().mean()), float((guided == 2).float().mean())
    assert rate_free < 0.45 and rate_guided > rate_free + 0.3, (rate_free, rate_guided)


# ------------------------------------------------------------ Must show 2: bad input
def test_bad_datasets(shapes_world):
    err = shapes_world["errors"].GuidanceConfigError
    inp = shapes_world["root"] / "input"
    (inp / "empty").mkdir()
    with pytest.raises(err, match="no label subfolders"):
        train(shapes_world, dataset="empty")
    (inp / "half" / "cat").mkdir(parents=True)
    (inp / "half" / "dog").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(inp / "half" / "cat" / "a.png")
    with pytest.raises(err, match="label 'dog' has no images"):
        train(shapes_world, dataset="half")
    with pytest.raises(err, match="without '..'"):
        train(shapes_world, dataset="../outside")
    with pytest.raises(err, match="without '..'"):
        train(shapes_world, dataset="/etc")
    with pytest.raises(err, match="use letters, digits"):
        train(shapes_world, output_name="../../evil")
    tiny_unet = H.tiny_model("eps")  # 4-channel latents vs the pixel VAE's 3
    with pytest.raises(err, match="the VAE makes 3-channel latents, the model uses 4"):
        train(shapes_world, model=tiny_unet)


def test_unreadable_skipped_and_mixed_sizes(shapes_world, caplog):
    inp = shapes_world["root"] / "input" / "mixed"
    for lb in ("a", "b"):
        (inp / lb).mkdir(parents=True)
        for i in range(4):
            size = (48, 40) if i % 2 else (32, 32)  # mixed sizes: resized + center-cropped
            Image.new("RGB", size, (200 if lb == "a" else 20, 90, 90)).save(inp / lb / f"{i}.png")
    (inp / "a" / "broken.png").write_bytes(b"not an image at all")
    with caplog.at_level(logging.WARNING):
        clf, plot, report = train(shapes_world, dataset="mixed", output_name="mixed", steps=3, batch_size=4)
    assert "broken.png" in caplog.text
    import json

    rep = json.loads(report)
    assert rep["skipped_images"] == ["a/broken.png"] and rep["train_examples"] + rep["val_examples"] == 8


def test_interrupt_leaves_no_file(shapes_world):
    import comfy.model_management
    import comfy.utils

    def hook(value, total, preview, node_id=None):
        if total == 100000 and value >= 3:  # the training bar, after 3 steps
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            train(shapes_world, output_name="interrupted", steps=100000)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    folder = shapes_world["root"] / "classifiers"
    assert not list(folder.glob("interrupted*")) and not list(folder.glob(".tmp-*"))


# ------------------------------------------------------------ determinism, resume, command line
def cache_file(shapes_world):
    """The shapes world's latent cache, the file the training node writes: made here by a short training run when
    no test before this one has made it (so a test run alone, with -k, finds it too)."""

    def cached():
        return glob.glob(str(shapes_world["root"] / "user" / "guidance_lab" / "latent_cache" / "*.safetensors"))

    if not cached():
        train(shapes_world, steps=2, output_name="shapes_cache_only")  # the fixture's user folders are in place
    files = cached()
    assert files
    return max(files, key=os.path.getsize)


def test_deterministic_and_resumable(shapes_world):
    tr_mod = H.pack_module("guidance_core.classifier_training")
    ds = H.pack_module("guidance_core.datasets")
    tensors, meta = ds.load_latent_cache(cache_file(shapes_world))
    spec = tr_mod.NoiseSpec(meta["parameterization"], meta["sigma_min"], meta["sigma_max"], tensors.get("sigma_table"))
    cfg = lambda: tr_mod.TrainConfig(steps=12, batch_size=8, seed=3, arch={"base_channels": 16})  # noqa: E731
    make = lambda: tr_mod.Trainer(tensors["latents"], tensors["labels"], meta["labels"], spec, cfg())  # noqa: E731
    straight = make().run()
    again = make().run()
    ckpt = shapes_world["root"] / "ck.safetensors"
    # train 5 steps, checkpoint, stop; continue in a fresh trainer
    first = make()
    stop_at = 5

    class Stop(Exception):
        pass

    def on_step(step, loss):
        if step == stop_at:
            first.save_checkpoint(str(ckpt))
            raise Stop

    with pytest.raises(Stop):
        first.run(on_step)
    resumed = make()
    resumed.load_checkpoint(str(ckpt))
    assert resumed.step == 5
    resumed.run()
    for (k, a), (_, b), (_, c) in zip(
        straight.state_dict().items(), again.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert torch.equal(a, b), k
        torch.testing.assert_close(a, c, rtol=0, atol=0, msg=k)


def run_cli(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "guidance_core.train", *args],
        cwd=H.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_cli_trains_and_ctrl_c_leaves_no_file(shapes_world, tmp_path):
    out = tmp_path / "cli.safetensors"
    p = run_cli(
        [
            "--latents",
            cache_file(shapes_world),
            "--out",
            str(out),
            "--steps",
            "4",
            "--batch-size",
            "8",
            "--base-channels",
            "16",
        ]
    )
    stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 0, stderr
    gio = H.pack_module("guidance_core.classifiers.classifier_files")
    module, meta = gio.load_classifier(str(out))
    assert meta["labels"] == sorted(LABELS) and meta["train_steps"] == 4
    # Ctrl-C in the middle of a long run: exit 130, no classifier file
    out2 = tmp_path / "never.safetensors"
    p = run_cli(
        [
            "--latents",
            cache_file(shapes_world),
            "--out",
            str(out2),
            "--steps",
            "1000000",
            "--batch-size",
            "8",
            "--base-channels",
            "16",
            "--checkpoint-every",
            "2",
        ]
    )
    t0 = time.time()
    while not (tmp_path / "never.ckpt.safetensors").exists() and time.time() - t0 < 120:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr[-2000:]
    assert "no classifier written" in stderr
    assert not out2.exists() and not list(tmp_path.glob(".tmp-*"))
    assert (tmp_path / "never.ckpt.safetensors").exists()  # complete checkpoints stay usable


def test_torchrun_two_processes(shapes_world, tmp_path):
    out = tmp_path / "ddp.safetensors"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    p = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            str(29500 + os.getpid() % 1000),
            "-m",
            "guidance_core.train",
            "--latents",
            cache_file(shapes_world),
            "--out",
            str(out),
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--base-channels",
            "16",
        ],
        cwd=H.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.exists()
