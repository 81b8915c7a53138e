"""training/ at the paper's precision (bf16) and scale (the Wan 2.1 1.3B / 14B architectures), on CPU.

bf16 autocast runs on the CPU, so everything but speed and memory is checked here (docs/method.md §7)."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import training  # noqa: F401  (torchvision shim)
from training import train as T
from training.wan import FrozenWan, build_wan, cast_wan, tiny_wan_config, wan_config


def _item(g, *, t=2, h=8, w=8, text_dim=32, label=(1, 5)):
    """One cached clip as training.cache stores it (random latents and states, a smooth flow target)."""
    flow = torch.randn(2, t, h, w, generator=g).cumsum(-1) * 0.05
    labels = torch.zeros(8)
    labels[list(label)] = 1
    return {"latents": torch.randn(16, t, h, w, generator=g), "text": torch.randn(6, text_dim, generator=g),
            "phys": torch.randn(4, text_dim, generator=g), "flow": flow, "jac": T.jacobian(flow[None])[0],
            "conf": torch.rand(1, t, h, w, generator=g) * 0.9 + 0.1, "labels": labels}


def _batch(text_dim=32, **kw):
    from training.cache import collate
    g = torch.Generator().manual_seed(0)
    return collate([_item(g, text_dim=text_dim, **kw), _item(g, text_dim=text_dim, label=(2, 6), **kw)], text_len=8)


def _stage_losses(adapter, backbone, batch, *, bf16: bool, steps=(0, 2, 40)):
    """Each stage's loss at a fixed sigma and noise, backbone and adapter in fp32 or in bf16 (backbone weights in
    bf16 with fp32 timesteps, adapter fp32 master weights under bf16 autocast)."""
    cfg = T.TrainConfig(schedule_scale=0.01)
    x0 = batch["latents"]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.3, 0.8])
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    v = backbone(x_t, sigma, batch["text"])
    b = dict(batch, target=noise - x0)
    out = {}
    for stage, step in zip("ABC", steps):
        knobs = T.stage_knobs(stage, step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, logs = T.StageModel(adapter)(stage, x_t, sigma, v, b, knobs)
        out[stage] = float(loss.detach())
        out[f"{stage}_logs"] = {k: float(x) for k, x in logs.items()}
    out["v"] = v
    return out


def test_every_stage_in_bf16_is_close_to_fp32():
    """Stages A, B, C: the bf16 losses are finite and within 3 % (+1e-3) of the fp32 run on the same weights;
    the CSRC term of Stage C is computed from fp32 fields (within 3 % of the fp32 one, not just finite)."""
    from pila import PILAAdapter
    torch.manual_seed(0)
    adapter = PILAAdapter(hidden=16, text_dim=32)
    torch.nn.init.normal_(adapter.decoder.out.weight, std=0.02)
    wan32 = build_wan(tiny_wan_config(), seed=0)
    wan16 = cast_wan(copy.deepcopy(wan32), torch.bfloat16)
    assert wan16.patch_embedding.weight.dtype == torch.bfloat16 and wan16.scale_shift_table.dtype == torch.float32
    batch = _batch()
    f32 = _stage_losses(adapter, FrozenWan(wan32), batch, bf16=False)
    b16 = _stage_losses(adapter, FrozenWan(wan16), batch, bf16=True)
    rel_v = float((b16["v"] - f32["v"]).norm() / f32["v"].norm())
    assert rel_v < 2e-2, f"bf16 Wan velocity differs from fp32 by {rel_v:.2e} (relative L2)"
    for stage in "ABC":
        a, b = f32[stage], b16[stage]
        assert math.isfinite(b), f"stage {stage}: bf16 loss {b}"
        assert abs(a - b) <= 0.03 * abs(a) + 1e-3, f"stage {stage}: fp32 {a:.5g} vs bf16 {b:.5g}"
    c32, c16 = f32["C_logs"]["csrc"], b16["C_logs"]["csrc"]
    assert c32 > 0 and abs(c32 - c16) <= 0.03 * c32, f"CSRC fp32 {c32:.5g} vs bf16 {c16:.5g}"


def test_csrc_fields_are_fp32_under_bf16_autocast():
    """Under bf16 autocast the residuals read fp32 fields built from an fp32 view (not bf16 values upcast)."""
    from pila import PILAAdapter
    adapter = PILAAdapter(hidden=16, text_dim=32)
    view = torch.randn(1, 32, 3, 8, 8, dtype=torch.bfloat16) + torch.randn(1, 32, 3, 8, 8) * 1e-3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = adapter.expert_fields(view.float())
    assert all(t.dtype == torch.float32 for t in f.values())
    # u from u_head in fp32: not representable in bf16 (a bf16 result upcast would be)
    assert not torch.equal(f["u"], f["u"].bfloat16().float())


def test_timestep_reaches_wan_in_fp32():
    """1000 sigma = 833.33 must not be rounded to bf16 (832) on the way into the bf16 backbone."""
    wan = cast_wan(build_wan(tiny_wan_config(), seed=0), torch.bfloat16)
    seen = {}
    def grab(module, args):
        seen["t"] = args[0].clone()
    wan.condition_embedder.register_forward_pre_hook(grab)
    FrozenWan(wan)(torch.randn(1, 16, 2, 4, 4), torch.tensor([0.833333]), torch.randn(1, 3, 32))
    assert seen["t"].dtype == torch.float32 and float(seen["t"]) == pytest.approx(833.333, abs=1e-2)


@pytest.mark.slow
def test_stage_c_clips_only_what_it_trains(tmp_path):
    """Before the encoder switch, Stage C's clip norm leaves out the encoder group and u_head (both at lr 0)."""
    from pila import PILAAdapter, load_adapter, save_adapter
    from training.cache import collate
    g = torch.Generator().manual_seed(0)
    data = [_item(g) for _ in range(2)]
    torch.manual_seed(0)
    start = PILAAdapter(hidden=16, text_dim=32)
    torch.nn.init.normal_(start.decoder.out.weight, std=0.05)  # a non-zero dv, so the encoder gets a gradient
    save_adapter(tmp_path / "start.safetensors", start)
    cfg = T.TrainConfig(out=str(tmp_path / "run"), stages="C", c_steps=1, text_dim=32, hidden=16, text_len=8,
                        num_workers=0, tensorboard=False, progress=False, precision="bf16", lr=1e-3, grad_clip=1e9,
                        c_encoder_frozen_steps=1000, init_adapter=str(tmp_path / "start.safetensors"))
    backbone = T.build_backbone(cfg, T.Dist())
    T.train(cfg, data=data, backbone=backbone)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["lr/encoder"] == 0 and row["lr/u_head"] == 0
    # the same step by hand: every group's gradient, then the norm over the trained groups only
    adapter = load_adapter(tmp_path / "start.safetensors").train()
    stream = T.Stream(len(data), seed=cfg.seed, stage="C", global_batch=1)
    b = collate([data[stream.index(0)]], text_len=8)
    knobs = T.stage_knobs("C", 0, cfg)
    x_t, sigma, target = T._noise(b["latents"], "C", 0, [0], knobs, cfg)
    b["target"] = target
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = T.StageModel(adapter)("C", x_t, sigma, backbone(x_t, sigma, b["text"]), b, knobs)
    loss.backward()
    groups = adapter.param_groups()
    norm = lambda names: math.sqrt(sum(float(p.grad.float().square().sum()) for n in names for p in groups[n]))  # noqa: E731
    trained = [n for n in T.STAGE_TRAINS["C"] if n not in ("encoder", "u_head")]
    assert norm(["encoder"]) > 0.1 * norm(trained), "the encoder's gradient is too small to tell the norms apart"
    assert row["grad_norm"] == pytest.approx(norm(trained), rel=1e-3)
    assert not row["grad_norm"] == pytest.approx(norm(T.STAGE_TRAINS["C"]), rel=1e-3)


