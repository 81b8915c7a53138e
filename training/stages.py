"""Each stage's forward and loss as one module call (so DDP / FSDP / DeepSpeed wrap one thing), what each stage
trains, and its schedule knobs at a given optimizer step (docs/method.md §7)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pila import PILAAdapter
from pila.bank import active_slots
from pila.taxonomy import CATEGORIES

from .config import TrainConfig
from .losses import (boot_mask, physical_mask, routed_field_mask, stage_a_loss, stage_b_loss, stage_b_weights,
                     stage_c_loss, stage_c_schedule)


STAGE_TRAINS = {  # adapter.param_groups() names each stage optimises (C: everything)
    "A": ("encoder", "u_head"),
    "B": ("constructors",),
    "C": ("encoder", "u_head", "constructors", "condition", "router", "experts", "decoder", "csrc"),
}


def freeze_for_stage(adapter: PILAAdapter, stage: str) -> list[nn.Parameter]:
    """requires_grad on exactly the groups `stage` trains (set once, before its optimizer is built); -> those."""
    groups = adapter.param_groups()
    adapter.requires_grad_(False)
    trained = [p for name in STAGE_TRAINS[stage] for p in groups[name]]
    for p in trained:
        p.requires_grad_(True)
    return trained


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
        """adapter.forward (docs/method.md §3-6) with the routed CSRC loss: the physical mask reads this call's routed bank,
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


def stage_length(stage: str, cfg: TrainConfig, n: int, G: int) -> int:
    if stage == "A":
        return len(cfg.a_ranges) * cfg.steps(cfg.a_phase_steps)
    if stage == "B":
        return cfg.steps(cfg.b_steps)
    return cfg.c_steps if cfg.c_steps > 0 else max(1, math.ceil(cfg.c_epochs * n / G))


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
