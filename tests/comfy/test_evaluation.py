"""Benchmark generation (`python -m evaluation`) against the session's real ComfyUI server with tiny models.

The pack's shipped template runs as is, except for two stand-ins no tiny test can avoid (`tiny_models`, passed as
--graph-hook): the UMT5 text encoders become seeded random conditionings (seeded by the prompt text) and the Wan
VAE decode becomes a latent-to-pixels test node. Everything else (ModelSamplingSD3, the PILA loader, the in-graph
label parser, the router, the correction, KSampler, CreateVideo, SaveVideo) is the template's own graph.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evaluation import Arm, RunConfig, Settings, generate, report
from evaluation.generate import build_jobs, finished, read_manifest
from evaluation.suites import load_suite, video_relpath
from evaluation.videoio import read_frames
from evaluation.workflow import load_template, to_api

pytestmark = [pytest.mark.comfyui]

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["A glass ball rolls off a table and bounces twice on the floor.",
           "Hot water is poured into a glass, and steam rises.",
           "A rubber band is stretched and released."]
TINY = {"UNETLoader.unet_name": "tiny_wan21_t2v.safetensors", "PILAAdapterLoader.adapter_name": "tiny_pila.safetensors"}
SMALL = dict(steps=4, width=64, height=64, frames=9)


def text_seed(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:7], 16)


def tiny_models(api: dict, job: dict) -> dict:
    """Graph hook: UMT5 encoders -> PILATestConditioning (seeded by the text), VAEDecode -> PILATestLatentToImage."""
    for k, n in list(api.items()):
        if n["class_type"] == "CLIPTextEncode":
            text = n["inputs"]["text"]
            if isinstance(text, list):  # linked: the prompt primitive, or the parser's runtime description
                src = api[text[0]]["inputs"]
                text = src.get("value", "physics description")
            api[k] = {"class_type": "PILATestConditioning", "inputs": {"seed": text_seed(text), "tokens": 12}}
        elif n["class_type"] == "VAEDecode":
            api[k] = {"class_type": "PILATestLatentToImage", "inputs": {"samples": n["inputs"]["samples"]}}
    return api


HOOK = f"{Path(__file__).resolve()}:tiny_models"


@pytest.fixture()
def suite3(tmp_path) -> Path:
    p = tmp_path / "three.jsonl"
    p.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in PROMPTS))
    return p


def config(out, suite, server, **kw) -> RunConfig:
    base = dict(out=out, suites=[str(suite)], servers=[server.url], workflow="wan2.1",
                arms=[Arm("base", pila=False), Arm("pila")], seeds=[5, 6],
                settings=Settings(**SMALL, overrides=dict(TINY)), graph_hook=HOOK, quiet=True)
    base.update(kw)
    return RunConfig(**base)


def frames(out: Path, rec: dict) -> np.ndarray:
    return read_frames(out / rec["file"])


# ---- conversion of the shipped templates ----------------------------------------------------------------------
def test_templates_convert_to_the_api_format(object_info):
    """Widget values land on the inputs build_workflows.py gave them (incl. the seed's control_after_generate)."""
    sys.path.insert(0, str(REPO / "workflows"))
    try:
        import build_workflows as bw
    finally:
        sys.path.remove(str(REPO / "workflows"))
    api, _ = load_template("wan2.1", object_info)
    by_type = {}
    for k, n in api.items():
        by_type.setdefault(n["class_type"], []).append(n["inputs"])
    ks = by_type["KSampler"][0]
    assert {k: ks[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")} == dict(
        seed=42, steps=30, cfg=6.0, sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    router = by_type["PILAExpertRouter"][0]
    names = ["top_k", "prior_strength", "temperature", "exclude", "steps", "strength", "gate_floor",
             "start_percent", "end_percent"]
    assert [router[n] for n in names] == bw.ROUTER
    assert by_type["EmptyHunyuanLatentVideo"][0] == {"width": 832, "height": 480, "length": 33, "batch_size": 1}
    assert by_type["UNETLoader"][0] == {"unet_name": bw.WAN21, "weight_dtype": "default"}
    assert isinstance(by_type["KSampler"][0]["model"], list)  # links survive
    api22, _ = load_template("wan2.2", object_info)
    s = next(n["inputs"] for n in api22.values() if n["class_type"] == "PILAFlowCorrectionSamplerWan22")
    assert (s["seed"], s["steps"], s["cfg"], s["sampler_name"], s["switch_sigma"]) == (42, 20, 3.5, "euler", 0.875)


def test_conversion_follows_reroutes_bypass_and_primitives(object_info):
    ui = {"nodes": [
        {"id": 1, "type": "UNETLoader", "mode": 0, "widgets_values": ["a.safetensors", "default"],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}]},
        {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"name": "", "type": "MODEL", "links": [2]}]},
        {"id": 3, "type": "ModelSamplingSD3", "mode": 4, "widgets_values": [8.0],
         "inputs": [{"name": "model", "type": "MODEL", "link": 2}], "outputs": [{"name": "MODEL", "type": "MODEL", "links": [3]}]},
        {"id": 4, "type": "PrimitiveNode", "mode": 0, "widgets_values": [77, "fixed"],
         "outputs": [{"name": "INT", "type": "INT", "links": [4]}]},
        {"id": 5, "type": "KSampler", "mode": 0, "widgets_values": [1, "randomize", 9, 4.5, "euler", "simple", 1.0],
         "inputs": [{"name": "model", "type": "MODEL", "link": 3}, {"name": "seed", "type": "INT", "link": 4, "widget": {"name": "seed"}}]},
        {"id": 6, "type": "MarkdownNote", "mode": 0, "widgets_values": ["# notes"]},
    ], "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 5, 0, "MODEL"], [4, 4, 0, 5, 1, "INT"]]}
    api = to_api(ui, object_info)
    assert set(api) == {"1", "5"}
    assert api["5"]["inputs"] == {"model": ["1", 0], "seed": 77, "steps": 9, "cfg": 4.5, "sampler_name": "euler",
                                  "scheduler": "simple", "denoise": 1.0}


