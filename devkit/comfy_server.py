"""Start a real headless ComfyUI server with Guidance Lab (and the demo nodes) and talk to it.

Used by the demo runner (scripts/run_demo.py) and the server tests. Not shipped.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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


def link_custom_nodes():
    """The pack and the demo nodes, linked into ComfyUI's custom_nodes folder."""
    cn = os.path.join(COMFY, "custom_nodes")
    os.makedirs(cn, exist_ok=True)
    for name, src in (("guidance-lab", ROOT), ("guidance-lab-demo", os.path.join(ROOT, "scripts", "demo_nodes"))):
        dst = os.path.join(cn, name)
        if not os.path.lexists(dst):
            os.symlink(src, dst)


class ComfyServer:
    def __init__(self, output_dir: str, port: int | None = None, log_path: str | None = None,
                 extra_args: list[str] | None = None):
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])  # more ComfyUI command-line options
        self.output_dir = os.path.abspath(output_dir)
        self.log_path = log_path or os.path.join(self.output_dir, "comfyui-server.log")
        self.proc = None
        self.client_id = uuid.uuid4().hex

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0):
        link_custom_nodes()
        os.makedirs(self.output_dir, exist_ok=True)
        self.log = open(self.log_path, "w")
        cmd = [sys.executable, os.path.join(COMFY, "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--output-directory", self.output_dir, "--disable-auto-launch",
               "--database-url", "sqlite:///:memory:", *self.extra_args]
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


if __name__ == "__main__":  # manual use: python -m devkit.comfy_server OUTDIR
    with ComfyServer(sys.argv[1] if len(sys.argv) > 1 else "out") as srv:
        print("ComfyUI at", srv.url, "- Ctrl-C to stop")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
