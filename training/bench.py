"""Planning figures for adapter training, and the measured step on a GPU (random weights, no download).

    python -m training.bench                       # any device: FLOPs and memory estimate per stage, 81x480x832, Wan 2.1 1.3B
    python -m training.bench --device cuda         # + measured bf16 step time, peak memory, the backbone's share
    python -m training.bench --device cpu --measure --size 17x64x64 --layers 2   # a measured step a CPU can run
    python -m training.bench --wan-forward --batch 2   # time one Wan forward (what pila.bench's adapter ms compare to)

One training step = the frozen Wan forward (no_grad) + the adapter's stage forward, backward, clip and AdamW step,
batch 1 (docs/method.md §7).

Planning figures (no allocation: every tensor is on the meta device):
- FLOPs: torch.utils.flop_counter.FlopCounterMode over the backbone forward and the stage's forward + backward
  (matmuls, convolutions, attention; elementwise work is not counted). Attention is counted as the fused kernel a
  GPU runs (`_scaled_dot_product_efficient_attention`). Routing is data-dependent and meta tensors hold no data,
  so the estimate fixes it: every sample selects the first `top_k` experts (with top-k routing every sample runs
  exactly k experts, so the convolution count is exact) and every selected expert counts as labelled.
- Memory: a dispatch mode follows every tensor the step creates (each storage counted once, released when its last
  reference dies) and records the peak of the live bytes: the activations autograd saves for backward, the
  gradients, and the transient tensors of the no_grad backbone forward. The meta device has no autocast, so under
  bf16 the adapter is built in bf16 for this count (its activations at 2 bytes, as autocast runs its convolutions);
  the static part is added analytically: backbone weights (bf16, diffusers' fp32 modules in fp32), adapter fp32
  master weights, AdamW's two fp32 moments of the trained parameters. The estimate is checked against the measured
  peak in the GPU check (`scripts/gpu_check.sh`).

Prints one JSON line per stage and result kind (`"kind": "plan"` or `"kind": "measured"`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import weakref
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import training  # noqa: F401  (torchvision shim before diffusers)

from pila import PILAAdapter, PILAConfig

from . import train as T
from .wan import FrozenWan, cast_wan, tiny_wan_config, wan_config

STAGE_STEP = {"A": 0, "B": 4600, "C": 2000}  # the step each stage is measured at: B with every phase on, C past its warm-ups
PHYS_LEN = 40  # physics-description tokens (a typical WISA phys_law)


def latent_size(size: str) -> tuple[int, int, int, int]:
    """'81x480x832' -> (frames, H, W) pixels and the latent (T, H/8, W/8): returns (F, H, W, T)."""
    try:
        F_, H, W = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be FRAMESxHEIGHTxWIDTH in pixels, e.g. 81x480x832, got {size!r}") from None
    if (F_ - 1) % 4 or H % 16 or W % 16:
        raise SystemExit(f"--size {size}: frames must be 4k + 1 and height, width multiples of 16 (Wan's VAE and patches)")
    return F_, H, W, (F_ - 1) // 4 + 1


# --------------------------------------------------------------------------------------------- meta-device tools

class _MetaStandIns(TorchFunctionMode):
    """On meta tensors: attention as the fused GPU kernel, and fixed answers where the step reads data
    (`tolist`, `bool`: which experts were selected / labelled): the first `top_k` experts for every sample."""

    def __init__(self, top_k: int):
        super().__init__()
        self.top_k = top_k

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
            a = {**dict(zip(names, args)), **kwargs}
            if a["query"].is_meta:
                assert a.get("attn_mask") is None and not a.get("is_causal"), "the planner assumes unmasked attention"
                return torch.ops.aten._scaled_dot_product_efficient_attention(
                    a["query"], a["key"], a["value"], None, a["query"].requires_grad, scale=a.get("scale"))[0]
        name = getattr(func, "__name__", "")
        if name == "tolist" and args[0].is_meta:
            t = args[0]
            if t.dtype == torch.bool:  # [B, 8] chosen experts
                return torch.arange(t.shape[-1]).lt(self.top_k).expand(t.shape).tolist()
            return (torch.arange(t.numel()) % max(1, self.top_k)).view(t.shape).tolist()  # selected indices
        if name == "__bool__" and args[0].is_meta:
            return True
        return func(*args, **kwargs)


@contextmanager
def _meta_step():
    """The meta device has no autocast: `torch.autocast("meta", ...)` (the step's fp32 regions) becomes a no-op;
    boolean-mask indexing keeps every element (every selected expert counts as labelled)."""
    real = torch.autocast

    def autocast(device_type, *args, **kwargs):
        return nullcontext() if device_type == "meta" else real(device_type, *args, **kwargs)

    from torch.fx.experimental import _config as fx_config
    torch.autocast = autocast
    try:
        # boolean masks: every element selected (older torch has no such switch; its meta nonzero may then refuse)
        with (fx_config.patch(meta_nonzero_assume_all_nonzero=True) if hasattr(fx_config, "meta_nonzero_assume_all_nonzero")
              else nullcontext()):
            yield
    finally:
        torch.autocast = real


class LivePeak(TorchDispatchMode):
    """Peak bytes of the tensors created while active (each storage once, freed when its last reference dies)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()
        self._outside: set[int] = set()

    def _release(self, key: int, n: int) -> None:
        self._seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in torch.utils._pytree.tree_leaves((args, kwargs)):  # weights, inputs: made before, never counted
            if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in self._seen:
                self._outside.add(t.untyped_storage()._cdata)
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = st._cdata
                if key not in self._seen and key not in self._outside:
                    self._seen.add(key)
                    n = st.nbytes()
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(st, self._release, key, n)
        return out


def _nbytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def plan_stage(stage: str, *, wan: str | dict = "1.3b", size: str = "81x480x832", hidden: int = 128, top_k: int = 4,
               batch: int = 1, text_len: int = 512, dtype: str = "bf16") -> dict:
    """FLOPs and a memory estimate of one training step of `stage`, on meta tensors (module docstring)."""
    from diffusers import WanTransformer3DModel
    F_, H, W, t = latent_size(size)
    h, w = H // 8, W // 8
    wcfg = wan_config(wan)
    bf16 = dtype == "bf16"
    cdt = torch.bfloat16 if bf16 else torch.float32
    cfg = T.TrainConfig(hidden=hidden, text_dim=wcfg["text_dim"], top_k=top_k, precision=dtype)
    with torch.device("meta"):
        backbone = FrozenWan(cast_wan(WanTransformer3DModel.from_config(wcfg), cdt), compute_dtype=cdt)
        adapter = PILAAdapter(PILAConfig(hidden=hidden, text_dim=wcfg["text_dim"], top_k=top_k))
    adapter_fp32 = _nbytes(adapter.parameters())
    adapter.to(cdt)  # stands in for autocast (module docstring)
    trained = T.freeze_for_stage(adapter, stage)
    model = T.StageModel(adapter)
    knobs = T.stage_knobs(stage, STAGE_STEP[stage], cfg)
    with torch.device("meta"):
        x_t = torch.empty(batch, 16, t, h, w)
        batch_d = {"text": torch.empty(batch, text_len, wcfg["text_dim"]), "phys": torch.empty(batch, PHYS_LEN, wcfg["text_dim"]),
                   "phys_mask": torch.ones(batch, PHYS_LEN, dtype=torch.bool), "labels": torch.empty(batch, 8),
                   "flow": torch.empty(batch, 2, t, h, w), "jac": torch.empty(batch, 4, t, h, w),
                   "conf": torch.empty(batch, 1, t, h, w), "target": torch.empty(batch, 16, t, h, w)}
        sigma = torch.empty(batch)
    counter, peak_wan, peak_step = FlopCounterMode(display=False), LivePeak(), LivePeak()
    with _meta_step(), _MetaStandIns(top_k), counter:
        with peak_wan:
            v = backbone(x_t, sigma, batch_d["text"])
        backbone_flops = counter.get_total_flops()
        with peak_step:
            loss, _ = model(stage, x_t, sigma, v, batch_d, knobs)
            loss.backward()
    peak = max(peak_wan.peak, peak_step.peak)
    wan_bytes = _nbytes(backbone.parameters())
    n_trained = sum(p.numel() for p in trained)
    static = wan_bytes + adapter_fp32 + 2 * 4 * n_trained  # + AdamW exp_avg, exp_avg_sq (fp32)
    total = counter.get_total_flops()
    return {"kind": "plan", "stage": stage, "size": f"{F_}x{H}x{W}", "latents": [16, t, h, w], "batch": batch,
            "backbone": wan if isinstance(wan, str) else f"custom ({wcfg['num_layers']} layers, {wcfg['num_attention_heads']} heads)", "dtype": dtype, "top_k": top_k,
            "step_tflops": total / 1e12, "backbone_fwd_tflops": backbone_flops / 1e12,
            "adapter_fwd_bwd_tflops": (total - backbone_flops) / 1e12, "backbone_flop_share": backbone_flops / total,
            "static_gib": static / 2 ** 30, "backbone_weights_gib": wan_bytes / 2 ** 30,
            "backbone_fwd_peak_gib": peak_wan.peak / 2 ** 30, "adapter_step_peak_gib": peak_step.peak / 2 ** 30,
            "est_peak_gib": (static + peak) / 2 ** 30,
            "trainable": n_trained, "adapter_params": sum(p.numel() for p in adapter.parameters())}


# --------------------------------------------------------------------------------------------- measured step

def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def build_backbone(args, dev: torch.device):
    from diffusers import WanTransformer3DModel
    cfg = tiny_wan_config(text_dim=args.text_dim) if args.tiny else wan_config(args.wan_config)
    if args.layers > 0 and not args.tiny:
        cfg = dict(cfg, num_layers=args.layers)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with torch.device(dev):  # initialise on the device: 1.3B random weights in seconds on a GPU
        model = WanTransformer3DModel.from_config(cfg)
    return FrozenWan(cast_wan(model, dtype).to(dev)), cfg


def _oom_hint(stage: str, size: str) -> str:
    return (f"out of memory in stage {stage} at {size}: reduce --size (fewer frames or pixels), --hidden, or --layers; "
            "training itself: a smaller clip size in the cache, or --strategy fsdp / deepspeed to shard the adapter")


def measure_stage(stage: str, wan: FrozenWan, args, dev: torch.device) -> dict:
    """Time `args.steps` training steps of `stage` after `args.warmup`; the backbone's share and (CUDA) peak memory."""
    F_, H, W, t = latent_size(args.size)
    h, w = H // 8, W // 8
    text_dim = wan.text_dim
    cfg = T.TrainConfig(hidden=args.hidden, text_dim=text_dim, precision=args.dtype)
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g).to(dev)  # noqa: E731
    x0 = rnd(1, 16, t, h, w)
    batch = {"text": rnd(1, args.text_len, text_dim), "phys": rnd(1, PHYS_LEN, text_dim),
             "phys_mask": torch.ones(1, PHYS_LEN, dtype=torch.bool, device=dev),
             "labels": torch.tensor([[1, 0, 1, 0, 0, 1, 0, 0]], dtype=torch.float32, device=dev),
             "flow": rnd(1, 2, t, h, w) * 0.3, "jac": rnd(1, 4, t, h, w) * 0.05, "conf": torch.rand(1, 1, t, h, w, generator=g).to(dev)}
    adapter = T.new_adapter(cfg).to(dev)
    params = T.freeze_for_stage(adapter, stage)
    model = T.StageModel(adapter)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    knobs = T.stage_knobs(stage, STAGE_STEP[stage], cfg)
    amp = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else nullcontext
    times, back = [], []
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        for i in range(args.warmup + args.steps):
            sigma = torch.tensor([0.3], device=dev)
            noise = rnd(*x0.shape)
            x_t = 0.7 * x0 + 0.3 * noise
            batch["target"] = noise - x0
            _sync(dev)
            t0 = time.perf_counter()
            v = wan(x_t, sigma, batch["text"])
            _sync(dev)
            t1 = time.perf_counter()
            with amp():
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
    except torch.cuda.OutOfMemoryError:
        raise SystemExit(_oom_hint(stage, args.size)) from None
    r = {"kind": "measured", "stage": stage, "device": str(dev),
         "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "size": f"{F_}x{H}x{W}",
         "latents": [16, t, h, w], "dtype": args.dtype,
         "backbone": "tiny" if args.tiny else args.wan_config + (f" ({args.layers} layers)" if args.layers > 0 else ""),
         "step_ms_mean": 1000 * statistics.mean(times), "step_ms_median": 1000 * statistics.median(times),
         "backbone_ms_median": 1000 * statistics.median(back),
         "backbone_share": statistics.median(back) / statistics.median(times),
         "adapter_params": sum(p.numel() for p in adapter.parameters()), "trainable": sum(p.numel() for p in params)}
    if dev.type == "cuda":
        r["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    del model, adapter, opt
    return r


def time_wan_forward(wan: FrozenWan, args, dev: torch.device) -> dict:
    """Wall time of one frozen Wan forward at `args.batch` (CFG: 2), best of `args.steps` after `args.warmup`."""
    F_, H, W, t = latent_size(args.size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 16, t, H // 8, W // 8, generator=g).to(dev)
    text = torch.randn(args.batch, args.text_len, wan.text_dim, generator=g).to(dev)
    sigma = torch.full((args.batch,), 0.5, device=dev)
    times = []
    for i in range(args.warmup + max(1, args.steps)):
        _sync(dev)
        t0 = time.perf_counter()
        wan(x, sigma, text)
        _sync(dev)
        if i >= args.warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return {"kind": "wan_forward", "device": str(dev), "size": f"{F_}x{H}x{W}", "batch": args.batch, "dtype": args.dtype,
            "backbone": "tiny" if args.tiny else args.wan_config, "wan_ms_min": min(times),
            "wan_ms_median": statistics.median(times)}


def _print_plan(r: dict) -> None:
    print(f"stage {r['stage']}: {r['step_tflops']:8.1f} TFLOPs per step (backbone forward {r['backbone_fwd_tflops']:.1f}, "
          f"adapter forward + backward {r['adapter_fwd_bwd_tflops']:.1f}); memory estimate {r['est_peak_gib']:.1f} GiB "
          f"= static {r['static_gib']:.1f} + max(backbone forward {r['backbone_fwd_peak_gib']:.1f}, "
          f"adapter step {r['adapter_step_peak_gib']:.1f})", flush=True)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="81x480x832", help="pixel frames x height x width (latents: (F-1)/4+1, H/8, W/8)")
    p.add_argument("--wan-config", default="1.3b", help="1.3b | 14b | a diffusers config.json")
    p.add_argument("--layers", type=int, default=0, help="measured step: override the backbone depth (0 = the config's)")
    p.add_argument("--tiny", action="store_true", help="measured step: the tiny test Wan instead of the real config")
    p.add_argument("--text-dim", type=int, default=32, help="the tiny Wan's text width (with --tiny)")
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--stages", default="ABC")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=2, help="--wan-forward: batch (2 = CFG)")
    p.add_argument("--no-plan", action="store_true", help="skip the meta-device planning figures")
    p.add_argument("--plan-size", default="81x480x832", help="size of the planning figures")
    p.add_argument("--measure", action="store_true", help="also measure on a CPU (always on CUDA)")
    p.add_argument("--wan-forward", action="store_true", help="only time one Wan forward at --batch")
    p.add_argument("--json", default=None, help="also append every result line to this file")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    results: list[dict] = []

    def emit(r: dict) -> None:
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(r) + "\n")

    if args.wan_forward:
        torch.manual_seed(0)
        wan, _ = build_backbone(args, dev)
        emit(time_wan_forward(wan, args, dev))
        return results
    if not args.no_plan:
        print(f"planning figures at {args.plan_size}, Wan 2.1 {'tiny' if args.tiny else args.wan_config}, adapter hidden {args.hidden}, "
              f"top-k {args.top_k}, batch 1, {args.dtype} (meta tensors, nothing allocated):", flush=True)
        for stage in args.stages:
            try:
                r = plan_stage(stage, wan=tiny_wan_config(text_dim=args.text_dim) if args.tiny else args.wan_config,
                               size=args.plan_size, hidden=args.hidden, top_k=args.top_k,
                               text_len=args.text_len, dtype=args.dtype)
            except Exception as e:  # noqa: BLE001  (an older torch's meta kernels: report it, still measure)
                emit({"kind": "plan", "stage": stage, "error": f"{type(e).__name__}: {e}"[:500]})
                continue
            _print_plan(r)
            emit(r)
    if dev.type == "cuda" or args.measure:
        torch.manual_seed(0)
        wan, _ = build_backbone(args, dev)
        for stage in args.stages:
            emit(measure_stage(stage, wan, args, dev))
    return results


if __name__ == "__main__":
    main()
