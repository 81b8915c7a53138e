"""The residual terms of the category-specific residual constraints (CSRC, docs/method.md §5).

Each term is a plain function of named physical fields that returns a per-sample loss `[B]`.
Conventions: fields are `[B, c, T, H, W]` in latent units (step 1 latent pixel, 1 latent frame); vectors are
`[B, 2, ...]` with x (= W) first; tensors are `[B, 4, ...]` = `[xx, xy, xy, yy]` (so the channel sum of squares
is the Frobenius norm). Every derivative comes from `pila.fd` (docs/method.md §3).

Reduction (docs/method.md §5): a masked mean `sum(M |r|^2) / sum(M)`, `|r|^2` summed over channels, where
`M = physical mask x fd.interior_mask` (2 cells skipped at each spatial edge, the first/last frame skipped only
when the term differentiates in time) and M is detached. A sample whose `sum(M) == 0` gets 0, so T = 1 and tiny
H, W never crash: terms that cannot be formed contribute nothing.

`mask` everywhere is the optional physical mask `[B or 1, 1, T, H, W]` (None = all ones).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fd

SPACE = 2  # spatial edge cells skipped by every term (docs/method.md §3)
DELTA = 1e-8  # closure denominators (fields are O(0.01..1) in latent units)
TINY = 1e-20  # scale-free ratios (bounded gradient): far below any field's squared magnitude in fp32
RHO_FLOOR = 1e-4  # density positivity floor of the Fluid stabiliser
K_HI = 10.0  # default closure scale bound: |k| <= 10 latent units (ours)

Mask = Tensor | None


# ----------------------------------------------------------------------------------------------- reductions

def _check(f: Tensor, channels: int | None = None, name: str = "field") -> None:
    assert f.ndim == 5, f"{name} must be [B, C, T, H, W], got shape {tuple(f.shape)}"
    if channels is not None:
        assert f.shape[1] == channels, f"{name} must have {channels} channels, got shape {tuple(f.shape)}"


def valid_mask(f: Tensor, mask: Mask = None, *, time: int = 0) -> Tensor:
    """Detached `[B, 1, T, H, W]` reduction mask M: the physical mask times `fd.interior_mask(space=2, time)`."""
    _check(f)
    B, _, T, H, W = f.shape
    m = fd.interior_mask(f, space=SPACE, time=time).to(torch.float32)
    if mask is not None:
        assert mask.ndim == 5 and mask.shape[1] == 1 and tuple(mask.shape[2:]) == (T, H, W) \
            and mask.shape[0] in (1, B), \
            f"the physical mask must be [B or 1, 1, T, H, W] = [{B}, 1, {T}, {H}, {W}], got {tuple(mask.shape)}"
        m = m * mask.detach().to(device=f.device, dtype=torch.float32)
    return m.expand(B, 1, T, H, W)


def _msum(x: Tensor, m: Tensor) -> Tensor:
    """Per-sample `sum(M x)` over channels and space-time."""
    return (m * x).flatten(1).sum(1)


def masked_mean(x: Tensor, m: Tensor) -> Tensor:
    """Per-sample `sum(M x) / sum(M)` (x summed over its channels); 0 where `sum(M) == 0`."""
    num, den = _msum(x, m), m.flatten(1).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))


def masked_sq(r: Tensor, m: Tensor) -> Tensor:
    """The docs/method.md §5 reduction `sum(M |r|^2) / sum(M)`, `[B]`."""
    return masked_mean(r.square(), m)


def masked_center(f: Tensor, m: Tensor) -> Tensor:
    """`f - mean_M(f)` per sample and channel."""
    den = m.flatten(1).sum(1).clamp_min(1e-12)
    mean = (m * f).flatten(2).sum(2) / den[:, None]
    return f - mean[:, :, None, None, None]


def _frames(m: Tensor) -> Tensor:
    """Mask for forward differences between frames t and t + 1: `[B, 1, T - 1, H, W]`, mean of the two."""
    return (m[:, :, 1:] + m[:, :, :-1]) / 2


def closure(a: Tensor, b: Tensor, *, mask: Mask = None, k_lo: float | None = None, k_hi: float = K_HI,
            signed: bool = False, time: int = 0) -> Tensor:
    """Scale-free closure `L_C(a, b) = |a - k b|^2_M / (|a|^2_M + delta)` (docs/method.md §5).

    `k = clamp(<a, b>_M / (<b, b>_M + delta), k_lo, k_hi)`; `k_lo` defaults to 0 (k >= 0) or to `-k_hi` when
    `signed`. Inner products sum over channels (Frobenius for tensors). `time = 1` when a or b holds a time
    derivative. Returns `[B]`, ~0 when a is a non-negative (or any, if signed) multiple of b, ~1 when unrelated.
    """
    _check(a, name="a"), _check(b, name="b")
    assert a.shape == b.shape, f"closure needs fields of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
    if k_lo is None:
        k_lo = -k_hi if signed else 0.0
    assert signed or k_lo >= 0, f"an unsigned closure needs k_lo >= 0, got {k_lo}; pass signed=True"
    m = valid_mask(a, mask, time=time)
    aa, ab, bb = masked_mean(a * a, m), masked_mean(a * b, m), masked_mean(b * b, m)
    k = (ab / (bb + DELTA)).clamp(k_lo, k_hi)
    res = masked_sq(a - k[:, None, None, None, None] * b, m)
    return res / (aa + DELTA)


def bounded_gradient(f: Tensor, *, mask: Mask = None, factor: float = 3.0) -> Tensor:
    """Bounded-gradient prior `relu(|grad f| - 3 median|grad f|)^2 / mean(|grad f|^2)` (docs/method.md §5).

    The median is taken over the pixels where M > 0 and detached; numerator and denominator are masked means,
    so the prior is scale-free: a spike costs the same at any amplitude, a smooth field costs 0."""
    _check(f)
    g = fd.grad_norm(f, eps=TINY)  # a tiny floor keeps the ratio scale-free down to small amplitudes
    m = valid_mask(g, mask, time=0)
    med = torch.nanmedian(torch.where(m > 0, g, torch.nan).detach().flatten(1), dim=1).values
    med = torch.nan_to_num(med, nan=0.0)
    excess = F.relu(g - factor * med[:, None, None, None, None])
    return masked_sq(excess, m) / (masked_sq(g, m) + TINY)


def gradient_energy(f: Tensor, *, mask: Mask = None) -> Tensor:
    """Stabiliser `|grad f|^2` (all channels of f), `[B]`."""
    _check(f)
    m = valid_mask(f, mask, time=0)
    gx, gy = fd.grad(f)
    return masked_sq(gx, m) + masked_sq(gy, m)


# ----------------------------------------------------------------------------------------------- Rigid Body

def rigid_kinematic(d: Tensor, u: Tensor, *, mask: Mask = None) -> Tensor:
    """K: `(d[t+1] - d[t]) - (u[t] + u[t+1]) / 2` (AFE's trapezoid; exact on AFE-integrated d). Also Collision."""
    _check(d, 2, "d"), _check(u, 2, "u")
    m = _frames(valid_mask(d, mask, time=0))
    r = (d[:, :, 1:] - d[:, :, :-1]) - (u[:, :, 1:] + u[:, :, :-1]) / 2
    return masked_sq(r, m)


def strain_norm(eps: Tensor, *, mask: Mask = None) -> Tensor:
    """S: low-strain prior `|eps|^2` (Frobenius over [xx, xy, xy, yy])."""
    _check(eps, 4, "eps")
    return masked_sq(eps, valid_mask(eps, mask, time=0))


def stress_closure(sigma: Tensor, eps: Tensor, *, mask: Mask = None) -> Tensor:
    """C: Hooke-style closure `L_C(sigma, eps)`, Frobenius over the 4 channels, k >= 0 (Rigid, Elastic)."""
    _check(sigma, 4, "sigma"), _check(eps, 4, "eps")
    return closure(sigma, eps, mask=mask)


def strain_rate_norm(u: Tensor, *, mask: Mask = None) -> Tensor:
    """S: local non-rigidity `|sym grad u|^2` (rotation costs nothing)."""
    _check(u, 2, "u")
    return masked_sq(fd.sym_grad(u), valid_mask(u, mask, time=0))


# ----------------------------------------------------------------------------------------------- Elastic

def wave(f: Tensor, *, c: Tensor | float, mask: Mask = None, gauge_free: bool = False) -> Tensor:
    """P: `dtt f - c^2 lap f`; `gauge_free` subtracts the per-pixel temporal mean of the residual over the
    interior frames (removes a time-constant offset such as AFE's `d[m] = 0` anchor)."""
    _check(f)
    m = valid_mask(f, mask, time=1)
    r = fd.dtt(f) - torch.as_tensor(c, dtype=f.dtype, device=f.device) ** 2 * fd.lap(f)
    if gauge_free and f.shape[2] >= 3:
        inner = r[:, :, 1:-1]
        r = r - inner.mean(dim=2, keepdim=True)
    return masked_sq(r, m)


def elastic_wave_d(d: Tensor, *, c: Tensor | float, mask: Mask = None) -> Tensor:
    """P: `dtt d - c_E^2 lap d` minus its per-pixel temporal mean (AFE's gauge d[m] = 0)."""
    _check(d, 2, "d")
    return wave(d, c=c, mask=mask, gauge_free=True)


def elastic_wave_u(u: Tensor, *, c: Tensor | float, mask: Mask = None) -> Tensor:
    """P: `dtt u - c_E^2 lap u`."""
    _check(u, 2, "u")
    return wave(u, c=c, mask=mask)


def elastic_kinematic(eps: Tensor, d: Tensor, *, mask: Mask = None) -> Tensor:
    """K: `eps - sym grad(dt d)` (strain rate of the displacement)."""
    _check(eps, 4, "eps"), _check(d, 2, "d")
    return masked_sq(eps - fd.sym_grad(fd.dt(d)), valid_mask(d, mask, time=1))


# ----------------------------------------------------------------------------------------------- Fluid

def continuity(rho: Tensor, u: Tensor, *, mask: Mask = None) -> Tensor:
    """P: mass conservation `dt rho + div(rho u)` (Fluid, Compressible Flow)."""
    _check(rho, 1, "rho"), _check(u, 2, "u")
    return masked_sq(fd.dt(rho) + fd.div(rho * u), valid_mask(rho, mask, time=1))


fluid_continuity = continuity
compressible_continuity = continuity


def fluid_momentum(rho: Tensor, u: Tensor, p: Tensor, *, nu: Tensor | float, mask: Mask = None) -> Tensor:
    """P: Navier-Stokes-style balance `rho (dt u + (u.grad) u) + grad p - nu lap u`."""
    _check(rho, 1, "rho"), _check(u, 2, "u"), _check(p, 1, "p")
    gp = torch.cat(fd.grad(p), dim=1)
    r = rho * (fd.dt(u) + fd.advect(u, u)) + gp - nu * fd.lap(u)
    return masked_sq(r, valid_mask(u, mask, time=1))


def pressure_bound(p: Tensor, *, mask: Mask = None) -> Tensor:
    """S: bounded `|grad p|` (no pressure spikes)."""
    _check(p, 1, "p")
    return bounded_gradient(p, mask=mask)


def density_prior(rho: Tensor, *, mask: Mask = None, floor: float = RHO_FLOOR) -> Tensor:
    """S: smooth positive density `relu(1e-4 - rho)^2 + |grad rho|^2`."""
    _check(rho, 1, "rho")
    return masked_sq(F.relu(floor - rho), valid_mask(rho, mask, time=0)) + gradient_energy(rho, mask=mask)


# ----------------------------------------------------------------------------------------------- Compressible Flow

def acoustic(u: Tensor, p: Tensor, *, kappa: Tensor | float, mask: Mask = None) -> Tensor:
    """P: linear acoustics `dt(div u) + kappa lap p`."""
    _check(u, 2, "u"), _check(p, 1, "p")
    return masked_sq(fd.dt(fd.div(u)) + kappa * fd.lap(p), valid_mask(p, mask, time=1))


def eos_closure(p: Tensor, rho: Tensor, *, mask: Mask = None) -> Tensor:
    """C: barotropic equation of state `L_C(p, rho - mean_M(rho))`, k >= 0."""
    _check(p, 1, "p"), _check(rho, 1, "rho")
    return closure(p, masked_center(rho, valid_mask(rho, mask, time=0)), mask=mask)


def expansion_smoothness(u: Tensor, *, mask: Mask = None) -> Tensor:
    """S: `|grad div u|^2` (no high-frequency compression patterns)."""
    _check(u, 2, "u")
    return gradient_energy(fd.div(u), mask=mask)


# ----------------------------------------------------------------------------------------------- Phase Change

def front_advection(alpha: Tensor, u: Tensor, *, mask: Mask = None) -> Tensor:
    """P: the phase front moves with the flow, `dt alpha + u.grad alpha`."""
    _check(alpha, 1, "alpha"), _check(u, 2, "u")
    return masked_sq(fd.dt(alpha) + fd.advect(u, alpha), valid_mask(alpha, mask, time=1))


def heat_transport(T: Tensor, u: Tensor, *, a: Tensor | float, mask: Mask = None) -> Tensor:
    """P: advection-diffusion `dt T + div(u T) - a_T lap T` (Thermal)."""
    _check(T, 1, "T"), _check(u, 2, "u")
    r = fd.dt(T) + fd.div(u * T) - a * fd.lap(T)
    return masked_sq(r, valid_mask(T, mask, time=1))


def phase_energy(T: Tensor, u: Tensor, alpha: Tensor, *, a: Tensor | float, L: Tensor | float,
                 mask: Mask = None) -> Tensor:
    """P: heat transport with latent heat, `dt T + div(u T) - a_P lap T + L dt alpha`."""
    _check(T, 1, "T"), _check(u, 2, "u"), _check(alpha, 1, "alpha")
    r = fd.dt(T) + fd.div(u * T) - a * fd.lap(T) + L * fd.dt(alpha)
    return masked_sq(r, valid_mask(T, mask, time=1))


def phase_density_closure(rho: Tensor, alpha: Tensor, *, mask: Mask = None) -> Tensor:
    """C: density follows the phase, `L_C(rho - mean_M rho, alpha - mean_M alpha)` with a signed k."""
    _check(rho, 1, "rho"), _check(alpha, 1, "alpha")
    m = valid_mask(rho, mask, time=0)
    return closure(masked_center(rho, m), masked_center(alpha, m), mask=mask, signed=True)


def phase_smoothness(alpha: Tensor, *, mask: Mask = None) -> Tensor:
    """S: `|grad alpha|^2` (Phase Change, Optical)."""
    _check(alpha, 1, "alpha")
    return gradient_energy(alpha, mask=mask)


# ----------------------------------------------------------------------------------------------- Collision

collision_kinematic = rigid_kinematic


def impulse_closure(j: Tensor, u: Tensor, *, mask: Mask = None) -> Tensor:
    """C: impulse = momentum change, `L_C(j, dt u)` with k = mass >= 0."""
    _check(j, 2, "j"), _check(u, 2, "u")
    return closure(j, fd.dt(u), mask=mask, time=1)


def compression_closure(j: Tensor, d: Tensor, *, mask: Mask = None) -> Tensor:
    """C: impulse magnitude follows the compression rate, `L_C(|j|, relu(-div(dt d)))` (gauge-free), k >= 0."""
    _check(j, 2, "j"), _check(d, 2, "d")
    jn = j.square().sum(1, keepdim=True).add(1e-12).sqrt()
    return closure(jn, F.relu(-fd.div(fd.dt(d))), mask=mask, time=1)


def impulse_smoothness(j: Tensor, *, mask: Mask = None) -> Tensor:
    """S: `|grad j|^2` (impulses are spatially coherent)."""
    _check(j, 2, "j")
    return gradient_energy(j, mask=mask)


# ----------------------------------------------------------------------------------------------- Thermal

def temperature_bound(T: Tensor, *, mask: Mask = None) -> Tensor:
    """S: bounded `|grad T|` (no isolated temperature spikes)."""
    _check(T, 1, "T")
    return bounded_gradient(T, mask=mask)


# ----------------------------------------------------------------------------------------------- Optical

def optical_wave(psi: Tensor, *, c: Tensor | float, mask: Mask = None) -> Tensor:
    """P: scalar wave `dtt psi - c_O^2 lap psi`."""
    _check(psi, 1, "psi")
    return wave(psi, c=c, mask=mask)


def optical_support(psi: Tensor, alpha: Tensor, *, mask: Mask = None) -> Tensor:
    """S: no wave activity outside the support, `psi (1 - alpha)`, alpha clamped to [0, 1] and detached."""
    _check(psi, 1, "psi"), _check(alpha, 1, "alpha")
    r = psi * (1 - alpha.detach().clamp(0, 1))
    return masked_sq(r, valid_mask(psi, mask, time=0))


# ----------------------------------------------------------------------------------------------- the 29 terms by name
# the table of docs/method.md §5, one name per term (shared relations are the same function under each category's name)
rigid_strain = strain_norm
rigid_stress_closure = stress_closure
rigid_strain_rate = strain_rate_norm
elastic_stress_closure = stress_closure
fluid_pressure_bound = pressure_bound
fluid_density_prior = density_prior
compressible_acoustic = acoustic
compressible_eos_closure = eos_closure
compressible_expansion_smooth = expansion_smoothness
phase_front_advection = front_advection
phase_smooth = phase_smoothness
collision_impulse_closure = impulse_closure
collision_compression_closure = compression_closure
collision_impulse_smooth = impulse_smoothness
thermal_transport = heat_transport
thermal_bound = temperature_bound
optical_smooth = phase_smoothness
