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


def trained_for(handle: AdapterHandle) -> str:
    """'adapter 'x.safetensors' (trained for 4096-wide text states, 16-channel latents[, a toy ...])'."""
    cfg = handle.config
    toy = handle.info.get("extras", {}).get("toy")
    return (f"the adapter {handle.name!r} (trained for {cfg.text_dim}-wide text states and {cfg.latent_channels}-channel "
            f"latents{'; a toy from the quick start that only fits its tiny random Wan' if toy else ''})")


def notify(node_id: str | None, message: str) -> None:
    """A warning in the log and, inside a running server, as progress text on the node it concerns."""
    log.warning(message)
    try:
        from server import PromptServer
        if node_id is not None and PromptServer.instance is not None:
            PromptServer.instance.send_progress_text(message, node_id)
    except Exception:  # pragma: no cover - no server (in-process use); the log has it
        pass


def executing_node_id() -> str | None:
    from comfy_execution.utils import get_executing_context
    ctx = get_executing_context()
    return None if ctx is None else ctx.node_id


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
        raise PILAPatchError(f"{name}: the MODEL ({kind}) works on {channels}-channel latents; {trained_for(handle)} "
                             f"does not fit it.{hint}")
    if getattr(base, "model_type", None) != comfy.model_base.ModelType.FLOW:
        raise PILAPatchError(f"{name}: the MODEL is not a flow-matching model ({base.model_type}); PILA needs Wan's flow "
                             "parameterisation (sigma 1 = noise).")


def pooled_conditioning(cond, handle: AdapterHandle, *, name: str = "PILA") -> torch.Tensor | None:
    """CONDITIONING -> the first entry's UMT5 states pooled to [1, text_dim] (docs/method.md §4), or None. A width
    the adapter was not trained for is an error here, before sampling starts."""
    if cond is None:
        return None
    if not cond:
        raise PILAPatchError(f"{name}: the physics conditioning is empty; connect a CLIP Text Encode (UMT5) output.")
    states = cond[0][0]
    if not torch.is_tensor(states) or states.ndim not in (2, 3):
        raise PILAPatchError(f"{name}: unexpected conditioning tensor {type(states).__name__}; connect a text encoder output.")
    width, want = states.shape[-1], handle.config.text_dim
    if width != want:
        fix = ("Train an adapter for Wan (README, 'Getting an adapter')." if want != 4096 else
               "Encode the prompt with Wan's UMT5-XXL text encoder (umt5_xxl_*.safetensors, type wan).")
        raise PILAPatchError(f"{name}: the conditioning holds {width}-wide text states; {trained_for(handle)} cannot "
                             f"read them. {fix}")
    return physics_condition(states[:1], text_dim=want)


def sigma_range(model, settings) -> tuple[float, float]:
    """start/end_percent -> (sigma_start, sigma_end) through the model's own schedule (as SkipLayerGuidanceDiT)."""
    if settings.all_percent:
        return float("inf"), 0.0
    ms = model.get_model_object("model_sampling")
    return float(ms.percent_to_sigma(settings.start_percent)), float(ms.percent_to_sigma(settings.end_percent))


class RunChecks:
    """OUTER_SAMPLE wrapper: before a sampling run, warn when the step range / percents match no step of it; after
    it, warn when the adapter's dv had to be scrubbed of NaN (once per run, one host read)."""

    def __init__(self, correction: FlowCorrection, node_id: str | None, check_range: bool = True):
        self.correction, self.node_id, self.check_range = correction, node_id, check_range

    def __call__(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        msg = self.correction.begin_run(sigmas) if self.check_range else None
        if msg:
            notify(self.node_id, msg)
        out = executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        msg = self.correction.end_run()
        if msg:
            notify(self.node_id, msg)
        return out


def patch_model(model, handle: AdapterHandle, routing: Routing, text, *, diagnostics: bool = False,
                step_offset: int = 0, recorder: Recorder | None = None, name: str = "PILA", check_range: bool = True):
    """model.clone() + an APPLY_MODEL wrapper + the adapter as an additional model. Returns (model, recorder)."""
    check_model(model, handle, name=name)
    recorder = recorder or Recorder(keep_maps=diagnostics)
    labels = routing.labels.multi_hot() if routing.labels is not None else None
    wrapper = FlowCorrection(handle.adapter, routing.settings, text=text, labels=labels, recorder=recorder,
                             step_offset=step_offset, name=name, sigma_range=sigma_range(model, routing.settings))
    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, wrapper)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY,
                           RunChecks(wrapper, executing_node_id(), check_range))
    models = [p for p in m.get_additional_models_with_key(WRAPPER_KEY) if p.model is not handle.patcher.model]
    m.set_additional_models(WRAPPER_KEY, models + [handle.patcher])
    return m, recorder


def find_correction(model) -> FlowCorrection | None:
    """The last PILA wrapper on a MODEL."""
    for w in reversed(model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY)):
        if isinstance(w, FlowCorrection):
            return w
    return None


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
