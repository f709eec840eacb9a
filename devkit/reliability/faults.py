"""Check 3: files changed under the server. The classifier file a queued prompt names is changed before the prompt
runs (truncated, deleted, a pickle, malformed or oversized metadata, wrong shapes, NaN weights), and once between
two prompts; the tiny CLIP's checkpoint likewise between two prompts. Every case: an error naming the file, no
pickle loaded, and the server still samples correctly."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import struct
import time

from devkit.reliability.client import Env, error_of, output_hashes
from devkit.reliability.common import has_traceback
from devkit.reliability.prompts import clip_prompt, set_seed, set_steps, to_api, train_prompt
from devkit.workflow_run import load


def excerpt(message: str, needle: str, n: int = 240) -> str:
    """At most about n characters of an error message for the report, around `needle` (the file's name) where
    the message holds it: a long message (ComfyUI 0.33's validation errors quote the whole input first) keeps
    the part that names the file."""
    at = message.find(needle)
    if len(message) <= n or at < 0 or at + len(needle) <= n:
        return message[:n]
    start = max(0, at - n // 2)
    return "..." + message[start : start + n]


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
        "malformed_json": lambda: put(_rewrite_classifier(src, meta_edit=lambda g: '{"format": "guidance-lab-cl')),
        "wrong_metadata_types": lambda: put(
            _rewrite_classifier(src, meta_edit=lambda g: dict(g, labels=5, latent_channels="one"))
        ),
        "oversized_labels_10MB": lambda: put(
            _rewrite_classifier(
                src, meta_edit=lambda g: dict(g, labels=[f"label-{i:07d}-" + "x" * 80 for i in range(110_000)])
            )
        ),
        "oversized_header": lambda: put(_safetensors_bytes({"__metadata__": {"guidance_lab": "x" * (20 << 20)}})),
        "wrong_tensor_shapes": lambda: put(_rewrite_classifier(src, meta_edit=wrong_shapes)),
        "huge_config": lambda: put(_rewrite_classifier(src, meta_edit=huge_config)),
        "nan_weights": lambda: put(_rewrite_classifier(src, tensor_edit=nan_weights)),
    }


def _fault_prompt(object_info, seed: int, steps: int = 3) -> dict:
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


async def _queue_then_fault(srv, blocker: dict, fault_prompt: dict, change) -> tuple[int, dict]:
    """Queue `blocker` (a long training) and, once its steps run, `fault_prompt`; then change the file (`change()`)
    while the fault prompt waits in the queue, and interrupt the blocker. (status, body) of the fault prompt."""
    import aiohttp

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
            async with s.post(srv.url + "/prompt", json={"prompt": fault_prompt, "client_id": srv.client_id}) as r:
                body = await r.json()
                status = r.status
            change()  # the file changes while the prompt waits in the queue
            async with s.post(srv.url + "/interrupt", json={"prompt_id": bid}) as r:
                await r.read()
            return status, body


def _fault_answer(srv, status: int, body: dict) -> tuple[str, list[str]]:
    """(the error's message, problems) of the fault prompt: it must fail with an error naming the file and no
    traceback."""
    if status != 200:
        return "", [f"fault prompt refused at queueing ({status}): {str(body)[:300]}"]
    entry = srv.wait(body["prompt_id"], 120)
    err = error_of(entry)
    if not err or err["kind"] != "execution_error":
        return "", [f"no error (status {entry['status'].get('status_str')})"]
    message, problems = str(err.get("exception_message", "")), []
    if "rel_fault" not in message:
        problems.append(f"error does not name the file: {message[:300]}")
    if has_traceback(message):
        problems.append("traceback in the message")
    return message, problems


def _fault_while_queued(srv, env: Env, object_info: dict, i: int, name: str, change, sample_ok) -> tuple[dict, str]:
    """One case applied after its prompt was queued and before it runs; then the server must sample correctly
    (`sample_ok()`). (The report's row, the error's whole message.)"""
    env.reset_fault_file()
    status, body = asyncio.run(_queue_then_fault(srv, _blocker(i), _fault_prompt(object_info, 50 + i), change))
    t0 = time.time()
    message, problems = _fault_answer(srv, status, body)
    seconds = round(time.time() - t0, 2)
    if os.path.exists(env.marker):
        problems.append("a pickle was loaded")
    env.reset_fault_file()
    if not sample_ok():
        problems.append("the server did not sample correctly afterwards")
    return {
        "case": name,
        "when": "queued, before execution",
        "error": excerpt(message, "rel_fault"),
        "seconds": seconds,
        "problems": problems,
    }, message


def _fault_between_prompts(srv, env: Env, object_info: dict, change) -> dict:
    """The file replaced (NaN weights) between two prompts: the loader must read it again, not reuse ComfyUI's
    cached classifier. The report's row."""
    env.reset_fault_file()
    first = srv.run(_fault_prompt(object_info, 7))
    change()
    second = srv.run(_fault_prompt(object_info, 8))
    err = error_of(second)
    problems = []
    if error_of(first):
        problems.append(f"first run failed: {error_of(first).get('exception_message')}")
    if not err or "rel_fault" not in str(err.get("exception_message", "")):
        problems.append("the changed file was not read again (ComfyUI's cache handed on the old classifier)")
    return {
        "case": "nan_weights",
        "when": "between two prompts",
        "error": excerpt(str((err or {}).get("exception_message", "")), "rel_fault"),
        "seconds": None,
        "problems": problems,
    }


def files_under_server(
    srv, env: Env, object_info: dict, spec_fns: dict, refs: dict, seeds: list[int], cases: list[str] | None, log
) -> dict:
    """Each fault is applied after the prompt was queued (validated against the file list) and before it executes:
    a long run keeps the queue busy, the fault prompt is queued, the file changed, the long run interrupted. Then
    the same file changed between two prompts (ComfyUI's cache must not hand on the old classifier). Every case:
    an error naming the file; then the server still samples correctly; the pickle marker never appears."""
    all_cases = fault_cases(env)
    names = cases or list(all_cases)
    rows, failures = [], []

    def sample_ok():
        ok = srv.run(spec_fns["toy_classifier_guidance_ksampler"](seeds[0]))
        return not error_of(ok) and output_hashes(ok, srv) == refs[("toy_classifier_guidance_ksampler", seeds[0])]

    for i, name in enumerate(names):
        row, message = _fault_while_queued(srv, env, object_info, i, name, all_cases[name], sample_ok)
        rows.append(row)
        if row["problems"]:
            failures.append(f"{name}: {row['problems']}")
        log(f"fault {name}: {'ok' if not row['problems'] else row['problems']} :: {message[:160]}")

    row = _fault_between_prompts(srv, env, object_info, all_cases["nan_weights"])
    rows.append(row)
    if row["problems"]:
        failures.append(f"between prompts: {row['problems']}")
    env.reset_fault_file()
    clip_rows = clip_files_between_prompts(srv, env, log)
    rows += clip_rows
    failures += [f"CLIP {r['case']}: {r['problems']}" for r in clip_rows if r["problems"]]
    alive = "system" in srv.get("/system_stats")
    return {
        "count": len(rows),
        "rows": rows,
        "failures": failures,
        "pickle_loaded": os.path.exists(env.marker),
        "server_alive": alive,
    }


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
        first = srv.run(_clip_fault_prompt(5))
        if error_of(first):
            problems.append(f"the good file failed: {str(error_of(first).get('exception_message'))[:200]}")
        cases[name]()
        status, body = srv.post_prompt(_clip_fault_prompt(5))
        message = ""
        if status == 200:
            err = error_of(srv.wait(body["prompt_id"], 120))
            message = str((err or {}).get("exception_message", ""))
            if not err:
                problems.append(
                    "no error: the changed file was not read again (ComfyUI's cache handed on the old CLIP classifier)"
                )
        else:
            message = json.dumps(body)
        if CLIP_FAULT not in message:
            problems.append(f"the answer does not name the file: {message[:300]}")
        if has_traceback(message):
            problems.append("traceback in the message")
        if os.path.exists(env.marker):
            problems.append("a pickle was loaded")
        cases["reset"]()
        again = srv.run(_clip_fault_prompt(5))
        if error_of(again) or output_hashes(again, srv) != output_hashes(first, srv):
            problems.append("the good file back did not give the first output again")
        rows.append(
            {
                "case": f"clip_{name}",
                "when": "between two prompts" + (" (refused at queueing)" if status != 200 else ""),
                "error": excerpt(message, CLIP_FAULT),
                "seconds": None,
                "problems": problems,
            }
        )
        log(f"CLIP fault {name}: {'ok' if not problems else problems} :: {message[:160]}")
    return rows
