"""PILA Adapter Loader: a .safetensors adapter from models/pila, with device and dtype choice."""
from __future__ import annotations

import json
import logging

import torch

import comfy.model_management as mm
import folder_paths
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io, ui

from pila import load_adapter, read_adapter_info
from pila.io import file_signature

from .common import CATEGORY, AdapterHandle, AdapterHolder, AdapterType

log = logging.getLogger("pila")

DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NO_WEIGHTS = ("No PILA adapter weights have been published: train one with the repository's training/ module "
              "(README, 'Getting an adapter') and put the .safetensors file into ComfyUI/models/pila.")
_LOADED: dict[str, tuple[int, int] | None] = {}  # full path -> (size, mtime_ns) of the file when it was read


def missing_adapter(adapter_name: str) -> str | None:
    """The message for an adapter name that has no file in models/pila, else None."""
    if folder_paths.get_full_path("pila", adapter_name or "") is not None:
        return None
    have = folder_paths.get_filename_list("pila")
    where = ", ".join(folder_paths.get_folder_paths("pila"))
    return (f"adapter file {adapter_name!r} is not in models/pila ({where}; "
            f"{'it holds ' + ', '.join(have[:5]) if have else 'it holds no .safetensors file'}). {NO_WEIGHTS}")


def describe(name: str, info: dict, device, dtype) -> str:
    cfg, contract = info["config"], info["contract"]
    slots = contract.get("slots", [])
    try:
        slot_text = " ".join(f"{s[0]}:{s[1]}" for s in slots) + f" ({contract.get('channels', '?')} ch)"
    except (TypeError, IndexError, KeyError):
        slot_text = json.dumps(slots)[:200]
    from pila import CATEGORIES
    lines = [
        f"{name}: {info['params'] / 1e6:.2f} M parameters, format v{info['format_version']}",
        f"hidden width {cfg['hidden']}, latent channels {cfg['latent_channels']}, text dim {cfg['text_dim']}",
        f"experts ({cfg['num_categories']}): {', '.join(CATEGORIES)}",
        f"router defaults: top-k {cfg['top_k']}, prior {cfg['prior_strength']}, temperature {cfg['temperature']}; "
        f"gate floor {cfg['gate_floor']}",
        f"bank contract v{contract.get('version', '?')}: {slot_text}",
        f"device {device}, dtype {str(dtype).replace('torch.', '')}",
    ]
    toy = info.get("extras", {}).get("toy")
    if toy:
        lines.insert(0, f"TOY ADAPTER ({toy if isinstance(toy, str) else 'quick start'}): it only fits the quick "
                     "start's tiny random Wan, not a real Wan model.")
    return "\n".join(lines)


class PILAAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAAdapterLoader",
            display_name="PILA Adapter Loader",
            category=CATEGORY,
            description="Loads a PILA physics adapter (.safetensors) from models/pila and shows its configuration. "
                        + NO_WEIGHTS,
            inputs=[
                io.Combo.Input("adapter_name", options=folder_paths.get_filename_list("pila"),
                               tooltip="Adapter file in models/pila (written by pila.save_adapter or the trainer). "
                               + NO_WEIGHTS + " The quick start's adapter is a toy that only fits its tiny model."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                               tooltip="auto: placed on the GPU with the diffusion model while sampling and offloaded "
                               "with it; cpu: always on the CPU (slow, copies latents every step)."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Weights dtype. auto: as saved in the file. bf16/fp16 halve memory."),
            ],
            outputs=[AdapterType.Output(display_name="adapter", tooltip="The loaded PILA adapter.")],
        )

    @classmethod
    def validate_inputs(cls, adapter_name: str):
        # before anything runs: a missing or unreadable adapter file is one message on adapter_name
        msg = missing_adapter(adapter_name)
        if msg is None:
            try:
                read_adapter_info(folder_paths.get_full_path("pila", adapter_name))  # the header only
            except ValueError as e:
                msg = str(e)
        return msg or True

    @classmethod
    def fingerprint_inputs(cls, adapter_name: str, **kwargs):
        # a changed file (size or mtime) re-runs the loader, which reloads it
        return file_signature(folder_paths.get_full_path("pila", adapter_name) or adapter_name)

    @classmethod
    def execute(cls, adapter_name: str, device: str, dtype: str) -> io.NodeOutput:
        msg = missing_adapter(adapter_name)
        if msg is not None:
            raise FileNotFoundError(f"PILA Adapter Loader: {msg}")
        path = folder_paths.get_full_path_or_raise("pila", adapter_name)
        signature = file_signature(path)
        changed = path in _LOADED and _LOADED[path] != signature
        info = read_adapter_info(path)  # a ValueError that names the file and the fix for a bad file
        module = load_adapter(path, device="cpu", dtype=DTYPES[dtype])  # read into memory: the file may change later
        _LOADED[path] = signature
        if changed:
            log.warning("PILA Adapter Loader: %s changed on disk since it was loaded (size/mtime); reloaded it.", path)
        if device == "cpu":
            load_dev = offload_dev = torch.device("cpu")
        else:
            load_dev, offload_dev = mm.get_torch_device(), mm.unet_offload_device()
        holder = AdapterHolder(module, offload_dev)
        if offload_dev != torch.device("cpu"):
            holder.to(offload_dev)
        patcher = ModelPatcher(holder, load_device=load_dev, offload_device=offload_dev)
        text = describe(adapter_name, info, load_dev, module.dtype)
        if changed:
            text = "reloaded: the file changed on disk since it was last loaded\n" + text
        return io.NodeOutput(AdapterHandle(module, patcher, adapter_name, info), ui=ui.PreviewText(text))
