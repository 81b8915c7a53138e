"""Pre-compute what training reads: VAE latents, UMT5 text states, optical-flow targets (docs/method.md §7).

    python -m training.cache --annotations wisa-80k.json --videos videos/ --out cache/ \\
        --vae wan_2.1_vae.safetensors --t5 umt5_xxl_fp16.safetensors            # real weights (ComfyUI files)
    python -m training.cache --annotations A --videos V --out cache/ --tiny   # tiny random VAE/UMT5 (tests)
    python -m training.cache --bench-encoders 81x480x832 --device cuda         # seconds per clip (random weights)

Per clip it stores (sharded safetensors, `shard_XXXXX.safetensors` + `shard_XXXXX.json`, and `index.json`):
- `latents` `[16, T, H/8, W/8]`: the Wan 2.1 VAE posterior mean, normalised per channel
  `(z - latents_mean) / latents_std` (the space the backbone and ComfyUI's Wan21 latent format use);
- `text` `[L, D]`: UMT5 states of the caption (real tokens only; padded to `text_len` with zeros at train time,
  as Wan does); `phys` `[L', D]`: UMT5 states of the physics description (the adapter's condition);
- `flow` `[2, T, h, w]` (x first, latent pixels per latent frame), `jac` `[4, T, h, w]`
  = `[dx fx, dy fx, dx fy, dy fy]` (pila.fd), `conf` `[1, T, h, w]`: OpenCV DIS between the clean pixel frames
  4t and 4t + 4, area-averaged over 8x8 blocks and divided by 8 into latent pixels, the last latent frame
  replicated; confidence `clamp(sigmoid(2 (|grad I| + 0.5 |f| - 0.15)), 0.05, 1)` with `|grad I|` the
  kornia Sobel gradient magnitude of the grey frame (in [0, 1]) at latent resolution (per latent pixel)
  **(ours: the units; the paper gives only the formula)**;
- `labels` `[8]` multi-hot (training.data's WISA mapping).

`--workers N` DataLoader processes decode clips and compute the flow targets while the main process runs the
VAE and UMT5 (on the GPU), so the CPU and GPU halves overlap. Shard k holds the annotation entries `[k * shard_size, (k + 1) * shard_size)`; a shard whose `.json` exists
is finished and skipped on a re-run (resume after a kill). Clips that are missing, corrupt or too short are
skipped and counted per reason in the shard's JSON and the index. With `torchrun` each rank caches the shards
`k % world == rank`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import data as D
from .weights import resolve_encoders

log = logging.getLogger("pila.training.cache")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
INDEX = "index.json"
MIN_CLIPS_FOR_WORKERS = 8  # fewer clips to cache: no worker processes (their start-up would cost more than they save)


# --- text -----------------------------------------------------------------------------------------------

class ByteTokenizer:
    """The tiny text encoder's tokenizer: UTF-8 bytes + 3, then EOS = 1 (pad 0). No files, no download."""
    vocab_size = 256 + 3

    def __call__(self, text: str, max_len: int) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")][: max_len - 1] + [1]


class SentencePieceTokenizer:
    """UMT5's SentencePiece model, from a `spiece.model` path or the bytes ComfyUI stores inside its UMT5 file."""

    def __init__(self, model: str | Path | bytes):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor()
        if isinstance(model, bytes):
            self.sp.LoadFromSerializedProto(model)
        else:
            self.sp.Load(str(model))

    def __call__(self, text: str, max_len: int) -> list[int]:
        return list(self.sp.EncodeAsIds(text))[: max_len - 1] + [1]


class TextEncoder:
    """UMT5 encoder: text -> `[L, D]` states of its real tokens (EOS included), at most `max_len` tokens."""

    def __init__(self, model, tokenizer, *, max_len: int = 512, device="cpu"):
        self.model, self.tokenizer, self.max_len, self.device = model.eval().requires_grad_(False), tokenizer, max_len, device

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def __call__(self, text: str) -> Tensor:
        ids = torch.tensor([self.tokenizer(text, self.max_len)], device=self.device)
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        return out.float().cpu()


