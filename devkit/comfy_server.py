"""Start a real headless ComfyUI server with Guidance Lab (and the demo nodes) and talk to it.

Used by the demo runner (scripts/run_demo.py) and the server tests. Not shipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from . import ROOT, python_env

COMFY = os.path.abspath(os.environ.get("GL_COMFYUI", os.path.join(ROOT, ".comfyui")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PACKS = {"guidance-lab": ROOT, "guidance-lab-demo": os.path.join(ROOT, "scripts", "demo_nodes")}


def _option(args: list[str], name: str) -> str | None:
    """The value of ComfyUI command-line option `name` in `args` (its last one), or None."""
    for i in range(len(args) - 1, -1, -1):
        if args[i] == name and i + 1 < len(args):
            return args[i + 1]
        if args[i].startswith(name + "="):
            return args[i].split("=", 1)[1]
    return None


def server_folders(work: str, extra_args: list[str]) -> list[str]:
    """The command-line options that keep a dev-kit server out of the ComfyUI tree it runs (the user's
    .comfyui): packs the tree's custom_nodes folder lacks (the demo nodes; the pack itself where set-up did not
    link it) are linked into `work`/custom_nodes and added through an extra-model-paths YAML in `work` (its
    `custom_nodes:` key), and the server's user (frontend settings), temp (previews) and input folders (uploads;
    ComfyUI makes input/3d at start) are in `work` too. A caller that gives --base-directory owns those folders: only the packs missing from
    its custom_nodes are added. Nothing is written into the tree, so a server that is killed leaves nothing
    there (`work` is a temporary folder)."""
    base = _option(extra_args, "--base-directory")
    tree_nodes = os.path.join(os.path.abspath(base) if base else COMFY, "custom_nodes")
    nodes = os.path.join(work, "custom_nodes")
    os.makedirs(nodes, exist_ok=True)
    for name, src in PACKS.items():
        if not os.path.lexists(os.path.join(tree_nodes, name)):
            os.symlink(src, os.path.join(nodes, name))
    yaml_path = os.path.join(work, "devkit_paths.yaml")
    with open(yaml_path, "w") as f:
        f.write(f"guidance_lab_devkit:\n  custom_nodes: {json.dumps(nodes)}\n")
    args = ["--extra-model-paths-config", yaml_path]
    for option, sub in (("--user-directory", "user"), ("--temp-directory", "temp"), ("--input-directory", "input")):
        if base is None and _option(extra_args, option) is None:
            os.makedirs(os.path.join(work, sub), exist_ok=True)
            args += [option, os.path.join(work, sub)]
    return args


class ComfyServer:
    def __init__(
        self, output_dir: str, port: int | None = None, log_path: str | None = None, extra_args: list[str] | None = None
    ):
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])  # more ComfyUI command-line options
        self.output_dir = os.path.abspath(output_dir)
        self.log_path = log_path or os.path.join(self.output_dir, "comfyui-server.log")
        self.proc = None
        self.work = None  # the server's own folders (server_folders), removed by stop()
        self.client_id = uuid.uuid4().hex

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0):
        os.makedirs(self.output_dir, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="gl-server-")
        self.log = open(self.log_path, "w")
        cmd = [
            sys.executable,
            os.path.join(COMFY, "main.py"),
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--output-directory",
            self.output_dir,
            "--disable-auto-launch",
            "--database-url",
            "sqlite:///:memory:",
            *server_folders(self.work, self.extra_args),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, cwd=COMFY, stdout=self.log, stderr=subprocess.STDOUT, env=python_env())
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s; log: {self.log_path}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()
        if getattr(self, "work", None):
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post_prompt(self, prompt: dict):
        """(status, body): 200 with prompt_id, or 400 with ComfyUI's validation error."""
        data = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                entry = h[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        status, body = self.post_prompt(prompt)
        if status != 200:
            raise RuntimeError(f"prompt rejected ({status}): {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout)


def images_of(entry: dict, output_dir: str) -> list[str]:
    paths = []
    for out in entry.get("outputs", {}).values():
        for img in out.get("images", []):
            paths.append(os.path.join(output_dir, img.get("subfolder", ""), img["filename"]))
    return paths


def error_of(entry: dict) -> str | None:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('exception_type')}: {data.get('exception_message')}"
    return None


# "   0.1 seconds (IMPORT FAILED): /path/folder", after a log prefix on newer ComfyUI ("[INFO]" in colour)
_IMPORT_LINE = re.compile(r"(?:^|\s)[0-9.]+ seconds(?: \((?P<status>[A-Z ]+)\))?: (?P<path>.+?)\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def quick_test_log(tree: str, pythonpath: str = "", extra_args: list[str] | tuple = ()) -> str:
    """The log of ComfyUI's own start-up check of `tree` (main.py --quick-test-for-ci: imports ComfyUI's nodes and
    every custom-node folder, then exits), run as a user would run it: PYTHONPATH holds only `pythonpath` (a
    side tree's pinned packages), not the dev kit, so the pack is imported by ComfyUI alone. ComfyUI exits 0
    even when a custom-node folder fails: read the log with import_problem."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [
        sys.executable,
        "main.py",
        "--cpu",
        "--quick-test-for-ci",
        "--database-url",
        "sqlite:///:memory:",
        *extra_args,
    ]
    r = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ComfyUI's start-up check of {tree} exited with {r.returncode}:\n{r.stdout[-4000:]}")
    return r.stdout


def import_problem(log: str, pack_dir: str) -> str | None:
    """What went wrong loading the custom-node folder `pack_dir` (as ComfyUI names it: the path in its
    custom_nodes folder, not the link's target), read from a ComfyUI start-up log; None when it loaded. ComfyUI
    ends its start-up with one line per folder, "0.1 seconds (IMPORT FAILED): /path/folder": the folder's own
    line is the one whose path is exactly `pack_dir`, so a failing folder whose name merely starts with the
    pack's (guidance-lab-demo) is not taken for the pack. A failure quotes ComfyUI's "Cannot import" line."""
    pack_dir = os.path.normpath(pack_dir)
    status = None
    for line in log.splitlines():
        m = _IMPORT_LINE.search(_ANSI.sub("", line))
        if m and os.path.normpath(m["path"]) == pack_dir:
            status = m["status"] or "loaded"
    if status == "loaded":
        return None
    if status is None:
        return f"ComfyUI did not try to load {pack_dir} (no line for it in its import times)"
    why = [line.strip() for line in log.splitlines() if f"Cannot import {pack_dir} module" in line]
    return f"ComfyUI reports {status} for {pack_dir}" + (f": {why[-1]}" if why else "")


def leftovers(tree: str) -> list[str]:
    """What is in `tree`'s custom_nodes folder besides ComfyUI's own files (plain files, their __pycache__) and
    the pack as set-up links it (guidance-lab -> this repository): a link or folder there is another pack, and
    the dev kit's servers must add none (server_folders); each entry says what it is."""
    nodes = os.path.join(tree, "custom_nodes")
    found = []
    for name in sorted(os.listdir(nodes)) if os.path.isdir(nodes) else []:
        path = os.path.join(nodes, name)
        if os.path.islink(path):
            target = os.path.realpath(path)
            if name == "guidance-lab" and target == os.path.realpath(ROOT):
                continue
            found.append(f"{path} -> {target}")
        elif os.path.isdir(path) and name != "__pycache__":
            found.append(f"{path} (folder)")
    return found


if __name__ == "__main__":  # manual use: python -m devkit.comfy_server OUTDIR
    with ComfyServer(sys.argv[1] if len(sys.argv) > 1 else "out") as srv:
        print("ComfyUI at", srv.url, "- Ctrl-C to stop")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