# ---- generation ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_three_prompts_two_arms_two_seeds_generate_and_report(comfy_server, suite3, tmp_path):
    out = tmp_path / "run"
    res = generate(config(out, suite3, comfy_server))
    assert res == {"done": 12, "skipped": 0, "total": 12}
    recs = read_manifest(out)
    assert len(recs) == 12 and len({r["key"] for r in recs}) == 12
    assert {(r["index"], r["arm"], r["seed"]) for r in recs} == {(i, a, s) for i in range(3) for a in ("base", "pila")
                                                                 for s in (5, 6)}
    for r in recs:
        fr = frames(out, r)
        assert fr.shape == (3, 32, 32, 3) and fr.dtype == np.uint8  # 9 frames -> 3 latent frames, 8x8 latent x 4
        assert r["file"] == f"{r['arm']}/three/{r['prompt'][:180]}-{r['seed_index']}.mp4"
        assert r["labels"], r  # the client's parse
        assert 0 < r["exec_seconds"] <= r["seconds"], r  # ComfyUI's execution time within the client's wall time
        if r["arm"] == "pila":  # the in-graph parser ran and agrees with the client's parse
            assert r["graph_labels"]["labels"] == r["labels"]
        else:
            assert r["graph_labels"] is None  # base: the correction and its inputs are not in the graph
    by = {(r["index"], r["arm"], r["seed"]): r for r in recs}
    assert any(not np.array_equal(frames(out, by[(i, "base", s)]), frames(out, by[(i, "pila", s)]))
               for i in range(3) for s in (5, 6)), "the tiny adapter must change the video"
    assert not np.array_equal(frames(out, by[(0, "base", 5)]), frames(out, by[(0, "base", 6)])), "seeds differ"
    # a second run finds everything done
    assert generate(config(out, suite3, comfy_server)) == {"done": 0, "skipped": 12, "total": 12}
    data = report(out)
    row = data["summary"]["three"]
    assert row["base"]["videos"] == row["pila"]["videos"] == 6 and row["pila"]["prompts"] == 3
    assert "overhead_vs_base_pct" in row["pila"] and row["base"]["mean_s"] > 0
    from PIL import Image
    sheet = Image.open(data["contact_sheet"])
    assert sheet.width >= 2 * 3 * 96 and sheet.height >= 3 * 96  # 2 arms x 3 frames, 3 prompts
    assert any("--mode=custom_input" in c for c in data["commands"])
    assert (out / "report" / "report.md").read_text().count("| three |") == 2


