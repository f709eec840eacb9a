"""Reliability of Guidance Lab in a real ComfyUI server (issue 16): soak, interrupts, files changed under the
server, hostile requests, determinism. Localhost only; every request loop is bounded in count and time.

    .venv/bin/python -m scripts.reliability           # full form, rewrites docs/RELIABILITY.md (atomically)
    .venv/bin/python -m scripts.reliability --quick   # the CI slice (tests/test_reliability.py runs it)
    .venv/bin/python -m scripts.reliability --only hostile   # check 4 again, merged into the last full run's figures

The servers run with `--base-directory` in a temporary folder (models/, input/, user/, custom_nodes/ there), so the
shared ComfyUI tree is never written. Its custom_nodes/ links the pack, the demo nodes and this very file (as
`gl_reliability_probe.py`): loaded by ComfyUI, it adds test-only routes that report the server's resident memory,
the models ComfyUI holds with the hooks / wrappers / patches on each, and weight fingerprints; it registers the
tiny random open_clip architecture of models/guidance_clip_configs/ and a tiny random VAE node with 1 latent
channel (the toy world's). Not shipped (scripts/ is in .comfyignore).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import pickle
import random
import re
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from devkit import comfy_host

HERE = os.path.dirname(os.path.abspath(os.path.realpath(__file__)))
ROOT = os.path.dirname(HERE)
PROBE = "/gl_reliability"
CLIP_ARCH = "GLTinyCLIP-reliability"
TINY_CLIP = comfy_host.tiny_clip_config(layers=1)
CLIP_LABELS = ["a shoe", "a bag", "a shirt"]
DATA_LABELS = ["dark", "light"]


# ============================================================== probe: runs inside the ComfyUI server

def _module_hooks(module) -> int:
    n = 0
    for m in module.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks"):
            n += len(getattr(m, attr, None) or {})
    return n


def _leaves(obj) -> int:
    if isinstance(obj, dict):
        return sum(_leaves(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_leaves(v) for v in obj)
    return 1


def _held_objects():
    """What the server process holds (found by the garbage collector, not only what ComfyUI has loaded):
    (model patchers, distinct networks they patch, VAEs, the pack's loaded classifiers)."""
    import gc

    import comfy.model_patcher
    import comfy.sd

    gc.collect()  # count what is reachable, not what merely waits for the collector
    patchers, vaes, classifiers = [], [], []
    for o in gc.get_objects():
        if isinstance(o, comfy.model_patcher.ModelPatcher):
            patchers.append(o)
        elif isinstance(o, comfy.sd.VAE):
            vaes.append(o)
        elif type(o).__name__ in ("LoadedClassifier", "LoadedCLIPClassifier"):
            classifiers.append(o)
    nets = {}
    for p in patchers:
        nets.setdefault(id(p.model), p.model)
    for v in vaes:
        nets.setdefault(id(v.first_stage_model), v.first_stage_model)
    return patchers, nets, vaes, classifiers


def _probe_stats() -> dict:
    """Resident memory, the models the server holds, and what is attached to each (counts)."""
    import threading

    import torch

    import comfy.model_management as mm

    rss = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    patchers, nets, vaes, classifiers = _held_objects()
    models = []
    for net in nets.values():
        if not isinstance(net, torch.nn.Module):
            continue
        own = [p for p in patchers if p.model is net]
        row = {"class": type(net).__name__, "id": id(net), "patchers": len(own),
               "module_hooks": _module_hooks(net), "module_attrs": sum(len(m.__dict__) for m in net.modules())}
        for key in ("wrappers", "callbacks", "post_cfg", "pre_cfg", "transformer_patches", "object_patches",
                    "weight_patches", "additional_models"):
            row[key] = 0
        for mp in own:  # summed over the patchers of this network that are alive
            mo = mp.model_options
            to = mo.get("transformer_options", {})
            row["wrappers"] += _leaves(getattr(mp, "wrappers", {}))
            row["callbacks"] += _leaves(getattr(mp, "callbacks", {}))
            row["post_cfg"] += len(mo.get("sampler_post_cfg_function", []))
            row["pre_cfg"] += len(mo.get("sampler_pre_cfg_function", []))
            row["transformer_patches"] += _leaves(to.get("patches", {})) + _leaves(to.get("patches_replace", {}))
            row["object_patches"] += len(getattr(mp, "object_patches", {}))
            row["weight_patches"] += len(getattr(mp, "patches", {}))
            row["additional_models"] += _leaves(getattr(mp, "additional_models", {}))
        models.append(row)
    glob_hooks = sum(len(getattr(torch.nn.modules.module, a, {})) for a in
                     ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                      "_global_backward_pre_hooks"))
    return {"rss_kb": rss, "held_models": len(models), "patchers": len(patchers), "vaes": len(vaes),
            "classifiers": len(classifiers), "loaded_models": len(mm.current_loaded_models), "models": models,
            "global_module_hooks": glob_hooks, "threads": threading.active_count()}


def _probe_weights() -> list:
    """Per network held: identity of every weight tensor, inference flags and a hash of the values."""
    import torch

    out = []
    for net in _held_objects()[1].values():
        if not isinstance(net, torch.nn.Module):
            continue
        h, ids, inf = hashlib.sha256(), hashlib.sha256(), 0
        for name, t in net.state_dict(keep_vars=True).items():
            with torch.inference_mode(False), torch.no_grad():
                h.update(name.encode() + t.detach().float().cpu().contiguous().numpy().tobytes())
            ids.update(f"{name}:{id(t)};".encode())
            inf += int(t.is_inference())
        out.append({"class": type(net).__name__, "id": id(net), "values": h.hexdigest()[:20],
                    "identity": ids.hexdigest()[:20], "inference_tensors": inf})
    return out


def tiny_vae(seed: int = 0):
    """ComfyUI's VAE at width 32, 2x scale, 1 latent channel (the toy world's), random weights
    (devkit.comfy_host.tiny_vae)."""
    return comfy_host.tiny_vae(1, seed=seed)


class GLReliabilityTinyVAE:
    """Test-only node: a tiny random VAE for the toy world (1 latent channel)."""
    CATEGORY = "Guidance Lab/reliability"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    DESCRIPTION = "Reliability harness only: a tiny random VAE with 1 latent channel."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "weights' seed"})}}

    def load(self, seed):
        return (tiny_vae(seed),)


# ---------------------------------------------------------- probe: the pack's own check of each free-text input

# The node (and the node after it, where the value only matters there) that reads each free-text input, run in the
# server on ComfyUI's own node classes (NODE_CLASS_MAPPINGS) under inference mode, as ComfyUI's executor runs them.
# An answer is: accepted; the pack's error (GuidanceConfigError, ClassifierFileError) whose message names the field
# or the value (clear); the pack's error without it (unclear); any other exception (unexpected).
PACK_ERRORS = ("GuidanceConfigError", "ClassifierFileError")
FIELD_WORDS = {"target": ("target",), "clip_target": ("target",), "keyframes": ("keyframes",),
               "clip_labels": ("label",), "dataset": ("dataset",), "output_name": ("output_name",),
               "pag_blocks": ("block",)}
_FIXTURES: dict = {}
_AUDIT = {"on": False, "events": 0, "outside": {}, "roots": (), "installed": False}
_AUDIT_BUSY = threading.local()
_AUDIT_EVENTS = ("open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink",
                 "os.link", "os.truncate", "os.chdir")


def _node(node_id: str):
    import nodes as comfy_nodes  # ComfyUI's nodes.py: the classes ComfyUI's executor runs

    return comfy_nodes.NODE_CLASS_MAPPINGS[node_id]


def _result(out):
    return out.result if hasattr(out, "result") else out


def _pack_module(node_id: str):
    return sys.modules[_node(node_id).__module__]


def _fixtures() -> dict:
    """The objects the fuzzed nodes take besides the text (built once): the toy model, its conds, the toy classifier,
    the tiny VAE and a CLIP classifier of the tiny random open_clip model, each from the pack's own loader node."""
    if not _FIXTURES:
        import torch

        with torch.inference_mode():
            model, world = _result(_node("GuidanceLabToyModelLoader").execute("fashion_diffusion.safetensors"))
            vae = tiny_vae(0)
            clip_args = dict(architecture=CLIP_ARCH, checkpoint="tiny_clip.safetensors", decode="vae",
                             gradient="detached", cutouts=1, tau=0.0, vae=vae)
            _FIXTURES.update(
                model=model, vae=vae, clip_args=clip_args,
                pos=_result(_node("GuidanceLabToyClass").execute(world, "Coat"))[0],
                empty=_result(_node("GuidanceLabToyClass").execute(world, "empty"))[0],
                classifier=_result(_node("GuidanceLabClassifierLoader").execute("toy_fashion_classifier.safetensors"))[0],
                clip=_result(_node("GuidanceLabCLIPClassifierLoader").execute(labels="\n".join(CLIP_LABELS),
                                                                               **clip_args))[0])
    return _FIXTURES


def _inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def _check_input(field: str, v: str) -> str | None:
    """Run the pack's nodes on one value of `field`; None when accepted (an escape from ComfyUI's folders raises)."""
    F = _fixtures()
    guide = dict(scale=6.0, sigma_lo=0.0, sigma_hi=10000.0, every_n=1, rms_clamp=0.0, dtype="float32",
                 allow_other_latent_format=False)
    train = dict(steps=0, batch_size=8, lr=0.001, seed=0, resolution=32, sigma_distribution="log_uniform",
                 class_balance=False, width=8)
    if field in ("target", "clip_target"):
        _node("GuidanceLabClassifierGuidance").execute(F["model"], F["classifier" if field == "target" else "clip"],
                                                       target=v, **guide)
    elif field == "keyframes":
        d = _pack_module("GuidanceLabSchedule").SCHEDULE_DEFAULTS
        _node("GuidanceLabSchedule").execute(**{**{k: d[k] for k in ("axis", "start", "end", "exponent", "sigma_lo",
                                                                   "sigma_hi", "inside", "outside")},
                                                "kind": "keyframes", "keyframes": v})
    elif field == "clip_labels":  # the loader, then guidance naming the first label (as a user would)
        clip = _result(_node("GuidanceLabCLIPClassifierLoader").execute(labels=v, **F["clip_args"]))[0]
        _node("GuidanceLabClassifierGuidance").execute(F["model"], clip, target=clip.labels[0], **guide)
    elif field in ("dataset", "output_name"):  # steps 0: every check of the node, no file written but the cache
        ds, name = (v, "rel_fuzz") if field == "dataset" else ("rel_set", v)
        _node("GuidanceLabTrainClassifier").execute(F["model"], F["vae"], dataset=ds, output_name=name, **train)
        mod = _pack_module("GuidanceLabTrainClassifier")
        import folder_paths

        if field == "dataset" and not _inside(mod.resolve_dataset(v), folder_paths.get_input_directory()):
            return f"accepted a dataset outside the input folder: {mod.resolve_dataset(v)}"
        if field == "output_name" and not _inside(mod.output_path(v), folder_paths.get_folder_paths("classifiers")[0]):
            return f"would write outside models/classifiers: {mod.output_path(v)}"
    elif field == "pag_blocks":  # the term node, then the guider (which checks the blocks against the model)
        terms = _result(_node("GuidanceLabPerturbedTerm").execute(mode="pag", blocks=v, weight=1.5, seg_sigma=10.0))[0]
        _node("GuidanceLabCFGGuider").execute(F["model"], F["pos"], 3.0, 0.0, negative=F["empty"], terms=terms)
    else:
        raise KeyError(field)
    return None


def _names_it(field: str, v: str, message: str) -> bool:
    """An error message is clear when it names the field or the value (or, for a long value, its start)."""
    low, s = message.lower(), v.strip()
    return any(w in low for w in FIELD_WORDS[field]) or bool(s) and (s[:40] in message or repr(s)[1:41] in message)


def _check_batch(field: str, values: list) -> list:
    """One answer per value: [outcome, seconds, exception type, message (cut)]; outcome one of accepted, clear,
    unclear, unexpected, escape."""
    import traceback

    import torch

    import comfy.utils

    _fixtures()
    rows = []
    # no prompt runs meanwhile: the progress bars' global hook (it reports to a running prompt's client) is off
    hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(None)
    try:
        for v in values:
            rows.append(_check_one(field, v, traceback, torch))
    finally:
        comfy.utils.set_progress_bar_global_hook(hook)
    return rows


