"""Central finite differences on `[B, C, T, H, W]` fields (docs/method.md §3).

Conventions: dim 2 is time (step 1 latent frame), dim 3 is y (= H), dim 4 is x (= W), spatial step 1 latent
pixel. Vector fields are `[B, 2, ...]` with channel 0 = x. Every operator returns a tensor of the input's
shape: second-order central stencils inside, second-order one-sided stencils at the borders when the axis is
long enough, first-order below that, and zeros where the axis is too short to form the derivative at all
(T = 1, H or W = 1). Residual reductions skip the border cells anyway (`interior_mask`).

kornia's `spatial_gradient` replicates the border before convolving, which halves the derivative in the
first and last column; these operators need exact one-sided edges, so they use `torch.gradient` and
explicit stencils.
"""
from __future__ import annotations

import torch
from torch import Tensor

T_DIM, Y_DIM, X_DIM = 2, 3, 4


def _check(f: Tensor) -> None:
    assert f.ndim == 5, f"fields are [B, C, T, H, W], got shape {tuple(f.shape)}"


def d1(f: Tensor, dim: int) -> Tensor:
    """First derivative along `dim` (central inside, one-sided at the ends)."""
    _check(f)
    n = f.shape[dim]
    if n < 2:
        return torch.zeros_like(f)
    return torch.gradient(f, dim=dim, edge_order=2 if n >= 3 else 1)[0]


def d2(f: Tensor, dim: int) -> Tensor:
    """Second derivative along `dim`: f[i+1] - 2 f[i] + f[i-1] inside; at the ends the second-order
    one-sided 2 f0 - 5 f1 + 4 f2 - f3 (n >= 4), or the neighbour's value (n == 3); zero for n < 3."""
    _check(f)
    n = f.shape[dim]
    if n < 3:
        return torch.zeros_like(f)
    s = lambda a, b: f.narrow(dim, a, b)  # noqa: E731
    inner = s(2, n - 2) - 2 * s(1, n - 2) + s(0, n - 2)
    if n >= 4:
        first = 2 * s(0, 1) - 5 * s(1, 1) + 4 * s(2, 1) - s(3, 1)
        last = 2 * s(n - 1, 1) - 5 * s(n - 2, 1) + 4 * s(n - 3, 1) - s(n - 4, 1)
    else:
        first, last = inner.narrow(dim, 0, 1), inner.narrow(dim, inner.shape[dim] - 1, 1)
    return torch.cat([first, inner, last], dim=dim)


def dt(f: Tensor) -> Tensor:
    return d1(f, T_DIM)


def dtt(f: Tensor) -> Tensor:
    return d2(f, T_DIM)


def dx(f: Tensor) -> Tensor:
    return d1(f, X_DIM)


def dy(f: Tensor) -> Tensor:
    return d1(f, Y_DIM)


def grad(f: Tensor) -> tuple[Tensor, Tensor]:
    """(d/dx f, d/dy f), each shaped like f."""
    return dx(f), dy(f)


def grad_norm(f: Tensor, *, eps: float = 1e-12) -> Tensor:
    """|grad f| summed over channels: `[B, 1, T, H, W]`."""
    gx, gy = grad(f)
    return (gx.square() + gy.square()).sum(dim=1, keepdim=True).add(eps).sqrt()


def lap(f: Tensor) -> Tensor:
    """Five-point Laplacian d2/dx2 + d2/dy2."""
    return d2(f, X_DIM) + d2(f, Y_DIM)


def _vec(u: Tensor) -> tuple[Tensor, Tensor]:
    _check(u)
    assert u.shape[1] == 2, f"vector fields are [B, 2, T, H, W] (x first), got {tuple(u.shape)}"
    return u[:, 0:1], u[:, 1:2]


def div(u: Tensor) -> Tensor:
    """dx ux + dy uy: `[B, 1, T, H, W]`."""
    ux, uy = _vec(u)
    return dx(ux) + dy(uy)


def curl(u: Tensor) -> Tensor:
    """Scalar 2-D curl dx uy - dy ux: `[B, 1, T, H, W]`."""
    ux, uy = _vec(u)
    return dx(uy) - dy(ux)


def sym_grad(u: Tensor) -> Tensor:
    """Symmetric gradient (strain rate) as `[exx, exy, exy, eyy]`, exy = (dy ux + dx uy) / 2."""
    ux, uy = _vec(u)
    exy = (dy(ux) + dx(uy)) / 2
    return torch.cat([dx(ux), exy, exy, dy(uy)], dim=1)


def advect(u: Tensor, f: Tensor) -> Tensor:
    """(u . grad) f, per channel of f."""
    ux, uy = _vec(u)
    gx, gy = grad(f)
    return ux * gx + uy * gy


def interior_mask(f: Tensor, *, space: int = 2, time: int = 1) -> Tensor:
    """`[1, 1, T, H, W]` mask that is 0 on `space` cells at each spatial edge and `time` frames at each end.

    An axis too short to keep any cell gives an all-zero mask, so the masked mean is 0 (terms that cannot
    be formed contribute nothing)."""
    _check(f)
    T, H, W = f.shape[2:]
    m = torch.zeros(1, 1, T, H, W, device=f.device, dtype=f.dtype)
    if T > 2 * time and H > 2 * space and W > 2 * space:
        m[:, :, time:T - time, space:H - space, space:W - space] = 1
    return m
