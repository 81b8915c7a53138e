"""PILA Expert Router: labels -> routing settings (LPMER knobs, docs/method.md §4 and §8)."""
from __future__ import annotations

from comfy_api.latest import io, ui

from pila.patch import CorrectionSettings
from pila.steps import parse_steps

from pila import CATEGORIES, category_index

from .common import CATEGORY, AdapterType, LabelsType, Routing, RoutingType


def parse_exclude(text: str) -> tuple[str, ...]:
    """'Optical, thermal' -> ('Optical', 'Thermal'); unknown names raise with the valid list."""
    names = [p.strip() for p in (text or "").replace(";", ",").split(",") if p.strip() and p.strip().lower() != "none"]
    return tuple(dict.fromkeys(CATEGORIES[category_index(p)] for p in names))


class PILAExpertRouter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAExpertRouter",
            display_name="PILA Expert Router",
            category=CATEGORY,
            description="Routing and strength settings for the PILA flow correction.",
            inputs=[
                AdapterType.Input("adapter", tooltip="The PILA adapter; its config gives the defaults and limits."),
                LabelsType.Input("labels", optional=True,
                                 tooltip="Labels from PILA Physics Label Parser; none = no label prior."),
                io.Int.Input("top_k", default=4, min=0, max=8, tooltip="Experts kept per sample (0 = no expert "
                             "refines the bank). The paper uses 4."),
                io.Float.Input("prior_strength", default=2.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Label prior lambda added to the router logits of labelled categories."),
                io.Float.Input("temperature", default=2.0, min=0.05, max=20.0, step=0.05,
                               tooltip="Softmax temperature over the kept experts' logits."),
                io.String.Input("exclude", default="", tooltip="Experts never to select, comma-separated, e.g. "
                                "'Optical, Thermal' (names: " + ", ".join(CATEGORIES) + ")."),
                io.String.Input("steps", default="all", tooltip="Denoising steps to correct, counted 1..N of each "
                                "sampling run: 'all', '1-10,21-30', '5', '40-' (the paper's Table 13 uses step ranges). "
                                "A range that matches no step of a run is reported on the correcting node."),
                io.Float.Input("strength", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="Scale of the correction (1 = as trained, 0 = off, bit-exact)."),
                io.Float.Input("gate_floor", default=0.05, min=0.0, max=1.0, step=0.01,
                               tooltip="Gate at pure noise: gate(sigma) = floor + (1 - floor)(1 - sigma)^2."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001, optional=True,
                               tooltip="Fraction of the schedule where the correction starts (0 = pure noise), "
                               "as in ComfyUI's own model-patch nodes. Applies together with 'steps'."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001, optional=True,
                               tooltip="Fraction of the schedule where the correction ends (1 = the last step)."),
            ],
            outputs=[RoutingType.Output(display_name="routing", tooltip="Settings for PILA Flow Correction.")],
        )

    @classmethod
    def validate_inputs(cls, steps: str):
        # only 'steps' is declared: ComfyUI reports the message once, on it, and keeps its min/max checks for the rest
        try:
            parse_steps(steps)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, adapter, top_k: int, prior_strength: float, temperature: float, exclude: str,
                steps: str, strength: float, gate_floor: float, labels=None, start_percent: float = 0.0,
                end_percent: float = 1.0) -> io.NodeOutput:
        n = adapter.config.num_categories
        try:
            exclude = parse_exclude(exclude)
        except ValueError as e:
            raise ValueError(f"PILA Expert Router, exclude: {e}") from None
        if start_percent > end_percent:
            raise ValueError(f"PILA Expert Router: start_percent {start_percent} is after end_percent {end_percent}; "
                             "the correction would never run. Set start_percent <= end_percent.")
        settings = CorrectionSettings(strength=strength, gate_floor=gate_floor, top_k=min(top_k, n),
                                      prior_strength=prior_strength, temperature=temperature, exclude=exclude,
                                      steps=parse_steps(steps), start_percent=start_percent, end_percent=end_percent)
        lab = ", ".join(labels.names) if labels is not None and labels.names else "none"
        k_eff = min(top_k, n - len(exclude))
        text = (f"top-k {k_eff}, prior {prior_strength}, temperature {temperature}, excluded: {', '.join(exclude) or 'none'}\n"
                f"steps {settings.steps.text}, percent {start_percent:g}-{end_percent:g}, strength {strength}, gate floor {gate_floor}\nlabels: {lab}")
        return io.NodeOutput(Routing(settings, labels), ui=ui.PreviewText(text))
