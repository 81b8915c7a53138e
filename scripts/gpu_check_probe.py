"""Probes of the distributed path for the GPU check, launched with `torchrun --nproc_per_node=1`.

    torchrun --standalone --nproc_per_node=1 scripts/gpu_check_probe.py nccl   # process group, all_reduce, DDP step
    torchrun --standalone --nproc_per_node=1 scripts/gpu_check_probe.py fsdp   # FSDP2 fully_shard, bf16 stage C step

Each prints one JSON line. NCCL on a GPU, gloo on a CPU.
"""
from __future__ import annotations

import json
import sys
import time

import torch
import torch.distributed as dist

import training  # noqa: F401  (torchvision shim)
from pila import PILAAdapter, PILAConfig
from training import train as T


def _setup():
    """-> (device, whether the trainer's own init_distributed joined a process group under torchrun)."""
    T.init_distributed()
    joined = dist.is_initialized()
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if not joined:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dev, joined


def _batch(dev, t=3, h=8, w=8, text_dim=32):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(dev)  # noqa: E731
    x0 = r(1, 16, t, h, w)
    noise = r(1, 16, t, h, w)
    batch = {"phys": r(1, 6, text_dim), "phys_mask": torch.ones(1, 6, dtype=torch.bool, device=dev),
             "labels": torch.tensor([[1.0, 0, 1, 0, 0, 1, 0, 0]], device=dev), "flow": 0.3 * r(1, 2, t, h, w),
             "jac": 0.05 * r(1, 4, t, h, w), "conf": torch.rand(1, 1, t, h, w, generator=g).to(dev), "target": noise - x0}
    sigma = torch.tensor([0.3], device=dev)
    return 0.7 * x0 + 0.3 * noise, sigma, r(1, 16, t, h, w), batch


def _stage_c_step(module, params, dev) -> float:
    x_t, sigma, v, batch = _batch(dev)
    cfg = T.TrainConfig(hidden=16, text_dim=32)
    opt = torch.optim.AdamW(params, lr=1e-4)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        loss, _ = module("C", x_t, sigma, v, batch, T.stage_knobs("C", 2000, cfg))
    loss.backward()
    opt.step()
    return float(loss)


def nccl(dev) -> dict:
    x = torch.full((4,), float(dist.get_rank() + 1), device=dev)
    dist.all_reduce(x)
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.manual_seed(0)
    model = T.StageModel(PILAAdapter(PILAConfig(hidden=16, text_dim=32))).to(dev)
    ddp = DDP(model, device_ids=[0] if dev.type == "cuda" else None)
    t0 = time.perf_counter()
    loss = _stage_c_step(ddp, list(model.parameters()), dev)
    return {"backend": dist.get_backend(), "world": dist.get_world_size(), "all_reduce_ok": bool((x == 1).all()),
            "ddp_bf16_step_loss": loss, "ddp_step_s": time.perf_counter() - t0}


def fsdp(dev) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    torch.manual_seed(0)
    model = T.StageModel(PILAAdapter(PILAConfig(hidden=16, text_dim=32))).to(dev)
    fully_shard(model, mesh=init_device_mesh(dev.type, (1,)), ignored_params=set(model.adapter.csrc.parameters()))
    sharded = sum(isinstance(p, DTensor) for p in model.parameters())
    loss = _stage_c_step(model, list(model.parameters()), dev)
    # the trainer's own wrap at world size 1: does --strategy fsdp shard there?
    m2 = T.StageModel(PILAAdapter(PILAConfig(hidden=16, text_dim=32))).to(dev)
    cfg = T.TrainConfig(hidden=16, text_dim=32, strategy="fsdp")
    module, _, _ = T.wrap(m2, lambda: [{"params": [p for p in m2.parameters() if p.requires_grad]}], cfg, T.init_distributed())
    return {"backend": dist.get_backend(), "fully_shard_params_dtensor": sharded, "params": len(list(model.parameters())),
            "fsdp2_bf16_step_loss": loss, "finite": loss == loss and abs(loss) < float("inf"),
            "trainer_wrap_shards_at_world_1": any(isinstance(p, DTensor) for p in module.parameters())}


if __name__ == "__main__":
    what = sys.argv[1]
    dev, joined = _setup()
    try:
        r = {"nccl": nccl, "fsdp": fsdp}[what](dev)
        print(json.dumps({"probe": what, **r, "trainer_joins_process_group_at_world_1": joined}), flush=True)
    finally:
        dist.destroy_process_group()