@pytest.mark.slow
def test_base_arm_is_bit_identical_to_an_unpatched_run_and_to_strength_zero(comfy_server, suite3, tmp_path):
    out = tmp_path / "run"
    arms = [Arm("base", pila=False), Arm("pila_s0", strength=0.0), Arm("pila")]
    generate(config(out, suite3, comfy_server, arms=arms, seeds=[5], limit=1))
    recs = {r["arm"]: r for r in read_manifest(out)}
    base = frames(out, recs["base"])
    # an unpatched graph written by hand (not from the template): the same model, sampler settings and stand-ins
    text = PROMPTS[0]
    ui = json.loads((REPO / "workflows" / "pila_wan2.1_t2v_1.3B.json").read_text())
    negative = next(n["widgets_values"][0] for n in ui["nodes"] if n.get("title", "").startswith("Negative"))
    ref = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY["UNETLoader.unet_name"], "weight_dtype": "default"}},
        "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": 8.0}},
        "pos": {"class_type": "PILATestConditioning", "inputs": {"seed": text_seed(text), "tokens": 12}},
        "neg": {"class_type": "PILATestConditioning", "inputs": {"seed": text_seed(negative), "tokens": 12}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {"model": ["shift", 0], "seed": 5, "steps": 4, "cfg": 6.0,
                                                      "sampler_name": "uni_pc", "scheduler": "simple", "positive": ["pos", 0],
                                                      "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}},
        "dec": {"class_type": "PILATestLatentToImage", "inputs": {"samples": ["ks", 0]}},
        "cv": {"class_type": "CreateVideo", "inputs": {"images": ["dec", 0], "fps": 16.0}},
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["cv", 0], "filename_prefix": "ref/unpatched",
                                                        "format": "auto", "codec": "auto"}},
    }
    entry = comfy_server.ok(ref)
    item = entry["outputs"]["save"]["images"][0]
    unpatched = read_frames(comfy_server.base / "output" / item["subfolder"] / item["filename"])
    assert np.array_equal(base, unpatched), "the base arm must be the unpatched model's video"
    assert np.array_equal(frames(out, recs["pila_s0"]), base), "PILA at strength 0 must reproduce base bit for bit"
    assert not np.array_equal(frames(out, recs["pila"]), base), "control: strength 1 changes the video"