def _check_one(field: str, v: str, traceback, torch) -> list:
    t0 = time.perf_counter()
    kind, msg = "", ""
    try:
        with torch.inference_mode():
            escape = _check_input(field, v)
        outcome, msg = ("escape", escape) if escape else ("accepted", "")
    except Exception as e:  # the point of the probe: every exception type is classified, none escapes
        kind, msg = type(e).__name__, str(e)
        if kind in PACK_ERRORS:
            outcome = "clear" if _names_it(field, v, msg) and not has_traceback(msg) else "unclear"
        else:
            outcome = "unexpected"
            msg += " | " + " / ".join(traceback.format_exc().strip().splitlines()[-6:])
    return [outcome, round(time.perf_counter() - t0, 4), kind, msg[:400]]


def _audit_roots() -> tuple:
    """ComfyUI's folders (base, models and every registered model folder, input, output, temp, user) and the code
    the server runs (ComfyUI, custom nodes, the Python installation and its packages): the places a request may
    make the server open."""
    import site

    import folder_paths

    roots = {folder_paths.base_path, folder_paths.models_dir, folder_paths.get_input_directory(),
             folder_paths.get_output_directory(), folder_paths.get_temp_directory(), folder_paths.get_user_directory(),
             os.path.dirname(os.path.abspath(folder_paths.__file__)), sys.prefix, sys.base_prefix, sys.exec_prefix,
             *site.getsitepackages(), "/dev", "/proc"}
    for paths, _exts in folder_paths.folder_names_and_paths.values():
        roots.update(paths)
    for d in folder_paths.get_folder_paths("custom_nodes"):
        roots.add(d)
        for name in os.listdir(d):
            roots.add(os.path.realpath(os.path.join(d, name)))
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


def _audit_hook(event: str, args) -> None:
    """sys.addaudithook: every file the server process opens (or lists, creates, removes) while the audit is on;
    those outside _audit_roots() are kept (path -> events)."""
    if not _AUDIT["on"] or event not in _AUDIT_EVENTS or not args or getattr(_AUDIT_BUSY, "on", False):
        return
    path = args[0]
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):  # a file descriptor
        return
    _AUDIT_BUSY.on = True  # the hook's own file system calls (this thread) are not audited
    try:
        _AUDIT["events"] += 1
        real = os.path.realpath(path)
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in _AUDIT["roots"]):
            key = f"{event} {real}"
            _AUDIT["outside"][key] = _AUDIT["outside"].get(key, 0) + 1
    except Exception as e:  # an unusual path (NUL, encoding) is recorded as such
        _AUDIT["outside"][f"{event} {path!r} (unresolvable: {type(e).__name__})"] = 1
    finally:
        _AUDIT_BUSY.on = False


def _audit(on: bool, selftest: str | None = None) -> dict:
    """Start (anew) or stop recording. `selftest`: a file outside ComfyUI's folders that the probe opens itself right
    after the start; the answer says whether the hook saw it (then it is dropped from the record)."""
    seen = None
    if on:
        if not _AUDIT["installed"]:
            sys.addaudithook(_audit_hook)
            _AUDIT["installed"] = True
        _AUDIT.update(events=0, outside={}, roots=_audit_roots())
    _AUDIT["on"] = on
    if on and selftest:
        with open(selftest, "rb"):
            pass
        seen = _AUDIT["outside"].pop(f"open {os.path.realpath(selftest)}", 0) > 0
    return {"on": on, "events": _AUDIT["events"], "outside": dict(_AUDIT["outside"]), "roots": list(_AUDIT["roots"]),
            "selftest_seen": seen}


def _install_probe():
    from aiohttp import web

    import folder_paths
    import server

    routes = server.PromptServer.instance.routes

    @routes.get(PROBE + "/stats")
    async def stats(request):
        return web.json_response(_probe_stats())

    @routes.get(PROBE + "/weights")
    async def weights(request):
        return web.json_response(_probe_weights())

    @routes.post(PROBE + "/check_inputs")
    async def check_inputs(request):
        """{"input": a free-text input's name, "values": [...]} -> {"rows": one answer per value}."""
        import asyncio

        body = await request.json()
        rows = await asyncio.get_running_loop().run_in_executor(None, _check_batch, body["input"], body["values"])
        return web.json_response({"rows": rows})

    @routes.post(PROBE + "/audit")
    async def audit(request):
        """{"on": true} starts recording the files the server opens (anew); {"on": false} stops; both answer what
        was recorded."""
        body = await request.json()
        return web.json_response(_audit(bool(body.get("on")), body.get("selftest")))

    for cfg in sorted(glob.glob(os.path.join(folder_paths.models_dir, "guidance_clip_configs", "*.json"))):
        import open_clip

        open_clip.add_model_config(cfg)


def _inside_comfyui() -> bool:
    srv = sys.modules.get("server")
    return __name__ not in ("__main__", "reliability") and getattr(getattr(srv, "PromptServer", None), "instance", None) is not None


if _inside_comfyui():
    _install_probe()
    NODE_CLASS_MAPPINGS = {"GLReliabilityTinyVAE": GLReliabilityTinyVAE}


# ============================================================== client side: environment and servers

def _client_imports():
    """The dev kit the client side drives the servers with (fails early when not run from the repository root)."""
    from devkit import comfy_server, demo_prompts, workflow_api, workflow_run  # noqa: F401


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

        from devkit.comfy_server import PACKS

        for d in (self.classifiers, os.path.join(self.models, "guidance_clip"),
                  os.path.join(self.models, "guidance_clip_configs"), self.input, self.user, self.output,
                  os.path.join(self.base, "custom_nodes"), self.outside):
            os.makedirs(d, exist_ok=True)
        links = {**PACKS, "gl_reliability_probe.py": os.path.join(HERE, "reliability.py")}
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


def start_server(env: Env, name: str):
    from devkit.comfy_server import ComfyServer

    srv = ComfyServer(env.output, log_path=os.path.join(env.base, f"server-{name}.log"),
                      extra_args=["--base-directory", env.base])
    return srv.start()


def _request(srv, method: str, path: str, body: bytes | None = None, timeout: float = 60.0):
    """(status, text, seconds) of one request; never raises for an HTTP status."""
    req = urllib.request.Request(srv.url + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    t0 = time.time()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace"), time.time() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), time.time() - t0


def stats(srv) -> dict:
    return srv.get(PROBE + "/stats")


def weights(srv) -> list:
    return srv.get(PROBE + "/weights")


def wait(srv, prompt_id: str, timeout: float = 300.0) -> dict:
    """The history entry of a finished prompt (success, error or interrupted), polling fast."""
    t0 = time.time()
    delay = 0.01
    while time.time() - t0 < timeout:
        h = srv.get(f"/history/{prompt_id}")
        entry = h.get(prompt_id)
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            return entry
        time.sleep(delay)
        delay = min(0.1, delay * 1.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")


def run(srv, prompt: dict, timeout: float = 300.0) -> dict:
    status, body = srv.post_prompt(prompt)
    if status != 200:
        raise RuntimeError(f"prompt rejected ({status}): {json.dumps(body)[:1500]}")
    return wait(srv, body["prompt_id"], timeout)


def error_of(entry: dict) -> dict | None:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            return {"kind": kind, **data}
    return None


def output_hashes(entry: dict, srv) -> list[str]:
    """sha256 of the pixels of every image the prompt saved (PNG metadata left out)."""
    from PIL import Image

    from devkit.comfy_server import images_of

    out = []
    for p in sorted(images_of(entry, srv.output_dir)):
        with Image.open(p) as im:
            out.append(hashlib.sha256(im.convert("RGB").tobytes()).hexdigest()[:24])
    return out


# ============================================================== the prompts: every toy workflow, every node

def set_seed(prompt: dict, seed: int) -> dict:
    for node in prompt.values():
        ins = node["inputs"]
        for key in ("seed", "noise_seed"):
            if key in ins and not isinstance(ins[key], list):
                ins[key] = seed
    return prompt


def set_steps(prompt: dict, steps: int | None) -> dict:
    if steps:
        for node in prompt.values():
            if node["class_type"] in ("KSampler", "BasicScheduler") and not isinstance(node["inputs"].get("steps"), list):
                node["inputs"]["steps"] = steps
    return prompt


def _toy(prompt, loader="model"):
    prompt[loader] = {"class_type": "GuidanceLabToyModelLoader", "inputs": {"toy_model": "fashion_diffusion.safetensors"}}
    return prompt


def _toy_tail(p, samples, prefix):
    p["decode"] = {"class_type": "GuidanceLabToyDecode", "inputs": {"samples": samples, "upscale": 1}}
    p["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}}
    return p


def _ksampler(model, pos, neg, latent, steps, seed, cfg=1.0):
    return {"class_type": "KSampler", "inputs": {"model": model, "seed": seed, "steps": steps, "cfg": cfg,
                                                 "sampler_name": "euler", "scheduler": "normal", "positive": pos,
                                                 "negative": neg, "latent_image": latent, "denoise": 1.0}}


def _guide_inputs(target, scale=6.0):
    return {"target": target, "scale": scale, "sigma_lo": 0.0, "sigma_hi": 10000.0, "every_n": 1, "rms_clamp": 0.0,
            "dtype": "float32", "allow_other_latent_format": False}


def _custom_sampling(p: dict, seed: int, steps: int, sampler: list, cfg: float, prefix: str, terms=None) -> dict:
    """SamplerCustomAdvanced with the pack's CFG Guider (positive p["pos"], negative p["empty"]) on the toy model."""
    p["ksel"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    p["guider"] = {"class_type": "GuidanceLabCFGGuider", "inputs": {
        "model": ["model", 0], "positive": ["pos", 0], "negative": ["empty", 0], "cfg": cfg, "neg_scale": 0.0,
        **({"terms": terms} if terms else {})}}
    p["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}}
    p["sigmas"] = {"class_type": "BasicScheduler", "inputs": {"model": ["model", 0], "scheduler": "normal",
                                                              "steps": steps, "denoise": 1.0}}
    p["sca"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": sampler, "sigmas": ["sigmas", 0],
        "latent_image": ["latent", 0]}}
    return _toy_tail(p, ["sca", 0], prefix)


def clip_prompt(seed: int, gradient: str, steps: int = 6, route: str = "patch", labels=None, target="a bag") -> dict:
    """CLIP guidance (tiny random open_clip file, VAE decode) on the toy model: MODEL patch + KSampler, or the
    SAMPLER wrapper + the pack's CFG Guider."""
    p = _toy({})
    p["vae"] = {"class_type": "GLReliabilityTinyVAE", "inputs": {"seed": 0}}
    p["empty"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1}}
    p["pos"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "Bag", "batch": 1}}
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["clip"] = {"class_type": "GuidanceLabCLIPClassifierLoader", "inputs": {
        "architecture": CLIP_ARCH, "checkpoint": "tiny_clip.safetensors",
        "labels": "\n".join(labels or CLIP_LABELS), "decode": "vae", "gradient": gradient, "cutouts": 1, "tau": 0.0,
        "vae": ["vae", 0]}}
    if route == "patch":
        p["guided"] = {"class_type": "GuidanceLabClassifierGuidance", "inputs": {
            "model": ["model", 0], "classifier": ["clip", 0], **_guide_inputs(target)}}
        p["ks"] = _ksampler(["guided", 0], ["empty", 0], ["empty", 0], ["latent", 0], steps, seed)
        return _toy_tail(p, ["ks", 0], f"rel/clip_{gradient}")
    p["sampler"] = {"class_type": "GuidanceLabClassifierSampler", "inputs": {
        "sampler": ["ksel", 0], "model": ["model", 0], "classifier": ["clip", 0], **_guide_inputs(target)}}
    return _custom_sampling(p, seed, steps, ["sampler", 0], cfg=2.0, prefix=f"rel/clip_{gradient}_sampler")


def terms_prompt(seed: int, steps: int = 6, blocks: str = "") -> dict:
    """The pack's CFG Guider on the toy model with a perturbed-attention term (PAG) and a model term chained."""
    p = _toy({})
    p["pos"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "Coat", "batch": 1}}
    p["empty"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1}}
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["pag"] = {"class_type": "GuidanceLabPerturbedTerm", "inputs": {"mode": "pag", "blocks": blocks, "weight": 1.5}}
    p["mterm"] = {"class_type": "GuidanceLabModelTerm", "inputs": {"model": ["model", 0], "weight": 0.5,
                                                                   "terms": ["pag", 0]}}
    return _custom_sampling(p, seed, steps, ["ksel", 0], cfg=3.0, prefix="rel/terms", terms=["mterm", 0])


