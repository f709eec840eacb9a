"""Reliability of Guidance Lab in a real ComfyUI server: soak, interrupts, files changed under the server, hostile
requests, determinism. The whole run (two servers: the fresh one gives the reference outputs, a restart runs the
rest), check 4 alone, and the command line (`python -m scripts.reliability`, see scripts/reliability.py)."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

from devkit import ROOT
from devkit.reliability.client import Env, start_server
from devkit.reliability.faults import files_under_server
from devkit.reliability.hostile import hostile
from devkit.reliability.interrupts import interrupts
from devkit.reliability.prompts import shipped_workflows, specs
from devkit.reliability.report import failures, hostile_failures, report
from devkit.reliability.runtime import determinism_after_restart, reference_outputs, soak
from guidance_core.files import atomic_bytes

# fuzz_routes: hypothesis cases per route; fuzz_checks: per free-text input, checked in the server by its nodes
# (check_batch values per request); fuzz_inputs: per free-text input, whole prompts through POST /prompt
FULL = dict(
    soak=300,
    seeds=[7, 8],
    interrupts=30,
    fuzz_routes=3000,
    fuzz_checks=2500,
    check_batch=100,
    fuzz_inputs=250,
    restart_names=None,
    faults=None,
    bound_s=10.0,
)
QUICK = dict(
    soak=24,
    seeds=[7],
    interrupts=3,
    fuzz_routes=300,
    fuzz_checks=200,
    check_batch=50,
    fuzz_inputs=25,
    restart_names=["toy_cfg_guider_schedules", "clip_through_model"],
    faults=None,
    bound_s=10.0,
)
CHECKS = ("soak", "interrupts", "files", "hostile", "determinism")
FIGURES = os.path.join(ROOT, "docs", "reliability_figures.json")  # the last full run's figures, per check


def run_all(base: str, quick: bool, log=print) -> dict:
    """Every check; returns the figures (and the failures of each section)."""
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
        res["pack_nodes_used"] = sorted(
            {
                n["class_type"]
                for fn in spec_fns.values()
                for n in fn(7).values()
                if n["class_type"].startswith("GuidanceLab") and "Demo" not in n["class_type"]
            }
        )
        res["pack_nodes"] = sorted(
            k
            for k, v in object_info.items()
            if v.get("category", "").startswith("Guidance Lab/")
            and "/demo" not in v.get("category", "")
            and "reliability" not in v["category"]
        )
        shipped = {} if quick else shipped_workflows(object_info)
        t0 = time.time()
        ref = reference_outputs(srv, spec_fns, cfg["seeds"], log)
        ref_shipped = (
            reference_outputs(srv, shipped, cfg["seeds"][:1], log) if shipped else {"refs": {}, "run_mismatches": []}
        )
        refs = {**ref["refs"], **ref_shipped["refs"]}
        mismatches = ref["run_mismatches"] + ref_shipped["run_mismatches"]
        res["reference"] = {
            "prompts": 2 * len(refs),
            "run_mismatches": mismatches,
            "seconds": round(time.time() - t0, 1),
        }
    finally:
        srv.stop()
    srv = start_server(env, "main")
    try:
        all_fns = {**spec_fns, **shipped}
        pairs = sorted(refs) if cfg["restart_names"] is None else [(n, cfg["seeds"][0]) for n in cfg["restart_names"]]
        res["determinism"] = {
            "workflows": sorted({n for n, _ in pairs}),
            "pairs": len(pairs),
            "runs_per_server": 2,
            "run_mismatches": mismatches,
            **determinism_after_restart(srv, all_fns, refs, pairs),
        }
        log(f"determinism: {res['determinism']}")
        res["soak"] = soak(srv, spec_fns, refs, cfg["seeds"], cfg["soak"], log, time_limit=3600)
        res["interrupts"] = interrupts(srv, env, spec_fns, refs, cfg["seeds"], cfg["interrupts"], rng, log)
        res["files"] = files_under_server(srv, env, object_info, spec_fns, refs, cfg["seeds"], cfg["faults"], log)
        res.update(hostile(srv, env, object_info, cfg, log))
        res["final_stats"] = srv.stats()
        res["alive_at_end"] = "system" in srv.get("/system_stats")
    finally:
        srv.stop()
    res["seconds"] = round(time.time() - t_start, 1)
    res["provenance"] = {k: _provenance(res["mode"], "all five checks", t_start, res["seconds"]) for k in CHECKS}
    return res


def run_hostile(base: str, quick: bool, log=print) -> dict:
    """Check 4 alone, in one server: the figures of res["fuzz_routes"], ["fuzz_checks"], ["fuzz_inputs"],
    ["files_read"], to merge into a full run's (merge)."""
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
    res["provenance_hostile"] = _provenance(
        res["mode_hostile"], "check 4 alone (--only hostile)", t_start, res["seconds_hostile_run"]
    )
    return res


def _provenance(mode: str, run: str, t_start: float, seconds: float) -> dict:
    """Where a check's figures come from: the run, when, on which commit (and whether the tree had local changes)."""
    import subprocess

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "mode": mode,
        "run": run,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)),
        "seconds": seconds,
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "local_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


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


def write_atomic(path: str, text: str):
    atomic_bytes(path, text.encode("utf-8"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split(". ")[0].split()) + ".")
    ap.add_argument("--quick", action="store_true", help="the CI slice (does not rewrite docs/RELIABILITY.md)")
    ap.add_argument(
        "--only",
        choices=["hostile", "report"],
        default=None,
        help="hostile: run check 4 alone (one server) and merge its figures into those of the last full run "
        "(--figures), then rewrite the doc, which says which run each check's figures come from; "
        "with --quick: print its failures only. report: rewrite the doc from --figures, running nothing",
    )
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
