"""The pack's root package imports without ComfyUI and without importing any ComfyUI module (pytest collection
and pip must work on a machine with no ComfyUI)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import asyncio, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("comfyui_pila", ROOT + "/__init__.py", submodule_search_locations=[ROOT])
mod = importlib.util.module_from_spec(spec)
sys.modules["comfyui_pila"] = mod
spec.loader.exec_module(mod)
comfy_like = sorted(k for k in sys.modules if k.split(".")[0] in
                    ("comfy", "comfy_api", "comfy_execution", "folder_paths", "execution", "server", "nodes",
                     "comfyui_pila.nodes"))
try:
    asyncio.run(mod.comfy_entrypoint())
    entry_error = None
except ImportError as e:
    entry_error = f"{type(e).__name__}: {e}"
import pila.patch, pila.steps, pila.diagnostics, pila.compat  # the ComfyUI-facing logic, importable without it
after_pila = sorted(k for k in sys.modules if k.split(".")[0] in ("comfy", "comfy_api", "folder_paths"))
print(json.dumps({"entrypoint": callable(getattr(mod, "comfy_entrypoint", None)), "after_pila": after_pila,
                  "legacy": hasattr(mod, "NODE_CLASS_MAPPINGS"), "comfy_modules": comfy_like,
                  "entry_error": entry_error}))
"""


def test_root_package_imports_without_comfyui():
    code = f"ROOT = {str(ROOT)!r}\n" + PROBE
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["entrypoint"], "the pack must expose comfy_entrypoint() (V3 API)"
    assert not out["legacy"], "NODE_CLASS_MAPPINGS beside comfy_entrypoint makes ComfyUI load only the legacy nodes"
    assert out["comfy_modules"] == [], f"importing the pack pulled in ComfyUI modules: {out['comfy_modules']}"
    # without ComfyUI the entry point fails cleanly on the missing ComfyUI module, not deep inside PILA
    assert out["entry_error"] and "comfy" in out["entry_error"], out
    assert out["after_pila"] == [], f"pila.patch & co. must not need ComfyUI: {out['after_pila']}"


STALE = r"""
import asyncio, importlib.util, json, sys
sys.path.insert(0, STALE_DIR)  # a stale `pila` first on the path, as a leftover pip install would be
if PREIMPORT:
    import pila as stale
    assert stale.STALE
spec = importlib.util.spec_from_file_location("comfyui_pila", ROOT + "/__init__.py", submodule_search_locations=[ROOT])
mod = importlib.util.module_from_spec(spec)
sys.modules["comfyui_pila"] = mod
spec.loader.exec_module(mod)
try:
    asyncio.run(mod.comfy_entrypoint())
except ImportError:
    pass  # no ComfyUI here: the nodes cannot import, the library has been loaded by then
import pila, pila.patch
print(json.dumps({"pila": pila.__file__, "patch": pila.patch.__file__, "stale": hasattr(pila, "STALE")}))
"""


def test_the_bundled_pila_wins_over_a_stale_installed_one(tmp_path):
    stale = tmp_path / "site" / "pila"
    stale.mkdir(parents=True)
    (stale / "__init__.py").write_text("STALE = True\n")
    (stale / "patch.py").write_text("raise ImportError('the stale copy was used')\n")
    for preimport in (False, True):
        code = f"ROOT = {str(ROOT)!r}\nSTALE_DIR = {str(stale.parent)!r}\nPREIMPORT = {preimport}\n" + STALE
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert not out["stale"], out
        assert Path(out["pila"]).resolve() == (ROOT / "pila" / "__init__.py").resolve(), out
        assert Path(out["patch"]).resolve() == (ROOT / "pila" / "patch.py").resolve(), out


def requirements(path: Path) -> list[str]:
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln]


def test_requirements_never_touch_torch_and_match_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    reqs = requirements(ROOT / "requirements.txt")
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}
    assert not names & {"torch", "torchvision", "torchaudio"}, f"requirements.txt must not list torch: {reqs}"
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert sorted(meta["project"]["dependencies"]) == sorted(reqs), \
        "pyproject's [project] dependencies and requirements.txt are the same runtime list"
    comfy = meta["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy), comfy
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["project"]["version"]), "the Registry needs a semver version"
    assert "comfyui" not in meta["project"]["name"].lower(), "the Registry advises a name without 'ComfyUI'"
