"""Category-specific residual constraints (CSRC): per-category losses and the routed loss (docs/method.md §5).

A category's loss is the sum of its terms with weight 1 (Eq. 6); the routed loss (Eq. 7) sums, per sample, the
losses of the experts that are both selected by the router and labelled, weighted by the router weights
renormalised over that set, and averages over the samples that have at least one such expert. Everything runs
in fp32 whatever the input dtype.

Fields (readouts of `B + dB_k`, docs/method.md §2): d, u, j `[n, 2, T, H, W]` (x first); p, rho, T, alpha, psi
`[n, 1, T, H, W]`; eps, sigma `[n, 4, T, H, W]` = `[xx, xy, xy, yy]`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import residuals as R
from .taxonomy import CATEGORIES, NUM_CATEGORIES

FIELD_CHANNELS = {"d": 2, "u": 2, "p": 1, "rho": 1, "T": 1, "alpha": 1, "eps": 4, "sigma": 4, "j": 2, "psi": 1}


def _logit(x: float) -> float:
    return math.log(x / (1 - x))


class CSRCConstants(nn.Module):
    """Learnable latent-scale constants, each `lo + (hi - lo) * sigmoid(raw)` (docs/method.md §5, trained in Stage C).

    c_E, c_O in [0.25, 4] (init 1): elastic / optical wave speeds; nu, a_P, a_T in [0, 0.5] (init 1e-3): viscosity,
    phase and thermal diffusivities; kappa in [0.1, 10] (init 1): acoustic stiffness; L in [-2, 2] (init 0):
    signed latent heat, so the Phase Change energy term starts without a latent-heat coupling (the sign is
    unknown a priori; 0 sits where the bounded map has its largest slope, so the data picks the sign).
    """

    BOUNDS: dict[str, tuple[float, float, float]] = {  # name: (lo, hi, init)
        "c_E": (0.25, 4.0, 1.0),
        "c_O": (0.25, 4.0, 1.0),
        "nu": (0.0, 0.5, 1e-3),
        "a_P": (0.0, 0.5, 1e-3),
        "a_T": (0.0, 0.5, 1e-3),
        "kappa": (0.1, 10.0, 1.0),
        "L": (-2.0, 2.0, 0.0),
    }

    def __init__(self, **init: float):
        super().__init__()
        unknown = sorted(set(init) - set(self.BOUNDS))
        assert not unknown, f"unknown CSRC constants {unknown}; known: {list(self.BOUNDS)}"
        for name, (lo, hi, default) in self.BOUNDS.items():
            v = float(init.get(name, default))
            assert lo < v < hi, f"{name} = {v} must lie strictly inside ({lo}, {hi})"
            # stored as [1], not 0-dim: DeepSpeed's parameter broadcast views every parameter as bytes
            self.register_parameter(f"raw_{name}", nn.Parameter(torch.tensor([_logit((v - lo) / (hi - lo))])))

    def value(self, name: str) -> Tensor:
        lo, hi, _ = self.BOUNDS[name]
        return (lo + (hi - lo) * torch.sigmoid(getattr(self, f"raw_{name}").float())).squeeze(0)  # a 0-dim value

    c_E = property(lambda self: self.value("c_E"))
    c_O = property(lambda self: self.value("c_O"))
    nu = property(lambda self: self.value("nu"))
    a_P = property(lambda self: self.value("a_P"))
    a_T = property(lambda self: self.value("a_T"))
    kappa = property(lambda self: self.value("kappa"))
    L = property(lambda self: self.value("L"))

    def as_dict(self) -> dict[str, float]:
        """Bounded values as floats, for logging."""
        return {n: float(self.value(n).detach()) for n in self.BOUNDS}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:.4g}" for k, v in self.as_dict().items())


Term = Callable[[dict[str, Tensor], CSRCConstants, "Tensor | None"], Tensor]

# term name -> (fields it reads, its residual); table order of docs/method.md §5
TERMS: dict[str, tuple[tuple[str, ...], Term]] = {
    # Rigid Body
    "rigid_kinematic": (("d", "u"), lambda f, c, m: R.rigid_kinematic(f["d"], f["u"], mask=m)),
    "rigid_strain": (("eps",), lambda f, c, m: R.rigid_strain(f["eps"], mask=m)),
    "rigid_stress_closure": (("sigma", "eps"), lambda f, c, m: R.rigid_stress_closure(f["sigma"], f["eps"], mask=m)),
    "rigid_strain_rate": (("u",), lambda f, c, m: R.rigid_strain_rate(f["u"], mask=m)),
    # Elastic
    "elastic_wave_d": (("d",), lambda f, c, m: R.elastic_wave_d(f["d"], c=c.c_E, mask=m)),
    "elastic_wave_u": (("u",), lambda f, c, m: R.elastic_wave_u(f["u"], c=c.c_E, mask=m)),
    "elastic_kinematic": (("eps", "d"), lambda f, c, m: R.elastic_kinematic(f["eps"], f["d"], mask=m)),
    "elastic_stress_closure": (("sigma", "eps"),
                               lambda f, c, m: R.elastic_stress_closure(f["sigma"], f["eps"], mask=m)),
    # Fluid
    "fluid_continuity": (("rho", "u"), lambda f, c, m: R.fluid_continuity(f["rho"], f["u"], mask=m)),
    "fluid_momentum": (("rho", "u", "p"), lambda f, c, m: R.fluid_momentum(f["rho"], f["u"], f["p"], nu=c.nu, mask=m)),
    "fluid_pressure_bound": (("p",), lambda f, c, m: R.fluid_pressure_bound(f["p"], mask=m)),
    "fluid_density_prior": (("rho",), lambda f, c, m: R.fluid_density_prior(f["rho"], mask=m)),
    # Compressible Flow
    "compressible_continuity": (("rho", "u"), lambda f, c, m: R.compressible_continuity(f["rho"], f["u"], mask=m)),
    "compressible_acoustic": (("u", "p"),
                              lambda f, c, m: R.compressible_acoustic(f["u"], f["p"], kappa=c.kappa, mask=m)),
    "compressible_eos_closure": (("p", "rho"), lambda f, c, m: R.compressible_eos_closure(f["p"], f["rho"], mask=m)),
    "compressible_expansion_smooth": (("u",), lambda f, c, m: R.compressible_expansion_smooth(f["u"], mask=m)),
    # Phase Change
    "phase_front_advection": (("alpha", "u"), lambda f, c, m: R.phase_front_advection(f["alpha"], f["u"], mask=m)),
    "phase_energy": (("T", "u", "alpha"),
                     lambda f, c, m: R.phase_energy(f["T"], f["u"], f["alpha"], a=c.a_P, L=c.L, mask=m)),
    "phase_density_closure": (("rho", "alpha"), lambda f, c, m: R.phase_density_closure(f["rho"], f["alpha"], mask=m)),
    "phase_smooth": (("alpha",), lambda f, c, m: R.phase_smooth(f["alpha"], mask=m)),
    # Collision
    "collision_kinematic": (("d", "u"), lambda f, c, m: R.collision_kinematic(f["d"], f["u"], mask=m)),
    "collision_impulse_closure": (("j", "u"), lambda f, c, m: R.collision_impulse_closure(f["j"], f["u"], mask=m)),
    "collision_compression_closure": (("j", "d"),
                                      lambda f, c, m: R.collision_compression_closure(f["j"], f["d"], mask=m)),
    "collision_impulse_smooth": (("j",), lambda f, c, m: R.collision_impulse_smooth(f["j"], mask=m)),
    # Thermal
    "thermal_transport": (("T", "u"), lambda f, c, m: R.thermal_transport(f["T"], f["u"], a=c.a_T, mask=m)),
    "thermal_bound": (("T",), lambda f, c, m: R.thermal_bound(f["T"], mask=m)),
    # Optical
    "optical_wave": (("psi",), lambda f, c, m: R.optical_wave(f["psi"], c=c.c_O, mask=m)),
    "optical_support": (("psi", "alpha"), lambda f, c, m: R.optical_support(f["psi"], f["alpha"], mask=m)),
    "optical_smooth": (("alpha",), lambda f, c, m: R.optical_smooth(f["alpha"], mask=m)),
}

CATEGORY_TERMS: dict[str, tuple[str, ...]] = {
    "Rigid Body": ("rigid_kinematic", "rigid_strain", "rigid_stress_closure", "rigid_strain_rate"),
    "Elastic": ("elastic_wave_d", "elastic_wave_u", "elastic_kinematic", "elastic_stress_closure"),
    "Fluid": ("fluid_continuity", "fluid_momentum", "fluid_pressure_bound", "fluid_density_prior"),
    "Compressible Flow": ("compressible_continuity", "compressible_acoustic", "compressible_eos_closure",
                          "compressible_expansion_smooth"),
    "Phase Change": ("phase_front_advection", "phase_energy", "phase_density_closure", "phase_smooth"),
    "Collision": ("collision_kinematic", "collision_impulse_closure", "collision_compression_closure",
                  "collision_impulse_smooth"),
    "Thermal": ("thermal_transport", "thermal_bound"),
    "Optical": ("optical_wave", "optical_support", "optical_smooth"),
}
assert tuple(CATEGORY_TERMS) == CATEGORIES and sum(map(len, CATEGORY_TERMS.values())) == len(TERMS) == 29


def category_fields(category: str) -> tuple[str, ...]:
    """The fields a category's terms read."""
    return tuple(dict.fromkeys(n for t in CATEGORY_TERMS[_category(category)] for n in TERMS[t][0]))


