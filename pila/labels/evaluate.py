"""Evaluation of a label parser on a JSONL file of {"prompt", "labels"} lines (docs/method.md §9).

Per-category precision / recall / F1 / support, micro-F1 over all (prompt, category) pairs, exact-match
accuracy of the label set, and mean parse time. The project's reference file is data/physics_labels_dev.jsonl:
labels written for this project (conventions in docs/labels.md) over VBench-2.0 prompts (Vchitect/VBench,
Apache-2.0) and VideoPhy test prompts (videophysics/videophy_test_public, MIT); see data/README.md. Sets in other
styles, and how they were scored: docs/labels_eval.md.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from ..taxonomy import CATEGORIES, category_index


def load_jsonl(path: str | Path) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt" not in row or "labels" not in row:
            raise ValueError(f"{path}:{n}: each line needs 'prompt' and 'labels', got keys {sorted(row)}")
        row["labels"] = [CATEGORIES[category_index(c)] for c in row["labels"]]
        rows.append(row)
    return rows


def score(gold: list[list[str]], pred: list[list[str]]) -> dict:
    assert len(gold) == len(pred), f"{len(gold)} gold label sets vs {len(pred)} predictions"
    per = {}
    tp_all = fp_all = fn_all = 0
    for c in CATEGORIES:
        tp = sum(c in g and c in p for g, p in zip(gold, pred))
        fp = sum(c not in g and c in p for g, p in zip(gold, pred))
        fn = sum(c in g and c not in p for g, p in zip(gold, pred))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[c] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    micro_p = tp_all / (tp_all + fp_all) if tp_all + fp_all else 0.0
    micro_r = tp_all / (tp_all + fn_all) if tp_all + fn_all else 0.0
    micro_f1 = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    exact = sum(set(g) == set(p) for g, p in zip(gold, pred)) / max(1, len(gold))
    return {"per_category": per, "micro_precision": micro_p, "micro_recall": micro_r, "micro_f1": micro_f1,
            "exact_match": exact, "n": len(gold)}


def baseline_most_frequent_set(gold: list[list[str]]) -> list[str]:
    """The keyword-free baseline: always predict the most frequent label set of the file."""
    return list(Counter(tuple(g) for g in gold).most_common(1)[0][0])


def evaluate(path: str | Path, parser) -> dict:
    rows = load_jsonl(path)
    parser("warm-up: load the lexicon")  # not timed: one-off loading
    preds, t_total, sources, warnings = [], 0.0, Counter(), 0
    for row in rows:
        t0 = time.perf_counter()
        r = parser(row["prompt"])
        t_total += time.perf_counter() - t0
        preds.append(list(r.labels))
        sources[r.source.split(":")[0]] += 1
        warnings += r.extras.get("language", "en") != "en"
    out = score([r["labels"] for r in rows], preds)
    out["ms_per_prompt"] = 1000.0 * t_total / max(1, len(rows))
    out["sources"] = dict(sources)
    out["warnings"] = warnings
    out["predictions"] = preds
    out["rows"] = rows
    base = baseline_most_frequent_set([r["labels"] for r in rows])
    b = score([r["labels"] for r in rows], [base] * len(rows))
    out["baseline"] = {"labels": base, "micro_f1": b["micro_f1"], "exact_match": b["exact_match"]}
    return out


def format_report(res: dict) -> str:
    lines = [f"{'category':<18} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for c in CATEGORIES:
        m = res["per_category"][c]
        lines.append(f"{c:<18} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>8d}")
    b = res["baseline"]
    lines.append(f"prompts: {res['n']}")
    lines.append(f"baseline (always {b['labels']}): micro_f1 {b['micro_f1']:.3f}, exact_match {b['exact_match']:.3f}")
    lines.append("sources: " + ", ".join(f"{k} {v}" for k, v in sorted(res.get("sources", {}).items())))
    lines.append(f"mean_ms_per_prompt: {res['ms_per_prompt']:.2f}")
    lines.append(f"micro_f1: {res['micro_f1']:.3f}")
    lines.append(f"exact_match: {res['exact_match']:.3f}")
    return "\n".join(lines)
