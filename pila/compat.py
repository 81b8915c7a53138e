"""Environment shims for running next to ComfyUI. Nothing here imports ComfyUI.

PyPI only ships CUDA builds of torchvision. On a CPU-only torch, `import torchvision` then fails with
"operator torchvision::nms does not exist" because its Python side registers fake kernels for ops its
(CUDA) C++ library never defined. ComfyUI imports torchvision at start, and so do diffusers' Wan pipeline
and transformers' UMT5, so every process that may import them calls `ensure_torchvision_importable()` first.
"""
from __future__ import annotations

import torch

# the op schemas torchvision's Python side expects the C++ library to have defined
_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY = None  # keep the torch.library handle alive: dropping it would unregister the schemas


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def ensure_torchvision_importable() -> bool:
    """Define torchvision's missing op schemas on a CPU-only torch so that `import torchvision` works.

    Idempotent; a no-op on CUDA/ROCm builds of torch (a real install has the ops) and once torchvision's own
    library is loaded. Returns True when it defined something."""
    global _LIBRARY
    if torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None:
        return False
    missing = [s for s in _TORCHVISION_SCHEMAS if not _has_op(s.split("(", 1)[0])]
    if not missing:
        return False
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - a schema-only namespace
    for schema in missing:
        _LIBRARY.define(schema)
    return True
