"""The client side: the base directory the servers run in (Env) and the dev kit's server client (ComfyServer: start,
stop, get, post_prompt, run) with fast history polling, plain requests and the probe's routes."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request

from devkit import ROOT
from devkit.comfy_server import PACKS, ComfyServer, images_of
from devkit.reliability.common import CLIP_ARCH, DATA_LABELS, PROBE, TINY_CLIP

HERE = os.path.dirname(os.path.realpath(__file__))


class Env:
    """A base directory for the servers: custom_nodes (links), models (classifiers, guidance_clip), input (datasets),
    user, output; and `outside/`, which no request may read (a canary classifier and dataset)."""

    def __init__(self, base: str):
        self.base = os.path.abspath(base)
        self.models = os.path.join(self.base, "models")
        self.classifiers = os.path.join(self.models, "classifiers")
        self.input = os.path.join(self.base, "input")
        self.user = os.path.join(self.base, "user")
        self.output = os.path.join(self.base, "output")
        self.outside = os.path.join(os.path.dirname(self.base), os.path.basename(self.base) + "-outside")
        self.marker = os.path.join(self.outside, "PICKLE_WAS_LOADED")
        self.toy_classifier = os.path.join(ROOT, "toy_models", "classifiers", "toy_fashion_classifier.safetensors")

    def build(self):
        import numpy as np
        import torch
        from PIL import Image
        from safetensors.torch import save_file

        for d in (
            self.classifiers,
            os.path.join(self.models, "guidance_clip"),
            os.path.join(self.models, "guidance_clip_configs"),
            self.input,
            self.user,
            self.output,
            os.path.join(self.base, "custom_nodes"),
            self.outside,
        ):
            os.makedirs(d, exist_ok=True)
        links = {**PACKS, "gl_reliability_probe.py": os.path.join(HERE, "probe.py")}
        for name, src in links.items():
            dst = os.path.join(self.base, "custom_nodes", name)
            if not os.path.lexists(dst):
                os.symlink(src, dst)
        # the tiny random open_clip model (both towers) and its architecture config
        cfg = os.path.join(self.models, "guidance_clip_configs", f"{CLIP_ARCH}.json")
        with open(cfg, "w") as f:
            json.dump(TINY_CLIP, f)
        ckpt = os.path.join(self.models, "guidance_clip", "tiny_clip.safetensors")
        if not os.path.exists(ckpt):
            import open_clip

            open_clip.add_model_config(cfg)
            torch.manual_seed(0)
            net = open_clip.create_model(CLIP_ARCH, pretrained=None, pretrained_text=False, pretrained_image=False)
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, ckpt)
        # labeled image sets: dark vs light blobs, 32x32
        rng = np.random.default_rng(0)
        for name, per_class in (("rel_set", 6), ("rel_set_big", 24)):
            for k, lb in enumerate(DATA_LABELS):
                d = os.path.join(self.input, name, lb)
                os.makedirs(d, exist_ok=True)
                for i in range(per_class):
                    p = os.path.join(d, f"{i:03d}.png")
                    if not os.path.exists(p):
                        arr = np.clip(rng.normal(60 + 130 * k, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                        Image.fromarray(arr).save(p)
        # the canary: a valid classifier and a dataset outside ComfyUI's folders
        with open(self.toy_classifier, "rb") as f:
            data = f.read()
        with open(os.path.join(self.outside, "canary.safetensors"), "wb") as f:
            f.write(data)
        os.makedirs(os.path.join(self.outside, "canary_set", "a"), exist_ok=True)
        os.makedirs(os.path.join(self.outside, "canary_set", "b"), exist_ok=True)
        for lb in ("a", "b"):
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(os.path.join(self.outside, "canary_set", lb, "0.png"))
        self.reset_fault_file()
        return self

    def fault_path(self):
        return os.path.join(self.classifiers, "rel_fault.safetensors")

    def reset_fault_file(self):
        with open(self.toy_classifier, "rb") as f:
            data = f.read()
        tmp = self.fault_path() + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.fault_path())


class ReliabilityServer(ComfyServer):
    """The dev kit's server with its history polled fast (from 10 ms, growing to 100 ms): a toy prompt takes a
    fraction of a second, and the soak's load is the number of prompts; plus requests that answer any HTTP status."""

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """The history entry of a finished prompt (success, error or interrupted)."""
        t0 = time.time()
        delay = 0.01
        while time.time() - t0 < timeout:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(delay)
            delay = min(0.1, delay * 1.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 60.0):
        """(status, text, seconds) of one request; never raises for an HTTP status."""
        req = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
        t0 = time.time()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace"), time.time() - t0
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace"), time.time() - t0

    def stats(self) -> dict:
        """The probe's count of what the server holds (resident memory, models, hooks on each)."""
        return self.get(PROBE + "/stats")

    def weights(self) -> list:
        """The probe's fingerprints of the weights of every network the server holds."""
        return self.get(PROBE + "/weights")


def start_server(env: Env, name: str) -> ReliabilityServer:
    srv = ReliabilityServer(
        env.output, log_path=os.path.join(env.base, f"server-{name}.log"), extra_args=["--base-directory", env.base]
    )
    return srv.start()


def error_of(entry: dict) -> dict | None:
    """The error or the interrupt a history entry reports, with its data (devkit.comfy_server.error_of gives the
    error's message only, and no interrupt)."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            return {"kind": kind, **data}
    return None


def output_hashes(entry: dict, srv) -> list[str]:
    """sha256 of the pixels of every image the prompt saved (PNG metadata left out)."""
    from PIL import Image

    out = []
    for p in sorted(images_of(entry, srv.output_dir)):
        with Image.open(p) as im:
            out.append(hashlib.sha256(im.convert("RGB").tobytes()).hexdigest()[:24])
    return out
