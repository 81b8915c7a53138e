"""The 8 physical categories and the bank slots each category's expert may change (docs/method.md §4)."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .bank import slot_mask

CATEGORIES: tuple[str, ...] = (
    "Rigid Body", "Elastic", "Fluid", "Compressible Flow", "Phase Change", "Collision", "Thermal", "Optical",
)
NUM_CATEGORIES = len(CATEGORIES)

RECIPES: dict[str, tuple[str, ...]] = {
    "Rigid Body": ("d", "u", "eps", "sigma"),
    "Elastic": ("d", "u", "eps", "sigma"),
    "Fluid": ("u", "p", "rho"),
    "Compressible Flow": ("u", "p", "rho"),
    "Phase Change": ("u", "rho", "T", "alpha"),
    "Collision": ("d", "u", "j"),
    "Thermal": ("u", "T"),
    "Optical": ("psi", "alpha"),
}

_ALIASES = {c.lower().replace(" ", "").replace("_", "").replace("-", ""): i for i, c in enumerate(CATEGORIES)}
_ALIASES.update({"rigid": 0, "elasticity": 1, "liquid": 2, "compressible": 3, "gas": 3, "phase": 4,
                 "phasetransition": 4, "heat": 6, "light": 7, "optics": 7})


def category_index(name: str | int) -> int:
    """'Rigid Body', 'rigid_body', 'rigid-body' or 0 -> 0. Unknown names raise with the valid list."""
    if isinstance(name, int):
        if not 0 <= name < NUM_CATEGORIES:
            raise ValueError(f"category index {name} out of range 0..{NUM_CATEGORIES - 1}")
        return name
    key = str(name).strip().lower().replace(" ", "").replace("_", "").replace("-", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown physical category {name!r}; valid categories: {', '.join(CATEGORIES)}")
    return _ALIASES[key]


def multi_hot(labels: Iterable[str | int], *, device=None, dtype=torch.float32) -> Tensor:
    """A label list -> an `[8]` multi-hot vector y (empty list -> zeros: the router still picks top-k)."""
    y = torch.zeros(NUM_CATEGORIES, device=device, dtype=dtype)
    for name in labels:
        y[category_index(name)] = 1
    return y


def names_from_multi_hot(y: Tensor) -> list[str]:
    assert y.shape[-1] == NUM_CATEGORIES, f"labels must end in {NUM_CATEGORIES}, got {tuple(y.shape)}"
    return [CATEGORIES[i] for i in range(NUM_CATEGORIES) if float(y[i]) > 0.5]


def recipe_masks(*, device=None, dtype=torch.float32) -> Tensor:
    """`[8, 32]`: row k is 1 on the bank channels category k's expert may change."""
    return torch.stack([slot_mask(RECIPES[c], device=device, dtype=dtype) for c in CATEGORIES])
