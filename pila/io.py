"""Adapter files: safetensors only (never pickle), with the config, bank contract and format version in the
metadata (docs/method.md §2). Every bad file is a ValueError that names the file, the mismatch and what to do.
"""
from __future__ import annotations

from io import BytesIO
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes, save_file

from .bank import check_contract, contract_json
from .config import PILAConfig

FORMAT = "pila-adapter"
FORMAT_VERSION = 1
_RESERVED = ("format", "format_version", "config", "bank_contract")


def save_adapter(path: str | os.PathLike, adapter, *, extra_metadata: dict | None = None) -> Path:
    """Write the adapter's state dict (its own dtypes) and metadata to a .safetensors file. Extra metadata
    values that are not strings are stored as JSON."""
    path = Path(path)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": adapter.config.to_json(),
            "bank_contract": contract_json()}
    for k, v in (extra_metadata or {}).items():
        assert k not in _RESERVED, f"extra metadata may not overwrite {k!r}"
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    state = {k: t.detach().contiguous().cpu() for k, t in adapter.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)  # never leave a half-written adapter under the real name
    return path


def file_signature(path: str | os.PathLike) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, None when it does not exist: how a loader notices a changed adapter file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read_header(path: Path, data: bytes | None = None) -> tuple[dict, dict[str, tuple[str, list[int]]]]:
    """(metadata, {key: (dtype, shape)}) from the file's JSON header (or from `data`, the file's bytes already
    read), with clear errors for non-adapter files."""
    if data is None and not path.is_file():
        raise ValueError(f"{path}: no such adapter file. Check the path (adapters are .safetensors files).")
    size = path.stat().st_size if data is None else len(data)
    with (open(path, "rb") if data is None else BytesIO(data)) as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        first = fh.read(1)
        if n <= 1 or n > 100 * 2**20 or first != b"{":
            raise ValueError(f"{path}: not a safetensors file (no safetensors header). PILA adapters are "
                             ".safetensors files written by pila.save_adapter; pickled .pt/.ckpt files are not loaded.")
        if 8 + n > size:
            raise ValueError(f"{path}: the file is truncated ({size} bytes, its header alone needs {8 + n}). "
                             "It was probably cut off while copying or downloading; copy it again.")
        try:
            header = json.loads(first + fh.read(n - 1))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file (unreadable header: {e}).") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object).")
    meta = header.pop("__metadata__", None) or {}
    tensors, end = {}, 0
    for k, info in header.items():
        try:
            tensors[k] = (info["dtype"], list(info["shape"]))
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise ValueError(f"{path}: not a safetensors file (bad entry for {k!r}).") from None
    if 8 + n + end > size:
        raise ValueError(f"{path}: the file is truncated ({size} bytes, its header needs {8 + n + end}). "
                         "It was probably cut off while copying or downloading; copy it again.")
    return meta, tensors


def _check_meta(path: Path, meta: dict, tensors: dict) -> PILAConfig:
    fmt = meta.get("format")
    if fmt != FORMAT:
        keys = ", ".join(list(tensors)[:3])
        raise ValueError(
            f"{path}: not a PILA adapter ({'no format in its metadata' if fmt is None else f'metadata format {fmt!r}'}"
            f", expected {FORMAT!r}); it holds "
            f"{len(tensors)} tensors such as {keys}. It looks like another model file (e.g. a Wan checkpoint or "
            "a LoRA): load it with its own loader, and pick a file written by pila.save_adapter here.")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ValueError(f"{path}: PILA adapter format version {version!r}, this PILA reads version {FORMAT_VERSION}. "
                         "Install the PILA version that wrote the file, or re-export it with this one.")
    if "bank_contract" not in meta or "config" not in meta:
        raise ValueError(f"{path}: PILA adapter metadata lacks 'bank_contract' or 'config'; the file is damaged.")
    try:
        check_contract(meta["bank_contract"], source=str(path))
    except json.JSONDecodeError:
        raise ValueError(f"{path}: unreadable bank contract in the metadata; the file is damaged.") from None
    try:
        return PILAConfig.from_json(meta["config"])
    except (json.JSONDecodeError, TypeError, AssertionError, ValueError) as e:
        raise ValueError(f"{path}: bad adapter config in the metadata ({e}). "
                         "Use a file written by this PILA.") from None


def read_adapter_info(path: str | os.PathLike) -> dict:
    """{"config": dict, "contract": dict, "format_version": int, "extras": {...}, "tensors": n, "params": n}
    without building the model (for the loader node's UI)."""
    path = Path(path)
    meta, tensors = _read_header(path)
    config = _check_meta(path, meta, tensors)
    extras = {}
    for k, v in meta.items():
        if k in _RESERVED:
            continue
        try:
            extras[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            extras[k] = v
    params = sum(int(torch.Size(shape).numel()) for _, shape in tensors.values())
    return {"config": json.loads(config.to_json()), "contract": json.loads(meta["bank_contract"]),
            "format_version": int(meta["format_version"]), "extras": extras, "tensors": len(tensors), "params": params}


def load_adapter(path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Build a PILAAdapter from a file's config and load its tensors (bit-exact in the saved dtypes unless
    `dtype` is given). The file is read into memory once (not memory-mapped): overwriting or truncating it later
    leaves the loaded adapter unchanged. Missing/unexpected keys and shape mismatches are ValueErrors."""
    from .adapter import PILAAdapter

    path = Path(path)
    try:  # the whole file into memory, never memory-mapped: the loaded adapter must not change with its file
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such adapter file. Check the path (adapters are .safetensors files).") from None
    except OSError as e:
        raise ValueError(f"{path}: could not read the file ({e}).") from None
    meta, tensors = _read_header(path, data)
    config = _check_meta(path, meta, tensors)
    model = PILAAdapter(config)
    expected = {k: list(t.shape) for k, t in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad = [f"{k}: file {tensors[k][1]}, model {expected[k]}"
           for k in expected if k in tensors and tensors[k][1] != expected[k]]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if bad:
            parts.append(f"shape mismatches {bad[:5]}{' ...' if len(bad) > 5 else ''}")
        raise ValueError(f"{path}: the tensors do not fit the adapter its config describes ({'; '.join(parts)}). "
                         "The file is damaged or was written by another PILA version.")
    try:
        state = {k: t.clone() for k, t in load_safetensors_bytes(data).items()}  # own storage, not the bytes buffer
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{path}: could not read the tensors ({e}). The file is damaged; copy it again.") from None
    model.load_state_dict(state, strict=True, assign=True)  # assign: keep the file's dtypes bit-exact
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.to(device=device).eval()
