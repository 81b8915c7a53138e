"""PILA Physics Label Parser: prompt -> the 8 category labels and a physics-oriented description (SPEC section 9)."""
from __future__ import annotations

from comfy_api.latest import io, ui

from pila import CATEGORIES
from pila.labels import PARSERS, parse

from .common import CATEGORY, Labels, LabelsType

OVERRIDE = ["auto", "on", "off"]


def override_id(category: str) -> str:
    return category.lower().replace(" ", "_")


def apply_overrides(names: list[str], confidences: dict, overrides: dict[str, str]) -> tuple[list[str], dict]:
    """auto keeps the parser's decision, on/off force a category (confidence 1 / 0)."""
    chosen, conf = set(names), dict(confidences)
    for c in CATEGORIES:
        mode = overrides.get(override_id(c), "auto")
        if mode == "on":
            chosen.add(c)
            conf[c] = 1.0
        elif mode == "off":
            chosen.discard(c)
            conf[c] = 0.0
    return [c for c in CATEGORIES if c in chosen], conf


class PILAPhysicsLabelParser(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PILAPhysicsLabelParser",
            display_name="PILA Physics Label Parser",
            category=CATEGORY,
            description="Maps a prompt to PILA's 8 physics categories and writes a physics-oriented description "
                        "(encode it with the UMT5 text encoder and feed it to the correction's 'physics' input).",
            inputs=[
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The video prompt to analyse (the same text as the positive prompt)."),
                io.Combo.Input("parser", options=list(PARSERS), default="default",
                               tooltip="default: offline lexicon + rules weighed by a trained linear model, no download; English only "
                               "(another language gets a warning here and no labels). llm: a local instruction "
                               "LLM (transformers) from 'llm_model_dir'; falls back to the rules if its answer is invalid."),
                *[io.Combo.Input(override_id(c), options=OVERRIDE, default="auto",
                                 tooltip=f"{c}: auto = the parser decides, on/off = force this expert's label.")
                  for c in CATEGORIES],
                io.String.Input("llm_model_dir", default="", optional=True,
                                tooltip="parser = llm only: a local directory with a causal LM and its tokenizer "
                                "(nothing is downloaded)."),
            ],
            outputs=[
                LabelsType.Output(display_name="labels", tooltip="The active categories with confidences."),
                io.String.Output(display_name="description", tooltip="Physics-oriented description of the prompt."),
            ],
        )

    @classmethod
    def execute(cls, prompt: str, parser: str = "default", llm_model_dir: str = "", **overrides) -> io.NodeOutput:
        kw = {"model_dir": llm_model_dir.strip()} if parser != "default" and llm_model_dir.strip() else {}
        r = parse(prompt, parser=parser, **kw)
        names, conf = apply_overrides(list(r.labels), dict(r.confidences), overrides)
        labels = Labels(names, {k: float(v) for k, v in conf.items()}, r.description)
        forced = [f"{c}={overrides[override_id(c)]}" for c in CATEGORIES if overrides.get(override_id(c), "auto") != "auto"]
        shown = ", ".join(f"{c} ({conf.get(c, 1.0):.2f})" for c in names) or "none (the router still picks top-k)"
        warning = r.extras.get("warning")  # e.g. a prompt that is not English: say so, never a silent empty set
        text = ((f"WARNING: {warning}\n" if warning else "") + f"labels: {shown}\n"
                + (f"overrides: {', '.join(forced)}\n" if forced else "")
                + f"description: {r.description}\nparser: {getattr(r, 'source', parser)}")
        return io.NodeOutput(labels, r.description, ui=ui.PreviewText(text))
