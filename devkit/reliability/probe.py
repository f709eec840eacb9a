"""The probe: runs inside the ComfyUI server, linked into its custom_nodes as `gl_reliability_probe.py` and loaded
by ComfyUI under that name. It adds test-only routes (under common.PROBE) that report the server's resident memory,
the models ComfyUI holds with the hooks / wrappers / patches on each, and weight fingerprints; it runs the pack's own
nodes on values of each free-text input; it records the files the server opens (an audit hook). It registers the tiny
random open_clip architecture of models/guidance_clip_configs/ and a tiny random VAE node with 1 latent channel (the
toy world's). Imported under its package name (the client side), it installs nothing.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import threading
import time

from devkit import comfy_host
from devkit.reliability.common import CLIP_ARCH, CLIP_LABELS, FIELD_WORDS, PACK_ERRORS, PROBE, has_traceback


# ---------------------------------------------------------- what the server holds


def _module_hooks(module) -> int:
    n = 0
    for m in module.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_state_dict_pre_hooks",
            "_load_state_dict_pre_hooks",
            "_load_state_dict_post_hooks",
        ):
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
        row = {
            "class": type(net).__name__,
            "id": id(net),
            "patchers": len(own),
            "module_hooks": _module_hooks(net),
            "module_attrs": sum(len(m.__dict__) for m in net.modules()),
        }
        for key in (
            "wrappers",
            "callbacks",
            "post_cfg",
            "pre_cfg",
            "transformer_patches",
            "object_patches",
            "weight_patches",
            "additional_models",
        ):
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
    glob_hooks = sum(
        len(getattr(torch.nn.modules.module, a, {}))
        for a in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )
    return {
        "rss_kb": rss,
        "held_models": len(models),
        "patchers": len(patchers),
        "vaes": len(vaes),
        "classifiers": len(classifiers),
        "loaded_models": len(mm.current_loaded_models),
        "models": models,
        "global_module_hooks": glob_hooks,
        "threads": threading.active_count(),
    }


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
        out.append(
            {
                "class": type(net).__name__,
                "id": id(net),
                "values": h.hexdigest()[:20],
                "identity": ids.hexdigest()[:20],
                "inference_tensors": inf,
            }
        )
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
# The answers: see common.PACK_ERRORS.
_FIXTURES: dict = {}
_AUDIT = {"on": False, "events": 0, "outside": {}, "roots": (), "installed": False}
_AUDIT_BUSY = threading.local()
_AUDIT_EVENTS = (
    "open",
    "os.listdir",
    "os.scandir",
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.chdir",
)


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
            clip_args = dict(
                architecture=CLIP_ARCH,
                checkpoint="tiny_clip.safetensors",
                decode="vae",
                gradient="detached",
                cutouts=1,
                tau=0.0,
                vae=vae,
            )
            _FIXTURES.update(
                model=model,
                vae=vae,
                clip_args=clip_args,
                pos=_result(_node("GuidanceLabToyClass").execute(world, "Coat"))[0],
                empty=_result(_node("GuidanceLabToyClass").execute(world, "empty"))[0],
                classifier=_result(_node("GuidanceLabClassifierLoader").execute("toy_fashion_classifier.safetensors"))[
                    0
                ],
                clip=_result(
                    _node("GuidanceLabCLIPClassifierLoader").execute(labels="\n".join(CLIP_LABELS), **clip_args)
                )[0],
            )
    return _FIXTURES


def _inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def _check_input(field: str, v: str) -> str | None:
    """Run the pack's nodes on one value of `field`; None when accepted (an escape from ComfyUI's folders raises)."""
    F = _fixtures()
    guide = dict(
        scale=6.0,
        sigma_lo=0.0,
        sigma_hi=10000.0,
        every_n=1,
        rms_clamp=0.0,
        dtype="float32",
        allow_other_latent_format=False,
    )
    train = dict(
        steps=0,
        batch_size=8,
        lr=0.001,
        seed=0,
        resolution=32,
        sigma_distribution="log_uniform",
        class_balance=False,
        width=8,
    )
    if field in ("target", "clip_target"):
        _node("GuidanceLabClassifierGuidance").execute(
            F["model"], F["classifier" if field == "target" else "clip"], target=v, **guide
        )
    elif field == "keyframes":
        d = _pack_module("GuidanceLabSchedule").SCHEDULE_DEFAULTS
        _node("GuidanceLabSchedule").execute(
            **{
                **{k: d[k] for k in ("axis", "start", "end", "exponent", "sigma_lo", "sigma_hi", "inside", "outside")},
                "kind": "keyframes",
                "keyframes": v,
            }
        )
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

    roots = {
        folder_paths.base_path,
        folder_paths.models_dir,
        folder_paths.get_input_directory(),
        folder_paths.get_output_directory(),
        folder_paths.get_temp_directory(),
        folder_paths.get_user_directory(),
        os.path.dirname(os.path.abspath(folder_paths.__file__)),
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        *site.getsitepackages(),
        "/dev",
        "/proc",
    }
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
    return {
        "on": on,
        "events": _AUDIT["events"],
        "outside": dict(_AUDIT["outside"]),
        "roots": list(_AUDIT["roots"]),
        "selftest_seen": seen,
    }


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
    """Loaded by a running ComfyUI server (as gl_reliability_probe), not imported by the client side."""
    srv = sys.modules.get("server")
    return (
        __name__ not in ("__main__", "devkit.reliability.probe")
        and getattr(getattr(srv, "PromptServer", None), "instance", None) is not None
    )


if _inside_comfyui():
    _install_probe()
    NODE_CLASS_MAPPINGS = {"GLReliabilityTinyVAE": GLReliabilityTinyVAE}
