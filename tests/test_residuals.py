"""Each of the 29 CSRC terms (SPEC section 5) on the reference field of SPEC's last column, where it must be
~0 up to discretisation, and on a perturbed field, where it must be clearly larger.

Fields are built analytically in float64 on a latent-like grid (1 cell = 1 latent pixel, 1 frame) and evaluated
in float32 through `pila.csrc.TERMS`, so the name -> residual wiring is tested with the physics.
Run `python tests/test_residuals.py` to print the table of measured values.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pila import fd  # noqa: E402
from pila import residuals as R  # noqa: E402
from pila.csrc import CATEGORY_TERMS, FIELD_CHANNELS, TERMS, CSRCConstants  # noqa: E402

D = torch.float64
T_, H_, W_ = 16, 36, 36  # the interior (2 cells skipped) is 32 x 32: whole periods of k = 2 pi / 32
K = 2 * math.pi / 32
CX = CY = 17.5  # centre of the grid


def grid(T: int = T_, H: int = H_, W: int = W_):
    t, y, x = torch.meshgrid(torch.arange(T, dtype=D), torch.arange(H, dtype=D), torch.arange(W, dtype=D),
                             indexing="ij")
    return t[None, None], y[None, None], x[None, None]


def vec(a, b):
    return torch.cat([a.expand_as(b) if a.numel() < b.numel() else a, b.expand_as(a) if b.numel() < a.numel() else b],
                     dim=1)


def afe_displacement(u: torch.Tensor) -> torch.Tensor:
    """SPEC section 3: d[m] = 0 at m = T // 2, trapezoidal integral of u forward and backward."""
    T = u.shape[2]
    m = T // 2
    d = [None] * T
    d[m] = torch.zeros_like(u[:, :, m])
    for t in range(m, T - 1):
        d[t + 1] = d[t] + (u[:, :, t] + u[:, :, t + 1]) / 2
    for t in range(m, 0, -1):
        d[t - 1] = d[t] - (u[:, :, t - 1] + u[:, :, t]) / 2
    return torch.stack(d, dim=2)


def hooke(eps: torch.Tensor, p: torch.Tensor | float = 0.0, mu: float = 1.0, lam: float = 1.0) -> torch.Tensor:
    """AFE's stress closure (SPEC section 3): diagonal -p + 2 mu e_ii + lam tr, off-diagonal 2 mu exy."""
    tr = eps[:, 0:1] + eps[:, 3:4]
    return torch.cat([-p + 2 * mu * eps[:, 0:1] + lam * tr, 2 * mu * eps[:, 1:2], 2 * mu * eps[:, 2:3],
                      -p + 2 * mu * eps[:, 3:4] + lam * tr], dim=1)


# ------------------------------------------------------------------------------------------ reference fields

def rigid_motion():
    """Rigid rotation (omega = 0.02) about a centre translating at V = (0.3, -0.2): the Eulerian velocity."""
    t, y, x = grid()
    w, vx, vy = 0.02, 0.3, -0.2
    cx, cy = CX + vx * t, CY + vy * t
    return vec(-w * (y - cy) + vx, w * (x - cx) + vy)


def rigid_displacement(w: float = 0.02, vx: float = 0.3, vy: float = -0.2):
    """The exact time integral of `rigid_motion`'s velocity at each pixel, 0 at m = T // 2 (no quadrature rule)."""
    t, y, x = grid()
    m = T_ // 2
    return vec((-w * (y - CY) + vx) * (t - m) + w * vy * (t**2 - m**2) / 2,
               (w * (x - CX) + vy) * (t - m) - w * vx * (t**2 - m**2) / 2)


def shear():
    t, y, x = grid()
    return vec(0.02 * (x - CX), -0.02 * (y - CY)) * torch.ones_like(t)


def hooke_shear(p=0.0):
    """Trace-free shear u = 0.1 (sin ky, sin kx): eps from fd, sigma = Hooke with p = 0 is 2 eps."""
    t, y, x = grid()
    u = vec(0.1 * torch.sin(K * y), 0.1 * torch.sin(K * x)) * torch.ones_like(t)
    eps = fd.sym_grad(u)
    return {"sigma": hooke(eps, p), "eps": eps}


