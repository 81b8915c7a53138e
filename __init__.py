"""ComfyUI entry point of the PILA node pack (V3 API): ComfyUI calls `comfy_entrypoint()`.

Nothing ComfyUI-specific is imported at module import time, so the repository's own tests (and pip) can import
this file without ComfyUI; the nodes are imported when ComfyUI asks for them.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _ensure_pila_importable() -> None:
    """Make the bundled `pila` package importable (a pip-installed PILA keeps precedence)."""
    if _HERE not in sys.path:
        sys.path.append(_HERE)
    from pila.compat import ensure_torchvision_importable

    ensure_torchvision_importable()


async def comfy_entrypoint():
    _ensure_pila_importable()
    from .nodes.extension import PILAExtension

    return PILAExtension()


WEB_DIRECTORY = "./nodes/web"  # a small frontend extension that shows the nodes' text reports on the node
__all__ = ["comfy_entrypoint"]