def tiny_text_encoder(*, dim: int = 32, seed: int = 0, max_len: int = 64) -> TextEncoder:
    from transformers import UMT5Config, UMT5EncoderModel
    cfg = UMT5Config(vocab_size=ByteTokenizer.vocab_size, d_model=dim, d_kv=8, num_heads=max(1, dim // 8),
                     num_layers=2, d_ff=2 * dim, feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
                     dropout_rate=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(cfg)
    return TextEncoder(model, ByteTokenizer(), max_len=max_len)


def load_text_encoder(path: str | Path, *, tokenizer: str | Path | None = None, device="cpu",
                      dtype=torch.bfloat16, max_len: int = 512, config: str | Path | None = None) -> TextEncoder:
    """UMT5-XXL from a transformers folder, or from ComfyUI's `umt5_xxl_fp16.safetensors` (+ its tokenizer:
    the `spiece_model` tensor inside that file, or `--tokenizer spiece.model`). fp8-scaled files are not supported."""
    from transformers import UMT5Config, UMT5EncoderModel
    path = Path(path)
    if path.is_dir():
        model = UMT5EncoderModel.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
        tok_src = tokenizer or next((p for p in (path / "spiece.model", path.parent / "spiece.model") if p.is_file()), None)
        if tok_src is None:
            raise FileNotFoundError(f"no spiece.model in {path}; pass --tokenizer PATH/spiece.model")
        return TextEncoder(model.to(device), SentencePieceTokenizer(tok_src), max_len=max_len, device=device)
    from safetensors.torch import load_file
    sd = load_file(str(path))
    spiece = sd.pop("spiece_model", None)
    if any(v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) for v in sd.values()):
        raise ValueError(f"{path} is an fp8 UMT5 file; use umt5_xxl_fp16.safetensors (or bf16) for caching")
    cfg = json.loads(Path(config or CONFIG_DIR / "umt5_xxl.json").read_text())
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
    want = set(model.state_dict())
    sd = {k: v for k, v in sd.items() if not k.startswith("decoder.")}
    if "encoder.embed_tokens.weight" not in sd and "shared.weight" in sd:
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want)
    if missing or unexpected:
        raise ValueError(f"{path} is not a UMT5-XXL encoder: missing {missing[:8]}, unexpected {unexpected[:8]}")
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    if tokenizer is not None:
        tok = SentencePieceTokenizer(tokenizer)
    elif spiece is not None:
        tok = SentencePieceTokenizer(spiece.numpy().tobytes())
    else:
        raise FileNotFoundError(f"{path} carries no tokenizer; pass --tokenizer PATH/spiece.model (google/umt5-xxl)")
    return TextEncoder(model.to(device), tok, max_len=max_len, device=device)


# --- VAE ------------------------------------------------------------------------------------------------

class LatentEncoder:
    """Wan 2.1 VAE: uint8 frames `[F, H, W, 3]` -> normalised latents `[16, (F - 1) / 4 + 1, H / 8, W / 8]`."""

    def __init__(self, vae, *, device="cpu", dtype=torch.float32):
        self.vae = vae.eval().requires_grad_(False).to(device=device)
        if dtype != torch.float32:
            self.vae = self.vae.to(dtype=dtype)
        self.device, self.dtype = device, dtype
        c = vae.config
        self.mean = torch.tensor(c.latents_mean).view(-1, 1, 1, 1)
        self.std = torch.tensor(c.latents_std).view(-1, 1, 1, 1)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> Tensor:
        x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].to(self.device, torch.float32) / 127.5 - 1
        z = self.vae.encode(x.to(self.dtype)).latent_dist.mode()[0].float().cpu()
        return (z - self.mean) / self.std


