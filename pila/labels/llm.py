"""Optional local-LLM label parser (docs/method.md §9, paper Appendix A.2): the paper's two-step prompting.

Step 1 rewrites the prompt into a concise physics-oriented description; step 2 maps the description to the
active categories of docs/method.md §4. Both steps must answer with strict JSON; the answer is validated against
the taxonomy and anything invalid (bad JSON, unknown category names, more than 8 labels, wrong types, an
exception in generation) falls back to the default parser with a logged reason (logging.warning) and
`source = "llm->default fallback: <reason>"`.

The model is read from a local directory with transformers (`local_files_only=True`): nothing is downloaded.
"""
from __future__ import annotations

import json
import logging
import re

from ..taxonomy import CATEGORIES, category_index

log = logging.getLogger(__name__)

STEP1 = (
    "You describe video prompts for a physics simulator.\n"
    "Rewrite the prompt below into one or two short sentences that name the objects, their materials and the "
    "physical mechanisms that will be visible (motion of solid bodies, deformation, liquid flow, gas flow, phase "
    "change, contact or impact, heat transfer, light). Ignore figurative language and negated events.\n"
    'Answer with JSON only: {{"description": "..."}}\n'
    "Prompt: {prompt}\n"
)
STEP2 = (
    "Categories: " + ", ".join(CATEGORIES) + ".\n"
    "Given a physics description of a video, list the categories that are active (usually 1 to 3, possibly "
    "none), using exactly these names.\n"
    'Answer with JSON only: {{"labels": ["..."], "confidences": {{"<category>": <0..1>}}}}\n'
    "Description: {description}\n"
)
MAX_DESCRIPTION_CHARS = 600


class LLMOutputError(ValueError):
    """The model's answer cannot be used (the reason is the message)."""


def extract_json(text: str) -> dict:
    """The first balanced JSON object in `text` (models often wrap it in prose or ``` fences)."""
    if not isinstance(text, str):
        raise LLMOutputError(f"model output is {type(text).__name__}, not text")
    start = text.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for j in range(start, len(text)):
            ch = text[j]
            if in_str:
                esc = (ch == "\\") and not esc
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        obj = json.loads(text[start:j + 1])
                    except json.JSONDecodeError:
                        break
                    if isinstance(obj, dict):
                        return obj
                    break
        start = text.find("{", start + 1)
    snippet = re.sub(r"\s+", " ", text.strip())[:80]
    raise LLMOutputError(f"no JSON object in model output {snippet!r}")


def validate_description(obj: dict) -> str:
    desc = obj.get("description")
    if not isinstance(desc, str) or not desc.strip():
        raise LLMOutputError("step 1 JSON has no non-empty string 'description'")
    desc = " ".join(desc.split())
    if len(desc) > MAX_DESCRIPTION_CHARS:
        raise LLMOutputError(f"step 1 description is {len(desc)} characters (> {MAX_DESCRIPTION_CHARS})")
    return desc


def validate_labels(obj: dict) -> tuple[list[str], dict[str, float]]:
    """Labels in canonical order and confidences for all 8 categories; raises LLMOutputError if invalid."""
    labels = obj.get("labels")
    if not isinstance(labels, list):
        raise LLMOutputError("step 2 JSON has no list 'labels'")
    if len(labels) > len(CATEGORIES):
        raise LLMOutputError(f"step 2 returned {len(labels)} labels (> {len(CATEGORIES)})")
    idx = set()
    for name in labels:
        if not isinstance(name, str):
            raise LLMOutputError(f"label {name!r} is not a string")
        try:
            idx.add(category_index(name))
        except ValueError:
            raise LLMOutputError(f"unknown category {name!r}") from None
    chosen = [CATEGORIES[i] for i in sorted(idx)]
    conf = {c: (0.9 if c in chosen else 0.1) for c in CATEGORIES}
    given = obj.get("confidences")
    if isinstance(given, dict):
        for name, v in given.items():
            try:
                c = CATEGORIES[category_index(name)]
            except (ValueError, TypeError):
                raise LLMOutputError(f"unknown category {name!r} in confidences") from None
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= float(v) <= 1.0:
                raise LLMOutputError(f"confidence {v!r} for {c} is not a number in [0, 1]")
            conf[c] = float(v)
        # keep the two consistent: a listed label is active whatever its stated confidence
        for c in chosen:
            conf[c] = max(conf[c], 0.5)
        for c in CATEGORIES:
            if c not in chosen:
                conf[c] = min(conf[c], 0.49)
    elif given is not None:
        raise LLMOutputError("'confidences' must be an object")
    return chosen, conf


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_safetensors_dir(model_dir) -> None:
    """A local model directory whose weights are .safetensors; pickled weights (.bin/.pt) are refused, because a
    shared workflow can name the folder and unpickling runs code."""
    from pathlib import Path
    d = Path(model_dir)
    if not d.is_dir():
        raise OSError(f"LLM model directory {str(model_dir)!r} does not exist; give a local directory holding a "
                      "causal LM (.safetensors weights) and its tokenizer (nothing is downloaded), or use parser='default'")
    if any(d.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = (f"it holds only pickled weights ({', '.join(pickles[:3])}), which PILA does not load"
             if pickles else "it holds no .safetensors weights")
    raise OSError(f"LLM model directory {str(model_dir)!r}: {found}. Use a model saved as safetensors (most Hugging "
                  "Face models ship model.safetensors; or convert with save_pretrained(..., safe_serialization=True)), "
                  "or use parser='default'.")


class LLMParser:
    """prompt -> ParseResult with a local causal LM (greedy decoding, chat template when the tokenizer has one)."""
    name = "llm"

    def __init__(self, model_dir: str, *, device: str = "cpu", max_new_tokens: int = 160, dtype=None):
        check_safetensors_dir(model_dir)
        from ..compat import ensure_torchvision_importable
        ensure_torchvision_importable()  # transformers imports torchvision; PyPI's build needs this on CPU torch
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is a package dependency
            raise ImportError("parser='llm' needs transformers (pip install transformers)") from e
        self.model_dir = str(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        kw = {"local_files_only": True, "use_safetensors": True}  # never unpickle .bin weights
        if dtype is not None:
            kw["dtype"] = dtype
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, **kw).to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        from . import DefaultParser
        self.fallback = DefaultParser()

    def _format(self, text: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
        return text

    def generate(self, text: str) -> str:
        """Greedy completion of one instruction; returns only the new text."""
        import torch
        tok = self.tokenizer
        enc = tok(self._format(text), return_tensors="pt").to(self.device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def __call__(self, prompt: str):
        from . import ParseResult
        try:
            description = validate_description(extract_json(self.generate(STEP1.format(prompt=prompt))))
            labels, conf = validate_labels(extract_json(self.generate(STEP2.format(description=description))))
        except Exception as e:  # noqa: BLE001 - any failure of the optional model falls back, with its reason
            reason = str(e) if isinstance(e, LLMOutputError) else f"{type(e).__name__}: {e}"
            log.warning("LLM label parser output rejected (%s); falling back to the default parser", reason)
            r = self.fallback(prompt)
            r.source = f"llm->default fallback: {reason}"
            return r
        return ParseResult(labels=labels, confidences=conf, description=description, source="llm")
