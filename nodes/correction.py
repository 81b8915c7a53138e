"""PILA Flow Correction: MODEL -> patched MODEL (a stackable APPLY_MODEL wrapper on a clone, docs/method.md §8)."""
from __future__ import annotations

from comfy_api.latest import io

from .common import CATEGORY, correction_inputs, diagnostics_input, patch_model, pooled_conditioning


class PILAFlowCorrection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAFlowCorrection",
            display_name="PILA Flow Correction",
            category=CATEGORY,
            description="Adds PILA's physics flow correction to a Wan MODEL (a wrapper on a clone: stacks with LoRAs, "
                        "ModelSamplingSD3, caches and any sampler). Both CFG rows get the same physics condition.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 or Wan 2.2 A14B diffusion model (16-channel latents)."),
                *correction_inputs(),
                diagnostics_input(),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The model with the PILA correction.")],
        )

    @classmethod
    def execute(cls, model, adapter, routing, positive, diagnostics: bool = False, physics=None) -> io.NodeOutput:
        name = "PILA Flow Correction"
        text = pooled_conditioning(physics if physics is not None else positive, adapter, name=name)
        patched, _ = patch_model(model, adapter, routing, text, diagnostics=diagnostics, name=name)
        return io.NodeOutput(patched)
