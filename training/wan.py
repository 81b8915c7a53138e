"""The frozen Wan 2.1 T2V backbone for training (docs/method.md §7: frozen, run under no_grad).

The backbone is diffusers' `WanTransformer3DModel`, loaded from the single safetensors file ComfyUI users
already have (`wan2.1_t2v_1.3B_bf16.safetensors` and friends: the original Wan key names, with or without a
`model.diffusion_model.` prefix). The architecture comes from a config shipped in this repository
(`training/configs/wan2.1_t2v_1.3b.json`, `..._14b.json`), so nothing is downloaded. The key renaming is
diffusers' own `convert_wan_transformer_to_diffusers`; `diffusers_to_wan` is its inverse, used to write the
tiny random Wan files of the quick start and the tests in the same format as the real ones.

Conventions (docs/method.md §1): sigma in [0, 1], 1 = pure noise; the model is called with timestep
`1000 * sigma` (as ComfyUI's flow model sampling does) and predicts the velocity `noise - x0`.
"""
from __future__ import annotations

import json
import re
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
KNOWN_CONFIGS = {"1.3b": "wan2.1_t2v_1.3b.json", "14b": "wan2.1_t2v_14b.json"}
COMFY_PREFIX = "model.diffusion_model."


def wan_config(name_or_path: str | dict = "1.3b") -> dict:
    """'1.3b' / '14b' (the shipped configs), a JSON path, or a dict -> a WanTransformer3DModel config dict."""
    if isinstance(name_or_path, dict):
        cfg = dict(name_or_path)
    else:
        key = str(name_or_path).lower()
        path = CONFIG_DIR / KNOWN_CONFIGS[key] if key in KNOWN_CONFIGS else Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"Wan config {name_or_path!r} not found: use one of {sorted(KNOWN_CONFIGS)} "
                                    "or the path of a diffusers WanTransformer3DModel config.json")
        cfg = json.loads(path.read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def tiny_wan_config(*, text_dim: int = 32, layers: int = 2, heads: int = 2, head_dim: int = 12,
                    ffn_dim: int = 64, freq_dim: int = 32) -> dict:
    """A Wan of the real architecture at toy width, for the quick start and the tests (random weights)."""
    cfg = wan_config("1.3b")
    cfg.update(num_attention_heads=heads, attention_head_dim=head_dim, text_dim=text_dim, freq_dim=freq_dim,
               ffn_dim=ffn_dim, num_layers=layers, rope_max_seq_len=64)
    return cfg


# --- key names -------------------------------------------------------------------------------------------

def wan_to_diffusers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original Wan / ComfyUI key names (prefix optional) -> diffusers names, via diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    return convert_wan_transformer_to_diffusers(dict(state_dict))  # it pops from its argument: give it a copy


# diffusers -> original, applied in order; the norm2/norm3 swap goes through a placeholder
_TO_WAN = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn2", "cross_attn"), ("attn1", "self_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    ("norm2", "norm__placeholder"), ("norm3", "norm2"), ("norm__placeholder", "norm3"),
]


def diffusers_to_wan(state_dict: dict[str, Tensor], *, prefix: str = "") -> dict[str, Tensor]:
    """diffusers WanTransformer3DModel names -> original Wan names (the inverse of `wan_to_diffusers`)."""
    out = {}
    for k, v in state_dict.items():
        n = k
        if n.startswith("proj_out."):
            n = "head.head." + n[len("proj_out."):]
        elif n == "scale_shift_table":
            n = "head.modulation"
        n = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", n)
        for a, b in _TO_WAN:
            n = n.replace(a, b)
        out[prefix + n] = v
    return out


# --- loading ---------------------------------------------------------------------------------------------

