"""Physics label parsing (docs/method.md §9, paper Appendix A.2): prompt -> active categories of docs/method.md §4,
a confidence per category and a short physics-oriented description.

    from pila.labels import parse
    r = parse("a kettle starts to whistle and a white plume rises")
    r.labels, r.confidences, r.description, r.multi_hot()

`parser="default"` is the offline parser (lexicon + rules for evidence, a trained linear model shipped as
model.json to decide; English only, other languages get `extras["warning"]`; no network, deterministic);
`parser="llm", model_dir=DIR` runs a local instruction LLM through transformers with the paper's two-step
prompting and falls back to the default parser (with a logged reason) when its output is not valid.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..taxonomy import CATEGORIES, multi_hot

PARSERS = ("default", "llm")
log = logging.getLogger(__name__)


@dataclass
class ParseResult:
    labels: list[str]                      # active categories, canonical CATEGORIES order
    confidences: dict[str, float]          # all 8 categories, in [0, 1]
    description: str                       # short physics-oriented description
    source: str = "default"                # "default", "llm" or "llm->default fallback: <reason>"
    extras: dict = field(default_factory=dict)

    def multi_hot(self, **kw):
        """`[8]` float tensor y (pila.taxonomy.multi_hot)."""
        return multi_hot(self.labels, **kw)

    def to_dict(self) -> dict:
        out = {"labels": list(self.labels), "confidences": dict(self.confidences),
               "description": self.description, "source": self.source}
        if self.extras.get("warning"):
            out["warning"] = self.extras["warning"]
        return out


class DefaultParser:
    """The rules' evidence (pila/labels/rules.py) weighed by a trained linear model (pila/labels/classifier.py).
    English only: another language gets no labels and a `warning` (extras) saying so."""
    name = "default"

    def __call__(self, prompt: str) -> ParseResult:
        from . import classifier
        from .language import detect, language_name
        from .rules import describe
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        try:
            lang, p = detect(prompt)
            if lang != "en":
                msg = (f"the prompt looks {language_name(lang)} ({lang}, confidence {p:.2f}); the default parser reads "
                       "English only, so no physics labels were set: write the prompt in English, set the categories "
                       "by hand, or use the llm parser")
                return ParseResult(labels=[], confidences={c: 0.0 for c in CATEGORIES},
                                   description=f"(not English: {msg})", source="default",
                                   extras={"language": lang, "warning": msg})
            model = classifier.load_model()
            f, ev, sc = classifier.features(prompt)
            prob = classifier.probabilities(f, model)
            labels = classifier.decide(prob, model["thresholds"])
            conf = classifier.confidences(prob, labels, model["thresholds"])
            description = describe(ev, sc, labels)
        except Exception as e:  # noqa: BLE001 - a sampler must never die on an odd prompt; log and return no labels
            log.exception("default label parser failed on %r", prompt[:200])
            return ParseResult(labels=[], confidences={c: 0.0 for c in CATEGORIES},
                               description="(parser error: no physics labels)", source=f"default (error: {e})",
                               extras={"warning": f"parser error: {e}"})
        return ParseResult(labels=labels, confidences=conf, description=description, source="default",
                           extras={"language": "en", "probabilities": {c: round(v, 4) for c, v in prob.items()}})


_CACHE: dict = {}


def get_parser(parser: str = "default", *, model_dir: str | None = None, **kw):
    """A callable prompt -> ParseResult. LLM parsers are cached per model directory (loading is slow)."""
    if parser == "default":
        return _CACHE.setdefault("default", DefaultParser())
    if parser == "llm":
        if not model_dir:
            raise ValueError("parser='llm' needs model_dir=<local directory of a causal LM and its tokenizer>; "
                             "nothing is downloaded. Use parser='default' to run without a model.")
        from .llm import LLMParser
        key = ("llm", str(model_dir), tuple(sorted(kw.items())))
        if key not in _CACHE:
            _CACHE[key] = LLMParser(model_dir, **kw)
        return _CACHE[key]
    raise ValueError(f"unknown parser {parser!r}; choose one of {', '.join(PARSERS)}")


def parse(prompt: str, parser: str = "default", *, model_dir: str | None = None, **kw) -> ParseResult:
    """Parse one prompt into physics labels (see the module docstring)."""
    return get_parser(parser, model_dir=model_dir, **kw)(prompt)


__all__ = ["ParseResult", "DefaultParser", "get_parser", "parse", "PARSERS"]
