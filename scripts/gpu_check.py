"""The GPU check's driver (run it through `scripts/gpu_check.sh`, which sets up the offline wheels first).

    python scripts/gpu_check.py --out OUT              # GPU: full sizes, under 9 minutes
    python scripts/gpu_check.py --out OUT --cpu-smoke  # the same sequence at toy sizes on a CPU (the test suite)

Sections run in order, each as its own process with its own time box, and the summary (OUT/summary.json,
OUT/summary.md) is rewritten after every section, so a cut-off keeps everything finished before it. Logs:
OUT/logs/<section>.log. Results a section printed before it was cut off are kept (JSON lines).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TOTAL_GPU_S = 530  # the whole check inside 9 minutes, start-up included
SMOKE_BOX_S = 240  # per section on a CPU (a loaded 2-core machine: each torchrun start imports torch + diffusers)


class Check:
    def __init__(self, out: Path, smoke: bool):
        self.out, self.smoke = out, smoke
        self.t0 = time.monotonic()
        self.sections: list[dict] = []
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        if smoke:
            self.env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        self.info = self._info()
        self.write()

    def _info(self) -> dict:
        code = ("import json, sys, torch, importlib.util as u; print(json.dumps({'python': sys.version.split()[0], "
                "'torch': torch.__version__, 'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name(0) "
                "if torch.cuda.is_available() else None, 'bf16': torch.cuda.is_available() and torch.cuda.is_bf16_supported(), "
                "'missing': [m for m in ('diffusers', 'transformers', 'kornia', 'cv2', 'av', 'safetensors', 'einops', 'tqdm') "
                "if u.find_spec(m) is None]}))")
        r = subprocess.run([PY, "-c", code], env=self.env, capture_output=True, text=True, cwd=ROOT)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"error": r.stderr[-2000:]}

    def left(self) -> float:
        return TOTAL_GPU_S - (time.monotonic() - self.t0)

    # ---- one section: a list of commands, each in the section's time box
    def run(self, name: str, title: str, budget: float, steps) -> dict:
        sec = {"name": name, "title": title, "status": "running", "results": [], "notes": [], "budget_s": round(budget)}
        self.sections.append(sec)
        self.write()
        t0 = time.monotonic()
        log = (self.out / "logs" / f"{name}.log").open("a")
        try:
            steps(sec, lambda cmd, **kw: self._cmd(cmd, log, t0 + budget, **kw))
            sec["status"] = "ok" if sec["status"] == "running" else sec["status"]
        except TimeoutError as e:
            sec["status"] = "timed out"
            sec["notes"].append(str(e))
        except Exception as e:  # noqa: BLE001  (a failed section never stops the later ones)
            sec["status"] = "failed"
            sec["notes"].append(f"{type(e).__name__}: {e}")
        sec["seconds"] = round(time.monotonic() - t0, 1)
        log.close()
        self.write()
        return sec

    def _cmd(self, cmd: list[str], log, deadline: float, *, check: bool = True) -> subprocess.CompletedProcess:
        """Run `cmd` until the section's deadline (then its whole process group is killed); stdout is returned
        and logged, stderr logged."""
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
        out_lines: list[str] = []
        import threading
        reader = threading.Thread(target=lambda: [out_lines.append(x) or log.write(x) for x in proc.stdout], daemon=True)
        reader.start()
        while proc.poll() is None:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                reader.join(5)
                self._last = "".join(out_lines)
                raise TimeoutError(f"time box reached during: {' '.join(cmd[:6])} ...")
            time.sleep(0.2)
        reader.join(5)
        out = "".join(out_lines)
        self._last = out
        if check and proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd[:6])} ... (see logs)")
        return subprocess.CompletedProcess(cmd, proc.returncode, out, "")

    # ---- summary
    def write(self) -> None:
        summary = {"mode": "cpu-smoke" if self.smoke else "gpu", "elapsed_s": round(time.monotonic() - self.t0, 1),
                   "machine": self.info if hasattr(self, "info") else {}, "sections": self.sections}
        _atomic(self.out / "summary.json", json.dumps(summary, indent=1))
        _atomic(self.out / "summary.md", render_md(summary))


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_md(s: dict) -> str:
    m = s.get("machine", {})
    lines = [f"# PILA GPU check ({s['mode']})", "",
             f"Machine: {m.get('gpu') or 'CPU'}; torch {m.get('torch')} (CUDA {m.get('cuda')}), Python {m.get('python')}; "
             f"bf16: {m.get('bf16')}; missing modules: {', '.join(m.get('missing') or []) or 'none'}. "
             f"Elapsed {s['elapsed_s']} s.", ""]
    for sec in s["sections"]:
        lines += [f"## {sec['name']}) {sec['title']}: {sec['status']}"
                  + (f" ({sec.get('seconds')} s of {sec['budget_s']} s)" if "seconds" in sec else ""), ""]
        rows = [r for r in sec["results"] if isinstance(r, dict)]
        if rows:
            keys = []
            for r in rows:
                keys += [k for k in r if k not in keys]
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
            lines.append("")
        lines += [f"- {n}" for n in sec["notes"]]
        if sec["notes"]:
            lines.append("")
    return "\n".join(lines) + "\n"


# ============================================================================================ the sections

def section_a(ck: Check, sec: dict, run) -> None:
    """bf16 training step of each stage: planning figures (meta) beside the measured step."""
    if ck.smoke:
        args = ["--device", "cpu", "--measure", "--tiny", "--size", "5x32x32", "--plan-size", "5x32x32", "--hidden", "16",
                "--text-len", "16", "--steps", "1", "--warmup", "0"]
    else:
        args = ["--device", "cuda", "--size", "81x480x832", "--steps", "2", "--warmup", "1"]
    r = run([PY, "-m", "training.bench", "--dtype", "bf16", "--stages", "ABC", *args])
    rows = _json_lines(r.stdout)
    plans = {x["stage"]: x for x in rows if x.get("kind") == "plan" and "error" not in x}
    sec["notes"] += [f"planning figures for stage {x['stage']} failed: {x['error']}" for x in rows if "error" in x]
    for x in rows:
        if x.get("kind") == "measured":
            p = plans.get(x["stage"], {})
            sec["results"].append({"stage": x["stage"], "size": x["size"], "backbone": x["backbone"], "dtype": x["dtype"],
                                   "step_ms": x["step_ms_median"], "backbone_ms": x["backbone_ms_median"],
                                   "backbone_share": x["backbone_share"], "peak_mem_gib": x.get("peak_mem_gib"),
                                   "est_peak_gib": p.get("est_peak_gib"), "step_tflops": p.get("step_tflops"),
                                   "achieved_tflops_s": p["step_tflops"] / (x["step_ms_median"] / 1000)
                                   if p.get("step_tflops") and not ck.smoke else None})
    if ck.smoke:
        sec["notes"].append("cpu-smoke: the tiny Wan at 5x32x32 (the planning figures at the same size)")


def section_b(ck: Check, sec: dict, run) -> None:
    """pila.bench in bf16 (adapter ms per call, k = 0, 1, 4, 8) against one Wan forward at the same batch."""
    if ck.smoke:
        pb = ["--device", "cpu", "--size", "2,4,4", "--hidden", "16", "--repeats", "1", "--no-wan"]
        tb = ["--device", "cpu", "--tiny", "--size", "5x32x32", "--text-len", "16", "--steps", "1", "--warmup", "0"]
    else:
        pb = ["--device", "cuda", "--repeats", "3"]
        tb = ["--device", "cuda", "--size", "81x480x832", "--steps", "3", "--warmup", "1"]
    out = run([PY, "-m", "pila.bench", "--dtype", "bf16", "--ks", "0,1,4,8", *pb]).stdout
    vals = {}
    for line in out.splitlines():
        k, sep, v = line.partition(": ")
        if sep and k.replace("_", "").isalnum() and " " not in k:
            try:
                vals[k] = float(v)
            except ValueError:
                pass
    dev = "cpu" if ck.smoke else "cuda"
    wan = _json_lines(run([PY, "-m", "training.bench", "--wan-forward", "--batch", "2", "--dtype", "bf16", *tb]).stdout)
    wan_ms = wan[-1]["wan_ms_min"] if wan else None
    for k in (0, 1, 4, 8):
        ms = vals.get(f"{dev}_ms_k{k}")
        sec["results"].append({"k": k, "adapter_ms": ms, "wan_ms": wan_ms,
                               "time_ratio_pct": 100 * ms / wan_ms if ms and wan_ms else None,
                               "flop_ratio_pct": 100 * vals[f"adapter_gflops_k{k}"] / vals["wan_gflops"]
                               if f"adapter_gflops_k{k}" in vals and "wan_gflops" in vals else None})
    sec["notes"].append("batch 2 (CFG), " + ("toy size on CPU" if ck.smoke else "81x480x832 (latent 21x60x104)")
                        + "; target: adapter <= 1.5 % of the Wan forward at k = 4")


def _train_cmd(ck: Check, cache: Path, out: Path, *extra: str, nproc: int = 1) -> list[str]:
    return [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "training.train",
            "--config", "training/configs/tiny_cpu.toml", "--cache", str(cache), "--out", str(out),
            "--stages", "AC", "--a_phase_steps", "900", "--c_steps", "3", "--ckpt_every", "1", "--precision", "bf16",
            "--progress", "false", "--tensorboard", "false", "--num_workers", "0", *extra]


def _ckpt_step(path: Path) -> int:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(json.loads(f.metadata()["pila_train_state"])["step"])
    except Exception:  # noqa: BLE001  (not there yet, or being replaced)
        return -1


def _same(a: Path, b: Path) -> tuple[bool, float]:
    from safetensors.torch import load_file
    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        return False, float("inf")
    worst = max(float((x[k].double() - y[k].double()).abs().max()) for k in x)
    return all(x[k].dtype == y[k].dtype and bool((x[k] == y[k]).all()) for k in x), worst


def section_c(ck: Check, sec: dict, run) -> None:
    """torchrun on one device: an unbroken run, and a run SIGKILLed at a chosen step (the trainer's `kill_after`:
    after that optimizer step, before its checkpoint) then resumed with the same command: bitwise equal?"""
    cache = ck.out / "work" / "cache"
    if not (cache / "index.json").is_file():
        run([PY, "-c", "import sys, training; from training.cache import random_cache; "
                       "random_cache(sys.argv[1], clips=4, latent=(5, 8, 8), text_dim=32, text_tokens=12)", str(cache)])
    full, killed = ck.out / "work" / "c_full", ck.out / "work" / "c_killed"
    probe = run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "scripts/gpu_check_probe.py", "nccl"])
    rows = _json_lines(probe.stdout)
    sec["results"] += [dict(x, run="process group probe") for x in rows]
    if rows and not rows[-1].get("trainer_joins_process_group_at_world_1"):
        sec["notes"].append("the trainer does not join a process group when torchrun starts one process, so the "
                            "training runs below are single-process; NCCL (all-reduce, a DDP step) is checked by the probe")
    if not (full / "adapter.safetensors").is_file():
        run(_train_cmd(ck, cache, full))
    kill_at = 3  # stage A (9 steps in the tiny recipe): the process SIGKILLs itself after its 3rd optimizer step
    ckpt = killed / "stage_A" / "ckpt.safetensors"
    if not (killed / "adapter.safetensors").is_file():
        r = run(_train_cmd(ck, cache, killed, "--kill_after", str(kill_at)), check=False)
        was_killed = r.returncode != 0 and not (killed / "adapter.safetensors").is_file()
        at = _ckpt_step(ckpt)
        run(_train_cmd(ck, cache, killed))  # the same command without the kill: resumes from the checkpoint
    else:
        was_killed, at = None, None
    same, worst = _same(full / "adapter.safetensors", killed / "adapter.safetensors")
    sec["results"].append({"run": "kill + resume", "killed": was_killed, "resumed_from_step": at, "bitwise_equal": same,
                           "max_abs_diff": worst})
    if was_killed is False:
        sec["notes"].append("the run ended before the kill: the comparison is of two unbroken runs")


def section_d(ck: Check, sec: dict, run) -> None:
    """FSDP2 (fully_shard) on one device: the trainer's --strategy fsdp, and a direct sharded bf16 step."""
    probe = run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "scripts/gpu_check_probe.py", "fsdp"])
    rows = _json_lines(probe.stdout)
    sec["results"] += rows
    if rows and not rows[-1].get("trainer_wrap_shards_at_world_1"):
        sec["notes"].append("the trainer's --strategy fsdp does not shard at world size 1 (its run below is the plain "
                            "path); FSDP2 itself is checked by the probe's fully_shard step")
    cache = ck.out / "work" / "cache"
    out = ck.out / "work" / "d_fsdp"
    if not (out / "adapter.safetensors").is_file():
        run(_train_cmd(ck, cache, out, "--strategy", "fsdp"))
    ref = ck.out / "work" / "c_full" / "adapter.safetensors"
    if ref.is_file():
        same, worst = _same(ref, out / "adapter.safetensors")
        sec["results"].append({"run": "train --strategy fsdp vs ddp (section c)", "bitwise_equal": same, "max_abs_diff": worst})


