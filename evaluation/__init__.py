"""Benchmark generation for PILA: the pack's templates driven over ComfyUI's HTTP API (ComfyUI is never imported).

    python -m evaluation generate --server http://127.0.0.1:8188 --suite vbench2 --out runs/bench
    python -m evaluation sweep steps --server ... --suite vbench2:Mechanics --out runs/table13
    python -m evaluation report runs/bench

See README.md, "Benchmark generation".
"""
from .generate import RunConfig, generate
from .report import report
from .workflow import Arm, Settings

__all__ = ["Arm", "RunConfig", "Settings", "generate", "report"]
