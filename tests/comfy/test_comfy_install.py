"""The pack installed the way ComfyUI-Manager installs it: the repository's files in custom_nodes/, requirements.txt
pip-installed, nothing else. ComfyUI then starts in a process where no other `pila` is importable (this
repository's editable install and PYTHONPATH are removed), so the nodes can only work through the bundled copy."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PILA_NODES = {"PILAAdapterLoader", "PILAPhysicsLabelParser", "PILAExpertRouter", "PILAFlowCorrection",
              "PILAFlowCorrectionSampler", "PILAFlowCorrectionSamplerWan22", "PILAExpertMaps"}

# Runs ComfyUI's main.py after making sure no `pila` can be imported from outside the pack.
LAUNCH = r"""
import importlib.util, os, runpy, sys
# setuptools' editable installs hook a finder class into sys.meta_path; drop those and any path entry holding pila
sys.meta_path[:] = [f for f in sys.meta_path
                    if "editable" not in (getattr(f, "__module__", "") + getattr(f, "__name__", "")).lower()]
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or os.getcwd(), "pila"))]
sys.path_importer_cache.clear()
print("install-test: pila importable before start:", importlib.util.find_spec("pila") is not None, flush=True)
import torch
if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
    # PyPI's torchvision is a CUDA build; ComfyUI imports it at start. Define its two op schemas on CPU torch.
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
sys.path.insert(0, COMFY)
sys.argv = ["main.py"] + ARGS
runpy.run_path("main.py", run_name="__main__")
"""


def copy_pack(dest: Path) -> None:
    """What `git clone` of this repository gives (tracked files, plus new files not yet committed), from the
    working tree."""
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                       capture_output=True, text=True)
    if r.returncode != 0:  # not a git checkout (an unpacked archive): copy the tree without caches
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "runs", "test-artifacts"))
        return
    for rel in filter(None, r.stdout.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def test_manager_style_install_starts_in_comfyui(comfyui_path, tmp_path, start_comfy):
    base = tmp_path / "base"
    pack = base / "custom_nodes" / "comfyui-pila"
    pack.mkdir(parents=True)
    copy_pack(pack)
    assert (pack / "__init__.py").is_file() and (pack / "pila" / "__init__.py").is_file()

    # Manager: `pip install -r requirements.txt` in the pack folder. --no-index --dry-run: succeeds only when every
    # requirement is already satisfied here (no network, nothing changed); the constraint keeps torch as it is.
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"torch=={torch.__version__.split('+')[0]}\n")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-c", str(constraints),
                        "-r", str(pack / "requirements.txt")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"requirements.txt is not satisfiable in ComfyUI's environment:\n{r.stdout}\n{r.stderr}"
    assert "Would install" not in r.stdout, r.stdout

    code_for = lambda args: f"COMFY = {str(comfyui_path)!r}\nARGS = {args!r}\n" + LAUNCH  # noqa: E731
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log_path = tmp_path / "server.log"
    with start_comfy(code_for, comfyui_path, base, log_path, env) as server:
        info = server.get("/object_info")
        log = log_path.read_text(errors="replace")
        assert "install-test: pila importable before start: False" in log, \
            f"another pila was importable, so this test would not show the bundled copy works:\n{log[:3000]}"
        pack_lines = [ln for ln in log.splitlines() if ln.rstrip().endswith(str(pack))]
        assert pack_lines, f"ComfyUI did not report loading {pack}; log tail:\n{log[-4000:]}"
        assert not any("IMPORT FAILED" in ln for ln in pack_lines), "\n".join(pack_lines) + "\n" + log[-4000:]
        missing = PILA_NODES - set(info)
        assert not missing, f"nodes missing from /object_info: {sorted(missing)}; log tail:\n{log[-4000:]}"
