"""The physics-world experiment: does the PILA correction make generated motion more physical?

    python -m training.physworld_run --config smoke --out runs/physworld          # CPU, a few minutes
    python -m training.physworld_run --config gpu --out runs/physworld --time-budget 480  # one H200 call (9 min)
    python -m training.physworld_run --config full --out runs/physworld --time-budget 480   # GPU, repeat until DONE
    python -m training.physworld_run --config gpu --estimate   # print the FLOP estimate per phase, run nothing

On a device machine that may be fresh at every call, add `--pack $OUT/state`: the state to continue comes back as
state.partNN (tar.gz, <= 15 MiB each) with report.md; unpack it with
`mkdir -p runs/physworld && cat state.part* | tar xzf - -C runs/physworld` and carry runs/physworld into the next
call. `--config full_ablations` (the same run folder) adds the three ablation arms to a finished `full` run.

Arms, all on the same frozen base and measured on the same clips with the same noise (docs/method.md §1, §7):
- `base`: a tiny Wan (diffusers `WanTransformer3DModel`) in pixel space (3 channels), trained with rectified flow
  (x_s = (1 - s) x0 + s noise, target noise - x0, sigma 1 = noise). The "weak" base sees uniform motion only, so
  there is physics (gravity, bounces, collisions) to correct; a "strong" base (all scenarios) is optional.
- `plain`: a plain adapter of about PILA's parameter count: no bank, no experts, no residuals; a conv net reading
  [x0_hat, v, sigma] and the same condition (pooled text + labels), zero-initialised output, the same gate.
- `plain_flops`: the same plain adapter narrowed to about PILA's forward FLOPs per clip (PILA runs only k of its 8
  experts, so at equal parameters the plain adapter costs more compute; this arm matches compute instead).
- `pila`: the PILA adapter (latent_channels = 3) trained by Stages A, B, C; Stage A's flow targets are the analytic
  ball velocities painted inside the ball masks (`physworld.flow_field`).
- `finetune`: the base itself fine-tuned for the same steps on the same batches (it never runs the frozen base).
- ablations of `pila`: `pila_nores` (no CSRC: Stage B skipped, its steps given to C, lambda_phys = 0),
  `pila_dense` (no routing: all 8 experts, no label prior, uniform weights), `pila_randlabels` (random labels in
  training and evaluation).
Every arm trained on the base is trained with `seeds` seeds (initialisation and batch stream); for one seed all
those arms read the same batches and noise for the same number of steps. What differs between arms (the paper's
recipe for PILA, docs/method.md §7, kept on purpose):
- `plain`, `plain_flops` and `finetune` draw sigma over the whole shifted range (0.02-0.99 at shift 3) at every
  step, with one AdamW, one linear warm-up, then a constant lr for every parameter;
- `pila` trains three stages in turn, each with a fresh AdamW and its own warm-up. Stage A draws sigma from a
  capped range that widens per phase (sigma <= 0.25, 0.50, 0.75 in its three phases at shift 3) and trains only the
  encoder and u-head; Stage B trains only the constructors; Stage C trains everything, but holds the u-head at lr 0
  and the encoder at lr 0 for its first 10 % of steps, then at 0.3x lr (the trainer's Stage C schedule).
So PILA sees the same clips and noise as `plain` but not the same sigmas in Stage A, and a different optimiser
schedule; the comparison is of the two recipes, not of two architectures under one schedule.

Frame conditioning (the standard trick): at every model call the first `cond_frames` frames of x_t are replaced by
the clean condition frames, and the velocity there is defined as 0 (the base's and the adapters' outputs are zeroed
there, the training target is 0 there), so Euler steps keep them fixed and x0_hat equals them.

Metric (training/physworld.py): a ball counts only when detected as a blob of plausible size; an undetected step is
charged a fixed penalty; every table shows detection beside velocity error and includes the `erased` and `speckle`
failure baselines. FLOPs are counted per forward (torch's FlopCounterMode on meta tensors) and multiplied out per
phase (training step = 3x forward for what trains + 1x for the frozen base); `--estimate` prints the total and the
time it needs at 25-35 % of an H200's 790 TFLOP/s dense bf16 peak. The run evaluates the base first and writes its
sanity line into report.md before any adapter trains.

Resumable: each phase (a training of one arm or stage, an evaluation of one arm) writes its result under --out;
re-running skips finished phases, resumes a partial training from its safetensors checkpoint (optimizer included),
and with --time-budget stops cleanly (printing PAUSED) before a 10-minute call ends. Training batches, noise and
sigmas are functions of (seed, stream, step), so a resumed run is the run that was not interrupted.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from pila import fd
from pila.condition import pool_text
from pila.config import PILAConfig
from pila.decoder import apply_correction
from pila.encoder import ResBlock3d
from training import physworld as pw
from training import train as T  # the project's trainer: stage losses, schedules, StageModel (docs/method.md §7)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
ARMS = ("base", "plain", "plain_flops", "pila", "finetune", "pila_nores", "pila_dense", "pila_randlabels")
ADAPTER_ARMS = ("plain", "plain_flops", "pila", "pila_nores", "pila_dense", "pila_randlabels")
H200_BF16_PEAK = 790e12  # dense bf16 FLOP/s


class OutOfTime(Exception):
    """The --time-budget ran out; everything finished so far is on disk."""


# ------------------------------------------------------------------------------------------------------------
# configuration

DEFAULTS: dict = {
    "seed": 0,
    "device": "auto",
    "amp": True,  # bf16 autocast for every arm (base, adapters, fine-tune) on CUDA; "force": on CPU too (tests)
    "seeds": 3,  # training seeds of every arm trained on the base (init and batch stream)
    "world": {"size": 32, "frames": 16, "cond_frames": 3},
    "shift": 3.0,  # sigma = shift s / (1 + (shift - 1) s): training draws and the Euler schedule
    "text_dim": 32,
    "text_tokens": 4,
    "bases": ["weak"],  # "weak": uniform motion only; "strong": all scenarios
    "base_scenarios": {"weak": ["uniform"], "strong": ["uniform", "bounce", "collision"]},
    "wan": {"patch_size": [1, 2, 2], "num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 512,
            "num_layers": 4, "freq_dim": 64},
    "pool_per_scenario": 4096,  # training trajectories per scenario (ID ranges), rendered on the device
    "base_train": {"steps": 4000, "batch": 32, "lr": 5e-4, "warmup": 200},
    "adapter_train": {"steps": 3000, "batch": 32, "lr": 3e-4, "warmup": 100,
                      "scenarios": ["uniform", "bounce", "collision"]},
    "pila": {"hidden": 32, "groups": 8, "stages": {"A": 0.2, "B": 0.2, "C": 0.6}},
    "plain": {"blocks": 4},
    "arms": ["base", "plain", "pila", "finetune"],
    "eval": {"n": 128, "steps": 24, "batch": 64, "boot": 2000, "film": 3, "seed": 1234,
             "splits": ["id", "ood_speed", "ood_radius", "ood_gravity"]},
    "ckpt_every": 250,
    "threads": 0,  # torch CPU threads (0: leave torch's default); 1 is much faster on a shared CPU
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(name_or_path: str) -> dict:
    """'smoke' / 'full' (training/configs/physworld_<name>.json) or a JSON path, merged over DEFAULTS."""
    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / f"physworld_{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("physworld_") for p in CONFIG_DIR.glob("physworld_*.json"))
        raise FileNotFoundError(f"physworld config {name_or_path!r} not found; known: {known} or a JSON path")
    data = json.loads(path.read_text())
    parent = load_config(data.pop("extends")) if "extends" in data else DEFAULTS  # "extends": another config
    cfg = _merge(parent, data)
    cfg["name"] = data.get("name", path.stem.removeprefix("physworld_"))
    unknown = [a for a in cfg["arms"] if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; valid: {ARMS}")
    return cfg


def world_config(cfg: dict) -> pw.WorldConfig:
    return pw.WorldConfig(**cfg["world"])


def _key(*parts) -> int:
    return pw._seed(*parts) % (2**63 - 1)


# ------------------------------------------------------------------------------------------------------------
# models

class TinyWan(nn.Module):
    """A pixel-space Wan (diffusers WanTransformer3DModel, 3 channels) with the frame-conditioning convention:
    velocity 0 on the condition frames. Called with timestep 1000 * sigma (docs/method.md §1)."""

    def __init__(self, wan: dict, *, text_dim: int, cond_frames: int):
        super().__init__()
        from diffusers import WanTransformer3DModel

        kw = dict(wan)
        kw["patch_size"] = tuple(kw["patch_size"])
        self.net = WanTransformer3DModel(in_channels=3, out_channels=3, text_dim=text_dim,
                                         rope_max_seq_len=kw.pop("rope_max_seq_len", 64), **kw)
        self.cond_frames = cond_frames

    def forward(self, x_t: Tensor, sigma: Tensor, text_states: Tensor) -> Tensor:
        assert x_t.ndim == 5 and x_t.shape[1] == 3, f"x_t must be [B, 3, T, H, W], got {tuple(x_t.shape)}"
        v = self.net(hidden_states=x_t, timestep=sigma * 1000, encoder_hidden_states=text_states,
                     return_dict=False)[0].float()  # bf16 under the run's autocast
        return torch.cat([torch.zeros_like(v[:, :, :self.cond_frames]), v[:, :, self.cond_frames:]], 2)


class PlainAdapter(nn.Module):
    """The "+ Plain Adapter" control: [x0_hat, v, sigma] -> dv with no bank, no experts and no residuals.
    A 3x3x3 stem, `blocks` residual blocks (the same ResBlock3d as PILA's encoder), the condition vector
    c = MLP([pooled text, labels, sigma]) added after the stem and every block, a zero-initialised 1x1x1 output
    (a fresh adapter leaves the base unchanged); the caller applies the same gate (docs/method.md §1, Eq. 10)."""

    def __init__(self, *, latent_channels: int = 3, width: int = 32, blocks: int = 4, text_dim: int = 32,
                 num_categories: int = 8, groups: int = 8):
        super().__init__()
        self.latent_channels, self.text_dim = latent_channels, text_dim
        self.stem = nn.Conv3d(2 * latent_channels + 1, width, kernel_size=3, padding=1)
        self.cond = nn.Sequential(nn.Linear(text_dim + num_categories + 1, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList([ResBlock3d(width, width, groups=groups) for _ in range(blocks)])
        self.out = nn.Conv3d(width, latent_channels, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: Tensor, sigma: Tensor, v: Tensor, text_states: Tensor | None = None,
                text_mask: Tensor | None = None, labels: Tensor | None = None, **_) -> Tensor:
        B = x_t.shape[0]
        s = sigma.float().view(B, 1, 1, 1, 1)
        x0_hat = x_t - s * v  # Eq. 1, sigma 1 = pure noise
        h = self.stem(torch.cat([x0_hat, v, s.expand_as(x_t[:, :1])], 1))
        pooled = pool_text(text_states, text_mask, batch=B, dim=self.text_dim).to(x_t.device)
        y = labels.float() if labels is not None else x_t.new_zeros(B, 8)
        c = self.cond(torch.cat([pooled.float(), y, sigma.float().view(B, 1)], 1))[:, :, None, None, None]
        for block in self.blocks:
            h = block(h + c)
        return self.out(h).clamp(-10, 10)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pila_config(cfg: dict, arm: str = "pila") -> PILAConfig:
    p = cfg["pila"]
    extra = {"top_k": 8, "prior_strength": 0.0, "temperature": 1e4} if arm == "pila_dense" else {}
    return PILAConfig(latent_channels=3, hidden=p["hidden"], groups=p["groups"], text_dim=cfg["text_dim"], **extra)


def build_pila(cfg: dict, arm: str = "pila") -> nn.Module:
    from pila.adapter import PILAAdapter
    return PILAAdapter(pila_config(cfg, arm))


def build_plain(cfg: dict) -> PlainAdapter:
    """The plain adapter whose parameter count is the closest to PILA's (parameter-matched)."""
    g, blocks, text_dim = cfg["pila"]["groups"], cfg["plain"]["blocks"], cfg["text_dim"]
    k = _plain_width(cfg, lambda w: count_params(build_pila(cfg)) if w is None else
                     count_params(PlainAdapter(width=w, blocks=blocks, text_dim=text_dim, groups=g)))
    return PlainAdapter(width=k, blocks=blocks, text_dim=text_dim, groups=g)


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def _meta_inputs(cfg: dict, batch: int = 1):
    w = cfg["world"]
    x = torch.empty(batch, 3, w["frames"], w["size"], w["size"], device="meta")
    return x, torch.empty(batch, device="meta"), torch.empty(batch, cfg["text_tokens"], cfg["text_dim"], device="meta")


def forward_flops(cfg: dict, model: str, *, width: int | None = None) -> int:
    """FLOPs of one forward on one clip (torch FlopCounterMode, meta tensors): 'base' (the tiny Wan), 'plain'
    (width: the plain adapter of that width), or a PILA arm (its k routed experts: top_k, 8 for pila_dense)."""
    key = (json.dumps([cfg["world"], cfg["wan"], cfg["pila"], cfg["plain"], cfg["text_dim"], cfg["text_tokens"]],
                      sort_keys=True), model, width)
    if key not in _FLOPS:
        _FLOPS[key] = _forward_flops(cfg, model, width)
    return _FLOPS[key]


_FLOPS: dict[tuple, int] = {}  # (the config's model fields, model, width) -> FLOPs


def _forward_flops(cfg: dict, model: str, width: int | None) -> int:
    x, s, text = _meta_inputs(cfg)
    labels = torch.empty(1, 8, device="meta")
    if model == "base":
        with torch.device("meta"):
            net = build_base(cfg)
        return _flops(lambda: net(x, s, text))
    if model == "plain":
        g = cfg["pila"]["groups"]
        with torch.device("meta"):
            net = PlainAdapter(width=width, blocks=cfg["plain"]["blocks"], text_dim=cfg["text_dim"], groups=g)
        return _flops(lambda: net(x, s, x, text, None, labels))
    from pila.bench import adapter_flops

    pc = pila_config(cfg, model)
    w = cfg["world"]
    return int(adapter_flops(pc, k=pc.top_k, size=(w["frames"], w["size"], w["size"]), batch=1)[0])


def _plain_width(cfg: dict, measure) -> int:
    """The plain adapter's width (a multiple of the group count) whose `measure(width)` is the closest to PILA's;
    the measure grows with the width, so a bisection finds it."""
    g = cfg["pila"]["groups"]
    target = measure(None)
    n = lambda k: measure(k * g)  # noqa: E731
    lo, hi = 1, 2
    while n(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if n(mid) < target else (lo, mid)
    return g * (lo if abs(n(lo) - target) <= abs(n(hi) - target) else hi)


def build_plain_flops(cfg: dict) -> PlainAdapter:
    """The plain adapter whose forward FLOPs per clip are the closest to PILA's (compute-matched)."""
    k = _plain_width(cfg, lambda w: forward_flops(cfg, "pila") if w is None else forward_flops(cfg, "plain", width=w))
    return PlainAdapter(width=k, blocks=cfg["plain"]["blocks"], text_dim=cfg["text_dim"], groups=cfg["pila"]["groups"])


def build_adapter(cfg: dict, arm: str) -> nn.Module:
    return build_plain(cfg) if arm == "plain" else build_plain_flops(cfg) if arm == "plain_flops" else \
        build_pila(cfg, arm)


def model_costs(cfg: dict) -> dict[str, dict[str, int]]:
    """{arm: {"params", "flops"}}: parameters and forward FLOPs per clip of what each arm adds (`base` and
    `finetune`: the whole base; an adapter: the adapter alone, the frozen base's forward comes on top)."""
    base = {"params": count_params(build_base(cfg)), "flops": forward_flops(cfg, "base")}
    out = {"base": base}
    for arm in cfg["arms"]:
        if arm in ("base", "finetune"):
            out[arm] = dict(base)
            continue
        a = build_adapter(cfg, arm)
        flops = forward_flops(cfg, "plain", width=a.stem.out_channels) if isinstance(a, PlainAdapter) else \
            forward_flops(cfg, arm)
        out[arm] = {"params": count_params(a), "flops": flops}
    return out


def phase_flops(cfg: dict, costs: dict | None = None) -> dict[str, float]:
    """Estimated FLOPs per phase (one training step = 3x the forward of what trains: forward + backward; plus 1x
    the frozen base's forward for an adapter; evaluation: every Euler step runs the base and the adapter), summed
    over bases and seeds; "total" at the end."""
    costs = costs or model_costs(cfg)
    fb = costs["base"]["flops"]
    bt, at, ev = cfg["base_train"], cfg["adapter_train"], cfg["eval"]
    n_eval = ev["n"] * len([1 for s in pw.SCENARIOS for sp in pw.splits_for(s) if sp in ev["splits"]]) * ev["steps"]
    out: dict[str, float] = {}
    for base in cfg["bases"]:
        out[f"{base}/base train"] = 3.0 * fb * bt["batch"] * bt["steps"]
        for arm in cfg["arms"]:
            n_seeds = 1 if arm == "base" else cfg["seeds"]
            fa = 0 if arm in ("base", "finetune") else costs[arm]["flops"]
            if arm == "finetune":
                out[f"{base}/finetune train"] = n_seeds * 3.0 * fb * at["batch"] * at["steps"]
            elif arm != "base":
                out[f"{base}/{arm} train"] = n_seeds * (fb + 3.0 * fa) * at["batch"] * at["steps"]
            out[f"{base}/{arm} eval"] = n_seeds * (fb + fa) * n_eval
    out["total"] = sum(out.values())
    return out


def flop_estimate_lines(cfg: dict, costs: dict | None = None, *, budget_s: float = 540.0) -> list[str]:
    """The printed sizing: FLOPs per phase and the time they need at 25 % and 35 % of an H200's bf16 peak."""
    ph = phase_flops(cfg, costs)
    unit, div = ("PFLOP", 1e15) if ph["total"] >= 1e15 else ("TFLOP", 1e12) if ph["total"] >= 1e12 else ("GFLOP", 1e9)
    lines = [f"FLOP estimate for `{cfg['name']}` ({cfg['seeds']} seeds per trained arm):", "",
             f"| phase | {unit} |", "|---|---|"]
    lines += [f"| {k} | {v / div:.4g} |" for k, v in ph.items()]
    t25, t35 = (ph["total"] / (f * H200_BF16_PEAK) for f in (0.25, 0.35))
    fits = "fits" if t25 <= budget_s else "does NOT fit"
    lines += ["", f"At 35-25 % of an H200's {H200_BF16_PEAK / 1e12:.0f} TFLOP/s bf16 peak: {t35:.3g}-{t25:.3g} s "
              f"({fits} one {budget_s / 60:.0f}-minute call at 25 %; detection and Python overheads come on top).", ""]
    return lines


def param_counts(cfg: dict) -> dict[str, int]:
    """Parameters per arm: adapters count their own, `base` and `finetune` the whole base."""
    costs = model_costs(cfg)
    return {f"{base}/{arm}": costs[arm]["params"] for base in cfg["bases"] for arm in ["base", *cfg["arms"]]}


def build_base(cfg: dict) -> TinyWan:
    return TinyWan(cfg["wan"], text_dim=cfg["text_dim"], cond_frames=cfg["world"]["cond_frames"])


# ------------------------------------------------------------------------------------------------------------
# checkpoints (safetensors, never pickle)

def save_training_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None, step: int) -> None:
    tensors = {f"model/{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"step": str(step)}
    if opt is not None:
        sd = opt.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"opt/{i}/{k}"] = v.detach().contiguous().cpu()
        meta["param_groups"] = json.dumps(sd["param_groups"])
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_training_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    if opt is not None and "param_groups" in meta:
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, i, name = k.split("/", 2)
                state.setdefault(int(i), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"])


# ------------------------------------------------------------------------------------------------------------
# Stage A targets

def flow_confidence(x0: Tensor, flow: Tensor) -> Tensor:
    """docs/method.md §7's flow confidence, clamp(sigmoid(2 (|grad I| + 0.5 |f| - 0.15)), 0.05, 1), with I the clean
    frame's channel mean in [0, 1] -> `[B, 1, T, H, W]`."""
    lum = ((x0.float() + 1) / 2).mean(1, keepdim=True)
    return torch.sigmoid(2 * (fd.grad_norm(lum) + 0.5 * flow.norm(dim=1, keepdim=True) - 0.15)).clamp(0.05, 1)


# ------------------------------------------------------------------------------------------------------------
# the run

class Run:
    def __init__(self, cfg: dict, out: Path, *, time_budget: float | None = None, stop_after: int | None = None,
                 log=None):
        self.cfg, self.out = cfg, out
        self.stop_after, self.steps_done = stop_after, 0  # stop after this many training steps (tests, debugging)
        self.log = log or (lambda msg: print(msg, flush=True))
        self.deadline = None if time_budget is None else time.monotonic() + time_budget
        self.world = world_config(cfg)
        dev = cfg["device"]
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else
                                   ("cpu" if dev == "auto" else dev))
        if self.device.type == "cpu" and cfg["threads"] > 0:
            torch.set_num_threads(cfg["threads"])
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        # bf16 autocast for every arm's forward (the base, the adapters, the fine-tune) on CUDA
        self.amp = cfg["amp"] == "force" or (bool(cfg["amp"]) and self.device.type == "cuda")
        self.text = {k: v.to(self.device) for k, v in
                     pw.text_embeddings(cfg["text_dim"], seed=cfg["seed"], tokens=cfg["text_tokens"]).items()}
        out.mkdir(parents=True, exist_ok=True)
        self._pool: dict[str, dict] | None = None

    # ---- bookkeeping --------------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise OutOfTime

    def phase_dir(self, *parts: str) -> Path:
        d = self.out.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ---- data -----------------------------------------------------------------------------------------------
    def pool(self) -> dict[str, dict]:
        """Training trajectories (ID ranges) per scenario, cached in pool.safetensors, kept on the device."""
        if self._pool is None:
            path = self.out / "pool.safetensors"
            n = self.cfg["pool_per_scenario"]
            if path.is_file():
                flat = load_file(str(path))
            else:
                flat = {}
                for s in pw.SCENARIOS:
                    for k, v in pw.sample_world(s, n, seed=_key(self.cfg["seed"], "train"), cfg=self.world).items():
                        flat[f"{s}/{k}"] = v
                save_file(flat, str(path))
            self._pool = {s: {k.split("/", 1)[1]: v.to(self.device) for k, v in flat.items() if k.startswith(s + "/")}
                          for s in pw.SCENARIOS}
        return self._pool

    def text_for(self, scenarios: list[str]) -> Tensor:
        return torch.stack([self.text[s] for s in scenarios])

    def batch(self, stream: str, step: int, scenarios: list[str], size: int, sigma_floor: float = 0.0) -> dict:
        """The training batch of (stream, step): clips, noise, sigma, x_t (condition frames clean), target (0 on the
        condition frames). The same for every arm that reads the same stream."""
        g = torch.Generator().manual_seed(_key(self.cfg["seed"], stream, step))
        pool = self.pool()
        names = [scenarios[i % len(scenarios)] for i in range(size)]
        parts, order = [], []
        for s in scenarios:
            k = names.count(s)
            if k == 0:  # a batch smaller than the scenario list
                continue
            idx = torch.randint(0, pool[s]["pos"].shape[0], (k,), generator=g).to(self.device)
            parts.append(pw.clips_from_world({n: t[idx] for n, t in pool[s].items()}, s, self.world))
            order += [s] * k
        clips = pw.Clips.cat(parts)
        x0 = clips.video
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        # docs/method.md §7's draw (the trainer's), with this world's shift
        sigma = T.sample_sigma(size, sigma_floor, shift=self.cfg["shift"], generator=g).to(self.device)
        return self._noised(clips, x0, noise, sigma) | {"clips": clips, "text": self.text_for(order), "gen": g}

    def _noised(self, clips, x0: Tensor, noise: Tensor, sigma: Tensor) -> dict:
        c = self.world.cond_frames
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise  # docs/method.md §1: sigma 1 = pure noise
        x_t = torch.cat([x0[:, :, :c], x_t[:, :, c:]], 2)
        target = noise - x0
        target = torch.cat([torch.zeros_like(target[:, :, :c]), target[:, :, c:]], 2)
        return {"x0": x0, "noise": noise, "sigma": sigma, "x_t": x_t, "target": target}

    # ---- training loop --------------------------------------------------------------------------------------
    def train(self, name: str, model: nn.Module, groups: list[dict], loss_fn, *, steps: int, warmup: int,
              step_offset: int = 0) -> nn.Module:
        """Train `model` for `steps` steps with AdamW (weight decay 0.01, gradient clip 0.5, docs/method.md §7);
        `groups`: [{"params", "lr", "scale": step -> factor}] (lr constant after a linear warm-up, times scale).
        loss_fn(step_global, step_local) -> (loss, logs). Resumes from and writes phases/<name>/; the finished
        model.safetensors keeps the optimizer, so raising `steps` later continues it (the lr is constant after the
        warm-up, so that equals the longer run; evaluations already written are not redone)."""
        d = self.phase_dir("phases", name)
        final, ckpt, start = d / "model.safetensors", d / "state.safetensors", 0
        opt = torch.optim.AdamW([{"params": g["params"], "lr": g["lr"]} for g in groups], weight_decay=0.01)
        source = final if final.is_file() else ckpt if ckpt.is_file() else None
        if source is not None:
            start = load_training_state(source, model, opt)
            if start >= steps:
                model.eval()
                return model
            self.log(f"[{name}] resuming at step {start}/{steps}")
        model.train()
        params = [p for g in groups for p in g["params"]]
        t0, logs_acc = time.monotonic(), {}
        log_path = d / "log.jsonl"
        for step in range(start, steps):
            out_of_steps = self.stop_after is not None and self.steps_done >= self.stop_after
            if out_of_steps or (self.deadline is not None and time.monotonic() > self.deadline):
                save_training_state(ckpt, model, opt, step)
                self.log(f"[{name}] paused at step {step}/{steps}")
                raise OutOfTime
            warm = min(1.0, (step + 1) / max(1, warmup))
            for pg, g in zip(opt.param_groups, groups):
                pg["lr"] = g["lr"] * warm * g.get("scale", lambda _s: 1.0)(step)
            with self.autocast():
                loss, logs = loss_fn(step_offset + step, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            self.steps_done += 1
            for k, v in {"loss": loss, **logs}.items():
                logs_acc[k] = logs_acc.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            every = max(1, min(50, steps // 10))
            if (step + 1) % every == 0 or step + 1 == steps:
                n = (step % every) + 1
                rec = {"step": step + 1, **{k: v / n for k, v in logs_acc.items()},
                       "s_per_step": (time.monotonic() - t0) / (step + 1 - start)}
                with log_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                self.log(f"[{name}] " + " ".join(f"{k}={v:.4g}" for k, v in rec.items()))
                logs_acc = {}
            if (step + 1) % self.cfg["ckpt_every"] == 0 and step + 1 < steps:
                save_training_state(ckpt, model, opt, step + 1)
        save_training_state(final, model, opt, steps)
        if ckpt.is_file():
            ckpt.unlink()
        model.eval()
        return model

    # ---- arms -----------------------------------------------------------------------------------------------
    def base_model(self, base: str) -> TinyWan:
        """Train (or load) the frozen base on its scenarios with rectified flow."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_key(self.cfg["seed"], "init", "base") % 2**31)
            model = build_base(self.cfg).to(self.device)
        bt = self.cfg["base_train"]
        scen = self.cfg["base_scenarios"][base]

        def loss_fn(step, _local):
            b = self.batch(f"base-{base}", step, scen, bt["batch"])
            v = model(b["x_t"], b["sigma"], b["text"])
            return F.mse_loss(v, b["target"]), {}

        model = self.train(f"{base}/base", model, [{"params": list(model.parameters()), "lr": bt["lr"]}], loss_fn,
                           steps=bt["steps"], warmup=bt["warmup"])
        model.requires_grad_(False).eval()
        return model

    def adapter_batch(self, base: TinyWan | None, step: int, seed: int, *, random_labels: bool = False,
                      sigma_floor: float = 0.0) -> dict:
        """The batch of training seed `seed` at `step` (the same for every arm of that seed), with the frozen base's
        velocity "v" unless `base` is None (the fine-tune never reads it)."""
        at = self.cfg["adapter_train"]
        b = self.batch(f"adapter/{seed}", step, at["scenarios"], at["batch"], sigma_floor=sigma_floor)
        if base is not None:
            with torch.no_grad():
                b["v"] = base(b["x_t"], b["sigma"], b["text"])
        b["labels"] = self.random_labels(b["clips"].labels, b["gen"]) if random_labels else b["clips"].labels
        return b

    @staticmethod
    def random_labels(like: Tensor, g: torch.Generator) -> Tensor:
        return (torch.rand(like.shape, generator=g) < 0.25).float().to(like.device)

    def _corrected(self, b: dict, dv: Tensor) -> Tensor:
        c = self.world.cond_frames
        dv = torch.cat([torch.zeros_like(dv[:, :, :c]), dv[:, :, c:]], 2)  # no correction on condition frames
        return apply_correction(b["v"], dv, b["sigma"]), dv

    def plain_arm(self, base: TinyWan, base_name: str, arm: str, seed: int) -> nn.Module:
        """Eq. 11 without CSRC (the trainer's stage_c_loss with lambda_phys 0) on the same batches as PILA;
        `plain` is parameter-matched, `plain_flops` compute-matched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_key(self.cfg["seed"], "init", arm, seed) % 2**31)
            model = build_adapter(self.cfg, arm).to(self.device)
        at = self.cfg["adapter_train"]

        def loss_fn(step, _local):
            b = self.adapter_batch(base, step, seed)
            dv = model(b["x_t"], b["sigma"], b["v"], b["text"], None, b["labels"])
            loss, logs = T.stage_c_loss(b["v"], dv, b["target"], b["sigma"], dv.new_zeros(()), lambda_phys=0.0)
            return loss, {"mse": logs["mse"]}

        return self.train(f"{base_name}/{arm}/s{seed}", model,
                          [{"params": list(model.parameters()), "lr": at["lr"]}], loss_fn, steps=at["steps"],
                          warmup=at["warmup"])

    def finetune_arm(self, base: TinyWan, base_name: str, seed: int) -> TinyWan:
        model = copy.deepcopy(base).requires_grad_(True)
        at = self.cfg["adapter_train"]

        def loss_fn(step, _local):
            b = self.adapter_batch(None, step, seed)  # the same batches, without the frozen base's forward
            v = model(b["x_t"], b["sigma"], b["text"])
            return F.mse_loss(v, b["target"]), {}

        model = self.train(f"{base_name}/finetune/s{seed}", model,
                           [{"params": list(model.parameters()), "lr": at["lr"]}],
                           loss_fn, steps=at["steps"], warmup=at["warmup"])
        return model.requires_grad_(False).eval()

    def pila_arm(self, base: TinyWan, base_name: str, arm: str, seed: int) -> nn.Module:
        """Stages A -> B -> C of the project's trainer (training.train: StageModel, its stage losses and schedules,
        docs/method.md §7) on this world's batches. The stages share the adapter step stream, so PILA sees exactly the
        plain adapter's batches; the schedules are the paper's, scaled to this run's stage lengths. `pila_nores`
        skips B (its steps go to C) and has lambda_phys = 0; `pila_randlabels` reads random labels throughout."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_key(self.cfg["seed"], "init", arm, seed) % 2**31)
            adapter = build_pila(self.cfg, arm).to(self.device)
        at, frac = self.cfg["adapter_train"], self.cfg["pila"]["stages"]
        n_a = 3 * max(1, int(round(at["steps"] * frac["A"] / 3)))
        n_b = 0 if arm == "pila_nores" else int(round(at["steps"] * frac["B"]))
        n_c = at["steps"] - n_a - n_b
        assert n_c > 0, f"adapter_train.steps {at['steps']} leaves no Stage C steps after A {n_a} and B {n_b}"
        scale = n_c / 10000  # the paper's C-stage ramps (1000-2000 steps) become 10-20 % of this run's C
        tc = T.TrainConfig(schedule_scale=scale, shift=self.cfg["shift"], lr=at["lr"],
                           a_phase_steps=max(1, round(n_a / 3 / scale)), b_steps=max(1, round(n_b / scale)),
                           b_phase_starts=tuple(round(f * n_b / scale) for f in (0, 0.2, 0.4, 0.6, 0.9)),
                           b_ramp=max(1, round(0.02 * n_b / scale)), c_steps=n_c,
                           lambda_phys=0.0 if arm == "pila_nores" else 0.30)
        model = T.StageModel(adapter)
        groups = adapter.param_groups()
        rand = arm == "pila_randlabels"
        name = f"{base_name}/{arm}/s{seed}"
        offset = 0
        for stage, n in (("A", n_a), ("B", n_b), ("C", n_c)):
            if n == 0:
                continue
            trains = T.STAGE_TRAINS[stage]
            T.freeze_for_stage(adapter, stage)

            def lr_scale(g):
                if stage == "C" and g == "encoder":
                    return lambda step: T.stage_c_schedule(step, tc)["encoder_lr"]
                if stage == "C" and g == "u_head":
                    return lambda step: 0.0
                return lambda step: 1.0

            def loss_fn(step, local, stage=stage):
                knobs = T._knobs(stage, local, tc)
                b = self.adapter_batch(base, step, seed, random_labels=rand, sigma_floor=knobs["f"])
                batch = {"target": b["target"], "labels": b["labels"], "phys": b["text"], "phys_mask": None}
                if stage == "A":
                    flow, _ = pw.flow_field(b["clips"], self.world)
                    batch.update(flow=flow, jac=T.jacobian(flow), conf=flow_confidence(b["x0"], flow))
                loss, logs = model(stage, b["x_t"], b["sigma"], b["v"], batch, knobs)
                keep = ("mse", "csrc", "flow", "jacobian", "mse_backbone")
                return loss, {k: v for k, v in logs.items() if k in keep}

            self.train(f"{name}/{stage}", adapter,
                       [{"params": groups[g], "lr": at["lr"], "scale": lr_scale(g)} for g in trains],
                       loss_fn, steps=n, warmup=at["warmup"], step_offset=offset)
            offset += n
        return adapter.requires_grad_(False).eval()

    def arm_model(self, base: TinyWan, base_name: str, arm: str, seed: int = 0):
        """(model, adapter) for sampling: the base and its adapter (None for base / finetune)."""
        if arm == "base":
            return base, None
        if arm == "finetune":
            return self.finetune_arm(base, base_name, seed), None
        if arm in ("plain", "plain_flops"):
            return base, self.plain_arm(base, base_name, arm, seed)
        return base, self.pila_arm(base, base_name, arm, seed)

    # ---- evaluation -----------------------------------------------------------------------------------------
    def eval_sets(self) -> list[tuple[str, str]]:
        return [(s, sp) for s in pw.SCENARIOS for sp in pw.splits_for(s) if sp in self.cfg["eval"]["splits"]]

    def eval_clips(self, scenario: str, split: str) -> tuple[pw.Clips, Tensor]:
        ev = self.cfg["eval"]
        clips = pw.make_clips(scenario, ev["n"], seed=ev["seed"], split=split, cfg=self.world)
        g = torch.Generator().manual_seed(_key(ev["seed"], "noise", scenario, split))
        return clips, torch.randn(clips.video.shape, generator=g)

    @torch.no_grad()
    def sample(self, model: TinyWan, adapter: nn.Module | None, clips: pw.Clips, noise: Tensor, *,
               labels: Tensor | None = None) -> Tensor:
        """Euler from sigma 1 to 0 on the shifted schedule; condition frames clean at every call."""
        ev, c, k = self.cfg["eval"], self.world.cond_frames, self.cfg["shift"]
        t = torch.linspace(1, 0, ev["steps"] + 1)
        sig = T.shift_sigma(t, k).tolist()
        outs = []
        for i in range(0, len(clips), ev["batch"]):
            x0 = clips.video[i:i + ev["batch"]].to(self.device)
            x = noise[i:i + ev["batch"]].to(self.device).clone()
            text = self.text_for(clips.scenario[i:i + ev["batch"]])
            y = (clips.labels if labels is None else labels)[i:i + ev["batch"]].to(self.device)
            for j in range(ev["steps"]):
                x = torch.cat([x0[:, :, :c], x[:, :, c:]], 2)
                s = torch.full((x.shape[0],), sig[j], device=self.device)
                with self.autocast():
                    v = model(x, s, text)
                    if adapter is not None:
                        dv = adapter(x, s, v, text, None, y)
                        dv = dv.dv if hasattr(dv, "dv") else dv
                        v, _ = self._corrected({"v": v, "sigma": s}, dv.float())
                x = x + (sig[j + 1] - sig[j]) * v
            outs.append(torch.cat([x0[:, :, :c], x[:, :, c:]], 2).clamp(-1, 1).cpu())
        return torch.cat(outs)

    def eval_path(self, name: str) -> Path:
        return self.out / "eval" / f"{name.replace('/', '__')}.safetensors"

    def evaluate(self, name: str, video_fn) -> None:
        """Per-clip metrics of one arm on every eval set -> eval/<name>.safetensors."""
        path = self.eval_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        flat = {}
        for scenario, split in self.eval_sets():
            self.check_time()
            clips, noise = self.eval_clips(scenario, split)
            video = video_fn(clips, noise)
            for mode in ("blob", "frame"):
                m = pw.motion_metrics(video, clips, self.world, mode=mode)
                for k in ("vel_err", "det_rate", "pos_err", "vel_err_frames"):
                    flat[f"{scenario}/{split}/{mode}/{k}"] = m[k].float().contiguous()
            if split == "id":
                flat[f"{scenario}/film"] = video[:self.cfg["eval"]["film"]].half().contiguous()
        save_file(flat, str(path))
        self.log(f"[eval] {name} written")

    def run(self) -> bool:
        """Everything not done yet (an arm whose evaluation is written is not rebuilt: `--pack` drops its
        weights); True when the report is written."""
        cfg = self.cfg
        (self.out / "config.json").write_text(json.dumps(cfg, indent=1))
        for name, fn in pw.BASELINES.items():
            if not self.eval_path(f"baseline/{name}").is_file():
                self.evaluate(f"baseline/{name}", lambda clips, noise, fn=fn: fn(clips, self.world))
        self.check_speed_splits()
        for base_name in cfg["bases"]:
            base = None
            # the base first: its sanity line is decided and written before any arm trains on it
            for seed, arm in [(0, "base")] + [(k, a) for k in range(cfg["seeds"]) for a in cfg["arms"] if a != "base"]:
                name = run_name(base_name, arm, seed)
                if self.eval_path(name).is_file():
                    continue
                self.check_time()
                base = base or self.base_model(base_name)
                model, adapter = self.arm_model(base, base_name, arm, seed)
                labels_fn = None
                if arm == "pila_randlabels":
                    labels_fn = lambda clips: self.random_labels(  # noqa: E731
                        clips.labels, torch.Generator().manual_seed(_key(cfg["seed"], "eval-labels")))
                self.evaluate(name, lambda clips, noise, m=model, a=adapter, lf=labels_fn:
                              self.sample(m, a, clips, noise, labels=None if lf is None else lf(clips)))
                del model, adapter
                if arm == "base":
                    write_report(self.out, cfg, self.world)
        write_report(self.out, cfg, self.world)
        return True

    def check_speed_splits(self) -> None:
        """The realised speeds of every `ood_speed` evaluation clip lie above those of every clip any arm trains on
        (the whole training pool, all scenarios); written to speeds.json for the report."""
        pool = self.pool()
        train_max = max(float(pw.realised_speed(pool[s]["pos"].cpu(), pool[s]["present"].cpu()).max())
                        for s in pw.SCENARIOS)
        ev = self.cfg["eval"]
        ood = [float(pw.sample_world(s, ev["n"], seed=ev["seed"], split="ood_speed", cfg=self.world)
                     ["realised_speed"].min()) for s in pw.SCENARIOS] if "ood_speed" in ev["splits"] else []
        ood_min = min(ood) if ood else float("nan")
        if ood and not ood_min > train_max:
            raise RuntimeError(f"ood_speed clips (realised speed >= {ood_min:.3f} px/frame) overlap the training "
                               f"pool (up to {train_max:.3f}): raise WorldConfig.speed_ood_min above speed_id_max")
        (self.out / "speeds.json").write_text(json.dumps({"train_max": train_max, "ood_speed_min": ood_min}))


def run_name(base: str, arm: str, seed: int) -> str:
    """The phase / evaluation name of an arm: `weak/base`, or `weak/pila/s1` for a trained arm's seed 1."""
    return f"{base}/base" if arm == "base" else f"{base}/{arm}/s{seed}"


# ------------------------------------------------------------------------------------------------------------
# report

def _load_eval(out: Path, name: str) -> dict[str, Tensor]:
    return load_file(str(out / "eval" / f"{name.replace('/', '__')}.safetensors"))


def _ci(r: dict) -> str:
    return f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] ({100 * r['improved']:.0f}%)"


def _seeded(cfg: dict, base: str, arm: str) -> list[str]:
    """The evaluation names of an arm: one for `base`, one per seed otherwise."""
    return [run_name(base, arm, k) for k in range(1 if arm == "base" else cfg["seeds"])]


def _mean_sd(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f}" if len(vals) == 1 else f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


def write_report(out: Path, cfg: dict, world: pw.WorldConfig) -> Path | None:
    """report.md with the tables, a per-frame error plot per arm and filmstrips (PNG), pairs.csv with every pair.
    Arms (seeds) not evaluated yet are left out (a paused run writes a partial report); None before the baselines.
    Every velocity error is printed with its detection rate; a trained arm's value is the mean ± standard deviation
    over its seeds of the per-set mean; paired differences are taken seed by seed (seed k of one arm against seed k
    of the other: the same batches), and a verdict holds only if it holds for every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = cfg["eval"]
    sets = [(s, sp) for s in pw.SCENARIOS for sp in pw.splits_for(s) if sp in ev["splits"]]
    if not all((out / "eval" / f"baseline__{n}.safetensors").is_file() for n in pw.BASELINES):
        return None
    baselines = {n: [_load_eval(out, f"baseline/{n}")] for n in pw.BASELINES}
    costs = model_costs(cfg)
    (out / "params.json").write_text(json.dumps(param_counts(cfg), indent=1))
    (out / "costs.json").write_text(json.dumps(costs, indent=1))
    lines = [f"# Physics world: does the PILA correction make generated motion more physical? (`{cfg['name']}`)", "",
             f"World {world.size}x{world.size}, {world.frames} frames, first {world.cond_frames} given; "
             f"{ev['n']} clips per scenario and split, {ev['steps']} Euler steps (shift {cfg['shift']}), the same "
             f"clips and noise for every arm; every arm trained on the base has {cfg['seeds']} training seeds. Metric: "
             f"velocity error |v_det - v_true| in px/frame over the generated frames (finite differences of the "
             f"colour-detected ball centroid, largest plausible blob unless stated). A ball is detected only as a blob "
             f"of {world.size_range[0]}x-{world.size_range[1]}x a rendered ball's area; a step whose ball is not "
             f"detected at both ends costs {world.penalty:.2f} px/frame (0.52 x the frame size: what guessing scores). "
             f"Cells: mean (± sd over seeds) and, in brackets, the detection rate. Differences are arm minus "
             f"comparator, seed k against seed k: negative = the arm is better; [95% paired bootstrap CI over clips, "
             f"{ev['boot']} resamples, of the seed-averaged per-clip errors] (share of clips improved) and how many "
             f"seeds' own CIs lie below zero.", ""]
    if (out / "speeds.json").is_file():
        sp_ = json.loads((out / "speeds.json").read_text())
        lines += [f"Realised speed (mean |p[t+1] - p[t]| per clip): at most {sp_['train_max']:.3f} px/frame in the "
                  f"training pool of every arm, at least {sp_['ood_speed_min']:.3f} in every `ood_speed` set.", ""]
    lines += ["## Cost", "", "| arm | parameters | forward GFLOP per clip |", "|---|---|---|"]
    lines += [f"| {a} | {c['params']:,} | {c['flops'] / 1e9:.3f} |" for a, c in costs.items()]
    lines += ["", "Adapters count their own parameters and FLOPs (the frozen base's forward comes on top); `base` and "
              "`finetune` count the whole base. `plain` matches PILA's parameters, `plain_flops` its FLOPs.", ""]
    lines += flop_estimate_lines(cfg, costs)
    csv = ["base,seed,scenario,split,arm,comparator,diff,lo,hi,improved,n"]
    for base in cfg["bases"]:
        res, missing = {}, []
        for a in sorted(cfg["arms"], key=lambda x: x != "base"):
            names = _seeded(cfg, base, a)
            have = [n for n in names if (out / "eval" / f"{n.replace('/', '__')}.safetensors").is_file()]
            missing += [n for n in names if n not in have]
            if have:
                res[a] = [_load_eval(out, n) for n in have]
        arms = list(res)
        cols = list(pw.BASELINES) + arms
        allres = {**baselines, **res}
        lines += [f"## Base `{base}` (trained on {', '.join(cfg['base_scenarios'][base])})", ""]
        if missing:
            lines += [f"**Partial report**: not evaluated yet: {', '.join(missing)}.", ""]
        if "base" in res:  # sanity: a base that cannot draw motion it was trained on leaves nothing to compare
            own = cfg["base_scenarios"][base][0]
            key = f"{own}/id/blob"
            b_err, b_det = (float(res["base"][0][f"{key}/{m}"].mean()) for m in ("vel_err", "det_rate"))
            c_err = float(baselines["copy_last_frame"][0][f"{key}/vel_err"].mean())
            verdict = "models motion" if b_err < c_err else \
                "does NOT model motion yet (train it longer or wider before reading the comparisons)"
            lines += [f"Sanity: on its own scenario ({own}, id) the base's velocity error is {b_err:.3f} px/frame "
                      f"(detection {100 * b_det:.0f} %) against {c_err:.3f} for copying the last condition frame: "
                      f"the base {verdict}.", ""]
        for metric, title in (("blob/vel_err", "Velocity error, px/frame (largest plausible blob)"),
                              ("frame/vel_err", "Velocity error, px/frame (whole frame)"),
                              ("blob/pos_err", "Position error, px, mean over generated frames (largest blob)")):
            det = metric.split("/")[0] + "/det_rate"
            lines += [f"### {title}", "", "| scenario | split | " + " | ".join(cols) + " |",
                      "|---|---|" + "---|" * len(cols)]
            for s, sp in sets:
                cells = []
                for c in cols:
                    v = [float(r[f"{s}/{sp}/{metric}"].mean()) for r in allres[c]]
                    d = np.mean([float(r[f"{s}/{sp}/{det}"].mean()) for r in allres[c]])
                    cells.append(f"{_mean_sd(v)} ({100 * d:.0f}%)")
                lines.append(f"| {s} | {sp} | " + " | ".join(cells) + " |")
            lines.append("")
        # paired differences, seed k against seed k (an unseeded arm, the base, pairs with every seed)
        pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:]]
        pairs = [(b, a) if b.startswith("pila") and not a.startswith("pila") else (a, b) for a, b in pairs]
        boot = {}
        for a, b in pairs:
            # the base (one model) pairs with every seed of the other arm; two trained arms pair seed by seed
            n_seeds = len(res[b if a == "base" else a]) if "base" in (a, b) else min(len(res[a]), len(res[b]))
            for s, sp in sets:
                key = f"{s}/{sp}/blob/vel_err"
                ra = [res[a][k % len(res[a])][key] for k in range(n_seeds)]
                rb = [res[b][k % len(res[b])][key] for k in range(n_seeds)]
                per_seed = []
                for k, (x, y) in enumerate(zip(ra, rb)):
                    r = pw.paired_bootstrap(x, y, n_boot=ev["boot"], seed=_key(cfg["seed"], a, b, s, sp, k))
                    per_seed.append(r)
                    csv.append(f"{base},{k},{s},{sp},{a},{b},{r['diff']:.5f},{r['lo']:.5f},{r['hi']:.5f},"
                               f"{r['improved']:.4f},{r['n']}")
                r = pw.paired_bootstrap(torch.stack(ra).mean(0), torch.stack(rb).mean(0), n_boot=ev["boot"],
                                        seed=_key(cfg["seed"], a, b, s, sp))
                r["seeds_below"] = sum(q["hi"] < 0 for q in per_seed)
                r["seeds"] = len(per_seed)
                boot[(a, b, s, sp)] = r

        def cell(r):
            return f"{_ci(r)} {r['seeds_below']}/{r['seeds']}"

        focal = [a for a in arms if a.startswith("pila")] or arms[:1]
        for a in focal:
            comps = [b for b in arms if b != a and (a, b, *sets[0]) in boot]
            if not comps:
                continue
            lines += [f"### `{a}` minus each other arm: velocity error difference", "",
                      "| scenario | split | " + " | ".join(f"vs {b}" for b in comps) + " |",
                      "|---|---|" + "---|" * len(comps)]
            for s, sp in sets:
                lines.append(f"| {s} | {sp} | " + " | ".join(cell(boot[(a, b, s, sp)]) for b in comps) + " |")
            lines.append("")
        others = [(a, b) for a, b in pairs if not a.startswith("pila")]
        if others:
            lines += ["### The other pairs", "", "| scenario | split | " + " | ".join(f"{a} - {b}" for a, b in others)
                      + " |", "|---|---|" + "---|" * len(others)]
            for s, sp in sets:
                lines.append(f"| {s} | {sp} | " + " | ".join(cell(boot[(a, b, s, sp)]) for a, b in others) + " |")
            lines.append("")
        # the paper's claim: pila below every plain arm and the fine-tune, for every seed, on bounce and collision
        comps = [b for b in ("plain", "plain_flops", "finetune") if b in arms]
        if "pila" in arms and {"plain", "finetune"} <= set(comps):
            lines += [f"### The claim: `pila` lower than {', '.join(f'`{b}`' for b in comps)}, the CI excluding zero "
                      f"for every seed", "", "| scenario | split | " + " | ".join(f"vs {b}" for b in comps)
                      + " | holds |", "|---|---|" + "---|" * (len(comps) + 1)]
            held = total = 0
            for s, sp in sets:
                if s == "uniform":
                    continue
                rs = [boot[("pila", b, s, sp)] for b in comps]
                ok = all(r["seeds_below"] == r["seeds"] for r in rs)
                held, total = held + ok, total + 1
                lines.append(f"| {s} | {sp} | " + " | ".join(cell(r) for r in rs) + f" | {'yes' if ok else 'no'} |")
            n_seeds = min(len(res[a]) for a in ["pila", *comps])
            lines += ["", f"The claim holds on {held} of {total} bounce/collision sets for all {n_seeds} seeds "
                      f"(velocity error with the undetected-step penalty).", ""]
        # per-frame plots, one per arm (seed 0)
        gen = np.arange(world.cond_frames, world.frames)
        for a in arms:
            fig, axes = plt.subplots(1, len(pw.SCENARIOS), figsize=(4 * len(pw.SCENARIOS), 3.2), sharey=True)
            for ax, s in zip(axes, pw.SCENARIOS):
                for sp in pw.splits_for(s):
                    if sp in ev["splits"]:
                        ax.plot(gen, res[a][0][f"{s}/{sp}/blob/pos_err"].mean(0).numpy(), label=sp)
                ax.plot(gen, baselines["constant_velocity"][0][f"{s}/id/blob/pos_err"].mean(0).numpy(), "k--",
                        label="const. velocity (id)")
                ax.set_title(s)
                ax.set_xlabel("frame")
            axes[0].set_ylabel("position error, px")
            axes[pw.SCENARIOS.index("bounce")].legend(fontsize=7)  # the scenario with every split
            fig.suptitle(f"{base} / {a} (seed 0): per-frame position error")
            fig.tight_layout()
            fig.savefig(out / f"per_frame_{base}_{a}.png", dpi=80)
            plt.close(fig)
            lines.append(f"![{a}](per_frame_{base}_{a}.png)")
        lines.append("")
        # filmstrips: ground truth and every arm (seed 0), the first eval clips of each scenario (id)
        for s in pw.SCENARIOS:
            gt = pw.make_clips(s, ev["film"], seed=ev["seed"], split="id", cfg=world).video
            rows = [("ground truth", gt)] + [(a, res[a][0][f"{s}/film"].float()) for a in arms]
            n = min(ev["film"], gt.shape[0])
            fig, axes = plt.subplots(len(rows) * n, 1, figsize=(world.frames * 0.6, len(rows) * n * 0.7))
            axes = np.atleast_1d(axes)
            for i in range(n):
                for j, (label, vid) in enumerate(rows):
                    strip = ((vid[i].clamp(-1, 1) + 1) / 2).permute(2, 1, 3, 0)  # [H, T, W, 3]
                    strip = strip.reshape(world.size, -1, 3).numpy()
                    ax = axes[i * len(rows) + j]
                    ax.imshow(strip, interpolation="nearest")
                    ax.set_yticks([])
                    ax.set_xticks([])
                    ax.set_ylabel(label, rotation=0, ha="right", fontsize=7)
            fig.tight_layout()
            fig.savefig(out / f"filmstrip_{base}_{s}.png", dpi=80)
            plt.close(fig)
            lines.append(f"![{s}](filmstrip_{base}_{s}.png)")
        lines.append("")
    (out / "pairs.csv").write_text("\n".join(csv) + "\n")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def pack_state(out: Path, prefix: Path, *, part_mib: int = 15) -> list[Path]:
    """What a later call on a fresh machine needs to continue, as a tar.gz split into <= part_mib MiB parts
    `<prefix>.partNN` (the device tool returns few, small files): everything under `out` except the trajectory
    pool (regenerated from the seed) and the weights of arms whose evaluation is written. Unpack with
    `cat <prefix>.part* | tar xzf - -C <out's parent>`."""
    import io
    import tarfile

    evaluated = {p.stem for p in (out / "eval").glob("*.safetensors")}

    def keep(rel: Path) -> bool:
        if rel.name == "pool.safetensors":
            return False
        parts = rel.parts  # phases/<base>/<arm>/s<k>/...: an evaluated seed's weights are dropped
        return not (parts[0] == "phases" and len(parts) >= 4 and parts[2] != "base"
                    and f"{parts[1]}__{parts[2]}__{parts[3]}" in evaluated)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(out.rglob("*")):
            if f.is_file() and keep(f.relative_to(out)):
                tar.add(f, arcname=str(Path(out.name) / f.relative_to(out)))
    data, size = buf.getvalue(), part_mib * 2**20
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, max(1, len(data)), size):
        paths.append(prefix.with_name(f"{prefix.name}.part{i // size:02d}"))
        paths[-1].write_bytes(data[i:i + size])
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="smoke", help="smoke | full | a JSON path (merged over the defaults)")
    ap.add_argument("--out", default="runs/physworld", help="output folder; the config name is appended")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds; stop cleanly (PAUSED) after this and re-run the same command to continue")
    ap.add_argument("--device", default=None, help="cpu | cuda | auto (default: the config's)")
    ap.add_argument("--stop-after", type=int, default=None, help="pause after this many training steps (debugging)")
    ap.add_argument("--estimate", action="store_true",
                    help="print the FLOP estimate per phase (and the time it needs on an H200) and exit")
    ap.add_argument("--pack", default=None, metavar="PREFIX",
                    help="afterwards, write the resumable state as PREFIX.partNN (tar.gz, <= 15 MiB each) and copy "
                         "report.md beside it, e.g. --pack $OUT/state on the device machine")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.device:
        cfg["device"] = args.device
    out = Path(args.out) / cfg["name"]
    print("\n".join(flop_estimate_lines(cfg)), flush=True)
    if args.estimate:
        return 0
    t0 = time.monotonic()
    status = "DONE"
    try:
        Run(cfg, out, time_budget=args.time_budget, stop_after=args.stop_after).run()
    except OutOfTime:
        status = "PAUSED"
        write_report(out, cfg, world_config(cfg))  # what is evaluated so far (the base's sanity line first)
    if args.pack:
        prefix = Path(args.pack)
        parts = pack_state(out, prefix)
        if (out / "report.md").is_file():
            (prefix.parent / "report.md").write_text((out / "report.md").read_text())
        print(f"packed {len(parts)} part(s): {', '.join(p.name for p in parts)}")
    if status == "PAUSED":
        print(f"PAUSED after {time.monotonic() - t0:.0f} s: re-run the same command to continue ({out})")
    else:
        print(f"DONE in {time.monotonic() - t0:.0f} s: report at {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
