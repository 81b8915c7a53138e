"""python -m evaluation generate | sweep | report  (see README.md, "Benchmark generation").

    # base vs PILA on the VBench-2.0 physics dimensions, 3 seeds, one ComfyUI server
    python -m evaluation generate --server 127.0.0.1:8188 --suite vbench2 --out runs/bench
    # one process per GPU (each with its own server), or one process spreading over several servers
    python -m evaluation generate --server 127.0.0.1:8188 --shard 0/2 ...   |   --server URL1,URL2 ...
    # Table 13 (step ranges over 50 steps) and Table 14 (top-k 0..8)
    python -m evaluation sweep steps --server ... --suite vbench2 --out runs/table13
    python -m evaluation sweep topk --server ... --suite vbench2 --out runs/table14
    python -m evaluation report runs/bench
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .client import ComfyError
from .generate import RunConfig, generate, parse_shard
from .report import report
from .suites import SuiteError, default_seed_count
from .workflow import Arm, Settings, WorkflowError

STEP_RANGES = ["41-50", "31-50", "21-50", "11-50", "1-50"]  # paper, Table 13 (50 sampling steps)
TOP_K = list(range(9))                                      # paper, Table 14
ARM_KEYS = {"pila": lambda v: v.lower() not in ("0", "false", "no", "off"), "strength": float, "steps": str, "top_k": int}


def preset_arms(preset: str) -> list[Arm]:
    """The paper's sweeps, each with the base arm: Table 13's step ranges, Table 14's top-k."""
    if preset == "steps":
        return [Arm("base", pila=False)] + [Arm(f"steps{r}", steps=r) for r in STEP_RANGES]
    return [Arm("base", pila=False)] + [Arm(f"topk{k}", top_k=k) for k in TOP_K]


def parse_arm(text: str) -> Arm:
    """NAME or NAME:key=value,key=value with keys pila, strength, steps (a range such as 41-50), top_k."""
    name, _, rest = text.partition(":")
    if name == "base" and not rest:
        return Arm("base", pila=False)
    kw = {}
    for part in filter(None, rest.split(",")) if rest else []:
        k, _, v = part.partition("=")
        if k not in ARM_KEYS:
            raise SystemExit(f"--arm {text!r}: unknown key {k!r}; use {', '.join(ARM_KEYS)}")
        kw[k] = ARM_KEYS[k](v)
    return Arm(name, **kw)


def parse_set(text: str) -> tuple[str, object]:
    key, eq, value = text.partition("=")
    if not eq or "." not in key:
        raise SystemExit(f"--set {text!r}: expected Type.input=value (or Title.input=value)")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", action="append", default=None,
                   help="ComfyUI URL(s); repeat or comma-separate to spread one run over several servers "
                   "(default http://127.0.0.1:8188)")
    p.add_argument("--suite", action="append", required=True,
                   help="vbench2[:Mechanics,Thermotics,Material], videophy, phygenbench:PATH/prompts.json, "
                   "videophy2:PATH/test.csv, or a .jsonl/.txt of prompts (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable: run the same command again)")
    p.add_argument("--workflow", default="wan2.1", help="wan2.1, wan2.2 or a UI-format workflow JSON (default wan2.1)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, the same for every arm (default 0,1,2 for "
                   "vbench2, else 0); the i-th seed is the file index i")
    p.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th (prompt, seed) from i")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of each suite")
    p.add_argument("--adapter", default=None, help="adapter file in models/pila (sets PILAAdapterLoader.adapter_name)")
    p.add_argument("--set", action="append", default=[], metavar="Type.input=value",
                   help="set a node input by node type or title, e.g. UNETLoader.unet_name=my.safetensors (repeatable)")
    for name, typ in (("steps", int), ("cfg", float), ("sampler", str), ("scheduler", str), ("width", int),
                      ("height", int), ("frames", int), ("fps", float), ("shift", float), ("negative", str)):
        p.add_argument(f"--{name}", type=typ, default=None, help=f"{name} for every arm (default: the workflow's)")
    p.add_argument("--graph-hook", default=None, help="module:function or file.py:function called as fn(api_prompt, "
                   "job) before queueing (e.g. to swap nodes); returns the prompt to queue")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per video")


def run_config(a, arms: list[Arm]) -> RunConfig:
    servers = [s.strip() for v in (a.server or ["http://127.0.0.1:8188"]) for s in v.split(",") if s.strip()]
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else list(range(default_seed_count(a.suite)))
    overrides = dict(parse_set(s) for s in a.set)
    if a.adapter:
        overrides["PILAAdapterLoader.adapter_name"] = a.adapter
    settings = Settings(steps=a.steps, cfg=a.cfg, sampler=a.sampler, scheduler=a.scheduler, width=a.width,
                        height=a.height, frames=a.frames, fps=a.fps, shift=a.shift, negative=a.negative,
                        overrides=overrides)
    return RunConfig(out=a.out, suites=a.suite, servers=servers, workflow=a.workflow, arms=arms, seeds=seeds,
                     settings=settings, shard=parse_shard(a.shard), limit=a.limit, graph_hook=a.graph_hook,
                     timeout=a.timeout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="prompts x arms x seeds through ComfyUI")
    add_generate_args(g)
    g.add_argument("--arms", default="base,pila", help="comma-separated arm names: base (no correction), pila")
    g.add_argument("--arm", action="append", default=[], metavar="NAME:key=v,...",
                   help="an extra arm, e.g. pila_s0:strength=0 or late:steps=41-50 or k2:top_k=2 (repeatable)")
    s = sub.add_parser("sweep", help="the paper's sweeps: steps (Table 13) or topk (Table 14), plus the base arm")
    s.add_argument("preset", choices=["steps", "topk"])
    add_generate_args(s)
    r = sub.add_parser("report", help="counts, seconds per video, overhead vs base, contact sheet, evaluator commands")
    r.add_argument("out", type=Path)
    r.add_argument("--rows", type=int, default=12, help="prompts on the contact sheet")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "report":
            if not (a.out / "run.json").is_file():
                raise SystemExit(f"{a.out} has no run.json: not an output folder of `python -m evaluation generate`")
            data = report(a.out, rows=a.rows)
            print((a.out / "report" / "report.md").read_text())
            return 0 if data["summary"] else 1
        if a.cmd == "generate":
            arms = [parse_arm(x) for x in a.arms.split(",") if x] + [parse_arm(x) for x in a.arm]
        elif a.preset == "steps":
            if a.steps not in (None, 50):
                print(f"note: Table 13's ranges count 50 steps; sampling {a.steps} steps", file=sys.stderr)
            a.steps = a.steps or 50
            arms = preset_arms("steps")
        else:
            arms = preset_arms("topk")
        names = [x.name for x in arms]
        if len(set(names)) != len(names):
            raise SystemExit(f"arm names must be unique: {names}")
        res = generate(run_config(a, arms))
        print(f"done: {res['done']} generated, {res['skipped']} already there, {res['total']} in this shard -> {a.out}")
        return 0
    except (SuiteError, WorkflowError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ComfyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
