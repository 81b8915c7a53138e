"""training.bench planning figures, the overlapped cache, and scripts/gpu_check.sh --cpu-smoke."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import training  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_live_peak_counts_what_autograd_saves():
    """A chain y <- y * w_i: with grad every intermediate is saved for backward (n alive at the end), without
    grad each one dies when the next exists (2 alive at most). Reference: the tensor sizes, by hand."""
    from training.bench import LivePeak
    n, numel = 6, 1000
    with torch.device("meta"):
        x = torch.empty(numel)
        ws = [torch.empty(numel, requires_grad=True) for _ in range(n)]
    with LivePeak() as grad_peak:
        y = x
        for w in ws:
            y = y * w
    assert grad_peak.peak == n * numel * 4
    del y
    with torch.no_grad(), LivePeak() as nograd_peak:
        y = x
        for w in ws:
            y = y * w
    assert nograd_peak.peak == 2 * numel * 4


def _wan_forward_flops(cfg: dict, t: int, h: int, w: int, text_len: int) -> float:
    """Matmul FLOPs of one Wan forward, by hand from the architecture (2 per multiply-add)."""
    d, L = cfg["num_attention_heads"] * cfg["attention_head_dim"], t * (h // 2) * (w // 2)
    per_layer = (2 * L * d * d * 4 + 2 * 2 * L * L * d  # self-attention: q k v o, scores and values
                 + 2 * L * d * d * 2 + 2 * text_len * d * d * 2 + 2 * 2 * L * text_len * d  # cross-attention
                 + 2 * L * d * cfg["ffn_dim"] * 2)  # feed-forward
    patch = 2 * L * 16 * 4 * d
    text = 2 * text_len * (cfg["text_dim"] * d + d * d)
    time_ = 2 * (cfg["freq_dim"] * d + d * d + d * 6 * d)
    head = 2 * L * d * 16 * 4
    return cfg["num_layers"] * per_layer + patch + text + time_ + head


def test_plan_counts_the_backbone_as_the_architecture_says():
    from training.bench import plan_stage
    from training.wan import tiny_wan_config
    cfg = tiny_wan_config(text_dim=32, layers=3, heads=2, head_dim=16, ffn_dim=96)
    r = plan_stage("C", wan=cfg, size="9x64x64", hidden=16, text_len=16)
    ref = _wan_forward_flops(cfg, 3, 8, 8, 16)
    assert r["backbone_fwd_tflops"] * 1e12 == pytest.approx(ref, rel=1e-6)
    assert r["adapter_fwd_bwd_tflops"] > 0 and r["latents"] == [16, 3, 8, 8]
    # the static memory is the parameters' bytes: backbone (bf16 + fp32 modules), adapter fp32, AdamW 2 x fp32
    assert r["static_gib"] * 2 ** 30 > r["backbone_weights_gib"] * 2 ** 30 + 4 * r["adapter_params"]
    # stage C trains everything: its static part holds AdamW's moments for every adapter parameter
    a = plan_stage("A", wan=cfg, size="9x64x64", hidden=16, text_len=16)
    assert (r["static_gib"] - a["static_gib"]) * 2 ** 30 == pytest.approx(8 * (r["trainable"] - a["trainable"]))


def test_plan_cli_prints_every_stage_at_full_size_on_meta(capsys):
    """81x480x832 with the real 1.3B config allocates nothing (meta); FLOPs match pila.bench's Wan count / 2."""
    from training import bench
    rows = bench.main(["--device", "cpu", "--stages", "A"])
    out = capsys.readouterr().out
    assert "stage A:" in out and "TFLOPs per step" in out
    r = rows[0]
    assert r["kind"] == "plan" and r["latents"] == [16, 21, 60, 104]
    assert 250 < r["backbone_fwd_tflops"] < 320  # 283 TFLOPs for one sample; pila.bench reports 566 for batch 2
    assert 2.5 < r["backbone_weights_gib"] < 2.8  # 1.42 B parameters in bf16


def _dataset(root, clips):
    from training.data import make_synthetic_dataset
    return make_synthetic_dataset(root / "data", clips=clips, frames=9, height=32, width=32)


