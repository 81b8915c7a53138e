"""The pack inside a real ComfyUI server: import, /object_info, API-format prompts end to end on the CPU."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

PILA_NODES = {
    "PILAAdapterLoader": ["adapter_name", "device", "dtype"],
    "PILAPhysicsLabelParser": ["prompt", "parser", "rigid_body", "optical"],
    "PILAExpertRouter": ["adapter", "labels", "top_k", "prior_strength", "temperature", "exclude", "steps", "strength",
                         "gate_floor"],
    "PILAFlowCorrection": ["model", "adapter", "routing", "positive", "physics", "diagnostics"],
    "PILAFlowCorrectionSampler": ["model", "adapter", "routing", "positive", "negative", "latent_image", "seed", "steps",
                                  "cfg", "sampler_name", "scheduler", "denoise"],
    "PILAFlowCorrectionSamplerWan22": ["model_high_noise", "model_low_noise", "adapter", "routing", "positive",
                                       "negative", "latent_image", "seed", "steps", "cfg", "switch_sigma"],
    "PILAExpertMaps": ["model", "samples", "max_steps"],
}


def inputs_of(info: dict) -> dict:
    return {**info["input"].get("required", {}), **info["input"].get("optional", {})}


def test_pack_imports_and_lists_every_node(comfy_server, object_info):
    log = comfy_server.log()
    failed = [ln for ln in log.splitlines() if "IMPORT FAILED" in ln and "custom_nodes" in ln]
    assert not failed, f"{failed}\n{log[-4000:]}"
    assert "custom_nodes/comfyui-pila" in log, "the pack was not loaded at all"
    for node, names in PILA_NODES.items():
        assert node in object_info, f"{node} missing from /object_info"
        info = object_info[node]
        assert info["category"] == "PILA"
        got = inputs_of(info)
        for n in names:
            assert n in got, f"{node} lacks input {n}"
            assert got[n][1].get("tooltip"), f"{node}.{n} has no tooltip"
        assert all(info["output_tooltips"]), f"{node} has an output without tooltip"
    assert object_info["PILAAdapterLoader"]["input"]["required"]["adapter_name"][1]["options"] == [
        "not_an_adapter.safetensors", "tiny_pila.safetensors"]
