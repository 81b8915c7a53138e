"""One process, DDP, FSDP2 or DeepSpeed ZeRO-2: process setup, wrapping and the few collectives the loop needs."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import TrainConfig
from .stages import StageModel


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: bool = False  # a process group exists (any torchrun launch, one rank included)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # torchrun sets RANK even for one process: join a group then too, so one GPU exercises NCCL, DDP and FSDP2
    if world <= 1 and "RANK" not in os.environ:
        dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return Dist(device=dev)
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=dev, group=True)


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()


def wrap(model: StageModel, make_groups, cfg: TrainConfig, d: Dist):
    """-> (module to call, optimizer, engine or None); `make_groups()` gives the AdamW groups after wrapping."""
    if cfg.strategy == "deepspeed":
        try:
            import deepspeed
        except ImportError:
            raise SystemExit("strategy 'deepspeed' needs DeepSpeed: pip install deepspeed (or use --strategy ddp / fsdp)") from None
        ds_cfg = {
            "train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            # bf16 is torch autocast around the forward, as for DDP / FSDP2: the engine keeps fp32 weights, gradients
            # and optimizer state (its own "bf16" mode would run the adapter's weights and gradients in bf16)
            "gradient_clipping": cfg.grad_clip, "bf16": {"enabled": False},
            "zero_optimization": {"stage": 2, **({"offload_optimizer": {"device": "cpu", "pin_memory": True}}
                                                 if cfg.deepspeed_offload else {})},
            "zero_force_ds_cpu_optimizer": False, "steps_per_print": 10 ** 9,
        }
        opt = torch.optim.AdamW(make_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)
        return engine, opt, engine
    if d.group and cfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        module = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    elif d.group and cfg.strategy == "fsdp":
        # FSDP2, one unit at the root: every parameter is gathered for the whole stage forward (so the experts
        # nobody on this rank selected still match the other ranks' collectives). The CSRC constants are scalars,
        # which fully_shard cannot shard: they stay replicated and their gradients are averaged by hand.
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh(d.device.type, (d.world,))
        fully_shard(model, mesh=mesh, ignored_params=set(model.adapter.csrc.parameters()))
        module = model
    else:
        module = model
    opt = torch.optim.AdamW(make_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return module, opt, None


def _use_bf16(cfg: TrainConfig, d: Dist) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and d.device.type == "cuda")


def _is_dist() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def _full(t):
    """A DTensor shard (FSDP2) -> the full tensor (a collective: every rank calls it in the same order)."""
    from torch.distributed.tensor import DTensor
    return t.full_tensor() if isinstance(t, DTensor) else t


def _full_state(model: StageModel, opt, cfg: TrainConfig, engine) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state on every rank; plain tensors for DDP / one process."""
    m = model.module if hasattr(model, "module") else model
    sd = {k: _full(v) for k, v in m.state_dict().items()}
    if opt is None:
        return sd, {}
    osd = opt.state_dict()
    state = {pid: {k: _full(v) if torch.is_tensor(v) else v for k, v in st.items()} for pid, st in osd["state"].items()}
    return sd, {"state": state, "param_groups": osd["param_groups"]}


def _average_replicated_grads(params, d: Dist) -> None:
    import torch.distributed as dist
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= d.world


def _reduce_logs(logs: dict[str, float], d: Dist) -> dict[str, float]:
    if d.world <= 1:
        return logs
    import torch.distributed as dist
    keys = sorted(logs)
    # ranks may log different keys (per-category CSRC terms): gather the names first
    all_keys: list = [None] * d.world
    dist.all_gather_object(all_keys, keys)
    union = sorted(set().union(*all_keys))
    vals = torch.tensor([logs.get(k, 0.0) for k in union], dtype=torch.float64, device=d.device)
    cnt = torch.tensor([1.0 if k in logs else 0.0 for k in union], dtype=torch.float64, device=d.device)
    dist.all_reduce(vals)
    dist.all_reduce(cnt)
    return {k: float(v / max(c, 1)) for k, v, c in zip(union, vals.tolist(), cnt.tolist())}


def checksum(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
