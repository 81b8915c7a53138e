"""Fixtures for the tests against a real ComfyUI checkout ($COMFYUI_PATH or ~/ComfyUI).

One ComfyUI server per test session (`comfy_server`): CPU, 127.0.0.1 on a free port, a temporary
--base-directory whose custom_nodes/ holds a link to this repository (the pack) and a test-only node file,
models/diffusion_models a tiny random Wan 2.1 T2V (dim 256, 2 layers) and a 48-channel Wan 2.2 5B-like one,
models/pila a tiny adapter written with pila.save_adapter.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STARTUP_TIMEOUT = float(os.environ.get("PILA_COMFY_STARTUP_TIMEOUT", 420))


def find_comfyui() -> Path | None:
    for cand in (os.environ.get("COMFYUI_PATH"), "~/ComfyUI"):
        if cand:
            p = Path(cand).expanduser()
            if (p / "main.py").is_file() and (p / "comfy").is_dir():
                return p
    return None


def comfyui_or_skip() -> Path:
    p = find_comfyui()
    if p is None:
        pytest.skip("no ComfyUI checkout: set COMFYUI_PATH (or put one at ~/ComfyUI) to run the ComfyUI tests")
    try:
        import aiohttp  # noqa: F401  (ComfyUI's own dependencies)
        import torchsde  # noqa: F401
    except ImportError as e:
        pytest.skip(f"ComfyUI's Python dependencies are not installed ({e}); run `bash scripts/setup.sh --test`")
    return p


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    return comfyui_or_skip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_adapter(seed: int = 0):
    from pila import PILAAdapter

    torch.manual_seed(seed)
    a = PILAAdapter(hidden=16)
    with torch.no_grad():  # the decoder's last conv is zero-initialised: make the correction visible
        a.decoder.out.weight.normal_(0, 0.05)
        a.decoder.out.bias.normal_(0, 0.05)
    return a


LAUNCH = """
import os, runpy, sys
sys.path.insert(0, {repo!r})
from pila.compat import ensure_torchvision_importable
ensure_torchvision_importable()
sys.path.remove({repo!r})
sys.path.insert(0, {comfy!r})
sys.argv = ["main.py"] + {args!r}
runpy.run_path("main.py", run_name="__main__")
"""


class ComfyServer:
    def __init__(self, url: str, base: Path, log: Path, proc: subprocess.Popen):
        self.url, self.base, self.log_path, self.proc = url, base, log, proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return {"http_error": e.code, **json.loads(e.read() or b"{}")}

    def run(self, prompt: dict, timeout: float = 180) -> dict:
        """Queue an API-format prompt, wait for it, return its history entry (raises with the error text)."""
        r = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        if "prompt_id" not in r:
            raise AssertionError(f"prompt rejected: {json.dumps(r)[:3000]}")
        pid = r["prompt_id"]
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get(f"/history/{pid}")
            if pid in h and h[pid].get("status", {}).get("completed") is not None:
                entry = h[pid]
                if entry["status"].get("status_str") == "error":
                    entry["error"] = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {pid} did not finish in {timeout} s; server log tail:\n{self.log()[-3000:]}")

    def ok(self, prompt: dict, timeout: float = 180) -> dict:
        entry = self.run(prompt, timeout)
        if entry.get("error"):
            raise AssertionError(f"prompt failed: {json.dumps(entry['error'])[:3000]}")
        return entry


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory, comfyui_path) -> Path:
    """The server's --base-directory with the pack, the test nodes and tiny models."""
    from pila import save_adapter

    base = tmp_path_factory.mktemp("comfy_base")
    nodes_dir = base / "custom_nodes"
    nodes_dir.mkdir()
    (nodes_dir / "comfyui-pila").symlink_to(REPO, target_is_directory=True)
    shutil.copy(HERE / "pila_test_nodes.py", nodes_dir / "pila_test_nodes.py")
    dm = base / "models" / "diffusion_models"
    dm.mkdir(parents=True)
    specs = [str(dm / "tiny_wan21_t2v.safetensors"), f"{dm / 'tiny_wan21_t2v_b.safetensors'}:seed=1",
             f"{dm / 'tiny_wan22_5b_48ch.safetensors'}:channels=48,dim=128,layers=1"]
    subprocess.run([sys.executable, str(HERE / "tiny_wan.py"), *specs, "--comfyui", str(comfyui_path)],
                   check=True, capture_output=True, timeout=300)
    save_adapter(base / "models" / "pila" / "tiny_pila.safetensors", tiny_adapter())
    # the shipped workflows' model files, so that their file combos are legal here (empty: never loaded)
    for wf in sorted((REPO / "workflows").glob("*.json")):
        for node in json.loads(wf.read_text())["nodes"]:
            for m in node.get("properties", {}).get("models", []):
                (base / "models" / m["directory"]).mkdir(parents=True, exist_ok=True)
                (base / "models" / m["directory"] / m["name"]).touch()
            if node["type"] == "PILAAdapterLoader":  # a real (tiny) adapter under the workflow's adapter name
                shutil.copy(base / "models" / "pila" / "tiny_pila.safetensors",
                            base / "models" / "pila" / node["widgets_values"][0])
    (base / "models" / "pila" / "not_an_adapter.safetensors").write_bytes(b"\x00" * 64)
    # LoadImage's file in the I2V template (ComfyUI ships input/example.png; the test server has its own input/)
    (base / "input").mkdir(exist_ok=True)
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(base / "input" / "example.png")  # noise: the test VAE encodes it to a non-zero latent
    return base


@contextlib.contextmanager
def running_comfy(code_for, comfyui_path: Path, base: Path, log: Path, env: dict | None = None):
    """Start ComfyUI (`python -c code_for(args)` in the checkout) on a free port with `--base-directory base`, wait
    until it answers, yield a ComfyServer, and stop it at exit."""
    port = free_port()
    args = ["--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
            "--disable-api-nodes", "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code_for(args)], cwd=comfyui_path, stdout=fh,
                                stderr=subprocess.STDOUT, env=env)
    server = ComfyServer(f"http://127.0.0.1:{port}", base, log, proc)
    t0 = time.time()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode} during start; log tail:\n{server.log()[-4000:]}")
            try:
                server.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.time() - t0 > STARTUP_TIMEOUT:
                pytest.fail(f"ComfyUI did not start in {STARTUP_TIMEOUT:.0f} s; log tail:\n{server.log()[-4000:]}")
            time.sleep(0.5)
        server.startup_s = time.time() - t0
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def start_comfy():
    """`running_comfy`, for a test that needs a ComfyUI server of its own (e.g. a Manager-style install)."""
    return running_comfy


@pytest.fixture(scope="session")
def comfy_server(comfy_base, comfyui_path):
    code_for = lambda args: LAUNCH.format(repo=str(REPO), comfy=str(comfyui_path), args=args)  # noqa: E731
    with running_comfy(code_for, comfyui_path, comfy_base, comfy_base / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")
