"""PILA staged adapter training, SPEC section 7, in one script (backbone frozen; only the adapter trains).

    # the paper's recipe on 8 GPUs (one command runs stages A, B and C, each from the previous one's output)
    torchrun --nproc_per_node=8 -m training.train --config training/configs/paper.toml \\
        --cache cache/ --wan wan2.1_t2v_1.3B_bf16.safetensors --out runs/pila
    # one stage only (B starts from runs/pila/stage_A/adapter.safetensors)
    torchrun --nproc_per_node=8 -m training.train --config training/configs/paper.toml --stages B ...
    # minutes on a CPU, tiny random Wan (no weights)
    python -m training.train --config training/configs/tiny_cpu.toml --cache runs/qs/cache --out runs/qs
    # FSDP2 / DeepSpeed ZeRO-2 with CPU offload instead of DDP
    torchrun ... -m training.train --config ... --strategy fsdp        # or --strategy deepspeed

A killed run resumes from `<out>/stage_X/ckpt.safetensors` when started again with the same command; the
result is the same as an unbroken run (sampler position, RNG states and the optimizer are restored, and every
sample's sigma and noise are drawn from a generator seeded by (seed, stage, step, position in the global batch),
so 1 GPU with accumulation 8 and 8 GPUs with accumulation 1 see the same batches and the same noise).

Stages (schedules scale with `schedule_scale`; the paper's values are the defaults):
  A  observable pretraining: E, scaffold, sigma MLP and u_head fit u to the cached optical flow (+ its Jacobian),
     three phases of 3000 steps at sigma ranges f = 0.90, 0.75, 0.50.
  B  field recovery, 5000 steps: the constructors learn each slot's local residual relations on the physical
     mask; phases core 0, alpha 1000, T 2000, j 3000, psi 4500, 100-step ramps, newest 1.0 / earlier 0.25.
  C  full coupling, 3 epochs: Eq. 11 with the lambda_phys, CSRC, sigma-threshold and mask ramps; every
     parameter in AdamW from step 0, {E, scaffold, sigma MLP} at lr 0 until step 1000 then 0.3 lr, u_head lr 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import training  # noqa: F401  (torchvision shim before diffusers / transformers)
from pila import PILAAdapter, PILAConfig, load_adapter, save_adapter
from pila import fd
from pila.bank import ALL_PHASES, PHASES, SLOT_SLICES, active_slots
from pila.csrc import TERMS
from pila.decoder import gate
from pila.taxonomy import CATEGORIES, RECIPES

log = logging.getLogger("pila.training")


# =========================================================================================== configuration

@dataclass
class TrainConfig:
    # ---- data
    cache: str = "cache"  # output of `python -m training.cache`
    text_len: int = 512  # Wan's caption context: states zero-padded to this many rows
    num_workers: int = 2  # DataLoader workers (0 = in the main process)
    # ---- model
    wan: str = ""  # ComfyUI single-file Wan 2.1 T2V (.safetensors); "" = a tiny random Wan (tests, quick start)
    wan_config: str = "1.3b"  # 1.3b | 14b | path to a diffusers config.json
    tiny_wan_layers: int = 2
    tiny_wan_seed: int = 0
    hidden: int = 128  # adapter width H
    text_dim: int = 4096  # UMT5 width of the cached text states (4096 for UMT5-XXL)
    top_k: int = 4
    init_adapter: str = ""  # start the first stage from this adapter file instead of a fresh adapter
    # ---- stages (SPEC section 7)
    stages: str = "ABC"
    schedule_scale: float = 1.0  # multiplies every step count below (the tiny recipe shrinks them)
    shift: float = 5.0
    a_phase_steps: int = 3000
    a_ranges: tuple = (0.90, 0.75, 0.50)
    a_jacobian_weight: float = 1.0
    a_smooth_l1_beta: float = 1.0
    b_steps: int = 5000
    b_phase_starts: tuple = (0, 1000, 2000, 3000, 4500)  # core, alpha, T, j, psi
    b_ramp: int = 100
    b_old_weight: float = 0.25
    c_epochs: float = 3.0
    c_steps: int = 0  # > 0 overrides c_epochs
    c_encoder_frozen_steps: int = 1000  # {E, scaffold, sigma MLP} lr 0 until here, then c_encoder_lr_scale x lr
    c_encoder_lr_scale: float = 0.3
    lambda_phys: float = 0.30
    lambda_ramp_steps: int = 2000
    csrc_warmup_steps: int = 1000
    sigma_threshold: tuple = (0.40, 1.00)
    sigma_threshold_steps: int = 2000
    mask_boot_steps: int = 300
    mask_phys_steps: int = 1300
    penalty: float = 0.01  # weight of mean((gate * dv)^2)
    # ---- optimisation
    lr: float = 1e-5
    weight_decay: float = 0.01
    grad_clip: float = 0.5
    batch_size: int = 1  # per GPU and micro-step
    grad_accum: int = 1
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    seed: int = 0
    # ---- distributed
    strategy: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard) | deepspeed (ZeRO-2)
    deepspeed_offload: bool = True  # ZeRO-2 optimizer state on the CPU (the paper's setting)
    # ---- logging and checkpoints
    out: str = "runs/pila"
    log_every: int = 10
    ckpt_every: int = 500
    tensorboard: bool = True
    progress: bool = True
    stop_after: int = 0  # stop this invocation after N optimizer steps (0 = run to the end); for kill tests

    def steps(self, n: int) -> int:
        """A schedule length in this recipe's scale (0 stays 0, others at least 1)."""
        return 0 if n == 0 else max(1, round(n * self.schedule_scale))


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """Defaults <- a .toml/.json file (flat keys, `[section]` tables are flattened) <- `--key value` overrides."""
    values: dict = {}
    if path:
        text = Path(path).read_text()
        if str(path).endswith(".toml"):
            import tomllib
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
        for k, v in raw.items():
            if isinstance(v, dict):  # [data], [model], ... sections
                values.update(v)
            else:
                values[k] = v
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}")
    i = 0
    while i < len(overrides):
        tok = overrides[i]
        i += 1
        if not tok.startswith("--"):
            raise ValueError(f"unexpected argument {tok!r}; overrides are --key value or --key=value")
        key, eq, val = tok[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown option --{key}; options: {', '.join(sorted(fields))}")
        default = TrainConfig.__dataclass_fields__[key].default
        if not eq:
            if isinstance(default, bool) and (i >= len(overrides) or overrides[i].startswith("--")):
                val = "true"  # a bare --flag
            else:
                if i >= len(overrides):
                    raise ValueError(f"--{key} needs a value")
                val, i = overrides[i], i + 1
        values[key] = _parse(val, default)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    assert cfg.strategy in ("ddp", "fsdp", "deepspeed"), f"strategy must be ddp, fsdp or deepspeed, got {cfg.strategy!r}"
    assert set(cfg.stages) <= set("ABC") and cfg.stages, f"stages must be letters of 'ABC', got {cfg.stages!r}"
    return cfg


def _parse(val: str, default):
    if isinstance(default, bool):
        return val.lower() in ("1", "true", "yes", "on")
    if isinstance(default, tuple):
        return tuple(float(x) if "." in x else int(x) for x in val.strip("()[]").split(",") if x)
    if isinstance(default, int):
        return int(val)
    if isinstance(default, float):
        return float(val)
    return val


# =========================================================================================== stage losses

def shift_sigma(s: Tensor, shift: float = 5.0) -> Tensor:
    """The time shift of Wan / SD3 flow sampling: sigma = shift s / (1 + (shift - 1) s) (1 = pure noise)."""
    return shift * s / (1 + (shift - 1) * s)


def sample_sigma(n: int, f: float = 0.0, *, shift: float = 5.0, generator: torch.Generator | None = None) -> Tensor:
    """SPEC section 7: i uniform in {floor(f * 1000) .. 999}, s = 1 - i / 1000, sigma = shift s / (1 + (shift - 1) s).

    f = 0 is the full range; f = 0.90 gives sigma <= 0.357, 0.75 <= 0.625, 0.50 <= 0.833 (sigma 1 = pure noise)."""
    lo = int(math.floor(f * 1000 + 1e-9))
    i = torch.randint(lo, 1000, (n,), generator=generator)
    s = 1 - i.double() / 1000
    return shift_sigma(s, shift).float()


def jacobian(u: Tensor) -> Tensor:
    """`[B, 2, T, H, W]` -> `[B, 4, T, H, W]` = [dx ux, dy ux, dx uy, dy uy] (pila.fd, as the cached targets)."""
    ux, uy = u[:, 0:1], u[:, 1:2]
    return torch.cat([fd.dx(ux), fd.dy(ux), fd.dx(uy), fd.dy(uy)], dim=1)


def _weighted_smooth_l1(a: Tensor, b: Tensor, w: Tensor, beta: float) -> Tensor:
    """Per-sample confidence-weighted mean of smooth-L1 (channels averaged), then the batch mean."""
    l = F.smooth_l1_loss(a.float(), b.float(), reduction="none", beta=beta).mean(dim=1, keepdim=True)
    return ((w * l).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-8)).mean()


