"""PILA: Physics-Informed Latent Alignment, a flow-correction adapter for Wan video models (docs/method.md).

Pure PyTorch; nothing here imports ComfyUI, diffusers or training code.
"""
from .adapter import PILAAdapter, PILAOutput
from .bank import BANK_CHANNELS, BANK_CONTRACT_VERSION, SLOT_NAMES, active_slots
from .condition import pool_text
from .config import PILAConfig
from .decoder import apply_correction, gate
from .io import FORMAT, FORMAT_VERSION, load_adapter, read_adapter_info, save_adapter
from .router import route
from .taxonomy import CATEGORIES, RECIPES, category_index, multi_hot

__all__ = [
    "PILAAdapter", "PILAOutput", "PILAConfig", "pool_text", "gate", "apply_correction", "route",
    "save_adapter", "load_adapter", "read_adapter_info", "FORMAT", "FORMAT_VERSION",
    "BANK_CHANNELS", "BANK_CONTRACT_VERSION", "SLOT_NAMES", "active_slots",
    "CATEGORIES", "RECIPES", "category_index", "multi_hot",
]