def test_14b_configuration_on_the_meta_device():
    """The 14B architecture: the shipped config's shapes, and the adapter's stage groups, with nothing allocated."""
    from diffusers import WanTransformer3DModel
    from pila import PILAAdapter
    cfg = wan_config("14b")
    with torch.device("meta"):
        wan = WanTransformer3DModel.from_config(cfg)
        adapter = PILAAdapter(hidden=128, text_dim=cfg["text_dim"])
    n = sum(p.numel() for p in wan.parameters())
    assert 13.5e9 < n < 14.5e9, f"14B config has {n / 1e9:.2f}B parameters"
    assert all(p.is_meta for p in wan.parameters()) and all(p.is_meta for p in adapter.parameters())
    assert wan.patch_embedding.weight.shape == (5120, 16, 1, 2, 2) and len(wan.blocks) == 40
    assert wan.blocks[0].attn2.to_k.weight.shape == (5120, 5120) and wan.condition_embedder.text_embedder.linear_1.weight.shape == (5120, 4096)
    assert wan.proj_out.weight.shape == (64, 5120)  # 16 latent channels x the 1x2x2 patch
    groups = adapter.param_groups()
    everything = {id(p) for p in adapter.parameters()}
    in_c = [id(p) for name in T.STAGE_TRAINS["C"] for p in groups[name]]
    assert len(in_c) == len(set(in_c)) and set(in_c) == everything  # C trains every parameter once
    assert {id(p) for p in groups["constructors"]}.isdisjoint(id(p) for n in T.STAGE_TRAINS["A"] for p in groups[n])


