"""Checks 1 and 5: the soak (hundreds of prompts in one server: memory, models held, hooks on each, outputs) and
determinism (the fresh server's reference outputs, each run twice, and again after a restart)."""

from __future__ import annotations

import time

from devkit.reliability.client import error_of, output_hashes


# ---------------------------------------------------------- 5. determinism (and the reference outputs)


def reference_outputs(srv, spec_fns: dict, seeds: list[int], log) -> dict:
    """(name, seed) -> output hashes in a fresh server; each prompt runs twice (other prompts in between, so
    ComfyUI's cache cannot answer the second run) and the two runs must agree."""
    refs, mismatches = {}, []
    for rep in range(2):
        for name, fn in spec_fns.items():
            for seed in seeds:
                entry = srv.run(fn(seed))
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
        if output_hashes(srv.run(fns[name](seed)), srv) != refs[(name, seed)]:
            bad.append(f"{name} seed {seed}")
    return {"restart_checked": len(pairs), "restart_mismatches": bad}


# ---------------------------------------------------------- 1. soak


def _hook_counts(st: dict) -> dict:
    keys = (
        "patchers",
        "module_hooks",
        "module_attrs",
        "wrappers",
        "callbacks",
        "post_cfg",
        "pre_cfg",
        "transformer_patches",
        "object_patches",
        "weight_patches",
        "additional_models",
    )
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
        entry = srv.run(spec_fns[name](seed))
        err = error_of(entry)
        if err:
            errors.append(f"{name} seed {seed}: {err.get('exception_message')}")
        elif output_hashes(entry, srv) != refs[(name, seed)]:
            mismatches.append(f"#{i} {name} seed {seed}")
        done += 1
        if (i + 1) % len(order) == 0:
            st = srv.stats()
            samples.append(
                {
                    "prompts": i + 1,
                    "rss_kb": st["rss_kb"],
                    "held_models": st["held_models"],
                    "patchers": st["patchers"],
                    "loaded_models": st["loaded_models"],
                    "global_module_hooks": st["global_module_hooks"],
                    "threads": st["threads"],
                }
            )
            for key, counts in _hook_counts(st).items():
                hooks_by_model.setdefault(key, []).append(counts)
            if i + 1 >= warm and base is None:
                base = samples[-1]
            log(
                f"soak {i + 1}/{n_prompts}: rss {st['rss_kb'] / 1024:.0f} MiB, {st['held_models']} models held, "
                f"{st['patchers']} model patchers"
            )
    growing = {}
    for key, series in hooks_by_model.items():
        for k in series[0]:
            vals = [s[k] for s in series]
            if max(vals) > vals[0]:
                growing[f"{key}.{k}"] = vals
    end = samples[-1]
    base = base or samples[0]
    after_warm = [s for s in samples if s["prompts"] >= base["prompts"]]
    return {
        "prompts": done,
        "seconds": round(time.time() - t0, 1),
        "cycle": len(order),
        "samples": samples,
        "warm_prompts": base["prompts"],
        "rss_warm_kb": base["rss_kb"],
        "rss_end_kb": end["rss_kb"],
        "rss_growth_pct": round(100.0 * (end["rss_kb"] - base["rss_kb"]) / base["rss_kb"], 2),
        "models_warm": base["held_models"],
        "models_max": max(s["held_models"] for s in after_warm),
        "patchers_warm": base["patchers"],
        "patchers_max": max(s["patchers"] for s in after_warm),
        "global_hooks": sorted({s["global_module_hooks"] for s in samples}),
        "hook_counts": {k: dict(v[-1], samples=len(v)) for k, v in hooks_by_model.items()},
        "hooks_growing": growing,
        "mismatches": mismatches,
        "errors": errors,
    }
