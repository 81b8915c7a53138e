"""Shared pieces of the PILA nodes: custom socket types, the adapter handle, model checks, patching a MODEL."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

import comfy.model_base
import comfy.model_management
import comfy.patcher_extension
import folder_paths
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from pila.taxonomy import multi_hot
from pila.patch import CorrectionSettings, FlowCorrection, PILAPatchError, Recorder, physics_condition

log = logging.getLogger("pila")

CATEGORY = "PILA"
WRAPPER_KEY = "pila.flow_correction"  # APPLY_MODEL wrappers and additional models are registered under this key

# custom socket types
AdapterType = io.Custom("PILA_ADAPTER")
LabelsType = io.Custom("PILA_LABELS")
RoutingType = io.Custom("PILA_ROUTING")


def register_model_folder() -> str:
    """models/pila, listing .safetensors files (adapters are never pickles)."""
    path = os.path.join(folder_paths.models_dir, "pila")
    folder_paths.add_model_folder_path("pila", path, is_default=True)
    paths, exts = folder_paths.folder_names_and_paths["pila"]
    if isinstance(exts, set):
        exts.add(".safetensors")
    else:  # pragma: no cover - a list from an old extra_model_paths setup
        folder_paths.folder_names_and_paths["pila"] = (paths, {".safetensors", *exts})
    return path


class AdapterHolder(torch.nn.Module):
    """Gives the adapter to ComfyUI's model management (ModelPatcher writes a plain `.device` attribute)."""

    def __init__(self, adapter: torch.nn.Module, device: torch.device):
        super().__init__()
        self.adapter = adapter
        self.device = device


@dataclass
class AdapterHandle:
    """The PILA_ADAPTER value: the module, its ModelPatcher (loaded and offloaded with the diffusion model) and
    the file's info for the UI."""

    adapter: torch.nn.Module
    patcher: ModelPatcher
    name: str
    info: dict = field(default_factory=dict)

    @property
    def config(self):
        return self.adapter.config


@dataclass
class Labels:
    """The PILA_LABELS value."""

    names: list[str]
    confidences: dict[str, float]
    description: str

    def multi_hot(self) -> torch.Tensor:
        return multi_hot(self.names)


@dataclass
class Routing:
    """The PILA_ROUTING value: settings plus the labels they route with."""

    settings: CorrectionSettings
    labels: Labels | None = None


def check_model(model, handle: AdapterHandle, *, name: str = "PILA") -> None:
    """A clear error, at graph time, for a MODEL the adapter cannot serve."""
    base = getattr(model, "model", None)
    latent = getattr(base, "latent_format", None)
    channels = getattr(latent, "latent_channels", None)
    dims = getattr(latent, "latent_dimensions", None)
    kind = type(base).__name__
    if not isinstance(base, comfy.model_base.WAN21):
        raise PILAPatchError(f"{name}: the MODEL is {kind} ({channels}-channel latents); PILA adapters serve Wan 2.1 and "
                             "Wan 2.2 A14B video models (loaded with Load Diffusion Model).")
    want = handle.config.latent_channels
    if channels != want or dims != 3:
        hint = (" That is Wan 2.2 TI2V-5B's 48-channel VAE space; PILA adapters read the 16-channel Wan 2.1 VAE space "
                "(Wan 2.1 models and Wan 2.2 A14B)." if channels == 48 else "")
        raise PILAPatchError(f"{name}: the MODEL ({kind}) works on {channels}-channel latents, the adapter "
                             f"{handle.name!r} reads {want}.{hint}")
    if getattr(base, "model_type", None) != comfy.model_base.ModelType.FLOW:
        raise PILAPatchError(f"{name}: the MODEL is not a flow-matching model ({base.model_type}); PILA needs Wan's flow "
                             "parameterisation (sigma 1 = noise).")


def pooled_conditioning(cond) -> torch.Tensor | None:
    """CONDITIONING -> the first entry's UMT5 states pooled to [1, 4096] (SPEC section 4), or None."""
    if cond is None:
        return None
    if not cond:
        raise PILAPatchError("PILA: the physics conditioning is empty; connect a CLIP Text Encode (UMT5) output.")
    states = cond[0][0]
    if not torch.is_tensor(states) or states.ndim not in (2, 3):
        raise PILAPatchError(f"PILA: unexpected conditioning tensor {type(states).__name__}; connect a text encoder output.")
    return physics_condition(states[:1])


def patch_model(model, handle: AdapterHandle, routing: Routing, text, *, diagnostics: bool = False,
                step_offset: int = 0, recorder: Recorder | None = None, name: str = "PILA"):
    """model.clone() + an APPLY_MODEL wrapper + the adapter as an additional model. Returns (model, recorder)."""
    check_model(model, handle, name=name)
    recorder = recorder or Recorder(keep_maps=diagnostics)
    labels = routing.labels.multi_hot() if routing.labels is not None else None
    wrapper = FlowCorrection(handle.adapter, routing.settings, text=text, labels=labels, recorder=recorder,
                             step_offset=step_offset, name=name)
    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, wrapper)
    models = [p for p in m.get_additional_models_with_key(WRAPPER_KEY) if p.model is not handle.patcher.model]
    m.set_additional_models(WRAPPER_KEY, models + [handle.patcher])
    return m, recorder


def find_recorder(model) -> Recorder | None:
    """The recorder of the last PILA wrapper on a MODEL."""
    for w in reversed(model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY)):
        if isinstance(w, FlowCorrection) and w.recorder is not None:
            return w.recorder
    return None


def correction_inputs(*, with_physics: bool = True) -> list:
    """Inputs every correcting node shares."""
    inputs = [
        AdapterType.Input("adapter", tooltip="The PILA adapter (from PILA Adapter Loader)."),
        RoutingType.Input("routing", tooltip="Routing and strength settings (from PILA Expert Router)."),
        io.Conditioning.Input("positive", tooltip="The positive prompt's conditioning (UMT5). Pooled once and used as "
                              "the physics condition for both CFG rows unless 'physics' is connected."),
    ]
    if with_physics:
        inputs.append(io.Conditioning.Input(
            "physics", optional=True, tooltip="Optional: the encoded physics description (PILA Physics Label Parser "
            "-> CLIP Text Encode). Replaces the positive prompt as the physics condition."))
    return inputs


def diagnostics_input():
    return io.Boolean.Input("diagnostics", default=False, tooltip="Record router weights and expert change maps per step "
                            "for PILA Expert Maps (small extra cost).")