@pytest.mark.slow
def test_cache_with_workers_equals_the_sequential_cache(tmp_path, monkeypatch):
    """Worker processes (spawned) give the same tensors, in the same shards, as the one-process cache; a shard
    written before a 'kill' is kept and the rest is filled in."""
    from safetensors.torch import load_file
    from training import cache as C
    ann = _dataset(tmp_path, 6)
    monkeypatch.setattr(C, "MIN_CLIPS_FOR_WORKERS", 1)
    kw = dict(annotations=str(ann), videos=str(tmp_path / "data" / "videos"), frames=9, height=32, width=32,
              shard_size=4, tiny=True, text_len=16, dtype="float32", device="cpu")
    seq = C.build_cache(C.CacheConfig(out=str(tmp_path / "seq"), workers=0, **kw), progress=False)
    par = C.build_cache(C.CacheConfig(out=str(tmp_path / "par"), workers=2, **kw), progress=False)
    assert par["run"]["workers"] == 2 and seq["used"] == par["used"] == 6
    for shard in ("shard_00000", "shard_00001"):
        a, b = load_file(str(tmp_path / "seq" / f"{shard}.safetensors")), load_file(str(tmp_path / "par" / f"{shard}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resume: drop the second shard, re-run with workers: only it is redone
    (tmp_path / "par" / "shard_00001.json").unlink()
    again = C.build_cache(C.CacheConfig(out=str(tmp_path / "par"), workers=2, **kw), progress=False)
    assert again["run"]["clips"] == 2 and again["used"] == 6


def test_cache_shards_split_across_ranks(tmp_path):
    from training import cache as C
    ann = _dataset(tmp_path, 3)
    kw = dict(annotations=str(ann), videos=str(tmp_path / "data" / "videos"), out=str(tmp_path / "c"), frames=9,
              height=32, width=32, shard_size=1, tiny=True, text_len=16, dtype="float32", device="cpu")
    r1 = C.build_cache(C.CacheConfig(**kw), rank=1, world=2, progress=False)
    assert r1["run"]["clips"] == 1 and (tmp_path / "c" / "shard_00001.json").is_file()
    r0 = C.build_cache(C.CacheConfig(**kw), rank=0, world=2, progress=False)
    assert r0["run"]["clips"] == 2 and r0["used"] == 3


def test_random_cache_is_readable_by_the_trainer(tmp_path):
    from training.cache import CachedClips, collate, random_cache
    data = CachedClips(random_cache(tmp_path / "c", clips=3, latent=(2, 4, 4), text_dim=8))
    b = collate([data[i] for i in range(3)], text_len=10)
    assert b["latents"].shape == (3, 16, 2, 4, 4) and b["text"].shape == (3, 10, 8) and b["labels"].sum(1).min() >= 1


def test_bench_encoders_tiny_on_cpu():
    from training.cache import bench_encoders
    r = bench_encoders(size="5x32x32", device="cpu", tiny=True, repeats=1)
    assert r["vae_s"] > 0 and r["umt5_s"] > 0 and r["flow_s"] > 0 and r["gpu_s_per_clip"] == r["vae_s"] + r["umt5_s"]


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    """`bash scripts/gpu_check.sh --cpu-smoke OUT`: every section runs at toy size and the summary says so."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable)
    r = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu-smoke", str(tmp_path / "out")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1500)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["sections"]}
    assert r.returncode == 0, (status, r.stdout[-3000:], r.stderr[-3000:])
    assert list(status) == ["a", "b", "c", "cache", "d", "e"] or list(status) == ["a", "b", "c", "d", "cache", "e"]
    sec = {s["name"]: s for s in summary["sections"]}
    assert {x["stage"] for x in sec["a"]["results"]} == set("ABC")
    assert [x["k"] for x in sec["b"]["results"]] == [0, 1, 4, 8] and all(x["adapter_ms"] for x in sec["b"]["results"])
    resume = [x for x in sec["c"]["results"] if x.get("run") == "kill + resume"][0]
    assert resume["killed"] and resume["bitwise_equal"], resume
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## a)" in md and "## e)" in md
