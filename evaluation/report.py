"""Counts, seconds per video, PILA's overhead vs base, an A/B contact sheet and the evaluator commands for a run."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from .generate import finished, write_evaluator_files
from .videoio import key_frames

PAPER_NOTE = "paper, Table 14: 192.63 s -> 196.03 s per video for top-k 0 -> 4 (+1.8 %)"


def timing(recs: list[dict]) -> list[float]:
    """Seconds per video: ComfyUI's execution time when reported, else wall time; a server's first job (model
    loading) is left out when there are others."""
    warm = [r for r in recs if not r.get("first_on_server")] or recs
    return [r["exec_seconds"] if r.get("exec_seconds") is not None else r["seconds"] for r in warm]


def summarize(out: Path) -> dict:
    recs = list(finished(out).values())
    table = {}
    for r in recs:
        table.setdefault(r["suite"], {}).setdefault(r["arm"], []).append(r)
    summary = {}
    for suite, arms in table.items():
        base = {(r["index"], r["group"], r["seed_index"]): r for r in arms.get("base", [])}
        summary[suite] = {}
        for arm, rs in sorted(arms.items()):
            t = timing(rs)
            row = {"videos": len(rs), "prompts": len({(r["group"], r["index"]) for r in rs}),
                   "seeds": len({r["seed_index"] for r in rs}),
                   "mean_s": statistics.fmean(t) if t else None, "median_s": statistics.median(t) if t else None}
            if arm != "base" and base:  # paired: the same prompt and seed in both arms
                pairs = [(timing([r])[0], timing([base[k]])[0]) for r in rs
                         if (k := (r["index"], r["group"], r["seed_index"])) in base
                         and not r.get("first_on_server") and not base[k].get("first_on_server")]
                if pairs:
                    a, b = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
                    row["overhead_vs_base_pct"] = 100.0 * (a / b - 1.0)
                    row["overhead_pairs"] = len(pairs)
            summary[suite][arm] = row
    return summary


def contact_sheet(out: Path, path: Path, *, rows: int = 12, height: int = 96) -> Path | None:
    """First, middle and last frame of each arm side by side, one row per (prompt, first seed)."""
    from PIL import Image, ImageDraw

    recs = finished(out)
    by_prompt: dict = {}
    for r in recs.values():
        if r["seed_index"] == 0:
            by_prompt.setdefault((r["suite"], r["group"], r["index"]), {})[r["arm"]] = r
    arms = sorted({a for v in by_prompt.values() for a in v}, key=lambda a: (a != "base", a))
    keys = sorted(by_prompt)[:rows]
    if not keys:
        return None
    tiles, label_h, gap = [], 16, 6
    for k in keys:
        row = []
        for a in arms:
            r = by_prompt[k].get(a)
            frames = key_frames(out / r["file"]) if r else [np.zeros((height, height, 3), np.uint8)] * 3
            ims = [Image.fromarray(f) for f in frames]
            ims = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in ims]
            row.append(ims)
        tiles.append(row)
    w_arm = max(sum(im.width for im in ims) for row in tiles for ims in row)
    W = len(arms) * (w_arm + gap)
    H = label_h + len(keys) * (height + label_h + gap)
    sheet = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(sheet)
    for j, a in enumerate(arms):
        d.text((j * (w_arm + gap) + 2, 2), f"{a}: first | middle | last", fill="black")
    for i, (k, row) in enumerate(zip(keys, tiles)):
        y = label_h + i * (height + label_h + gap)
        prompt = next(iter(by_prompt[k].values()))["prompt"]
        d.text((2, y + 1), f"{k[0]} {k[1]} #{k[2]}: {prompt[:140]}", fill="black")
        for j, ims in enumerate(row):
            x = j * (w_arm + gap)
            for im in ims:
                sheet.paste(im, (x, y + label_h))
                x += im.width
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def evaluator_commands(out: Path, summary: dict) -> list[str]:
    out = Path(out).resolve()
    cmds = []
    for suite, arms in summary.items():
        for arm in arms:
            root = out / arm / suite
            if suite == "vbench2":
                for dim in sorted(p.name for p in root.iterdir() if p.is_dir()):
                    cmds.append(f"vbench2 evaluate --videos_path {root / dim} --dimension {dim}"
                                "   # VBench-2.0 (pip install vbench2, or its evaluate.py)")
            elif suite == "videophy2":
                for task in ("sa", "pc"):
                    cmds.append(f"python inference.py --input_csv {root / 'videophy2.csv'} --checkpoint VIDEOPHY2_AUTOEVAL_DIR "
                                f"--output_csv {root / f'videophy2_{task}.csv'} --task {task}"
                                "   # in Hritikbansal/videophy VIDEOPHY2/; joint = share with SA >= 4 and PC >= 4")
            elif suite == "videophy":
                cmds.append(f"python utils/prepare_data.py --input_csv {root / 'videophy.csv'} --output_folder {root / 'eval'}"
                            "   # in Hritikbansal/videophy (VideoPhy-1 videocon_physics), then:")
                for part, name in (("sa", "sa_testing"), ("pc", "physics_testing")):
                    cmds.append(f"python videocon/training/pipeline_video/entailment_inference.py --input_csv "
                                f"{root / 'eval' / (name + '.csv')} --output_csv {root / 'eval' / f'videocon_physics_{part}.csv'} "
                                "--checkpoint VIDEOCON_PHYSICS_DIR")
            elif suite == "phygenbench":
                for seed_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                    cmds.append(f"ln -sfn {seed_dir} PhyGenBench/PhyVideos   # in OpenGVLab/PhyGenBench, then: "
                                "python PhyGenEval/single/vqascore.py; python PhyGenEval/multi/multiimage_clip.py; "
                                "python PhyGenEval/multi/GPT4o.py; python PhyGenEval/video/GPT4o.py; python PhyGenEval/overall.py")
            else:
                cmds.append(f"python evaluate.py --dimension subject_consistency motion_smoothness dynamic_degree "
                            f"--videos_path {root} --mode=custom_input   # VBench (custom prompts read from file names)")
    return cmds


def report(out: Path, *, rows: int = 12) -> dict:
    out = Path(out)
    write_evaluator_files(out)
    summary = summarize(out)
    sheet = contact_sheet(out, out / "report" / "contact_sheet.png", rows=rows)
    cmds = evaluator_commands(out, summary)
    lines = ["# Benchmark generation report", "", f"Output folder: `{out.resolve()}`", "",
             "| suite | arm | videos | prompts | seeds | mean s/video | median s/video | overhead vs base |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for suite, arms in summary.items():
        for arm, r in arms.items():
            ov = f"{r['overhead_vs_base_pct']:+.1f} % ({r['overhead_pairs']} pairs)" if "overhead_vs_base_pct" in r else "-"
            lines.append(f"| {suite} | {arm} | {r['videos']} | {r['prompts']} | {r['seeds']} | {fmt(r['mean_s'])} | "
                         f"{fmt(r['median_s'])} | {ov} |")
    lines += ["", "Seconds per video are ComfyUI's execution time per prompt (a server's first prompt, which loads the "
              "models, is left out); the overhead is paired over the same prompts and seeds. For comparison, "
              f"{PAPER_NOTE}.", ""]
    if sheet:
        lines += [f"A/B contact sheet (first, middle, last frame per arm, first seed): `{sheet.relative_to(out)}`", ""]
    lines += ["## Evaluator commands", "", "```bash", *cmds, "```", ""]
    (out / "report").mkdir(exist_ok=True)
    (out / "report" / "report.md").write_text("\n".join(lines))
    data = {"summary": summary, "contact_sheet": str(sheet) if sheet else None, "commands": cmds}
    (out / "report" / "report.json").write_text(json.dumps(data, indent=1))
    return data
