"""PILA Adapter Loader: a .safetensors adapter from models/pila, with device and dtype choice."""
from __future__ import annotations

import json

import torch

import comfy.model_management as mm
import folder_paths
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io, ui

from pila import load_adapter, read_adapter_info

from .common import CATEGORY, AdapterHandle, AdapterHolder, AdapterType

DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    return "\n".join(lines)


class PILAAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAAdapterLoader",
            display_name="PILA Adapter Loader",
            category=CATEGORY,
            description="Loads a PILA physics adapter (.safetensors) from models/pila and shows its configuration.",
            inputs=[
                io.Combo.Input("adapter_name", options=folder_paths.get_filename_list("pila"),
                               tooltip="Adapter file in models/pila (written by pila.save_adapter)."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                               tooltip="auto: placed on the GPU with the diffusion model while sampling and offloaded "
                               "with it; cpu: always on the CPU (slow, copies latents every step)."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Weights dtype. auto: as saved in the file. bf16/fp16 halve memory."),
            ],
            outputs=[AdapterType.Output(display_name="adapter", tooltip="The loaded PILA adapter.")],
        )

    @classmethod
    def execute(cls, adapter_name: str, device: str, dtype: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("pila", adapter_name)
        info = read_adapter_info(path)  # a ValueError that names the file and the fix for a bad file
        module = load_adapter(path, device="cpu", dtype=DTYPES[dtype])
        if device == "cpu":
            load_dev = offload_dev = torch.device("cpu")
        else:
            load_dev, offload_dev = mm.get_torch_device(), mm.unet_offload_device()
        holder = AdapterHolder(module, offload_dev)
        if offload_dev != torch.device("cpu"):
            holder.to(offload_dev)
        patcher = ModelPatcher(holder, load_device=load_dev, offload_device=offload_dev)
        text = describe(adapter_name, info, load_dev, module.dtype)
        return io.NodeOutput(AdapterHandle(module, patcher, adapter_name, info), ui=ui.PreviewText(text))
