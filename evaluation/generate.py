"""Queues prompts x arms x seeds on one or more ComfyUI servers and saves each video where its evaluator expects it.

Resumable: a video counts as done only when its manifest line exists and its file is in place; files are
downloaded to `<name>.part` and renamed, and the manifest line is written after the rename, so a killed run never
leaves a half-written video counted as done (an orphan file without a manifest line is generated again).
Scale-out: `shard=(i, n)` takes every n-th (prompt, seed) unit starting at i (all arms of a unit stay together, on
one server, so their timings compare); several server URLs share one queue of units inside a process.
"""
from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.util
import json
import os
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .client import ComfyClient, ComfyError, execution_seconds
from .suites import Item, load_suite, video_relpath
from .videoio import to_mp4
from .workflow import Arm, Settings, configure, load_template, of_type

MANIFEST_GLOB = "manifest*.jsonl"


@dataclass
class Job:
    item: Item
    arm: Arm
    seed_index: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.item.key}|{self.arm.name}|{self.seed_index}"

    @property
    def relpath(self) -> str:
        return video_relpath(self.item, self.arm.name, self.seed_index)


@dataclass
class RunConfig:
    out: Path
    suites: list[str]
    servers: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8188"])
    workflow: str = "wan2.1"
    arms: list[Arm] = field(default_factory=lambda: [Arm("base", pila=False), Arm("pila")])
    seeds: list[int] = field(default_factory=lambda: [0])
    settings: Settings = field(default_factory=Settings)
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None          # first N prompts of each suite (smoke runs)
    graph_hook: str | None = None     # "module:function" or "file.py:function", edits each API prompt
    timeout: float | None = None      # seconds per video
    quiet: bool = False


# ---- bookkeeping -------------------------------------------------------------------------------------------------
def read_manifest(out: Path) -> list[dict]:
    recs = []
    for f in sorted(Path(out).glob(MANIFEST_GLOB)):
        for ln in f.read_text(encoding="utf-8").splitlines():
            try:
                recs.append(json.loads(ln))
            except json.JSONDecodeError:
                continue  # a line cut by a kill is not a record
    return recs


def finished(out: Path) -> dict[str, dict]:
    """Manifest records whose video file is in place, by job key (the last record wins)."""
    return {r["key"]: r for r in read_manifest(out) if (Path(out) / r["file"]).is_file()}


