"""Weights in the layouts users hold, detected from what the path contains (never pickle):

  - a single `.safetensors` file (ComfyUI: `models/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors`, ...);
  - a folder of shards with an index (the original Wan release: `diffusion_pytorch_model-0000k-of-0000n.safetensors`
    + `diffusion_pytorch_model.safetensors.index.json`, and its own `config.json`);
  - a diffusers folder: the pipeline root (`transformer/`, `vae/`, `text_encoder/`) or one component folder
    (`config.json` + `diffusion_pytorch_model*.safetensors`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

PICKLE = (".pth", ".pt", ".bin", ".ckpt")
FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
            if hasattr(torch, n))


def component_dir(path: str | Path, component: str) -> Path:
    """A diffusers pipeline root -> its `component` folder (transformer, vae, text_encoder); anything else as is."""
    path = Path(path)
    if path.is_dir() and (path / component / "config.json").is_file():
        return path / component
    return path


def read_state_dict(path: str | Path, *, what: str = "weights") -> dict[str, Tensor]:
    """Every tensor of a single file, of a sharded folder (through its index) or of a folder's safetensors."""
    from safetensors.torch import load_file
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}")
    if path.is_file():
        if path.suffix in PICKLE:
            raise ValueError(f"{path}: pickle checkpoints are not loaded (they can run code); use the .safetensors "
                             f"release of the {what} (ComfyUI's single file, or the diffusers folder)")
        return load_file(str(path))
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if indexes:
        shards = sorted(set(json.loads(indexes[0].read_text())["weight_map"].values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{indexes[0]} lists shards that are not in {path}: {missing[:4]}")
    else:
        shards = sorted(p.name for p in path.glob("*.safetensors"))
    if not shards:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE)
        hint = f" (only pickle files: {pickles[:3]}; use a .safetensors release)" if pickles else ""
        raise FileNotFoundError(f"no .safetensors weights for the {what} in {path}{hint}")
    sd: dict[str, Tensor] = {}
    for s in shards:
        sd.update(load_file(str(path / s)))
    return sd


def read_config(path: str | Path) -> dict | None:
    """The `config.json` beside a folder's weights, if any."""
    path = Path(path)
    cfg = path / "config.json" if path.is_dir() else None
    return json.loads(cfg.read_text()) if cfg is not None and cfg.is_file() else None


def upcast_fp8(sd: dict[str, Tensor], *, to: torch.dtype = torch.bfloat16, source: str = "") -> tuple[dict, bool]:
    """ComfyUI's fp8 files (plain, or 'scaled' with a `scale_weight` per matrix) -> `to`; (state dict, was fp8)."""
    if not any(v.dtype in FP8 for v in sd.values()):
        return sd, False
    sd = dict(sd)
    sd.pop("scaled_fp8", None)
    scales = {k[: -len("scale_weight")]: sd.pop(k) for k in [k for k in sd if k.endswith(".scale_weight")]}
    for k in [k for k in sd if k.endswith(".scale_input")]:
        sd.pop(k)
    out = {}
    for k, v in sd.items():
        if v.dtype in FP8:
            v = v.float()
            s = scales.get(k[: -len("weight")]) if k.endswith("weight") else None
            if s is not None:
                v = v * s.float()
            v = v.to(to)
        out[k] = v
    return out, True


def resolve_encoders(vae: str, t5: str, tokenizer: str = "") -> tuple[str, str, str]:
    """--vae / --t5 / --tokenizer as `training.cache` reads them (a single .safetensors file or one diffusers /
    transformers component folder): a diffusers pipeline root gives its `vae/`, `text_encoder/` and
    `tokenizer/spiece.model`; the original release's pickle files (`Wan2.1_VAE.pth`,
    `models_t5_umt5-xxl-enc-bf16.pth`) are refused with the files to use instead."""
    def pick(path: str, component: str, what: str, instead: str) -> str:
        if not path:
            return path
        p = component_dir(path, component)
        pickles = [p] if p.is_file() and p.suffix in PICKLE else (
            sorted(q for q in p.iterdir() if q.suffix in PICKLE) if p.is_dir() and not (p / "config.json").is_file()
            and not list(p.glob("*.safetensors")) else [])
        if pickles:
            raise ValueError(f"{pickles[0]}: the {what} as a pickle checkpoint is not loaded (it can run code); "
                             f"use {instead}")
        return str(p)
    vae_out = pick(vae, "vae", "Wan VAE", "ComfyUI's wan_2.1_vae.safetensors or the diffusers folder's vae/")
    t5_out = pick(t5, "text_encoder", "UMT5 encoder",
                  "ComfyUI's umt5_xxl_fp16.safetensors or the diffusers folder's text_encoder/")
    if t5 and not tokenizer and (Path(t5) / "tokenizer" / "spiece.model").is_file():
        tokenizer = str(Path(t5) / "tokenizer" / "spiece.model")
    return vae_out, t5_out, tokenizer
