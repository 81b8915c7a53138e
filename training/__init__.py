"""PILA adapter training (docs/method.md §7): data, cache, frozen Wan, stages A-C, quick start.

Importing this package makes a CPU torch + PyPI torchvision pair importable (transformers and diffusers
import torchvision) through `pila.compat`.
"""
from pila.compat import ensure_torchvision_importable

ensure_torchvision_importable()
