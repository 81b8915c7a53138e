"""training/ end to end on CPU: tiny stages A-C, kill-and-resume, torchrun with two gloo ranks (docs/method.md §7)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import training  # noqa: F401
from training import train as T

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny_cpu.toml"


@pytest.fixture(scope="module")
def moving_cache(tmp_path_factory):
    """Four synthetic clips of a textured square moving at a known constant velocity, cached with the tiny encoders."""
    from training.cache import CacheConfig, build_cache
    from training.data import make_synthetic_dataset
    root = tmp_path_factory.mktemp("moving")
    ann = make_synthetic_dataset(root / "data", clips=4, frames=17, height=64, width=64, kinds=("moving",))
    build_cache(CacheConfig(annotations=str(ann), videos=str(root / "data" / "videos"), out=str(root / "cache"),
                            frames=17, height=64, width=64, shard_size=2, tiny=True, text_len=16, dtype="float32"),
                progress=False)
    return root / "cache"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(cache, out, *extra):
    return T.load_config(str(TINY), ["--cache", str(cache), "--out", str(out), "--progress", "false", *extra])


def _state(path):
    from safetensors.torch import load_file
    return load_file(str(path))


def _stage_a_eval(adapter, cfg, data, backbone):
    """Stage A loss of `adapter` on every clip at a fixed sigma and noise (no sampling noise in the comparison)."""
    from training.cache import collate
    b = collate([data[i] for i in range(len(data))], text_len=cfg.text_len)
    noise = torch.randn(b["latents"].shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((len(data),), 0.2)
    x_t = 0.8 * b["latents"] + 0.2 * noise
    v = backbone(x_t, sigma, b["text"])
    with torch.no_grad():
        _, _, _, scaffold = adapter.features(x_t, sigma, v)
        return T.stage_a_loss(adapter.afe.u_head(scaffold), b["flow"], b["jac"], b["conf"])[1]["flow"].item()


@pytest.mark.slow
def test_tiny_stages_a_b_c_end_to_end(moving_cache, tmp_path):
    from pila import load_adapter
    from training.cache import CachedClips
    cfg = _cfg(moving_cache, tmp_path, "--a_ranges", "0.9,0.9,0.9", "--lr", "3e-3", "--ckpt_every", "0")
    out = T.train(cfg)
    assert out == tmp_path / "adapter.safetensors"
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == {"A", "B", "C"}
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k not in ("stage",) and isinstance(v, float)
               and not k.startswith("grad_norm"))
    c_rows = [r for r in rows if r["stage"] == "C"]
    assert any(r["csrc"] > 0 for r in c_rows), "CSRC never switched on in stage C"
    assert all(f"router_usage/{c}" in c_rows[0] for c in T.CATEGORIES)
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    # Stage A's flow loss falls (fixed sigma and noise, fresh adapter vs the stage A result)
    data, backbone = CachedClips(moving_cache), T.build_backbone(cfg, T.Dist())
    before = _stage_a_eval(T.new_adapter(cfg), cfg, data, backbone)
    after = _stage_a_eval(load_adapter(tmp_path / "stage_A" / "adapter.safetensors"), cfg, data, backbone)
    assert after < 0.7 * before, f"stage A flow loss {before:.4g} -> {after:.4g}"
    # B trains only the constructors; C keeps u_head at lr 0 (weight decay is lr-scaled: exactly unchanged)
    a, b, c = (_state(tmp_path / f"stage_{s}" / "adapter.safetensors") for s in "ABC")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder.", "scaffold.", "afe.u_head.")))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("afe.constructors."))
    assert all(torch.equal(b[k], c[k]) for k in b if k.startswith("afe.u_head."))
    assert any(not torch.equal(b[k], c[k]) for k in b if k.startswith("encoder."))  # unfrozen after step 3
    assert any(not torch.equal(b[k], c[k]) for k in b if k.startswith("decoder.out."))
    final = load_adapter(out)  # what the ComfyUI loader reads
    assert final.config.hidden == 16 and final.config.text_dim == 32
    from training.quickstart import make_report
    report = make_report(tmp_path).read_text()
    assert "| A | 30 | flow |" in report and "Rigid Body" in report
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000 and (tmp_path / "router_usage.png").stat().st_size > 1000


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(moving_cache, tmp_path):
    short = ["--stages", "AC", "--a_phase_steps", "600", "--c_steps", "4", "--ckpt_every", "2", "--tensorboard", "false"]
    T.train(_cfg(moving_cache, tmp_path / "full", *short))
    runs = 0
    while T.train(_cfg(moving_cache, tmp_path / "killed", *short, "--stop_after", "3")) is None:
        runs += 1
        assert runs < 10
    assert runs >= 2  # it really was stopped inside stage A and inside stage C
    full, resumed = _state(tmp_path / "full" / "adapter.safetensors"), _state(tmp_path / "killed" / "adapter.safetensors")
    assert full.keys() == resumed.keys()
    worst = max(float((full[k].float() - resumed[k].float()).abs().max()) for k in full)
    assert worst <= 1e-6, f"resumed run differs by {worst}"


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_match_one_process_in_bf16(moving_cache, tmp_path):
    common = ["--config", str(TINY), "--cache", str(moving_cache), "--progress", "false", "--tensorboard", "false",
              "--stages", "AC", "--a_phase_steps", "600", "--c_steps", "3", "--ckpt_every", "0", "--lr", "3e-3",
              "--precision", "bf16"]  # the paper's precision: bf16 autocast, fp32 master weights
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                          "-m", "training.train", *common, "--out", str(tmp_path / "ddp")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    sums = json.loads((tmp_path / "ddp" / "rank_checksums.json").read_text())
    assert len(sums) == 2 and sums[0] == sums[1] and sums[0] is not None
    one = subprocess.run([sys.executable, "-m", "training.train", *common, "--grad_accum", "2", "--out", str(tmp_path / "one")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _state(tmp_path / "ddp" / "adapter.safetensors"), _state(tmp_path / "one" / "adapter.safetensors")
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    moved = max(float((a[k].float() - T.new_adapter(T.load_config(str(TINY), [])).state_dict()[k].float()).abs().max()) for k in a)
    assert moved > 1e-3, "training did not change the adapter"
    assert worst <= 1e-5, f"2 ranks vs 1 process with accumulation 2: max difference {worst}"
    # FSDP2 (fully_shard over gloo) gives the same weights
    fsdp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                           "-m", "training.train", *common, "--strategy", "fsdp", "--out", str(tmp_path / "fsdp")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    c = _state(tmp_path / "fsdp" / "adapter.safetensors")
    worst = max(float((c[k].float() - b[k].float()).abs().max()) for k in c)
    assert worst <= 1e-5, f"FSDP2 on 2 ranks vs 1 process: max difference {worst}"


@pytest.mark.slow
def test_sigkill_at_a_chosen_step_then_resume_in_bf16(moving_cache, tmp_path):
    """A bf16 run SIGKILLed after its 3rd step (before that step's checkpoint; --kill_after makes it happen at
    that step on any machine) resumes from the 2nd step's checkpoint to the unbroken run's weights."""
    args = ["--stages", "A", "--a_phase_steps", "600", "--ckpt_every", "1", "--tensorboard", "false", "--lr", "3e-3",
            "--precision", "bf16"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))

    def run(out, *extra):  # every run in a fresh process, as a user starts them (same threads, same kernels)
        cmd = [sys.executable, "-m", "training.train", "--config", str(TINY), "--cache", str(moving_cache), "--progress",
               "false", "--out", str(out), *args, *extra]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    assert run(tmp_path / "full").returncode == 0
    r = run(tmp_path / "killed", "--kill_after", "3")
    assert r.returncode == -9, f"expected death by SIGKILL, got {r.returncode}: {r.stderr[-2000:]}"
    ckpt = tmp_path / "killed" / "stage_A" / "ckpt.safetensors"
    assert not (tmp_path / "killed" / "adapter.safetensors").exists()
    from safetensors import safe_open
    with safe_open(str(ckpt), framework="pt") as fh:
        assert json.loads(fh.metadata()["pila_train_state"])["step"] == 2  # step 3 was lost with the process
    r = run(tmp_path / "killed")
    assert r.returncode == 0, r.stderr[-2000:]
    full, resumed = _state(tmp_path / "full" / "adapter.safetensors"), _state(tmp_path / "killed" / "adapter.safetensors")
    worst = max(float((full[k].float() - resumed[k].float()).abs().max()) for k in full)
    assert worst <= 1e-6, f"resumed after SIGKILL differs by {worst}"


@pytest.mark.slow
def test_quickstart_command_writes_adapter_and_report(tmp_path):
    """The README's main command, shrunk: synthetic clips -> cache -> A, B, C -> adapter + report."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "training.quickstart", "--out", str(tmp_path / "qs"), "--clips", "2",
                        "--frames", "9", "--height", "48", "--width", "48", "--schedule_scale", "0.001",
                        "--progress", "false", "--tensorboard", "false"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cached 2 clips (skipped none)" in r.stdout
    from pila import load_adapter, read_adapter_info
    load_adapter(tmp_path / "qs" / "adapter.safetensors")
    assert "tiny random Wan" in read_adapter_info(tmp_path / "qs" / "adapter.safetensors")["extras"]["toy"]
    assert (tmp_path / "qs" / "report.md").is_file() and (tmp_path / "qs" / "loss_curves.png").is_file()