def distilled_prompt(seed: int, steps: int = 6) -> dict:
    """The distilled toy student at cfg 1 on the stock KSampler: its embedded scale on a Distilled Guidance Schedule
    and a NAG term (paper form) against the negative prompt."""
    p = {"model": {"class_type": "GuidanceLabToyModelLoader",
                   "inputs": {"toy_model": "fashion_diffusion_distilled.safetensors"}}}
    p["pos"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1}}
    p["neg"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "Trouser", "batch": 1}}
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["sched"] = {"class_type": "GuidanceLabSchedule", "inputs": {"kind": "linear", "start": 1.5, "end": 0.5}}
    p["dg"] = {"class_type": "GuidanceLabDistilledGuidance", "inputs": {"model": ["model", 0], "guidance": 3.0,
                                                                          "schedule": ["sched", 0]}}
    p["nag"] = {"class_type": "GuidanceLabNAGTerm", "inputs": {"form": "paper", "weight": 4.0, "tau": 2.5, "alpha": 0.25}}
    p["patch"] = {"class_type": "GuidanceLabCFGPatch", "inputs": {"model": ["dg", 0], "neg_scale": 0.0, "terms": ["nag", 0]}}
    p["ks"] = _ksampler(["patch", 0], ["pos", 0], ["neg", 0], ["latent", 0], steps, seed)
    return _toy_tail(p, ["ks", 0], "rel/distilled")