def elastic_wave(c: float = 1.0):
    """Displacement wave D = 0.5 sin(k (x - c t)) (x and 0.3 x in y); u = dt D analytic; d by AFE; eps = sym grad u."""
    t, y, x = grid()
    ph = K * (x - c * t)
    ud = -0.5 * K * c * torch.cos(ph) * torch.ones_like(y)
    u = vec(ud, 0.3 * ud)
    return {"u": u, "d": afe_displacement(u), "eps": fd.sym_grad(u)}


def taylor_green(nu: float, sign: float = 1.0):
    t, y, x = grid()
    F = torch.exp(-2 * nu * K**2 * t)
    u = 0.5 * F * vec(torch.sin(K * x) * torch.cos(K * y), -torch.cos(K * x) * torch.sin(K * y))
    p = sign * 0.25 * 0.25 * F**2 * (torch.cos(2 * K * x) + torch.cos(2 * K * y))
    return {"u": u, "p": p, "rho": torch.ones_like(p)}


def front(v: float = 0.7, axis: str = "x"):
    t, y, x = grid()
    s = x if axis == "x" else y
    return torch.sigmoid((s - 10 - v * t) / 3) * torch.ones_like(x if axis == "y" else y)


def heat_kernel(a: float, U=(0.3, 0.2), t0: float = 20.0):
    """Advected heat kernel, peak 1 at t = 0: solves dt T + div(U T) = a lap T for constant U."""
    t, y, x = grid()
    s = 4 * a * (t + t0)
    r2 = (x - 12 - U[0] * t) ** 2 + (y - 14 - U[1] * t) ** 2
    return t0 / (t + t0) * torch.exp(-r2 / s)


def const_u(U=(0.3, 0.2)):
    t, y, x = grid()
    return vec(torch.full_like(x, U[0]), torch.full_like(x, U[1])) * torch.ones_like(t)


def collision_velocity():
    t, y, x = grid()
    m = T_ // 2
    ux = 0.8 * torch.tanh((t - m) / 2) * torch.ones_like(x) * torch.ones_like(y)
    dux = 0.4 / torch.cosh((t - m) / 2) ** 2 * torch.ones_like(x) * torch.ones_like(y)
    return vec(ux, torch.zeros_like(ux)), vec(dux, torch.zeros_like(dux))