@pytest.mark.slow
def test_deepspeed_zero2_offload_trains_and_resumes(moving_cache, tmp_path):
    """--strategy deepspeed (ZeRO-2, optimizer state on the CPU) through torchrun: a run stopped and resumed ends
    with the weights of an unbroken run, and both stay close to plain AdamW in one process."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")
    common = ["--config", str(TINY), "--cache", str(moving_cache), "--progress", "false", "--tensorboard", "false",
              "--stages", "AC", "--a_phase_steps", "600", "--c_steps", "4", "--ckpt_every", "2", "--lr", "3e-3",
              "--precision", "bf16"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"))

    def run(out, *extra):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                               f"--master_port={_free_port()}", "-m", "training.train", *common, *extra,
                               "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    full = run(tmp_path / "full", "--strategy", "deepspeed")
    assert full.returncode == 0, full.stderr[-3000:]
    for attempt in range(10):
        r = run(tmp_path / "stopped", "--strategy", "deepspeed", "--stop_after", "3")
        assert r.returncode == 0, r.stderr[-3000:]
        if (tmp_path / "stopped" / "adapter.safetensors").is_file():
            break
    assert attempt >= 2, "the run was not really stopped inside stage A and inside stage C"
    a, b = _state(tmp_path / "full" / "adapter.safetensors"), _state(tmp_path / "stopped" / "adapter.safetensors")
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-6, f"resumed DeepSpeed run differs from the unbroken one by {worst}"
    plain = subprocess.run([sys.executable, "-m", "training.train", *common, "--grad_accum", "2", "--out", str(tmp_path / "plain")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    c = _state(tmp_path / "plain" / "adapter.safetensors")
    moved = max(float((c[k].float() - T.new_adapter(T.load_config(str(TINY), [])).state_dict()[k].float()).abs().max()) for k in c)
    worst = max(float((a[k].float() - c[k].float()).abs().max()) for k in a)
    assert worst <= 1e-2 * moved, f"DeepSpeed vs plain AdamW: max difference {worst} (training moved weights by {moved})"
