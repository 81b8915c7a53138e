"""Prompt suites and the file layout each suite's official evaluator expects.

    vbench2[:Mechanics,Thermotics,Material]  shipped (VBench-2.0 physics dimensions, Apache-2.0)
    videophy                                 shipped (VideoPhy test prompts, MIT)
    phygenbench:PATH/prompts.json            your copy of PhyGenBench's prompts.json
    videophy2:PATH/test.csv                  your copy of the VideoPhy-2 test CSV (a `caption` column)
    PATH.jsonl | PATH.txt                    a custom suite: {"prompt": ..., "image": optional start image for
                                             an I2V workflow} per line, or one prompt per line

Layouts (under OUT/<arm>/):
    vbench2/<Dimension>/<prompt[:180]>-<i>.mp4     VBench-2.0 `prompts/README.md` ("How to sample"): i = 0, 1, 2
    videophy/<Caption_with_underscores>_<i>.mp4    + videophy.csv (videopath, caption) for VideoPhy's prepare_data.py
    videophy2/<Caption_with_underscores>_<i>.mp4   + videophy2.csv (caption, videopath) for VideoPhy-2's inference.py
    phygenbench/seed<i>/output_video_<n+1>.mp4     PhyGenBench README (PhyVideos/output_video_{index+1}.mp4)
    <custom>/<prompt[:180]>-<i>.mp4                VBench's custom-input naming
where i is the seed's index in --seeds (identical across arms).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent / "suites"
VBENCH2_DIMENSIONS = ("Mechanics", "Thermotics", "Material")
DEFAULT_SEEDS = {"vbench2": 3}  # VBench-2.0 samples 3 videos per prompt (Diversity: 20, not a physics dimension)


class SuiteError(ValueError):
    pass


@dataclass(frozen=True)
class Item:
    suite: str        # vbench2, videophy, videophy2, phygenbench or a custom suite's name
    group: str        # VBench-2.0 dimension, PhyGenBench main category, or ""
    index: int        # position in the suite's source file (0-based)
    prompt: str
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.group}/{self.index}"


def read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def vbench2(arg: str | None) -> list[Item]:
    dims = [d.strip() for d in arg.split(",")] if arg else list(VBENCH2_DIMENSIONS)
    items = []
    for d in dims:
        f = HERE / "vbench2" / f"{d}.txt"
        if not f.is_file():
            raise SuiteError(f"vbench2: no dimension {d!r}; shipped: {', '.join(VBENCH2_DIMENSIONS)}")
        items += [Item("vbench2", d, i, p) for i, p in enumerate(read_lines(f))]
    return items


def videophy(arg: str | None) -> list[Item]:
    return [Item("videophy", "", i, p) for i, p in enumerate(read_lines(HERE / "videophy_test.txt"))]


def user_file(arg: str | None, name: str, what: str) -> Path:
    if not arg:
        raise SuiteError(f"{name} is not shipped (its licence does not allow it): pass your copy as {name}:PATH ({what})")
    p = Path(arg).expanduser()
    if not p.is_file():
        raise SuiteError(f"{name}: no file {p}")
    return p


def phygenbench(arg: str | None) -> list[Item]:
    p = user_file(arg, "phygenbench", "PhyGenBench/prompts.json from OpenGVLab/PhyGenBench")
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(d, dict) and "caption" in d for d in data):
        raise SuiteError(f"{p}: expected PhyGenBench's prompts.json, a list of objects with 'caption'")
    return [Item("phygenbench", d.get("main_category", ""), i, d["caption"].strip(),
                 {k: d[k] for k in ("physical_laws", "sub_category", "main_category") if k in d})
            for i, d in enumerate(data)]


def videophy2(arg: str | None) -> list[Item]:
    p = user_file(arg, "videophy2", "the VideoPhy-2 test CSV with a 'caption' column")
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "caption" not in rows[0]:
        raise SuiteError(f"{p}: expected a CSV with a 'caption' column (columns: {list(rows[0]) if rows else 'none'})")
    return [Item("videophy2", "", i, r["caption"].strip(), {k: v for k, v in r.items() if k != "caption"})
            for i, r in enumerate(rows)]


def custom(path: Path) -> list[Item]:
    name = path.stem
    if path.suffix == ".jsonl":
        items = []
        for n, ln in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not ln.strip():
                continue
            try:
                d = json.loads(ln)
            except json.JSONDecodeError as e:
                raise SuiteError(f"{path}:{n + 1}: not JSON ({e})") from e
            if not isinstance(d, dict) or not isinstance(d.get("prompt"), str):
                raise SuiteError(f"{path}:{n + 1}: each line needs a \"prompt\" string")
            extra = {k: v for k, v in d.items() if k != "prompt"}
            if "image" in extra:  # a start image for image-to-video workflows, relative to the JSONL file
                img = (path.parent / Path(extra["image"]).expanduser()).resolve()
                if not img.is_file():
                    raise SuiteError(f"{path}:{n + 1}: no image {img}")
                extra["image"] = str(img)
            items.append(Item(name, "", len(items), d["prompt"].strip(), extra))
        return items
    return [Item(name, "", i, p) for i, p in enumerate(read_lines(path))]


SUITES = {"vbench2": vbench2, "videophy": videophy, "phygenbench": phygenbench, "videophy2": videophy2}


def load_suite(spec: str) -> list[Item]:
    """One suite from a spec (see the module docstring)."""
    name, _, arg = spec.partition(":")
    if name in SUITES:
        items = SUITES[name](arg or None)
    else:
        p = Path(spec).expanduser()
        if p.suffix not in (".jsonl", ".txt") or not p.is_file():
            raise SuiteError(f"unknown suite {spec!r}: use {', '.join(SUITES)} or a .jsonl/.txt file of prompts")
        items = custom(p)
    if not items:
        raise SuiteError(f"suite {spec!r} has no prompts")
    seen = {}
    for it in items:  # two prompts with the same file name would overwrite each other
        f = video_name(it, 0)
        if (it.group, f) in seen:
            raise SuiteError(f"suite {spec!r}: prompts {seen[(it.group, f)]} and {it.index} give the same file name {f!r}")
        seen[(it.group, f)] = it.index
    return items


# ---- layouts ----------------------------------------------------------------------------------------------------
def safe(text: str) -> str:
    return text.replace("/", "_").replace("\\", "_").replace("\0", "")


def underscored(caption: str) -> str:
    return safe(caption.strip().rstrip(".").replace(" ", "_"))[:180]


def video_name(item: Item, seed_index: int) -> str:
    if item.suite == "phygenbench":
        return f"seed{seed_index}/output_video_{item.index + 1}.mp4"
    if item.suite in ("videophy", "videophy2"):
        return f"{underscored(item.prompt)}_{seed_index}.mp4"
    return f"{safe(item.prompt)[:180]}-{seed_index}.mp4"


def video_relpath(item: Item, arm: str, seed_index: int) -> str:
    """Path of one video under the output folder, as the suite's evaluator expects it."""
    group = f"/{item.group}" if item.suite == "vbench2" else ""
    return f"{arm}/{item.suite}{group}/{video_name(item, seed_index)}"


def default_seed_count(suites: list[str]) -> int:
    return max(DEFAULT_SEEDS.get(s.partition(":")[0], 1) for s in suites)