def build_wan(config: str | dict = "1.3b", *, device="cpu", dtype=torch.float32, seed: int | None = None,
              init_in_dtype: bool = False) -> nn.Module:
    """A randomly initialised WanTransformer3DModel (no download); `seed` makes it reproducible.

    init_in_dtype: create the weights directly in `dtype` (a real-size 1.3B in bf16 is 2.6 GB instead of an fp32
    copy first); the default initialises in fp32 and casts, so a bf16 and an fp32 build share their weights."""
    from diffusers import WanTransformer3DModel
    cfg = wan_config(config)
    gen_ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with gen_ctx:
        if seed is not None:
            torch.manual_seed(seed)
        if not init_in_dtype:
            return cast_wan(WanTransformer3DModel.from_config(cfg), dtype).to(device=device)
        with torch.device("meta"):
            model = WanTransformer3DModel.from_config(cfg)
        model = cast_wan(model, dtype).to_empty(device=device)
        _rebuild_meta_buffers(model)
        # a cheap stand-in for diffusers' init (drawing 1.4e9 numbers takes a minute on one core): windows of one
        # pool of uniform(-sqrt 3, sqrt 3) numbers (unit variance) scaled by 1/sqrt(fan_in); zero biases, unit norms
        n_max = max(p.numel() for p in model.parameters())
        pool = torch.empty(n_max + 1_000_003).uniform_(-3 ** 0.5, 3 ** 0.5)
        with torch.no_grad():
            for i, (name, p) in enumerate(model.named_parameters()):
                if name.endswith("bias"):
                    p.zero_()
                elif "norm" in name and p.ndim == 1:
                    p.fill_(1.0)
                else:
                    off = (i * 7919) % 1_000_003
                    fan_in = p[0].numel() if p.ndim >= 2 else p.shape[-1]
                    p.copy_(pool[off:off + p.numel()].view_as(p) * fan_in ** -0.5)
    return model


def read_wan_file(path: str | Path) -> dict[str, Tensor]:
    """The Wan transformer's tensors from any layout of `training.weights` (file, sharded release, diffusers)."""
    from .weights import component_dir, read_state_dict
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Wan weights not found at {path}: pass ComfyUI's single .safetensors file "
                                "(models/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors), the original release "
                                "folder (sharded, with its index) or a diffusers folder")
    return read_state_dict(component_dir(path, "transformer"), what="Wan transformer")


def layout_config(path: str | Path) -> dict | None:
    """The architecture a folder states: a diffusers `WanTransformer3DModel` config.json, or the original release's
    (`dim`, `num_heads`, ...) mapped to diffusers names; None for a single file."""
    from .weights import component_dir, read_config
    raw = read_config(component_dir(path, "transformer"))
    if raw is None:
        return None
    if raw.get("_class_name") == "WanTransformer3DModel":
        return wan_config(raw)
    if "dim" in raw and "num_heads" in raw:  # the original Wan release's config.json
        if raw.get("model_type", "t2v") != "t2v":
            raise ValueError(f"{path}: a Wan {raw['model_type']!r} model; training uses the T2V transformer")
        cfg = wan_config("1.3b")
        cfg.update(num_attention_heads=raw["num_heads"], attention_head_dim=raw["dim"] // raw["num_heads"],
                   ffn_dim=raw["ffn_dim"], freq_dim=raw.get("freq_dim", 256), num_layers=raw["num_layers"],
                   in_channels=raw.get("in_dim", 16), out_channels=raw.get("out_dim", 16),
                   text_dim=raw.get("text_dim", 4096), eps=raw.get("eps", 1e-6))
        return cfg
    return None


def load_wan(path: str | Path, config: str | dict = "1.3b", *, device="cpu", dtype=torch.bfloat16) -> nn.Module:
    """Load a Wan 2.1 T2V transformer into diffusers' WanTransformer3DModel, from ComfyUI's single file, the
    original sharded release or a diffusers folder (detected from the path; a folder's own config.json gives
    the architecture, a single file uses `config`). ComfyUI's fp8 files are upcast to `dtype` (with a warning).

    Every weight must match: missing or unexpected keys, or a shape that differs from the config, raise a
    ValueError that lists them (a wrong config, e.g. the 14B file with the 1.3B config, fails here).
    """
    import logging
    from diffusers import WanTransformer3DModel
    from .weights import upcast_fp8
    sd, was_fp8 = upcast_fp8(read_wan_file(path), to=dtype if dtype != torch.float32 else torch.bfloat16)
    if not any(k.startswith("condition_embedder.") for k in sd):  # original / ComfyUI names
        sd = wan_to_diffusers(sd)
    if was_fp8:
        logging.getLogger("pila.training").warning(
            "%s holds fp8 weights: upcast to %s for training; the frozen velocities then carry fp8 rounding, "
            "so prefer the bf16 / fp16 file when you have it", path, dtype)
    cfg = layout_config(path) or wan_config(config)
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(cfg)
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    bad_shape = sorted(f"{k}: file {tuple(sd[k].shape)} vs config {tuple(want[k].shape)}"
                       for k in set(want) & set(sd) if tuple(sd[k].shape) != tuple(want[k].shape))
    if missing or unexpected or bad_shape:
        show = lambda xs: ", ".join(xs[:12]) + (f" ... ({len(xs)} in all)" if len(xs) > 12 else "")  # noqa: E731
        raise ValueError(f"{path} does not match the Wan config {config!r}: "
                         f"missing [{show(missing)}]; unexpected [{show(unexpected)}]; shapes [{show(bad_shape)}]. "
                         "Check that the file is a Wan 2.1 T2V transformer and that --wan-config matches its size.")
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    model.load_state_dict({k: v.to(torch.float32 if _keep_fp32(k, keep) else dtype) for k, v in sd.items()},
                          strict=True, assign=True)
    _rebuild_meta_buffers(model)
    return model.to(device=device)


