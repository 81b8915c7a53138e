"""Per-step overhead of the PILA ComfyUI patch, measured inside real ComfyUI sampling (docs/method.md §8).

    python scripts/bench_nodes.py                       # tiny Wan + reduced Wan 2.1 1.3B architecture, CPU or GPU
    python scripts/bench_nodes.py --sizes reduced --layers 30 --latent 21,60,104 --steps 10   # a full 1.3B step on a GPU

For each size it samples the same random Wan backbone (ComfyUI's own WanModel, random weights, random
[1, 512, 4096] text) with KSampler-style Euler steps and CFG, once unpatched and once with the PILA wrapper
(PILAFlowCorrection through the pack's own patch_model: model.clone() + APPLY_MODEL wrapper + the adapter as an
additional model), and prints the seconds per step and their ratio. "reduced" is the Wan 2.1 1.3B block
(dim 1536, ffn 8960, 12 heads) with fewer layers on a small latent; its ratio is also extrapolated to the 30
layers of the real model (the adapter's cost does not depend on the backbone depth).

Host-device transfers: a TorchFunctionMode counts, per denoising step, the calls that copy between host and
device or make the host wait for the device on a GPU (.item, .tolist, .cpu, .numpy, bool/int/float of a tensor,
nonzero, cross-device .to/copy_, tensors built from host data on a device). On a CPU run these are the calls that
*would* be transfers on a GPU. The patch's own target is 0 extra; the adapter's data-dependent expert dispatch
(only the selected experts run, docs/method.md §4) needs one read of the routing per call.

The last lines are `Name: value` pairs. Needs a ComfyUI checkout ($COMFYUI_PATH or ~/ComfyUI).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_comfyui(path: str | None):
    comfy = Path(path or os.environ.get("COMFYUI_PATH") or "~/ComfyUI").expanduser()
    if not (comfy / "main.py").is_file():
        sys.exit(f"bench_nodes: no ComfyUI checkout at {comfy}; pass --comfyui or set COMFYUI_PATH")
    sys.path.insert(0, str(comfy))  # ComfyUI's `nodes`/`utils` before anything of this repository
    sys.path.append(str(REPO))
    from pila.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torch

    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (after the cpu flag)
    # the pack, loaded the way ComfyUI loads custom nodes (its own module name, relative imports)
    spec = importlib.util.spec_from_file_location("comfyui_pila", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_pila"] = pack
    spec.loader.exec_module(pack)
    asyncio.run(pack.comfy_entrypoint())
    return comfy


class TransferCounter:
    """Counts host<->device transfers / syncs (see the module docstring) inside a `with` block."""

    SYNC = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero", "argwhere",
            "masked_select", "unique", "nonzero_static"}

    def __init__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        counter = self
        self.counts: dict[str, int] = {}
        self.scope = ""  # "adapter: " while inside the adapter's forward (see watch_adapter)

        def dev_of(x):
            import torch as _t
            if isinstance(x, _t.Tensor):
                return x.device
            if isinstance(x, (str, _t.device)):
                try:
                    return _t.device(x)
                except (RuntimeError, TypeError):
                    return None
            return None

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = getattr(func, "__name__", "")
                hit = None
                if name in TransferCounter.SYNC:
                    hit = name
                elif name in ("to", "copy_") and args and isinstance(args[0], torch.Tensor):
                    target = kwargs.get("device")
                    for a in args[1:]:
                        target = target or dev_of(a)
                    if target is not None and torch.device(target).type != args[0].device.type:
                        hit = f"{name}({args[0].device.type}->{torch.device(target).type})"
                elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
                    if torch.device(kwargs["device"]).type != "cpu":
                        hit = f"{name}(host data -> {torch.device(kwargs['device']).type})"
                if hit:
                    hit = counter.scope + hit
                    counter.counts[hit] = counter.counts.get(hit, 0) + 1
                return func(*args, **kwargs)

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def inside(self, prefix: str) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith(prefix))

    def watch_adapter(self, adapter):
        """Attribute the adapter's own calls to "adapter: ..." (its expert dispatch reads the routing)."""
        forward = adapter.forward

        def watched(*a, **k):
            self.scope = "adapter: "
            try:
                return forward(*a, **k)
            finally:
                self.scope = ""

        adapter.forward = watched
        return forward


