"""The README's main job: start a headless ComfyUI with Guidance Lab, run the demo workflows
(stock KSampler + CFG patch, SamplerCustomAdvanced + CFG GUIDER, composable terms) on the
exact shapes model, and write the images to OUTDIR (default: out/)."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_server import ComfyServer, error_of, images_of  # noqa: E402
from demo_prompts import all_prompts  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("outdir", nargs="?", default="out")
    args = ap.parse_args()
    out = os.path.abspath(args.outdir)
    failed = 0
    with ComfyServer(out) as srv:
        print(f"ComfyUI running headless at {srv.url}; images go to {out}")
        for name, prompt in all_prompts().items():
            entry = srv.run(prompt)
            err = error_of(entry)
            if err:
                failed += 1
                print(f"  {name}: FAILED {err}")
                continue
            for path in images_of(entry, out):
                print(f"  {name}: {path}")
    print(f"done: {len(all_prompts()) - failed} workflows ran, {failed} failed; images in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
