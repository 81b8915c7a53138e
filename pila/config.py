"""PILAConfig: every architecture default of docs/method.md §1, §3, §4, §6 in one place, saved in adapter files."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass
class PILAConfig:
    # latents: Wan 2.1 VAE, [B, 16, T, H, W]; 3 for the pixel-space toy world
    latent_channels: int = 16
    # encoder / AFE
    hidden: int = 128  # feature width H
    groups: int = 8  # GroupNorm groups
    u_hidden: int = 64  # u_head: 4 -> 64 -> 2
    mu: float = 1.0  # stress closure, Lame constants
    lam: float = 1.0
    # condition: pooled UMT5 text states (4096-d) + multi-hot labels
    text_dim: int = 4096
    num_categories: int = 8
    # router (LPMER)
    top_k: int = 4
    prior_strength: float = 2.0  # lambda in l' = l + lambda * y
    temperature: float = 2.0  # tau
    # flow correction
    gate_floor: float = 0.05
    dv_clamp: float = 10.0

    def __post_init__(self):
        assert self.hidden % self.groups == 0, f"hidden ({self.hidden}) must be divisible by groups ({self.groups})"
        assert self.hidden % 2 == 0, "hidden must be even (constructors use hidden // 2)"
        assert 0 <= self.top_k <= self.num_categories, f"top_k must be in 0..{self.num_categories}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PILAConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"adapter config has fields this PILA does not know: {unknown}")
        return cls(**data)
