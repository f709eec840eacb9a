"""The README's main job: start a headless ComfyUI with Guidance Lab, run the pack's toy example workflows
(example_workflows/toy_*.json: CFG Guider with schedules, CFG Patch on the KSampler, classifier guidance as a
MODEL patch and as a SAMPLER) through POST /prompt, exactly as saved for the frontend (converted to the API
format by devkit/workflow_api.py), and write their images plus a contact sheet to OUTDIR (default: out/).
CPU only, nothing to download: the toy world's model and classifier ship with the pack."""

from __future__ import annotations

import argparse
import os
import sys
import time

from devkit import workflow_run as R
from devkit.comfy_server import ComfyServer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("outdir", nargs="?", default="out")
    ap.add_argument("--workflows", nargs="*", help="names in example_workflows/ (default: every toy_* workflow)")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.outdir)
    names = args.workflows or R.toy_workflow_names()
    failed, rows = 0, []
    t_start = time.time()
    with ComfyServer(out) as srv:
        print(f"ComfyUI running headless at {srv.url}; images go to {out}", flush=True)
        info = srv.get("/object_info")
        for name in names:
            t0 = time.time()
            try:
                _, paths, err = R.run_workflow(srv, R.load(name), info)
            except Exception as e:  # a rejected prompt: report it and go on with the others
                paths, err = [], f"{type(e).__name__}: {e}"
            if err or not paths:
                failed += 1
                print(f"  {name}: FAILED {err or 'no images'}", flush=True)
                continue
            rows.append((name, paths))
            where = os.path.join(os.path.dirname(paths[0]), f"{name}_*.png")
            print(f"  {name}: {len(paths)} images in {time.time() - t0:.0f} s -> {where}", flush=True)
    if rows:
        sheet = R.contact_sheet(rows, os.path.join(out, "contact_sheet.png"))
        print(f"contact sheet: {sheet}")
    print(
        f"done in {time.time() - t_start:.0f} s: {len(names) - failed} workflows ran, {failed} failed; images in {out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