def _rebuild_meta_buffers(model: nn.Module) -> None:
    """Non-persistent buffers (the RoPE tables) made on the meta device, or emptied by to_empty: rebuild them."""
    for mod in model.modules():
        if hasattr(mod, "freqs_cos"):
            fresh = type(mod)(*_rope_args(mod))
            for name in list(mod._buffers):
                mod._buffers[name] = fresh._buffers[name].to(next(iter(mod._buffers.values())).device
                                                             if not mod._buffers[name].is_meta else "cpu")
            continue
        for name, buf in mod._buffers.items():
            if buf is not None and buf.is_meta:
                raise RuntimeError(f"cannot rebuild buffer {name} of {type(mod).__name__}")


def _keep_fp32(name: str, keep: tuple[str, ...]) -> bool:
    """diffusers keeps some Wan modules (norms, time embedder, modulation tables) in fp32 under bf16."""
    parts = name.split(".")
    return any(k in parts for k in keep)


def cast_wan(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast to `dtype` but keep diffusers' `_keep_in_fp32_modules` in float32 (what from_pretrained does)."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if _keep_fp32(name, keep) else dtype)
    return model


def _rope_args(rope) -> tuple:
    return rope.attention_head_dim, rope.patch_size, rope.max_seq_len


def save_wan_file(model: nn.Module, path: str | Path, *, prefix: str = COMFY_PREFIX, dtype=None) -> Path:
    """Write a diffusers Wan as a ComfyUI-style single file (original key names)."""
    from safetensors.torch import save_file
    sd = {k: (v.to(dtype) if dtype else v).detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(diffusers_to_wan(sd, prefix=prefix), str(path))
    return path


# --- the frozen backbone -------------------------------------------------------------------------------

class FrozenWan(nn.Module):
    """v = v_theta(x_s, sigma, text) under no_grad, in bf16 on GPU; returns fp32 velocities (docs/method.md §1)."""

    def __init__(self, model: nn.Module, *, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.compute_dtype = compute_dtype

    @property
    def text_dim(self) -> int:
        return self.model.config.text_dim

    @property
    def dtype(self) -> torch.dtype:
        """The weights' compute dtype: the patch embedding's (diffusers keeps norms, the time embedder and the
        modulation tables in fp32 under bf16, so the first parameter says nothing)."""
        return self.compute_dtype or self.model.patch_embedding.weight.dtype

    @torch.no_grad()
    def forward(self, x_t: Tensor, sigma: Tensor, text_states: Tensor) -> Tensor:
        assert x_t.ndim == 5, f"latents are [B, C, T, H, W], got {tuple(x_t.shape)}"
        B = x_t.shape[0]
        sigma = sigma.reshape(-1).expand(B) if sigma.numel() == 1 else sigma.reshape(B)
        dtype = self.dtype
        # latents and text in the weights' dtype; the timestep stays fp32 (as ComfyUI keeps it: 1000 sigma in
        # bf16 would round 833.3 to 832); diffusers' fp32 modules take it from there, so no autocast is needed
        v = self.model(hidden_states=x_t.to(dtype), timestep=sigma.float() * 1000,
                       encoder_hidden_states=text_states.to(dtype), return_dict=False)[0]
        return v.float()
