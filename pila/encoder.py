"""Physical encoder E and the pre-AFE scaffold head (docs/method.md §3).

Latents are `[B, C, T, H, W]`; sigma is the flow-matching noise level in [0, 1] (1 = pure noise, docs/method.md §1).
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .bank import BANK_CHANNELS


def conv1x1(dim_in: int, dim_out: int, *, bias: bool = True) -> nn.Conv3d:
    return nn.Conv3d(dim_in, dim_out, kernel_size=1, bias=bias)


class ResBlock3d(nn.Module):
    """conv3 -> GroupNorm -> SiLU -> conv3 -> GroupNorm, plus a 1x1x1 shortcut when widths differ, then SiLU.

    The norms act on the block's output width, so any input width (16 Wan channels, 3 pixel channels) works.
    Padding 1 on every axis keeps T = 1 and tiny H, W valid (docs/method.md §3)."""

    def __init__(self, dim_in: int, dim_out: int, *, groups: int = 8):
        super().__init__()
        assert dim_out % groups == 0, f"ResBlock3d: width {dim_out} must be divisible by groups {groups}"
        self.conv1 = nn.Conv3d(dim_in, dim_out, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(groups, dim_out)
        self.conv2 = nn.Conv3d(dim_out, dim_out, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(groups, dim_out)
        self.shortcut = conv1x1(dim_in, dim_out) if dim_in != dim_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + self.shortcut(x))


class SigmaMLP(nn.Module):
    """Raw sigma (1 = pure noise) -> `[B, H]` embedding: Linear 1 -> H, SiLU, Linear H -> H.

    Added to the feature h after the encoder's last block and to the condition vector c."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: Tensor) -> Tensor:
        assert sigma.ndim == 1, f"sigma must be [B], got {tuple(sigma.shape)}"
        return self.net(sigma[:, None].to(self.net[0].weight.dtype))


class Encoder(nn.Module):
    """E: (x0_hat `[B, C, T, H, W]`, sigma `[B]`) -> (h `[B, hidden, T, H, W]`, sigma embedding `[B, hidden]`).

    A residual block C -> hidden, then three hidden -> hidden (docs/method.md §3); the sigma MLP's embedding is
    added to h after the last block and returned for the condition vector c."""

    def __init__(self, latent_channels: int = 16, hidden: int = 128, *, groups: int = 8, depth: int = 4):
        super().__init__()
        widths = [latent_channels] + [hidden] * depth
        self.blocks = nn.ModuleList(
            [ResBlock3d(a, b, groups=groups) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.sigma_mlp = SigmaMLP(hidden)

    def forward(self, x0_hat: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        assert x0_hat.ndim == 5, f"x0_hat must be [B, C, T, H, W], got {tuple(x0_hat.shape)}"
        sigma_emb = self.sigma_mlp(sigma)
        h = x0_hat
        for block in self.blocks:
            h = block(h)
        return h + sigma_emb[:, :, None, None, None], sigma_emb


class ScaffoldHead(nn.Module):
    """1x1x1 convs hidden -> hidden -> 32: the pre-AFE scaffold in the bank layout (docs/method.md §3)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(conv1x1(hidden, hidden), nn.SiLU(), conv1x1(hidden, BANK_CHANNELS))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


def cat_conv1x1(conv: nn.Conv3d, parts: list[Tensor]) -> Tensor:
    """`conv(cat(parts, dim=1))` for a 1x1x1 conv, where parts may be per-sample vectors `[B, c]`.

    A 1x1x1 conv is linear in its input channels, so the vector parts (the broadcast condition c) become a
    per-sample bias instead of a `[B, c, T, H, W]` copy: the same function with the same parameters, without
    materialising or convolving the broadcast channels."""
    assert conv.kernel_size == (1, 1, 1), "cat_conv1x1 needs a 1x1x1 conv"
    widths = [p.shape[1] for p in parts]
    assert sum(widths) == conv.in_channels, f"parts have {widths} channels, conv expects {conv.in_channels}"
    weight = conv.weight.flatten(1)  # [out, in]
    out, bias = None, conv.bias
    for p, w in zip(parts, weight.split(widths, dim=1)):
        if p.ndim == 2:  # [B, c] broadcast over T, H, W
            vec = p.to(weight.dtype) @ w.t()  # [B, out]
            bias = vec if bias is None else bias + vec
        else:
            y = F.conv3d(p.to(weight.dtype), w[:, :, None, None, None])
            out = y if out is None else out + y
    assert out is not None, "cat_conv1x1 needs at least one spatial part"
    if bias is not None:
        out = out + (bias[:, :, None, None, None] if bias.ndim == 2 else bias[None, :, None, None, None])
    return out
