"""Cost of one PILA adapter call against one Wan 2.1 1.3B forward (docs/method.md §3-6, §8; paper Table 14).

    python -m pila.bench                                  # FLOPs at full size (meta tensors) + CPU timings
    python -m pila.bench --device cuda --dtype bf16       # timings at full size on a GPU
    python -m pila.bench --size 3,16,16 --ks 0,1,2,4,8    # other timing size / expert counts

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on meta tensors (nothing is allocated): the
adapter at Wan 2.1 1.3B's real size (batch 2 for CFG, latent 16 x 21 x 60 x 104, i.e. 81 x 480 x 832 pixels)
and diffusers' WanTransformer3DModel with the 1.3B config on the same batch (text length 512). The counter sees
matmuls and convolutions (and attention, which the meta device runs as bmm); elementwise work (norms,
activations, finite differences) is not counted on either side. Routing is data-dependent, which meta tensors
cannot evaluate, so the adapter's count is `(call with k = 0) + k * (one expert on the whole batch)`: with top-k
routing every sample runs exactly k experts, so this is exact for the convolutions.

The last lines are `name: value` pairs for scripts.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .adapter import PILAAdapter
from .config import PILAConfig

WAN_SIZE = (21, 60, 104)  # latent T, H, W of 81 x 480 x 832
WAN_13B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
               out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
               eps=1e-6, rope_max_seq_len=1024)
TEXT_LEN = 512
BATCH = 2  # CFG: cond + uncond


def _count(fn) -> tuple[int, dict[str, int]]:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def adapter_flops(config: PILAConfig, *, k: int, size=WAN_SIZE, batch: int = BATCH) -> tuple[int, dict[str, int]]:
    """FLOPs of one adapter call with k experts per sample, on meta tensors. Returns (total, breakdown)."""
    with torch.device("meta"):
        a = PILAAdapter(config)
        x = torch.empty(batch, config.latent_channels, *size)
        v = torch.empty_like(x)
        text = torch.empty(batch, TEXT_LEN, config.text_dim)
        labels = torch.empty(batch, config.num_categories)
        sigma = torch.empty(batch)
    base, per_module = _count(lambda: a(x, sigma, v, text, labels=labels, top_k=0))
    # one expert on every sample of the batch: what each of the k routed expert slots costs in total
    h = torch.empty(batch, config.hidden, *size, device="meta")
    c = torch.empty(batch, config.hidden, device="meta")
    bank = torch.empty(batch, 32, *size, device="meta")
    expert, _ = _count(lambda: a.experts.experts[0](h, c, bank))
    parts = {
        "encoder (E + sigma MLP)": per_module.get("PILAAdapter.encoder", 0),
        "scaffold head": per_module.get("PILAAdapter.scaffold", 0),
        "AFE (u_head + constructors)": per_module.get("PILAAdapter.afe", 0),
        "condition + router": per_module.get("PILAAdapter.condition", 0) + per_module.get("PILAAdapter.router", 0),
        f"experts ({k} per sample)": k * expert,
        "decoder": per_module.get("PILAAdapter.decoder", 0),
    }
    return base + k * expert, parts


def wan_flops(*, size=WAN_SIZE, batch: int = BATCH) -> tuple[int, int]:
    """(FLOPs, parameters) of one WanTransformer3DModel (1.3B config) forward, on meta tensors."""
    try:
        from .compat import ensure_torchvision_importable  # diffusers imports torchvision

        ensure_torchvision_importable()
    except ImportError:
        pass
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        wan = WanTransformer3DModel(**WAN_13B)
        x = torch.empty(batch, 16, *size)
        t = torch.empty(batch)
        text = torch.empty(batch, TEXT_LEN, 4096)
    total, _ = _count(lambda: wan(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False))
    return total, sum(p.numel() for p in wan.parameters())


def time_adapter(adapter: PILAAdapter, *, ks, size, batch: int = BATCH, repeats: int = 3) -> dict[int, float]:
    """{k: wall time (ms) of one adapter call with k experts per sample} (inference, no grad).

    The ks are interleaved round by round and each keeps its fastest round, so load from other processes on a
    shared machine inflates all of them alike instead of one k at random."""
    cfg = adapter.config
    dev, dtype = adapter.device, adapter.dtype
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, cfg.latent_channels, *size, generator=g).to(dev, dtype)
    v = torch.randn(x.shape, generator=g).to(dev, dtype)
    text = torch.randn(1, 16, cfg.text_dim, generator=g).to(dev, dtype)
    labels = torch.zeros(cfg.num_categories, device=dev)
    labels[:2] = 1
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times: dict[int, list[float]] = {k: [] for k in ks}
    with torch.no_grad():
        adapter(x, 0.5, v, text, labels=labels, top_k=max(ks))  # warm-up
        for _ in range(repeats):
            for k in ks:
                sync()
                t0 = time.perf_counter()
                adapter(x, 0.5, v, text, labels=labels, top_k=k)
                sync()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: min(t) for k, t in times.items()}


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="device for the timings (cpu, cuda)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--size", default=None, help="latent T,H,W for the timings (default 3,16,16 on cpu, 21,60,104 else)")
    p.add_argument("--ks", default="0,1,2,4,8", help="expert counts to time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, default=PILAConfig.hidden)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for the timings (1 keeps them steady on a shared machine; 0 = torch's default)")
    p.add_argument("--no-wan", action="store_true", help="skip the Wan forward count (needs diffusers)")
    args = p.parse_args(argv)

    config = PILAConfig(hidden=args.hidden)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = torch.device(args.device)
    default_size = (3, 16, 16) if device.type == "cpu" else WAN_SIZE
    size = tuple(int(s) for s in args.size.split(",")) if args.size else default_size
    ks = [int(k) for k in args.ks.split(",")]
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    adapter = PILAAdapter(config).to(device=device, dtype=dtype).eval()
    params = sum(p.numel() for p in adapter.parameters())
    results: dict[str, float] = {"params": params}
    print(f"PILA adapter: {params:,} parameters (hidden {config.hidden}, {config.latent_channels} latent channels)")
    by_group = {name: sum(p.numel() for p in ps) for name, ps in adapter.param_groups().items()}
    print("  " + ", ".join(f"{n} {c:,}" for n, c in by_group.items()))

    T, H, W = WAN_SIZE
    print(f"\nFLOPs per call, batch {BATCH} x 16 x {T} x {H} x {W} (Wan 2.1, 81 x 480 x 832), meta tensors:")
    total4, parts = adapter_flops(config, k=4)
    for name, f in parts.items():
        print(f"  {name:<30} {f / 1e9:10.1f} GFLOPs ({100 * f / total4:4.1f} %)")
    print(f"  {'adapter, k = 4':<30} {total4 / 1e9:10.1f} GFLOPs")
    results["adapter_gflops"] = total4 / 1e9
    for k in (0, 1, 8):
        results[f"adapter_gflops_k{k}"] = adapter_flops(config, k=k)[0] / 1e9
    results["flop_ratio_k8_k1"] = results["adapter_gflops_k8"] / results["adapter_gflops_k1"]
    print(f"  k = 8 vs k = 1, adapter FLOPs (not time): {results['flop_ratio_k8_k1']:.2f}x "
          f"(each expert is one residual block, the base (encoder + decoder) five)")
    wan = None
    if not args.no_wan:
        try:
            wan, wan_params = wan_flops()
        except Exception as e:  # diffusers missing or too old: report it and keep the adapter's numbers
            print(f"  Wan 2.1 1.3B forward: not counted ({type(e).__name__}: {e}); pip install 'diffusers>=0.33'")
    if wan is not None:
        results["wan_gflops"] = wan / 1e9
        results["flop_ratio"] = total4 / wan
        print(f"  {'Wan 2.1 1.3B forward':<30} {wan / 1e9:10.1f} GFLOPs ({wan_params / 1e9:.2f} B parameters, "
              f"text length {TEXT_LEN})")
        print(f"  ratio adapter / Wan = {100 * total4 / wan:.3f} % (target <= 1 %); "
              f"k = 8: {100 * results['adapter_gflops_k8'] * 1e9 / wan:.3f} %")
        k1, k8 = results["adapter_gflops_k1"] * 1e9, results["adapter_gflops_k8"] * 1e9
        results["call_flop_ratio_k8_k1"] = (wan + k8) / (wan + k1)
        print(f"  k = 8 vs k = 1, whole model call (Wan + adapter): {results['call_flop_ratio_k8_k1']:.4f}x")

    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"\nwall time per call on {device} ({args.dtype}{threads}), batch {BATCH} x {config.latent_channels} x "
          f"{' x '.join(map(str, size))}, best of {args.repeats} interleaved rounds:")
    for k, ms in time_adapter(adapter, ks=ks, size=size, repeats=args.repeats).items():
        results[f"{device.type}_ms_k{k}"] = ms
        print(f"  k = {k}: {ms:9.1f} ms")
    if 1 in ks and 8 in ks:
        results["time_ratio_k8_k1"] = results[f"{device.type}_ms_k8"] / results[f"{device.type}_ms_k1"]
        print(f"  k = 8 / k = 1, measured adapter time: {results['time_ratio_k8_k1']:.2f}x (target well under 2x)")

    print()
    for name, value in results.items():
        print(f"{name}: {value:.6g}" if isinstance(value, float) else f"{name}: {value}")
    return results


if __name__ == "__main__":
    main()
