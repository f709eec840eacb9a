"""Headless Chromium against a running ComfyUI server, for the browser tests: the page object with console and
network error capture, and what a fresh offline ComfyUI's own frontend logs (so that anything else fails)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request

from . import ROOT
from . import frontends as FE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = os.path.join(ROOT, "test-artifacts", "web")

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

OURS = re.compile(r"guidance[_-]?lab", re.I)  # console text: the pack's files, routes, node types, extension name
# failed requests: the pack's files and routes only (/extensions/guidance-lab/, /guidance_lab/); both frontends
# also ask the registry which pack provides each node type of a loaded workflow
# (https://api.comfy.org/comfy-nodes/GuidanceLabTerm/node), which fails offline and is not the pack's doing
OUR_URLS = re.compile(r"guidance[_-]lab", re.I)

# Console errors that ComfyUI 0.3.75's frontend (1.32.9) logs on a fresh, offline install with no custom
# nodes at all (checked with --disable-all-custom-nodes): 404s of user files that do not exist yet
# (user.css, userdata/workflows, comfy.templates.json), api.comfy.org being unreachable, and a
# TypeError inside the frontend's own settings store while GraphView loads. Anything else fails.
COMFY_NOISE = [
    re.compile(r"^Failed to load resource: the server responded with a status of 404 \(Not Found\)$"),
    re.compile(r"^Failed to load resource: net::ERR_NAME_NOT_RESOLVED$"),
    re.compile(r"^TypeError: Cannot read properties of undefined \(reading 'id'\)\n\s+at onChange \(.*/assets/index-"),
    # On a fresh install (CI), switching Comfy.VueNodes.Enabled off logs this; seen with
    # --disable-all-custom-nodes too, so it is the frontend's own, not this pack's.
    re.compile(r"^Attempted to cleanup event listeners for graph that was never set up$"),
]
# The newest frontend (1.58) on ComfyUI 0.3.75 (also with --disable-all-custom-nodes): it asks the job list
# of newer servers (GET /api/jobs, not in 0.3.75: 404) for its queue and history panels.
NEWER_FRONTEND_NOISE = [
    re.compile(r"^\[Jobs API\] Error fetching jobs: JobsApiError: Failed to fetch jobs: 404\n"),
    re.compile(r"^Failed to fetch queue: JobsApiError: Failed to fetch jobs: 404\n"),
]


# One frontend's own console errors, by version. 1.49.6 (ComfyUI 0.33.0's pinned one) logs this from its settings
# store while the page loads (a computed value reads app.rootGraph before the graph exists; seen with
# --disable-all-custom-nodes on 0.33.0 too, with that stack), so it is the frontend's, not this pack's.
VERSION_NOISE = {
    "1.49.6": [re.compile(r"^ComfyApp graph accessed before initialization$")],
}


@contextlib.contextmanager
def launched():
    """Debian's Chromium, headless, through playwright, for a module's browser tests; the tests are skipped, with
    what installs it, where either is missing."""
    import pytest

    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"Debian chromium is not installed ({CHROMIUM}); scripts/setup.sh installs it (apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed (requirements-dev.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


def tree_args(work: str) -> list[str]:
    """ComfyUI command-line options that make a dev-kit server load this checkout's pack where the ComfyUI tree is
    a farm of links into another tree (a git worktree's .comfyui, whose main.py links to the main checkout's):
    ComfyUI finds its folders from main.py's real path, so without --base-directory it would load the other
    checkout's pack. The user, temp and input folders go to `work`. Nothing where the tree is a real one."""
    from .comfy_server import COMFY

    if not os.path.islink(os.path.join(COMFY, "main.py")):
        return []
    args = ["--base-directory", COMFY]
    for option, sub in (("--user-directory", "user"), ("--temp-directory", "temp"), ("--input-directory", "input")):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
        args += [option, os.path.join(work, sub)]
    return args


def frontend_noise(frontend):
    return (
        COMFY_NOISE
        + (NEWER_FRONTEND_NOISE if frontend.name != "pinned" else [])
        + VERSION_NOISE.get(frontend.version, [])
    )


