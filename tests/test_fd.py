"""Finite-difference operators (docs/method.md §3) against analytic derivatives of smooth fields.

Each field is sampled on a grid of spacing h over a fixed box; pila.fd works in units of one cell, so its
first derivatives are divided by h and second derivatives by h^2. Derivatives of the test functions come from
autograd (exact up to float64 round-off). Second-order stencils, inside and at the one-sided borders, must
lose ~4x of their error when h halves.
"""
import math

import pytest
import torch

from pila import fd

D = torch.float64  # analytic comparisons in double precision

BOX = 2.0  # physical side of the box in t, y and x


def _grid(n: int, *, T: int | None = None):
    """Coordinates `[1, 1, T, H, W]` (requires_grad) on n points per axis over [0, BOX]; spacing h."""
    h = BOX / (n - 1)
    T = n if T is None else T
    t, y, x = torch.meshgrid(torch.arange(T, dtype=D) * h, torch.arange(n, dtype=D) * h,
                             torch.arange(n, dtype=D) * h, indexing="ij")
    return [c[None, None].clone().requires_grad_(True) for c in (t, y, x)], h


def f_scalar(t, y, x):
    return torch.sin(1.3 * x + 0.4 * t) * torch.cos(0.9 * y - 0.7 * t) + 0.3 * torch.exp(0.5 * x - 0.2 * y)


def f_vector(t, y, x):
    ux = torch.cos(0.8 * x - 0.5 * y + 0.3 * t) + 0.2 * x * y
    uy = torch.sin(0.6 * x + 1.1 * y - 0.4 * t) - 0.1 * x * x
    return torch.cat([ux, uy], dim=1)


def _d(f, c):
    """Analytic derivative of a field (sum over the grid is separable per point) wrt coordinate c."""
    return torch.autograd.grad(f.sum(), c, create_graph=True)[0]


def _analytic(name: str, n: int, T: int | None = None):
    """(numerical, exact) for operator `name` on an n-point grid."""
    (t, y, x), h = _grid(n, T=T)
    f, u = f_scalar(t, y, x), f_vector(t, y, x)
    ux, uy = u[:, 0:1], u[:, 1:2]
    fd_f, fd_u = f.detach(), u.detach()
    dfx, dfy, dft = _d(f, x), _d(f, y), _d(f, t)
    if name == "dt":
        num, ex = fd.dt(fd_f) / h, dft
    elif name == "dtt":
        num, ex = fd.dtt(fd_f) / h**2, _d(dft, t)
    elif name == "dx":
        num, ex = fd.dx(fd_f) / h, dfx
    elif name == "dy":
        num, ex = fd.dy(fd_f) / h, dfy
    elif name == "lap":
        num, ex = fd.lap(fd_f) / h**2, _d(dfx, x) + _d(dfy, y)
    elif name == "div":
        num, ex = fd.div(fd_u) / h, _d(ux, x) + _d(uy, y)
    elif name == "curl":
        num, ex = fd.curl(fd_u) / h, _d(uy, x) - _d(ux, y)
    elif name == "sym_grad":
        exy = (_d(ux, y) + _d(uy, x)) / 2
        num, ex = fd.sym_grad(fd_u) / h, torch.cat([_d(ux, x), exy, exy, _d(uy, y)], dim=1)
    elif name == "advect":
        num, ex = fd.advect(fd_u, fd_f) / h, ux * dfx + uy * dfy
    elif name == "grad_norm":
        num, ex = fd.grad_norm(fd_f) / h, (dfx.square() + dfy.square()).sqrt()
    else:
        raise KeyError(name)
    return num, ex.detach()


OPS = ["dt", "dtt", "dx", "dy", "lap", "div", "curl", "sym_grad", "advect", "grad_norm"]


def _border(x: torch.Tensor) -> torch.Tensor:
    """Everything but the cells 2 away from every edge (T, H, W): the one-sided stencils live here."""
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[:, :, 2:-2, 2:-2, 2:-2] = False
    return x[keep]


@pytest.mark.parametrize("op", OPS)
def test_matches_analytic_and_converges_second_order(op):
    errs, border_errs, inner_errs = [], [], []
    for n in (17, 33):
        num, ex = _analytic(op, n)
        assert num.shape == ex.shape, f"{op}: shape {tuple(num.shape)} != {tuple(ex.shape)}"
        err = (num - ex).abs()
        errs.append(err.max().item())
        border_errs.append(_border(err).max().item())
        inner_errs.append(err[:, :, 2:-2, 2:-2, 2:-2].max().item())
    scale = ex.abs().max().item()
    assert errs[1] < 0.02 * scale, f"{op}: error {errs[1]:.3g} too large against |f'| ~ {scale:.3g}"
    ratio, bratio = errs[0] / errs[1], border_errs[0] / border_errs[1]
    assert 3.0 < ratio < 5.5, f"{op}: error ratio on refinement {ratio:.2f}, expected ~4 (second order)"
    assert 3.0 < bratio < 5.5, f"{op}: border error ratio {bratio:.2f}, expected ~4 (second-order one-sided)"
    iratio = inner_errs[0] / inner_errs[1]
    assert 3.0 < iratio < 5.5, f"{op}: interior error ratio {iratio:.2f}, expected ~4 (central stencils)"