def tiny_vae(*, seed: int = 0):
    """The Wan VAE architecture at toy width (same 8x spatial / 4x temporal geometry), random weights."""
    from diffusers import AutoencoderKLWan
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                attn_scales=[], temperal_downsample=[False, True, True])


def load_vae(path: str | Path):
    """The Wan 2.1 VAE from a diffusers folder or ComfyUI's single `wan_2.1_vae.safetensors` (original keys)."""
    from diffusers import AutoencoderKLWan
    path = Path(path)
    if path.is_dir():
        return AutoencoderKLWan.from_pretrained(str(path), local_files_only=True)
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    from safetensors.torch import load_file
    sd = convert_wan_vae_to_diffusers(load_file(str(path)))
    vae = AutoencoderKLWan()  # its defaults are the Wan 2.1 VAE
    missing, unexpected = vae.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not a Wan 2.1 VAE: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return vae


# --- optical flow targets -----------------------------------------------------------------------------------

def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (exact area average for an integer factor): [H, W, ...] -> [H/f, W/f, ...]."""
    H, W = a.shape[:2]
    return a[: H // f * f, : W // f * f].reshape(H // f, f, W // f, f, *a.shape[2:]).mean(axis=(1, 3))


def flow_targets(frames: np.ndarray, *, scale: int = 8, gap: int = 4, preset: int | None = None) -> dict[str, Tensor]:
    """Dense flow targets at latent resolution (module docstring): {"flow", "jac", "conf"}.

    frames uint8 `[F, H, W, 3]` with F = 4k + 1; latent frame t gets the flow between pixel frames
    `gap * t` and `gap * t + gap` (the last latent frame repeats the one before)."""
    import cv2
    import kornia
    from pila import fd
    F_, H, W, _ = frames.shape
    T = D.clip_geometry(F_)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM if preset is None else preset)
    grey = [_grey(f) for f in frames]
    flows, grads = [], []
    for t in range(T):
        a = min(gap * t, F_ - 1)
        if t < T - 1:
            f = dis.calc(grey[a], grey[a + gap], None)  # [H, W, 2] pixels between frames a and a + gap
            flows.append(_block_mean(f, scale) / scale)  # latent pixels per latent frame
        g = torch.from_numpy(_block_mean(grey[a].astype(np.float32) / 255.0, scale))[None, None]
        sob = kornia.filters.spatial_gradient(g, mode="sobel", order=1, normalized=True)[0, 0]  # [2, h, w]
        grads.append(sob.square().sum(0).sqrt())
    if T == 1:
        flows.append(np.zeros((H // scale, W // scale, 2), np.float32))
    else:
        flows.append(flows[-1])  # last latent frame replicated
    flow = torch.from_numpy(np.stack(flows)).permute(3, 0, 1, 2).float()  # [2, T, h, w]
    g = torch.stack(grads)[None]  # [1, T, h, w]
    mag = flow.square().sum(0, keepdim=True).sqrt()
    conf = torch.sigmoid(2 * (g + 0.5 * mag - 0.15)).clamp(0.05, 1.0)
    f5 = flow[None]
    jac = torch.cat([fd.dx(f5[:, :1]), fd.dy(f5[:, :1]), fd.dx(f5[:, 1:]), fd.dy(f5[:, 1:])], dim=1)[0]
    return {"flow": flow, "jac": jac, "conf": conf}


# --- the command ------------------------------------------------------------------------------------------

@dataclass
class CacheConfig:
    annotations: str = ""
    videos: str = ""
    out: str = "cache"
    frames: int = 81
    height: int = 480
    width: int = 832
    stride: int = 1
    shard_size: int = 32
    label_source: str = "wisa"
    vae: str = ""  # path; "" with tiny=True builds the tiny random VAE
    t5: str = ""
    tokenizer: str = ""
    tiny: bool = False
    tiny_text_dim: int = 32
    text_len: int = 512
    dtype: str = "bfloat16"  # storage dtype of latents and text states (flow targets stay float32)
    device: str = "auto"
    limit: int = 0  # only the first N entries (0 = all)
    workers: int = 2  # DataLoader processes decoding and computing flow ahead of the encoders (0 = none)
    prefetch: int = 2  # clips each worker keeps ready


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def build_encoders(cfg: CacheConfig):
    dev = _device(cfg.device)
    if cfg.tiny or not (cfg.vae and cfg.t5):
        if not cfg.tiny:
            raise ValueError("pass --vae and --t5 (real weights), or --tiny for the tiny random encoders")
        return LatentEncoder(tiny_vae(), device=dev), tiny_text_encoder(dim=cfg.tiny_text_dim, max_len=cfg.text_len)
    wdtype = torch.bfloat16 if dev == "cuda" else torch.float32
    vae, t5, tokenizer = resolve_encoders(cfg.vae, cfg.t5, cfg.tokenizer)  # single file, component or pipeline folder
    return (LatentEncoder(load_vae(vae), device=dev, dtype=wdtype),
            load_text_encoder(t5, tokenizer=tokenizer or None, device=dev, dtype=wdtype, max_len=cfg.text_len))


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class _Prepared(torch.utils.data.Dataset):
    """The CPU half of caching, run in DataLoader workers: decode one clip and compute its flow targets.

    Item j -> {"index", "id", "caption", "physics", "labels", "frames" (uint8 tensor), flow targets}, or
    {"index", "error"} for a clip that is missing, corrupt or too short."""

    def __init__(self, src: D.ClipSource, indices: list[int]):
        self.src, self.indices = src, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        i = self.indices[j]
        try:
            item = self.src.item(i)
        except D.ClipError as e:
            return {"index": i, "error": str(e)}
        out = {"index": i, "id": item["id"], "caption": item["caption"], "physics": item["physics"],
               "labels": item["labels"], "frames": torch.from_numpy(item["frames"])}  # a tensor: shared memory
        out.update(flow_targets(item["frames"]))
        return out


def _identity(x):
    return x


def _worker_init(_: int) -> None:
    try:
        import cv2
        cv2.setNumThreads(1)  # one DIS per worker process; the workers are the parallelism
    except ImportError:
        pass


def build_cache(cfg: CacheConfig, *, rank: int = 0, world: int = 1, progress: bool = True) -> dict:
    """Cache every shard this rank owns that is not finished yet, then (rank 0) write the index.

    `cfg.workers` DataLoader processes decode clips and compute optical flow ahead of the encoders (VAE, UMT5 on
    the GPU in the main process), so neither side waits for the other; results arrive in clip order and each
    shard is written as soon as its last clip is encoded (0 workers: everything in this process, one clip at
    a time)."""
    from safetensors.torch import save_file
    from tqdm import tqdm
    from pila.taxonomy import multi_hot
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    src = D.ClipSource(cfg.annotations, cfg.videos, frames=cfg.frames, height=cfg.height, width=cfg.width,
                       stride=cfg.stride, label_source=cfg.label_source)
    n = len(src) if cfg.limit <= 0 else min(cfg.limit, len(src))
    shards = [k for k in range(math.ceil(n / cfg.shard_size)) if k % world == rank]
    todo = [k for k in shards if not (out / f"shard_{k:05d}.json").is_file()]
    log.info("cache: %d entries, %d shards for this rank, %d already done", n, len(shards), len(shards) - len(todo))
    spans = {k: range(k * cfg.shard_size, min(n, (k + 1) * cfg.shard_size)) for k in todo}
    indices = [i for k in todo for i in spans[k]]
    stats = {"clips": len(indices), "seconds": 0.0}
    if indices:
        import time
        t0 = time.perf_counter()
        # spawned, not forked: a fork of a process whose OpenCV / OpenMP thread pools already ran can deadlock.
        # Starting a worker costs a few seconds (imports), which only pays off on more than a handful of clips.
        workers = cfg.workers if len(indices) >= MIN_CLIPS_FOR_WORKERS else 0
        loader = torch.utils.data.DataLoader(
            _Prepared(src, indices), batch_size=None, collate_fn=_identity, num_workers=workers,
            worker_init_fn=_worker_init if workers > 0 else None,
            multiprocessing_context="spawn" if workers > 0 else None,
            prefetch_factor=max(1, cfg.prefetch) if workers > 0 else None)
        items = iter(loader)  # workers start decoding now, while the encoders load
        vae, text = build_encoders(cfg)
        sdt = getattr(torch, cfg.dtype)
        bar = tqdm(total=len(indices), desc="cache", unit="clip", disable=not progress, dynamic_ncols=True)
        for k in todo:
            tensors, samples, skipped = {}, [], Counter()
            for i in spans[k]:
                item = next(items)
                assert item["index"] == i, f"cache loader out of order: expected clip {i}, got {item['index']}"
                bar.update(1)
                if "error" in item:
                    skipped[item["error"].split(":", 1)[0]] += 1
                    log.warning("skip clip %d: %s", i, item["error"])
                    continue
                j = len(samples)
                tensors[f"{j}.latents"] = vae(item["frames"].numpy()).to(sdt)
                tensors[f"{j}.text"] = text(item["caption"]).to(sdt)
                tensors[f"{j}.phys"] = text(item["physics"]).to(sdt)
                tensors.update({f"{j}.{name}": item[name] for name in ("flow", "jac", "conf")})
                tensors[f"{j}.labels"] = multi_hot(item["labels"])
                samples.append({"index": i, "id": item["id"], "labels": item["labels"], "caption": item["caption"]})
            name = f"shard_{k:05d}"
            if tensors:
                tmp = out / f"{name}.safetensors.tmp"
                save_file({kk: v.contiguous() for kk, v in tensors.items()}, str(tmp))
                os.replace(tmp, out / f"{name}.safetensors")
            _atomic_json(out / f"{name}.json", {"file": f"{name}.safetensors" if tensors else None, "samples": samples,
                                                "skipped": dict(skipped)})  # written last: marks the shard finished
        bar.close()
        stats["seconds"] = time.perf_counter() - t0
        stats["workers"] = workers
        log.info("cache: %d clips in %.1f s (%.2f clips/s, %d workers)", len(indices), stats["seconds"],
                 len(indices) / max(stats["seconds"], 1e-9), workers)
    if rank == 0:
        return dict(write_index(out, cfg), run=stats)
    return {"run": stats}


def random_cache(out: str | Path, *, clips: int = 4, latent: tuple[int, int, int] = (5, 8, 8), text_dim: int = 32,
                 text_tokens: int = 12, seed: int = 0) -> Path:
    """A cache in this module's format filled with random tensors (no video, OpenCV or encoder needed): what the
    GPU check trains on when only the training path is under test. One shard, `index.json` written."""
    from safetensors.torch import save_file
    from pila.taxonomy import CATEGORIES, multi_hot
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    T_, h, w = latent
    tensors, samples = {}, []
    for j in range(clips):
        labels = [CATEGORIES[j % len(CATEGORIES)], CATEGORIES[(3 * j + 1) % len(CATEGORIES)]]
        tensors.update({f"{j}.latents": torch.randn(16, T_, h, w, generator=g),
                        f"{j}.text": torch.randn(text_tokens, text_dim, generator=g),
                        f"{j}.phys": torch.randn(text_tokens // 2 + 1, text_dim, generator=g),
                        f"{j}.flow": 0.3 * torch.randn(2, T_, h, w, generator=g),
                        f"{j}.jac": 0.05 * torch.randn(4, T_, h, w, generator=g),
                        f"{j}.conf": torch.rand(1, T_, h, w, generator=g).clamp(0.05, 1),
                        f"{j}.labels": multi_hot(labels)})
        samples.append({"index": j, "id": f"random_{j}", "labels": labels, "caption": "random"})
    save_file(tensors, str(out / "shard_00000.safetensors"))
    _atomic_json(out / "shard_00000.json", {"file": "shard_00000.safetensors", "samples": samples, "skipped": {}})
    write_index(out)
    return out


def bench_encoders(*, size: str = "81x480x832", device: str = "auto", tiny: bool = False, caption_tokens: int = 120,
                   physics_tokens: int = 60, repeats: int = 2, cpu_side: bool = True) -> dict:
    """Per-clip cost of caching at `size`: the VAE encode and the two UMT5 encodes on `device` (real-size Wan 2.1
    VAE and UMT5-XXL architectures with random weights, bf16 on CUDA; `tiny`: the test encoders), and the CPU half
    (optical-flow targets on a synthetic clip; decoding is not included) when OpenCV and kornia are importable.
    Best of `repeats` after one warm-up. Hours for N clips on G GPUs ~ N / G x max(gpu, cpu / workers) / 3600."""
    import time
    from transformers import UMT5Config, UMT5EncoderModel
    dev = _device(device)
    F_, H, W = (int(x) for x in size.lower().split("x"))
    sync = (lambda: torch.cuda.synchronize()) if dev == "cuda" else (lambda: None)  # noqa: E731
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    t0 = time.perf_counter()
    if tiny:
        vae, text = LatentEncoder(tiny_vae(), device=dev), tiny_text_encoder(max_len=512)
        text.model.to(dev)
        text.device = dev
    else:
        from diffusers import AutoencoderKLWan
        cfg = json.loads((CONFIG_DIR / "umt5_xxl.json").read_text())
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dt)  # build the 5.7 B-parameter encoder directly in its compute dtype
        try:
            with torch.device(dev):
                t5 = UMT5EncoderModel(UMT5Config(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
        finally:
            torch.set_default_dtype(prev)
        vae = LatentEncoder(AutoencoderKLWan(), device=dev, dtype=dt)  # its defaults are the Wan 2.1 VAE
        text = TextEncoder(t5, ByteTokenizer(), max_len=512, device=dev)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (F_, H, W, 3), dtype=np.uint8)
    vocab = text.model.config.vocab_size

    def best(fn) -> float:
        ts = []
        for _ in range(repeats + 1):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
        return min(ts[1:]) if len(ts) > 1 else ts[0]

    ids = lambda n: torch.randint(2, vocab, (1, n), device=dev)  # noqa: E731

    def t5_call(n):
        with torch.no_grad():
            i = ids(n)
            text.model(input_ids=i, attention_mask=torch.ones_like(i))

    r = {"size": f"{F_}x{H}x{W}", "device": dev, "encoders": "tiny" if tiny else "Wan 2.1 VAE + UMT5-XXL (random weights)",
         "dtype": str(dt).removeprefix("torch."), "build_s": build_s,
         "vae_s": best(lambda: vae(frames)), "umt5_s": best(lambda: (t5_call(caption_tokens), t5_call(physics_tokens)))}
    r["gpu_s_per_clip"] = r["vae_s"] + r["umt5_s"]
    if dev == "cuda":
        r["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    if cpu_side:
        try:
            ys, xs = np.mgrid[0:H, 0:W]
            tex = ((np.sin(xs / 7.0) + np.cos(ys / 5.0)) * 60 + 128).astype(np.uint8)
            moving = np.stack([np.roll(tex, (f, 2 * f), axis=(0, 1)) for f in range(F_)])[..., None].repeat(3, -1)
            t = time.perf_counter()
            flow_targets(moving)  # once: seconds per call already, and the GPU check's time box is short
            r["flow_s"] = time.perf_counter() - t
        except ImportError as e:
            r["flow_s"] = None
            r["flow_note"] = f"not measured: {e}"
    return r


def write_index(out: Path, cfg: CacheConfig | None = None) -> dict:
    """Collect the finished shards' JSON into `index.json` (re-runnable at any time)."""
    shards, skipped, used = [], Counter(), 0
    for p in sorted(out.glob("shard_*.json")):
        s = json.loads(p.read_text())
        skipped.update(s.get("skipped", {}))
        if s.get("file") and s["samples"]:
            shards.append({"file": s["file"], "samples": len(s["samples"]),
                           "labels": [x["labels"] for x in s["samples"]]})
            used += len(s["samples"])
    index = {"version": 1, "used": used, "skipped": dict(skipped), "shards": shards,
             "config": asdict(cfg) if cfg is not None else None}
    _atomic_json(out / INDEX, index)
    log.info("cache: %d clips used, skipped %s", used, dict(skipped) or "none")
    return index


