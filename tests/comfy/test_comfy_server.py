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
    options = object_info["PILAAdapterLoader"]["input"]["required"]["adapter_name"][1]["options"]
    assert {"not_an_adapter.safetensors", "tiny_pila.safetensors"} <= set(options)


# ---- end to end on the CPU ------------------------------------------------------------------------------------
WAN = "tiny_wan21_t2v.safetensors"
ADAPTER = "tiny_pila.safetensors"


def expected_simple_sigmas(steps: int, shift: float = 8.0) -> list[float]:
    """ComfyUI's "simple" schedule on a discrete-flow model with `shift` (independent re-derivation)."""
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    table = shift * t / (1 + (shift - 1) * t)
    ss = len(table) / steps
    return [float(table[-(1 + int(x * ss))]) for x in range(steps)] + [0.0]


def base_graph(tag: str, *, steps: int = 4, seed: int = 3, width: int = 64, length: int = 9) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN, "weight_dtype": "default"}},
        "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": 8.0}},
        "pos": {"class_type": "PILATestConditioning", "inputs": {"seed": 1, "tokens": 12}},
        "neg": {"class_type": "PILATestConditioning", "inputs": {"seed": 2, "tokens": 5}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo",
                   "inputs": {"width": width, "height": 64, "length": length, "batch_size": 1}},
        "adapter": {"class_type": "PILAAdapterLoader", "inputs": {"adapter_name": ADAPTER, "device": "auto", "dtype": "auto"}},
        "router": {"class_type": "PILAExpertRouter", "inputs": {
            "adapter": ["adapter", 0], "top_k": 4, "prior_strength": 2.0, "temperature": 2.0, "exclude": "",
            "steps": "all", "strength": 1.0, "gate_floor": 0.05}},
        "ksampler": {"class_type": "KSampler", "inputs": {
            "model": ["shift", 0], "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["ksampler", 0], "filename_prefix": f"latents/{tag}"}},
    }


def with_pila(g: dict, *, strength: float = 1.0, diagnostics: bool = True, steps: str = "all",
              model_from=("shift", 0)) -> dict:
    g = json.loads(json.dumps(g))
    g["router"]["inputs"].update(strength=strength, steps=steps)
    g["pila"] = {"class_type": "PILAFlowCorrection", "inputs": {
        "model": list(model_from), "adapter": ["adapter", 0], "routing": ["router", 0], "positive": ["pos", 0],
        "diagnostics": diagnostics}}
    g["ksampler"]["inputs"]["model"] = ["pila", 0]
    g["maps"] = {"class_type": "PILAExpertMaps", "inputs": {"model": ["pila", 0], "samples": ["ksampler", 0], "max_steps": 8}}
    return g


def saved_latent(server, entry: dict, node: str = "save") -> torch.Tensor:
    item = entry["outputs"][node]["latents"][0]
    return load_file(str(server.base / "output" / item["subfolder"] / item["filename"]))["latent_tensor"]


def ui_json(entry: dict, node: str):
    return json.loads(entry["outputs"][node]["text"][0])


def test_correction_runs_once_per_model_call_with_the_expected_sigma(comfy_server):
    g = with_pila(base_graph("once"))
    g["count"] = {"class_type": "PILATestCallCounter", "inputs": {"model": ["pila", 0], "name": "once"}}
    g["ksampler"]["inputs"]["model"] = ["count", 0]
    g["log"] = {"class_type": "PILATestCallLog", "inputs": {"samples": ["ksampler", 0], "name": "once"}}
    g["show_maps"] = {"class_type": "PreviewImage", "inputs": {"images": ["maps", 0]}}
    g["show_weights"] = {"class_type": "PreviewImage", "inputs": {"images": ["maps", 1]}}
    entry = comfy_server.ok(g)
    rec = ui_json(entry, "maps")
    model_calls = ui_json(entry, "log")  # sigmas seen by an outer APPLY_MODEL wrapper of another pack
    calls = rec["calls"]
    assert len(calls) == len(model_calls) >= 4, (calls, model_calls)
    assert all(c["applied"] for c in calls)
    flat = [s for c in calls for s in c["sigma"]]
    assert flat == pytest.approx([s for call in model_calls for s in call], abs=1e-6)
    rows = sorted(r for c in calls for r in c["rows"])
    assert rows.count("cond") == rows.count("uncond") == 4, "both CFG rows are corrected at every step"
    expect = expected_simple_sigmas(4)
    by_step = {}
    for c in calls:
        by_step.setdefault(c["step"], set()).update(c["sigma"])
    assert sorted(by_step) == [1, 2, 3, 4]
    for step, sigmas in by_step.items():
        assert sorted(sigmas) == pytest.approx([expect[step - 1]] * len(sigmas), abs=1e-5), (step, sigmas, expect)
    # Figure 7 maps: one image per corrected call; Figure 6 weights: one image
    assert len(entry["outputs"]["show_maps"]["images"]) == len(calls)
    assert len(entry["outputs"]["show_weights"]["images"]) == 1


def test_strength_zero_is_bit_exact_and_strength_one_changes_the_result(comfy_server):
    plain = saved_latent(comfy_server, comfy_server.ok(base_graph("plain")))
    zero = saved_latent(comfy_server, comfy_server.ok(with_pila(base_graph("zero"), strength=0.0)))
    one = saved_latent(comfy_server, comfy_server.ok(with_pila(base_graph("one"), strength=1.0, diagnostics=False)))
    assert plain.shape == (1, 16, 3, 8, 8)
    assert torch.equal(zero, plain), "strength 0 must reproduce the unpatched result bit for bit"
    assert (one - plain).abs().max() > 1e-4, "strength 1 must change the result"
    assert torch.isfinite(one).all()


def test_step_range_counts_denoising_steps(comfy_server):
    entry = comfy_server.ok(with_pila(base_graph("range", steps=5), steps="2-3,5"))
    calls = ui_json(entry, "maps")["calls"]
    applied = sorted({c["step"] for c in calls if c["applied"]})
    skipped = sorted({c["step"] for c in calls if not c["applied"]})
    assert applied == [2, 3, 5] and skipped == [1, 4]


def test_stacks_with_model_sampling_a_second_wrapper_and_easycache(comfy_server):
    g = with_pila(base_graph("stack", steps=4))
    # another pack's APPLY_MODEL wrapper below PILA, EasyCache (a TeaCache-like cache) above it
    g["count"] = {"class_type": "PILATestCallCounter", "inputs": {"model": ["shift", 0], "name": "stack"}}
    g["pila"]["inputs"]["model"] = ["count", 0]
    g["cache"] = {"class_type": "EasyCache", "inputs": {"model": ["pila", 0], "reuse_threshold": 0.2,
                                                         "start_percent": 0.15, "end_percent": 0.95, "verbose": False}}
    g["ksampler"]["inputs"]["model"] = ["cache", 0]
    g["log"] = {"class_type": "PILATestCallLog", "inputs": {"samples": ["ksampler", 0], "name": "stack"}}
    entry = comfy_server.ok(g)
    calls = ui_json(entry, "maps")["calls"]
    assert len(calls) == len(ui_json(entry, "log")) >= 1
    assert torch.isfinite(saved_latent(comfy_server, entry)).all()
    # ModelSamplingSD3 after the correction (the order must not matter for a wrapper)
    g2 = with_pila(base_graph("stack2"), model_from=("unet", 0))
    g2["shift"]["inputs"]["model"] = ["pila", 0]
    g2["ksampler"]["inputs"]["model"] = ["shift", 0]
    g2["maps"]["inputs"]["model"] = ["shift", 0]
    calls2 = ui_json(comfy_server.ok(g2), "maps")["calls"]
    assert sorted({c["step"] for c in calls2}) == [1, 2, 3, 4]


def test_wan22_dual_model_sampler_switches_at_the_boundary(comfy_server):
    g = base_graph("wan22", steps=6)
    g["unet_b"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan21_t2v_b.safetensors", "weight_dtype": "default"}}
    g["shift_b"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet_b", 0], "shift": 8.0}}
    del g["ksampler"]
    g["sampler"] = {"class_type": "PILAFlowCorrectionSamplerWan22", "inputs": {
        "model_high_noise": ["shift", 0], "model_low_noise": ["shift_b", 0], "adapter": ["adapter", 0],
        "routing": ["router", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
        "seed": 3, "steps": 6, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple", "switch_sigma": 0.875,
        "diagnostics": True}}
    g["save"]["inputs"]["samples"] = ["sampler", 0]
    g["maps"] = {"class_type": "PILAExpertMaps", "inputs": {"model": ["sampler", 1], "samples": ["sampler", 0], "max_steps": 8}}
    entry = comfy_server.ok(g)
    calls = ui_json(entry, "maps")["calls"]
    expect = expected_simple_sigmas(6)
    n_high = sum(s >= 0.875 for s in expect[:-1])
    assert 0 < n_high < 6
    assert sorted({c["step"] for c in calls}) == list(range(1, 7)), "steps count across both experts"
    for c in calls:
        assert c["sigma"][0] == pytest.approx(expect[c["step"] - 1], abs=1e-5)
    assert {c["run"] for c in calls if c["step"] <= n_high} != {c["run"] for c in calls if c["step"] > n_high}
    assert torch.isfinite(saved_latent(comfy_server, entry)).all()


def test_wan22_two_ksampler_advanced_graph_runs(comfy_server):
    """The Wan 2.2 template layout: one PILA correction per expert, two KSamplerAdvanced."""
    g = with_pila(base_graph("wan22adv", steps=4))
    g["unet_b"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan21_t2v_b.safetensors", "weight_dtype": "default"}}
    g["pila_b"] = {"class_type": "PILAFlowCorrection", "inputs": {
        "model": ["unet_b", 0], "adapter": ["adapter", 0], "routing": ["router", 0], "positive": ["pos", 0], "diagnostics": False}}
    common = {"add_noise": "enable", "noise_seed": 3, "steps": 4, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple",
              "positive": ["pos", 0], "negative": ["neg", 0]}
    g["ksampler"] = {"class_type": "KSamplerAdvanced", "inputs": {**common, "model": ["pila", 0], "latent_image": ["latent", 0],
                     "start_at_step": 0, "end_at_step": 2, "return_with_leftover_noise": "enable"}}
    g["ksampler_b"] = {"class_type": "KSamplerAdvanced", "inputs": {**common, "add_noise": "disable", "model": ["pila_b", 0],
                       "latent_image": ["ksampler", 0], "start_at_step": 2, "end_at_step": 10000,
                       "return_with_leftover_noise": "disable"}}
    g["save"]["inputs"]["samples"] = ["ksampler_b", 0]
    entry = comfy_server.ok(g)
    assert len(ui_json(entry, "maps")["calls"]) == 2  # the high-noise half: steps 1-2
    assert torch.isfinite(saved_latent(comfy_server, entry)).all()


def test_unservable_model_and_bad_adapter_give_clear_errors(comfy_server):
    g = with_pila(base_graph("bad48"))
    g["unet"]["inputs"]["unet_name"] = "tiny_wan22_5b_48ch.safetensors"
    err = comfy_server.run(g)["error"]
    assert err and "48-channel" in err[0][1]["exception_message"], err
    assert err[0][1]["node_type"] == "PILAFlowCorrection"
    g = with_pila(base_graph("badfile"))
    g["adapter"]["inputs"]["adapter_name"] = "not_an_adapter.safetensors"
    r = comfy_server.post("/prompt", {"prompt": g, "client_id": "badfile"})  # refused before anything runs
    errors = r["node_errors"]["adapter"]["errors"]
    assert len(errors) == 1 and errors[0]["extra_info"]["input_name"] == "adapter_name", errors
    assert "not a safetensors file" in errors[0]["details"], errors


def test_sampler_node_and_label_parser(comfy_server):
    try:
        from pila.labels import parse  # noqa: F401
    except ImportError as e:
        pytest.skip(f"pila.labels is not available yet ({e})")
    g = base_graph("sampler")
    g["parser"] = {"class_type": "PILAPhysicsLabelParser", "inputs": {
        "prompt": "a glass of water spills and splashes over a hot stove, steam rises", "parser": "default",
        **{k: "auto" for k in ("rigid_body", "elastic", "fluid", "compressible_flow", "phase_change", "collision",
                               "thermal")}, "optical": "on"}}
    g["router"]["inputs"]["labels"] = ["parser", 0]
    del g["ksampler"]
    g["sampler"] = {"class_type": "PILAFlowCorrectionSampler", "inputs": {
        "model": ["shift", 0], "adapter": ["adapter", 0], "routing": ["router", 0], "positive": ["pos", 0],
        "negative": ["neg", 0], "latent_image": ["latent", 0], "seed": 3, "steps": 3, "cfg": 5.0,
        "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0, "diagnostics": True}}
    g["save"]["inputs"]["samples"] = ["sampler", 0]
    g["maps"] = {"class_type": "PILAExpertMaps", "inputs": {"model": ["sampler", 1], "samples": ["sampler", 0], "max_steps": 8}}
    entry = comfy_server.ok(g)
    shown = entry["outputs"]["parser"]["text"][0]
    assert "Optical" in shown and "Fluid" in shown, shown
    assert len(ui_json(entry, "maps")["calls"]) == 3