def stage_a_loss(u: Tensor, flow: Tensor, flow_jac: Tensor, conf: Tensor, *, jacobian_weight: float = 1.0,
                 beta: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage A (SPEC 7): confidence-weighted smooth-L1 of u vs the flow, plus the same on the spatial Jacobian.

    u, flow `[B, 2, T, H, W]` (latent pixels per latent frame, x first); flow_jac `[B, 4, ...]`; conf `[B, 1, ...]`."""
    assert u.shape == flow.shape, f"u {tuple(u.shape)} and the flow target {tuple(flow.shape)} must match"
    w = conf.detach().float()
    l_flow = _weighted_smooth_l1(u, flow, w, beta)
    l_jac = _weighted_smooth_l1(jacobian(u.float()), flow_jac, w, beta)
    return l_flow + jacobian_weight * l_jac, {"flow": l_flow.detach(), "jacobian": l_jac.detach()}


# Stage B: each phase's local residual relations (ours: the SPEC 5 terms whose fields that phase constructs)
PHASE_TERMS: dict[str, tuple[str, ...]] = {
    "core": ("fluid_continuity", "fluid_momentum", "fluid_pressure_bound", "fluid_density_prior",
             "compressible_acoustic", "compressible_eos_closure", "rigid_stress_closure"),
    "alpha": ("phase_front_advection", "phase_density_closure", "phase_smooth"),
    "T": ("thermal_transport", "thermal_bound", "phase_energy"),
    "j": ("collision_impulse_closure", "collision_compression_closure", "collision_impulse_smooth"),
    "psi": ("optical_wave", "optical_support"),
}
assert tuple(PHASE_TERMS) == tuple(n for n, _ in PHASES)


def stage_b_weights(step: int, starts, *, ramp: int = 100, old: float = 0.25) -> tuple[list[float], int]:
    """Per-phase weights at `step` and the active phase: a phase is off before its start, ramps in linearly
    over `ramp` steps, the newest started phase weighs 1.0 and earlier ones `old`."""
    started = [i for i, s in enumerate(starts) if step >= s]
    newest = max(started) if started else 0
    w = []
    for i, s in enumerate(starts):
        if step < s:
            w.append(0.0)
            continue
        r = 1.0 if ramp <= 0 else min(1.0, (step - s + 1) / ramp)
        w.append(r * (1.0 if i == newest else old))
    return w, newest


def stage_b_loss(fields: dict[str, Tensor], consts: nn.Module, *, step: int, starts, ramp: int = 100,
                 old: float = 0.25, mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage B (SPEC 7): sum over started phases of weight x their relations (pila.csrc.TERMS) on AFE fields."""
    weights, _ = stage_b_weights(step, starts, ramp=ramp, old=old)
    f32 = {k: v.float() for k, v in fields.items()}
    ref = next(iter(f32.values()))
    total, logs = ref.new_zeros(()), {}
    with torch.autocast(ref.device.type, enabled=False):
        for (phase, names), w in zip(PHASE_TERMS.items(), weights):
            if w == 0:
                continue
            part = ref.new_zeros(())
            for n in names:
                need, fn = TERMS[n]
                if not all(k in f32 for k in need):
                    continue
                t = fn(f32, consts, mask).mean()
                logs[f"b/{n}"] = t.detach()
                part = part + t
            logs[f"b_phase/{phase}"] = part.detach()
            total = total + w * part
    return total, logs


def stage_c_schedule(step: int, cfg: TrainConfig) -> dict[str, float]:
    """Stage C warm-ups (SPEC 7) at optimizer step `step`."""
    ramp = cfg.steps(cfg.lambda_ramp_steps)
    thr_steps = cfg.steps(cfg.sigma_threshold_steps)
    lo, hi = cfg.sigma_threshold
    return {
        "lambda_phys": cfg.lambda_phys * min(1.0, step / ramp) if ramp > 0 else cfg.lambda_phys,
        "csrc_scale": 0.5 + 0.5 * min(1.0, step / max(1, cfg.steps(cfg.csrc_warmup_steps))),
        "sigma_threshold": lo + (hi - lo) * min(1.0, step / thr_steps) if thr_steps > 0 else hi,
        "encoder_lr": 0.0 if step < cfg.steps(cfg.c_encoder_frozen_steps) else cfg.c_encoder_lr_scale,
    }


def stage_c_loss(v: Tensor, dv: Tensor, target: Tensor, sigma: Tensor, csrc: Tensor, *, lambda_phys: float,
                 csrc_scale: float = 1.0, penalty: float = 0.01, floor: float = 0.05) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 11: MSE(v + gate dv, noise - x0) + lambda_phys(t) csrc_scale(t) L_CSRC + penalty mean((gate dv)^2)."""
    g = gate(sigma.float(), floor).view(-1, 1, 1, 1, 1)
    gdv = g * dv.float()
    mse = (v.float() + gdv - target.float()).square().mean()
    pen = gdv.square().mean()
    total = mse + lambda_phys * csrc_scale * csrc.float() + penalty * pen
    return total, {"mse": mse.detach(), "csrc": csrc.detach(), "penalty": pen.detach(),
                   "mse_backbone": (v.float() - target.float()).square().mean().detach()}


# ----------------------------------------------------------------------------------------- physical mask

def normalise_energy(E: Tensor) -> Tensor:
    """`0.08 + 0.92 clamp(E / q0.9(E), 0, 1)` per sample (SPEC 7), detached."""
    E = E.detach().float()
    q = torch.quantile(E.flatten(1), 0.9, dim=1).clamp_min(1e-8)
    return 0.08 + 0.92 * (E / q.view(-1, 1, 1, 1, 1)).clamp(0, 1)


def boot_mask(v: Tensor, x0_hat: Tensor) -> Tensor:
    """M_boot from the frozen velocity v and x0_hat: E = 0.55 |dt v| + 0.25 |dt x0| + 0.20 (|dy v| + |dx v|) / 2."""
    v, x0 = v.detach().float(), x0_hat.detach().float()
    E = (0.55 * fd.dt(v).abs() + 0.25 * fd.dt(x0).abs() + 0.10 * (fd.dy(v).abs() + fd.dx(v).abs())).mean(1, keepdim=True)
    return normalise_energy(E)


def routed_field_mask(bank: Tensor, selected: Tensor | None = None, *, active: tuple[str, ...] | None = None) -> Tensor:
    """M_phys: the mask of the active routed fields (SPEC 7): 0.65 temporal change + 0.25 event magnitude
    + 0.10 boundary (spatial gradient), channel means over the bank slots of the selected experts' recipes
    (all active slots when `selected` is None), same normalisation as M_boot. **ours**: the channel choice."""
    bank = bank.detach().float()
    B = bank.shape[0]
    allowed = set(active_slots(ALL_PHASES) if active is None else active)
    ch = torch.zeros(B, bank.shape[1], device=bank.device)
    for b in range(B):
        names = set(allowed) if selected is None else {s for k in selected[b].tolist() for s in RECIPES[CATEGORIES[k]]}
        for n in names & allowed:
            ch[b, SLOT_SLICES[n]] = 1
    ch = ch.view(B, -1, 1, 1, 1)
    n = ch.sum(1, keepdim=True).clamp_min(1)
    tc = (fd.dt(bank).abs() * ch).sum(1, keepdim=True) / n
    mag = (bank.abs() * ch).sum(1, keepdim=True) / n
    bd = ((fd.dx(bank).abs() + fd.dy(bank).abs()) / 2 * ch).sum(1, keepdim=True) / n
    return normalise_energy(0.65 * tc + 0.25 * mag + 0.10 * bd)


def physical_mask(step: int, boot: Tensor, phys: Tensor | None = None, *, boot_steps: int = 300,
                  phys_steps: int = 1300) -> Tensor:
    """Steps 0 .. boot_steps: all-ones -> M_boot; boot_steps .. phys_steps: M_boot -> M_phys; then M_phys."""
    if step < boot_steps:
        a = step / boot_steps
        return (1 - a) + a * boot
    if phys is None:
        return boot
    a = 1.0 if phys_steps <= boot_steps else min(1.0, (step - boot_steps) / (phys_steps - boot_steps))
    return (1 - a) * boot + a * phys


# =========================================================================================== the model step

STAGE_TRAINS = {  # adapter.param_groups() names each stage optimises (C: everything)
    "A": ("encoder", "u_head"),
    "B": ("constructors",),
    "C": ("encoder", "u_head", "constructors", "condition", "router", "experts", "decoder", "csrc"),
}


class StageModel(nn.Module):
    """The adapter plus each stage's forward and loss, so that DDP / FSDP / DeepSpeed see one module call.

    Every trainable parameter takes part in every call (`+ 0 * p[0]` for the experts nobody selected), so the
    gradient reduction is the same on every rank and no parameter is ever left without a gradient."""

    def __init__(self, adapter: PILAAdapter):
        super().__init__()
        self.adapter = adapter

    def forward(self, stage: str, x_t: Tensor, sigma: Tensor, v: Tensor, batch: dict[str, Tensor], knobs: dict):
        a = self.adapter
        if stage == "A":
            _, _, _, scaffold = a.features(x_t, sigma, v)
            u = a.afe.u_head(scaffold)
            loss, logs = stage_a_loss(u, batch["flow"], batch["jac"], batch["conf"],
                                      jacobian_weight=knobs["jacobian_weight"], beta=knobs["beta"])
        elif stage == "B":
            x0_hat, h, _, scaffold = a.features(x_t, sigma, v)
            phase = knobs["active_phase"]
            bank, fields = a.afe(h, scaffold, active_phase=phase)
            mask = physical_mask(knobs["step"], boot_mask(v, x0_hat),
                                 routed_field_mask(bank, None, active=active_slots(phase)),
                                 boot_steps=knobs["boot_steps"], phys_steps=knobs["phys_steps"])
            loss, logs = stage_b_loss(fields, a.csrc, step=knobs["step"], starts=knobs["starts"], ramp=knobs["ramp"],
                                      old=knobs["old"], mask=mask)
            logs["mask_mean"] = mask.mean().detach()
        else:
            loss, logs = self._stage_c(x_t, sigma, v, batch, knobs)
        touch = sum(p.reshape(-1)[0] for p in self.parameters() if p.requires_grad) * 0.0
        return loss + touch, logs

    def _stage_c(self, x_t, sigma, v, batch, knobs):
        """adapter.forward (SPEC 3-6) with the routed CSRC loss: the physical mask reads this call's routed bank,
        and the CSRC labels drop the samples above the sigma threshold while routing keeps their labels."""
        a, cfg = self.adapter, self.adapter.config
        B = x_t.shape[0]
        y = batch["labels"].float()
        below = (sigma.to(y.device) <= knobs["sigma_threshold"] + 1e-9).float()[:, None]
        masks = []

        def mask_of(out):
            masks.append(physical_mask(knobs["step"], boot_mask(v, out.x0_hat), routed_field_mask(out.refined, out.selected),
                                       boot_steps=knobs["boot_steps"], phys_steps=knobs["phys_steps"]))
            return masks[-1]

        out = a(x_t, sigma, v, batch["phys"], batch["phys_mask"], y, compute_residuals=True, physical_mask=mask_of,
                csrc_labels=y * below)
        mask = masks[-1]
        loss, logs = stage_c_loss(v, out.dv, batch["target"], sigma, out.losses["csrc"], lambda_phys=knobs["lambda_phys"],
                                  csrc_scale=knobs["csrc_scale"], penalty=knobs["penalty"], floor=cfg.gate_floor)
        logs.update({k: v_ for k, v_ in out.losses.items() if k != "csrc"})
        logs["mask_mean"] = mask.mean().detach()
        logs["csrc_samples"] = below.mean().detach()
        sel = torch.zeros(B, len(CATEGORIES), device=x_t.device).scatter_(1, out.selected, 1.0) \
            if out.selected.numel() else torch.zeros(B, len(CATEGORIES), device=x_t.device)
        for k, name in enumerate(CATEGORIES):
            logs[f"router_usage/{name}"] = sel[:, k].mean().detach()
            logs[f"router_weight/{name}"] = out.weights[:, k].mean().detach()
        return loss, logs


# =========================================================================================== distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return Dist(device=dev)
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=dev)


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()


def wrap(model: StageModel, make_groups, cfg: TrainConfig, d: Dist):
    """-> (module to call, optimizer, engine or None); `make_groups()` gives the AdamW groups after wrapping."""
    if cfg.strategy == "deepspeed":
        try:
            import deepspeed
        except ImportError:
            raise SystemExit("strategy 'deepspeed' needs DeepSpeed: pip install deepspeed (or use --strategy ddp / fsdp)") from None
        ds_cfg = {
            "train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "gradient_clipping": cfg.grad_clip, "bf16": {"enabled": _use_bf16(cfg, d)},
            "zero_optimization": {"stage": 2, **({"offload_optimizer": {"device": "cpu", "pin_memory": True}}
                                                 if cfg.deepspeed_offload else {})},
            "zero_force_ds_cpu_optimizer": False, "steps_per_print": 10 ** 9,
        }
        opt = torch.optim.AdamW(make_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)
        return engine, opt, engine
    if d.world > 1 and cfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        module = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    elif cfg.strategy == "fsdp" and d.world > 1:
        # FSDP2, one unit at the root: every parameter is gathered for the whole stage forward (so the experts
        # nobody on this rank selected still match the other ranks' collectives). The CSRC constants are scalars,
        # which fully_shard cannot shard: they stay replicated and their gradients are averaged by hand.
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh(d.device.type, (d.world,))
        fully_shard(model, mesh=mesh, ignored_params=set(model.adapter.csrc.parameters()))
        module = model
    else:
        module = model
    opt = torch.optim.AdamW(make_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return module, opt, None


def _use_bf16(cfg: TrainConfig, d: Dist) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and d.device.type == "cuda")


# =========================================================================================== checkpoints

def _tensor_key(s: str) -> str:
    return s.replace("/", "_")


DS_TAG = "ckpt"  # DeepSpeed's checkpoint folder name; not "latest", the name of DeepSpeed's own pointer file


def save_checkpoint(path: Path, model: StageModel, opt: torch.optim.Optimizer, meta: dict, cfg: TrainConfig,
                    d: Dist, engine=None) -> None:
    """One safetensors file, written to a temp name and renamed: model, optimizer tensors, RNG states, and the
    JSON state (step, epoch, sampler position, optimizer param groups, python/numpy RNG scalars) in its metadata."""
    from safetensors.torch import save_file
    if engine is not None:  # DeepSpeed's own (sharded, torch.save) format; our state JSON beside it
        engine.save_checkpoint(str(path.parent / "deepspeed"), tag=DS_TAG, client_state={"pila": meta})
        if d.main:
            _atomic_text(path.with_suffix(".json"), json.dumps(dict(meta, config=asdict(cfg))))
        return
    model_sd, optim_sd = _full_state(model, opt, cfg, engine)
    if not d.main:
        return
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_sd.items()}
    opt_json = {"param_groups": optim_sd["param_groups"], "scalars": {}}
    for pid, st in optim_sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                opt_json["scalars"][f"{pid}.{k}"] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_state = random.getstate()
    tensors["rng.python"] = torch.tensor(py_state[1], dtype=torch.int64)
    meta = dict(meta, optimizer=opt_json, rng={"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                                               "python": [py_state[0], py_state[2]]}, config=asdict(cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"pila_train_state": json.dumps(meta)})
    os.replace(tmp, path)


def _full(t):
    """A DTensor shard (FSDP2) -> the full tensor (a collective: every rank calls it in the same order)."""
    from torch.distributed.tensor import DTensor
    return t.full_tensor() if isinstance(t, DTensor) else t


def _full_state(model: StageModel, opt, cfg: TrainConfig, engine) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state on every rank; plain tensors for DDP / one process."""
    m = model.module if hasattr(model, "module") else model
    sd = {k: _full(v) for k, v in m.state_dict().items()}
    if opt is None:
        return sd, {}
    osd = opt.state_dict()
    state = {pid: {k: _full(v) if torch.is_tensor(v) else v for k, v in st.items()} for pid, st in osd["state"].items()}
    return sd, {"state": state, "param_groups": osd["param_groups"]}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _is_dist() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def load_checkpoint(path: Path, model: StageModel, opt: torch.optim.Optimizer, cfg: TrainConfig) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = json.loads(fh.metadata()["pila_train_state"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    oj = meta["optimizer"]
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            pid, name = k[len("optim."):].rsplit(".", 1)
            state.setdefault(_pid(pid), {})[name] = v
    for k, v in oj["scalars"].items():
        pid, name = k.rsplit(".", 1)
        state.setdefault(_pid(pid), {})[name] = v
    optim_sd = {"state": state, "param_groups": oj["param_groups"]}
    from torch.distributed.tensor import DTensor, distribute_tensor

    def like(full: Tensor, ref: Tensor) -> Tensor:  # re-shard a full tensor the way `ref` is (FSDP2) or move it
        full = full.to(device=ref.device, dtype=ref.dtype)
        return distribute_tensor(full, ref.device_mesh, ref.placements) if isinstance(ref, DTensor) else full

    m = model.module if hasattr(model, "module") else model
    ref = m.state_dict()
    m.load_state_dict({k: like(v, ref[k]) for k, v in model_sd.items()}, strict=True)
    plist = [p for g in opt.param_groups for p in g["params"]]
    optim_sd["state"] = {pid: {n: (like(t, plist[pid]) if torch.is_tensor(t) and n != "step" else t) for n, t in st.items()}
                         for pid, st in state.items()}
    opt.load_state_dict(optim_sd)
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    r = meta["rng"]
    np.random.set_state((r["numpy"][0], tensors["rng.numpy"].numpy().astype(np.uint32), *r["numpy"][1:]))
    random.setstate((r["python"][0], tuple(int(x) for x in tensors["rng.python"].tolist()), r["python"][1]))
    return meta


def _pid(s: str):
    return int(s) if s.isdigit() else s


# =========================================================================================== data stream

def _seed(*parts) -> int:
    """A stable 63-bit seed from any tuple (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


class Stream:
    """The global sample order: epoch e is a permutation of the cache seeded by (seed, stage, e); optimizer step s
    takes stream positions [s G, (s + 1) G), G = batch x accum x world. Position p of the global batch belongs to
    micro-step a = p // (batch x world), rank (p // batch) % world. The sampler state is just the step."""

    def __init__(self, n: int, *, seed: int, stage: str, global_batch: int):
        self.n, self.seed, self.stage, self.G = n, seed, stage, global_batch
        self._perms: dict[int, Tensor] = {}

    def index(self, k: int) -> int:
        e, i = divmod(k, self.n)
        if e not in self._perms:
            self._perms = {e: torch.randperm(self.n, generator=torch.Generator().manual_seed(_seed(self.seed, self.stage, "perm", e)))}
        return int(self._perms[e][i])

    def positions(self, step: int, micro: int, rank: int, world: int, batch: int) -> list[int]:
        return [(micro * world + rank) * batch + j for j in range(batch)]

    def epoch(self, step: int) -> float:
        return step * self.G / self.n


class MicroBatches(torch.utils.data.Sampler):
    """Yields this rank's dataset indices for every (step, micro-step) from `start` on (feeds a DataLoader)."""

    def __init__(self, stream: Stream, start: int, total: int, *, accum: int, rank: int, world: int, batch: int):
        self.s, self.start, self.total, self.accum, self.rank, self.world, self.batch = stream, start, total, accum, rank, world, batch

    def __iter__(self):
        for step in range(self.start, self.total):
            for a in range(self.accum):
                yield [self.s.index(step * self.s.G + p) for p in self.s.positions(step, a, self.rank, self.world, self.batch)]

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum


# =========================================================================================== run a stage

def build_backbone(cfg: TrainConfig, d: Dist):
    from .wan import FrozenWan, build_wan, load_wan, tiny_wan_config
    dtype = torch.bfloat16 if _use_bf16(cfg, d) else torch.float32
    if cfg.wan:
        model = load_wan(cfg.wan, cfg.wan_config, device=d.device, dtype=dtype)
    else:
        model = build_wan(tiny_wan_config(text_dim=cfg.text_dim, layers=cfg.tiny_wan_layers), device=d.device,
                          dtype=dtype, seed=cfg.tiny_wan_seed)
    return FrozenWan(model)


def stage_length(stage: str, cfg: TrainConfig, n: int, G: int) -> int:
    if stage == "A":
        return len(cfg.a_ranges) * cfg.steps(cfg.a_phase_steps)
    if stage == "B":
        return cfg.steps(cfg.b_steps)
    return cfg.c_steps if cfg.c_steps > 0 else max(1, math.ceil(cfg.c_epochs * n / G))


def stage_dir(cfg: TrainConfig, stage: str) -> Path:
    return Path(cfg.out) / f"stage_{stage}"


def new_adapter(cfg: TrainConfig) -> PILAAdapter:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(cfg.seed, "adapter-init") % 2 ** 31)
        return PILAAdapter(PILAConfig(hidden=cfg.hidden, text_dim=cfg.text_dim, top_k=cfg.top_k))


def initial_adapter(stage: str, cfg: TrainConfig) -> PILAAdapter:
    """Each stage starts from the latest earlier stage's adapter (C from B, or from A when B is not run);
    the first stage from --init_adapter or a fresh adapter."""
    for prev in reversed("ABC"[: "ABC".index(stage)]):
        if (stage_dir(cfg, prev) / "adapter.safetensors").is_file():
            return load_adapter(stage_dir(cfg, prev) / "adapter.safetensors").train()
    if stage != cfg.stages[0]:
        raise FileNotFoundError(f"stage {stage} found no earlier stage's adapter under {cfg.out}")
    if cfg.init_adapter:
        return load_adapter(cfg.init_adapter).train()
    if stage != "A":
        log.warning("stage %s: no earlier stage's adapter under %s; starting from a fresh adapter", stage, cfg.out)
    return new_adapter(cfg)


def run_stage(stage: str, cfg: TrainConfig, d: Dist, data, backbone) -> Path:
    """Train one stage to its end (or `stop_after` steps); returns the stage's adapter path when finished."""
    from .cache import collate
    sdir = stage_dir(cfg, stage)
    final = sdir / "adapter.safetensors"
    if final.is_file():
        if d.main:
            log.info("stage %s: already finished (%s)", stage, final)
        return final
    adapter = initial_adapter(stage, cfg).to(d.device)
    adapter.config = dataclasses.replace(adapter.config, top_k=cfg.top_k)
    assert adapter.config.text_dim == data[0]["phys"].shape[-1], (
        f"the adapter's text_dim {adapter.config.text_dim} differs from the cache's text width {data[0]['phys'].shape[-1]}")
    groups = adapter.param_groups()
    trains = STAGE_TRAINS[stage]
    for p in adapter.parameters():  # set once, before the optimizer is built; never toggled during the stage
        p.requires_grad_(False)
    for name in trains:
        for p in groups[name]:
            p.requires_grad_(True)

    def make_groups():  # read after wrapping: FSDP2 replaces the parameters with sharded ones
        g = adapter.param_groups()
        return [{"params": g[name], "lr": cfg.lr, "name": name} for name in trains]

    model = StageModel(adapter)
    module, opt, engine = wrap(model, make_groups, cfg, d)
    G = cfg.batch_size * cfg.grad_accum * d.world
    total = stage_length(stage, cfg, len(data), G)
    stream = Stream(len(data), seed=cfg.seed, stage=stage, global_batch=G)
    ckpt = sdir / "ckpt.safetensors"
    start = 0
    if engine is not None and ckpt.with_suffix(".json").is_file():
        engine.load_checkpoint(str(sdir / "deepspeed"), tag=DS_TAG)
        start = json.loads(ckpt.with_suffix(".json").read_text())["step"]
    elif ckpt.is_file():
        meta = load_checkpoint(ckpt, model, opt, cfg)
        start = meta["step"]
        if d.main:
            log.info("stage %s: resumed at step %d / %d from %s", stage, start, total, ckpt)
    writer = _writer(cfg, d, stage)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=MicroBatches(stream, start, total, accum=cfg.grad_accum, rank=d.rank, world=d.world,
                                         batch=cfg.batch_size),
        collate_fn=lambda items: collate(items, text_len=cfg.text_len), num_workers=cfg.num_workers,
        persistent_workers=False)
    batches = iter(loader)
    bf16 = _use_bf16(cfg, d)
    amp = (lambda: torch.autocast(d.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    from tqdm import tqdm
    bar = tqdm(total=total, initial=start, desc=f"stage {stage}", disable=not (cfg.progress and d.main),
               dynamic_ncols=True, unit="step")
    t0, done = time.time(), 0
    metrics_path = Path(cfg.out) / "metrics.jsonl"
    for step in range(start, total):
        knobs = stage_knobs(stage, step, cfg)
        _set_lrs(opt, stage, knobs, cfg)
        logs_acc: dict[str, float] = {}
        for a in range(cfg.grad_accum):
            batch = {k: v.to(d.device, non_blocking=True) for k, v in next(batches).items()}
            pos = stream.positions(step, a, d.rank, d.world, cfg.batch_size)
            x_t, sigma, target = _noise(batch["latents"], stage, step, pos, knobs, cfg)
            v = backbone(x_t, sigma, batch["text"])
            batch["target"] = target
            last_micro = a == cfg.grad_accum - 1
            if hasattr(module, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-step
                module.set_requires_gradient_sync(last_micro)
            sync = last_micro or engine is not None or not hasattr(module, "no_sync")
            with (nullcontext() if sync else module.no_sync()), amp():
                loss, logs = module(stage, x_t, sigma, v, batch, knobs)
            if engine is not None:  # DeepSpeed scales by 1/accum and steps only at the accumulation boundary
                engine.backward(loss)
                engine.step()
            else:
                (loss / cfg.grad_accum).backward()
            logs["loss"] = loss.detach()
            for k, val in logs.items():
                logs_acc[k] = logs_acc.get(k, 0.0) + float(val) / cfg.grad_accum
        if engine is not None:
            gnorm = float(engine.get_global_grad_norm() or float("nan"))
        else:
            if cfg.strategy == "fsdp" and d.world > 1:
                _average_replicated_grads(model.adapter.csrc.parameters(), d)
            # clip over what this step trains: a group at lr 0 (Stage C's u_head, its encoder group before the
            # switch) still gets gradients, but must not inflate the norm that scales the others
            params = [p for g in opt.param_groups if g["lr"] > 0 for p in g["params"]]
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 and params else float("nan")
            opt.step()
            opt.zero_grad(set_to_none=True)
        logs_acc = _reduce_logs(logs_acc, d)
        logs_acc["grad_norm"] = gnorm
        for g in opt.param_groups:
            logs_acc[f"lr/{g.get('name', '?')}"] = g["lr"]
        logs_acc.update({f"knob/{k}": float(v) for k, v in knobs.items() if isinstance(v, (int, float))})
        if stage == "C":
            logs_acc.update({f"csrc_const/{k}": v for k, v in adapter.csrc.as_dict().items()})
        if not all(math.isfinite(v) for k, v in logs_acc.items() if not k.startswith("grad_norm")):
            raise FloatingPointError(f"stage {stage} step {step}: non-finite losses {logs_acc}")
        done += 1
        if d.main:
            if step % max(1, cfg.log_every) == 0 or step + 1 == total:
                if writer is not None:
                    for k, val in logs_acc.items():
                        writer.add_scalar(f"{stage}/{k}", val, step)
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps({"stage": stage, "step": step, **logs_acc}) + "\n")
            bar.set_postfix(loss=f"{logs_acc['loss']:.4g}")
            bar.update(1)
        last = step + 1 == total
        stopping = cfg.stop_after > 0 and done >= cfg.stop_after
        if (cfg.ckpt_every > 0 and (step + 1) % cfg.ckpt_every == 0) or stopping or last:
            save_checkpoint(ckpt, model, opt, {"stage": stage, "step": step + 1, "epoch": stream.epoch(step + 1),
                                               "position": (step + 1) * G, "total": total}, cfg, d, engine)
            barrier(d)
        if stopping and not last:
            bar.close()
            if d.main:
                log.info("stage %s: stopped after %d steps at step %d (stop_after)", stage, done, step + 1)
            raise StopTraining(stage, step + 1)
    bar.close()
    if writer is not None:
        writer.close()
    plain = _plain_adapter(model, cfg)
    if d.world > 1:
        _LAST_CHECKSUM["value"] = checksum(plain)
    if d.main:
        save_adapter(final, plain, extra_metadata={
            "stage": stage, "steps": total, "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("out", "cache")},
            "seconds": round(time.time() - t0, 1)})
        log.info("stage %s: finished %d steps -> %s", stage, total, final)
    barrier(d)
    return final


class StopTraining(Exception):
    def __init__(self, stage: str, step: int):
        super().__init__(f"stopped in stage {stage} at step {step}")
        self.stage, self.step = stage, step


def _plain_adapter(model: StageModel, cfg: TrainConfig) -> PILAAdapter:
    """The trained adapter as a plain fp32-or-own-dtype module (gathers FSDP2 shards; call on every rank)."""
    if (cfg.strategy == "fsdp" and _is_dist()) or (cfg.strategy == "deepspeed" and model.adapter.dtype != torch.float32):
        sd, _ = _full_state(model, None, cfg, None)
        fresh = PILAAdapter(model.adapter.config)
        fresh.load_state_dict({k[len("adapter."):]: v.float() for k, v in sd.items()}, strict=True)
        return fresh
    return model.adapter


def stage_knobs(stage: str, step: int, cfg: TrainConfig) -> dict:
    """Everything a stage's forward needs to know about the schedule at optimizer step `step`."""
    k = {"step": step, "boot_steps": cfg.steps(cfg.mask_boot_steps), "phys_steps": cfg.steps(cfg.mask_phys_steps)}
    if stage == "A":
        phase = min(step // cfg.steps(cfg.a_phase_steps), len(cfg.a_ranges) - 1)
        k.update(f=cfg.a_ranges[phase], a_phase=phase, jacobian_weight=cfg.a_jacobian_weight, beta=cfg.a_smooth_l1_beta)
    elif stage == "B":
        starts = [cfg.steps(s) for s in cfg.b_phase_starts]
        _, newest = stage_b_weights(step, starts)
        k.update(f=0.0, starts=starts, ramp=cfg.steps(cfg.b_ramp), old=cfg.b_old_weight, active_phase=newest)
    else:
        k.update(f=0.0, penalty=cfg.penalty, **stage_c_schedule(step, cfg))
    return k


_knobs = stage_knobs  # the name training/physworld_run.py uses


def _set_lrs(opt, stage: str, knobs: dict, cfg: TrainConfig) -> None:
    """Stage C: the encoder group's lr follows the schedule, u_head stays at 0 (never requires_grad toggling)."""
    for g in opt.param_groups:
        name = g.get("name")
        if stage == "C" and name == "encoder":
            g["lr"] = cfg.lr * knobs["encoder_lr"]
        elif stage == "C" and name == "u_head":
            g["lr"] = 0.0
        else:
            g["lr"] = cfg.lr


def _noise(x0: Tensor, stage: str, step: int, positions: list[int], knobs: dict, cfg: TrainConfig):
    """Per-sample sigma and noise from generators seeded by (seed, stage, step, global position)."""
    sig, noise = [], []
    for p in positions:
        g = torch.Generator().manual_seed(_seed(cfg.seed, stage, step, p))
        sig.append(sample_sigma(1, knobs["f"], shift=cfg.shift, generator=g))
        noise.append(torch.randn(x0.shape[1:], generator=g))
    sigma = torch.cat(sig).to(x0.device)
    noise = torch.stack(noise).to(x0.device)
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise  # SPEC 1: sigma 1 = pure noise
    return x_t, sigma, noise - x0


def _average_replicated_grads(params, d: Dist) -> None:
    import torch.distributed as dist
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= d.world


def _reduce_logs(logs: dict[str, float], d: Dist) -> dict[str, float]:
    if d.world <= 1:
        return logs
    import torch.distributed as dist
    keys = sorted(logs)
    # ranks may log different keys (per-category CSRC terms): gather the names first
    all_keys: list = [None] * d.world
    dist.all_gather_object(all_keys, keys)
    union = sorted(set().union(*all_keys))
    vals = torch.tensor([logs.get(k, 0.0) for k in union], dtype=torch.float64, device=d.device)
    cnt = torch.tensor([1.0 if k in logs else 0.0 for k in union], dtype=torch.float64, device=d.device)
    dist.all_reduce(vals)
    dist.all_reduce(cnt)
    return {k: float(v / max(c, 1)) for k, v, c in zip(union, vals.tolist(), cnt.tolist())}


def _writer(cfg: TrainConfig, d: Dist, stage: str):
    if not (cfg.tensorboard and d.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; logging to metrics.jsonl only")
        return None
    return SummaryWriter(str(Path(cfg.out) / "tensorboard" / f"stage_{stage}"))


def train(cfg: TrainConfig, *, data=None, backbone=None, d: Dist | None = None) -> Path | None:
    """Run the configured stages in order; returns the final adapter (`<out>/adapter.safetensors`), or None when
    `stop_after` stopped the run early."""
    d = d or init_distributed()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2 ** 32)
    random.seed(cfg.seed)
    if data is None:
        from .cache import CachedClips
        data = CachedClips(cfg.cache)
    if d.main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        skipped = getattr(data, "index", {}).get("skipped", {})
        log.info("data: %d cached clips used%s", len(data), f", skipped while caching: {skipped}" if skipped else "")
    backbone = backbone or build_backbone(cfg, d)
    path = None
    try:
        for stage in cfg.stages:
            path = run_stage(stage, cfg, d, data, backbone)
    except StopTraining:
        return None
    if d.world > 1 and path is not None:
        _check_ranks_agree(path, cfg, d)
    if d.main and path is not None:
        final = Path(cfg.out) / "adapter.safetensors"
        tmp = final.with_name(final.name + ".tmp")
        tmp.write_bytes(Path(path).read_bytes())
        os.replace(tmp, final)
        path = final
    barrier(d)
    return path


def _check_ranks_agree(path: Path, cfg: TrainConfig, d: Dist) -> None:
    """Every rank reports a checksum of its own adapter weights; they must agree (written to rank_checksums.json)."""
    import torch.distributed as dist
    sums: list = [None] * d.world
    dist.all_gather_object(sums, _LAST_CHECKSUM.get("value"))
    if d.main:
        (Path(cfg.out) / "rank_checksums.json").write_text(json.dumps(sums))
        if len(set(sums)) != 1:
            raise RuntimeError(f"ranks ended with different adapter weights: {sums}")


_LAST_CHECKSUM: dict = {}


def checksum(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                add_help=True)
    p.add_argument("--config", default=None, help="a .toml or .json recipe (training/configs/paper.toml, tiny_cpu.toml)")
    args, rest = p.parse_known_args(argv)
    cfg = load_config(args.config, rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    d = init_distributed()
    if not d.main:
        logging.getLogger().setLevel(logging.WARNING)
    out = train(cfg, d=d)
    if d.main and out is not None:
        print(f"adapter: {out}")
    if d.world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