def _category(category: str | int) -> str:
    if isinstance(category, int):
        return CATEGORIES[category]
    if category not in CATEGORY_TERMS:
        from .taxonomy import category_index
        return CATEGORIES[category_index(category)]
    return category


def _fp32_fields(fields: dict[str, Tensor], names) -> dict[str, Tensor]:
    out = {}
    for n in names:
        if n not in fields:
            raise KeyError(f"CSRC needs field {n!r} (got {sorted(fields)}); pass the readout of B + dB_k")
        f = fields[n]
        assert f.ndim == 5 and f.shape[1] == FIELD_CHANNELS[n], \
            f"field {n!r} must be [n, {FIELD_CHANNELS[n]}, T, H, W], got {tuple(f.shape)}"
        out[n] = f.float()
    return out


def category_terms(category: str | int, fields: dict[str, Tensor], *, consts: CSRCConstants,
                   mask: Tensor | None = None) -> dict[str, Tensor]:
    """{term name: per-sample loss [n]} for one category (docs/method.md §5, fp32)."""
    category = _category(category)
    f = _fp32_fields(fields, category_fields(category))
    m = None if mask is None else mask.float()
    with torch.autocast(device_type=next(iter(f.values())).device.type, enabled=False):
        return {t: TERMS[t][1](f, consts, m) for t in CATEGORY_TERMS[category]}


