"""Thumbnails of the example workflows (ComfyUI's template browser and the registry show
example_workflows/<name>.jpg next to <name>.json), and the README's picture of a real graph.

- A toy workflow (example_workflows/toy_*.json) runs on a headless ComfyUI server; its thumbnail is a grid of
  the images it made.
- A Stable Diffusion workflow needs weights this project cannot ship, so it cannot run here: its thumbnail is a
  screenshot of the graph as ComfyUI's own frontend draws it (headless Chromium through the dev kit,
  devkit/browser.py), loaded from the .json as a user's drag and drop would.
- `--readme-graph NAME` also writes docs/images/graph_NAME.png: the whole frontend with the toy workflow NAME
  loaded and queued from the page (its Save Image node shows what it made).

Not shipped.

    .venv/bin/python -m scripts.make_workflow_thumbnails [NAME ...] [--readme-graph NAME]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

from devkit import ROOT
from devkit import workflow_run as R
from devkit.comfy_server import ComfyServer

MAX_BYTES = 100_000
CELL = 128  # px per image in the grid (the toy images are 128 px: Toy Decode upscale 4)
GRAPH_WIDTH = 960  # px of a graph thumbnail
MARGIN = (100, 160)  # canvas px left of and above the graph (room for the frontend's menus and queue bar)
IMAGES = os.path.join(ROOT, "docs", "images")


def example_names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(R.EXAMPLES) if f.endswith(".json"))


def save_jpeg(im, out_path: str) -> int:
    """`im` as a JPEG under MAX_BYTES (the quality lowered as needed); returns its size."""
    for quality in (88, 80, 72, 64, 56, 48):
        im.save(out_path, "JPEG", quality=quality, optimize=True)
        if os.path.getsize(out_path) < MAX_BYTES:
            break
    return os.path.getsize(out_path)


def save_thumbnail(paths: list[str], out_path: str) -> int:
    """A JPEG grid of the images (about square, 5 columns for 10), under MAX_BYTES; returns its size."""
    cols = 5 if len(paths) == 10 else math.ceil(math.sqrt(len(paths)))
    return save_jpeg(R.image_grid(paths, cols=cols, cell=CELL), out_path)


def show_graph(page, workflow: dict, name: str) -> list[float]:
    """Load `workflow` into the page's frontend at zoom 1 (litegraph draws every title and widget there), the
    window sized to the whole graph; returns the graph's bounds in page px [x0, y0, x1, y1]."""
    page.setup_graph(False)
    b = page.js(
        """async ([wf, name]) => {
        await app.loadGraphData(wf, true, false, name);
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        const th = LiteGraph.NODE_TITLE_HEIGHT;
        for (const n of app.graph.nodes) {
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - th);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        return [x0, y0, x1, y1];
    }""",
        [workflow, name],
    )
    mx, my = MARGIN
    page.page.set_viewport_size({"width": int(b[2] - b[0]) + 2 * mx, "height": int(b[3] - b[1]) + my + 90})
    page.page.wait_for_timeout(300)
    page.js(
        """([x0, y0, mx, my]) => {
        app.canvas.show_info = false;  // the frame-time overlay
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [mx - x0, my - y0];
        app.canvas.setDirty(true, true);
    }""",
        [b[0], b[1], mx, my],
    )
    page.page.wait_for_timeout(800)  # a few frames: the pack's schedule plots draw after their route answers
    return [mx, my, mx + b[2] - b[0], my + b[3] - b[1]]


def queue_and_wait(page, timeout_ms: int = 300_000):
    """Queue the loaded graph from the page (the Run button's call) and wait until its Save Image node shows
    the images it made."""
    page.js("async () => { await app.queuePrompt(0, 1); }")
    page.wait(
        "() => app.graph.nodes.some((n) => n.type === 'SaveImage' && n.imgs?.length > 0 "
        "&& n.imgs.every((i) => i.complete))",
        timeout=timeout_ms,
    )
    page.js("() => app.canvas.setDirty(true, true)")
    page.page.wait_for_timeout(500)


def graph_thumbnail(page, workflow: dict, name: str, out_path: str) -> int:
    from PIL import Image

    x0, y0, x1, y1 = show_graph(page, workflow, name)
    shot = os.path.join(tempfile.mkdtemp(prefix="graph-shot-"), f"{name}.png")
    page.page.screenshot(path=shot, clip={"x": x0 - 16, "y": y0 - 16, "width": x1 - x0 + 32, "height": y1 - y0 + 32})
    with Image.open(shot) as im:
        im = im.convert("RGB")
        im = im.resize((GRAPH_WIDTH, round(im.height * GRAPH_WIDTH / im.width)), Image.LANCZOS)
        return save_jpeg(im, out_path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="workflow names (default: every example workflow)")
    ap.add_argument("--out", default=R.EXAMPLES, help="folder for the .jpg files")
    ap.add_argument("--readme-graph", metavar="NAME", help="also write docs/images/graph_NAME.png")
    ap.add_argument("--no-thumbnails", action="store_true", help="only the --readme-graph picture")
    args = ap.parse_args(argv)
    names = [] if args.no_thumbnails else (args.names or example_names())
    toy = set(R.toy_workflow_names())
    failed = 0
    with ComfyServer(tempfile.mkdtemp(prefix="workflow-thumbnails-")) as srv:
        info = srv.get("/object_info")
        browser = page = None
        for name in names:
            t0 = time.time()
            out = os.path.join(args.out, f"{name}.jpg")
            if name in toy:
                _, paths, err = R.run_workflow(srv, R.load(name), info)
                if err or not paths:
                    failed += 1
                    print(f"{name}: FAILED {err or 'no images'}")
                    continue
                size = save_thumbnail(paths, out)
                print(f"{name}: {len(paths)} images in {time.time() - t0:.0f} s -> {out} ({size // 1000} kB)")
                continue
            if page is None:
                browser, page = _browser(srv)
            size = graph_thumbnail(page, R.load(name), name, out)
            print(f"{name}: graph screenshot in {time.time() - t0:.0f} s -> {out} ({size // 1000} kB)")
        if args.readme_graph:
            if page is None:
                browser, page = _browser(srv)
            show_graph(page, R.load(args.readme_graph), args.readme_graph)
            queue_and_wait(page)
            path = os.path.join(IMAGES, f"graph_{args.readme_graph}.png")
            page.page.screenshot(path=path)
            print(f"README graph: {path} ({os.path.getsize(path) // 1000} kB)")
        if browser is not None:
            page.page.close()
            browser.close()
            _PLAYWRIGHT.pop().stop()
    return 1 if failed else 0


_PLAYWRIGHT = []


def _browser(srv):
    """Headless Debian Chromium (the browser tests' launch) on a page of the server's frontend."""
    from playwright.sync_api import sync_playwright

    from devkit.browser import BROWSER_ARGS, CHROMIUM, Page

    pw = sync_playwright().start()
    _PLAYWRIGHT.append(pw)
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
    return browser, Page(browser, srv)


if __name__ == "__main__":
    sys.exit(main())