@pytest.mark.slow
def test_kill_and_resume_completes_without_duplicates(comfy_server, suite3, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "evaluation", "generate", "--server", comfy_server.url, "--suite", str(suite3),
           "--out", str(out), "--seeds", "5,6", "--graph-hook", HOOK, "--steps", "4", "--width", "64", "--height", "64",
           "--frames", "9", *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while len(read_manifest(out)) < 3 and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(finished(out))
    assert 3 <= killed_at < 12
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{killed_at} already done" in r.stdout, r.stdout
    recs = read_manifest(out)
    keys = [x["key"] for x in recs]
    assert len(keys) == len(set(keys)) == 12, "every video exactly once in the manifest"
    for x in recs:
        assert frames(out, x).shape[0] == 3, x["file"]  # every counted file decodes whole
    videos = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert videos == sorted(x["file"] for x in recs), "no stray or missing video files"


@pytest.mark.slow
def test_two_shards_cover_the_suite_exactly_once(comfy_server, suite3, tmp_path):
    out = tmp_path / "run"
    # shard 0 spreads over two server URLs (the same server twice), shard 1 uses one
    generate(config(out, suite3, comfy_server, shard=(0, 2), servers=[comfy_server.url, comfy_server.url + "/"]))
    generate(config(out, suite3, comfy_server, shard=(1, 2)))
    m0 = [json.loads(x) for x in (out / "manifest.shard0of2.jsonl").read_text().splitlines()]
    m1 = [json.loads(x) for x in (out / "manifest.shard1of2.jsonl").read_text().splitlines()]
    k0, k1 = {x["key"] for x in m0}, {x["key"] for x in m1}
    assert len(k0) == len(m0) and len(k1) == len(m1), "no video twice within a shard"
    assert not k0 & k1, "no video in both shards"
    expected = {f"three//{i}|{a}|{s}" for i in range(3) for a in ("base", "pila") for s in (0, 1)}
    assert k0 | k1 == expected
    assert {x["server"] for x in m0} == {comfy_server.url}
    # both arms of a (prompt, seed) are generated by the same shard, so their timings compare
    for m in (m0, m1):
        units = {}
        for x in m:
            units.setdefault((x["index"], x["seed_index"]), set()).add(x["arm"])
        assert all(v == {"base", "pila"} for v in units.values())


# ---- layouts (no server) -----------------------------------------------------------------------------------------
def test_layouts_match_the_evaluators_documented_naming(tmp_path):
    # VBench-2.0 prompts/README.md: <save_path>/<dimension>/<prompt[:180]>-<index>.mp4, 3 videos per prompt
    items = load_suite("vbench2")
    counts = {d: sum(1 for i in items if i.group == d) for d in ("Mechanics", "Thermotics", "Material")}
    assert counts == {"Mechanics": 57, "Thermotics": 50, "Material": 50}
    it = next(i for i in items if i.group == "Thermotics")
    assert video_relpath(it, "pila", 2) == f"pila/vbench2/Thermotics/{it.prompt[:180]}-2.mp4"
    long = [i for i in items if len(i.prompt) > 180]
    assert all(video_relpath(i, "a", 0).endswith(f"{i.prompt[:180]}-0.mp4") for i in long)
    assert len(load_suite("videophy")) == 344
    # PhyGenBench README: PhyVideos/output_video_{index+1}.mp4, index = position in prompts.json
    pg = tmp_path / "prompts.json"
    pg.write_text(json.dumps([{"caption": "A ball falls.", "physical_laws": "gravity", "main_category": "Mechanics",
                               "sub_category": "Gravity"}, {"caption": "Ice melts.", "main_category": "Thermal"}]))
    p = load_suite(f"phygenbench:{pg}")
    assert [video_relpath(i, "base", 0) for i in p] == ["base/phygenbench/seed0/output_video_1.mp4",
                                                        "base/phygenbench/seed0/output_video_2.mp4"]
    # VideoPhy-2 inference.py: a CSV with `caption` and `videopath`; VideoPhy's prepare_data.py: videopath, caption
    v2 = tmp_path / "test.csv"
    v2.write_text('caption,action\n"A surfer turns, spraying water.",surfing\n')
    vp2 = load_suite(f"videophy2:{v2}")
    assert video_relpath(vp2[0], "pila", 1) == "pila/videophy2/A_surfer_turns,_spraying_water_1.mp4"
    from evaluation.generate import write_evaluator_files
    out = tmp_path / "run"
    recs = []
    for it, suite in ((vp2[0], "videophy2"), (load_suite("videophy")[0], "videophy")):
        f = video_relpath(it, "pila", 0)
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).write_bytes(b"x")
        recs.append({"key": it.key, "suite": suite, "arm": "pila", "index": it.index, "seed_index": 0,
                     "prompt": it.prompt, "file": f})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    write_evaluator_files(out)
    import csv
    rows2 = list(csv.reader(open(out / "pila/videophy2/videophy2.csv")))
    assert rows2[0] == ["caption", "videopath"] and rows2[1][0] == vp2[0].prompt
    assert Path(rows2[1][1]) == (out / recs[0]["file"]).resolve()
    rows1 = list(csv.reader(open(out / "pila/videophy/videophy.csv")))
    assert rows1[0] == ["videopath", "caption"] and Path(rows1[1][0]).is_file()


def test_jobs_pair_arms_and_shards_partition(tmp_path, suite3):
    cfg = RunConfig(out=tmp_path, suites=[str(suite3)], seeds=[1, 2, 3])
    full = {j.key for u in build_jobs(cfg) for j in u}
    assert len(full) == 3 * 3 * 2
    parts = []
    for i in range(4):
        cfg.shard = (i, 4)
        parts.append({j.key for u in build_jobs(cfg) for j in u})
    assert set().union(*parts) == full and sum(map(len, parts)) == len(full)


