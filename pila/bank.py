"""The physical attribute bank: a versioned 32-channel contract of 10 slots (docs/method.md §2).

Layout: every bank is `[B, 32, T, H, W]` in the Wan 2.1 latent grid; vector fields store x (= W) first.
Slots keep their channel widths even when the physical quantity is narrower: scalars are repeated,
2-vectors are repeated twice, and tensors are stored as `[xx, xy, xy, yy]`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import Tensor

BANK_CONTRACT_VERSION = 1


@dataclass(frozen=True)
class Slot:
    name: str
    width: int  # channels in the bank
    layout: str  # how the physical quantity fills the channels
    meaning: str


SLOTS: tuple[Slot, ...] = (
    Slot("d", 4, "[dx, dy, dx, dy]", "displacement"),
    Slot("u", 4, "4-ch scaffold; u_head reads (ux, uy)", "velocity"),
    Slot("p", 2, "[p, p]", "pressure"),
    Slot("rho", 2, "[rho, rho]", "density"),
    Slot("T", 2, "[T, T]", "temperature"),
    Slot("alpha", 2, "[a, a]", "phase / support in [0, 1]"),
    Slot("eps", 4, "[exx, exy, exy, eyy]", "strain (rate)"),
    Slot("sigma", 4, "[sxx, sxy, sxy, syy]", "stress"),
    Slot("j", 4, "[jx, jy, jx, jy]", "impulse"),
    Slot("psi", 4, "[w, w, w, w]", "wave"),
)
SLOT_NAMES: tuple[str, ...] = tuple(s.name for s in SLOTS)
BANK_CHANNELS = sum(s.width for s in SLOTS)
assert BANK_CHANNELS == 32

# physical width of each slot's readout (what residuals see); u is read by the adapter's u_head
READOUT_WIDTH = {"d": 2, "u": 4, "p": 1, "rho": 1, "T": 1, "alpha": 1, "eps": 4, "sigma": 4, "j": 2, "psi": 1}


def _slices() -> dict[str, slice]:
    out, start = {}, 0
    for s in SLOTS:
        out[s.name] = slice(start, start + s.width)
        start += s.width
    return out


SLOT_SLICES: dict[str, slice] = _slices()

# staged recovery, "only-u" policy (docs/method.md §3): phase i activates PHASES[i] on top of the earlier ones
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("u", "p", "rho", "eps", "sigma", "d")),
    ("alpha", ("alpha",)),
    ("T", ("T",)),
    ("j", ("j",)),
    ("psi", ("psi",)),
)
ALL_PHASES = len(PHASES) - 1  # inference: everything active


def contract() -> dict:
    """The bank contract as saved into every adapter file."""
    return {
        "version": BANK_CONTRACT_VERSION,
        "channels": BANK_CHANNELS,
        "slots": [[s.name, s.width, s.layout] for s in SLOTS],
    }


def contract_json() -> str:
    return json.dumps(contract(), sort_keys=True)


def check_contract(other: dict | str, *, source: str = "adapter") -> None:
    """Raise a ValueError naming the mismatch when `other` is not this package's bank contract."""
    if isinstance(other, str):
        other = json.loads(other)
    mine = contract()
    if other == mine:
        return
    diffs = [f"{k}: file has {other.get(k)!r}, this PILA expects {mine[k]!r}" for k in mine if other.get(k) != mine[k]]
    raise ValueError(f"{source} uses another bank contract ({'; '.join(diffs)}). "
                     "Use an adapter trained with this version of PILA, or install the PILA version it was made with.")


def active_slots(active_phase: int = ALL_PHASES) -> tuple[str, ...]:
    assert 0 <= active_phase <= ALL_PHASES, f"active_phase must be in 0..{ALL_PHASES}, got {active_phase}"
    return tuple(n for _, names in PHASES[: active_phase + 1] for n in names)


def slot_mask(names, *, device=None, dtype=torch.float32) -> Tensor:
    """A `[32]` channel mask that is 1 on the channels of the named slots."""
    m = torch.zeros(BANK_CHANNELS, device=device, dtype=dtype)
    for n in names:
        assert n in SLOT_SLICES, f"unknown slot {n!r}; slots are {SLOT_NAMES}"
        m[SLOT_SLICES[n]] = 1
    return m


def split(bank: Tensor) -> dict[str, Tensor]:
    """`[B, 32, T, H, W]` -> {slot name: `[B, width, T, H, W]`} (views, raw channels)."""
    assert bank.ndim == 5 and bank.shape[1] == BANK_CHANNELS, f"bank must be [B, 32, T, H, W], got {tuple(bank.shape)}"
    return {n: bank[:, sl] for n, sl in SLOT_SLICES.items()}


def _expand(name: str, f: Tensor) -> Tensor:
    """Fill a slot's width from its physical readout (see the layouts in SLOTS)."""
    width, c = dict((s.name, s.width) for s in SLOTS)[name], f.shape[1]
    if c == width:
        return f
    if name in ("eps", "sigma"):
        raise AssertionError(f"{name} needs 4 channels [xx, xy, xy, yy], got {c}")
    assert width % c == 0, f"slot {name} ({width} ch) cannot be filled from {c} channels"
    return f.repeat(1, width // c, 1, 1, 1)


def pack(fields: dict[str, Tensor], *, like: Tensor | None = None, active: tuple[str, ...] | None = None) -> Tensor:
    """{slot: physical field} -> `[B, 32, T, H, W]`. Missing or inactive slots are zero."""
    ref = like if like is not None else next(iter(fields.values()))
    B, _, T, H, W = ref.shape
    parts = []
    for s in SLOTS:
        f = fields.get(s.name)
        if f is None or (active is not None and s.name not in active):
            parts.append(ref.new_zeros(B, s.width, T, H, W))
        else:
            parts.append(_expand(s.name, f).to(ref.dtype))
    return torch.cat(parts, dim=1)


def readout(bank: Tensor) -> dict[str, Tensor]:
    """Raw bank -> physical fields for residuals (docs/method.md §2, 'readout' column).

    d, j: mean of the two (x, y) copies -> 2 ch; p, rho, T, alpha, psi: channel mean -> 1 ch;
    eps, sigma: all 4 ch; u: the 4-ch scaffold (the adapter's u_head turns it into (ux, uy)).
    """
    s = split(bank)
    two = lambda f: (f[:, 0:2] + f[:, 2:4]) / 2  # noqa: E731
    one = lambda f: f.mean(dim=1, keepdim=True)  # noqa: E731
    return {
        "d": two(s["d"]), "u": s["u"], "p": one(s["p"]), "rho": one(s["rho"]), "T": one(s["T"]),
        "alpha": one(s["alpha"]), "eps": s["eps"], "sigma": s["sigma"], "j": two(s["j"]), "psi": one(s["psi"]),
    }