class Page:
    """A ComfyUI page with console and network error capture."""

    def __init__(self, browser, server):
        self.frontend = getattr(server, "frontend", None) or FE.pinned()
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        # the frontend's "try Nodes 2.0" / "prefer the legacy design?" banners, dismissed as a user would
        self.page.add_init_script(
            "localStorage.setItem('vueNodesBannerDismissed', 'true');"
            "localStorage.setItem('comfy.vueNodesMigration.dismissed', 'true');"
        )
        self.console, self.failed = [], []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", f"{e}\n{getattr(e, 'stack', '')}")))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append((r.status, r.url)))
        self.page.on("requestfailed", lambda r: self.failed.append((r.failure, r.url)))
        # A fresh ComfyUI (as in CI) opens its workflow-templates dialog over the canvas on the first
        # visit; a user who has been there before has this setting, so the page opens on the canvas.
        req = urllib.request.Request(
            server.url + "/settings/Comfy.TutorialCompleted",
            data=b"true",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=30).close()
        self.page.goto(server.url, wait_until="load")
        self.page.wait_for_function("() => !!(window.app?.graph && window.LiteGraph && app.canvas)", timeout=90_000)
        self.page.wait_for_function(
            "() => !!(app.extensionManager?.setting && LiteGraph.registered_node_types['GuidanceLabSchedule'])",
            timeout=60_000,
        )
        # the frontend we meant to test is the one the page runs
        assert self.js("() => window.__COMFYUI_FRONTEND_VERSION__") == self.frontend.version, self.frontend
        # litegraph's deprecation warnings (input.link in 1.58, ...) are logged once per page, whoever caused
        # them first; record every one whose stack passes through the pack's code
        self.js("""() => {
            window.__guidanceLabDeprecated = [];
            const logged = new Set();
            LiteGraph.alwaysRepeatWarnings = true;
            LiteGraph.onDeprecationWarning = [(msg) => {
                const stack = new Error().stack ?? "";
                if (/guidance[_-]?lab/i.test(stack)) window.__guidanceLabDeprecated.push(`${msg}\\n${stack}`);
                if (!logged.has(msg)) { logged.add(msg); console.warn(msg); }
            }];
        }""")

    def js(self, expr, arg=None):
        return self.page.evaluate(expr, arg)

    def wait(self, expr, arg=None, timeout=20_000):
        self.page.wait_for_function(expr, arg=arg, timeout=timeout)

    def errors(self, since=(0, 0)):
        """(ours, others): console errors/page errors mentioning the pack, and every other one."""
        errs = [(t, m) for t, m in self.console[since[0] :] if t in ("error", "pageerror")]
        ours = [m for _, m in errs if OURS.search(m)]
        ours += [f"{s} {u}" for s, u in self.failed[since[1] :] if OUR_URLS.search(u)]
        others = [m for _, m in errs if m not in ours]
        return ours, others

    def mark(self):
        """Where the console and failed-request logs stand now (for check_console(since=...))."""
        return len(self.console), len(self.failed)

    def check_console(self, since=(0, 0)):
        """No console error of ours, no unexplained one, no warning of ours (since a mark(), or at all)."""
        ours, others = self.errors(since)
        assert ours == [], ours
        noise = frontend_noise(self.frontend)
        unexplained = [m for m in others if not any(p.search(m) for p in noise)]
        assert unexplained == [], unexplained
        assert not [m for t, m in self.console[since[0] :] if t == "warning" and OURS.search(m)]
        assert self.js("() => window.__guidanceLabDeprecated") == [], "the pack uses a deprecated litegraph API"

    def setup_graph(self, vue: bool):
        assert not self.js("() => !!document.querySelector('.p-dialog-mask')"), "a dialog covers the canvas"
        self.js(
            """async (vue) => {
            const s = app.extensionManager.setting;
            await s.set("Comfy.VueNodes.Enabled", vue);
            await s.set("Comfy.Minimap.Visible", false);
            app.graph.clear();
            app.canvas.ds.offset = [0, 0];
            app.canvas.ds.scale = 1;
            app.canvas.setDirty(true, true);
        }""",
            vue,
        )

    def add_node(self, node_type, x, y):
        return self.js(
            """([t, x, y]) => {
            const n = LiteGraph.createNode(t);
            n.pos = [x, y];
            app.graph.add(n);
            app.canvas.setDirty(true, true);
            return n.id;
        }""",
            [node_type, x, y],
        )

    def fetches(self, node_id):
        return self.js("(id) => app.graph.getNodeById(id).__guidanceLabPlot.fetches", node_id)

    def wait_plot(self, node_id, after=0):
        """Wait until the node's plot has drawn a route answer newer than `after` fetches; return its state."""
        self.wait(
            "([id, k]) => { const s = app.graph.getNodeById(id)?.__guidanceLabPlot; "
            "return s && s.fetches > k && s.canvas.clientWidth > 0; }",
            [node_id, after],
        )
        self.page.wait_for_timeout(150)  # the frame after drawing
        return self.js(
            """(id) => {
            const s = app.graph.getNodeById(id).__guidanceLabPlot;
            return {fetches: s.fetches, error: s.error, series: s.series};
        }""",
            node_id,
        )

    def plot_png(self, node_id) -> bytes:
        handle = self.page.evaluate_handle("(id) => app.graph.getNodeById(id).__guidanceLabPlot.canvas", node_id)
        return handle.screenshot()

    def widget_center(self, node_id, name):
        """Page coordinates of a widget's centre (classic canvas renderer)."""
        return self.js(
            """([id, name]) => {
            const n = app.graph.getNodeById(id);
            const w = n.widgets.find((w) => w.name === name);
            const h = w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT;
            const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + h / 2]);
            const r = app.canvas.canvas.getBoundingClientRect();
            return [r.left + cx, r.top + cy, app.canvas.ds.convertOffsetToCanvas([n.pos[0], 0])[0] + r.left,
                    n.size[0] * app.canvas.ds.scale];
        }""",
            [node_id, name],
        )

    def screenshot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        path = os.path.join(ARTIFACTS, f"{self.frontend.name}-{name}")
        self.page.screenshot(path=path)
        return path

    def log(self):
        """The browser console, failed requests and the pack's deprecated-API uses (with stacks) so far."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            deprecated = self.js("() => window.__guidanceLabDeprecated ?? []")
        except PlaywrightError as e:  # a closed or crashed page
            deprecated = [f"(not read: {e})"]
        return {
            "frontend": str(self.frontend),
            "console": self.console,
            "failed": [list(x) for x in self.failed],
            "deprecated": deprecated,
        }

    def close(self, name: str):
        """Keep the browser console and failed requests of this test in test-artifacts/web/."""
        os.makedirs(ARTIFACTS, exist_ok=True)
        with open(os.path.join(ARTIFACTS, f"console-{re.sub(r'[^A-Za-z0-9_-]+', '_', name)}.json"), "w") as f:
            json.dump(self.log(), f, indent=1)
        self.page.close()
