"""PILA Expert Maps: what the routed experts did per step (paper Figures 6 and 7), as IMAGE batches."""
from __future__ import annotations

import json

from comfy_api.latest import io, ui

from pila.diagnostics import expert_change_images, router_weights_image

from .common import CATEGORY, find_recorder


class PILAExpertMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAExpertMaps",
            display_name="PILA Expert Maps",
            category=CATEGORY,
            description="Per-step diagnostics of the last sampling run of a PILA-patched model: where each routed expert "
                        "changed the physical bank, and the router weights per step. Turn on 'diagnostics' on the "
                        "correction node.",
            is_output_node=True,
            not_idempotent=True,
            inputs=[
                io.Model.Input("model", tooltip="The PILA-patched model that sampled (PILA Flow Correction output or the "
                               "sampler's model output)."),
                io.Latent.Input("samples", tooltip="The sampler's output latent: connects this node after sampling."),
                io.Int.Input("max_steps", default=64, min=1, max=1000, tooltip="Most steps to draw expert maps for."),
            ],
            outputs=[
                io.Image.Output(display_name="expert_maps", tooltip="One image per step: |w_k dB_k| of the 8 experts "
                                "(mean over frames, positive row), like the paper's Figure 7."),
                io.Image.Output(display_name="router_weights", tooltip="Router weights per step (rows) and expert "
                                "(columns), like the paper's Figure 6."),
            ],
        )

    @classmethod
    def execute(cls, model, samples, max_steps: int = 64) -> io.NodeOutput:
        rec = find_recorder(model)
        if rec is None:
            raise ValueError("PILA Expert Maps: this MODEL has no PILA correction; connect the output of PILA Flow "
                             "Correction (or a PILA sampler's model output).")
        calls = rec.summary()
        applied = sum(c["applied"] for c in calls)
        text = json.dumps({"calls": calls, "applied": applied, "diagnostics": rec.keep_maps})
        maps = expert_change_images(rec, max_steps=max_steps)
        weights = router_weights_image(rec)
        return io.NodeOutput(maps, weights, ui={"text": (text,)})
