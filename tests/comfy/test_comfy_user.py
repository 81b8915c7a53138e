"""The pack as a ComfyUI user meets it, against a real server: bad inputs give one message on the right input before
anything samples, a missing or toy adapter says what it is, run warnings reach the node, a loaded adapter does not
depend on its file, and image-to-video graphs (WanImageToVideo, first-last-frame) are corrected on the 16-channel
noise latent only."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_comfy_server import ADAPTER, base_graph, expected_simple_sigmas, saved_latent, ui_json, with_pila

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def random_adapter(seed: int):
    from pila import PILAAdapter

    torch.manual_seed(seed)
    a = PILAAdapter(hidden=16)
    with torch.no_grad():  # a visible correction (the decoder's last conv starts at zero)
        a.decoder.out.weight.normal_(0, 0.05)
        a.decoder.out.bias.normal_(0, 0.05)
    return a


def refused(server, g: dict) -> dict:
    """POST a prompt that validation must refuse; returns {node: [errors]}."""
    r = server.post("/prompt", {"prompt": g, "client_id": "user-test"})
    assert "node_errors" in r and r["node_errors"], f"the prompt was not refused: {json.dumps(r)[:2000]}"
    return {k: v["errors"] for k, v in r["node_errors"].items()}


# ---- graph-time validation ---------------------------------------------------------------------------------------
def test_missing_adapter_is_one_message_on_adapter_name_before_anything_runs(comfy_server):
    g = with_pila(base_graph("noadapter"))
    g["adapter"]["inputs"]["adapter_name"] = "pila_nobody_published_this.safetensors"
    errors = refused(comfy_server, g)
    assert list(errors) == ["adapter"], errors
    (e,) = errors["adapter"]
    assert e["extra_info"]["input_name"] == "adapter_name"
    assert "No PILA adapter weights have been published" in e["details"] and "training/" in e["details"], e


def test_router_gives_one_message_on_steps_and_keeps_comfyui_range_checks(comfy_server):
    g = with_pila(base_graph("badsteps"), steps="1-x")
    errors = refused(comfy_server, g)
    assert [e["extra_info"]["input_name"] for e in errors["router"]] == ["steps"], errors
    assert "cannot read" in errors["router"][0]["details"]
    g = with_pila(base_graph("temp0"))
    g["router"]["inputs"]["temperature"] = 0.0
    errors = refused(comfy_server, g)
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors["router"]] == \
        [("value_smaller_than_min", "temperature")], errors


def test_toy_adapter_is_named_and_refused_before_sampling(comfy_server):
    from pila import PILAAdapter, save_adapter

    name = "toy_quickstart.safetensors"
    save_adapter(comfy_server.base / "models" / "pila" / name, PILAAdapter(hidden=16, text_dim=32),
                 extra_metadata={"toy": "quick start: trained against a tiny random Wan"})
    g = with_pila(base_graph("toy"))
    g["adapter"]["inputs"]["adapter_name"] = name
    entry = comfy_server.run(g)
    err = entry["error"][0][1]
    assert err["node_type"] == "PILAFlowCorrection", err  # before the KSampler ran
    msg = err["exception_message"]
    assert name in msg and "32-wide" in msg and "4096-wide" in msg and "toy" in msg, msg
    shown = entry["outputs"]["adapter"]["text"][0]
    assert shown.startswith("TOY ADAPTER"), shown


# ---- run warnings and the core start/end_percent convention ----------------------------------------------------
def test_step_range_that_matches_no_step_warns(comfy_server):
    entry = comfy_server.ok(with_pila(base_graph("nomatch", steps=4), steps="50-60"))
    assert not any(c["applied"] for c in ui_json(entry, "maps")["calls"])
    log = comfy_server.log()
    assert "PILA Flow Correction: the step range '50-60' match none of this run's steps 1..4" in log, log[-3000:]


def test_start_end_percent_select_steps_by_sigma_like_core_nodes(comfy_server):
    shift, start = 8.0, 0.4  # sigma_start 0.923: between the 4-step schedule's 0.96 and 0.889
    g = with_pila(base_graph("percent", steps=4))
    g["router"]["inputs"].update(start_percent=start, end_percent=1.0)
    calls = ui_json(comfy_server.ok(g), "maps")["calls"]
    # ModelSamplingDiscreteFlow.percent_to_sigma, re-derived: the shifted time at 1 - percent
    t = 1.0 - start
    sigma_start = shift * t / (1 + (shift - 1) * t)
    expect = [i + 1 for i, s in enumerate(expected_simple_sigmas(4)[:-1]) if s <= sigma_start]
    assert 0 < len(expect) < 4
    assert sorted({c["step"] for c in calls if c["applied"]}) == expect
    assert sorted({c["step"] for c in calls if not c["applied"]}) == [s for s in (1, 2, 3, 4) if s not in expect]


# ---- a loaded adapter does not depend on its file ----------------------------------------------------------------
def test_adapter_file_overwritten_and_truncated_under_the_running_server(comfy_server):
    from pila import save_adapter

    live = comfy_server.base / "models" / "pila" / "live.safetensors"
    original = (comfy_server.base / "models" / "pila" / ADAPTER).read_bytes()
    live.write_bytes(original)

    def graph(tag):
        g = with_pila(base_graph(tag), diagnostics=False)
        g["adapter"]["inputs"]["adapter_name"] = "live.safetensors"
        return g

    first = saved_latent(comfy_server, comfy_server.ok(graph("live1")))
    # another adapter copied over the file in place (same size; as `cp` does): noticed, reloaded, said so
    other = comfy_server.base / "other.safetensors"
    save_adapter(other, random_adapter(seed=1))
    time.sleep(0.01)
    with open(live, "r+b") as fh:
        fh.write(other.read_bytes())
        fh.truncate()
    entry = comfy_server.ok(graph("live2"))
    assert entry["outputs"]["adapter"]["text"][0].startswith("reloaded: the file changed on disk")
    assert "changed on disk since it was loaded" in comfy_server.log()
    assert not torch.equal(saved_latent(comfy_server, entry), first)
    # the file cut short in place: a clear message on the loader, the server lives on
    with open(live, "r+b") as fh:
        fh.truncate(len(original) // 2)
    errors = refused(comfy_server, graph("live3"))
    assert "truncated" in errors["adapter"][0]["details"], errors
    assert comfy_server.proc.poll() is None and comfy_server.get("/system_stats")
    # restored: the original weights again, bit for bit
    live.write_bytes(original)
    assert torch.equal(saved_latent(comfy_server, comfy_server.ok(graph("live4"))), first)


# ---- image to video ----------------------------------------------------------------------------------------------
I2V_MODELS = {  # file -> tiny_wan.py options
    "tiny_wan21_i2v.safetensors": "i2v=1",  # Wan 2.1 I2V 14B layout: image channels + CLIP vision
    "tiny_wan21_flf2v.safetensors": "i2v=1,flf=514",  # first-last-frame: CLIP tokens of both frames
    "tiny_wan22_i2v.safetensors": "in_dim=36",  # Wan 2.2 I2V A14B layout: image channels, no CLIP vision
}
VAE = "tiny_test_wan21_vae.safetensors"


@pytest.fixture(scope="module")
def i2v_models(comfy_server, comfyui_path):
    here = Path(__file__).resolve().parent
    dm = comfy_server.base / "models" / "diffusion_models"
    vae = comfy_server.base / "models" / "vae"
    vae.mkdir(parents=True, exist_ok=True)
    specs = [f"{dm / name}:{opts}" for name, opts in I2V_MODELS.items()]
    subprocess.run([sys.executable, str(here / "tiny_wan.py"), *specs, "--vae", str(vae / VAE),
                    "--comfyui", str(comfyui_path)], check=True, capture_output=True, timeout=300)
    return dm


def i2v_graph(tag: str, model: str, *, pila: bool, strength: float = 1.0, steps: int = 3) -> dict:
    g = base_graph(tag, steps=steps)
    g["unet"]["inputs"]["unet_name"] = model
    del g["latent"]
    g["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE}}
    g["image"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    size = {"vae": ["vae", 0], "width": 64, "height": 64, "length": 5, "batch_size": 1}
    if "flf2v" in model:
        g["cv_start"] = {"class_type": "PILATestClipVision", "inputs": {"seed": 5, "tokens": 257}}
        g["cv_end"] = {"class_type": "PILATestClipVision", "inputs": {"seed": 6, "tokens": 257}}
        g["i2v"] = {"class_type": "WanFirstLastFrameToVideo", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], **size, "start_image": ["image", 0],
            "end_image": ["image", 0], "clip_vision_start_image": ["cv_start", 0], "clip_vision_end_image": ["cv_end", 0]}}
    else:
        g["i2v"] = {"class_type": "WanImageToVideo", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], **size, "start_image": ["image", 0]}}
        if "wan21" in model:
            g["cv"] = {"class_type": "PILATestClipVision", "inputs": {"seed": 5, "tokens": 257}}
            g["i2v"]["inputs"]["clip_vision_output"] = ["cv", 0]
    g["ksampler"]["inputs"].update(positive=["i2v", 0], negative=["i2v", 1], latent_image=["i2v", 2])
    # a wrapper below PILA's logs what the model itself is called with
    g["shapes"] = {"class_type": "PILATestShapeLog", "inputs": {"model": ["shift", 0], "name": tag}}
    g["log"] = {"class_type": "PILATestCallLog", "inputs": {"samples": ["ksampler", 0], "name": tag}}
    if not pila:
        g["ksampler"]["inputs"]["model"] = ["shapes", 0]
        return g
    g = with_pila(g, strength=strength, model_from=("shapes", 0))
    g["pila"]["inputs"]["positive"] = ["i2v", 0]
    return g


@pytest.mark.parametrize("model", list(I2V_MODELS))
def test_image_to_video_is_corrected_on_the_noise_latent_only(comfy_server, i2v_models, model):
    tag = model.split(".")[0]
    plain = comfy_server.ok(i2v_graph(f"{tag}_plain", model, pila=False))
    zero = comfy_server.ok(i2v_graph(f"{tag}_zero", model, pila=True, strength=0.0))
    one = comfy_server.ok(i2v_graph(f"{tag}_one", model, pila=True, strength=1.0))
    lat_plain, lat_zero, lat_one = (saved_latent(comfy_server, e) for e in (plain, zero, one))
    assert lat_plain.shape == (1, 16, 2, 8, 8), "the sampled latent is the 16-channel noise latent"
    assert torch.equal(lat_zero, lat_plain), "strength 0 must reproduce the unpatched I2V result bit for bit"
    assert (lat_one - lat_plain).abs().max() > 1e-4 and torch.isfinite(lat_one).all()
    # the model below PILA gets the 16-channel x and the 20 image channels (4 mask + 16 latent) apart: PILA reads
    # and corrects x only, and every model call was corrected
    shapes = ui_json(one, "log")
    assert shapes and all(s == [16, 20] for s in shapes), shapes
    calls = ui_json(one, "maps")["calls"]
    assert len(calls) == len(shapes) and all(c["applied"] for c in calls)


def test_wan22_sampler_node_runs_image_to_video(comfy_server, i2v_models):
    """The Wan 2.2 I2V A14B template's layout: WanImageToVideo into the PILA Wan 2.2 sampler (both experts)."""
    model = "tiny_wan22_i2v.safetensors"
    g = i2v_graph("w22i2v", model, pila=True)
    del g["ksampler"], g["pila"]
    g["sampler"] = {"class_type": "PILAFlowCorrectionSamplerWan22", "inputs": {
        "model_high_noise": ["shapes", 0], "model_low_noise": ["shapes", 0], "adapter": ["adapter", 0],
        "routing": ["router", 0], "positive": ["i2v", 0], "negative": ["i2v", 1], "latent_image": ["i2v", 2],
        "seed": 3, "steps": 4, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple", "switch_sigma": 0.9,
        "diagnostics": True}}
    g["save"]["inputs"]["samples"] = ["sampler", 0]
    g["log"]["inputs"]["samples"] = ["sampler", 0]
    g["maps"] = {"class_type": "PILAExpertMaps", "inputs": {"model": ["sampler", 1], "samples": ["sampler", 0],
                                                             "max_steps": 8}}
    entry = comfy_server.ok(g)
    lat = saved_latent(comfy_server, entry)
    assert lat.shape == (1, 16, 2, 8, 8) and torch.isfinite(lat).all()
    assert all(s == [16, 20] for s in ui_json(entry, "log"))
    assert sorted({c["step"] for c in ui_json(entry, "maps")["calls"] if c["applied"]}) == [1, 2, 3, 4]


