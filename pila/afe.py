"""Anchored field estimation (AFE): scaffold + feature h -> the physical attribute bank (SPEC section 3).

Kinematic anchor first (u from the scaffold's u slot), then descriptors of u (div, curl, strain), then the
constructors, each a 1x1x1 MLP of named inputs. Fields are `[B, c, T, H, W]`, vectors x (= W) first;
time step 1 latent frame, spatial step 1 latent pixel.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import fd
from .bank import ALL_PHASES, BANK_CHANNELS, SLOT_SLICES, active_slots, pack
from .encoder import cat_conv1x1, conv1x1


def integrate_displacement(u: Tensor) -> Tensor:
    """Trapezoidal time integral of u anchored at the middle frame m = T // 2 (SPEC section 3).

    `d[m] = 0`, `d[t+1] = d[t] + (u[t] + u[t+1]) / 2` forward, and the mirror backward. Exact for velocities
    linear in time. Computed in float32 (a running sum), returned in u's dtype. T = 1 gives d = 0."""
    assert u.ndim == 5, f"u must be [B, 2, T, H, W], got {tuple(u.shape)}"
    T = u.shape[2]
    if T < 2:
        return torch.zeros_like(u)
    m = T // 2
    uf = u.float()
    step = (uf[:, :, 1:] + uf[:, :, :-1]) / 2  # step[t] carries d from frame t to t + 1
    after = step[:, :, m:].cumsum(dim=2)  # d[m+1 .. T-1]
    before = -step[:, :, :m].flip(2).cumsum(dim=2).flip(2)  # d[0 .. m-1]
    zero = uf.new_zeros(uf.shape[0], uf.shape[1], 1, *uf.shape[3:])
    return torch.cat([before, zero, after], dim=2).to(u.dtype)


def stress_closure(p: Tensor, eps: Tensor, *, mu: float = 1.0, lam: float = 1.0) -> Tensor:
    """sigma = -p I + 2 mu eps + lam tr(eps) I, in the `[xx, xy, xy, yy]` layout (SPEC section 3)."""
    assert eps.shape[1] == 4 and p.shape[1] == 1, f"need p [B,1,...] and eps [B,4,...], got {p.shape}, {eps.shape}"
    exx, exy, eyx, eyy = eps.unbind(dim=1)
    tr, p = exx + eyy, p[:, 0]
    sxx = -p + 2 * mu * exx + lam * tr
    syy = -p + 2 * mu * eyy + lam * tr
    return torch.stack([sxx, 2 * mu * exy, 2 * mu * eyx, syy], dim=1)


class PointMLP(nn.Module):
    """A 1x1x1 MLP of named inputs: in -> hidden -> hidden -> out with SiLU (an AFE constructor)."""

    def __init__(self, dim_in: int, dim_out: int, hidden: int):
        super().__init__()
        self.proj = conv1x1(dim_in, hidden)
        self.net = nn.Sequential(nn.SiLU(), conv1x1(hidden, hidden), nn.SiLU(), conv1x1(hidden, dim_out))

    def forward(self, *parts: Tensor) -> Tensor:
        return self.net(cat_conv1x1(self.proj, list(parts)))


class UHead(nn.Module):
    """Kinematic anchor: the 4-channel u scaffold slot -> u = (ux, uy), 1x1x1 convs 4 -> 64 -> 2."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        width = SLOT_SLICES["u"].stop - SLOT_SLICES["u"].start
        self.net = nn.Sequential(conv1x1(width, hidden), nn.SiLU(), conv1x1(hidden, 2))

    def forward(self, bank: Tensor) -> Tensor:
        """Reads the u slot of any bank-layout tensor (scaffold, AFE bank, refined bank, expert view)."""
        assert bank.ndim == 5 and bank.shape[1] == BANK_CHANNELS, \
            f"need a [B, 32, T, H, W] bank, got {tuple(bank.shape)}"
        return self.net(bank[:, SLOT_SLICES["u"]])


class AFE(nn.Module):
    """(h, scaffold) -> AFE bank `[B, 32, T, H, W]` plus its physical fields (SPEC section 3).

    Only the slots of `active_phase` (bank.active_slots) are constructed; the others are zero in the bank
    (staged recovery, "only-u" policy). The u slot keeps the raw 4-channel scaffold so that u_head can read
    u from any later bank (the refined bank, an expert's view)."""

    def __init__(self, hidden: int = 128, *, u_hidden: int = 64, mu: float = 1.0, lam: float = 1.0):
        super().__init__()
        H, half = hidden, hidden // 2
        self.mu, self.lam = mu, lam
        self.u_head = UHead(u_hidden)
        self.constructors = nn.ModuleDict({
            "p": PointMLP(H + 5, 1, half),  # [h, u, |u|, div u, curl u]
            "rho": PointMLP(H + 5, 1, half),
            "alpha": PointMLP(H + 2 + 1 + 2, 1, half),  # [h, u, rho, d]
            "T": PointMLP(H + 2 + 1 + 1, 1, half),  # [h, u, rho, alpha]
            "j": PointMLP(H + 2 + 2 + 1 + 1 + 4 + 4, 2, half),  # [h, d, u, p, rho, eps, sigma]
            "psi": PointMLP(H + 1, 1, half),  # [h, alpha]
        })

    def forward(self, h: Tensor, scaffold: Tensor, *,
                active_phase: int = ALL_PHASES) -> tuple[Tensor, dict[str, Tensor]]:
        assert h.shape[0] == scaffold.shape[0] and h.shape[2:] == scaffold.shape[2:], \
            f"h {tuple(h.shape)} and scaffold {tuple(scaffold.shape)} must share B, T, H, W"
        active = active_slots(active_phase)
        c = self.constructors
        u = self.u_head(scaffold)
        u_norm = (u.float().square().sum(dim=1, keepdim=True) + 1e-8).sqrt().to(u.dtype)
        div, curl, eps = fd.div(u), fd.curl(u), fd.sym_grad(u)
        # under (bf16) autocast d and the bank stay fp32, so the residuals read d as integrated, not re-rounded
        amp = u.device.type in ("cpu", "cuda", "xpu") and torch.is_autocast_enabled(u.device.type)
        f: dict[str, Tensor] = {"u": u, "eps": eps, "d": integrate_displacement(u.float() if amp else u)}

        p = c["p"](h, u, u_norm, div, curl)
        f["p"] = p - p.mean(dim=(1, 2, 3, 4), keepdim=True)  # pressure is defined up to a constant
        f["rho"] = F.softplus(c["rho"](h, u, u_norm, div, curl)) + 1e-4
        f["sigma"] = stress_closure(f["p"], eps, mu=self.mu, lam=self.lam)
        if "alpha" in active:
            f["alpha"] = torch.sigmoid(c["alpha"](h, u, f["rho"], f["d"]))
        if "T" in active:
            f["T"] = c["T"](h, u, f["rho"], f["alpha"])
        if "j" in active:
            f["j"] = c["j"](h, f["d"], u, f["p"], f["rho"], eps, f["sigma"])
        if "psi" in active:
            f["psi"] = c["psi"](h, f["alpha"])

        slots = {k: v for k, v in f.items() if k != "u"}
        slots["u"] = scaffold[:, SLOT_SLICES["u"]]  # raw scaffold; u_head reads it back
        bank = pack(slots, like=scaffold.float() if amp else scaffold, active=active)
        return bank, {k: v for k, v in f.items() if k in active}
