"""Check 2: interrupts at a random step of a run (watched on the websocket), then the same prompt again must give the
fresh server's output; a training interrupted leaves no file behind; weights are left as they were."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import random
import time

from devkit.reliability.client import Env, error_of, output_hashes
from devkit.reliability.prompts import train_prompt


def interrupt_at(srv, prompt: dict, step_of, timeout: float = 120.0) -> dict:
    """Queue `prompt` and POST /interrupt once a progress report on the websocket is inside a progress bar, at or
    past step_of(max) and before its end. ComfyUI (0.33 on) throttles a bar's reports to one per 100 ms but always
    sends its first and its final one, so the first report past the target can be a bar's end (a dataset encoded
    in one go): that is no point inside the run, and the interrupt waits for a report inside a later bar (the
    training steps) instead. Returns {"entry", "step", "max", "interrupted"} (step < max when it was sent)."""
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
                        "max", 1
                    ):
                        hit = (data["value"], data["max"])
                        async with s.post(srv.url + "/interrupt", json={"prompt_id": pid}) as r:
                            await r.read()
                        break
                    if d["type"] in ("execution_success", "execution_error") or (
                        d["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == pid
                    ):
                        break
                return pid, hit

    pid, hit = asyncio.run(go())
    entry = srv.wait(pid, timeout)
    err = error_of(entry)
    return {
        "entry": entry,
        "step": hit[0] if hit else None,
        "max": hit[1] if hit else None,
        "interrupted": bool(err and err["kind"] == "execution_interrupted"),
    }


def interrupt_inside(srv, prompt: dict, step_of) -> dict:
    """interrupt_at, and once more at the run's first report inside a bar when no report reached step_of(max): a
    short run on a ComfyUI that throttles its reports (0.33 on, one per 100 ms) may send only a bar's first and final
    one, and a run that ends uninterrupted proves nothing about interrupts. Before the second try the server drops
    its output cache (POST /free: the completed run would otherwise be answered from it, with no step run)."""
    res = interrupt_at(srv, prompt, step_of)
    if res["step"] is None:
        status, text, _ = srv.request("POST", "/free", json.dumps({"free_memory": True}).encode(), timeout=30)
        if status != 200:
            raise RuntimeError(f"POST /free answered {status}: {text[:300]}")
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


def _interrupt_training(srv, env: Env, i: int, seed: int, step_of) -> tuple[dict, list]:
    """A training on a dataset with a new image (a new cache key: the VAE encoding runs and may be the phase
    interrupted), interrupted: (interrupt_at's answer, problems: a classifier file, a temporary file or a latent
    cache left behind, or a cache half written)."""
    from PIL import Image

    out_name = f"rel_interrupted_{i}"
    prompt = train_prompt(seed, steps=400, dataset="rel_set_big", output_name=out_name)
    Image.new("RGB", (32, 32), (i % 255, 0, 0)).save(os.path.join(env.input, "rel_set_big", "dark", f"x{i}.png"))
    res = interrupt_at(srv, prompt, step_of)
    problems = []
    if os.path.exists(os.path.join(env.classifiers, out_name + ".safetensors")):
        problems.append("classifier file written")
    problems += [f"temporary file {p}" for p in _tmp_files(env)]
    problems += [f"broken latent cache {b}" for b in _broken_caches(env)]
    return res, problems


def _weights_changed(before: list, after: list) -> list[str]:
    """The toy model's and the VAE's weights (values, tensor identity, inference flags) that differ."""
    after = _weights_of(after, ("BaseModel", "AutoencoderKL"))
    b = _weights_of(before, ("BaseModel", "AutoencoderKL"))
    problems = []
    for key in b:
        if key not in after:
            continue
        for field in ("values", "identity", "inference_tensors"):
            if after[key][field] != b[key][field]:
                problems.append(f"{key} {field} changed")
    if len([k for k in b if k in after]) < 2:
        problems.append(f"model and VAE not both loaded before and after: {sorted(b)} / {sorted(after)}")
    return problems


def _interrupt_and_rerun(srv, fn, seed: int, ref: list, step_of, check_weights: bool) -> tuple[dict, list]:
    """fn(seed) interrupted inside a bar, then run again: (interrupt_inside's answer, problems: the rerun fails or
    differs from `ref`, the fresh server's output; with check_weights, weights changed by the interrupted run)."""
    before = srv.weights() if check_weights else None
    res = interrupt_inside(srv, fn(seed), step_of)
    problems = _weights_changed(before, srv.weights()) if check_weights else []
    entry = srv.run(fn(seed))
    err = error_of(entry)
    if err:
        problems.append(f"next run failed: {err.get('exception_message')}")
    elif output_hashes(entry, srv) != ref:
        problems.append("next run's output differs from a fresh server's")
    return res, problems


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
            res, problems = _interrupt_training(srv, env, i, seed, step_of)
            label = kind
        else:
            res, problems = _interrupt_and_rerun(
                srv, spec_fns[kind], seed, refs[(kind, seed)], step_of, check_weights=kind == "clip_through_model"
            )
            label = f"{kind} seed {seed}"
        rows.append(
            {
                "kind": kind,
                "step": res["step"],
                "max": res["max"],
                "interrupted": res["interrupted"],
                "problems": problems,
            }
        )
        if problems or not res["interrupted"]:
            failures.append(f"{label}: interrupted={res['interrupted']} {problems}")
        log(f"interrupt {i + 1}/{n}: {kind} at {res['step']}/{res['max']} {'ok' if not problems else problems}")
    return {"count": len(rows), "interrupted": sum(r["interrupted"] for r in rows), "rows": rows, "failures": failures}
