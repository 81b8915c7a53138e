"""Operator experts: one per physical category, each allowed to change only its recipe's slots (SPEC section 4).

`dB_k = mask_k * O_k([h, broadcast(c), B])`, O_k = 1x1x1 conv (2H + 32 -> H), SiLU, a 3D residual block,
1x1x1 conv H -> 32. Only the selected experts run, each on the samples that selected it; the refined bank
is `B' = B + sum_k w_k dB_k`, and expert k's view (for its residuals) is `B + dB_k`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .bank import BANK_CHANNELS
from .encoder import ResBlock3d, cat_conv1x1, conv1x1
from .taxonomy import NUM_CATEGORIES, recipe_masks


class OperatorExpert(nn.Module):
    def __init__(self, hidden: int = 128, *, groups: int = 8):
        super().__init__()
        self.proj = conv1x1(2 * hidden + BANK_CHANNELS, hidden)
        self.block = ResBlock3d(hidden, hidden, groups=groups)
        self.out = conv1x1(hidden, BANK_CHANNELS)

    def forward(self, h: Tensor, c: Tensor, bank: Tensor) -> Tensor:
        """h `[n, H, T, H, W]`, c `[n, H]` (broadcast), bank `[n, 32, T, H, W]` -> unmasked update `[n, 32, ...]`."""
        return self.out(self.block(F.silu(cat_conv1x1(self.proj, [h, c, bank]))))


@dataclass
class ExpertResult:
    refined: Tensor  # [B, 32, T, H, W] B' = B + sum_k w_k dB_k
    views: dict[int, tuple[Tensor, Tensor]]  # expert k -> (sample indices [n], view B + dB_k [n, 32, T, H, W])
    change: Tensor  # [B, 8, T, H, W] per-pixel L2 over channels of w_k dB_k (0 for unselected experts)


class ExpertBank(nn.Module):
    def __init__(self, hidden: int = 128, *, groups: int = 8, num_experts: int = NUM_CATEGORIES):
        super().__init__()
        assert num_experts == NUM_CATEGORIES, f"one expert per category ({NUM_CATEGORIES}), got {num_experts}"
        self.experts = nn.ModuleList([OperatorExpert(hidden, groups=groups) for _ in range(num_experts)])
        self.register_buffer("masks", recipe_masks(), persistent=False)  # [8, 32], from the taxonomy

    def forward(self, h: Tensor, c: Tensor, bank: Tensor, weights: Tensor, selected: Tensor, *,
                active_mask: Tensor | None = None, keep_views: bool = False, keep_change: bool = False) -> ExpertResult:
        """weights `[B, 8]` dense, selected `[B, k]` long. Experts nobody selected are never called.
        `active_mask` `[32]` (staged recovery) further restricts every recipe to the active slots."""
        B = bank.shape[0]
        assert selected.ndim == 2 and selected.shape[0] == B, f"selected must be [B, k], got {tuple(selected.shape)}"
        assert weights.shape == (B, NUM_CATEGORIES), f"weights must be [B, 8], got {tuple(weights.shape)}"
        refined = bank
        views: dict[int, tuple[Tensor, Tensor]] = {}
        change = bank.new_zeros(B, NUM_CATEGORIES, *bank.shape[2:]) if keep_change else None
        if selected.numel() == 0:
            return ExpertResult(refined, views, change)
        chosen = torch.zeros(B, NUM_CATEGORIES, dtype=torch.bool, device=bank.device)
        chosen.scatter_(1, selected, True)
        # the one device -> host read of a routed call: which experts run, on which rows
        chosen_rows = chosen.tolist()
        for k in range(NUM_CATEGORIES):
            rows = [b for b in range(B) if chosen_rows[b][k]]
            if not rows:
                continue  # nobody selected expert k: it is never called
            if len(rows) == B:  # every row picked k (always so for CFG rows with one physics condition)
                idx = torch.arange(B, device=bank.device)
                hk, ck, bk = h, c, bank
            else:
                idx = torch.tensor(rows, dtype=torch.long, device=bank.device)
                hk, ck, bk = h.index_select(0, idx), c.index_select(0, idx), bank.index_select(0, idx)
            dB = self.experts[k](hk, ck, bk)
            mask = self.masks[k] if active_mask is None else self.masks[k] * active_mask.to(self.masks)
            dB = dB * mask.to(dB.dtype)[None, :, None, None, None]
            w = weights.index_select(0, idx)[:, k].to(dB.dtype)[:, None, None, None, None]
            refined = refined.index_add(0, idx, (w * dB).to(refined.dtype))
            if keep_views:
                views[k] = (idx, bk.float() + dB.float())  # fp32: CSRC reads its fields from here
            if keep_change:
                norm = (w * dB).float().square().sum(dim=1).sqrt().to(change.dtype)
                change[idx, k] = norm.detach()  # a diagnostic (Expert Maps), never trained
        return ExpertResult(refined, views, change)