def collision_displacement(scale: float = 1.0):
    """The exact time integral of `collision_velocity` (1.6 ln cosh((t - m) / 2)), 0 at m = T // 2."""
    t, y, x = grid()
    dx = scale * 1.6 * torch.log(torch.cosh((t - T_ // 2) / 2)) * torch.ones_like(x) * torch.ones_like(y)
    return vec(dx, torch.zeros_like(dx))


def converging_pulse():
    """u = -0.1 g(t) (x - x0) exp(-r^2 / 2 s^2): inflow towards the centre, peaking at frame 8 (tau = 4)."""
    t, y, x = grid()
    g = torch.exp(-((t - 8) ** 2) / (2 * 4.0**2))
    bump = torch.exp(-((x - CX) ** 2 + (y - CY) ** 2) / (2 * 6.0**2))
    return -0.1 * g * bump * vec(x - CX, y - CY)


def disk(radius: float, width: float = 1.0):
    t, y, x = grid()
    r = ((x - CX) ** 2 + (y - CY) ** 2).sqrt()
    return torch.sigmoid((radius - r) / width) * torch.ones_like(t)


def wave(c: float = 1.0, amp: float = 1.0):
    t, y, x = grid()
    return amp * torch.sin(K * (x - c * t)) * torch.ones_like(y)


def _pressure_spike():
    p = taylor_green(0.1)["p"].clone()
    p[:, :, :, 20, 15] += p.abs().max()
    return p


def _smooth_T():
    t, y, x = grid()
    return 1 + 0.3 * torch.sin(K * x) * torch.cos(K * y) * torch.exp(-0.01 * t)


def _spiky_T():
    T = _smooth_T().clone()
    T[:, :, :, 14, 22] += 0.3
    return T


def _phase_energy(L: float, a: float, sign: float):
    """Heat kernel advected by U plus the latent-heat response: T = G - sign 0.02 L t, alpha = 0.3 + 0.02 t."""
    t, y, x = grid()
    alpha = (0.3 + 0.02 * t) * torch.ones_like(x) * torch.ones_like(y)
    return {"T": heat_kernel(a) - sign * 0.02 * L * t, "u": const_u(), "alpha": alpha}


def _phase_energy_spec(L: float, sign: float):
    """SPEC's field: u = 0, alpha = 0.3 + 0.02 t, T = 1 - 0.02 L t (sign -1: T rises instead)."""
    t, y, x = grid()
    one = torch.ones_like(x) * torch.ones_like(y)
    return {"T": (1 - sign * 0.02 * L * t) * one, "u": const_u((0.0, 0.0)), "alpha": (0.3 + 0.02 * t) * one}


def _compression(sign: float):
    u = converging_pulse()
    j = 3 * torch.relu(-sign * fd.div(u))
    return {"j": vec(j, torch.zeros_like(j)), "d": afe_displacement(u)}


def _expansion():
    t, y, x = grid()
    return 0.05 * vec(x - CX, y - CY) * torch.ones_like(t)


def _ripples():
    t, y, x = grid()
    return _expansion() + 0.1 * vec(torch.sin(K * x), torch.sin(K * y))


def _support(psi_radius_ok: bool):
    t, y, x = grid()
    psi = wave() * torch.exp(-((x - CX) ** 2 + (y - CY) ** 2) / (2 * 3.0**2))
    return {"psi": psi, "alpha": disk(14.0 if psi_radius_ok else 3.0)}


# term -> (constants, reference fields, perturbed fields, what the perturbation is)
NU, A_T, L_HEAT = 0.1, 0.3, 1.5
CASES: dict[str, tuple[dict, callable, callable, str]] = {
    "rigid_kinematic": ({}, lambda: {"u": rigid_motion(), "d": rigid_displacement()},
                        lambda: {"u": rigid_motion(), "d": rigid_displacement(w=0.025)},
                        "d of a rotation at omega 0.025"),
    "rigid_strain": ({}, lambda: {"eps": fd.sym_grad(rigid_motion())},
                     lambda: {"eps": fd.sym_grad(rigid_motion() + shear())}, "rotation + shear 0.02"),
    "rigid_stress_closure": ({}, lambda: hooke_shear(),
                             lambda: hooke_shear(p=0.02 * torch.cos(K * grid()[2]) * torch.cos(K * grid()[1])),
                             "sigma with an unrelated p"),
    "rigid_strain_rate": ({}, lambda: {"u": rigid_motion()}, lambda: {"u": rigid_motion() + shear()},
                          "rotation + shear 0.02"),
    "elastic_wave_d": ({}, lambda: elastic_wave(1.0), lambda: elastic_wave(2.0), "wave at speed 2"),
    "elastic_wave_u": ({}, lambda: elastic_wave(1.0), lambda: elastic_wave(2.0), "wave at speed 2"),
    "elastic_kinematic": ({}, lambda: elastic_wave(1.0),
                          lambda: {**elastic_wave(1.0), "eps": 2 * elastic_wave(1.0)["eps"]}, "eps doubled"),
    "elastic_stress_closure": ({}, lambda: hooke_shear(),
                               lambda: hooke_shear(p=0.02 * torch.cos(K * grid()[2]) * torch.cos(K * grid()[1])),
                               "sigma with an unrelated p"),
    "fluid_continuity": ({}, lambda: {"rho": 1 + 0.3 * torch.sin(K * (grid()[2] - 0.5 * grid()[0])) + 0 * grid()[1],
                                      "u": const_u((0.5, 0.0))},
                         lambda: {"rho": 1 + 0.3 * torch.sin(K * (grid()[2] - 0.5 * grid()[0])) + 0 * grid()[1],
                                  "u": const_u((-0.5, 0.0))}, "u reversed"),
    "fluid_momentum": ({"nu": NU}, lambda: taylor_green(NU), lambda: taylor_green(NU, sign=-1.0), "p reversed"),
    "fluid_pressure_bound": ({}, lambda: {"p": taylor_green(NU)["p"]}, lambda: {"p": _pressure_spike()},
                             "one-pixel spike"),
    "fluid_density_prior": ({}, lambda: {"rho": torch.ones(1, 1, T_, H_, W_, dtype=D)},
                            lambda: {"rho": 1 + 0.3 * torch.sin(K * grid()[2]) + 0 * grid()[0] + 0 * grid()[1]},
                            "rho = 1 + 0.3 sin kx"),
    "compressible_continuity": ({}, lambda: {"rho": torch.exp(-0.05 * grid()[0]) + 0 * grid()[1] + 0 * grid()[2],
                                             "u": vec(0.05 * (grid()[2] - CX), 0 * grid()[2]) + 0 * grid()[0]},
                                lambda: {"rho": torch.exp(-0.05 * grid()[0]) + 0 * grid()[1] + 0 * grid()[2],
                                         "u": vec(-0.05 * (grid()[2] - CX), 0 * grid()[2]) + 0 * grid()[0]},
                                "u reversed"),
    "compressible_acoustic": ({}, lambda: {"p": 0.3 * wave(), "u": vec(0.3 * wave(), 0 * wave())},
                              lambda: {"p": 0.3 * wave(), "u": vec(-0.3 * wave(), 0 * wave())}, "u = -p"),
    "compressible_eos_closure": ({}, lambda: {"rho": 1 + 0.2 * wave(), "p": 0.5 * 0.2 * wave()},
                                 lambda: {"rho": 1 + 0.2 * wave(), "p": 0.1 * torch.cos(K * (grid()[2] - grid()[0]))
                                          + 0 * grid()[1]}, "p a quarter period off"),
    "compressible_expansion_smooth": ({}, lambda: {"u": _expansion()}, lambda: {"u": _ripples()},
                                      "expansion + ripples"),
    "phase_front_advection": ({}, lambda: {"alpha": front(), "u": const_u((0.7, 0.0))},
                              lambda: {"alpha": front(), "u": const_u((0.0, 0.0))}, "u = 0"),
    "phase_energy": ({"a_P": A_T, "L": L_HEAT}, lambda: _phase_energy(L_HEAT, A_T, 1.0),
                     lambda: _phase_energy(L_HEAT, A_T, -1.0), "latent heat of the wrong sign"),
    "phase_density_closure": ({}, lambda: {"alpha": front(), "rho": 1 - 0.08 * front()},
                              lambda: {"alpha": front(), "rho": 1 - 0.08 * front(axis="y")},
                              "rho follows a front along y"),
    "phase_smooth": ({}, lambda: {"alpha": torch.full((1, 1, T_, H_, W_), 0.4, dtype=D)},
                     lambda: {"alpha": front()}, "a front (width 3)"),
    "collision_kinematic": ({}, lambda: {"u": collision_velocity()[0], "d": collision_displacement()},
                            lambda: {"u": collision_velocity()[0], "d": collision_displacement(1.2)},
                            "d of an impact 20 % stronger"),
    "collision_impulse_closure": ({}, lambda: {"u": collision_velocity()[0], "j": 0.7 * collision_velocity()[1]},
                                  lambda: {"u": collision_velocity()[0], "j": 0.7 * collision_velocity()[0]},
                                  "j = 0.7 u"),
    "collision_compression_closure": ({}, lambda: _compression(1.0), lambda: _compression(-1.0),
                                      "|j| on the expansion"),
    "collision_impulse_smooth": ({}, lambda: {"j": collision_velocity()[1]},
                                 lambda: {"j": collision_velocity()[1] * (1 + 0.3 * torch.sin(K * grid()[2]))},
                                 "j modulated in x"),
    "thermal_transport": ({"a_T": A_T}, lambda: {"T": heat_kernel(A_T), "u": const_u()},
                          lambda: {"T": heat_kernel(A_T, U=(-0.3, -0.2)), "u": const_u()}, "advected by -U"),
    "thermal_bound": ({}, lambda: {"T": _smooth_T()}, lambda: {"T": _spiky_T()}, "one-pixel spike"),
    "optical_wave": ({}, lambda: {"psi": wave()}, lambda: {"psi": wave(2.0)}, "wave at speed 2"),
    "optical_support": ({}, lambda: _support(True), lambda: _support(False), "support radius 14 -> 3"),
    "optical_smooth": ({}, lambda: {"alpha": torch.full((1, 1, T_, H_, W_), 0.7, dtype=D)},
                       lambda: {"alpha": disk(10.0)}, "a disk (edge width 1)"),
}
# extra reference fields beyond one per term: (term, label) -> (constants, reference, perturbed, perturbation)
EXTRA: dict[tuple[str, str], tuple[dict, callable, callable, str]] = {
    ("phase_energy", "SPEC field"): ({"a_P": A_T, "L": L_HEAT}, lambda: _phase_energy_spec(L_HEAT, 1.0),
                                     lambda: _phase_energy_spec(L_HEAT, -1.0), "T rises instead"),
}

CLOSURES = {n for n in TERMS if "closure" in n}  # scale-free, in [0, ~1]


def evaluate(name: str, consts: dict, fields: dict, mask=None) -> float:
    reads, fn = TERMS[name]
    missing = set(reads) - set(fields)
    assert not missing, f"test case for {name} lacks {missing}"
    f = {k: v.float() for k, v in fields.items()}
    for k, v in f.items():
        assert v.shape[1] == FIELD_CHANNELS[k] and v.shape[2:] == (T_, H_, W_), f"{name}: {k} {tuple(v.shape)}"
    return float(fn(f, CSRCConstants(**consts), mask)[0].detach())


def measure(name: str, case) -> tuple[float, float]:
    consts, good, bad, _ = case
    return evaluate(name, consts, good()), evaluate(name, consts, bad())


def test_every_term_has_a_case():
    assert set(CASES) == set(TERMS) and len(CASES) == 29
    assert [t for ts in CATEGORY_TERMS.values() for t in ts] == list(CASES)
    assert all(callable(getattr(R, n, None)) for n in TERMS)  # every term is a named function in pila.residuals


def test_reference_helpers_match_pila_afe():
    """The test's AFE integral and Hooke closure are the ones pila.afe uses (SPEC section 3)."""
    afe = pytest.importorskip("pila.afe")
    u = rigid_motion().float() + 0.1 * torch.randn(1, 2, T_, H_, W_)
    assert torch.allclose(afe.integrate_displacement(u), afe_displacement(u), atol=1e-5)
    eps, p = fd.sym_grad(u), torch.randn(1, 1, T_, H_, W_)
    assert torch.allclose(afe.stress_closure(p, eps), hooke(eps, p), atol=1e-6)


def _check(name, good, bad):
    assert math.isfinite(good) and math.isfinite(bad)
    if name in CLOSURES:  # scale-free, in [0, ~1]
        assert good < 0.01, f"{name}: {good:.3g} on its reference field"
        assert bad > 0.05 and bad > 10 * good, f"{name}: perturbed {bad:.3g} vs reference {good:.3g}"
    else:
        assert bad > 1e-7, f"{name}: perturbed field gives only {bad:.3g}"
        assert bad > 100 * good, f"{name}: perturbed {bad:.3g} is not clearly above the reference {good:.3g}"


@pytest.mark.parametrize("name", list(CASES))
def test_term_near_zero_on_reference_and_larger_when_perturbed(name):
    good, bad = measure(name, CASES[name])
    _check(name, good, bad)


@pytest.mark.parametrize("name", list(CASES))
def test_term_with_a_soft_physical_mask(name):
    """The same check under a random physical mask in [0.08, 1] (the bootstrap mask's range, SPEC section 7)."""
    consts, good, bad, _ = CASES[name]
    mask = 0.08 + 0.92 * torch.rand(1, 1, T_, H_, W_, generator=torch.Generator().manual_seed(7))
    _check(name, evaluate(name, consts, good(), mask), evaluate(name, consts, bad(), mask))


@pytest.mark.parametrize("key", list(EXTRA))
def test_extra_reference_fields(key):
    good, bad = measure(key[0], EXTRA[key])
    _check(key[0], good, bad)


def test_elastic_gauge_removal_matters():
    """AFE's d[m] = 0 anchor adds a time-constant -c^2 lap D(t_m) to the wave residual; the per-pixel temporal
    mean removes it: without that step the reference wave is far from zero."""
    d = elastic_wave(1.0)["d"].float()
    with_gauge = float(R.elastic_wave_d(d, c=1.0)[0])
    raw = float(R.wave(d, c=1.0)[0])
    assert raw > 100 * with_gauge, (raw, with_gauge)


def test_bounded_gradient_is_scale_free_and_zero_on_smooth_fields():
    smooth = _smooth_T().float()
    assert float(R.bounded_gradient(smooth)[0]) == 0.0
    base = torch.zeros(1, 1, 3, 20, 20)
    base[:, :, :, 10, 10] = 1.0
    vals = [float(R.bounded_gradient(base * a)[0]) for a in (1e-3, 1.0, 1e3)]
    assert vals[0] > 0.1 and max(vals) - min(vals) < 1e-3 * vals[1], vals  # a spike costs the same at any amplitude
    spiky = _spiky_T().float() - 1
    vals = [float(R.bounded_gradient(spiky * a)[0]) for a in (1e-3, 1.0, 1e3)]
    assert vals[0] > 1e-3 and max(vals) - min(vals) < 1e-3 * vals[1], vals  # on a smooth background too


def test_closure_properties():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(2, 4, 3, 9, 9, generator=g)
    assert float(R.closure(3.0 * b, b).max()) < 1e-6  # any k in [0, 10]
    assert float(R.closure(100 * 3.0 * b, 100 * b).max()) < 1e-6  # scale-free
    assert abs(float(R.closure(-b, b)[0]) - 1.0) < 1e-6  # k >= 0: anti-aligned costs 1
    assert float(R.closure(-b, b, signed=True)[0]) < 1e-6
    assert float(R.closure(20 * b, b)[0]) > 0.2  # k clamped at 10
    c = torch.randn(2, 4, 3, 9, 9, generator=g)
    assert 0.8 < float(R.closure(c, b)[0]) <= 1.0 + 1e-6  # unrelated fields
    zero = torch.zeros(2, 4, 3, 9, 9)
    assert float(R.closure(zero, b).abs().max()) == 0.0 and float(R.closure(b, zero)[0]) > 0.99


def test_masked_reduction_and_mask_semantics():
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(2, 4, 4, 10, 10, generator=g)
    m = torch.zeros(2, 1, 4, 10, 10)
    m[:, :, :, 2:5, 2:8] = 1.0
    expected = eps[:, :, :, 2:5, 2:8].square().sum(1).flatten(1).mean(1)
    assert torch.allclose(R.strain_norm(eps, mask=m), expected, rtol=1e-5)
    assert torch.equal(R.strain_norm(eps, mask=torch.zeros_like(m)), torch.zeros(2))  # nothing valid -> 0
    unmasked = eps[:, :, :, 2:-2, 2:-2].square().sum(1).flatten(1).mean(1)  # edges skipped, no time skip
    assert torch.allclose(R.strain_norm(eps), unmasked, rtol=1e-5)
    soft = torch.rand(2, 1, 4, 10, 10, generator=g).requires_grad_(True)
    e = eps.clone().requires_grad_(True)
    R.strain_norm(e, mask=soft).sum().backward()
    assert soft.grad is None and e.grad is not None  # M is detached
    with pytest.raises(AssertionError, match="physical mask"):
        R.strain_norm(eps, mask=torch.ones(2, 1, 4, 10, 9))


def _random_fields(B, T, H, W, *, zero=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = (lambda c: torch.zeros(B, c, T, H, W)) if zero else (lambda c: torch.randn(B, c, T, H, W, generator=g))
    return {n: mk(c).requires_grad_(True) for n, c in FIELD_CHANNELS.items()}


@pytest.mark.parametrize("shape", [(1, 3, 3), (1, 5, 6), (2, 4, 4), (2, 5, 5), (3, 1, 7), (5, 2, 9)])
def test_tiny_shapes_do_not_crash(shape):
    T, H, W = shape
    f = _random_fields(2, T, H, W)
    c = CSRCConstants()
    spatial_ok = H > 4 and W > 4
    for name, (_, fn) in TERMS.items():
        v = fn(f, c, None)
        assert v.shape == (2,) and torch.isfinite(v).all(), f"{name} at {shape}: {v}"
        if not spatial_ok:
            assert torch.equal(v, torch.zeros(2)), f"{name} at {shape} has no interior but gave {v}"
        if T == 1 and any(s in name for s in ("wave", "kinematic", "continuity", "momentum", "acoustic",
                                                "advection", "energy", "transport", "impulse_closure",
                                                "compression_closure")):
            assert torch.equal(v, torch.zeros(2)), f"{name} needs time but gave {v} at T = 1"


@pytest.mark.parametrize("zero", [False, True])
def test_gradients_are_finite(zero):
    f = _random_fields(2, 5, 8, 8, zero=zero, seed=3)
    if zero:
        f["rho"] = (f["rho"].detach() + 1).requires_grad_(True)
    c = CSRCConstants()
    total = sum(fn(f, c, None).sum() for _, fn in TERMS.values())
    total.backward()
    for n, v in f.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), n
    for n, p in c.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def table() -> list[tuple[str, str, float, float, str]]:
    rows = [(n, "", *measure(n, case), case[3]) for n, case in CASES.items()]
    rows += [(k[0], k[1], *measure(k[0], case), case[3]) for k, case in EXTRA.items()]
    return rows


if __name__ == "__main__":
    torch.set_num_threads(2)
    print("| term | reference | perturbed | ratio | perturbation |\n|---|---|---|---|---|")
    for n, label, g, b, what in table():
        ratio = f"{b / g:.2g}" if g > 0 else "inf"
        print(f"| {n}{' (' + label + ')' if label else ''} | {g:.2e} | {b:.2e} | {ratio} | {what} |")
