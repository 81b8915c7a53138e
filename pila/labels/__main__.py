"""CLI: `python -m pila.labels evaluate FILE [--parser default|llm] [--model DIR] [--errors N]` and
`python -m pila.labels parse "PROMPT" [--json] [--parser ...] [--model DIR]` (docs/method.md §9)."""
from __future__ import annotations

import argparse
import json
import sys

from . import PARSERS, get_parser
from .evaluate import evaluate, format_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pila.labels", description="physics label parser (docs/method.md §9)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("evaluate", help="score a parser on a JSONL file of {prompt, labels} lines")
    ev.add_argument("file")
    ev.add_argument("--parser", choices=PARSERS, default="default")
    ev.add_argument("--model", default=None, help="local model directory for --parser llm (never downloaded)")
    ev.add_argument("--errors", type=int, default=0, help="also print up to N mislabelled prompts")
    pa = sub.add_parser("parse", help="parse one prompt")
    pa.add_argument("prompt")
    pa.add_argument("--json", action="store_true")
    pa.add_argument("--parser", choices=PARSERS, default="default")
    pa.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    try:
        parser = get_parser(args.parser, model_dir=args.model)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "parse":
        r = parser(args.prompt)
        if r.extras.get("warning"):
            print(f"warning: {r.extras['warning']}", file=sys.stderr)
        if args.json:
            print(json.dumps(r.to_dict(), indent=2))
        else:
            print(f"labels: {', '.join(r.labels) if r.labels else '(none)'}")
            print("confidences: " + ", ".join(f"{k} {v:.2f}" for k, v in r.confidences.items()))
            print(f"description: {r.description}")
            print(f"source: {r.source}")
        return 0
    try:
        res = evaluate(args.file, parser)
    except (OSError, ValueError) as e:
        print(f"error: cannot evaluate {args.file}: {e}", file=sys.stderr)
        return 2
    if args.errors:
        shown = 0
        for row, pred in zip(res["rows"], res["predictions"]):
            if set(row["labels"]) != set(pred) and shown < args.errors:
                print(f"gold {row['labels']} pred {pred} :: {row['prompt']}")
                shown += 1
        print()
    if res.get("warnings"):
        print(f"warning: {res['warnings']} prompt(s) got no labels because they are not English", file=sys.stderr)
    print(format_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
