"""Adapter training step: time, peak memory and the frozen backbone's share (random weights, no download).

    python -m training.bench --device cuda                           # 81 x 480 x 832, Wan 2.1 1.3B config, bf16
    python -m training.bench --device cpu --size 17x64x64 --layers 2  # a reduced size that runs on a CPU

One step = the frozen Wan forward (no_grad) + the adapter's stage forward, backward, clip and AdamW step, batch 1.
Prints one JSON line per stage with mean/median milliseconds over `--steps` timed steps after `--warmup`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import training  # noqa: F401

from . import train as T
from .wan import FrozenWan, cast_wan, tiny_wan_config, wan_config


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def build(args, dev: torch.device):
    from diffusers import WanTransformer3DModel
    cfg = wan_config(args.wan_config) if args.layers <= 0 else dict(wan_config(args.wan_config), num_layers=args.layers)
    if args.tiny:
        cfg = tiny_wan_config(text_dim=args.text_dim)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with torch.device(dev):  # initialise on the device: 1.3B random weights in seconds on a GPU
        model = WanTransformer3DModel.from_config(cfg)
    return FrozenWan(cast_wan(model, dtype).to(dev)), cfg


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="81x480x832", help="pixel frames x height x width (latents: (F-1)/4+1, H/8, W/8)")
    p.add_argument("--wan-config", default="1.3b")
    p.add_argument("--layers", type=int, default=0, help="override the backbone depth (0 = the config's)")
    p.add_argument("--tiny", action="store_true", help="the tiny test Wan instead of the real config")
    p.add_argument("--text-dim", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--stages", default="AC")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    F_, H, W = (int(x) for x in args.size.lower().split("x"))
    t, h, w = (F_ - 1) // 4 + 1, H // 8, W // 8
    torch.manual_seed(0)
    wan, wcfg = build(args, dev)
    text_dim = wcfg["text_dim"]
    cfg = T.TrainConfig(hidden=args.hidden, text_dim=text_dim, precision=args.dtype)
    bf16 = args.dtype == "bf16" and dev.type == "cuda"
    x0 = torch.randn(1, 16, t, h, w, device=dev)
    batch = {"latents": x0, "text": torch.randn(1, 512, text_dim, device=dev), "phys": torch.randn(1, 40, text_dim, device=dev),
             "phys_mask": torch.ones(1, 40, dtype=torch.bool, device=dev),
             "labels": torch.tensor([[1, 0, 1, 0, 0, 1, 0, 0]], dtype=torch.float32, device=dev),
             "flow": torch.randn(1, 2, t, h, w, device=dev) * 0.3, "jac": torch.randn(1, 4, t, h, w, device=dev) * 0.05,
             "conf": torch.rand(1, 1, t, h, w, device=dev)}
    results = []
    for stage in args.stages:
        adapter = T.new_adapter(cfg).to(dev)
        groups = adapter.param_groups()
        for p_ in adapter.parameters():
            p_.requires_grad_(False)
        params = [p_ for n in T.STAGE_TRAINS[stage] for p_ in groups[n]]
        for p_ in params:
            p_.requires_grad_(True)
        model = T.StageModel(adapter)
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
        knobs = T._knobs(stage, {"A": 0, "B": 4600, "C": 2000}[stage], cfg)  # C: every warm-up done
        times, back = [], []
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(args.warmup + args.steps):
            sigma = torch.tensor([0.3], device=dev)
            noise = torch.randn_like(x0)
            x_t = 0.7 * x0 + 0.3 * noise
            batch["target"] = noise - x0
            _sync(dev)
            t0 = time.perf_counter()
            v = wan(x_t, sigma, batch["text"])
            _sync(dev)
            t1 = time.perf_counter()
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.enable_grad()
            with ctx:
                loss, _ = model(stage, x_t, sigma, v, batch, knobs)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(dev)
            t2 = time.perf_counter()
            if i >= args.warmup:
                times.append(t2 - t0)
                back.append(t1 - t0)
        r = {"stage": stage, "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
             "size": f"{F_}x{H}x{W}", "latents": [16, t, h, w], "backbone": f"{args.wan_config}" + (f" ({args.layers} layers)" if args.layers else "") if not args.tiny else "tiny",
             "dtype": args.dtype, "step_ms_mean": 1000 * statistics.mean(times), "step_ms_median": 1000 * statistics.median(times),
             "backbone_ms_median": 1000 * statistics.median(back),
             "backbone_share": statistics.median(back) / statistics.median(times),
             "adapter_params": sum(p_.numel() for p_ in adapter.parameters()), "trainable": sum(p_.numel() for p_ in params)}
        if dev.type == "cuda":
            r["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
        results.append(r)
        print(json.dumps(r), flush=True)
        del model, adapter, opt


if __name__ == "__main__":
    main()
