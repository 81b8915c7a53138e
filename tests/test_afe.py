"""AFE (docs/method.md §3): displacement integral, stress closure, constructors' ranges, staged recovery."""
import pytest
import torch

from pila import PILAAdapter, fd
from pila.afe import AFE, integrate_displacement, stress_closure
from pila.bank import ALL_PHASES, SLOT_NAMES, SLOT_SLICES, active_slots, split

HID = 16


@pytest.mark.parametrize("T", [1, 2, 5, 6, 9])
def test_displacement_exact_for_constant_velocity(T):
    u = torch.randn(2, 2, 1, 3, 4).expand(-1, -1, T, -1, -1)
    d = integrate_displacement(u)
    m = T // 2
    t = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1)
    assert torch.allclose(d, (t - m) * u, atol=1e-5)
    assert torch.equal(d[:, :, m], torch.zeros_like(d[:, :, m]))


@pytest.mark.parametrize("T", [2, 5, 8])
def test_displacement_exact_for_linear_velocity(T):
    a, b = torch.randn(1, 2, 1, 3, 3), torch.randn(1, 2, 1, 3, 3)
    t = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1)
    u = a + b * t  # d/dt d = u  =>  d(t) = a (t - m) + b (t^2 - m^2) / 2, exact under the trapezoid rule
    m = T // 2
    d = integrate_displacement(u)
    assert torch.allclose(d, a * (t - m) + b * (t**2 - m**2) / 2, atol=1e-4)
    # the discrete relation the Rigid/Collision kinematic term checks holds everywhere
    assert torch.allclose(d[:, :, 1:] - d[:, :, :-1], (u[:, :, 1:] + u[:, :, :-1]) / 2, atol=1e-5)


def test_displacement_keeps_dtype():
    u = torch.randn(1, 2, 4, 2, 2, dtype=torch.bfloat16)
    assert integrate_displacement(u).dtype == torch.bfloat16


def test_stress_closure_hooke():
    p = torch.full((1, 1, 1, 1, 1), 0.5)
    eps = torch.tensor([0.1, 0.2, 0.2, -0.3]).view(1, 4, 1, 1, 1)
    s = stress_closure(p, eps, mu=2.0, lam=3.0).flatten().tolist()
    tr = 0.1 - 0.3
    assert s == pytest.approx([-0.5 + 4 * 0.1 + 3 * tr, 4 * 0.2, 4 * 0.2, -0.5 + 4 * -0.3 + 3 * tr])


def _afe_inputs(B=2, T=5, H=6, W=7):
    torch.manual_seed(0)
    return torch.randn(B, HID, T, H, W), torch.randn(B, 32, T, H, W)


def test_afe_fields_follow_their_definitions():
    afe = AFE(HID, u_hidden=8)
    h, scaffold = _afe_inputs()
    bank, f = afe(h, scaffold)
    s = split(bank)
    u = afe.u_head(scaffold)
    assert torch.allclose(f["u"], u)
    assert torch.equal(s["u"], scaffold[:, SLOT_SLICES["u"]])  # u slot keeps the raw scaffold for u_head
    assert torch.allclose(s["eps"], fd.sym_grad(u), atol=1e-6)
    assert torch.allclose(s["d"], integrate_displacement(u).repeat(1, 2, 1, 1, 1), atol=1e-6)
    assert torch.allclose(s["sigma"], stress_closure(f["p"], f["eps"]), atol=1e-6)
    assert f["p"].mean(dim=(1, 2, 3, 4)).abs().max() < 1e-5  # mean-centred per sample
    assert (f["rho"] >= 1e-4).all()
    assert ((f["alpha"] >= 0) & (f["alpha"] <= 1)).all()
    assert torch.equal(s["psi"], f["psi"].repeat(1, 4, 1, 1, 1))
    assert torch.equal(s["j"][:, :2], s["j"][:, 2:])


@pytest.mark.parametrize("phase", range(ALL_PHASES + 1))
def test_inactive_phases_are_zero(phase):
    afe = AFE(HID, u_hidden=8)
    h, scaffold = _afe_inputs()
    bank, fields = afe(h, scaffold, active_phase=phase)
    s = split(bank)
    active = active_slots(phase)
    for name in SLOT_NAMES:
        if name in active:
            assert s[name].abs().sum() > 0, f"active slot {name} is empty at phase {phase}"
        else:
            assert torch.equal(s[name], torch.zeros_like(s[name])), f"inactive slot {name} at phase {phase}"
            assert name not in fields


@pytest.mark.parametrize("phase", [0, 2])
def test_adapter_keeps_inactive_slots_zero_after_experts(phase):
    torch.manual_seed(1)
    a = PILAAdapter(hidden=HID, groups=4, text_dim=8, latent_channels=3)
    x = torch.randn(1, 3, 3, 6, 6)
    out = a(x, 0.5, torch.randn_like(x), top_k=8, active_phase=phase, return_aux=True)
    assert not torch.equal(out.refined, out.bank)  # the experts did change something
    inactive = [n for n in SLOT_NAMES if n not in active_slots(phase)]
    for name in inactive:
        assert torch.equal(split(out.refined)[name], torch.zeros_like(split(out.refined)[name])), name


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 1, 1), (2, 3, 2)])
def test_afe_tiny_grids(shape):
    afe = AFE(HID, u_hidden=8)
    bank, _ = afe(torch.randn(1, HID, *shape), torch.randn(1, 32, *shape))
    assert bank.shape == (1, 32, *shape) and torch.isfinite(bank).all()