def manifest_path(out: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return Path(out) / ("manifest.jsonl" if n == 1 else f"manifest.shard{i}of{n}.jsonl")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4") from e
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def load_hook(spec: str | None):
    if not spec:
        return None
    mod, _, fn = spec.rpartition(":")
    if mod.endswith(".py"):
        s = importlib.util.spec_from_file_location(Path(mod).stem, mod)
        m = importlib.util.module_from_spec(s)
        s.loader.exec_module(m)
    else:
        m = importlib.import_module(mod)
    return getattr(m, fn)


def build_jobs(cfg: RunConfig) -> list[list[Job]]:
    """Units of work: one (prompt, seed) with all its arms, in a fixed order; this shard's share."""
    units = []
    for spec in cfg.suites:
        items = load_suite(spec)[: cfg.limit]
        for it in items:
            for si, seed in enumerate(cfg.seeds):
                units.append([Job(it, arm, si, seed) for arm in cfg.arms])
    i, n = cfg.shard
    return units[i::n]


def check_run_file(cfg: RunConfig) -> None:
    """The folder's first run fixes the workflow and the settings; a later run (resume, a shard, more arms) must match."""
    run = {"workflow": cfg.workflow, "settings": asdict(cfg.settings), "seeds": cfg.seeds}
    path = cfg.out / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        mine = {k: old.get(k) for k in run}
        if mine != json.loads(json.dumps(run)):
            raise SystemExit(f"{cfg.out} was generated with other settings ({json.dumps(mine)}); this run has "
                             f"{json.dumps(run)}. Use the same settings to resume, or a new --out.")
        arms = {**old.get("arms", {}), **{a.name: a.describe() for a in cfg.arms}}
        clash = [a.name for a in cfg.arms if a.name in old.get("arms", {}) and old["arms"][a.name] != a.describe()]
        if clash:
            raise SystemExit(f"arm(s) {clash} were defined differently in {path}; give the new arm another name")
    else:
        arms = {a.name: a.describe() for a in cfg.arms}
    tmp = path.with_name(f"run.json.{os.getpid()}.part")
    tmp.write_text(json.dumps({**run, "arms": arms}, indent=1))
    os.replace(tmp, path)


# ---- one video --------------------------------------------------------------------------------------------------
def graph_labels(entry: dict, api: dict) -> dict | None:
    """The labels the in-graph parser node reported (its UI text), if it ran in this prompt."""
    for k in of_type(api, "PILAPhysicsLabelParser"):
        text = entry.get("outputs", {}).get(k, {}).get("text")
        if text:
            lines = dict(ln.split(": ", 1) for ln in text[0].splitlines() if ": " in ln)
            shown = lines.get("labels", "")
            names = [] if shown.startswith("none") else [s.rsplit(" (", 1)[0] for s in shown.split(", ") if s]
            return {"labels": names, "description": lines.get("description", ""), "text": text[0]}
    return None


def saved_item(entry: dict, api: dict) -> dict:
    for k, out in entry.get("outputs", {}).items():
        if k in api and api[k]["class_type"] in ("SaveVideo", "SaveWEBM", "SaveAnimatedWEBP", "SaveAnimatedPNG",
                                                  "VHS_VideoCombine"):
            for key in ("images", "gifs", "videos", "animated"):
                for it in out.get(key, []) or []:
                    if isinstance(it, dict) and "filename" in it:
                        return it
    raise ComfyError(f"the prompt finished without a saved video in its outputs: {json.dumps(entry.get('outputs'))[:500]}")


def run_job(client: ComfyClient, template: dict, job: Job, cfg: RunConfig, hook, tag: str) -> dict:
    from pila.labels import parse  # the client's own label parse for the manifest (pure Python, no ComfyUI)

    r = parse(job.item.prompt)
    prefix = f"pila_eval/{tag}/{hashlib.sha1(job.key.encode()).hexdigest()[:16]}"
    image = None
    if job.item.extra.get("image") and of_type(template, "LoadImage"):
        image = client.upload_image(Path(job.item.extra["image"]).expanduser())
    api = configure(template, prompt=job.item.prompt, seed=job.seed, arm=job.arm, settings=cfg.settings, prefix=prefix,
                    image=image)
    if hook is not None:
        api = hook(api, {"prompt": job.item.prompt, "seed": job.seed, "arm": job.arm.name, "item": job.item}) or api
    t0 = time.time()
    pid = client.queue(api)
    entry = client.wait(pid, timeout=cfg.timeout)
    wall = time.time() - t0
    item = saved_item(entry, api)
    dest = cfg.out / job.relpath
    if Path(item["filename"]).suffix.lower() == ".mp4":
        client.download(item, dest)
    else:  # an animation format the evaluators do not read: convert in the client
        raw = dest.with_name(dest.name + ".src" + Path(item["filename"]).suffix)
        client.download(item, raw)
        to_mp4(raw, dest, fps=cfg.settings.fps)
        raw.unlink()
    return {
        "key": job.key, "suite": job.item.suite, "group": job.item.group, "index": job.item.index,
        "prompt": job.item.prompt, "arm": job.arm.name, "arm_settings": job.arm.describe(),
        "seed": job.seed, "seed_index": job.seed_index, "image": image,
        "labels": list(r.labels), "description": r.description, "graph_labels": graph_labels(entry, api),
        "workflow": cfg.workflow, "settings": asdict(cfg.settings), "file": job.relpath,
        "seconds": round(wall, 4), "exec_seconds": execution_seconds(entry), "server": client.url,
        "prompt_id": pid, "extra": job.item.extra, "finished_at": time.time(),
    }


# ---- the run ----------------------------------------------------------------------------------------------------
def generate(cfg: RunConfig) -> dict:
    """Runs (or resumes) a generation; returns counts {done, skipped, total}."""
    cfg.out = Path(cfg.out)
    cfg.out.mkdir(parents=True, exist_ok=True)
    check_run_file(cfg)
    units = build_jobs(cfg)
    done = finished(cfg.out)
    total = sum(len(u) for u in units)
    todo = [[j for j in u if j.key not in done] for u in units]
    todo = [u for u in todo if u]
    skipped = total - sum(len(u) for u in todo)
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    log(f"{total} videos in this shard ({cfg.shard[0]}/{cfg.shard[1]}), {skipped} already done, "
        f"{total - skipped} to generate on {len(cfg.servers)} server(s)")
    hook = load_hook(cfg.graph_hook)
    mpath = manifest_path(cfg.out, cfg.shard)
    lock, stop = threading.Lock(), threading.Event()
    errors: list[BaseException] = []
    work: queue.Queue = queue.Queue()
    for u in todo:
        work.put(u)
    count = [0]
    tag = f"{int(time.time())}_{os.getpid()}"

    def worker(url: str):
        try:
            client = ComfyClient(url)
            template, _ = load_template(cfg.workflow, client.object_info())
            first = True
            while not stop.is_set():
                try:
                    unit = work.get_nowait()
                except queue.Empty:
                    return
                for job in unit:
                    if stop.is_set():
                        return
                    rec = run_job(client, template, job, cfg, hook, tag)
                    rec["first_on_server"] = first
                    first = False
                    with lock:
                        with open(mpath, "a", encoding="utf-8") as fh:
                            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                            fh.flush()
                            os.fsync(fh.fileno())
                        count[0] += 1
                        log(f"[{count[0]}/{total - skipped}] {job.arm.name} seed {job.seed} {rec['seconds']:.1f} s "
                            f"-> {job.relpath}")
        except BaseException as e:  # noqa: BLE001  (reported after the other workers stop)
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=worker, args=(u,), daemon=True) for u in cfg.servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    write_evaluator_files(cfg.out)
    return {"done": count[0], "skipped": skipped, "total": total}


def write_evaluator_files(out: Path) -> list[Path]:
    """The CSVs VideoPhy (videopath, caption) and VideoPhy-2 (caption, videopath) read, per arm, from the manifest."""
    recs = sorted(finished(out).values(), key=lambda r: (r["arm"], r["suite"], r["index"], r["seed_index"]))
    written = []
    for suite, cols in (("videophy", ("videopath", "caption")), ("videophy2", ("caption", "videopath"))):
        by_arm: dict[str, list[dict]] = {}
        for r in recs:
            if r["suite"] == suite:
                by_arm.setdefault(r["arm"], []).append(r)
        for arm, rows in by_arm.items():
            path = Path(out) / arm / suite / f"{suite}.csv"
            tmp = path.with_name(path.name + f".{os.getpid()}.part")
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(cols)
                for r in rows:
                    vals = {"videopath": str((Path(out) / r["file"]).resolve()), "caption": r["prompt"]}
                    w.writerow([vals[c] for c in cols])
            os.replace(tmp, path)
            written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m evaluation generate ...")
