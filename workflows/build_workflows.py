"""Writes the example workflows in this folder (ComfyUI UI format, version 0.4), so that they stay consistent:

    python workflows/build_workflows.py

Model file names follow ComfyUI's repackaged Wan files; the adapter file name is the one the PILA README tells
users to put in models/pila. The test tests/comfy/test_comfy_workflows.py checks every file against the
frontend's workflow schema and every widget value against the live node definitions.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADAPTER = "pila_wan2.1_t2v_1.3B.safetensors"
WAN21 = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN22_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
HF = "https://huggingface.co/Comfy-Org"
URLS = {
    WAN21: (f"{HF}/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/{WAN21}", "diffusion_models"),
    WAN22_HIGH: (f"{HF}/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/{WAN22_HIGH}", "diffusion_models"),
    WAN22_LOW: (f"{HF}/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/{WAN22_LOW}", "diffusion_models"),
    UMT5: (f"{HF}/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/{UMT5}", "text_encoders"),
    VAE: (f"{HF}/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/{VAE}", "vae"),
}
PROMPT = ("A glass bottle falls off a wooden table and shatters on a stone floor, water splashes outward and spreads "
          "into a puddle, slow motion, static camera, soft daylight.")
NEGATIVE = ("static, frozen, blurry, low quality, worst quality, jpeg artifacts, deformed, distorted, subtitles, "
            "watermark, extra objects, overexposed")
OVERRIDES = ["auto"] * 8
ROUTER = [4, 2.0, 2.0, "", "all", 1.0, 0.05]  # top_k, prior, temperature, exclude, steps, strength, gate floor


class Graph:
    """Just enough of the UI format: nodes with sockets, widget values and links."""

    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def node(self, type_: str, pos, widgets=(), inputs=(), outputs=(), *, size=(320, 130), title=None, models=()):
        n = {"id": len(self.nodes) + 1, "type": type_, "pos": list(pos), "size": list(size), "flags": {},
             "order": len(self.nodes), "mode": 0,
             "inputs": [{"name": name, "type": t, "link": None, **({"widget": {"name": name}} if w else {})}
                        for name, t, *w in inputs],
             "outputs": [{"name": name, "type": t, "links": [], "slot_index": i} for i, (name, t) in enumerate(outputs)],
             "properties": {"Node name for S&R": type_},
             "widgets_values": list(widgets)}
        if models:
            n["properties"]["models"] = [{"name": m, "url": URLS[m][0], "directory": URLS[m][1]} for m in models]
        if title:
            n["title"] = title
        self.nodes.append(n)
        return n

    def link(self, src: dict, out_slot: int, dst: dict, input_name: str):
        idx = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == input_name)
        lid = len(self.links) + 1
        t = src["outputs"][out_slot]["type"]
        assert dst["inputs"][idx]["type"] == t or dst["inputs"][idx].get("widget"), (src["type"], dst["type"], input_name)
        self.links.append([lid, src["id"], out_slot, dst["id"], idx, t])
        src["outputs"][out_slot]["links"].append(lid)
        dst["inputs"][idx]["link"] = lid

    def to_json(self, title: str) -> dict:
        return {"revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}, "info": {"name": title}}, "version": 0.4}


# ---- node helpers ------------------------------------------------------------------------------------------------
def text_stack(g: Graph, x: int, y: int):
    clip = g.node("CLIPLoader", (x, y), [UMT5, "wan", "default"], outputs=[("CLIP", "CLIP")], models=[UMT5])
    prompt = g.node("PrimitiveStringMultiline", (x, y + 170), [PROMPT], outputs=[("STRING", "STRING")],
                    title="Prompt", size=(360, 160))
    pos = g.node("CLIPTextEncode", (x + 400, y), [PROMPT], [("clip", "CLIP"), ("text", "STRING", True)],
                 [("CONDITIONING", "CONDITIONING")], title="Positive")
    neg = g.node("CLIPTextEncode", (x + 400, y + 170), [NEGATIVE], [("clip", "CLIP")],
                 [("CONDITIONING", "CONDITIONING")], title="Negative", size=(360, 160))
    g.link(clip, 0, pos, "clip")
    g.link(clip, 0, neg, "clip")
    g.link(prompt, 0, pos, "text")
    return clip, prompt, pos, neg


def pila_stack(g: Graph, x: int, y: int, clip: dict, prompt: dict, *, strength: float = 1.0):
    loader = g.node("PILAAdapterLoader", (x, y), [ADAPTER, "auto", "auto"], outputs=[("adapter", "PILA_ADAPTER")])
    parser = g.node("PILAPhysicsLabelParser", (x, y + 170), [PROMPT, "default", *OVERRIDES, ""],
                    [("prompt", "STRING", True)], [("labels", "PILA_LABELS"), ("description", "STRING")], size=(340, 330))
    router = g.node("PILAExpertRouter", (x + 380, y), [*ROUTER[:5], strength, ROUTER[6]],
                    [("adapter", "PILA_ADAPTER"), ("labels", "PILA_LABELS")], [("routing", "PILA_ROUTING")], size=(320, 250))
    physics = g.node("CLIPTextEncode", (x + 380, y + 290), [""], [("clip", "CLIP"), ("text", "STRING", True)],
                     [("CONDITIONING", "CONDITIONING")], title="Physics description (UMT5)")
    g.link(prompt, 0, parser, "prompt")
    g.link(loader, 0, router, "adapter")
    g.link(parser, 0, router, "labels")
    g.link(clip, 0, physics, "clip")
    g.link(parser, 1, physics, "text")
    return loader, router, physics


def correction(g: Graph, pos, model_src, loader, router, positive, physics, *, diagnostics=False):
    n = g.node("PILAFlowCorrection", pos, [diagnostics],
               [("model", "MODEL"), ("adapter", "PILA_ADAPTER"), ("routing", "PILA_ROUTING"),
                ("positive", "CONDITIONING"), ("physics", "CONDITIONING")], [("model", "MODEL")])
    g.link(model_src, 0, n, "model")
    g.link(loader, 0, n, "adapter")
    g.link(router, 0, n, "routing")
    g.link(positive, 0, n, "positive")
    g.link(physics, 0, n, "physics")
    return n


def ksampler(g: Graph, pos, model, positive, negative, latent, *, seed=42, steps=30, cfg=6.0, title=None):
    n = g.node("KSampler", pos, [seed, "fixed", steps, cfg, "uni_pc", "simple", 1.0],
               [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                ("latent_image", "LATENT")], [("LATENT", "LATENT")], size=(320, 262), title=title)
    g.link(model, 0, n, "model")
    g.link(positive, 0, n, "positive")
    g.link(negative, 0, n, "negative")
    g.link(latent, 0, n, "latent_image")
    return n


def decode(g: Graph, pos, samples, vae, slot: int = 0):
    n = g.node("VAEDecode", pos, [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], size=(210, 50))
    g.link(samples, slot, n, "samples")
    g.link(vae, 0, n, "vae")
    return n


def save_video(g: Graph, pos, images, prefix: str, fps: float = 16.0):
    cv = g.node("CreateVideo", pos, [fps], [("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")], size=(270, 80))
    sv = g.node("SaveVideo", (pos[0] + 300, pos[1]), [prefix, "auto", "auto"], [("video", "VIDEO")], size=(400, 400))
    g.link(images, 0, cv, "images")
    g.link(cv, 0, sv, "video")
    return sv


# ---- workflows ------------------------------------------------------------------------------------------------------
def wan21_stack(g: Graph):
    """Text encoders, VAE and the Wan 2.1 1.3B model behind ModelSamplingSD3 (shift 8, ComfyUI's Wan default)."""
    clip, prompt, pos, neg = text_stack(g, 0, 0)
    vae = g.node("VAELoader", (0, 380), [VAE], outputs=[("VAE", "VAE")], models=[VAE])
    unet = g.node("UNETLoader", (0, 480), [WAN21, "default"], outputs=[("MODEL", "MODEL")], models=[WAN21])
    shift = g.node("ModelSamplingSD3", (400, 480), [8.0], [("model", "MODEL")], [("MODEL", "MODEL")], size=(270, 60))
    g.link(unet, 0, shift, "model")
    return clip, prompt, pos, neg, vae, shift


def wan21_t2v() -> dict:
    g = Graph()
    clip, prompt, pos, neg, vae, shift = wan21_stack(g)
    loader, router, physics = pila_stack(g, 820, 0, clip, prompt)
    pila = correction(g, (1580, 0), shift, loader, router, pos, physics, diagnostics=True)
    latent = g.node("EmptyHunyuanLatentVideo", (820, 660), [832, 480, 33, 1], outputs=[("LATENT", "LATENT")])
    ks = ksampler(g, (1580, 200), pila, pos, neg, latent)
    img = decode(g, (1960, 200), ks, vae)
    save_video(g, (2220, 200), img, "video/PILA_wan2.1")
    maps = g.node("PILAExpertMaps", (1960, 520), [32], [("model", "MODEL"), ("samples", "LATENT")],
                  [("expert_maps", "IMAGE"), ("router_weights", "IMAGE")])
    g.link(pila, 0, maps, "model")
    g.link(ks, 0, maps, "samples")
    for i, name in enumerate(["Expert change maps (Fig. 7)", "Router weights per step (Fig. 6)"]):
        p = g.node("PreviewImage", (2320 + 360 * i, 640), [], [("images", "IMAGE")], title=name, size=(340, 300))
        g.link(maps, i, p, "images")
    return g.to_json("Wan 2.1 T2V 1.3B + PILA")


def wan22_t2v() -> dict:
    g = Graph()
    clip, prompt, pos, neg = text_stack(g, 0, 0)
    vae = g.node("VAELoader", (0, 380), [VAE], outputs=[("VAE", "VAE")], models=[VAE])
    models = []
    for i, (name, title) in enumerate([(WAN22_HIGH, "High-noise expert"), (WAN22_LOW, "Low-noise expert")]):
        u = g.node("UNETLoader", (0, 480 + 140 * i), [name, "default"], outputs=[("MODEL", "MODEL")], models=[name], title=title)
        s = g.node("ModelSamplingSD3", (400, 480 + 140 * i), [8.0], [("model", "MODEL")], [("MODEL", "MODEL")], size=(270, 60))
        g.link(u, 0, s, "model")
        models.append(s)
    loader, router, physics = pila_stack(g, 820, 0, clip, prompt)
    latent = g.node("EmptyHunyuanLatentVideo", (820, 660), [640, 640, 81, 1], outputs=[("LATENT", "LATENT")])
    sampler = g.node("PILAFlowCorrectionSamplerWan22", (1580, 0), [42, "fixed", 20, 3.5, "euler", "simple", 0.875, False],
                     [("model_high_noise", "MODEL"), ("model_low_noise", "MODEL"), ("adapter", "PILA_ADAPTER"),
                      ("routing", "PILA_ROUTING"), ("positive", "CONDITIONING"), ("physics", "CONDITIONING"),
                      ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                     [("latent", "LATENT"), ("model_low_noise", "MODEL")], size=(360, 420))
    g.link(models[0], 0, sampler, "model_high_noise")
    g.link(models[1], 0, sampler, "model_low_noise")
    g.link(loader, 0, sampler, "adapter")
    g.link(router, 0, sampler, "routing")
    g.link(pos, 0, sampler, "positive")
    g.link(physics, 0, sampler, "physics")
    g.link(neg, 0, sampler, "negative")
    g.link(latent, 0, sampler, "latent_image")
    img = decode(g, (1980, 0), sampler, vae)
    save_video(g, (2240, 0), img, "video/PILA_wan2.2_A14B")
    return g.to_json("Wan 2.2 T2V A14B + PILA (same adapter on both experts)")


def ab_compare() -> dict:
    g = Graph()
    clip, prompt, pos, neg, vae, shift = wan21_stack(g)
    loader, router, physics = pila_stack(g, 820, 0, clip, prompt)
    pila = correction(g, (1580, 0), shift, loader, router, pos, physics)
    latent = g.node("EmptyHunyuanLatentVideo", (820, 660), [832, 480, 33, 1], outputs=[("LATENT", "LATENT")])
    ks_a = ksampler(g, (1580, 200), shift, pos, neg, latent, title="A: Wan 2.1 (no correction)")
    ks_b = ksampler(g, (1580, 500), pila, pos, neg, latent, title="B: Wan 2.1 + PILA (same seed)")
    img_a = decode(g, (1960, 200), ks_a, vae)
    img_b = decode(g, (1960, 500), ks_b, vae)
    stitch = g.node("ImageStitch", (2220, 300), ["right", True, 16, "white"], [("image1", "IMAGE"), ("image2", "IMAGE")],
                    [("IMAGE", "IMAGE")], title="A | B side by side", size=(270, 150))
    g.link(img_a, 0, stitch, "image1")
    g.link(img_b, 0, stitch, "image2")
    save_video(g, (2520, 300), stitch, "video/PILA_AB")
    return g.to_json("A/B: Wan 2.1 with and without PILA, same seed")


WORKFLOWS = {
    "pila_wan2.1_t2v_1.3B": wan21_t2v,
    "pila_wan2.2_t2v_A14B": wan22_t2v,
    "pila_ab_compare_wan2.1": ab_compare,
}


def main():
    for name, build in WORKFLOWS.items():
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
