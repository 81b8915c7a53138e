"""ComfyUI entry point of the PILA node pack (V3 API): ComfyUI calls `comfy_entrypoint()`.

Nothing ComfyUI-specific is imported at module import time, so the repository's own tests (and pip) can import
this file without ComfyUI; the nodes are imported when ComfyUI asks for them.

The nodes run on the `pila` library bundled in this folder, loaded by path (`_load_bundled_pila`). The bundled copy
wins over any other importable `pila` because the nodes and the library are one release: a pip-installed `pila`
left over from an older clone (an editable install keeps pointing at its old folder) would otherwise run
yesterday's maths under today's nodes, with errors nobody could trace from the pack. The pack folder itself is not
put on `sys.path`, since its `nodes/` package would shadow ComfyUI's own `nodes` module.
"""
import importlib.util
import logging
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_PILA_DIR = os.path.join(_HERE, "pila")
log = logging.getLogger(__name__)


def _same_dir(a: str | None, b: str) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def _load_bundled_pila():
    """Import `pila` from this pack's folder (whatever else is installed) and return the module."""
    current = sys.modules.get("pila")
    if current is not None and _same_dir(os.path.dirname(getattr(current, "__file__", "") or ""), _PILA_DIR):
        return current
    if current is not None:  # imported from elsewhere before ComfyUI loaded the pack: replace it with ours
        log.warning("PILA: replacing the pila imported from %s with the pack's own copy in %s",
                    getattr(current, "__file__", "?"), _PILA_DIR)
        for name in [n for n in sys.modules if n == "pila" or n.startswith("pila.")]:
            del sys.modules[name]
    else:
        other = importlib.util.find_spec("pila")
        if other is not None and other.origin and not _same_dir(os.path.dirname(other.origin), _PILA_DIR):
            log.info("PILA: ignoring the pila installed at %s; the nodes use the pack's own copy in %s",
                     other.origin, _PILA_DIR)
    spec = importlib.util.spec_from_file_location("pila", os.path.join(_PILA_DIR, "__init__.py"),
                                                  submodule_search_locations=[_PILA_DIR])
    module = importlib.util.module_from_spec(spec)
    sys.modules["pila"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("pila", None)
        raise
    return module


async def comfy_entrypoint():
    _load_bundled_pila()
    from pila.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from .nodes.extension import PILAExtension

    return PILAExtension()


WEB_DIRECTORY = "./nodes/web"  # a small frontend extension that shows the nodes' text reports on the node
__all__ = ["comfy_entrypoint"]
