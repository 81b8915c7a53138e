"""The default parser's decision stage: a linear model over the rules' evidence and lemmatised text features
(docs/labels.md). The rules in `rules.py` read mechanisms (a verb or change of state acting on a material);
this model, trained by `python -m pila.labels.train` on labelled prompts in many styles, learns how far to trust
each piece of evidence, so a trigger word in another sense or a static scene does not fire a category.

Features of one prompt (all binary except the rule evidence), built on the rules' tokenisation, so negation
scope and figurative idioms are already masked:
    r:<cat>      the rules' confidence for each category, in [0, 1]
    w:<lemma>    a live (not negated, not figurative) word, by its lemma
    n:<lemma>    a negated word that the lexicon knows
    c:<concept>  a lexicon concept of a live word (liquid, v_melt, heat_source, ...)
    b:<l1>_<l2>  two neighbouring content lemmas
    vc:<v>|<c>   a mechanism concept and a material/object concept in the same clause
    rs:<cat>     the rules' confidence again when the prompt has no mechanism verb (static scenes)
    s:<flag>     shape of the prompt: no mechanism verb, figurative idiom, temperature given, length bucket
Decision (precision first): the most probable category is on when p >= THRESHOLDS[0]; the k-th most probable
(k = 2, 3, ...) is on only when p >= THRESHOLDS[k-1] (k > len: the last threshold).
"""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

from ..taxonomy import CATEGORIES

MODEL_PATH = Path(__file__).with_name("model.json")
# content-free words left out of bigrams (they would only add noise)
STOP = frozenset("a an the this that these those some any its it his her their my your our of to in on at by for "
                 "with from and or as is are be was were been being has have had do does did so very just then there "
                 "here into onto over up down out off , . ; : ! ? ( )".split())
CLAUSE = frozenset({",", ".", ";", ":", "!", "?", "and", "but", "while", "as", "when", "then", "with", "after", "before"})
MECH_PREFIX = ("v_", "a_")
CHAR_NGRAMS = 0  # character 4-grams: measured no gain (see docs/labels_eval.md)


def features(prompt: str) -> tuple[dict[str, float], object, object]:
    """Feature dict of one prompt, plus the rules' Evidence and Scene (reused for the description)."""
    from .rules import analyse, conf_from_score
    ev, sc = analyse(prompt)
    f: dict[str, float] = {}
    for c in CATEGORIES:
        v = conf_from_score(ev.score[c])
        if v > 0:
            f["r:" + c] = round(v, 4)
    content, clause, has_mech = [], [], False
    clauses: list[list] = [[]]
    for t in sc.toks:
        if t.lemma in CLAUSE:
            clauses.append([])
        if not t.lemma or not t.lemma[0].isalnum():
            continue
        if t.neg:
            if t.concepts:
                f["n:" + t.lemma] = 1.0
            continue
        lemma = t.lemma
        f["w:" + lemma] = 1.0
        for c in t.concepts:
            f["c:" + c] = 1.0
            has_mech |= c.startswith("v_")
        clauses[-1].append(t)
        if lemma not in STOP:
            content.append(lemma)
    for a, b in zip(content, content[1:]):
        f[f"b:{a}_{b}"] = 1.0
    if CHAR_NGRAMS:
        for w in content:
            w = f"<{w}>"
            for i in range(len(w) - CHAR_NGRAMS + 1):
                f["g:" + w[i:i + CHAR_NGRAMS]] = 0.3
    for cl in clauses:
        mech = {c for t in cl for c in t.concepts if c.startswith(MECH_PREFIX)}
        objs = {c for t in cl for c in t.concepts if not c.startswith(MECH_PREFIX)}
        for m in mech:
            for o in objs:
                f[f"vc:{m}|{o}"] = 1.0
    if not has_mech:
        f["s:no_mechanism"] = 1.0
        for c in CATEGORIES:  # the rules' evidence in a scene without a mechanism verb (a static shot)
            if "r:" + c in f:
                f["rs:" + c] = f["r:" + c]
    if sc.figurative:
        f["s:figurative"] = 1.0
    if sc.temps:
        f["s:temperature"] = 1.0
    n = len(content)
    f["s:len" + ("<6" if n < 6 else "<15" if n < 15 else "15+")] = 1.0
    return f, ev, sc


@lru_cache(maxsize=1)
def load_model(path: str | None = None) -> dict:
    """The shipped model: {"categories", "bias", "weights": {feature: [8 floats]}, "thresholds", "meta"}."""
    p = Path(path or MODEL_PATH)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing: the default label parser needs it; rebuild it with "
                                "`python -m pila.labels.train` (see its docstring)")
    m = json.loads(p.read_text(encoding="utf-8"))
    assert m["categories"] == list(CATEGORIES), f"model categories {m['categories']} != {list(CATEGORIES)}"
    return m


def probabilities(f: dict[str, float], model: dict) -> dict[str, float]:
    z = list(model["bias"])
    W = model["weights"]
    for k, v in f.items():
        w = W.get(k)
        if w is not None:
            for i in range(len(z)):
                z[i] += w[i] * v
    return {c: 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, zi)))) for c, zi in zip(CATEGORIES, z)}


def decide(prob: dict[str, float], thresholds: list[float]) -> list[str]:
    """Precision-first label set: the k-th most probable category needs p >= thresholds[k-1]."""
    ranked = sorted(CATEGORIES, key=lambda c: -prob[c])
    on = set()
    for k, c in enumerate(ranked):
        if prob[c] < thresholds[min(k, len(thresholds) - 1)]:
            break
        on.add(c)
    return [c for c in CATEGORIES if c in on]


def confidences(prob: dict[str, float], labels: list[str], thresholds: list[float]) -> dict[str, float]:
    """Display confidences in [0, 1] whose 0.5 line matches the decision (the node and `ParseResult` contract):
    p is mapped piecewise-linearly so that the threshold the category had to pass lands on 0.5."""
    ranked = sorted(CATEGORIES, key=lambda c: -prob[c])
    out = {}
    for k, c in enumerate(ranked):
        t = thresholds[min(k, len(thresholds) - 1)]
        p = prob[c]
        v = 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / max(1e-6, 1 - t)
        if c in labels:
            v = max(v, 0.5)
        else:
            v = min(v, 0.4999)
        out[c] = round(min(1.0, max(0.0, v)), 4)
    return {c: out[c] for c in CATEGORIES}