def random_wan(dim: int, layers: int, ffn: int, dtype):
    import torch

    import comfy.ops
    import comfy.sd
    from comfy.ldm.wan.model import WanModel

    torch.manual_seed(0)
    m = WanModel(model_type="t2v", in_dim=16, out_dim=16, dim=dim, ffn_dim=ffn, num_heads=dim // 128, num_layers=layers,
                 operations=comfy.ops.disable_weight_init)
    sd = {}
    for k, t in m.state_dict().items():
        if k.endswith(("norm_q.weight", "norm_k.weight")) or ".norm3.weight" in k:
            sd[k] = torch.ones(t.shape, dtype=dtype)
        elif t.ndim >= 2 or k.endswith("modulation"):
            sd[k] = (torch.randn(t.shape) * 0.02).to(dtype)
        else:
            sd[k] = torch.zeros(t.shape, dtype=dtype)
    del m
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    assert model is not None, "ComfyUI did not detect the random Wan state dict"
    return model


def make_adapter_handle(hidden: int):
    import torch

    import comfy.model_management as mm
    from comfy.model_patcher import ModelPatcher
    from comfyui_pila.nodes.common import AdapterHandle, AdapterHolder
    from pila import PILAAdapter

    torch.manual_seed(0)
    a = PILAAdapter(hidden=hidden).eval()
    with torch.no_grad():
        a.decoder.out.weight.normal_(0, 0.02)
    holder = AdapterHolder(a, mm.unet_offload_device())
    patcher = ModelPatcher(holder, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    return AdapterHandle(a, patcher, "bench", {})


def bench_size(name: str, *, dim: int, layers: int, ffn: int, latent: tuple[int, int, int], steps: int, repeats: int,
               hidden: int, dtype_name: str) -> dict:
    import torch

    import comfy.sample
    from comfyui_pila.nodes.common import Routing, patch_model
    from pila.patch import CorrectionSettings

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    model = random_wan(dim, layers, ffn, dtype)
    handle = make_adapter_handle(hidden)
    g = torch.Generator().manual_seed(0)
    pos = torch.zeros(1, 512, 4096)
    pos[:, :20] = torch.randn(1, 20, 4096, generator=g)
    neg = torch.zeros(1, 512, 4096)
    neg[:, :8] = torch.randn(1, 8, 4096, generator=g)
    positive, negative = [[pos, {}]], [[neg, {}]]
    T, H, W = latent
    lat = torch.zeros(1, 16, T, H, W)
    noise = torch.randn(lat.shape, generator=g)
    patched, _ = patch_model(model, handle, Routing(CorrectionSettings(strength=1.0)), pos)

    def run(m):
        t0 = time.perf_counter()
        out = comfy.sample.sample(m, noise, steps, 5.0, "euler", "simple", positive, negative, lat, denoise=1.0,
                                  disable_pbar=True, seed=0)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps, out

    run(model), run(patched)  # warm-up: loads, allocator, kernels
    plain_t, patched_t = [], []
    for _ in range(repeats):  # interleaved, so that drifting machine load hits both alike
        plain_t.append(run(model)[0])
        patched_t.append(run(patched)[0])
    counts = {}
    for label, m in (("unpatched", model), ("patched", patched)):
        tc = TransferCounter()
        original = tc.watch_adapter(handle.adapter)
        with tc:
            run(m)
        handle.adapter.forward = original
        counts[label] = (tc.total / steps, dict(tc.counts), tc.inside("adapter: ") / steps)
    p, q = statistics.median(plain_t), statistics.median(patched_t)
    res = {"name": name, "plain_s": p, "patched_s": q, "ratio": q / p, "overhead_s": q - p,
           "transfers_plain": counts["unpatched"][0], "transfers_patched": counts["patched"][0],
           "detail_plain": counts["unpatched"][1], "detail_patched": counts["patched"][1], "layers": layers,
           "transfers_adapter": counts["patched"][2],
           "latent": latent}
    print(f"[{name}] dim {dim}, {layers} layers, latent [1, 16, {T}, {H}, {W}], {steps} Euler steps, CFG 5, "
          f"adapter hidden {hidden}, device {comfy.model_management.get_torch_device()}")
    print(f"[{name}] per step: unpatched {p * 1e3:.1f} ms, patched {q * 1e3:.1f} ms (runs: "
          f"{[round(x * 1e3, 1) for x in plain_t]} / {[round(x * 1e3, 1) for x in patched_t]})")
    print(f"[{name}] transfer-type calls per step: unpatched {res['transfers_plain']:.2f} {res['detail_plain']}, "
          f"patched {res['transfers_patched']:.2f} {res['detail_patched']}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", default=None, help="ComfyUI checkout (default $COMFYUI_PATH or ~/ComfyUI)")
    ap.add_argument("--sizes", default="tiny,reduced", help="comma list of: tiny, reduced")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, default=None, help="layers of the reduced 1.3B architecture "
                    "(default 4 on CPU, 30 on a GPU)")
    ap.add_argument("--latent", default=None, help="T,H,W of the reduced run (default 3,16,16 on CPU, 21,60,104 on a GPU)")
    ap.add_argument("--hidden", type=int, default=128, help="adapter width (default 128, docs/method.md §3)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="backbone weights dtype")
    args = ap.parse_args()
    setup_comfyui(args.comfyui)
    import torch

    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 2 if not torch.cuda.is_available() else 16)))
    gpu = torch.cuda.is_available()
    results = []
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if "tiny" in sizes:
        results.append(bench_size("tiny", dim=256, layers=2, ffn=512, latent=(3, 8, 8), steps=args.steps,
                                  repeats=args.repeats, hidden=16, dtype_name=args.dtype))
    if "reduced" in sizes:
        layers = args.layers or (30 if gpu else 4)
        latent = tuple(int(v) for v in (args.latent or ("21,60,104" if gpu else "3,16,16")).split(","))
        results.append(bench_size("reduced", dim=1536, layers=layers, ffn=8960, latent=latent, steps=args.steps,
                                  repeats=args.repeats, hidden=args.hidden, dtype_name=args.dtype))
    print()
    for r in results:
        n = r["name"]
        print(f"{n}_unpatched_step_ms: {r['plain_s'] * 1e3:.2f}")
        print(f"{n}_patched_step_ms: {r['patched_s'] * 1e3:.2f}")
        print(f"{n}_overhead_ratio: {r['ratio']:.4f}")
        if n == "reduced" and r["layers"] != 30:
            full = r["plain_s"] * 30 / r["layers"]  # backbone time scales with depth; the adapter's does not
            print(f"{n}_overhead_ratio_extrapolated_30_layers: {(full + r['overhead_s']) / full:.4f}")
        print(f"{n}_transfers_per_step_unpatched: {r['transfers_plain']:.2f}")
        print(f"{n}_transfers_per_step_patched: {r['transfers_patched']:.2f}")
        extra = r["transfers_patched"] - r["transfers_plain"]
        print(f"{n}_extra_transfers_per_step: {extra:.2f}")
        print(f"{n}_extra_transfers_per_step_in_adapter_expert_dispatch: {r['transfers_adapter']:.2f}")
        print(f"{n}_extra_transfers_per_step_in_patch: {extra - r['transfers_adapter']:.2f}")


if __name__ == "__main__":
    main()