@pytest.mark.slow
def test_step_range_sweep_runs_the_table_13_arms(comfy_server, suite3, tmp_path):
    from evaluation.__main__ import main, preset_arms

    assert [a.steps for a in preset_arms("steps")] == [None, "41-50", "31-50", "21-50", "11-50", "1-50"]
    assert [a.top_k for a in preset_arms("topk")] == [None, *range(9)]
    out = tmp_path / "sweep"
    rc = main(["sweep", "steps", "--server", comfy_server.url, "--suite", str(suite3), "--out", str(out), "--limit", "1",
               "--seeds", "3", "--graph-hook", HOOK, "--width", "32", "--height", "32", "--frames", "5", "--cfg", "1",
               *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]])
    assert rc == 0
    recs = {r["arm"]: r for r in read_manifest(out)}
    assert sorted(recs) == sorted(["base", "steps41-50", "steps31-50", "steps21-50", "steps11-50", "steps1-50"])
    assert all(r["settings"]["steps"] == 50 and r["seed"] == 3 for r in recs.values())
    videos = {a: frames(out, r) for a, r in recs.items()}
    for a in videos:  # every range corrects some steps
        assert a == "base" or not np.array_equal(videos[a], videos["base"]), a
    # ranges that differ by many late steps give different videos (early steps, where the gate is ~0.05 at shift 8,
    # can vanish in the 8-bit frames of this tiny model)
    for a, b in (("steps41-50", "steps21-50"), ("steps21-50", "steps1-50"), ("steps41-50", "steps1-50")):
        assert not np.array_equal(videos[a], videos[b]), (a, b)


@pytest.mark.slow
def test_wan22_template_generates_with_both_experts(comfy_server, suite3, tmp_path):
    out = tmp_path / "wan22"
    generate(config(out, suite3, comfy_server, workflow="wan2.2", seeds=[4], limit=1,
                    arms=[Arm("base", pila=False), Arm("pila")]))
    recs = {r["arm"]: r for r in read_manifest(out)}
    assert set(recs) == {"base", "pila"} and recs["pila"]["graph_labels"]["labels"] == recs["pila"]["labels"]
    assert not np.array_equal(frames(out, recs["base"]), frames(out, recs["pila"]))


def test_configure_splits_two_advanced_samplers_and_finds_the_prompt_behind_i2v_conditioning():
    from evaluation.workflow import WorkflowError, configure

    def ksa(model, start, end, src):
        return {"class_type": "KSamplerAdvanced", "inputs": {
            "model": [model, 0], "add_noise": "enable", "noise_seed": 1, "steps": 20, "cfg": 3.5, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["i2v", 0], "negative": ["i2v", 1], "latent_image": [src, 2 if src == "i2v" else 0],
            "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": "disable"}, "_meta": {"title": model}}
    api = {
        "hi": {"class_type": "UNETLoader", "inputs": {"unet_name": "h", "weight_dtype": "default"}, "_meta": {"title": "h"}},
        "lo": {"class_type": "UNETLoader", "inputs": {"unet_name": "l", "weight_dtype": "default"}, "_meta": {"title": "l"}},
        "txt": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "old"}, "_meta": {"title": "Prompt"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": ["txt", 0], "clip": ["c", 0]}, "_meta": {"title": "p"}},
        "img": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "img"}},
        "i2v": {"class_type": "WanImageToVideo", "inputs": {"positive": ["pos", 0], "negative": ["pos", 0], "start_image": ["img", 0],
                                                          "width": 832, "height": 480, "length": 81, "batch_size": 1},
                "_meta": {"title": "i2v"}},
        "k1": ksa("hi", 0, 10, "i2v"),
        "k2": ksa("lo", 10, 10000, "k1"),
        "save": {"class_type": "SaveVideo", "inputs": {"video": ["k2", 0], "filename_prefix": "x", "format": "auto",
                                                        "codec": "auto"}, "_meta": {"title": "s"}},
    }
    with pytest.raises(WorkflowError, match="image"):
        configure(api, prompt="p", seed=1, arm=Arm("base", pila=False), settings=Settings(), prefix="x")
    g = configure(api, prompt="a new prompt", seed=9, arm=Arm("base", pila=False),
                  settings=Settings(steps=50, width=64), prefix="run/x", image="start.png")
    assert g["txt"]["inputs"]["value"] == "a new prompt" and g["img"]["inputs"]["image"] == "start.png"
    assert (g["k1"]["inputs"]["start_at_step"], g["k1"]["inputs"]["end_at_step"]) == (0, 25)
    assert (g["k2"]["inputs"]["start_at_step"], g["k2"]["inputs"]["end_at_step"]) == (25, 10000)
    assert g["k1"]["inputs"]["noise_seed"] == g["k2"]["inputs"]["noise_seed"] == 9 and g["k2"]["inputs"]["steps"] == 50
    assert g["i2v"]["inputs"]["width"] == 64 and g["save"]["inputs"]["filename_prefix"] == "run/x"