class CachedClips(torch.utils.data.Dataset):
    """The cache as a dataset: item i -> {"latents", "text", "phys", "flow", "jac", "conf", "labels"} (float32)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / INDEX).is_file():
            raise FileNotFoundError(f"{self.root / INDEX} not found: run `python -m training.cache ... --out {root}` first")
        self.index = json.loads((self.root / INDEX).read_text())
        self.items = [(s["file"], j) for s in self.index["shards"] for j in range(s["samples"])]
        self._open: dict[str, object] = {}
        if not self.items:
            raise ValueError(f"the cache at {root} holds no usable clips (skipped: {self.index['skipped']})")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        from safetensors import safe_open
        file, j = self.items[i]
        if file not in self._open:
            self._open[file] = safe_open(str(self.root / file), framework="pt", device="cpu")
        fh = self._open[file]
        return {k: fh.get_tensor(f"{j}.{k}").float() for k in ("latents", "text", "phys", "flow", "jac", "conf", "labels")}


def collate(items: list[dict[str, Tensor]], *, text_len: int) -> dict[str, Tensor]:
    """Stack a batch; caption states zero-padded to `text_len` rows (Wan's context), physics states to the
    longest in the batch with a mask."""
    out = {k: torch.stack([it[k] for it in items]) for k in ("latents", "flow", "jac", "conf", "labels")}
    Dm = items[0]["text"].shape[-1]
    text = torch.zeros(len(items), text_len, Dm)
    for b, it in enumerate(items):
        L = min(text_len, it["text"].shape[0])
        text[b, :L] = it["text"][:L]
    Lp = max(it["phys"].shape[0] for it in items)
    phys, mask = torch.zeros(len(items), Lp, Dm), torch.zeros(len(items), Lp, dtype=torch.bool)
    for b, it in enumerate(items):
        phys[b, : it["phys"].shape[0]] = it["phys"]
        mask[b, : it["phys"].shape[0]] = True
    out.update(text=text, phys=phys, phys_mask=mask)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f, default in asdict(CacheConfig()).items():
        flag = "--" + f.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", default=default)
        else:
            p.add_argument(flag, type=type(default), default=default)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--bench-encoders", metavar="FxHxW", default=None,
                   help="only time one clip's VAE + UMT5 encodes (random weights; --tiny for the test encoders) and "
                        "its flow targets at this size, e.g. 81x480x832; prints one JSON line")
    a = vars(p.parse_args(argv))
    progress = not a.pop("no_progress")
    bench_size = a.pop("bench_encoders")
    if bench_size:
        print(json.dumps(bench_encoders(size=bench_size, device=a["device"], tiny=a["tiny"])), flush=True)
        return
    cfg = CacheConfig(**a)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    index = build_cache(cfg, rank=rank, world=world, progress=progress)
    if rank == 0:
        print(f"cache: {index['used']} clips used, skipped {index['skipped'] or 'none'} -> {cfg.out}/{INDEX}")


if __name__ == "__main__":
    main()
