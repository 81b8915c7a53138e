"""Label-prior masked expert routing, LPMER (docs/method.md §4).

`l = MLP(c)`, `l' = l + lambda * y`, excluded experts get -inf, keep the top-k of l', and weight the kept
experts by `softmax(l'[topk] / tau)` (renormalised over the selected ones only).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .taxonomy import NUM_CATEGORIES, category_index


@dataclass
class Routing:
    logits: Tensor  # [B, 8] l' (prior added, excluded = -inf), float32
    weights: Tensor  # [B, 8] dense, 0 where not selected, float32; rows sum to 1 when k > 0
    selected: Tensor  # [B, k] long, best first


def exclusion_mask(exclude: Iterable[str | int] = (), *, device=None) -> Tensor:
    """Names or indices -> `[8]` bool, True where the expert may never be selected."""
    m = torch.zeros(NUM_CATEGORIES, dtype=torch.bool, device=device)
    for e in exclude:
        m[category_index(e)] = True
    return m


def route(logits: Tensor, labels: Tensor | None = None, *, top_k: int = 4, prior_strength: float = 2.0,
          temperature: float = 2.0, exclude: Iterable[str | int] = ()) -> Routing:
    """Route from raw router logits `[B, 8]`. k is capped at the number of experts not excluded; k = 0 selects
    nothing (B' = B). Empty labels (y = 0) still pick the top-k of the logits."""
    assert logits.ndim == 2 and logits.shape[1] == NUM_CATEGORIES, f"logits must be [B, 8], got {tuple(logits.shape)}"
    assert temperature > 0, f"temperature must be > 0, got {temperature}"
    assert top_k >= 0, f"top_k must be >= 0, got {top_k}"
    B, exclude = logits.shape[0], tuple(exclude)
    lp = logits.float()
    if labels is not None:
        assert labels.shape == lp.shape, f"labels must be [B, 8] like the logits, got {tuple(labels.shape)}"
        lp = lp + prior_strength * labels.to(lp)
    banned = exclusion_mask(exclude, device=lp.device)
    lp = lp.masked_fill(banned, float("-inf"))
    k = min(int(top_k), NUM_CATEGORIES - len(set(category_index(e) for e in exclude)))
    weights = torch.zeros_like(lp)
    if k <= 0:
        return Routing(lp, weights, torch.zeros(B, 0, dtype=torch.long, device=lp.device))
    top, selected = lp.topk(k, dim=1)
    weights = weights.scatter(1, selected, torch.softmax(top / temperature, dim=1))
    return Routing(lp, weights, selected)


class Router(nn.Module):
    """c `[B, hidden]` -> routing logits l `[B, 8]` (Linear H -> H, SiLU, Linear H -> 8)."""

    def __init__(self, hidden: int = 128, num_categories: int = NUM_CATEGORIES):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, num_categories))

    def forward(self, c: Tensor, labels: Tensor | None = None, **kwargs) -> Routing:
        return route(self.net(c), labels, **kwargs)
