"""Quick start: synthetic physics clips -> cache -> stages A, B, C -> an adapter file and a short report.

    python -m training.quickstart --out runs/quickstart          # no weights, no GPU: a few minutes on a CPU
    python -m training.quickstart --out runs/qs_real \\
        --wan wan2.1_t2v_1.3B_bf16.safetensors --vae wan_2.1_vae.safetensors --t5 umt5_xxl_fp16.safetensors \\
        --config training/configs/paper.toml --schedule_scale 0.01   # the same path with real weights (GPU)
    python -m training.quickstart --out runs/wisa --annotations wisa-80k.json --videos videos/ ...  # your clips

Without `--wan/--vae/--t5` it builds the tiny random Wan, VAE and UMT5 (the real architectures at toy width,
nothing downloaded). Everything after `--out`-style options that it does not know is passed on to
`training.train` as overrides (`--lr 1e-4`, `--stages AB`, ...). Outputs under `--out`: `data/` (clips +
annotations.json), `cache/`, `stage_{A,B,C}/`, `adapter.safetensors` (pila.save_adapter format),
`report.md`, `loss_curves.png`, `router_usage.png`, `tensorboard/`, `metrics.jsonl`.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import training  # noqa: F401

from . import cache as C
from . import data as D
from . import train as T
from .weights import resolve_encoders

TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny_cpu.toml"


def make_report(out: Path) -> Path:
    """loss_curves.png, router_usage.png and report.md from `<out>/metrics.jsonl`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    stages = [s for s in "ABC" if any(r["stage"] == s for r in rows)]
    curves = {"A": ["loss", "flow", "jacobian"], "B": ["loss"], "C": ["loss", "mse", "mse_backbone", "csrc", "penalty"]}
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(5 * max(1, len(stages)), 3.6), squeeze=False)
    summary = []
    for ax, s in zip(axes[0], stages):
        rs = [r for r in rows if r["stage"] == s]
        for key in curves[s]:
            pts = [(r["step"], r[key]) for r in rs if key in r]
            if pts:
                ax.plot(*zip(*pts), label=key)
        ax.set_title(f"stage {s}")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        first, last = rs[: max(1, len(rs) // 5)], rs[-max(1, len(rs) // 5):]
        mean = lambda xs, k: sum(r[k] for r in xs if k in r) / max(1, sum(1 for r in xs if k in r))  # noqa: E731
        key = "flow" if s == "A" else ("mse" if s == "C" else "loss")
        summary.append(f"| {s} | {len(rs)} | {key} | {mean(first, key):.4g} | {mean(last, key):.4g} |")
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)
    usage_rows = [r for r in rows if r["stage"] == "C"]
    usage = {c: sum(r.get(f"router_usage/{c}", 0.0) for r in usage_rows) / max(1, len(usage_rows)) for c in T.CATEGORIES}
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(len(usage)), list(usage.values()))
    ax.set_xticks(range(len(usage)), [c.replace(" ", "\n") for c in usage], fontsize=7)
    ax.set_ylabel("share of samples routed")
    ax.set_title("Stage C router usage per category")
    fig.tight_layout()
    fig.savefig(out / "router_usage.png", dpi=110)
    plt.close(fig)
    lines = ["# PILA quick start report", "", "| stage | steps | loss | first 20% mean | last 20% mean |", "|---|---|---|---|---|",
             *summary, "", "Router usage in stage C (share of samples that selected each expert):", "",
             "| category | usage |", "|---|---|", *[f"| {c} | {u:.2f} |" for c, u in usage.items()], "",
             "![losses](loss_curves.png)", "", "![router](router_usage.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--config", default=str(TINY_CONFIG), help="training recipe (default: the tiny CPU recipe)")
    p.add_argument("--wan", default="", help="Wan 2.1 T2V: ComfyUI single file, original release folder or diffusers folder "
                   "(default: tiny random Wan)")
    p.add_argument("--wan-config", default="1.3b")
    p.add_argument("--vae", default="", help="Wan 2.1 VAE (ComfyUI file, diffusers pipeline folder or its vae/)")
    p.add_argument("--t5", default="", help="UMT5-XXL (ComfyUI umt5_xxl_fp16.safetensors, a diffusers pipeline folder "
                   "or a transformers folder)")
    p.add_argument("--tokenizer", default="", help="spiece.model when the UMT5 file carries none")
    p.add_argument("--annotations", default="", help="your WISA-style annotation JSON (default: synthetic clips)")
    p.add_argument("--videos", default="", help="the folder of its mp4 clips")
    p.add_argument("--clips", type=int, default=8, help="synthetic clips to make")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    args, rest = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    t0 = time.time()
    real = bool(args.vae and args.t5)
    if bool(args.vae) != bool(args.t5):
        raise SystemExit("pass both --vae and --t5 (real encoders), or neither (tiny random encoders)")
    if args.annotations:
        ann, videos = Path(args.annotations), Path(args.videos or Path(args.annotations).parent / "videos")
    else:
        ann = D.make_synthetic_dataset(out / "data", clips=args.clips, frames=args.frames, height=args.height,
                                       width=args.width)
        videos = out / "data" / "videos"
    try:
        cfg = T.load_config(args.config, rest)
        args.vae, args.t5, args.tokenizer = resolve_encoders(args.vae, args.t5, args.tokenizer)
    except ValueError as e:  # a config typo, a pickle checkpoint: before anything is cached or trained
        raise SystemExit(f"training.quickstart: {e}") from None
    ccfg = C.CacheConfig(annotations=str(ann), videos=str(videos), out=str(out / "cache"), frames=args.frames,
                         height=args.height, width=args.width, shard_size=4, vae=args.vae, t5=args.t5,
                         tokenizer=args.tokenizer, tiny=not real, tiny_text_dim=cfg.text_dim,
                         text_len=max(cfg.text_len, 64) if not real else 512,
                         dtype="float32" if not real else "bfloat16")
    index = C.build_cache(ccfg, progress=cfg.progress)
    print(f"quickstart: cached {index['used']} clips (skipped {index['skipped'] or 'none'}) in {time.time() - t0:.0f} s")
    cfg.cache, cfg.out = str(out / "cache"), str(out)
    if args.wan:
        cfg.wan, cfg.wan_config = args.wan, args.wan_config
    if real:
        cfg.text_dim = 4096
    adapter = T.train(cfg)
    if adapter is None:
        print("quickstart: training stopped early (stop_after); run the same command again to resume")
        return
    from pila import load_adapter
    load_adapter(adapter)  # the file the ComfyUI loader reads, checked here
    report = make_report(out)
    print(f"quickstart: adapter {adapter}\nquickstart: report {report} ({time.time() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
