"""Denoising-step ranges for the correction (docs/method.md §8): "all", "1-10,21-30", "5", "40-".

Steps count denoising steps 1..N of one sampling run (not model calls: a multi-stage sampler calls the model
several times inside one step, and CFG rows share one call). The current step is found from the run's sigma
schedule `sample_sigmas` (N + 1 values, descending, sigma 1 = pure noise) and the sigma of the call.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

_PART = re.compile(r"^(\d+)?\s*(-)?\s*(\d+)?$")


@dataclass(frozen=True)
class StepRange:
    """A union of inclusive 1-based step intervals; `hi = None` means "to the last step"."""

    intervals: tuple[tuple[int, int | None], ...] = ((1, None),)
    text: str = "all"

    @property
    def is_all(self) -> bool:
        return self.intervals == ((1, None),)

    def __contains__(self, step: int) -> bool:
        return any(lo <= step and (hi is None or step <= hi) for lo, hi in self.intervals)

    def steps(self, total: int) -> list[int]:
        """The steps of a run of `total` steps that the range covers."""
        return [s for s in range(1, total + 1) if s in self]


def parse_steps(text: str) -> StepRange:
    """Parse a step range. Accepts "all" (or empty), single steps "7", ranges "1-10", open ranges "40-" / "-5",
    comma-separated. Raises ValueError with the offending part and examples."""
    raw = (text or "").strip().lower()
    if raw in ("", "all", "*"):
        return StepRange()
    intervals = []
    for part in raw.split(","):
        part = part.strip()
        m = _PART.match(part)
        if not part or not m or (m.group(1) is None and m.group(3) is None):
            raise ValueError(f"step range {text!r}: cannot read {part!r}. Use 'all', or steps and ranges "
                             "like '1-10,21-30', '5', '40-' (steps count from 1).")
        lo = int(m.group(1)) if m.group(1) else 1
        if m.group(2) is None:  # a single step
            hi = lo
        else:
            hi = int(m.group(3)) if m.group(3) else None
        if lo < 1 or (hi is not None and hi < lo):
            raise ValueError(f"step range {text!r}: {part!r} is empty or starts below 1 (steps count from 1).")
        intervals.append((lo, hi))
    return StepRange(tuple(sorted(intervals, key=lambda iv: iv[0])), text=text.strip())


def step_of_sigma(sigma: float, sample_sigmas: Tensor | list[float]) -> int:
    """1-based denoising step whose interval [sigma_i, sigma_{i+1}) holds `sigma` (a model call of step i is at
    sigma_i, or between sigma_i and sigma_{i+1} for multi-stage samplers). A sigma above sigma_0 counts as
    step 1."""
    s = torch.as_tensor(sample_sigmas, dtype=torch.float64).flatten().cpu()
    assert s.numel() >= 2, f"sample_sigmas needs at least 2 values, got {s.numel()}"
    n = s.numel() - 1
    # step i+1 starts at sigma_i: count the schedule values at or above sigma (with a relative tolerance)
    tol = 1e-6 * max(1.0, abs(float(sigma)))
    started = int((s[:n] >= float(sigma) - tol).sum())
    return min(max(started, 1), n)
