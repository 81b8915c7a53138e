"""The condition vector c (docs/method.md §4, **ours**): c = MLP([pool(text states), y]) + sigma_mlp(s)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def pool_text(text_states: Tensor | None, text_mask: Tensor | None = None, *, batch: int | None = None,
              dim: int | None = None, eps: float = 1e-6) -> Tensor:
    """Mean of the token rows whose norm > eps (and, when given, whose mask is set) -> `[B, text_dim]`.

    UMT5 pads the prompt with zero rows up to 512 tokens; they must not dilute the mean. Accepts
    `[B, L, D]` states, already pooled `[B, D]` vectors, or None (zeros of `[batch, dim]`)."""
    if text_states is None:
        assert batch is not None and dim is not None, "pool_text(None) needs batch and dim"
        return torch.zeros(batch, dim)
    if text_states.ndim == 2:
        return text_states
    assert text_states.ndim == 3, f"text_states must be [B, L, D] or [B, D], got {tuple(text_states.shape)}"
    x = text_states.float()
    keep = x.norm(dim=-1) > eps  # [B, L]
    if text_mask is not None:
        assert text_mask.shape == keep.shape, f"text_mask {tuple(text_mask.shape)} must be [B, L] = {tuple(keep.shape)}"
        keep = keep & text_mask.bool()
    w = keep.to(x.dtype)[..., None]
    return ((x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)).to(text_states.dtype)


class ConditionEncoder(nn.Module):
    """[pooled text (text_dim), y (num_categories)] -> `[B, hidden]`; the sigma embedding is added by the caller
    (it is the encoder's sigma MLP, shared with h)."""

    def __init__(self, text_dim: int = 4096, num_categories: int = 8, hidden: int = 128):
        super().__init__()
        self.text_dim, self.num_categories = text_dim, num_categories
        self.net = nn.Sequential(nn.Linear(text_dim + num_categories, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, pooled: Tensor, labels: Tensor, sigma_emb: Tensor) -> Tensor:
        B = sigma_emb.shape[0]
        assert pooled.shape == (B, self.text_dim), \
            f"pooled text must be [{B}, {self.text_dim}], got {tuple(pooled.shape)}"
        assert labels.shape == (B, self.num_categories), \
            f"labels must be [{B}, {self.num_categories}], got {tuple(labels.shape)}"
        dtype = self.net[0].weight.dtype
        return self.net(torch.cat([pooled.to(dtype), labels.to(dtype)], dim=1)) + sigma_emb
