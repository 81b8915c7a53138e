"""The training recipe: one dataclass of grouped defaults, read from a .toml/.json file and `--key value` overrides
(docs/method.md §7 for the schedules; `training/configs/paper.toml` is the paper's recipe)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainConfig:
    # ---- data
    cache: str = "cache"  # output of `python -m training.cache`
    text_len: int = 512  # Wan's caption context: states zero-padded to this many rows
    num_workers: int = 2  # DataLoader workers (0 = in the main process)
    # ---- model
    wan: str = ""  # ComfyUI single-file Wan 2.1 T2V (.safetensors); "" = a tiny random Wan (tests, quick start)
    wan_config: str = "1.3b"  # 1.3b | 14b | path to a diffusers config.json
    tiny_wan_layers: int = 2
    tiny_wan_seed: int = 0
    hidden: int = 128  # adapter width H
    text_dim: int = 4096  # UMT5 width of the cached text states (4096 for UMT5-XXL)
    top_k: int = 4
    init_adapter: str = ""  # start the first stage from this adapter file instead of a fresh adapter
    # ---- stages (docs/method.md §7)
    stages: str = "ABC"
    schedule_scale: float = 1.0  # multiplies every step count below (the tiny recipe shrinks them)
    shift: float = 5.0
    a_phase_steps: int = 3000
    a_ranges: tuple = (0.90, 0.75, 0.50)
    a_jacobian_weight: float = 1.0
    a_smooth_l1_beta: float = 1.0
    b_steps: int = 5000
    b_phase_starts: tuple = (0, 1000, 2000, 3000, 4500)  # core, alpha, T, j, psi
    b_ramp: int = 100
    b_old_weight: float = 0.25
    c_epochs: float = 3.0
    c_steps: int = 0  # > 0 overrides c_epochs
    c_encoder_frozen_steps: int = 1000  # {E, scaffold, sigma MLP} lr 0 until here, then c_encoder_lr_scale x lr
    c_encoder_lr_scale: float = 0.3
    lambda_phys: float = 0.30
    lambda_ramp_steps: int = 2000
    csrc_warmup_steps: int = 1000
    sigma_threshold: tuple = (0.40, 1.00)
    sigma_threshold_steps: int = 2000
    mask_boot_steps: int = 300
    mask_phys_steps: int = 1300
    penalty: float = 0.01  # weight of mean((gate * dv)^2)
    # ---- optimisation
    lr: float = 1e-5
    weight_decay: float = 0.01
    grad_clip: float = 0.5
    batch_size: int = 1  # per GPU and micro-step
    grad_accum: int = 1
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    seed: int = 0
    # ---- distributed
    strategy: str = "ddp"  # ddp | fsdp (FSDP2 fully_shard) | deepspeed (ZeRO-2)
    deepspeed_offload: bool = True  # ZeRO-2 optimizer state on the CPU (the paper's setting)
    # ---- logging and checkpoints
    out: str = "runs/pila"
    log_every: int = 10
    ckpt_every: int = 500
    tensorboard: bool = True
    progress: bool = True
    stop_after: int = 0  # stop this invocation after N optimizer steps (0 = run to the end); for kill tests
    kill_after: int = 0  # test hook: SIGKILL this process after its N-th optimizer step, before that step's checkpoint
    allow_config_change: bool = False  # continue a run directory made with a different config (both are recorded)

    def steps(self, n: int) -> int:
        """A schedule length in this recipe's scale (0 stays 0, others at least 1)."""
        return 0 if n == 0 else max(1, round(n * self.schedule_scale))


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """Defaults <- a .toml/.json file (flat keys, `[section]` tables are flattened) <- `--key value` overrides."""
    values: dict = {}
    if path:
        text = Path(path).read_text()
        if str(path).endswith(".toml"):
            import tomllib
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
        for k, v in raw.items():
            if isinstance(v, dict):  # [data], [model], ... sections
                values.update(v)
            else:
                values[k] = v
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown config keys {unknown}{_did_you_mean(unknown, fields)}; "
                          f"valid keys: {', '.join(sorted(fields))}")
    i = 0
    while i < len(overrides):
        tok = overrides[i]
        i += 1
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}; overrides are --key value or --key=value")
        key, eq, val = tok[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown option --{key}{_did_you_mean([key], fields)}; options: {', '.join(sorted(fields))}")
        default = TrainConfig.__dataclass_fields__[key].default
        if not eq:
            if isinstance(default, bool) and (i >= len(overrides) or overrides[i].startswith("--")):
                val = "true"  # a bare --flag
            else:
                if i >= len(overrides):
                    raise ConfigError(f"--{key} needs a value")
                val, i = overrides[i], i + 1
        try:
            values[key] = _parse(val, default)
        except ValueError:
            raise ConfigError(f"--{key} {val!r}: expected a {type(default).__name__} like {default!r}") from None
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    if cfg.strategy not in ("ddp", "fsdp", "deepspeed"):
        raise ConfigError(f"strategy must be ddp, fsdp or deepspeed, got {cfg.strategy!r}")
    if not cfg.stages or not set(cfg.stages) <= set("ABC"):
        raise ConfigError(f"stages must be letters of 'ABC', got {cfg.stages!r}")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision must be auto, bf16 or fp32, got {cfg.precision!r}")
    return cfg


class ConfigError(ValueError):
    """A config file or command line the trainer cannot use; raised before anything is written."""


def _did_you_mean(keys, fields) -> str:
    import difflib
    hints = [f"{k} -> {m[0]}" for k in keys if (m := difflib.get_close_matches(k, fields, n=1))]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


# keys that change nothing about the weights a run directory holds (where and how to log, which stages this
# invocation runs, how often to checkpoint); every other key must match to continue a run
RUN_NEUTRAL = ("out", "stages", "num_workers", "log_every", "ckpt_every", "tensorboard", "progress", "stop_after",
               "kill_after", "allow_config_change")


def config_diff(old: dict, cfg: TrainConfig) -> dict[str, tuple]:
    """{key: (recorded, now)} for the keys that differ between a run directory's config.json and `cfg`."""
    new = dataclasses.asdict(cfg)
    norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731  (JSON has no tuples)
    return {k: (old.get(k, "<absent>"), new[k]) for k in new
            if k not in RUN_NEUTRAL and norm(old.get(k, "<absent>")) != norm(new[k])}


def option_help() -> dict[str, str]:
    """Each config key's `# comment` in TrainConfig, as its --help text."""
    import inspect
    import re
    out = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=\s*[^#]+?(?:#\s*(.*))?$", line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


def _parse(val: str, default):
    if isinstance(default, bool):
        return val.lower() in ("1", "true", "yes", "on")
    if isinstance(default, tuple):
        return tuple(float(x) if "." in x else int(x) for x in val.strip("()[]").split(",") if x)
    if isinstance(default, int):
        return int(val)
    if isinstance(default, float):
        return float(val)
    return val
