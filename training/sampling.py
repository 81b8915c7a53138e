"""The global sample order and every sample's sigma and noise, as functions of (seed, stage, step, position), so a
resumed run, 1 GPU x accumulation 8 and 8 GPUs x accumulation 1 all see the same batches and noise."""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from .config import TrainConfig
from .losses import sample_sigma


def _seed(*parts) -> int:
    """A stable 63-bit seed from any tuple (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


class Stream:
    """The global sample order: epoch e is a permutation of the cache seeded by (seed, stage, e); optimizer step s
    takes stream positions [s G, (s + 1) G), G = batch x accum x world. Position p of the global batch belongs to
    micro-step a = p // (batch x world), rank (p // batch) % world. The sampler state is just the step."""

    def __init__(self, n: int, *, seed: int, stage: str, global_batch: int):
        self.n, self.seed, self.stage, self.G = n, seed, stage, global_batch
        self._perms: dict[int, Tensor] = {}

    def index(self, k: int) -> int:
        e, i = divmod(k, self.n)
        if e not in self._perms:
            self._perms = {e: torch.randperm(self.n, generator=torch.Generator().manual_seed(_seed(self.seed, self.stage, "perm", e)))}
        return int(self._perms[e][i])

    def positions(self, step: int, micro: int, rank: int, world: int, batch: int) -> list[int]:
        return [(micro * world + rank) * batch + j for j in range(batch)]

    def epoch(self, step: int) -> float:
        return step * self.G / self.n


class MicroBatches(torch.utils.data.Sampler):
    """Yields this rank's dataset indices for every (step, micro-step) from `start` on (feeds a DataLoader)."""

    def __init__(self, stream: Stream, start: int, total: int, *, accum: int, rank: int, world: int, batch: int):
        self.s, self.start, self.total, self.accum, self.rank, self.world, self.batch = stream, start, total, accum, rank, world, batch

    def __iter__(self):
        for step in range(self.start, self.total):
            for a in range(self.accum):
                yield [self.s.index(step * self.s.G + p) for p in self.s.positions(step, a, self.rank, self.world, self.batch)]

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum


def _noise(x0: Tensor, stage: str, step: int, positions: list[int], knobs: dict, cfg: TrainConfig):
    """Per-sample sigma and noise from generators seeded by (seed, stage, step, global position)."""
    sig, noise = [], []
    for p in positions:
        g = torch.Generator().manual_seed(_seed(cfg.seed, stage, step, p))
        sig.append(sample_sigma(1, knobs["f"], shift=cfg.shift, generator=g))
        noise.append(torch.randn(x0.shape[1:], generator=g))
    sigma = torch.cat(sig).to(x0.device)
    noise = torch.stack(noise).to(x0.device)
    s = sigma.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise  # docs/method.md §1: sigma 1 = pure noise
    return x_t, sigma, noise - x0
