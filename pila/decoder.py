"""Attribute-to-flow decoder and the sigma gate (docs/method.md §1 and §6, Eqs. 9-10).

sigma is the flow-matching noise level, 1 = pure noise; latents are `[B, C, T, H, W]`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .bank import BANK_CHANNELS
from .encoder import ResBlock3d, cat_conv1x1, conv1x1


class FlowDecoder(nn.Module):
    """dv = D([h, broadcast(c), B', v]): 1x1x1 conv (2H + 32 + C -> H), SiLU, a 3D residual block,
    1x1x1 conv H -> C. The last conv is zero-initialised (**ours**): a fresh adapter returns dv = 0."""

    def __init__(self, hidden: int = 128, latent_channels: int = 16, *, groups: int = 8):
        super().__init__()
        self.proj = conv1x1(2 * hidden + BANK_CHANNELS + latent_channels, hidden)
        self.block = ResBlock3d(hidden, hidden, groups=groups)
        self.out = conv1x1(hidden, latent_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor, c: Tensor, refined: Tensor, v: Tensor) -> Tensor:
        return self.out(self.block(F.silu(cat_conv1x1(self.proj, [h, c, refined, v]))))


def sigma_per_sample(sigma: Tensor | float, batch: int, device=None) -> Tensor:
    """A float, `[1]` or `[B]` sigma (1 = pure noise) -> float32 `[B]` on `device`."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=device).flatten()
    if s.numel() == 1:
        s = s.expand(batch)
    assert s.shape == (batch,), f"sigma must be a float or [B] = [{batch}], got {tuple(torch.as_tensor(sigma).shape)}"
    return s


def gate(sigma: Tensor | float, floor: float = 0.05) -> Tensor | float:
    """Quadratic gate with floor (Eq. 10): `floor + (1 - floor) * (1 - sigma)^2`; 1 at clean, floor at noise."""
    return floor + (1.0 - floor) * (1.0 - sigma) ** 2


def apply_correction(v: Tensor, dv: Tensor, sigma: Tensor | float, strength: float = 1.0,
                     floor: float = 0.05) -> Tensor:
    """v_phys = v + strength * gate(sigma) * dv, broadcast over `[B, C, T, H, W]` (docs/method.md §1)."""
    assert v.shape == dv.shape, f"v {tuple(v.shape)} and dv {tuple(dv.shape)} must match"
    g = gate(sigma_per_sample(sigma, v.shape[0], v.device), floor).view(-1, *([1] * (v.ndim - 1)))
    return v + (strength * g).to(v.dtype) * dv.to(v.dtype)
