"""PILA Physics Label Parser: prompt -> the 8 category labels and a physics-oriented description (docs/method.md §9)."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from pila import CATEGORIES
from pila.labels import PARSERS, parse

from .common import CATEGORY, Labels, LabelsType

OVERRIDE = ["auto", "on", "off"]
LLM_FOLDER = "LLM"  # models/LLM: one sub-folder per local causal LM (transformers layout, .safetensors weights)
NO_LLM = "none"


def register_llm_folder() -> None:
    if LLM_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(LLM_FOLDER, os.path.join(folder_paths.models_dir, LLM_FOLDER), is_default=True)


def llm_models() -> list[str]:
    """Sub-folders of the models/LLM folders that hold a config.json (a transformers model)."""
    register_llm_folder()
    names = set()
    for root in folder_paths.get_folder_paths(LLM_FOLDER):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(names)


def llm_model_path(name: str) -> str:
    """A name from llm_models() -> its folder; anything else (a path, '..') is refused."""
    if name in llm_models():
        for root in folder_paths.get_folder_paths(LLM_FOLDER):
            if os.path.isfile(os.path.join(root, name, "config.json")):
                return os.path.join(root, name)
    where = ", ".join(folder_paths.get_folder_paths(LLM_FOLDER))
    raise ValueError(f"PILA Physics Label Parser: no LLM folder {name!r} in models/LLM ({where}). Put a local causal "
                     "LM (config.json, tokenizer, .safetensors weights) into a sub-folder there and pick it in "
                     "'llm_model', or use parser 'default'.")


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
                               "LLM (transformers) from 'llm_model' (models/LLM); falls back to the default parser if its answer is invalid."),
                *[io.Combo.Input(override_id(c), options=OVERRIDE, default="auto",
                                 tooltip=f"{c}: auto = the parser decides, on/off = force this expert's label.")
                  for c in CATEGORIES],
                io.Combo.Input("llm_model", options=[NO_LLM, *llm_models()], default=NO_LLM, optional=True,
                               tooltip="parser = llm only: a model folder in models/LLM (a local causal LM with its "
                               "tokenizer; .safetensors weights only, pickled .bin files are refused; nothing is "
                               "downloaded)."),
            ],
            outputs=[
                LabelsType.Output(display_name="labels", tooltip="The active categories with confidences."),
                io.String.Output(display_name="description", tooltip="Physics-oriented description of the prompt."),
            ],
        )

    @classmethod
    def validate_inputs(cls, llm_model: str = NO_LLM):
        # ComfyUI does not check V3 combo values against their options: a path from a shared workflow stops here
        if llm_model in ("", NO_LLM) or llm_model in llm_models():
            return True
        try:
            llm_model_path(llm_model)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, prompt: str, parser: str = "default", llm_model: str = NO_LLM, **overrides) -> io.NodeOutput:
        kw = {}
        if parser == "llm":
            if llm_model in ("", NO_LLM):
                raise ValueError("PILA Physics Label Parser: parser 'llm' needs a model in 'llm_model' (a folder in "
                                 "models/LLM with a local causal LM, .safetensors weights), or use parser 'default'.")
            kw["model_dir"] = llm_model_path(llm_model)
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
