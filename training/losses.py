"""The stage losses, the sigma draw and the physical mask of the staged training (docs/method.md §7).

Plain functions of named tensors; the training loop (training/train.py) and the physics world share them."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pila import fd
from pila.bank import ALL_PHASES, PHASES, SLOT_SLICES, active_slots
from pila.csrc import TERMS
from pila.decoder import gate
from pila.taxonomy import CATEGORIES, RECIPES

from .config import TrainConfig


def shift_sigma(s: Tensor, shift: float = 5.0) -> Tensor:
    """The time shift of Wan / SD3 flow sampling: sigma = shift s / (1 + (shift - 1) s) (1 = pure noise)."""
    return shift * s / (1 + (shift - 1) * s)


def sample_sigma(n: int, f: float = 0.0, *, shift: float = 5.0, generator: torch.Generator | None = None) -> Tensor:
    """docs/method.md §7: i uniform in {floor(f * 1000) .. 999}, s = 1 - i / 1000, sigma = shift s / (1 + (shift - 1) s).

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
    """Stage A (docs/method.md §7): confidence-weighted smooth-L1 of u vs the flow, plus the same on the spatial Jacobian.

    u, flow `[B, 2, T, H, W]` (latent pixels per latent frame, x first); flow_jac `[B, 4, ...]`; conf `[B, 1, ...]`."""
    assert u.shape == flow.shape, f"u {tuple(u.shape)} and the flow target {tuple(flow.shape)} must match"
    w = conf.detach().float()
    l_flow = _weighted_smooth_l1(u, flow, w, beta)
    l_jac = _weighted_smooth_l1(jacobian(u.float()), flow_jac, w, beta)
    return l_flow + jacobian_weight * l_jac, {"flow": l_flow.detach(), "jacobian": l_jac.detach()}


# Stage B: each phase's local residual relations (ours: the docs/method.md §5 terms whose fields that phase constructs)
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
    """Stage B (docs/method.md §7): sum over started phases of weight x their relations (pila.csrc.TERMS) on AFE fields."""
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
    """Stage C warm-ups (docs/method.md §7) at optimizer step `step`."""
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


def normalise_energy(E: Tensor) -> Tensor:
    """`0.08 + 0.92 clamp(E / q0.9(E), 0, 1)` per sample (docs/method.md §7), detached."""
    E = E.detach().float()
    q = torch.quantile(E.flatten(1), 0.9, dim=1).clamp_min(1e-8)
    return 0.08 + 0.92 * (E / q.view(-1, 1, 1, 1, 1)).clamp(0, 1)


def boot_mask(v: Tensor, x0_hat: Tensor) -> Tensor:
    """M_boot from the frozen velocity v and x0_hat: E = 0.55 |dt v| + 0.25 |dt x0| + 0.20 (|dy v| + |dx v|) / 2."""
    v, x0 = v.detach().float(), x0_hat.detach().float()
    E = (0.55 * fd.dt(v).abs() + 0.25 * fd.dt(x0).abs() + 0.10 * (fd.dy(v).abs() + fd.dx(v).abs())).mean(1, keepdim=True)
    return normalise_energy(E)


def routed_field_mask(bank: Tensor, selected: Tensor | None = None, *, active: tuple[str, ...] | None = None) -> Tensor:
    """M_phys: the mask of the active routed fields (docs/method.md §7): 0.65 temporal change + 0.25 event magnitude
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
