"""PILA staged adapter training, docs/method.md §7: the loop (backbone frozen; only the adapter trains).

    # the paper's recipe on 8 GPUs (one command runs stages A, B and C, each from the previous one's output)
    torchrun --nproc_per_node=8 -m training.train --config training/configs/paper.toml \\
        --cache cache/ --wan wan2.1_t2v_1.3B_bf16.safetensors --out runs/pila
    # one stage only (B starts from runs/pila/stage_A/adapter.safetensors)
    torchrun --nproc_per_node=8 -m training.train --config training/configs/paper.toml --stages B ...
    # minutes on a CPU, tiny random Wan (no weights)
    python -m training.train --config training/configs/tiny_cpu.toml --cache runs/qs/cache --out runs/qs
    # FSDP2 / DeepSpeed ZeRO-2 with CPU offload instead of DDP
    torchrun ... -m training.train --config ... --strategy fsdp        # or --strategy deepspeed

A killed run resumes from `<out>/stage_X/ckpt.safetensors` when started again with the same command; the
result is the same as an unbroken run (sampler position, RNG states and the optimizer are restored, and every
sample's sigma and noise are drawn from a generator seeded by (seed, stage, step, position in the global batch),
so 1 GPU with accumulation 8 and 8 GPUs with accumulation 1 see the same batches and the same noise). A damaged
newest checkpoint falls back to `ckpt.prev.safetensors`. A run directory keeps one config: another one is refused,
naming the keys, unless `--allow_config_change` (then both are recorded). Precision: bf16 autocast over fp32 master
weights; the frozen Wan in bf16 with an fp32 timestep. `--help` lists every option with its default.

Stages (schedules scale with `schedule_scale`; the paper's values are the defaults):
  A  observable pretraining: E, scaffold, sigma MLP and u_head fit u to the cached optical flow (+ its Jacobian),
     three phases of 3000 steps at sigma ranges f = 0.90, 0.75, 0.50.
  B  field recovery, 5000 steps: the constructors learn each slot's local residual relations on the physical
     mask; phases core 0, alpha 1000, T 2000, j 3000, psi 4500, 100-step ramps, newest 1.0 / earlier 0.25.
  C  full coupling, 3 epochs: Eq. 11 with the lambda_phys, CSRC, sigma-threshold and mask ramps; every
     parameter in AdamW from step 0, {E, scaffold, sigma MLP} at lr 0 until step 1000 then 0.3 lr, u_head lr 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import training  # noqa: F401  (torchvision shim before diffusers / transformers)
from pila import PILAAdapter, PILAConfig, load_adapter, save_adapter
from pila.taxonomy import CATEGORIES  # noqa: F401  (re-exported)

# the concepts live in their own modules; `training.train` re-exports every name other code imports from it
from .checkpoint import DS_TAG, CheckpointError, _atomic_text, load_checkpoint, resume, save_checkpoint  # noqa: F401
from .config import ConfigError, TrainConfig, _parse, config_diff, load_config, option_help  # noqa: F401
from .distributed import (Dist, _average_replicated_grads, _full, _full_state, _is_dist, _reduce_logs,  # noqa: F401
                          _use_bf16, barrier, checksum, init_distributed, wrap)
from .losses import (PHASE_TERMS, boot_mask, jacobian, normalise_energy, physical_mask, routed_field_mask,  # noqa: F401
                     sample_sigma, shift_sigma, stage_a_loss, stage_b_loss, stage_b_weights, stage_c_loss,
                     stage_c_schedule)
from .sampling import MicroBatches, Stream, _noise, _seed  # noqa: F401
from .stages import STAGE_TRAINS, StageModel, _knobs, freeze_for_stage, _set_lrs, stage_knobs, stage_length  # noqa: F401

log = logging.getLogger("pila.training")


def build_backbone(cfg: TrainConfig, d: Dist):
    from .wan import FrozenWan, build_wan, load_wan, tiny_wan_config
    dtype = torch.bfloat16 if _use_bf16(cfg, d) else torch.float32
    if cfg.wan:
        model = load_wan(cfg.wan, cfg.wan_config, device=d.device, dtype=dtype)
    else:
        model = build_wan(tiny_wan_config(text_dim=cfg.text_dim, layers=cfg.tiny_wan_layers), device=d.device,
                          dtype=dtype, seed=cfg.tiny_wan_seed)
    return FrozenWan(model)


def stage_dir(cfg: TrainConfig, stage: str) -> Path:
    return Path(cfg.out) / f"stage_{stage}"


def new_adapter(cfg: TrainConfig) -> PILAAdapter:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(cfg.seed, "adapter-init") % 2 ** 31)
        return PILAAdapter(PILAConfig(hidden=cfg.hidden, text_dim=cfg.text_dim, top_k=cfg.top_k))


def initial_adapter(stage: str, cfg: TrainConfig) -> PILAAdapter:
    """Each stage starts from the latest earlier stage's adapter (C from B, or from A when B is not run);
    the first stage from --init_adapter or a fresh adapter."""
    for prev in reversed("ABC"[: "ABC".index(stage)]):
        if (stage_dir(cfg, prev) / "adapter.safetensors").is_file():
            return load_adapter(stage_dir(cfg, prev) / "adapter.safetensors").train()
    if stage != cfg.stages[0]:
        raise FileNotFoundError(f"stage {stage} found no earlier stage's adapter under {cfg.out}")
    if cfg.init_adapter:
        return load_adapter(cfg.init_adapter).train()
    if stage != "A":
        log.warning("stage %s: no earlier stage's adapter under %s; starting from a fresh adapter", stage, cfg.out)
    return new_adapter(cfg)


def run_stage(stage: str, cfg: TrainConfig, d: Dist, data, backbone) -> Path:
    """Train one stage to its end (or `stop_after` steps); returns the stage's adapter path when finished."""
    from .cache import collate
    sdir = stage_dir(cfg, stage)
    final = sdir / "adapter.safetensors"
    if final.is_file():
        if d.main:
            log.info("stage %s: already finished (%s)", stage, final)
        return final
    adapter = initial_adapter(stage, cfg).to(d.device)
    adapter.config = dataclasses.replace(adapter.config, top_k=cfg.top_k)
    assert adapter.config.text_dim == data[0]["phys"].shape[-1], (
        f"the adapter's text_dim {adapter.config.text_dim} differs from the cache's text width {data[0]['phys'].shape[-1]}")
    trains = STAGE_TRAINS[stage]
    freeze_for_stage(adapter, stage)  # never toggled during the stage

    def make_groups():  # read after wrapping: FSDP2 replaces the parameters with sharded ones
        g = adapter.param_groups()
        return [{"params": g[name], "lr": cfg.lr, "name": name} for name in trains]

    model = StageModel(adapter)
    module, opt, engine = wrap(model, make_groups, cfg, d)
    G = cfg.batch_size * cfg.grad_accum * d.world
    total = stage_length(stage, cfg, len(data), G)
    stream = Stream(len(data), seed=cfg.seed, stage=stage, global_batch=G)
    ckpt = sdir / "ckpt.safetensors"
    start = 0
    if engine is not None and ckpt.with_suffix(".json").is_file():
        engine.load_checkpoint(str(sdir / "deepspeed"), tag=DS_TAG)
        start = json.loads(ckpt.with_suffix(".json").read_text())["step"]
    elif ckpt.is_file() or ckpt.with_name("ckpt.prev.safetensors").is_file():
        meta = resume(ckpt, model, opt, cfg, log=log if d.main else None)
        start = meta["step"]
        if d.main:
            log.info("stage %s: resumed at step %d / %d from %s", stage, start, total, ckpt)
    writer = _writer(cfg, d, stage)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=MicroBatches(stream, start, total, accum=cfg.grad_accum, rank=d.rank, world=d.world,
                                         batch=cfg.batch_size),
        collate_fn=lambda items: collate(items, text_len=cfg.text_len), num_workers=cfg.num_workers,
        persistent_workers=False)
    batches = iter(loader)
    bf16 = _use_bf16(cfg, d)
    amp = (lambda: torch.autocast(d.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    from tqdm import tqdm
    bar = tqdm(total=total, initial=start, desc=f"stage {stage}", disable=not (cfg.progress and d.main),
               dynamic_ncols=True, unit="step")
    t0, done = time.time(), 0
    metrics_path = Path(cfg.out) / "metrics.jsonl"
    for step in range(start, total):
        knobs = stage_knobs(stage, step, cfg)
        _set_lrs(opt, stage, knobs, cfg)
        logs_acc: dict[str, float] = {}
        batch = None
        try:
            for a in range(cfg.grad_accum):
                batch = {k: v.to(d.device, non_blocking=True) for k, v in next(batches).items()}
                pos = stream.positions(step, a, d.rank, d.world, cfg.batch_size)
                x_t, sigma, target = _noise(batch["latents"], stage, step, pos, knobs, cfg)
                v = backbone(x_t, sigma, batch["text"])
                batch["target"] = target
                last_micro = a == cfg.grad_accum - 1
                if hasattr(module, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-step
                    module.set_requires_gradient_sync(last_micro)
                sync = last_micro or engine is not None or not hasattr(module, "no_sync")
                with (nullcontext() if sync else module.no_sync()), amp():
                    loss, logs = module(stage, x_t, sigma, v, batch, knobs)
                if engine is not None:  # DeepSpeed scales by 1/accum and steps only at the accumulation boundary
                    engine.backward(loss)
                    engine.step()
                else:
                    (loss / cfg.grad_accum).backward()
                logs["loss"] = loss.detach()
                for k, val in logs.items():
                    logs_acc[k] = logs_acc.get(k, 0.0) + float(val) / cfg.grad_accum
        except torch.OutOfMemoryError as e:
            shape = tuple(batch["latents"].shape) if batch is not None else None
            raise StepOutOfMemory(stage, step, shape, cfg, d) from e
        if engine is not None:
            gnorm = float(engine.get_global_grad_norm() or float("nan"))
        else:
            if cfg.strategy == "fsdp" and d.group:
                _average_replicated_grads(model.adapter.csrc.parameters(), d)
            # clip over what this step trains: a group at lr 0 (Stage C's u_head, its encoder group before the
            # switch) still gets gradients, but must not inflate the norm that scales the others
            params = [p for g in opt.param_groups if g["lr"] > 0 for p in g["params"]]
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 and params else float("nan")
            opt.step()
            opt.zero_grad(set_to_none=True)
        logs_acc = _reduce_logs(logs_acc, d)
        logs_acc["grad_norm"] = gnorm
        for g in opt.param_groups:
            logs_acc[f"lr/{g.get('name', '?')}"] = g["lr"]
        logs_acc.update({f"knob/{k}": float(v) for k, v in knobs.items() if isinstance(v, (int, float))})
        if stage == "C":
            logs_acc.update({f"csrc_const/{k}": v for k, v in adapter.csrc.as_dict().items()})
        if not all(math.isfinite(v) for k, v in logs_acc.items() if not k.startswith("grad_norm")):
            raise FloatingPointError(f"stage {stage} step {step}: non-finite losses {logs_acc}")
        done += 1
        if d.main:
            if step % max(1, cfg.log_every) == 0 or step + 1 == total:
                if writer is not None:
                    for k, val in logs_acc.items():
                        writer.add_scalar(f"{stage}/{k}", val, step)
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps({"stage": stage, "step": step, **logs_acc}) + "\n")
            bar.set_postfix(loss=f"{logs_acc['loss']:.4g}")
            bar.update(1)
        last = step + 1 == total
        stopping = cfg.stop_after > 0 and done >= cfg.stop_after
        if cfg.kill_after > 0 and done >= cfg.kill_after:  # test hook: die like a preempted machine, mid-stage
            os.kill(os.getpid(), signal.SIGKILL)
        if (cfg.ckpt_every > 0 and (step + 1) % cfg.ckpt_every == 0) or stopping or last:
            save_checkpoint(ckpt, model, opt, {"stage": stage, "step": step + 1, "epoch": stream.epoch(step + 1),
                                               "position": (step + 1) * G, "total": total}, cfg, d, engine)
            barrier(d)
        if stopping and not last:
            bar.close()
            if d.main:
                log.info("stage %s: stopped after %d steps at step %d (stop_after)", stage, done, step + 1)
            raise StopTraining(stage, step + 1)
    bar.close()
    if writer is not None:
        writer.close()
    plain = _plain_adapter(model, cfg)
    if d.world > 1:
        _LAST_CHECKSUM["value"] = checksum(plain)
    if d.main:
        save_adapter(final, plain, extra_metadata={
            "stage": stage, "steps": total, "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("out", "cache")},
            "seconds": round(time.time() - t0, 1),
            **({"toy": "quick start: trained against a tiny random Wan"} if not cfg.wan else {})})
        log.info("stage %s: finished %d steps -> %s", stage, total, final)
    barrier(d)
    return final


class StepOutOfMemory(RuntimeError):
    """Out of memory in a training step: which stage, which size, and what to reduce."""

    def __init__(self, stage: str, step: int, latents: tuple | None, cfg: TrainConfig, d: Dist):
        free = ""
        if d.device.type == "cuda":
            total = torch.cuda.get_device_properties(d.device).total_memory / 2 ** 30
            free = f" on {torch.cuda.get_device_name(d.device)} ({total:.0f} GiB)"
        size = f"latents {list(latents)} (batch, channels, frames, height, width)" if latents else "its first batch"
        super().__init__(
            f"out of memory in stage {stage} at step {step}{free} with {size}, batch_size {cfg.batch_size}, "
            f"Wan {cfg.wan_config}, adapter hidden {cfg.hidden}, precision {cfg.precision}. Reduce --batch_size "
            "(raise --grad_accum to keep the global batch), cache shorter or smaller clips (training.cache --frames / "
            "--height / --width), or shard the adapter state with --strategy fsdp or --strategy deepspeed.")
        self.stage, self.step = stage, step


class StopTraining(Exception):
    def __init__(self, stage: str, step: int):
        super().__init__(f"stopped in stage {stage} at step {step}")
        self.stage, self.step = stage, step


def _plain_adapter(model: StageModel, cfg: TrainConfig) -> PILAAdapter:
    """The trained adapter as a plain fp32-or-own-dtype module (gathers FSDP2 shards; call on every rank)."""
    if cfg.strategy == "fsdp" and _is_dist():
        sd, _ = _full_state(model, None, cfg, None)
        fresh = PILAAdapter(model.adapter.config)
        fresh.load_state_dict({k[len("adapter."):]: v.float() for k, v in sd.items()}, strict=True)
        return fresh
    return model.adapter


def _writer(cfg: TrainConfig, d: Dist, stage: str):
    if not (cfg.tensorboard and d.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed; logging to metrics.jsonl only")
        return None
    return SummaryWriter(str(Path(cfg.out) / "tensorboard" / f"stage_{stage}"))


def train(cfg: TrainConfig, *, data=None, backbone=None, d: Dist | None = None) -> Path | None:
    """Run the configured stages in order; returns the final adapter (`<out>/adapter.safetensors`), or None when
    `stop_after` stopped the run early."""
    d = d or init_distributed()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2 ** 32)
    random.seed(cfg.seed)
    if data is None:
        from .cache import CachedClips
        data = CachedClips(cfg.cache)
    check_precision(cfg, d)
    if d.main:
        record_config(cfg)
        index = getattr(data, "index", None)  # a CachedClips' index.json (a plain list of items has none)
        skipped = index.get("skipped", {}) if isinstance(index, dict) else {}
        log.info("data: %d cached clips used%s", len(data), f", skipped while caching: {skipped}" if skipped else "")
    backbone = backbone or build_backbone(cfg, d)
    path = None
    try:
        for stage in cfg.stages:
            path = run_stage(stage, cfg, d, data, backbone)
    except StopTraining:
        return None
    if d.world > 1 and path is not None:
        _check_ranks_agree(path, cfg, d)
    if d.main and path is not None:
        final = Path(cfg.out) / "adapter.safetensors"
        tmp = final.with_name(final.name + ".tmp")
        tmp.write_bytes(Path(path).read_bytes())
        os.replace(tmp, final)
        path = final
    barrier(d)
    return path


def record_config(cfg: TrainConfig) -> None:
    """Write `<out>/config.json`, or check it: a run directory holds weights made with one config.

    A different config (other than RUN_NEUTRAL keys such as --stages or --out) is refused with the differing
    keys, before anything is written; with --allow_config_change it continues, keeps the original config.json
    and records the new one as `config_changed_<n>.json` (with the differences)."""
    out = Path(cfg.out)
    path = out / "config.json"
    if path.is_file():
        diff = config_diff(json.loads(path.read_text()), cfg)
        if diff and not cfg.allow_config_change:
            lines = "\n".join(f"  {k}: run has {a!r}, this command {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ConfigError(f"{out} was made with a different config:\n{lines}\nUse the same settings to continue it, "
                              "a new --out for a new run, or --allow_config_change to continue it anyway (both configs "
                              "are then recorded in the run directory).")
        if diff:
            n = len(list(out.glob("config_changed_*.json"))) + 1
            _atomic_text(out / f"config_changed_{n}.json", json.dumps(
                {"changed": {k: {"was": a, "now": b} for k, (a, b) in diff.items()}, "config": asdict(cfg)}, indent=1))
            log.warning("%s: continuing with a changed config (%s); recorded in config_changed_%d.json",
                        out, ", ".join(sorted(diff)), n)
        return
    out.mkdir(parents=True, exist_ok=True)
    _atomic_text(path, json.dumps(asdict(cfg), indent=1))


def check_precision(cfg: TrainConfig, d: Dist) -> None:
    """bf16 is the paper's precision; a GPU without it (V100, T4) trains only on an explicit --precision fp32."""
    if d.device.type != "cuda" or cfg.precision == "fp32":
        return
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(d.device)
        raise SystemExit(f"{name} has no bf16 support; the recipe trains in bf16 (precision = {cfg.precision!r}). "
                         "Pass --precision fp32 to train in fp32 (about twice the memory, slower), or use a GPU "
                         "with bf16 (A100, H100, RTX 30xx/40xx or newer).")


def _check_ranks_agree(path: Path, cfg: TrainConfig, d: Dist) -> None:
    """Every rank reports a checksum of its own adapter weights; they must agree (written to rank_checksums.json)."""
    import torch.distributed as dist
    sums: list = [None] * d.world
    dist.all_gather_object(sums, _LAST_CHECKSUM.get("value"))
    if d.main:
        (Path(cfg.out) / "rank_checksums.json").write_text(json.dumps(sums))
        if len(set(sums)) != 1:
            raise RuntimeError(f"ranks ended with different adapter weights: {sums}")


_LAST_CHECKSUM: dict = {}


def parser() -> argparse.ArgumentParser:
    """--config plus one option per TrainConfig key, with its default and its comment as help."""
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a .toml or .json recipe (training/configs/paper.toml, tiny_cpu.toml); "
                   "options given here override it")
    helps = option_help()
    for f in dataclasses.fields(TrainConfig):
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kw = dict(nargs="?", const="true") if isinstance(default, bool) else {}
        p.add_argument(f"--{f.name}", default=argparse.SUPPRESS, metavar=type(default).__name__.upper(),
                       help=f"{helps.get(f.name, '')} (default: {shown})".lstrip(), **kw)
    return p


def main(argv=None) -> None:
    ns, unknown = parser().parse_known_args(argv)  # unknown options go on to load_config, which names the valid keys
    args = vars(ns)
    rest = [tok for k, v in args.items() if k != "config" for tok in (f"--{k}", str(v))] + unknown
    try:
        cfg = load_config(args.get("config"), rest)
    except (ConfigError, FileNotFoundError) as e:
        raise SystemExit(f"training.train: {e}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    d = init_distributed()
    if not d.main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        out = train(cfg, d=d)
    except (ConfigError, CheckpointError, StepOutOfMemory) as e:
        raise SystemExit(f"training.train: {e}") from None
    if d.main and out is not None:
        print(f"adapter: {out}")
    if d.group:
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
