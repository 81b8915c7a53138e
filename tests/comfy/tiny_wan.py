"""Writes a tiny random Wan checkpoint with the original Wan key names (run inside a ComfyUI checkout).

    python tests/comfy/tiny_wan.py OUT.safetensors --comfyui ~/ComfyUI [--dim 256 --layers 2 --channels 16]
    python tests/comfy/tiny_wan.py A.safetensors B.safetensors:seed=1 C.safetensors:channels=48,dim=128,layers=1 ...
    python tests/comfy/tiny_wan.py I2V.safetensors:i2v=1 FLF.safetensors:i2v=1,flf=514 W22I2V.safetensors:in_dim=36 \
        --vae VAE.safetensors --comfyui ~/ComfyUI

(per-file overrides after a colon; one process, one ComfyUI import). i2v=1: a Wan 2.1 I2V 14B-style model (36 input
channels: the 16-channel noise latent + 4 mask + 16 image channels, and the CLIP-vision projection img_emb); flf=N:
with the first-last-frame position embedding for N CLIP tokens; in_dim=36 without i2v: a Wan 2.2 I2V A14B-style
model (image channels, no CLIP vision). --vae: a random full-size Wan 2.1 VAE (its size is fixed by ComfyUI's
detection).

Uses ComfyUI's own WanModel class so that the keys are exactly what its model detection expects. A separate
process: importing ComfyUI into the pytest process would shadow this repository's `nodes` package.
"""
import argparse
import os
import sys

p = argparse.ArgumentParser()
p.add_argument("out", nargs="+")
p.add_argument("--comfyui", required=True)
p.add_argument("--dim", type=int, default=256)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--channels", type=int, default=16)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--vae", default="")
a = p.parse_args()

repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, repo)
from pila.compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()
sys.path.insert(0, os.path.abspath(os.path.expanduser(a.comfyui)))
os.chdir(os.path.abspath(os.path.expanduser(a.comfyui)))
import torch  # noqa: E402

import comfy.cli_args  # noqa: E402

if torch.version.cuda is None:
    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
from safetensors.torch import save_file  # noqa: E402

import comfy.ops  # noqa: E402
from comfy.ldm.wan.model import WanModel  # noqa: E402



def write(out: str, dim: int, layers: int, channels: int, seed: int, i2v: int = 0, in_dim: int = 0, flf: int = 0):
    torch.manual_seed(seed)
    m = WanModel(model_type="i2v" if i2v else "t2v", in_dim=in_dim or (36 if i2v else channels), out_dim=channels,
                 dim=dim, ffn_dim=2 * dim, num_heads=dim // 128, num_layers=layers,
                 flf_pos_embed_token_number=flf or None, operations=comfy.ops.disable_weight_init)
    sd = {}
    for k, t in m.state_dict().items():
        if k.endswith("norm_q.weight") or k.endswith("norm_k.weight") or ".norm3.weight" in k or \
                (k.startswith("img_emb.proj.") and k.endswith("weight") and t.ndim == 1):
            sd[k] = torch.ones(t.shape)
        elif t.ndim >= 2 or k.endswith("modulation"):
            sd[k] = torch.randn(t.shape) * 0.02
        else:
            sd[k] = torch.zeros(t.shape)
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()}, out)
    print(f"wrote {out}: {len(sd)} tensors, {sum(v.numel() for v in sd.values()) / 1e6:.2f} M params")


def write_vae(out: str):
    from comfy.ldm.wan.vae import WanVAE
    torch.manual_seed(0)
    m = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=[False, True, True], dropout=0.0)
    sd = {}
    for k, t in m.state_dict().items():  # ComfyUI's ops leave weights uninitialised: scale-preserving random ones
        if t.ndim >= 2:
            sd[k] = torch.randn(t.shape) / max(1, t[0].numel()) ** 0.5
        else:
            sd[k] = torch.ones(t.shape) if k.endswith("gamma") else torch.zeros(t.shape)
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()}, out)
    print(f"wrote {out}: a random Wan 2.1 VAE")


if a.vae:
    write_vae(a.vae)
for spec in a.out:
    path, _, extra = spec.partition(":")
    opts = {"dim": a.dim, "layers": a.layers, "channels": a.channels, "seed": a.seed, "i2v": 0, "in_dim": 0, "flf": 0}
    for kv in filter(None, extra.split(",")):
        k, v = kv.split("=")
        assert k in opts, f"unknown option {k} ({', '.join(opts)})"
        opts[k] = int(v)
    write(path, **opts)
