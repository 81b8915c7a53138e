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
    # ---- stages (SPEC section 7)
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
        raise ValueError(f"{path}: unknown config keys {unknown}")
    i = 0
    while i < len(overrides):
        tok = overrides[i]
        i += 1
        if not tok.startswith("--"):
            raise ValueError(f"unexpected argument {tok!r}; overrides are --key value or --key=value")
        key, eq, val = tok[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown option --{key}; options: {', '.join(sorted(fields))}")
        default = TrainConfig.__dataclass_fields__[key].default
        if not eq:
            if isinstance(default, bool) and (i >= len(overrides) or overrides[i].startswith("--")):
                val = "true"  # a bare --flag
            else:
                if i >= len(overrides):
                    raise ValueError(f"--{key} needs a value")
                val, i = overrides[i], i + 1
        values[key] = _parse(val, default)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    assert cfg.strategy in ("ddp", "fsdp", "deepspeed"), f"strategy must be ddp, fsdp or deepspeed, got {cfg.strategy!r}"
    assert set(cfg.stages) <= set("ABC") and cfg.stages, f"stages must be letters of 'ABC', got {cfg.stages!r}"
    return cfg


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