def category_loss(category: str | int, fields: dict[str, Tensor], *, consts: CSRCConstants,
                  mask: Tensor | None = None) -> Tensor:
    """Eq. 6: the sum of the category's terms (weight 1 each), `[n]`."""
    return torch.stack(list(category_terms(category, fields, consts=consts, mask=mask).values())).sum(0)


def routed_csrc_loss(views: dict[int, tuple[Tensor, dict[str, Tensor]]], weights: Tensor, labels: Tensor, *,
                     consts: CSRCConstants, mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 7, the routed CSRC loss.

    views: {expert k: (LongTensor sample indices that selected k, readout fields of B + dB_k for them)};
    weights: `[B, 8]` dense router weights (0 where unselected); labels: `[B, 8]` multi-hot;
    mask: physical mask `[B or 1, 1, T, H, W]` or None.
    Per sample: sum over experts both selected and labelled of their category loss, weighted by the router
    weights renormalised over that set (gradients reach the router); averaged over samples that have at least
    one such expert. Returns (scalar fp32 loss, {"csrc/<category>": mean loss, "csrc/<term>": mean term} detached).
    A batch without any such expert gives an exact 0 that keeps the graph (`weights.sum() * 0`).
    """
    assert weights.ndim == 2 and weights.shape[1] == NUM_CATEGORIES, \
        f"weights must be [B, {NUM_CATEGORIES}], got {tuple(weights.shape)}"
    assert labels.shape == weights.shape, f"labels {tuple(labels.shape)} must match weights {tuple(weights.shape)}"
    B = weights.shape[0]
    w32, lab = weights.float(), labels.float() > 0.5
    losses = w32.new_zeros(B, NUM_CATEGORIES)
    active = torch.zeros(B, NUM_CATEGORIES, dtype=torch.bool, device=weights.device)
    log: dict[str, Tensor] = {}
    for k, (idx, fields) in sorted(views.items()):
        assert 0 <= k < NUM_CATEGORIES, f"expert index {k} out of range 0..{NUM_CATEGORIES - 1}"
        idx = idx.to(device=weights.device, dtype=torch.long).flatten()
        keep = lab[idx, k]
        if not bool(keep.any()):
            continue
        sel = idx[keep]
        sub = {n: f[keep.to(f.device)] for n, f in fields.items()}
        m = None if mask is None or mask.shape[0] == 1 else mask[sel.to(mask.device)]  # [1, ...] broadcasts
        if mask is not None and mask.shape[0] == 1:
            m = mask
        terms = category_terms(k, sub, consts=consts, mask=m)
        loss_k = torch.stack(list(terms.values())).sum(0).to(losses.device)
        losses = losses.index_put((sel, torch.full_like(sel, k)), loss_k)
        active[sel, k] = True
        log[f"csrc/{CATEGORIES[k]}"] = loss_k.detach().mean()
        log.update({f"csrc/{t}": v.detach().mean() for t, v in terms.items()})
    valid = active.any(1)
    if not bool(valid.any()):
        return weights.float().sum() * 0, log
    w = torch.where(active, w32, torch.zeros_like(w32))
    wn = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    per_sample = (wn * losses).sum(1)
    return per_sample[valid].mean(), log