def test_polynomials_are_exact_up_to_their_order_including_borders():
    T, H, W = 5, 6, 7
    t, y, x = torch.meshgrid(torch.arange(T, dtype=D), torch.arange(H, dtype=D), torch.arange(W, dtype=D),
                             indexing="ij")
    t, y, x = t[None, None], y[None, None], x[None, None]
    q = 0.5 * x**2 - 1.5 * x * y + 2 * y**2 + 0.7 * t**2 - t * x + 3  # quadratic: first derivatives exact
    assert torch.allclose(fd.dx(q), x - 1.5 * y - t)
    assert torch.allclose(fd.dy(q), -1.5 * x + 4 * y)
    assert torch.allclose(fd.dt(q), 1.4 * t - x)
    c = x**3 - 2 * y**3 + 0.5 * t**3  # cubic: the 4-point one-sided second difference is exact
    assert torch.allclose(fd.lap(c), 6 * x - 12 * y)
    assert torch.allclose(fd.dtt(c), 3 * t)


def test_linear_vector_fields():
    H = W = 6
    y, x = torch.meshgrid(torch.arange(H, dtype=D), torch.arange(W, dtype=D), indexing="ij")
    y, x = y[None, None, None].expand(1, 1, 3, H, W), x[None, None, None].expand(1, 1, 3, H, W)
    rot = torch.cat([-y, x], dim=1)  # rigid rotation: curl 2, no strain, no divergence
    assert torch.allclose(fd.curl(rot), torch.full_like(x, 2.0))
    assert torch.allclose(fd.div(rot), torch.zeros_like(x))
    assert torch.allclose(fd.sym_grad(rot), torch.zeros(1, 4, 3, H, W, dtype=D))
    exp = torch.cat([x, y], dim=1)  # uniform expansion
    assert torch.allclose(fd.div(exp), torch.full_like(x, 2.0))
    assert torch.allclose(fd.sym_grad(exp)[:, [0, 3]], torch.ones(1, 2, 3, H, W, dtype=D))
    assert torch.allclose(fd.advect(exp, x), x)  # (u . grad) x = ux


def test_short_axes_do_not_crash():
    f = torch.randn(2, 3, 1, 1, 2)
    assert torch.equal(fd.dt(f), torch.zeros_like(f))  # T = 1: no time derivative
    assert torch.equal(fd.dtt(f), torch.zeros_like(f))
    assert torch.equal(fd.dy(f), torch.zeros_like(f))  # H = 1
    diff = f[..., 1:] - f[..., :1]
    assert torch.allclose(fd.dx(f), diff.expand_as(f))  # W = 2: the one difference, both cells
    assert torch.equal(fd.lap(f), torch.zeros_like(f))  # neither axis has 3 cells
    g = torch.randn(1, 1, 2, 4, 4)
    assert torch.allclose(fd.dt(g), (g[:, :, 1:] - g[:, :, :1]).expand_as(g))  # T = 2
    assert torch.equal(fd.dtt(g), torch.zeros_like(g))
    h3 = torch.randn(1, 1, 3, 1, 1)
    mid = h3[:, :, 0] - 2 * h3[:, :, 1] + h3[:, :, 2]
    assert torch.allclose(fd.dtt(h3), mid[:, :, None].expand_as(h3))  # T = 3: the one second difference
    u = torch.randn(1, 2, 1, 1, 1)
    for op in (fd.div, fd.curl, fd.sym_grad):
        out = op(u)
        assert torch.isfinite(out).all() and (out == 0).all()


def test_grad_norm_of_constant_is_finite_and_differentiable():
    f = torch.ones(1, 1, 2, 5, 5, requires_grad=True)
    g = fd.grad_norm(f)
    assert g.shape == (1, 1, 2, 5, 5) and g.max() < 1e-5
    g.sum().backward()
    assert torch.isfinite(f.grad).all()


def test_grad_norm_sums_channels():
    f = torch.zeros(1, 2, 1, 5, 5)
    f[:, 0] = torch.arange(5.0) * 3  # dx = 3
    f[:, 1] = torch.arange(5.0)[:, None] * 4  # dy = 4
    assert torch.allclose(fd.grad_norm(f), torch.full((1, 1, 1, 5, 5), 5.0))


def test_interior_mask():
    f = torch.zeros(1, 1, 6, 8, 9)
    m = fd.interior_mask(f)
    assert m.shape == (1, 1, 6, 8, 9)
    assert m.sum() == (6 - 2) * (8 - 4) * (9 - 4)
    assert m[0, 0, 0].sum() == 0 and m[0, 0, -1].sum() == 0  # first/last frame skipped (time = 1)
    assert m[0, 0, 1, :2].sum() == 0 and m[0, 0, 1, :, -2:].sum() == 0  # 2 edge cells skipped
    assert m[0, 0, 1, 2, 2] == 1
    m0 = fd.interior_mask(f, time=0)
    assert m0.sum() == 6 * 4 * 5
    assert fd.interior_mask(torch.zeros(1, 1, 1, 8, 9), time=0).sum() == 4 * 5  # T = 1, spatial term
    assert fd.interior_mask(torch.zeros(1, 1, 1, 8, 9)).sum() == 0  # T = 1, temporal term: nothing valid
    assert fd.interior_mask(torch.zeros(1, 1, 5, 4, 9)).sum() == 0  # H = 4: no interior row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs(dtype):
    f = torch.randn(1, 2, 4, 6, 6, dtype=dtype)
    for op in (fd.dt, fd.dtt, fd.dx, fd.dy, fd.lap, fd.div, fd.curl, fd.sym_grad, fd.grad_norm):
        out = op(f)
        assert out.dtype == dtype and torch.isfinite(out).all()