@pytest.mark.slow
def test_one_bf16_step_of_every_stage_on_the_real_1_3b_architecture(tmp_path):
    """The Wan 2.1 1.3B configuration (random weights made directly in bf16), a 16x2x8x8 latent, UMT5-XXL-wide
    text states: one optimizer step of A, B and C through the training loop, in bf16, with finite losses."""
    wan = build_wan("1.3b", dtype=torch.bfloat16, seed=0, init_in_dtype=True)
    assert sum(p.numel() for p in wan.parameters()) > 1.3e9
    assert {p.dtype for p in wan.parameters()} == {torch.bfloat16, torch.float32}
    g = torch.Generator().manual_seed(0)
    data = [_item(g, text_dim=4096) for _ in range(2)]
    cfg = T.TrainConfig(out=str(tmp_path), stages="ABC", a_phase_steps=1, a_ranges=(0.5,), b_steps=1, c_steps=1,
                        text_dim=4096, hidden=32, text_len=8, num_workers=0, tensorboard=False, progress=False,
                        precision="bf16", ckpt_every=0)
    out = T.train(cfg, data=data, backbone=FrozenWan(wan))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["A", "B", "C"]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows), rows
    from pila import load_adapter
    adapter = load_adapter(out)
    assert adapter.dtype == torch.float32  # fp32 master weights, whatever the compute precision


def test_afe_displacement_stays_fp32_under_bf16_autocast():
    """On 21x30x52 fields (81x240x416 pixels) under bf16 autocast, the AFE's d is the fp32 integral of its u:
    the rigid kinematic residual between them is at fp32 level, far below the floor d would have if it were
    rounded to bf16 (the value of that floor is measured here too)."""
    from pila import PILAAdapter
    from pila.residuals import rigid_kinematic
    torch.manual_seed(0)
    adapter = PILAAdapter(hidden=16, text_dim=32)
    x0 = torch.randn(1, 16, 21, 30, 52)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, h, _, scaffold = adapter.features(x0, torch.tensor([0.3]), torch.randn_like(x0))
        bank, fields = adapter.afe(h, scaffold)
    u, d = fields["u"].float(), fields["d"]
    assert d.dtype == torch.float32 and bank.dtype == torch.float32
    scale = float(u.square().mean())
    ours = float(rigid_kinematic(d, u)[0]) / scale
    rounded = float(rigid_kinematic(d.bfloat16().float(), u)[0]) / scale
    assert ours < 1e-9 and rounded > 100 * ours, f"residual / mean u^2: fp32 d {ours:.2e}, bf16 d {rounded:.2e}"