def test_nan_from_the_adapter_is_scrubbed_and_reported_once_per_run(comfy_server):
    from pila import save_adapter

    bad = random_adapter(seed=2)
    with torch.no_grad():
        bad.decoder.out.bias.fill_(float("nan"))
    save_adapter(comfy_server.base / "models" / "pila" / "nan_adapter.safetensors", bad)
    g = with_pila(base_graph("nan", steps=3), diagnostics=False)
    g["adapter"]["inputs"]["adapter_name"] = "nan_adapter.safetensors"
    before = comfy_server.log().count("non-finite (NaN/inf) dv values")
    lat = saved_latent(comfy_server, comfy_server.ok(g))
    assert torch.isfinite(lat).all(), "scrubbed: the sample stays finite"
    assert comfy_server.log().count("non-finite (NaN/inf) dv values") == before + 1, comfy_server.log()[-2000:]


def test_label_parser_llm_comes_from_models_llm_as_safetensors_only(comfy_server):
    lm = comfy_server.base / "models" / "LLM" / "pickled-lm"
    lm.mkdir(parents=True, exist_ok=True)
    (lm / "config.json").write_text("{}")
    (lm / "pytorch_model.bin").write_bytes(b"never unpickled")

    def graph(choice: str) -> dict:
        g = with_pila(base_graph(f"llm_{len(choice)}"), diagnostics=False)
        g["parser"] = {"class_type": "PILAPhysicsLabelParser", "inputs": {
            "prompt": "a ball falls into water", "parser": "llm", "llm_model": choice,
            **{k: "auto" for k in ("rigid_body", "elastic", "fluid", "compressible_flow", "phase_change", "collision",
                                   "thermal", "optical")}}}
        g["router"]["inputs"]["labels"] = ["parser", 0]
        return g

    # a path from a shared workflow is not a choice: refused before anything runs, on llm_model
    errors = refused(comfy_server, graph("../../../../etc"))
    assert [e["extra_info"]["input_name"] for e in errors["parser"]] == ["llm_model"], errors
    # a models/LLM folder with pickled weights only: refused with the reason, nothing unpickled
    err = comfy_server.run(graph("pickled-lm"))["error"][0][1]
    assert err["node_type"] == "PILAPhysicsLabelParser"
    assert "only pickled weights (pytorch_model.bin)" in err["exception_message"], err
