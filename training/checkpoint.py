"""Resumable checkpoints: one safetensors file per stage (model, optimizer, RNG states, the step), written to a
temporary name and renamed; never pickle."""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import TrainConfig
from .distributed import Dist, _full_state
from .stages import StageModel


DS_TAG = "ckpt"  # DeepSpeed's checkpoint folder name; not "latest", the name of DeepSpeed's own pointer file


def save_checkpoint(path: Path, model: StageModel, opt: torch.optim.Optimizer, meta: dict, cfg: TrainConfig,
                    d: Dist, engine=None) -> None:
    """One safetensors file, written to a temp name and renamed: model, optimizer tensors, RNG states, and the
    JSON state (step, epoch, sampler position, optimizer param groups, python/numpy RNG scalars) in its metadata."""
    from safetensors.torch import save_file
    if engine is not None:  # DeepSpeed's own (sharded, torch.save) format; our state JSON beside it
        engine.save_checkpoint(str(path.parent / "deepspeed"), tag=DS_TAG, client_state={"pila": meta})
        if d.main:
            _atomic_text(path.with_suffix(".json"), json.dumps(dict(meta, config=asdict(cfg))))
        return
    model_sd, optim_sd = _full_state(model, opt, cfg, engine)
    if not d.main:
        return
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_sd.items()}
    opt_json = {"param_groups": optim_sd["param_groups"], "scalars": {}}
    for pid, st in optim_sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                opt_json["scalars"][f"{pid}.{k}"] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_state = random.getstate()
    tensors["rng.python"] = torch.tensor(py_state[1], dtype=torch.int64)
    meta = dict(meta, optimizer=opt_json, rng={"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                                               "python": [py_state[0], py_state[2]]}, config=asdict(cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"pila_train_state": json.dumps(meta)})
    if path.is_file():  # the previous checkpoint stays as the fallback for a damaged newest one
        os.replace(path, previous(path))
    os.replace(tmp, path)


def previous(path: Path) -> Path:
    """`ckpt.safetensors` -> `ckpt.prev.safetensors`, the checkpoint before the newest."""
    return path.with_name(path.stem + ".prev" + path.suffix)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated by a full disk, a copy cut short, ...)."""


def _read(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """(state JSON, every tensor) of one checkpoint, or CheckpointError naming the file."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = json.loads((fh.metadata() or {})["pila_train_state"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:  # SafetensorError, a missing metadata key, bad JSON: all mean the file is damaged
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    return meta, tensors


def resume(path: Path, model: StageModel, opt: torch.optim.Optimizer, cfg: TrainConfig, log=None) -> dict:
    """Load the newest readable checkpoint of a stage: `path`, else the one before it (`ckpt.prev.safetensors`).

    Neither readable: a CheckpointError that names the files and says how to restart the stage."""
    errors = []
    for p in (path, previous(path)):
        if not p.is_file():
            continue
        try:
            meta, tensors = _read(p)
        except CheckpointError as e:
            errors.append(str(e))
            if log is not None:
                log.warning("%s; trying the previous checkpoint", e)
            continue
        return load_checkpoint(p, model, opt, cfg, _state=(meta, tensors))
    raise CheckpointError(
        "cannot resume: " + "; ".join(errors) + f". No earlier readable checkpoint of this stage is left. "
        f"Delete {path.parent} to restart this stage from its beginning (finished earlier stages are kept), "
        "or copy an intact checkpoint back to " + str(path))


def load_checkpoint(path: Path, model: StageModel, opt: torch.optim.Optimizer, cfg: TrainConfig, *,
                    _state: tuple[dict, dict] | None = None) -> dict:
    """Restore model, optimizer and RNG states from one checkpoint file (read all of it first: a damaged file
    raises CheckpointError before anything is changed)."""
    meta, tensors = _state or _read(path)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    oj = meta["optimizer"]
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            pid, name = k[len("optim."):].rsplit(".", 1)
            state.setdefault(_pid(pid), {})[name] = v
    for k, v in oj["scalars"].items():
        pid, name = k.rsplit(".", 1)
        state.setdefault(_pid(pid), {})[name] = v
    optim_sd = {"state": state, "param_groups": oj["param_groups"]}
    from torch.distributed.tensor import DTensor, distribute_tensor

    def like(full: Tensor, ref: Tensor) -> Tensor:  # re-shard a full tensor the way `ref` is (FSDP2) or move it
        full = full.to(device=ref.device, dtype=ref.dtype)
        return distribute_tensor(full, ref.device_mesh, ref.placements) if isinstance(ref, DTensor) else full

    m = model.module if hasattr(model, "module") else model
    ref = m.state_dict()
    m.load_state_dict({k: like(v, ref[k]) for k, v in model_sd.items()}, strict=True)
    plist = [p for g in opt.param_groups for p in g["params"]]
    optim_sd["state"] = {pid: {n: (like(t, plist[pid]) if torch.is_tensor(t) and n != "step" else t) for n, t in st.items()}
                         for pid, st in state.items()}
    opt.load_state_dict(optim_sd)
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    r = meta["rng"]
    np.random.set_state((r["numpy"][0], tensors["rng.numpy"].numpy().astype(np.uint32), *r["numpy"][1:]))
    random.setstate((r["python"][0], tuple(int(x) for x in tensors["rng.python"].tolist()), r["python"][1]))
    return meta


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pid(s: str):
    return int(s) if s.isdigit() else s
