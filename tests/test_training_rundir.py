"""A run directory never lies about how its weights were made; bad input fails before anything is written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

import training  # noqa: F401  (torchvision shim)
from training import train as T

ROOT = Path(__file__).resolve().parents[1]


def _data(n=2, text_dim=32):
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        flow = torch.randn(2, 2, 8, 8, generator=g) * 0.1
        items.append({"latents": torch.randn(16, 2, 8, 8, generator=g), "text": torch.randn(4, text_dim, generator=g),
                      "phys": torch.randn(3, text_dim, generator=g), "flow": flow, "jac": T.jacobian(flow[None])[0],
                      "conf": torch.ones(1, 2, 8, 8), "labels": torch.eye(8)[1]})
    return items


def _cfg(out, **kw):
    base = dict(out=str(out), stages="A", a_phase_steps=4, a_ranges=(0.9,), text_dim=32, hidden=16, text_len=8,
                num_workers=0, tensorboard=False, progress=False, precision="fp32", ckpt_every=1, lr=1e-3,
                tiny_wan_layers=1)
    base.update(kw)
    return T.TrainConfig(**base)


def test_a_changed_config_is_refused_naming_the_keys(tmp_path):
    T.record_config(_cfg(tmp_path))
    before = (tmp_path / "config.json").read_text()
    T.record_config(_cfg(tmp_path, stages="B", progress=True, log_every=3))  # neutral keys: accepted
    with pytest.raises(T.ConfigError) as e:
        T.record_config(_cfg(tmp_path, lr=2e-3, hidden=32))
    assert "lr: run has 0.001, this command 0.002" in str(e.value) and "hidden" in str(e.value)
    assert "--allow_config_change" in str(e.value) and "stages" not in str(e.value)
    assert (tmp_path / "config.json").read_text() == before and not list(tmp_path.glob("config_changed_*"))
    T.record_config(_cfg(tmp_path, lr=2e-3, allow_config_change=True))
    changed = json.loads((tmp_path / "config_changed_1.json").read_text())
    assert changed["changed"] == {"lr": {"was": 0.001, "now": 0.002}} and changed["config"]["lr"] == 2e-3
    assert (tmp_path / "config.json").read_text() == before  # the original stays the run's config


@pytest.mark.slow
def test_a_truncated_checkpoint_falls_back_then_names_the_file(tmp_path):
    data = _data()
    backbone = T.build_backbone(_cfg(tmp_path), T.Dist())
    full = T.train(_cfg(tmp_path / "full"), data=data, backbone=backbone)
    assert T.train(_cfg(tmp_path / "run", stop_after=1), data=data, backbone=backbone) is None
    assert T.train(_cfg(tmp_path / "run", stop_after=1), data=data, backbone=backbone) is None
    ckpt = tmp_path / "run" / "stage_A" / "ckpt.safetensors"
    prev = ckpt.with_name("ckpt.prev.safetensors")
    assert ckpt.is_file() and prev.is_file()
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # half a file, as a full disk leaves it
    # the newest is damaged: the previous one (step 1) resumes, and the run ends on the unbroken run's weights
    out = T.train(_cfg(tmp_path / "run"), data=data, backbone=backbone)
    from safetensors.torch import load_file
    a, b = load_file(str(full)), load_file(str(out))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    # both damaged: a clear error naming the file and the way on, not a SafetensorError traceback
    assert T.train(_cfg(tmp_path / "two", stop_after=1), data=data, backbone=backbone) is None
    ckpt2 = tmp_path / "two" / "stage_A" / "ckpt.safetensors"
    ckpt2.write_bytes(b"\x00" * 40)
    with pytest.raises(T.CheckpointError, match=r"ckpt\.safetensors: unreadable checkpoint.*Delete .*stage_A"):
        T.train(_cfg(tmp_path / "two"), data=data, backbone=backbone)


def _cli(*args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "training.train", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_help_lists_every_option_with_its_default_and_typos_write_nothing(tmp_path):
    r = _cli("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for f in fields(T.TrainConfig):
        assert f"--{f.name}" in r.stdout, f"--help does not list --{f.name}"
    assert "(default: 1e-05)" in text and "(default: 0.4,1.0)" in text and "--config" in text
    bad = tmp_path / "bad.toml"
    bad.write_text('[optimisation]\nlearning_rate = 1e-4\n')
    r = _cli("--config", str(bad), "--out", str(tmp_path / "run"))
    assert r.returncode != 0 and "unknown config keys ['learning_rate']" in r.stderr and "valid keys:" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
    r = _cli("--grad_clipp", "1", "--out", str(tmp_path / "run"))
    assert "did you mean grad_clipp -> grad_clip" in r.stderr and not (tmp_path / "run").exists()


def test_a_gpu_without_bf16_trains_only_on_request(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100-SXM2-16GB")
    d = T.Dist(device=torch.device("cuda", 0))
    with pytest.raises(SystemExit, match="V100.*no bf16.*--precision fp32"):
        T.check_precision(T.TrainConfig(precision="auto"), d)
    with pytest.raises(SystemExit, match="no bf16"):
        T.check_precision(T.TrainConfig(precision="bf16"), d)
    T.check_precision(T.TrainConfig(precision="fp32"), d)  # asked for: runs


def test_out_of_memory_at_step_0_names_stage_size_and_what_to_reduce(tmp_path):
    class OOMWan(torch.nn.Module):
        def forward(self, x_t, sigma, text):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    with pytest.raises(T.StepOutOfMemory) as e:
        T.train(_cfg(tmp_path), data=_data(), backbone=OOMWan())
    msg = str(e.value)
    assert "stage A at step 0" in msg and "[1, 16, 2, 8, 8]" in msg and "--batch_size" in msg and "fsdp" in msg