def section_cache(ck: Check, sec: dict, run) -> None:
    """Seconds per clip of caching: the encoders on the device, the flow targets on the CPU."""
    args = ["--bench-encoders", "5x32x32", "--tiny", "--device", "cpu"] if ck.smoke else \
        ["--bench-encoders", "81x480x832", "--device", "cuda"]
    rows = _json_lines(run([PY, "-m", "training.cache", *args]).stdout)
    sec["results"] += rows
    for r in rows:
        gpu, cpu = r.get("gpu_s_per_clip"), r.get("flow_s")
        per = max(gpu, (cpu or 0) / 8)  # 8 workers per GPU computing flow
        sec["notes"].append(f"WISA-80K (80,000 clips) on 8 GPUs ~ 80000 / 8 x max({gpu:.3g} s, flow {cpu if cpu is None else f'{cpu:.3g}'} s / 8 "
                            f"workers) = {80000 / 8 * per / 3600:.2f} h (+ decoding, not measured here)")


def section_e(ck: Check, sec: dict, run) -> None:
    """The physics world's one-call GPU config, resumable: re-running the check continues it."""
    cfg = ROOT / "training" / "configs" / "physworld_gpu.json"
    if ck.smoke:
        args = ["--config", "smoke", "--device", "cpu", "--stop-after", "1", "--time-budget", "15"]
    elif cfg.is_file():
        args = ["--config", "gpu", "--time-budget", str(max(30, int(ck.left() - 25)))]
    else:
        sec["status"] = "skipped"
        sec["notes"].append("training/configs/physworld_gpu.json does not exist in this tree")
        return
    r = run([PY, "-m", "training.physworld_run", *args, "--out", str(ck.out / "physworld")])
    last = [x for x in r.stdout.splitlines() if x.startswith(("DONE", "PAUSED"))]
    sec["results"].append({"config": args[1], "outcome": last[-1] if last else r.stdout.strip().splitlines()[-1:]})
    report = next((ck.out / "physworld").glob("*/report.md"), None)
    if report:
        sec["notes"].append(f"report: {report.relative_to(ck.out)} (re-run the check with the same OUT to continue)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true")
    p.add_argument("--only", default="", help="comma-separated section names to run (default: all)")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ck = Check(out, a.cpu_smoke)
    plan = [  # name, title, time box (GPU seconds; the smoke run gets its own)
        ("a", "bf16 training step per stage, 1.3B architecture, 81x480x832", 170, section_a),
        ("b", "adapter vs one Wan 2.1 1.3B forward, bf16, B = 2", 70, section_b),
        ("c", "torchrun on one GPU (NCCL), SIGKILL + resume vs unbroken", 80, section_c),
        ("d", "FSDP2 on one GPU", 50, section_d),
        ("cache", "caching cost per clip (real-size VAE + UMT5-XXL, random weights)", 70, section_cache),
        ("e", "physics world, `gpu` config (resumable)", 0, section_e),
    ]
    only = set(filter(None, a.only.split(",")))
    for name, title, box, fn in plan:
        if only and name not in only:
            continue
        budget = (SMOKE_BOX_S if a.cpu_smoke else (box or ck.left() - 10))
        budget = min(budget, ck.left() - 5) if not a.cpu_smoke else budget
        if budget < 15:
            ck.sections.append({"name": name, "title": title, "status": "not run (out of time)", "results": [],
                                "notes": [], "budget_s": 0})
            ck.write()
            continue
        ck.run(name, title, budget, lambda sec, run, fn=fn: fn(ck, sec, run))
    ck.write()
    print((out / "summary.md").read_text())
    return 0 if all(s["status"] in ("ok", "skipped") for s in ck.sections) else 1


if __name__ == "__main__":
    sys.exit(main())
