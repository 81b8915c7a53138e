"""PILA Flow Correction Sampler (one model) and its Wan 2.2 A14B form (high- and low-noise experts)."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from .common import (CATEGORY, correction_inputs, diagnostics_input, executing_node_id, find_correction, notify,
                     patch_model, pooled_conditioning)

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def sampling_inputs(*, denoise: bool = True) -> list:
    inputs = [
        io.Conditioning.Input("negative", tooltip="The negative prompt's conditioning."),
        io.Latent.Input("latent_image", tooltip="The latent to denoise (e.g. Empty Hunyuan Latent Video / Wan latent)."),
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True, tooltip="Noise seed."),
        io.Int.Input("steps", default=30, min=1, max=10000, tooltip="Denoising steps."),
        io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale."),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                       tooltip="Sampling algorithm."),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                       tooltip="Sigma schedule."),
    ]
    if denoise:
        inputs.append(io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                                     tooltip="Fraction of the schedule to run (1 = from pure noise)."))
    return inputs


def _noise(latent: dict, latent_image: torch.Tensor, seed: int, disable: bool = False) -> torch.Tensor:
    if disable:
        return torch.zeros(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout, device="cpu")
    return comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))


class PILAFlowCorrectionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAFlowCorrectionSampler",
            display_name="PILA Flow Correction Sampler",
            category=CATEGORY,
            description="KSampler with the PILA correction applied to the model for this run only.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 or Wan 2.2 A14B diffusion model."),
                *correction_inputs(),
                *sampling_inputs(),
                diagnostics_input(),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The denoised latent."),
                io.Model.Output(display_name="model", tooltip="The patched model (for PILA Expert Maps)."),
            ],
        )

    @classmethod
    def execute(cls, model, adapter, routing, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                scheduler, denoise=1.0, diagnostics=False, physics=None) -> io.NodeOutput:
        name = "PILA Flow Correction Sampler"
        text = pooled_conditioning(physics if physics is not None else positive, adapter, name=name)
        patched, _ = patch_model(model, adapter, routing, text, diagnostics=diagnostics, name=name)
        lat = comfy.sample.fix_empty_latent_channels(patched, latent_image["samples"])
        callback = latent_preview.prepare_callback(patched, steps)  # drives the UI progress bar
        samples = comfy.sample.sample(
            patched, _noise(latent_image, lat, seed), steps, cfg, sampler_name, scheduler, positive, negative, lat,
            denoise=denoise, noise_mask=latent_image.get("noise_mask"), callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent_image.copy()
        out["samples"] = samples
        return io.NodeOutput(out, patched)


def switch_step(sigmas: torch.Tensor, boundary: float) -> int:
    """Steps (of len(sigmas) - 1) that start at sigma >= boundary run on the high-noise expert."""
    return int((sigmas[:-1] >= boundary).sum())


class PILAFlowCorrectionSamplerWan22(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAFlowCorrectionSamplerWan22",
            display_name="PILA Flow Correction Sampler (Wan 2.2 A14B)",
            category=CATEGORY,
            description="Wan 2.2 A14B sampling with the same PILA adapter on the high-noise and the low-noise expert; "
                        "switches experts at a sigma boundary (0.875 as upstream Wan T2V).",
            inputs=[
                io.Model.Input("model_high_noise", tooltip="Wan 2.2 A14B high-noise expert (early steps)."),
                io.Model.Input("model_low_noise", tooltip="Wan 2.2 A14B low-noise expert (late steps)."),
                *correction_inputs(),
                *sampling_inputs(denoise=False),
                io.Float.Input("switch_sigma", default=0.875, min=0.0, max=1.0, step=0.005,
                               tooltip="Steps starting at sigma >= this run on the high-noise expert."),
                diagnostics_input(),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The denoised latent."),
                io.Model.Output(display_name="model_low_noise", tooltip="The patched low-noise model (for PILA Expert Maps; "
                                "its record holds both experts' steps)."),
            ],
        )

    @classmethod
    def execute(cls, model_high_noise, model_low_noise, adapter, routing, positive, negative, latent_image, seed, steps,
                cfg, sampler_name, scheduler, switch_sigma=0.875, diagnostics=False, physics=None) -> io.NodeOutput:
        name = "PILA Flow Correction Sampler (Wan 2.2)"
        text = pooled_conditioning(physics if physics is not None else positive, adapter, name=name)
        # step ranges and percents refer to the whole schedule: checked here once, not per half
        high, rec = patch_model(model_high_noise, adapter, routing, text, diagnostics=diagnostics, name=name,
                                check_range=False)
        sigmas = comfy.samplers.calculate_sigmas(high.get_model_object("model_sampling"), scheduler, steps).cpu()
        msg = find_correction(high).begin_run(sigmas)
        if msg:
            notify(executing_node_id(), msg)
        switch = switch_step(sigmas, switch_sigma)
        # the low-noise half counts steps switch+1..N; same recorder
        low, _ = patch_model(model_low_noise, adapter, routing, text, diagnostics=diagnostics, step_offset=switch,
                             recorder=rec, name=name, check_range=False)
        lat = comfy.sample.fix_empty_latent_channels(high, latent_image["samples"])
        pbar = comfy.utils.ProgressBar(steps)
        disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
        x = lat
        parts = [(high, 0, switch), (low, switch, steps)]
        for i, (m, start, end) in enumerate(parts):
            if end <= start:
                continue
            first, last = start == 0, end == steps

            def callback(step, x0, x_, total, _start=start):
                pbar.update_absolute(_start + step + 1, steps)

            x = comfy.sample.sample(
                m, _noise(latent_image, x, seed, disable=not first), steps, cfg, sampler_name, scheduler, positive,
                negative, x, denoise=1.0, disable_noise=not first, start_step=start, last_step=end,
                force_full_denoise=last, noise_mask=latent_image.get("noise_mask"), callback=callback,
                disable_pbar=disable_pbar, seed=seed)
        out = latent_image.copy()
        out["samples"] = x
        return io.NodeOutput(out, low)
