"""Train Classifier with a video VAE: ComfyUI's VAE.encode reads a stack of images as ONE video, so each still
image must be encoded alone as a one-frame video. A real comfy.ldm.wan.vae.WanVAE at tiny width (the VAE of
Wan 2.1, Qwen-Image and Cosmos-Predict2), loaded through comfy.sd.VAE from its state dict (devkit.wan_vae)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from devkit import comfy_host as H
from devkit import families
from devkit import wan_vae

pytestmark = pytest.mark.comfy

SIZES = (4, 16, 20)  # below, at and above the trainer's encode chunk (ENCODE_BATCH = 16)
LABELS = ("a", "b")


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    """Folders of labeled still images (input/stills_<n>), a tiny Wan 2.1 VAE and the pack's trainer modules."""
    root = tmp_path_factory.mktemp("gl-train-wan")
    rng = np.random.default_rng(0)
    for n in SIZES:
        for k, label in enumerate(LABELS):
            folder = root / "input" / f"stills_{n}" / label
            os.makedirs(folder)
            for i in range(n // 2):
                arr = np.clip(rng.normal(80 + 100 * k, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i:02d}.png")
    with H.user_folders(root):
        yield {
            "root": root,
            "vae": wan_vae.tiny_wan21_vae(),
            "TN": H.pack_module("nodes.training_nodes"),
            "DS": H.pack_module("guidance_core.datasets"),
            "alone": {},
        }


def train(stills, model, n, output_name, steps=3):
    with torch.inference_mode():  # as ComfyUI runs nodes
        return H.run_node(
            "GuidanceLabTrainClassifier",
            model=model,
            vae=stills["vae"],
            dataset=f"stills_{n}",
            output_name=output_name,
            steps=steps,
            batch_size=4,
            lr=1e-3,
            seed=0,
            resolution=32,
            sigma_distribution="log_uniform",
            class_balance=False,
            width=8,
        )


def each_image_alone(stills, model, n):
    """The sampler-space latents of the dataset's images, each encoded by itself (one call per image) and
    passed through the model's latent format as the sampler holds an image: [N, C, H, W]."""
    if n not in stills["alone"]:
        items, _ = stills["DS"].scan_dataset(str(stills["root"] / "input" / f"stills_{n}"))
        with torch.inference_mode():
            stills["alone"][n] = torch.cat(
                [
                    stills["vae"].encode(torch.from_numpy(stills["DS"].load_image(path, 32))[None]).float().cpu()
                    for path, _ in items
                ]
            )
    fmt = model.get_model_object("latent_format")
    raw = stills["alone"][n]
    assert raw.shape == (n, 16, 1, 4, 4), raw.shape  # the Wan VAE: one latent frame per still image
    if int(getattr(fmt, "latent_dimensions", 2)) == 2:
        raw = raw[:, :, 0]
    latents = fmt.process_in(raw).float()
    return latents[:, :, 0] if latents.ndim == 5 else latents


class EncoderCalls:
    """Counts calls of the VAE network's encode (the real one runs), to tell a cache hit from an encode."""

    def __init__(self, vae):
        self.fsm, self.calls = vae.first_stage_model, 0
        self.original = self.fsm.encode

    def __enter__(self):
        def counted(*a, **k):
            self.calls += 1
            return self.original(*a, **k)

        self.fsm.encode = counted
        return self

    def __exit__(self, *exc):
        self.fsm.encode = self.original


@pytest.mark.parametrize("n", SIZES)
def test_qwen_image_trains_on_stills_and_caches_one_latent_each(stills, n):
    model = families.model("Qwen-Image (MMDiT, Wan latents)")
    with EncoderCalls(stills["vae"]) as enc:
        clf, _, report = train(stills, model, n, f"wan_stills_{n}")
    assert enc.calls >= n  # every image went through the real encoder (one frame each)
    cache_path = json.loads(report)["latent_cache"]
    tensors = stills["DS"].load_latent_cache(cache_path)[0]
    assert tensors["latents"].shape == (n, 16, 4, 4)
    assert tensors["labels"].tolist() == [0] * (n // 2) + [1] * (n // 2)
    torch.testing.assert_close(tensors["latents"], each_image_alone(stills, model, n), rtol=0, atol=1e-6)
    assert clf.labels == list(LABELS)
    assert (stills["root"] / "classifiers" / f"wan_stills_{n}.safetensors").exists()
    # the same data again: latents come from the cache, the VAE encodes nothing
    with EncoderCalls(stills["vae"]) as enc:
        report_again = train(stills, model, n, f"wan_stills_{n}_again", steps=2)[2]
    assert enc.calls == 0 and json.loads(report_again)["latent_cache"] == cache_path


def test_wan21_model_trains_on_stills_progress_counts_images(stills):
    """Wan 2.1 itself (samples [B, 16, T, H, W]; an image is T = 1), 20 images: more than one encode chunk. The
    encode progress bar runs over images (20), not over VAE calls or chunks."""
    import comfy.utils

    seen = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        report = json.loads(train(stills, families.model("Wan 2.1 (video, 5-D)"), 20, "wan21_stills")[2])
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    encode = [v for v, t in seen if t == 20]
    assert encode and encode[-1] == 20 and encode == sorted(encode), seen
    assert [v for v, t in seen if t == 3][-1] == 3, seen  # then the 3 training steps
    latents = stills["DS"].load_latent_cache(report["latent_cache"])[0]["latents"]
    torch.testing.assert_close(
        latents, each_image_alone(stills, families.model("Wan 2.1 (video, 5-D)"), 20), rtol=0, atol=1e-6
    )


def test_image_model_with_a_video_vae(stills):
    """A model sampling [B, C, H, W] (SD3.5, 16 channels) given a video VAE's one-frame latents: the frame axis is
    dropped before the model's latent format is applied, as for a 2-D VAE."""
    model = families.model("SD3.5 (MMDiT, flow)")
    report = json.loads(train(stills, model, 4, "sd35_wan_vae", steps=2)[2])
    latents = stills["DS"].load_latent_cache(report["latent_cache"])[0]["latents"]
    torch.testing.assert_close(latents, each_image_alone(stills, model, 4), rtol=0, atol=1e-6)


def test_video_vae_is_told_apart(stills):
    TN = stills["TN"]
    assert TN.encodes_batch_as_time(stills["vae"])
    assert not TN.encodes_batch_as_time(H.tiny_vae(16, seed=1))
