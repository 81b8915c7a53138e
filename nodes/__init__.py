"""ComfyUI nodes for PILA (V3 node API). Imported only by the pack entry (../__init__.py) inside ComfyUI; the
maths lives in `pila/` (pila.patch, pila.steps, pila.diagnostics)."""