def train_prompt(seed: int, steps: int = 12, dataset: str = "rel_set", output_name: str = "rel_trained",
                 target: str = "light", sample_steps: int = 4) -> dict:
    """Train Classifier (tiny dataset, tiny VAE) -> its classifier guides the toy model on the stock KSampler."""
    p = _toy({})
    p["vae"] = {"class_type": "GLReliabilityTinyVAE", "inputs": {"seed": 0}}
    p["empty"] = {"class_type": "GuidanceLabToyClass", "inputs": {"toy_world": ["model", 1], "label": "empty", "batch": 1}}
    p["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}}
    p["train"] = {"class_type": "GuidanceLabTrainClassifier", "inputs": {
        "model": ["model", 0], "vae": ["vae", 0], "dataset": dataset, "output_name": output_name, "steps": steps,
        "batch_size": 8, "lr": 0.001, "seed": seed, "resolution": 32, "sigma_distribution": "log_uniform",
        "class_balance": False, "width": 8}}
    p["guided"] = {"class_type": "GuidanceLabClassifierGuidance", "inputs": {
        "model": ["model", 0], "classifier": ["train", 0], **_guide_inputs(target, 3.0)}}
    p["ks"] = _ksampler(["guided", 0], ["empty", 0], ["empty", 0], ["latent", 0], sample_steps, seed)
    return _toy_tail(p, ["ks", 0], "rel/train")


def to_api(workflow: dict, object_info: dict) -> dict:
    """workflow_api.ui_to_api; a node saved before an input was appended to its schema (the example files lag the
    schema while a change is in progress) gets that input's default, as the frontend does when it loads the file."""
    import re

    from devkit.workflow_api import WorkflowError, is_widget, ordered_inputs, ui_to_api

    wf = json.loads(json.dumps(workflow))
    for _ in range(20):
        try:
            return ui_to_api(wf, object_info)
        except WorkflowError as e:
            m = re.match(r"node (\S+) \((\w+)\): (\d+) widget values, the node has", str(e))
            if not m:
                raise
            node = next(n for n in wf["nodes"] if str(n["id"]) == m.group(1))
            widgets = [(name, spec) for name, spec, _ in ordered_inputs(object_info[m.group(2)]) if is_widget(spec)]
            have = len(node["widgets_values"])
            if have >= len(widgets):
                raise
            name, spec = widgets[have]
            node["widgets_values"].append(spec[1].get("default") if len(spec) > 1 and isinstance(spec[1], dict) else None)
    raise RuntimeError("workflow conversion did not converge")


def fill_defaults(prompt: dict, object_info: dict) -> dict:
    """Required widget inputs a hand-built prompt lacks get their schema default (inputs added since it was written)."""
    from devkit.workflow_api import is_widget, ordered_inputs

    for node in prompt.values():
        for name, spec, required in ordered_inputs(object_info.get(node["class_type"], {})):
            if required and name not in node["inputs"] and is_widget(spec) and len(spec) > 1 \
                    and isinstance(spec[1], dict) and "default" in spec[1]:
                node["inputs"][name] = spec[1]["default"]
    return prompt


def shrink(prompt: dict, batch: int = 2) -> dict:
    """Quick form: batch `batch` (a per-image target list cut to as many lines)."""
    for node in prompt.values():
        ins = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            ins["batch_size"] = min(ins["batch_size"], batch)
        if isinstance(ins.get("target"), str) and "\n" in ins["target"]:
            ins["target"] = "\n".join(ins["target"].split("\n")[:batch])
    return prompt


def shipped_workflows(object_info: dict) -> dict:
    """name -> function(seed) -> API prompt of every toy example workflow exactly as shipped (batch, steps)."""
    from devkit.workflow_run import load, toy_workflow_names

    out = {}
    for name in toy_workflow_names():
        api = to_api(load(name), object_info)
        out[name + " (as shipped)"] = (lambda api: lambda seed: set_seed(json.loads(json.dumps(api)), seed))(api)
    return out


def specs(object_info: dict, quick: bool) -> dict:
    """name -> function(seed) -> API prompt. Together they use every node of the pack. The toy example workflows at
    batch 2 (the soak's load is the number of prompts, not their size); the quick form also at 6 steps."""
    from devkit import demo_prompts as DP
    from devkit.workflow_run import load, toy_workflow_names

    steps = 6 if quick else None
    out = {}
    for name in toy_workflow_names():
        api = shrink(to_api(load(name), object_info))
        out[name] = (lambda api: lambda seed: set_steps(set_seed(json.loads(json.dumps(api)), seed), steps))(api)
    out["demo_ksampler_patch"] = lambda seed: set_steps(DP.ksampler_patch(seed=seed, prefix="rel/demo_patch"), steps)
    out["demo_guider_terms"] = lambda seed: set_steps(DP.guider(prefix="rel/demo_terms", seed=seed, cfg=1.0,
                                                                terms=[("cross", 1.0)]), steps)
    out["toy_perturbed_and_model_terms"] = lambda seed: terms_prompt(seed)
    out["toy_distilled_nag"] = lambda seed: distilled_prompt(seed)
    out["clip_detached"] = lambda seed: clip_prompt(seed, "detached")
    out["clip_through_model"] = lambda seed: clip_prompt(seed, "through_model", route="sampler")
    out["train_classifier"] = lambda seed: train_prompt(seed)
    return {k: (lambda fn: lambda seed: keep_alive(fill_defaults(fn(seed), object_info)))(fn) for k, fn in out.items()}


def keep_alive(prompt: dict) -> dict:
    """Unconnected toy-model and VAE loaders in every prompt: never executed, but their cache keys stay in every
    prompt, so ComfyUI keeps the one toy model and VAE for the whole soak, and the hooks counted on them are those
    of hundreds of prompts on the same objects."""
    prompt["keep_toy"] = {"class_type": "GuidanceLabToyModelLoader",
                          "inputs": {"toy_model": "fashion_diffusion.safetensors"}}
    prompt["keep_vae"] = {"class_type": "GLReliabilityTinyVAE", "inputs": {"seed": 0}}
    return prompt


# ============================================================== 5. determinism (and the reference outputs)

def reference_outputs(srv, spec_fns: dict, seeds: list[int], log) -> dict:
    """(name, seed) -> output hashes in a fresh server; each prompt runs twice (other prompts in between, so
    ComfyUI's cache cannot answer the second run) and the two runs must agree."""
    refs, mismatches = {}, []
    for rep in range(2):
        for name, fn in spec_fns.items():
            for seed in seeds:
                entry = run(srv, fn(seed))
                err = error_of(entry)
                if err:
                    raise RuntimeError(f"{name} seed {seed} failed: {err.get('exception_message', err)}")
                h = output_hashes(entry, srv)
                if rep == 0:
                    refs[(name, seed)] = h
                elif h != refs[(name, seed)]:
                    mismatches.append(f"{name} seed {seed}")
        log(f"reference pass {rep + 1}: {len(spec_fns) * len(seeds)} prompts")
    return {"refs": refs, "run_mismatches": mismatches}


def determinism_after_restart(srv, fns: dict, refs: dict, pairs: list) -> dict:
    bad = []
    for name, seed in pairs:
        if output_hashes(run(srv, fns[name](seed)), srv) != refs[(name, seed)]:
            bad.append(f"{name} seed {seed}")
    return {"restart_checked": len(pairs), "restart_mismatches": bad}


# ============================================================== 1. soak

def _hook_counts(st: dict) -> dict:
    keys = ("patchers", "module_hooks", "module_attrs", "wrappers", "callbacks", "post_cfg", "pre_cfg", "transformer_patches",
            "object_patches", "weight_patches", "additional_models")
    return {f"{m['class']}#{m['id']}": {k: m[k] for k in keys} for m in st["models"]}


def soak(srv, spec_fns: dict, refs: dict, seeds: list[int], n_prompts: int, log, time_limit: float) -> dict:
    """n_prompts prompts cycling every spec and seed; memory, model count and per-model hook counts sampled after
    every full cycle; every output compared with the fresh server's."""
    order = [(name, seed) for seed in seeds for name in spec_fns]
    n_prompts = -(-n_prompts // len(order)) * len(order)  # whole cycles: every sample follows the same prompt
    warm = len(order) * min(2, n_prompts // len(order) - 1)  # warm-up: two cycles (one when there are only two)
    samples, mismatches, errors, t0 = [], [], [], time.time()
    hooks_by_model: dict = {}
    base = None
    done = 0
    for i in range(n_prompts):
        if time.time() - t0 > time_limit:
            break
        name, seed = order[i % len(order)]
        entry = run(srv, spec_fns[name](seed))
        err = error_of(entry)
        if err:
            errors.append(f"{name} seed {seed}: {err.get('exception_message')}")
        elif output_hashes(entry, srv) != refs[(name, seed)]:
            mismatches.append(f"#{i} {name} seed {seed}")
        done += 1
        if (i + 1) % len(order) == 0:
            st = stats(srv)
            samples.append({"prompts": i + 1, "rss_kb": st["rss_kb"], "held_models": st["held_models"],
                            "patchers": st["patchers"], "loaded_models": st["loaded_models"],
                            "global_module_hooks": st["global_module_hooks"], "threads": st["threads"]})
            for key, counts in _hook_counts(st).items():
                hooks_by_model.setdefault(key, []).append(counts)
            if i + 1 >= warm and base is None:
                base = samples[-1]
            log(f"soak {i + 1}/{n_prompts}: rss {st['rss_kb'] / 1024:.0f} MiB, {st['held_models']} models held, "
                f"{st['patchers']} model patchers")
    growing = {}
    for key, series in hooks_by_model.items():
        for k in series[0]:
            vals = [s[k] for s in series]
            if max(vals) > vals[0]:
                growing[f"{key}.{k}"] = vals
    end = samples[-1]
    base = base or samples[0]
    after_warm = [s for s in samples if s["prompts"] >= base["prompts"]]
    return {"prompts": done, "seconds": round(time.time() - t0, 1), "cycle": len(order), "samples": samples,
            "warm_prompts": base["prompts"], "rss_warm_kb": base["rss_kb"], "rss_end_kb": end["rss_kb"],
            "rss_growth_pct": round(100.0 * (end["rss_kb"] - base["rss_kb"]) / base["rss_kb"], 2),
            "models_warm": base["held_models"], "models_max": max(s["held_models"] for s in after_warm),
            "patchers_warm": base["patchers"], "patchers_max": max(s["patchers"] for s in after_warm),
            "global_hooks": sorted({s["global_module_hooks"] for s in samples}),
            "hook_counts": {k: dict(v[-1], samples=len(v)) for k, v in hooks_by_model.items()},
            "hooks_growing": growing,
            "mismatches": mismatches, "errors": errors}


# ============================================================== 2. interrupts

def interrupt_at(srv, prompt: dict, step_of, timeout: float = 120.0) -> dict:
    """Queue `prompt` and POST /interrupt once a progress report on the websocket is inside a progress bar, at or
    past step_of(max) and before its end. ComfyUI (0.33 on) throttles a bar's reports to one per 100 ms but always
    sends its first and its final one, so the first report past the target can be a bar's end (a dataset encoded
    in one go): that is no point inside the run, and the interrupt waits for a report inside a later bar (the
    training steps) instead. Returns {"entry", "step", "max", "interrupted"} (step < max when it was sent)."""
    import asyncio

    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{srv.url}/ws?clientId={srv.client_id}") as ws:
                async with s.post(srv.url + "/prompt", json={"prompt": prompt, "client_id": srv.client_id}) as r:
                    body = await r.json()
                    if r.status != 200:
                        raise RuntimeError(f"prompt rejected: {body}")
                pid, hit, t0 = body["prompt_id"], None, time.time()
                while time.time() - t0 < timeout:
                    try:
                        msg = await ws.receive(timeout=max(0.1, timeout - (time.time() - t0)))
                    except asyncio.TimeoutError:
                        break
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                        continue
                    d = json.loads(msg.data)
                    data = d.get("data", {})
                    if data.get("prompt_id") not in (None, pid):
                        continue
                    if d["type"] == "progress" and step_of(data.get("max", 1)) <= data.get("value", 0) < data.get(
                            "max", 1):
                        hit = (data["value"], data["max"])
                        async with s.post(srv.url + "/interrupt", json={"prompt_id": pid}) as r:
                            await r.read()
                        break
                    if d["type"] in ("execution_success", "execution_error") or (
                            d["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == pid):
                        break
                return pid, hit

    pid, hit = asyncio.run(go())
    entry = wait(srv, pid, timeout)
    err = error_of(entry)
    return {"entry": entry, "step": hit[0] if hit else None, "max": hit[1] if hit else None,
            "interrupted": bool(err and err["kind"] == "execution_interrupted")}


def interrupt_inside(srv, prompt: dict, step_of) -> dict:
    """interrupt_at, and once more at the run's first report inside a bar when no report reached step_of(max): a
    short run on a ComfyUI that throttles its reports (0.33 on, one per 100 ms) may send only a bar's first and final
    one, and a run that ends uninterrupted proves nothing about interrupts. Before the second try the server drops
    its output cache (POST /free: the completed run would otherwise be answered from it, with no step run)."""
    import urllib.request

    res = interrupt_at(srv, prompt, step_of)
    if res["step"] is None:
        req = urllib.request.Request(srv.url + "/free", data=json.dumps({"free_memory": True}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        time.sleep(2.0)  # the worker wakes on the flag and resets its caches before the next prompt
        res = interrupt_at(srv, prompt, lambda mx: 1)
    return res


def _weights_of(ws: list, classes: tuple) -> dict:
    return {f"{w['class']}#{w['id']}": w for w in ws if w["class"] in classes}


def _tmp_files(env: Env) -> list[str]:
    found = []
    for d in (env.classifiers, os.path.join(env.user, "guidance_lab", "latent_cache")):
        if os.path.isdir(d):
            found += [os.path.join(d, f) for f in os.listdir(d) if f.startswith(".tmp-")]
    return found


def _broken_caches(env: Env) -> list[str]:
    from safetensors import safe_open

    bad = []
    for p in glob.glob(os.path.join(env.user, "guidance_lab", "latent_cache", "*.safetensors")):
        try:
            with safe_open(p, framework="pt") as f:
                for k in f.keys():
                    f.get_tensor(k)
        except Exception as e:  # a half-written cache fails here
            bad.append(f"{os.path.basename(p)}: {e}")
    return bad


def interrupts(srv, env: Env, spec_fns: dict, refs: dict, seeds: list[int], n: int, rng: random.Random, log) -> dict:
    """n interrupts at a random step, cycling the kinds of run; after each, the same prompt again must give the
    fresh server's output. CLIP through-model: the toy model's and the VAE's weights are the originals. Training
    (a fresh dataset, so the VAE encoding can be interrupted too): no classifier file, no temporary file, every
    latent cache complete."""
    first = ["clip_through_model", "train_fresh", "toy_classifier_guidance_sampler"]  # the quick form's three
    kinds = first + [k for k in spec_fns if k not in first]
    rows, failures = [], []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        seed = seeds[i % len(seeds)]
        frac = rng.uniform(0.05, 0.9)
        step_of = (lambda frac: lambda mx: max(1, int(frac * mx)))(frac)
        if kind == "train_fresh":
            out_name = f"rel_interrupted_{i}"
            prompt = train_prompt(seed, steps=400, dataset="rel_set_big", output_name=out_name)
            # a new image file each time makes a new cache key: the encoding runs (and may be interrupted)
            from PIL import Image
            Image.new("RGB", (32, 32), (i % 255, 0, 0)).save(os.path.join(env.input, "rel_set_big", "dark", f"x{i}.png"))
            res = interrupt_at(srv, prompt, step_of)
            problems = []
            if os.path.exists(os.path.join(env.classifiers, out_name + ".safetensors")):
                problems.append("classifier file written")
            problems += [f"temporary file {p}" for p in _tmp_files(env)]
            problems += [f"broken latent cache {b}" for b in _broken_caches(env)]
            rows.append({"kind": kind, "step": res["step"], "max": res["max"], "interrupted": res["interrupted"],
                         "problems": problems})
            if problems or not res["interrupted"]:
                failures.append(f"{kind}: interrupted={res['interrupted']} {problems}")
            log(f"interrupt {i + 1}/{n}: {kind} at {res['step']}/{res['max']} {'ok' if not problems else problems}")
            continue
        before = weights(srv) if kind == "clip_through_model" else None
        res = interrupt_inside(srv, spec_fns[kind](seed), step_of)
        problems = []
        if before is not None:
            after = _weights_of(weights(srv), ("BaseModel", "AutoencoderKL"))
            b = _weights_of(before, ("BaseModel", "AutoencoderKL"))
            for key in b:
                if key not in after:
                    continue
                for field in ("values", "identity", "inference_tensors"):
                    if after[key][field] != b[key][field]:
                        problems.append(f"{key} {field} changed")
            if len([k for k in b if k in after]) < 2:
                problems.append(f"model and VAE not both loaded before and after: {sorted(b)} / {sorted(after)}")
        entry = run(srv, spec_fns[kind](seed))
        err = error_of(entry)
        if err:
            problems.append(f"next run failed: {err.get('exception_message')}")
        elif output_hashes(entry, srv) != refs[(kind, seed)]:
            problems.append("next run's output differs from a fresh server's")
        rows.append({"kind": kind, "step": res["step"], "max": res["max"], "interrupted": res["interrupted"],
                     "problems": problems})
        if problems or not res["interrupted"]:
            failures.append(f"{kind} seed {seed}: interrupted={res['interrupted']} {problems}")
        log(f"interrupt {i + 1}/{n}: {kind} at {res['step']}/{res['max']} {'ok' if not problems else problems}")
    return {"count": len(rows), "interrupted": sum(r["interrupted"] for r in rows), "rows": rows,
            "failures": failures}


# ============================================================== 3. files changed under the server

def excerpt(message: str, needle: str, n: int = 240) -> str:
    """At most about n characters of an error message for the report, around `needle` (the file's name) where
    the message holds it: a long message (ComfyUI 0.33's validation errors quote the whole input first) keeps
    the part that names the file."""
    at = message.find(needle)
    if len(message) <= n or at < 0 or at + len(needle) <= n:
        return message[:n]
    start = max(0, at - n // 2)
    return "..." + message[start:start + n]


def _safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _rewrite_classifier(src: str, meta_edit=None, tensor_edit=None) -> bytes:
    """The toy classifier's bytes with its metadata and/or tensors changed (written with safetensors)."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(src, framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    gl = json.loads(meta["guidance_lab"])
    if meta_edit:
        gl = meta_edit(gl)
    meta["guidance_lab"] = gl if isinstance(gl, str) else json.dumps(gl)
    if tensor_edit:
        tensors = tensor_edit(tensors)
    return save(tensors, metadata=meta)


class _PickleBomb:
    """Unpickling this creates the marker file (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def fault_cases(env: Env) -> dict:
    """name -> function() that changes models/classifiers/rel_fault.safetensors."""
    src, path = env.toy_classifier, env.fault_path()

    def put(data: bytes):
        with open(path, "wb") as f:
            f.write(data)

    def nan_weights(t):
        k = sorted(t)[0]
        t[k] = t[k].clone()
        t[k].view(-1)[0] = float("nan")
        return t

    def wrong_shapes(g):
        g["config"] = dict(g["config"], base_channels=int(g["config"].get("base_channels", 32)) * 2)
        return g

    def huge_config(g):
        g["config"] = dict(g["config"], base_channels=1 << 20)
        return g

    with open(src, "rb") as f:
        good = f.read()
    return {
        "deleted": lambda: os.remove(path),
        "truncated": lambda: put(good[: len(good) // 3]),
        "pickle": lambda: put(pickle.dumps({"weights": _PickleBomb(env.marker)}, protocol=2)),
        "torch_zip_pickle": lambda: put(b"PK\x03\x04" + pickle.dumps(_PickleBomb(env.marker))),
        "malformed_json": lambda: put(_rewrite_classifier(src, meta_edit=lambda g: "{\"format\": \"guidance-lab-cl")),
        "wrong_metadata_types": lambda: put(_rewrite_classifier(
            src, meta_edit=lambda g: dict(g, labels=5, latent_channels="one"))),
        "oversized_labels_10MB": lambda: put(_rewrite_classifier(
            src, meta_edit=lambda g: dict(g, labels=[f"label-{i:07d}-" + "x" * 80 for i in range(110_000)]))),
        "oversized_header": lambda: put(_safetensors_bytes({"__metadata__": {"guidance_lab": "x" * (20 << 20)}})),
        "wrong_tensor_shapes": lambda: put(_rewrite_classifier(src, meta_edit=wrong_shapes)),
        "huge_config": lambda: put(_rewrite_classifier(src, meta_edit=huge_config)),
        "nan_weights": lambda: put(_rewrite_classifier(src, tensor_edit=nan_weights)),
    }


def _fault_prompt(object_info, seed: int, steps: int = 3) -> dict:
    from devkit.workflow_run import load

    p = to_api(load("toy_classifier_guidance_ksampler"), object_info)
    for node in p.values():
        if node["class_type"] == "GuidanceLabClassifierLoader":
            node["inputs"]["classifier_name"] = "rel_fault.safetensors"
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"]["batch_size"] = 1
    return set_steps(set_seed(p, seed), steps)


def _blocker(i: int) -> dict:
    """A long run (a training of 100000 steps) that keeps the queue busy until it is interrupted."""
    return train_prompt(1000 + i, steps=100000, output_name=f"rel_blocker_{i}")


def files_under_server(srv, env: Env, object_info: dict, spec_fns: dict, refs: dict, seeds: list[int],
                       cases: list[str] | None, log) -> dict:
    """Each fault is applied after the prompt was queued (validated against the file list) and before it executes:
    a long run keeps the queue busy, the fault prompt is queued, the file changed, the long run interrupted. Then
    the same file changed between two prompts (ComfyUI's cache must not hand on the old classifier). Every case:
    an error naming the file; then the server still samples correctly; the pickle marker never appears."""
    import asyncio

    import aiohttp

    all_cases = fault_cases(env)
    names = cases or list(all_cases)
    rows, failures = [], []
    for i, name in enumerate(names):
        env.reset_fault_file()
        blocker = _blocker(i)

        async def queue_then_fault():
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(f"{srv.url}/ws?clientId={srv.client_id}") as ws:
                    async with s.post(srv.url + "/prompt", json={"prompt": blocker, "client_id": srv.client_id}) as r:
                        bid = (await r.json())["prompt_id"]
                    t0 = time.time()
                    while time.time() - t0 < 120:  # the blocker is training: its step progress arrives
                        msg = await ws.receive(timeout=120)
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            d = json.loads(msg.data)
                            if d["type"] == "progress" and d["data"].get("prompt_id") == bid and d["data"]["max"] == 100000:
                                break
                    async with s.post(srv.url + "/prompt", json={"prompt": _fault_prompt(object_info, 50 + i),
                                                                 "client_id": srv.client_id}) as r:
                        body = await r.json()
                        status = r.status
                    all_cases[name]()  # the file changes while the prompt waits in the queue
                    async with s.post(srv.url + "/interrupt", json={"prompt_id": bid}) as r:
                        await r.read()
                    return status, body

        status, body = asyncio.run(queue_then_fault())
        t0 = time.time()
        problems, message = [], ""
        if status != 200:
            problems.append(f"fault prompt refused at queueing ({status}): {str(body)[:300]}")
        else:
            entry = wait(srv, body["prompt_id"], 120)
            err = error_of(entry)
            if not err or err["kind"] != "execution_error":
                problems.append(f"no error (status {entry['status'].get('status_str')})")
            else:
                message = str(err.get("exception_message", ""))
                if "rel_fault" not in message:
                    problems.append(f"error does not name the file: {message[:300]}")
                if has_traceback(message):
                    problems.append("traceback in the message")
        seconds = round(time.time() - t0, 2)
        if os.path.exists(env.marker):
            problems.append("a pickle was loaded")
        env.reset_fault_file()
        ok = run(srv, spec_fns["toy_classifier_guidance_ksampler"](seeds[0]))
        if error_of(ok) or output_hashes(ok, srv) != refs[("toy_classifier_guidance_ksampler", seeds[0])]:
            problems.append("the server did not sample correctly afterwards")
        rows.append({"case": name, "when": "queued, before execution", "error": excerpt(message, "rel_fault"),
                     "seconds": seconds, "problems": problems})
        if problems:
            failures.append(f"{name}: {problems}")
        log(f"fault {name}: {'ok' if not problems else problems} :: {message[:160]}")

    # the file replaced between two prompts: the loader must read it again, not reuse ComfyUI's cached classifier
    env.reset_fault_file()
    first = run(srv, _fault_prompt(object_info, 7))
    all_cases["nan_weights"]()
    second = run(srv, _fault_prompt(object_info, 8))
    err = error_of(second)
    problems = []
    if error_of(first):
        problems.append(f"first run failed: {error_of(first).get('exception_message')}")
    if not err or "rel_fault" not in str(err.get("exception_message", "")):
        problems.append("the changed file was not read again (ComfyUI's cache handed on the old classifier)")
    rows.append({"case": "nan_weights", "when": "between two prompts", "error": excerpt(str((err or {}).get(
        "exception_message", "")), "rel_fault"), "seconds": None, "problems": problems})
    if problems:
        failures.append(f"between prompts: {problems}")
    env.reset_fault_file()
    clip_rows = clip_files_between_prompts(srv, env, log)
    rows += clip_rows
    failures += [f"CLIP {r['case']}: {r['problems']}" for r in clip_rows if r["problems"]]
    alive = "system" in srv.get("/system_stats")
    return {"count": len(rows), "rows": rows, "failures": failures, "pickle_loaded": os.path.exists(env.marker),
            "server_alive": alive}


CLIP_FAULT = "rel_fault_clip.safetensors"


def clip_fault_cases(env: Env) -> dict:
    """name -> function() that changes models/guidance_clip/rel_fault_clip.safetensors (a copy of the tiny CLIP)."""
    from safetensors.torch import load_file, save_file

    src = os.path.join(env.models, "guidance_clip", "tiny_clip.safetensors")
    path = os.path.join(env.models, "guidance_clip", CLIP_FAULT)
    with open(src, "rb") as f:
        good = f.read()

    def put(data: bytes):
        with open(path, "wb") as f:
            f.write(data)

    def missing_tensor():
        sd = load_file(src)
        sd.pop(sorted(sd)[0])
        save_file(sd, path)

    return {
        "reset": lambda: put(good),
        "truncated": lambda: put(good[: len(good) // 3]),
        "torch_zip_pickle": lambda: put(b"PK\x03\x04" + pickle.dumps(_PickleBomb(env.marker))),
        "missing_tensor": missing_tensor,
        "deleted": lambda: os.remove(path),
    }


def _clip_fault_prompt(seed: int) -> dict:
    p = clip_prompt(seed, "detached", steps=3)
    p["clip"]["inputs"]["checkpoint"] = CLIP_FAULT
    return p


def clip_files_between_prompts(srv, env: Env, log) -> list[dict]:
    """The CLIP classifier's checkpoint changed between two prompts (the first one loaded and cached it): the second
    must read it again and fail with an error naming the file (or be refused at queueing when the file is gone), and
    once the good file is back the same prompt gives the first prompt's output again."""
    cases = clip_fault_cases(env)
    rows = []
    for name in ("truncated", "torch_zip_pickle", "missing_tensor", "deleted"):
        cases["reset"]()
        problems = []
        first = run(srv, _clip_fault_prompt(5))
        if error_of(first):
            problems.append(f"the good file failed: {str(error_of(first).get('exception_message'))[:200]}")
        cases[name]()
        status, body = srv.post_prompt(_clip_fault_prompt(5))
        message = ""
        if status == 200:
            err = error_of(wait(srv, body["prompt_id"], 120))
            message = str((err or {}).get("exception_message", ""))
            if not err:
                problems.append("no error: the changed file was not read again (ComfyUI's cache handed on the old "
                                "CLIP classifier)")
        else:
            message = json.dumps(body)
        if CLIP_FAULT not in message:
            problems.append(f"the answer does not name the file: {message[:300]}")
        if has_traceback(message):
            problems.append("traceback in the message")
        if os.path.exists(env.marker):
            problems.append("a pickle was loaded")
        cases["reset"]()
        again = run(srv, _clip_fault_prompt(5))
        if error_of(again) or output_hashes(again, srv) != output_hashes(first, srv):
            problems.append("the good file back did not give the first output again")
        rows.append({"case": f"clip_{name}", "when": "between two prompts" + (" (refused at queueing)"
                                                                               if status != 200 else ""),
                     "error": excerpt(message, CLIP_FAULT), "seconds": None, "problems": problems})
        log(f"CLIP fault {name}: {'ok' if not problems else problems} :: {message[:160]}")
    return rows


# ============================================================== 4. hostile requests

JSON_LEAF = None  # built lazily (hypothesis is a dev dependency)


def _strategies(env: Env):
    from hypothesis import strategies as st

    from devkit.workflow_api import input_type  # noqa: F401  (the converter is importable)

    leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                     st.sampled_from(["0:1, 1:0", "0:nan", "1e308:1", "0:1,0:1,0:1", "constant", "keyframes", "sigma",
                                      "progress", "interval", "-1", "1e400", "", "\x00", "é" * 30]))
    value = st.recursive(leaf, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch, max_size=4),
                         max_leaves=12)
    import guidance_core.schedules as S  # the client imports the core (pure) for the field names

    fields = list(S.DEFAULTS) + ["steps", "sigma_min", "sigma_max"]
    key = st.one_of(st.sampled_from(fields), st.text(max_size=12))
    num = st.one_of(st.floats(min_value=-200, max_value=200), st.floats(), st.integers(-10, 10_000))
    typed = {"kind": st.sampled_from(list(S.KINDS) + ["", "bogus"]),
             "axis": st.sampled_from(["sigma", "progress", "step", ""]), "keyframes": st.text(max_size=60),
             "steps": st.one_of(st.integers(-5, 500), num)}
    well_typed = st.fixed_dictionaries({}, optional={k: typed.get(k, num) for k in fields})
    body = st.one_of(st.dictionaries(key, value, max_size=8),
                     st.fixed_dictionaries({}, optional={k: value for k in fields}), well_typed, value)
    canary = os.path.join(env.outside, "canary.safetensors")
    rel_canary = os.path.relpath(canary, env.classifiers)
    evil = ["../" * k + p for k in range(1, 8) for p in ("etc/passwd", rel_canary.lstrip("./"))] + [
        canary, rel_canary, "/etc/passwd", "~/.bashrc", "C:\\Windows\\win.ini", "..\\..\\x", "%2e%2e/%2e%2e/etc/passwd",
        "rel_fault.safetensors", "toy_fashion_classifier.safetensors", "rel_fault.safetensors\x00.png",
        "a" * 5000, "./rel_fault.safetensors", "sub/../../x", "file:///etc/passwd", "\u202e", "rel_fault.safetensors/."]
    name = st.one_of(st.sampled_from(evil), st.text(max_size=60), st.binary(max_size=40).map(
        lambda b: b.decode("latin-1")))
    # near-valid text per input: the values a user types, with numbers and separators mutated
    word = st.sampled_from(["Bag", "Coat", "Trouser", "a bag", "a shoe", "rel_set", "light", "dark", "middle.0",
                            "input.4", "output.1", "double.7", "0", "1", "0.5", "nan", "inf", "-1e9", "1e400", ""])
    sep = st.sampled_from([":", ", ", "\n", ",", " ", ";", "/", "..", "*"])
    near = st.lists(st.tuples(word, sep), min_size=1, max_size=8).map(
        lambda xs: "".join(a + b for a, b in xs[:-1]) + xs[-1][0])
    # well-formed values of each input (so that the success paths are fuzzed too)
    fnum = st.one_of(st.floats(-1e3, 1e3), st.floats())
    pairs = lambda key: st.lists(st.tuples(key, fnum), min_size=1, max_size=5).map(  # noqa: E731
        lambda xs: ", ".join(f"{k}:{v}" for k, v in xs))
    toy_labels = st.sampled_from(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                  "Bag", "Ankle boot"])
    fields = {"target": st.one_of(toy_labels, pairs(toy_labels)),
              "keyframes": pairs(st.floats(0, 1)),
              "clip_labels": st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=4).map("\n".join),
              "clip_target": st.one_of(st.sampled_from(CLIP_LABELS), pairs(st.sampled_from(CLIP_LABELS))),
              "pag_blocks": st.lists(st.tuples(st.sampled_from(["input", "middle", "output", "double", "single", "x"]),
                                               st.integers(-2, 12)), max_size=3).map(
                  lambda xs: ", ".join(f"{a}.{b}" for a, b in xs)),
              "dataset": st.sampled_from(["rel_set", "rel_set/", " rel_set ", "rel_set/dark", "rel_set_big"]),
              "output_name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)}
    return {"body": body, "name": name, "fields": fields,
            "text": st.one_of(st.sampled_from(evil), st.text(max_size=200), near, near, near)}


TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+", re.M)


def has_traceback(text: str) -> bool:
    """A Python traceback in an answer: its header or a frame line ('  File "...", line N'). Not the bare word: a
    fuzzed request may hold the word "Traceback" itself, which an error naming the bad value echoes."""
    return bool(TRACEBACK.search(text))


def _check_answer(status: int, text: str, seconds: float, allowed: set, bound_s: float) -> list[str]:
    problems = []
    if status >= 500:
        problems.append(f"status {status}")
    elif status not in allowed:
        problems.append(f"unexpected status {status}")
    if has_traceback(text):
        problems.append("traceback in the response")
    if seconds > bound_s:
        problems.append(f"answered in {seconds:.1f}s (bound {bound_s}s)")
    if "label-0000000" in text or "CANARY" in text:
        problems.append("content of a file outside ComfyUI's folders")
    return problems


def fuzz_routes(srv, env: Env, n: int, bound_s: float, log) -> dict:
    from hypothesis import HealthCheck, given, settings

    S = _strategies(env)
    res = {"schedule": {"cases": 0, "max_s": 0.0, "statuses": {}}, "classifier_labels": {"cases": 0, "max_s": 0.0,
                                                                                          "statuses": {}}}
    failures = []

    def note(route, status, seconds, problems, case):
        r = res[route]
        r["cases"] += 1
        r["max_s"] = max(r["max_s"], round(seconds, 3))
        r["statuses"][str(status)] = r["statuses"].get(str(status), 0) + 1
        if problems and len(failures) < 50:
            failures.append(f"{route} {case!r:.200}: {problems}")

    cfg = settings(max_examples=n, deadline=None, database=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))
    t_end = time.time() + max(60.0, n * 0.2)

    @cfg
    @given(S["body"])
    def schedule(body):
        if time.time() > t_end:
            return
        data = json.dumps(body, allow_nan=True).encode()
        status, text, sec = _request(srv, "POST", "/guidance_lab/schedule", data, timeout=bound_s + 30)
        note("schedule", status, sec, _check_answer(status, text, sec, {200, 400}, bound_s), body)

    @cfg
    @given(S["name"])
    def labels(name):
        if time.time() > t_end:
            return
        q = urllib.parse.urlencode({"name": name})
        status, text, sec = _request(srv, "GET", f"/guidance_lab/classifier_labels?{q}", timeout=bound_s + 30)
        problems = _check_answer(status, text, sec, {200, 400, 404, 422}, bound_s)
        if status == 200 and "toy_fashion" not in name and "rel_fault" not in name:
            problems.append("answered 200 for a name outside the listed files")
        note("classifier_labels", status, sec, problems, name)

    schedule()
    t_end = time.time() + max(60.0, n * 0.2)
    labels()
    # raw, non-JSON bodies
    for raw in (b"", b"{", b"\xff\xfe", b"[]", b"null", b"1e999999", b'{"steps": 1e999}', b'"x"' * 1000):
        status, text, sec = _request(srv, "POST", "/guidance_lab/schedule", raw)
        note("schedule", status, sec, _check_answer(status, text, sec, {200, 400}, bound_s), raw)
    log(f"fuzz routes: {res}")
    return {"routes": res, "failures": failures}


def _once_values(env: Env) -> tuple[dict, dict]:
    """(values run once per input, in the quick form too: escapes from ComfyUI's folders; values that must be refused
    with the pack's own error: a weight beyond float32, weights adding up to inf, a position outside [0, 1], NaN)."""
    outside = os.path.join(env.outside, "canary_set")
    extra = {"dataset": [outside, os.path.relpath(outside, env.input), "../" + os.path.basename(env.outside) + "/canary_set",
                         "rel_set/../../" + os.path.basename(env.outside) + "/canary_set"],
             "output_name": ["../../evil", "/tmp/evil", "a/b", ".hidden", "x" * 500],
             "pag_blocks": ["middle." + "9" * 5000, "input.٣", "middle.0" + ",middle.0" * 2000]}
    refuse = {"target": ["Bag:1e39", "Bag:1e308, Bag:1e308", "Bag:-3e16", "Bag:nan"],
              "clip_target": ["a bag:-6.2834864816691596e+88", "a bag:inf"],
              "keyframes": ["0:1e39", "2:1", "0:nan"], "dataset": extra["dataset"],
              "output_name": extra["output_name"]}
    return extra, refuse


def fuzz_inputs_in_server(srv, env: Env, n: int, batch: int, bound_s: float, log) -> dict:
    """Every free-text input of the pack, `n` hypothesis cases each (plus the once-run values), checked in the server
    by the nodes that read it (the probe's /check_inputs, ComfyUI's own node classes; batches of `batch` values per
    request): each value accepted or refused with the pack's error naming the field or the value, never another
    exception, never a dataset or an output file outside ComfyUI's folders, each within bound_s seconds."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    S = _strategies(env)
    extra, refuse = _once_values(env)
    out, failures, refusal_failures = {}, [], []
    for field in FIELD_WORDS:
        row = {"cases": 0, "distinct": 0, "accepted": 0, "clear": 0, "unclear": 0, "unexpected": 0, "escape": 0,
               "max_s": 0.0, "mean_ms": 0.0, "seconds": 0.0}
        seen, buf, stop, shown = set(), [], [False], [0]
        t0 = time.time()
        t_end = t0 + max(120.0, n * 0.3)  # a time bound per input; the cases run are counted

        def fail(text, field=field, shown=shown):
            shown[0] += 1
            if shown[0] <= 10:  # per input, so that one input cannot hide another's
                failures.append(f"{field} {text}")

        def flush(field=field, row=row, seen=seen, buf=buf, stop=stop, fail=fail):
            if not buf:
                return
            body = json.dumps({"input": field, "values": buf}).encode()
            try:
                status, text, _sec = _request(srv, "POST", PROBE + "/check_inputs", body, timeout=bound_s * len(buf) + 60)
            except OSError as e:  # no answer at all (URLError, timeout): the server hangs on this batch
                status, text = None, repr(e)
            if status != 200:
                fail(f"batch of {len(buf)} values: no answer ({status}: {text[:300]}); values from {buf[0]!r:.100}")
                stop[0] = True
                buf.clear()
                return
            for v, (outcome, sec, kind, msg) in zip(buf, json.loads(text)["rows"]):
                row["cases"] += 1
                row[outcome] += 1
                row["max_s"] = max(row["max_s"], sec)
                row["mean_ms"] += 1000 * sec
                seen.add(v)
                if outcome in ("unclear", "unexpected", "escape"):
                    fail(f"{v!r:.200}: {outcome}: {kind}: {msg[:300]}")
                if sec > bound_s:
                    fail(f"{v!r:.200}: {sec:.1f}s (bound {bound_s}s)")
                if v in refuse.get(field, ()) and outcome == "accepted":
                    refusal_failures.append(f"{field} {v!r:.200}: accepted; expected the pack's error")
            buf.clear()

        def add(v, buf=buf, stop=stop, flush=flush, t_end=t_end):
            if not stop[0] and time.time() < t_end:
                buf.append(v)
                if len(buf) >= batch:
                    flush()

        for v in dict.fromkeys(extra.get(field, []) + refuse.get(field, [])):
            add(v)

        @settings(max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(st.one_of(S["text"], S["fields"][field]))
        def fuzz(v):
            add(v)

        fuzz()
        flush()
        row["distinct"], row["seconds"] = len(seen), round(time.time() - t0, 1)
        row["mean_ms"] = round(row["mean_ms"] / max(1, row["cases"]), 2)
        out[field] = row
        log(f"check inputs {field}: {row}")
    return {"inputs": out, "failures": failures, "refusal_failures": refusal_failures, "batch": batch}


def _arm_canaries(env: Env) -> dict:
    """Every file outside ComfyUI's folders that the checks name (the canary classifier and dataset) gets an access
    time of 1 s after the epoch: a read by any code (C and Rust readers too, which the audit hook does not see) sets
    it anew (ext4 relatime). A control file shows whether this file system keeps access times."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(env.outside) for f in fs if f not in ("atime_control",)]
    control = os.path.join(env.outside, "atime_control")
    with open(control, "w") as f:
        f.write("control")
    for p in files + [control]:
        os.utime(p, (1, os.stat(p).st_mtime))
    with open(control) as f:
        f.read()
    return {"files": files, "atime_tracked": os.stat(control).st_atime > 1}


def hostile(srv, env: Env, object_info: dict, cfg: dict, log) -> dict:
    """Check 4: the routes, every free-text input in the server (its nodes) and through POST /prompt, with the
    server's file opens audited and the canaries' access times watched."""
    t0 = time.time()
    canaries = _arm_canaries(env)
    status, text, _ = _request(srv, "POST", PROBE + "/audit", json.dumps(
        {"on": True, "selftest": os.path.join(env.outside, "atime_control")}).encode())
    selftest = status == 200 and json.loads(text)["selftest_seen"]
    res = {"fuzz_routes": fuzz_routes(srv, env, cfg["fuzz_routes"], cfg["bound_s"], log),
           "fuzz_checks": fuzz_inputs_in_server(srv, env, cfg["fuzz_checks"], cfg["check_batch"], cfg["bound_s"], log),
           "fuzz_inputs": fuzz_string_inputs(srv, env, object_info, cfg["fuzz_inputs"], cfg["bound_s"], log)}
    status, text, _ = _request(srv, "POST", PROBE + "/audit", json.dumps({"on": False}).encode())
    audit = json.loads(text) if status == 200 else {"events": 0, "outside": {f"audit answered {status}": 1}, "roots": []}
    read = [os.path.relpath(p, os.path.dirname(env.outside)) for p in canaries["files"] if os.stat(p).st_atime > 1]
    res["files_read"] = {"audited_events": audit["events"], "audit_selftest": selftest, "outside": audit["outside"],
                         "roots": audit["roots"],
                         "canaries": len(canaries["files"]), "canaries_read": read,
                         "atime_tracked": canaries["atime_tracked"]}
    res["hostile_seconds"] = round(time.time() - t0, 1)
    log(f"files read: {res['files_read']}")
    return res


def _string_input_prompts(object_info):
    """input name -> (function(value, i) -> API prompt, the pack's error types accepted)."""
    from devkit import demo_prompts as DP
    from devkit.workflow_run import load

    target_p = to_api(load("toy_classifier_guidance_ksampler"), object_info)

    def target(v, i):
        p = set_steps(set_seed(json.loads(json.dumps(target_p)), i), 1)
        for node in p.values():
            if node["class_type"] == "GuidanceLabClassifierGuidance":
                node["inputs"]["target"] = v
            if node["class_type"] == "EmptyLatentImage":
                node["inputs"].update(batch_size=1, width=64, height=64)
        return p

    def keyframes(v, i):
        p = DP.ksampler_patch(seed=i, prefix="rel/fuzz")
        p["sched"]["inputs"].update(kind="keyframes", keyframes=v)
        p["ks"]["inputs"]["steps"] = 2
        p["latent"]["inputs"]["batch_size"] = 1  # the demo world's latent is 32x32 (256 px)
        return p

    def labels(v, i):
        first = next((ln.strip() for ln in v.split("\n") if ln.strip()), "x")
        p = clip_prompt(i, "detached", steps=1, target=first)  # the target names the first label typed
        p["clip"]["inputs"]["labels"] = v
        p["latent"]["inputs"].update(batch_size=1, width=32, height=32)
        return p

    def clip_target(v, i):
        p = clip_prompt(i, "detached", steps=1, target=v)
        p["latent"]["inputs"].update(batch_size=1, width=32, height=32)
        return p

    def dataset(v, i):
        p = train_prompt(i, steps=0, dataset=v, output_name="rel_fuzz")
        p["save_report"] = {"class_type": "SaveImage", "inputs": {"images": ["train", 1], "filename_prefix": "rel/r"}}
        for k in ("guided", "ks", "decode", "save"):
            del p[k]
        return p

    def output_name(v, i):
        p = dataset("rel_set", i)
        p["train"]["inputs"]["output_name"] = v
        p["train"]["inputs"]["steps"] = 1
        return p

    def blocks(v, i):
        p = terms_prompt(i, steps=1, blocks=v)
        p["latent"]["inputs"].update(batch_size=1, width=32, height=32)
        return p

    out = {"target": target, "keyframes": keyframes, "clip_labels": labels, "clip_target": clip_target,
           "dataset": dataset, "output_name": output_name, "pag_blocks": blocks}
    return {k: (lambda fn: lambda v, i: fill_defaults(fn(v, i), object_info))(fn) for k, fn in out.items()}


def fuzz_string_inputs(srv, env: Env, object_info: dict, n: int, bound_s: float, log) -> dict:
    """Every free-text input of the pack through POST /prompt: a 200 or a 400 (ComfyUI's validation), never a 500;
    a prompt that runs either succeeds or stops with the pack's own error (a message naming the value), never
    another exception type; no dataset outside ComfyUI's input folder is read; each prompt finishes in bounded time."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    S = _strategies(env)
    builders = _string_input_prompts(object_info)
    out, failures, refusal_failures = {}, [], []
    extra, refuse = _once_values(env)
    for field, build in builders.items():
        row = {"cases": 0, "success": 0, "pack_error": 0, "refused_400": 0, "max_s": 0.0}
        out[field] = row
        t_end = time.time() + max(60.0, n * 1.0)  # a time bound per input; the cases run are counted
        counter = [0]

        def one(v, field=field, build=build, row=row):
            counter[0] += 1
            t0 = time.time()
            status, body = srv.post_prompt(build(v, counter[0]))
            problems, err = [], None
            if status >= 500:
                problems.append(f"status {status}")
            elif status == 400:
                row["refused_400"] += 1
                if has_traceback(json.dumps(body)):
                    problems.append("traceback in the response")
            else:
                entry = wait(srv, body["prompt_id"], bound_s + 60)
                err = error_of(entry)
                if err is None:
                    row["success"] += 1
                    if field == "dataset" and (os.path.isabs(v.strip()) or ".." in v):
                        problems.append("a dataset outside ComfyUI's input folder was read")
                    if field == "output_name" and ("/" in v or "\\" in v):
                        problems.append("a file was written outside models/classifiers")
                elif err.get("exception_type", "").split(".")[-1] in PACK_ERRORS:
                    row["pack_error"] += 1
                    if has_traceback(str(err.get("exception_message"))):
                        problems.append("traceback in the message")
                else:
                    problems.append(f"{err.get('exception_type')}: {str(err.get('exception_message'))[:200]}")
            sec = time.time() - t0
            row["cases"] += 1
            row["max_s"] = max(row["max_s"], round(sec, 3))
            if sec > bound_s:
                problems.append(f"{sec:.1f}s (bound {bound_s}s)")
            if v in refuse.get(field, ()) and not problems and status == 200 and err is None:
                refusal_failures.append(f"{field} {v!r:.200}: accepted; expected the pack's error")
            if problems and len(failures) < 50:
                failures.append(f"{field} {v!r:.200}: {problems}")

        for v in dict.fromkeys(extra.get(field, []) + refuse.get(field, [])):
            one(v)

        @settings(max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(st.one_of(S["text"], S["fields"][field]))
        def fuzz(v):
            if time.time() < t_end:
                one(v)

        fuzz()
        log(f"fuzz {field}: {row}")
    stray = [p for p in glob.glob("/tmp/evil*") + glob.glob(os.path.join(env.base, "..", "evil*"))]
    if stray:
        failures.append(f"files written outside: {stray}")
    return {"inputs": out, "failures": failures, "refusal_failures": refusal_failures,
            "refusal_cases": {k: len(v) for k, v in refuse.items()}}


# ============================================================== the whole run and the report

# fuzz_routes: hypothesis cases per route; fuzz_checks: per free-text input, checked in the server by its nodes
# (check_batch values per request); fuzz_inputs: per free-text input, whole prompts through POST /prompt
FULL = dict(soak=300, seeds=[7, 8], interrupts=30, fuzz_routes=3000, fuzz_checks=2500, check_batch=100,
            fuzz_inputs=250, restart_names=None, faults=None, bound_s=10.0)
QUICK = dict(soak=24, seeds=[7], interrupts=3, fuzz_routes=300, fuzz_checks=200, check_batch=50, fuzz_inputs=25,
             restart_names=["toy_cfg_guider_schedules", "clip_through_model"], faults=None, bound_s=10.0)
CHECKS = ("soak", "interrupts", "files", "hostile", "determinism")
FIGURES = os.path.join(ROOT, "docs", "reliability_figures.json")  # the last full run's figures, per check


def run_all(base: str, quick: bool, log=print) -> dict:
    """Every check; returns the figures (and the failures of each section)."""
    _client_imports()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2-core machines: oversubscribed threads slow everything
    cfg = QUICK if quick else FULL
    rng = random.Random(16)
    env = Env(base).build()
    t_start = time.time()
    res = {"mode": "quick" if quick else "full", "config": {k: v for k, v in cfg.items()}}
    srv = start_server(env, "reference")
    try:
        object_info = srv.get("/object_info")
        spec_fns = specs(object_info, quick)
        res["pack_nodes_used"] = sorted({n["class_type"] for fn in spec_fns.values() for n in fn(7).values()
                                         if n["class_type"].startswith("GuidanceLab")
                                         and "Demo" not in n["class_type"]})
        res["pack_nodes"] = sorted(k for k, v in object_info.items() if v.get("category", "").startswith("Guidance Lab/")
                                   and "/demo" not in v.get("category", "") and "reliability" not in v["category"])
        shipped = {} if quick else shipped_workflows(object_info)
        t0 = time.time()
        ref = reference_outputs(srv, spec_fns, cfg["seeds"], log)
        ref_shipped = reference_outputs(srv, shipped, cfg["seeds"][:1], log) if shipped else {"refs": {},
                                                                                               "run_mismatches": []}
        refs = {**ref["refs"], **ref_shipped["refs"]}
        mismatches = ref["run_mismatches"] + ref_shipped["run_mismatches"]
        res["reference"] = {"prompts": 2 * len(refs), "run_mismatches": mismatches,
                            "seconds": round(time.time() - t0, 1)}
    finally:
        srv.stop()
    srv = start_server(env, "main")
    try:
        all_fns = {**spec_fns, **shipped}
        pairs = sorted(refs) if cfg["restart_names"] is None else [(n, cfg["seeds"][0]) for n in cfg["restart_names"]]
        res["determinism"] = {"workflows": sorted({n for n, _ in pairs}), "pairs": len(pairs), "runs_per_server": 2,
                              "run_mismatches": mismatches, **determinism_after_restart(srv, all_fns, refs, pairs)}
        log(f"determinism: {res['determinism']}")
        res["soak"] = soak(srv, spec_fns, refs, cfg["seeds"], cfg["soak"], log, time_limit=3600)
        res["interrupts"] = interrupts(srv, env, spec_fns, refs, cfg["seeds"], cfg["interrupts"], rng, log)
        res["files"] = files_under_server(srv, env, object_info, spec_fns, refs, cfg["seeds"], cfg["faults"], log)
        res.update(hostile(srv, env, object_info, cfg, log))
        res["final_stats"] = stats(srv)
        res["alive_at_end"] = "system" in srv.get("/system_stats")
    finally:
        srv.stop()
    res["seconds"] = round(time.time() - t_start, 1)
    res["provenance"] = {k: _provenance(res["mode"], "all five checks", t_start, res["seconds"]) for k in CHECKS}
    return res


def run_hostile(base: str, quick: bool, log=print) -> dict:
    """Check 4 alone, in one server: the figures of res["fuzz_routes"], ["fuzz_checks"], ["fuzz_inputs"],
    ["files_read"], to merge into a full run's (merge)."""
    _client_imports()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = QUICK if quick else FULL
    env = Env(base).build()
    t_start = time.time()
    srv = start_server(env, "hostile")
    try:
        res = hostile(srv, env, srv.get("/object_info"), cfg, log)
        res["alive_after_hostile"] = "system" in srv.get("/system_stats")
    finally:
        srv.stop()
    res["config_hostile"] = {k: cfg[k] for k in ("fuzz_routes", "fuzz_checks", "check_batch", "fuzz_inputs", "bound_s")}
    res["mode_hostile"] = "quick" if quick else "full"
    res["seconds_hostile_run"] = round(time.time() - t_start, 1)
    res["provenance_hostile"] = _provenance(res["mode_hostile"], "check 4 alone (--only hostile)", t_start,
                                            res["seconds_hostile_run"])
    return res


def _provenance(mode: str, run: str, t_start: float, seconds: float) -> dict:
    """Where a check's figures come from: the run, when, on which commit (and whether the tree had local changes)."""
    import subprocess

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"mode": mode, "run": run, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)),
            "seconds": seconds, "commit": git("rev-parse", "--short", "HEAD") or "unknown",
            "local_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def merge(stored: dict, part: dict) -> dict:
    """A full run's figures with check 4's replaced by those of a later run of check 4 alone (run_hostile)."""
    if stored.get("mode") != "full":
        raise SystemExit(f"{FIGURES} holds a {stored.get('mode')} run; merge needs a full run's figures")
    res = json.loads(json.dumps(stored))
    for k in ("fuzz_routes", "fuzz_checks", "fuzz_inputs", "files_read", "hostile_seconds"):
        res[k] = part[k]
    res["config"].update(part["config_hostile"])
    res["provenance"]["hostile"] = part["provenance_hostile"]
    return res


def failures(res: dict) -> dict:
    """section -> list of failures (empty lists: the section passed)."""
    s = res["soak"]
    soak_f = list(s["errors"]) + list(s["mismatches"])
    if s["rss_growth_pct"] >= 5.0:
        soak_f.append(f"resident memory grew {s['rss_growth_pct']}% after warm-up")
    if s["models_max"] > s["models_warm"]:
        soak_f.append(f"models held grew from {s['models_warm']} to {s['models_max']}")
    if s["patchers_max"] > s["patchers_warm"]:
        soak_f.append(f"model patchers held grew from {s['patchers_warm']} to {s['patchers_max']}")
    if s["hooks_growing"]:
        soak_f.append(f"hooks/wrappers accumulate: {s['hooks_growing']}")
    if len(s["global_hooks"]) > 1:
        soak_f.append(f"global module hooks changed: {s['global_hooks']}")
    unused = sorted(set(res["pack_nodes"]) - set(res["pack_nodes_used"]))
    if unused:
        soak_f.append(f"pack nodes not exercised: {unused}")
    det = res["determinism"]
    files = res["files"]
    files_f = list(files["failures"]) + (["a pickle was loaded"] if files["pickle_loaded"] else []) + (
        [] if files["server_alive"] else ["server down"])
    return {"soak": soak_f, "interrupts": list(res["interrupts"]["failures"]) + (
                [] if res["interrupts"]["interrupted"] == res["interrupts"]["count"] else ["some runs finished before "
                                                                                          "their interrupt"]),
            "files": files_f, "hostile": hostile_failures(res),
            "determinism": list(det["run_mismatches"]) + list(det["restart_mismatches"])}


def hostile_failures(res: dict) -> list:
    """Check 4 passes only when every route and every free-text input reached its number of cases (in the server
    and through POST /prompt) with no problem, and no file outside ComfyUI's folders was opened or read."""
    cfg, fr, fc, fi, rd = res["config"], res["fuzz_routes"], res["fuzz_checks"], res["fuzz_inputs"], res["files_read"]
    out = list(fr["failures"]) + list(fc["failures"]) + list(fi["failures"]) + list(fc["refusal_failures"]) + list(
        fi["refusal_failures"])
    out += [f"route {k}: {v['cases']} cases of {cfg['fuzz_routes']}" for k, v in fr["routes"].items()
            if v["cases"] < cfg["fuzz_routes"]]
    out += [f"{k} (in the server): {v['cases']} cases of {cfg['fuzz_checks']}" for k, v in fc["inputs"].items()
            if v["cases"] < cfg["fuzz_checks"]]
    out += [f"{k} (POST /prompt): {v['cases']} cases of {cfg['fuzz_inputs']}" for k, v in fi["inputs"].items()
            if v["cases"] < cfg["fuzz_inputs"]]
    if set(fc["inputs"]) != set(fi["inputs"]):
        out.append(f"inputs fuzzed in the server {sorted(fc['inputs'])} != through POST /prompt {sorted(fi['inputs'])}")
    out += [f"opened outside ComfyUI's folders: {k} ({n}x)" for k, n in list(rd["outside"].items())[:10]]
    out += [f"a canary outside ComfyUI's folders was read: {p}" for p in rd["canaries_read"]]
    if not rd["audited_events"] or not rd["audit_selftest"]:
        out.append("the audit hook did not see the server's file opens (or its own test open outside ComfyUI's "
                   "folders): it did not work")
    if not rd["atime_tracked"]:
        out.append("this file system keeps no access times: reads of the canaries cannot be seen")
    return out


def report(res: dict) -> str:
    f = failures(res)
    s, it, fl, fr, fi, det = (res["soak"], res["interrupts"], res["files"], res["fuzz_routes"], res["fuzz_inputs"],
                              res["determinism"])
    fc, rd, cfg, prov = res["fuzz_checks"], res["files_read"], res["config"], res["provenance"]
    ok = lambda k: "PASS" if not f[k] else "FAIL"  # noqa: E731

    def measured(k):
        p = prov[k]
        return (f"{'full run' if p['run'] == 'all five checks' else 'check 4 alone'}, {p['started']}, commit "
                f"`{p['commit']}`{' + local changes' if p['local_changes'] else ''}")

    merged = prov["hostile"]["run"] != prov["soak"]["run"]
    L = ["# Reliability of Guidance Lab in a real ComfyUI server",
         "",
         "Generated by `.venv/bin/python -m scripts.reliability` (issue 16); never hand-edited. "
         f"Mode: **{res['mode']}**, {res['seconds'] / 60:.1f} minutes on this machine (CPU, "
         f"`OMP_NUM_THREADS=1`), started {prov['soak']['started']}. The quick form of every check runs in CI "
         "(`tests/test_reliability.py`). The raw figures are in `docs/reliability_figures.json`"
         + (f"; check 4 was then run again alone (`python -m scripts.reliability --only hostile`, "
            f"{prov['hostile']['seconds'] / 60:.1f} minutes, started {prov['hostile']['started']}, one fresh server) "
            "and its figures replaced the full run's: the last column says where each row's figures come from."
            if merged else "."),
         "",
         "Two real servers (`devkit/comfy_server.py`, localhost, `--base-directory` in a temporary folder) with the "
         "pack, the demo nodes and a probe (this script loaded as a custom node: memory, models held, hooks, weight "
         "fingerprints; a tiny random VAE node). The first is the *fresh server* whose outputs are the references; the "
         "second (a restart) runs everything else. Every request loop is bounded in count and time.",
         "",
         "| check | result | figures | measured |", "|---|---|---|---|",
         f"| 1. soak | {ok('soak')} | {s['prompts']} prompts in {s['seconds']} s; RSS {s['rss_warm_kb'] / 1024:.0f} MiB after "
         f"warm-up ({s['warm_prompts']} prompts) -> {s['rss_end_kb'] / 1024:.0f} MiB (**{s['rss_growth_pct']:+.2f}%**, bound < 5%); models held "
         f"{s['models_warm']} -> max {s['models_max']}, model patchers {s['patchers_warm']} -> max {s['patchers_max']}; {len(s['hooks_growing'])} growing hook/wrapper counts; "
         f"{len(s['mismatches'])} outputs differing from a fresh server; {len(s['errors'])} errors | {measured('soak')} |",
         f"| 2. interrupts | {ok('interrupts')} | {it['count']} interrupts ({it['interrupted']} landed mid-run) at a "
         f"random step; {len(it['failures'])} failures | {measured('interrupts')} |",
         f"| 3. files changed under the server | {ok('files')} | {fl['count']} cases, each an error naming the file; "
         f"pickle loaded: {fl['pickle_loaded']}; server serving afterwards: {fl['server_alive']} | {measured('files')} |",
         f"| 4. hostile requests | {ok('hostile')} | routes: "
         + ", ".join(f"{k} {v['cases']} cases (max {v['max_s']} s)" for k, v in fr["routes"].items())
         + f" (each >= {cfg['fuzz_routes']}); every free-text input ({len(fc['inputs'])}) checked in the server by its "
         f"nodes: {min(v['cases'] for v in fc['inputs'].values())} to {max(v['cases'] for v in fc['inputs'].values())} "
         f"cases each (each >= {cfg['fuzz_checks']}; max {max(v['max_s'] for v in fc['inputs'].values())} s), and "
         f"{min(v['cases'] for v in fi['inputs'].values())} to {max(v['cases'] for v in fi['inputs'].values())} whole "
         f"prompts each through `POST /prompt` (each >= {cfg['fuzz_inputs']}); {len(rd['outside'])} files opened and "
         f"{len(rd['canaries_read'])} canaries read outside ComfyUI's folders ({rd['audited_events']} opens audited); "
         f"bound {cfg['bound_s']} s per answer | {measured('hostile')} |",
         f"| 5. determinism | {ok('determinism')} | {det['pairs']} (workflow, seed) pairs of {len(det['workflows'])} "
         f"workflows: bit-identical across 2 runs and across a restart ({det['restart_checked']} compared) | "
         f"{measured('determinism')} |",
         "", "## 1. Soak", "",
         f"{s['prompts']} prompts through `POST /prompt`, cycling {s['cycle']} (workflow, seed) pairs: every toy example "
         "workflow, the demo CFG Patch / CFG Guider with terms, CLIP guidance (tiny random open_clip file, VAE decode; "
         "detached through the MODEL patch, through-model through the SAMPLER wrapper with the CFG Guider) and Train "
         "Classifier on a tiny dataset whose classifier then guides sampling. Pack nodes exercised: "
         + ", ".join(f"`{n}`" for n in res["pack_nodes_used"]) + ".",
         "", "| after prompt | RSS (MiB) | models held | model patchers | loaded in model management | global module "
         "hooks | threads |", "|---|---|---|---|---|---|---|"]
    L += [f"| {x['prompts']} | {x['rss_kb'] / 1024:.1f} | {x['held_models']} | {x['patchers']} | {x['loaded_models']} | "
          f"{x['global_module_hooks']} | {x['threads']} |" for x in s["samples"]]
    L += ["", "Hooks / wrappers / patches per model held at the end (each constant across the soak: "
          f"{'none grew' if not s['hooks_growing'] else s['hooks_growing']}):", "",
          "| model | patchers | module hooks | module attributes | wrappers | callbacks | post-CFG | pre-CFG | "
          "transformer patches | object patches | weight patches | additional models |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    kept = {k: c for k, c in s["hook_counts"].items() if c["samples"] > 1}
    L[-2] = L[-2].replace("| model |", "| model | samples |")
    L[-1] += "---|"
    for k, c in kept.items():
        L.append(f"| {k.split('#')[0]} | {c['samples']} of {len(s['samples'])} | " + " | ".join(str(c[x]) for x in (
            "patchers", "module_hooks", "module_attrs", "wrappers", "callbacks", "post_cfg", "pre_cfg", "transformer_patches",
            "object_patches", "weight_patches", "additional_models")) + " |")
    L += ["", f"Objects held at one sample only (made anew by a prompt, e.g. a trained classifier): "
          f"{len(s['hook_counts']) - len(kept)}; the soak's table above shows that they do not pile up."]
    L += ["", "## 2. Interrupts", "",
          "`POST /interrupt` when the run's progress (watched on the websocket) reaches a random step; then the same "
          "prompt again must give the fresh server's output. CLIP through-model: the toy model's and the VAE's weights "
          "(tensor identity, inference flags, values) equal those before. Training (a new image each time, so the "
          "VAE encoding may be the phase interrupted): no classifier file, no temporary file, every latent cache "
          "complete.", "", "| kind | step / max | interrupted | problems |", "|---|---|---|---|"]
    L += [f"| {r['kind']} | {r['step']} / {r['max']} | {r['interrupted']} | {_cell('; '.join(r['problems'])) or 'none'} |"
          for r in it["rows"]]
    L += ["", "## 3. Files changed under the server", "",
          "`models/classifiers/rel_fault.safetensors` (a copy of the toy classifier) changed after the prompt naming it "
          "was queued and before it ran (a long training kept the queue busy, then was interrupted); and once between "
          "two prompts. After each case the server samples the toy classifier-guidance workflow again, equal to the "
          "fresh server's output.", "", "| case | when | seconds | error |", "|---|---|---|---|"]
    L += [f"| {r['case']} | {r['when']} | {r['seconds'] if r['seconds'] is not None else ''} | {_cell(r['error'])} |"
          for r in fl["rows"]]
    L += ["", "## 4. Hostile requests", "",
          f"hypothesis (derandomized, bounded count and time; {res['hostile_seconds'] / 60:.1f} minutes in all): JSON "
          "bodies of any shape for `POST /guidance_lab/schedule`, names (traversal, absolute paths, NUL, encodings, a "
          "canary classifier outside ComfyUI's folders) for `GET /guidance_lab/classifier_labels`, and text for every "
          "free-text input (any text, near-valid values with numbers and separators mutated, well-formed values, "
          "traversal and absolute paths; values that must be refused and escapes run once each). Pass: no 500, no "
          "traceback in any answer, no content of a file outside ComfyUI's folders, each answer within "
          f"{cfg['bound_s']} s, and every route and input at its number of cases.", "",
          "| route | cases | statuses | max seconds |", "|---|---|---|---|"]
    L += [f"| {k} | {v['cases']} | {v['statuses']} | {v['max_s']} |" for k, v in fr["routes"].items()]
    L += ["", "**Every free-text input, checked in the server by the nodes that read it.** The probe's "
          f"`POST {PROBE}/check_inputs` takes a batch of values ({fc['batch']} per request) and runs, for each, "
          "ComfyUI's own classes of the pack's nodes (`NODE_CLASS_MAPPINGS`, under inference mode as ComfyUI's "
          "executor runs them) on the toy model, the toy classifier, the tiny CLIP classifier and the tiny VAE: "
          "`target` and `clip_target` through Classifier Guidance; `keyframes` through Schedule; `clip_labels` "
          "through Load CLIP Classifier, then Classifier Guidance naming the first label; `dataset` and "
          "`output_name` through Train Classifier at steps 0 (every check of the node and the dataset scan, no "
          "training; an accepted name must resolve inside ComfyUI's input folder / models/classifiers); "
          "`pag_blocks` through Perturbed Term, then the CFG Guider, which checks the blocks against the model. "
          "*Clear*: the pack's own error (GuidanceConfigError, ClassifierFileError) whose message names the field or "
          "the value; *unclear*: the pack's error without it; *unexpected*: any other exception.", "",
          "| string input | cases | distinct | accepted | clear error | unclear error | unexpected | escapes | mean ms "
          "| max seconds | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    L += [f"| {k} | {v['cases']} | {v['distinct']} | {v['accepted']} | {v['clear']} | {v['unclear']} | "
          f"{v['unexpected']} | {v['escape']} | {v['mean_ms']} | {v['max_s']} | {v['seconds']} |"
          for k, v in fc["inputs"].items()]
    L += ["", "**End to end: whole prompts through `POST /prompt`** (a workflow that uses the input, executed: a "
          "prompt that runs succeeds or stops with the pack's own error, never another exception type; no dataset "
          "read or classifier written outside ComfyUI's folders).", "",
          "| string input | prompts | success | pack error | refused (400) | max seconds |", "|---|---|---|---|---|---|"]
    L += [f"| {k} | {v['cases']} | {v['success']} | {v['pack_error']} | {v['refused_400']} | {v['max_s']} |"
          for k, v in fi["inputs"].items()]
    L += ["", f"**Files.** During the whole check an audit hook in the server (`sys.addaudithook`: open, listdir, "
          "scandir, mkdir, rename, remove, ...; it saw its own test open of a file outside, "
          f"{'yes' if rd['audit_selftest'] else 'NO'}) saw {rd['audited_events']} file-system events; "
          f"{len(rd['outside'])} lay outside ComfyUI's folders and the code the server runs ("
          + (", ".join(f"`{_cell(k)}` {n}x" for k, n in list(rd["outside"].items())[:10]) or "none")
          + f"). The {rd['canaries']} canary files outside ComfyUI's folders (a valid classifier, a dataset) had their "
          "access time set to 1 s after the epoch before the check, so that a read by any code (C and Rust readers "
          "too, which the audit hook does not see) shows: "
          + (f"read: {', '.join(rd['canaries_read'])}" if rd["canaries_read"] else "none was read")
          + f" (this file system keeps access times: {rd['atime_tracked']})."]
    L += ["", "## 5. Determinism", "",
          f"Every (workflow, seed) ran twice in the fresh server (other prompts in between, so ComfyUI's cache does not "
          f"answer) and again after a restart: {len(det['run_mismatches'])} + {len(det['restart_mismatches'])} "
          "mismatches. Workflows: " + ", ".join(f"`{n}`" for n in det["workflows"]) + ". The SD1.5 example workflows "
          "need user-supplied checkpoints and are not run here.", ""]
    L += ["## Defects this harness found when it was written (issue 16)", "",
          "Fixed, each with a test that failed before (`tests/test_reliability.py`):",
          "- a classifier file changed under a running server was not read again: ComfyUI's cache handed on the "
          "classifier loaded before (Load Classifier now fingerprints the file: path, size, mtime, inode);",
          "- a classifier file with NaN weights loaded silently (guidance then produced NaN); now refused naming the "
          "file and the tensor;",
          "- a config asking for a huge network allocated before failing (a 3e14-parameter request was an "
          "out-of-memory error, not a message); the network is now built on the meta device and compared with the "
          "file's shapes first;",
          "- metadata of the wrong type (labels = 5, latent_channels = 'one') failed with a TypeError; a 10 MB label "
          "list or a 20 MB header was parsed in full; both are refused up front, naming the file and the limit;",
          "- a target weight beyond float32 ('a bag:-6.3e88') failed with a RuntimeError mid-node; target weights "
          "are now limited to [-100, 100] with a message naming the label;",
          "- a Perturbed Term `blocks` index of thousands of digits ('middle.' + 5000 digits) failed with Python's "
          "int() ValueError (its 4300-digit limit) instead of the pack's message; now refused naming the item "
          "(`guidance_core/perturb.parse_blocks`; found by the in-server fuzzing of check 4).", ""]
    if any(f.values()):
        L += ["## Failures (open)", "", "Not fixed here (the code concerned belongs to another part of the project); "
              "reported:", ""] + [f"- {k}: {_cell(x)}" for k, v in f.items() for x in v[:20]] + [""]
    return "\n".join(L)


def _cell(text: str) -> str:
    """One line of a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "/")


def write_atomic(path: str, text: str):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the CI slice (does not rewrite docs/RELIABILITY.md)")
    ap.add_argument("--only", choices=["hostile", "report"], default=None,
                    help="hostile: run check 4 alone (one server) and merge its figures into those of the last full run "
                         "(--figures), then rewrite the doc, which says which run each check's figures come from; "
                         "with --quick: print its failures only. report: rewrite the doc from --figures, running nothing")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "RELIABILITY.md"))
    ap.add_argument("--figures", default=FIGURES, help="the figures of the last full run, per check (JSON)")
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    args = ap.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if args.only and not args.quick and not os.path.exists(args.figures):
        raise SystemExit(f"{args.figures} is missing: run the full form first (no --only)")
    if args.only == "report":
        with open(args.figures) as fh:
            res = json.load(fh)
        write_atomic(args.out, report(res))
        print("wrote", args.out, "from", args.figures)
        return 1 if any(failures(res).values()) else 0
    with tempfile.TemporaryDirectory(prefix="gl-reliability-") as tmp:
        if args.only:
            part = run_hostile(os.path.join(tmp, "base"), args.quick, log=log)
        else:
            res = run_all(os.path.join(tmp, "base"), args.quick, log=log)
    if args.only and args.quick:
        f = {"hostile": hostile_failures({**part, "config": part["config_hostile"]})}
        res = part
    else:
        if args.only:
            with open(args.figures) as fh:
                res = merge(json.load(fh), part)
        f = failures(res)
    if args.json:
        write_atomic(args.json, json.dumps(res, indent=1, default=str))
    if not args.quick:
        write_atomic(args.figures, json.dumps(res, indent=1, default=str) + "\n")
        write_atomic(args.out, report(res))
        print("wrote", args.out, "and", args.figures)
    for k, v in f.items():
        print(f"{k}: {'PASS' if not v else 'FAIL'}", *v[:10], sep="\n  ")
    return 1 if any(f.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
