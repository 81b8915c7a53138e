"""Writes the example workflows in this folder (ComfyUI UI format, version 0.4) and their thumbnails, so that they
stay consistent:

    python workflows/build_workflows.py

Laid out like ComfyUI's own Wan templates: one group per step, a Markdown note with what each part does and where
each model file goes, readable titles, seeds on randomize. Node ids are stable (nodes are numbered in creation order;
Note/MarkdownNote nodes and groups are added after the executable nodes). Model file names follow ComfyUI's
repackaged Wan files. No PILA adapter weights are published, so the adapter has no download link (the loader
reports a missing file before anything runs); the notes say how to train one. The thumbnail next to each file
(`<name>.jpg`, what the template browser asks for) is a drawing of the graph's groups and nodes.
tests/comfy/test_comfy_workflows.py checks every file against the frontend's workflow schema and every widget value
against the live node definitions.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADAPTER = "pila_wan2.1_t2v_1.3B.safetensors"
WAN21 = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN22_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
WAN22_I2V_HIGH = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_I2V_LOW = "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
START_IMAGE = "example.png"  # ships in ComfyUI's input/ folder
HF = "https://huggingface.co/Comfy-Org"
URLS = {
    WAN21: (f"{HF}/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/{WAN21}", "diffusion_models"),
    WAN22_HIGH: (f"{HF}/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/{WAN22_HIGH}", "diffusion_models"),
    WAN22_LOW: (f"{HF}/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/{WAN22_LOW}", "diffusion_models"),
    WAN22_I2V_HIGH: (f"{HF}/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/{WAN22_I2V_HIGH}",
                     "diffusion_models"),
    WAN22_I2V_LOW: (f"{HF}/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/{WAN22_I2V_LOW}",
                    "diffusion_models"),
    UMT5: (f"{HF}/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/{UMT5}", "text_encoders"),
    VAE: (f"{HF}/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/{VAE}", "vae"),
}
PROMPT = ("A glass bottle falls off a wooden table and shatters on a stone floor, water splashes outward and spreads "
          "into a puddle, slow motion, static camera, soft daylight.")
I2V_PROMPT = ("The ball rolls off the edge, falls and bounces twice on the floor, losing height with each bounce, "
              "static camera.")
NEGATIVE = ("static, frozen, blurry, low quality, worst quality, jpeg artifacts, deformed, distorted, subtitles, "
            "watermark, extra objects, overexposed")
OVERRIDES = ["auto"] * 8
# top_k, prior, temperature, exclude, steps, strength, gate floor, start_percent, end_percent
ROUTER = [4, 2.0, 2.0, "", "all", 1.0, 0.05, 0.0, 1.0]
SEED = 42

NO_WEIGHTS = (
    "**No PILA adapter weights have been published.** The loader's file (`models/pila/" + ADAPTER + "`) does not "
    "exist until you make one: train an adapter with the repository's `training/` module (README, *Getting an "
    "adapter*) and copy the `.safetensors` file it writes into `ComfyUI/models/pila/`. Until then the PILA Adapter "
    "Loader reports the missing file when you press Run, before anything samples. The quick start's adapter "
    "(`python -m training.quickstart`) is a toy for its tiny random model: it does not fit a real Wan model.")

TITLE_H = 30  # LiteGraph draws a node's title bar above its position
GROUP_HEADER = 46  # a group's title row (font size 24) above its first node
PAD = 20


# ---- the UI format ---------------------------------------------------------------------------------------------------
class Graph:
    """Just enough of the UI format: nodes with sockets, widget values, links and groups."""

    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def node(self, type_: str, widgets=(), inputs=(), outputs=(), *, size=(320, 130), title=None, models=()):
        n = {"id": len(self.nodes) + 1, "type": type_, "pos": [0, 0], "size": list(size), "flags": {},
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

    def note(self, text: str, *, title: str, size=(420, 300), markdown: bool = True):
        n = self.node("MarkdownNote" if markdown else "Note", [text], size=size, title=title)
        n["color"], n["bgcolor"] = "#432", "#653"  # the official templates' note colours
        n["properties"] = {}
        return n

    def link(self, src: dict, out_slot: int, dst: dict, input_name: str):
        idx = next(i for i, s in enumerate(dst["inputs"]) if s["name"] == input_name)
        lid = len(self.links) + 1
        t = src["outputs"][out_slot]["type"]
        assert dst["inputs"][idx]["type"] == t or dst["inputs"][idx].get("widget"), (src["type"], dst["type"], input_name)
        self.links.append([lid, src["id"], out_slot, dst["id"], idx, t])
        src["outputs"][out_slot]["links"].append(lid)
        dst["inputs"][idx]["link"] = lid

    def group(self, title: str, x: int, y: int, columns: list[list[dict]], gap: int = 24) -> tuple[int, int]:
        """Places `columns` of nodes (top to bottom) inside a group whose top-left corner is (x, y); returns the
        group's (width, height)."""
        cx, bottom = x + PAD, y
        for col in columns:
            cy = y + GROUP_HEADER + TITLE_H
            for n in col:
                n["pos"] = [cx, cy]
                cy += n["size"][1] + TITLE_H + gap
            bottom = max(bottom, cy - gap)
            cx += max(n["size"][0] for n in col) + 2 * PAD
        w, h = cx - x - PAD, bottom - y + PAD
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x, y, w, h], "color": "#3f789e",
                            "font_size": 24, "flags": {}})
        return w, h

    def to_json(self, title: str) -> dict:
        return {"revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.55, "offset": [640, 100]}, "info": {"name": title}}, "version": 0.4}


def row(g: Graph, x: int, y: int, groups: list[tuple[str, list[list[dict]]]], gap: int = 40) -> int:
    """Groups side by side from (x, y); returns the bottom of the tallest."""
    bottom = y
    for title, columns in groups:
        w, h = g.group(title, x, y, columns)
        x += w + gap
        bottom = max(bottom, y + h)
    return bottom


def model_links(models: list[str], what: list[str]) -> str:
    """The Markdown note: what each step does, and where each model file goes."""
    by_dir: dict[str, list[str]] = {}
    for m in models:
        by_dir.setdefault(URLS[m][1], []).append(f"- [{m}]({URLS[m][0]})")
    files = "\n".join(f"**ComfyUI/models/{d}/**\n" + "\n".join(items) + "\n" for d, items in by_dir.items())
    steps = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(what))
    return (f"## What this workflow does\n\n{steps}\n\n## Model files\n\n{files}\n"
            f"**ComfyUI/models/pila/**\n- `{ADAPTER}`: your own trained adapter (see the PILA adapter note)\n")


# ---- node helpers ------------------------------------------------------------------------------------------------
def text_nodes(g: Graph, prompt_text: str = PROMPT):
    clip = g.node("CLIPLoader", [UMT5, "wan", "default"], outputs=[("CLIP", "CLIP")], models=[UMT5],
                  title="Load text encoder (UMT5-XXL)", size=(360, 110))
    prompt = g.node("PrimitiveStringMultiline", [prompt_text], outputs=[("STRING", "STRING")],
                    title="Prompt", size=(400, 160))
    pos = g.node("CLIPTextEncode", [prompt_text], [("clip", "CLIP"), ("text", "STRING", True)],
                 [("CONDITIONING", "CONDITIONING")], title="Positive prompt (from Prompt)", size=(400, 80))
    neg = g.node("CLIPTextEncode", [NEGATIVE], [("clip", "CLIP")],
                 [("CONDITIONING", "CONDITIONING")], title="Negative prompt", size=(400, 150))
    g.link(clip, 0, pos, "clip")
    g.link(clip, 0, neg, "clip")
    g.link(prompt, 0, pos, "text")
    return clip, prompt, pos, neg


def vae_node(g: Graph):
    return g.node("VAELoader", [VAE], outputs=[("VAE", "VAE")], models=[VAE], title="Load VAE (Wan 2.1)", size=(360, 60))


def unet_with_shift(g: Graph, name: str, title: str, shift: float = 8.0):
    u = g.node("UNETLoader", [name, "default"], outputs=[("MODEL", "MODEL")], models=[name], title=title, size=(400, 85))
    s = g.node("ModelSamplingSD3", [shift], [("model", "MODEL")], [("MODEL", "MODEL")],
               title=f"Schedule shift {shift:g} (ModelSamplingSD3)", size=(360, 60))
    g.link(u, 0, s, "model")
    return u, s


def pila_nodes(g: Graph, clip: dict, prompt: dict, *, strength: float = 1.0):
    loader = g.node("PILAAdapterLoader", [ADAPTER, "auto", "auto"], outputs=[("adapter", "PILA_ADAPTER")],
                    title="PILA adapter (train your own: see note)", size=(400, 110))
    parser = g.node("PILAPhysicsLabelParser", [PROMPT, "default", *OVERRIDES, "none"],
                    [("prompt", "STRING", True)], [("labels", "PILA_LABELS"), ("description", "STRING")],
                    title="Physics labels from the prompt", size=(400, 330))
    router = g.node("PILAExpertRouter", [*ROUTER[:5], strength, *ROUTER[6:]],
                    [("adapter", "PILA_ADAPTER"), ("labels", "PILA_LABELS")], [("routing", "PILA_ROUTING")],
                    title="Expert routing & strength", size=(400, 290))
    physics = g.node("CLIPTextEncode", [""], [("clip", "CLIP"), ("text", "STRING", True)],
                     [("CONDITIONING", "CONDITIONING")], title="Encode the physics description (UMT5)", size=(400, 80))
    g.link(prompt, 0, parser, "prompt")
    g.link(loader, 0, router, "adapter")
    g.link(parser, 0, router, "labels")
    g.link(clip, 0, physics, "clip")
    g.link(parser, 1, physics, "text")
    return loader, parser, router, physics


def correction(g: Graph, model_src, loader, router, positive, physics, *, diagnostics=False, title="PILA flow correction"):
    n = g.node("PILAFlowCorrection", [diagnostics],
               [("model", "MODEL"), ("adapter", "PILA_ADAPTER"), ("routing", "PILA_ROUTING"),
                ("positive", "CONDITIONING"), ("physics", "CONDITIONING")], [("model", "MODEL")],
               title=title, size=(340, 150))
    g.link(model_src, 0, n, "model")
    g.link(loader, 0, n, "adapter")
    g.link(router, 0, n, "routing")
    g.link(positive, 0, n, "positive")
    g.link(physics, 0, n, "physics")
    return n


def ksampler(g: Graph, model, positive, negative, latent, *, steps=30, cfg=6.0, title="Sample (KSampler)"):
    n = g.node("KSampler", [SEED, "randomize", steps, cfg, "uni_pc", "simple", 1.0],
               [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                ("latent_image", "LATENT")], [("LATENT", "LATENT")], size=(340, 270), title=title)
    g.link(model, 0, n, "model")
    g.link(positive, 0, n, "positive")
    g.link(negative, 0, n, "negative")
    g.link(latent, 0, n, "latent_image")
    return n


def decode(g: Graph, samples, vae, slot: int = 0, title="Decode (VAE)"):
    n = g.node("VAEDecode", [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], size=(240, 50),
               title=title)
    g.link(samples, slot, n, "samples")
    g.link(vae, 0, n, "vae")
    return n


def save_video(g: Graph, images, prefix: str, fps: float = 16.0):
    cv = g.node("CreateVideo", [fps], [("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")], size=(270, 80),
                title="Make video (16 fps)")
    sv = g.node("SaveVideo", [prefix, "auto", "auto"], [("video", "VIDEO")], size=(480, 420), title="Save video")
    g.link(images, 0, cv, "images")
    g.link(cv, 0, sv, "video")
    return cv, sv


def wan22_sampler(g: Graph, high, low, loader, router, pos, physics, neg, latent, *, switch=0.875, title):
    n = g.node("PILAFlowCorrectionSamplerWan22", [SEED, "randomize", 20, 3.5, "euler", "simple", switch, False],
               [("model_high_noise", "MODEL"), ("model_low_noise", "MODEL"), ("adapter", "PILA_ADAPTER"),
                ("routing", "PILA_ROUTING"), ("positive", "CONDITIONING"), ("physics", "CONDITIONING"),
                ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
               [("latent", "LATENT"), ("model_low_noise", "MODEL")], size=(380, 440), title=title)
    for src, slot, name in [(high, 0, "model_high_noise"), (low, 0, "model_low_noise"), (loader, 0, "adapter"),
                            (router, 0, "routing"), (pos, 0, "positive"), (physics, 0, "physics"), (neg, 0, "negative"),
                            (latent, 2 if latent["type"] == "WanImageToVideo" else 0, "latent_image")]:
        g.link(src, slot, n, name)
    return n


def notes(g: Graph, models: list[str], what: list[str], x: int = -520, y: int = 0):
    """The two notes every template carries, left of the graph (added last: executable node ids stay stable)."""
    about = g.note(model_links(models, what), title="About this workflow & model files", size=(460, 560))
    adapter = g.note(NO_WEIGHTS, title="PILA adapter: train your own", size=(460, 250))
    about["pos"] = [x, y + TITLE_H]
    adapter["pos"] = [x, y + TITLE_H + about["size"][1] + TITLE_H + 30]


PILA_STEP = ("**PILA adapter & physics**: the adapter, the physics labels parsed from the prompt (8 categories), the "
             "routing settings (top-k experts, label prior, strength, steps or start/end percent) and the physics "
             "description encoded with UMT5.")


# ---- workflows ------------------------------------------------------------------------------------------------------
def wan21_t2v() -> dict:
    g = Graph()
    clip, prompt, pos, neg = text_nodes(g)
    vae = vae_node(g)
    unet, shift = unet_with_shift(g, WAN21, "Load Wan 2.1 T2V 1.3B")
    loader, parser, router, physics = pila_nodes(g, clip, prompt)
    pila = correction(g, shift, loader, router, pos, physics, diagnostics=True)
    latent = g.node("EmptyHunyuanLatentVideo", [832, 480, 33, 1], outputs=[("LATENT", "LATENT")],
                    title="Video size & length (832x480, 33 frames)", size=(360, 150))
    ks = ksampler(g, pila, pos, neg, latent)
    img = decode(g, ks, vae)
    cv, sv = save_video(g, img, "video/PILA_wan2.1")
    maps = g.node("PILAExpertMaps", [32], [("model", "MODEL"), ("samples", "LATENT")],
                  [("expert_maps", "IMAGE"), ("router_weights", "IMAGE")], title="What the experts did", size=(340, 100))
    g.link(pila, 0, maps, "model")
    g.link(ks, 0, maps, "samples")
    previews = []
    for i, name in enumerate(["Expert change maps per step", "Router weights per step"]):
        p = g.node("PreviewImage", [], [("images", "IMAGE")], title=name, size=(360, 300))
        g.link(maps, i, p, "images")
        previews.append(p)
    bottom = row(g, 0, 0, [
        ("Step 1 - Load models", [[clip, vae, unet, shift]]),
        ("Step 2 - Prompt", [[prompt, pos, neg]]),
        ("Step 3 - Video size & length", [[latent]]),
        ("Step 4 - PILA adapter & physics", [[loader, router], [parser, physics]]),
        ("Step 5 - Correct & sample", [[pila, ks]]),
        ("Step 6 - Decode & save", [[img, cv, sv]]),
    ])
    row(g, 0, bottom + 60, [("Diagnostics - expert maps", [[maps], previews[:1], previews[1:]])])
    notes(g, [WAN21, UMT5, VAE], [
        "**Load models**: UMT5-XXL text encoder, the Wan 2.1 VAE and Wan 2.1 T2V 1.3B with ComfyUI's Wan schedule "
        "shift (8).", "**Prompt**: one prompt feeds the positive text and the physics label parser.",
        "**Video size & length**: the empty video latent.", PILA_STEP,
        "**Correct & sample**: PILA Flow Correction patches the model (a wrapper: stacks with LoRAs and caches); "
        "KSampler samples with it.", "**Decode & save**: VAE decode and an MP4.",
        "**Diagnostics**: per-step expert change maps and router weights (diagnostics is on in the correction)."])
    return g.to_json("Wan 2.1 T2V 1.3B + PILA")


def wan22_t2v() -> dict:
    g = Graph()
    clip, prompt, pos, neg = text_nodes(g)
    vae = vae_node(g)
    high_u, high = unet_with_shift(g, WAN22_HIGH, "Load Wan 2.2 T2V A14B high-noise expert")
    low_u, low = unet_with_shift(g, WAN22_LOW, "Load Wan 2.2 T2V A14B low-noise expert")
    loader, parser, router, physics = pila_nodes(g, clip, prompt)
    latent = g.node("EmptyHunyuanLatentVideo", [640, 640, 81, 1], outputs=[("LATENT", "LATENT")],
                    title="Video size & length (640x640, 81 frames)", size=(360, 150))
    sampler = wan22_sampler(g, high, low, loader, router, pos, physics, neg, latent,
                            title="PILA sampler, Wan 2.2 A14B (both experts)")
    img = decode(g, sampler, vae)
    cv, sv = save_video(g, img, "video/PILA_wan2.2_A14B")
    row(g, 0, 0, [
        ("Step 1 - Load models", [[clip, vae, high_u, high, low_u, low]]),
        ("Step 2 - Prompt", [[prompt, pos, neg]]),
        ("Step 3 - Video size & length", [[latent]]),
        ("Step 4 - PILA adapter & physics", [[loader, router], [parser, physics]]),
        ("Step 5 - Correct & sample", [[sampler]]),
        ("Step 6 - Decode & save", [[img, cv, sv]]),
    ])
    notes(g, [WAN22_HIGH, WAN22_LOW, UMT5, VAE], [
        "**Load models**: UMT5-XXL, the Wan 2.1 VAE (Wan 2.2 A14B uses it) and the two Wan 2.2 A14B experts.",
        "**Prompt**: one prompt feeds the positive text and the physics label parser.",
        "**Video size & length**: the empty video latent.", PILA_STEP,
        "**Correct & sample**: the same adapter corrects the high-noise expert (steps from sigma 0.875 up) and the "
        "low-noise expert; step ranges count over the whole schedule.", "**Decode & save**: VAE decode and an MP4."])
    return g.to_json("Wan 2.2 T2V A14B + PILA (same adapter on both experts)")


def ab_compare() -> dict:
    g = Graph()
    clip, prompt, pos, neg = text_nodes(g)
    vae = vae_node(g)
    unet, shift = unet_with_shift(g, WAN21, "Load Wan 2.1 T2V 1.3B")
    loader, parser, router, physics = pila_nodes(g, clip, prompt)
    pila = correction(g, shift, loader, router, pos, physics)
    latent = g.node("EmptyHunyuanLatentVideo", [832, 480, 33, 1], outputs=[("LATENT", "LATENT")],
                    title="Video size & length (832x480, 33 frames)", size=(360, 150))
    ks_a = ksampler(g, shift, pos, neg, latent, title="A: Wan 2.1 alone")
    ks_b = ksampler(g, pila, pos, neg, latent, title="B: Wan 2.1 + PILA (same seed)")
    img_a = decode(g, ks_a, vae, title="Decode A")
    img_b = decode(g, ks_b, vae, title="Decode B")
    stitch = g.node("ImageStitch", ["right", True, 16, "white"], [("image1", "IMAGE"), ("image2", "IMAGE")],
                    [("IMAGE", "IMAGE")], title="A | B side by side", size=(300, 150))
    g.link(img_a, 0, stitch, "image1")
    g.link(img_b, 0, stitch, "image2")
    cv, sv = save_video(g, stitch, "video/PILA_AB")
    # one seed for A and B (randomized after each run), so that the two runs differ only by the correction
    seed = g.node("PrimitiveInt", [SEED, "randomize"], outputs=[("INT", "INT")], title="Seed (A and B)", size=(300, 90))
    for ks in (ks_a, ks_b):
        ks["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None})
        g.link(seed, 0, ks, "seed")
    row(g, 0, 0, [
        ("Step 1 - Load models", [[clip, vae, unet, shift]]),
        ("Step 2 - Prompt", [[prompt, pos, neg]]),
        ("Step 3 - Video size & length", [[latent]]),
        ("Step 4 - PILA adapter & physics", [[loader, router], [parser, physics]]),
        ("Step 5 - Sample A and B", [[seed, pila], [ks_a, ks_b]]),
        ("Step 6 - Decode, stitch & save", [[img_a, img_b, stitch], [cv, sv]]),
    ])
    notes(g, [WAN21, UMT5, VAE], [
        "**Load models**: UMT5-XXL, the Wan 2.1 VAE and Wan 2.1 T2V 1.3B (shift 8).",
        "**Prompt**: one prompt feeds the positive text and the physics label parser.",
        "**Video size & length**: one empty latent for both runs.", PILA_STEP,
        "**Sample A and B**: A samples the plain model, B the PILA-corrected one, with one shared seed.",
        "**Decode, stitch & save**: A left, B right, in one MP4."])
    return g.to_json("A/B: Wan 2.1 with and without PILA")


def wan22_i2v() -> dict:
    g = Graph()
    clip, prompt, pos, neg = text_nodes(g, I2V_PROMPT)
    vae = vae_node(g)
    high_u, high = unet_with_shift(g, WAN22_I2V_HIGH, "Load Wan 2.2 I2V A14B high-noise expert")
    low_u, low = unet_with_shift(g, WAN22_I2V_LOW, "Load Wan 2.2 I2V A14B low-noise expert")
    image = g.node("LoadImage", [START_IMAGE, "image"], outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")],
                   title="Start frame", size=(360, 330))
    i2v = g.node("WanImageToVideo", [640, 640, 81, 1],
                 [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                  ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("start_image", "IMAGE")],
                 [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT")],
                 title="Image to video: size & length (640x640, 81 frames)", size=(360, 230))
    g.link(pos, 0, i2v, "positive")
    g.link(neg, 0, i2v, "negative")
    g.link(vae, 0, i2v, "vae")
    g.link(image, 0, i2v, "start_image")
    loader, parser, router, physics = pila_nodes(g, clip, prompt)
    parser["widgets_values"][0] = I2V_PROMPT
    # the image conditioning travels in WanImageToVideo's positive/negative; PILA corrects the 16-channel noise latent
    sampler = g.node("PILAFlowCorrectionSamplerWan22", [SEED, "randomize", 20, 3.5, "euler", "simple", 0.9, False],
                     [("model_high_noise", "MODEL"), ("model_low_noise", "MODEL"), ("adapter", "PILA_ADAPTER"),
                      ("routing", "PILA_ROUTING"), ("positive", "CONDITIONING"), ("physics", "CONDITIONING"),
                      ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                     [("latent", "LATENT"), ("model_low_noise", "MODEL")], size=(380, 440),
                     title="PILA sampler, Wan 2.2 A14B (both experts)")
    for src, slot, name in [(high, 0, "model_high_noise"), (low, 0, "model_low_noise"), (loader, 0, "adapter"),
                            (router, 0, "routing"), (i2v, 0, "positive"), (physics, 0, "physics"),
                            (i2v, 1, "negative"), (i2v, 2, "latent_image")]:
        g.link(src, slot, sampler, name)
    img = decode(g, sampler, vae)
    cv, sv = save_video(g, img, "video/PILA_wan2.2_i2v_A14B")
    row(g, 0, 0, [
        ("Step 1 - Load models", [[clip, vae, high_u, high, low_u, low]]),
        ("Step 2 - Start frame", [[image]]),
        ("Step 3 - Prompt", [[prompt, pos, neg]]),
        ("Step 4 - Video size & length", [[i2v]]),
        ("Step 5 - PILA adapter & physics", [[loader, router], [parser, physics]]),
        ("Step 6 - Correct & sample", [[sampler]]),
        ("Step 7 - Decode & save", [[img, cv, sv]]),
    ])
    notes(g, [WAN22_I2V_HIGH, WAN22_I2V_LOW, UMT5, VAE], [
        "**Load models**: UMT5-XXL, the Wan 2.1 VAE and the two Wan 2.2 I2V A14B experts.",
        "**Start frame**: the image the video starts from (upload your own).",
        "**Prompt**: what happens next; it also feeds the physics label parser.",
        "**Video size & length**: WanImageToVideo encodes the start frame into the conditioning and makes the "
        "16-channel noise latent.", PILA_STEP,
        "**Correct & sample**: the same adapter on both experts, switching at sigma 0.9 as upstream Wan 2.2 I2V. "
        "PILA corrects the 16-channel noise latent; the image channels pass through untouched.",
        "**Decode & save**: VAE decode and an MP4."])
    return g.to_json("Wan 2.2 I2V A14B + PILA (image to video)")


WORKFLOWS = {
    "pila_wan2.1_t2v_1.3B": wan21_t2v,
    "pila_wan2.2_t2v_A14B": wan22_t2v,
    "pila_ab_compare_wan2.1": ab_compare,
    "pila_wan2.2_i2v_A14B": wan22_i2v,
}


# ---- thumbnails ------------------------------------------------------------------------------------------------------
def thumbnail(wf: dict, path: Path, size=(512, 384)):
    """A drawing of the workflow: groups, nodes (PILA nodes highlighted), notes and the title."""
    from PIL import Image, ImageDraw

    boxes = [n["pos"] + [n["size"][0], n["size"][1] + TITLE_H] for n in wf["nodes"]]
    boxes += [[*g["bounding"]] for g in wf["groups"]]
    x0 = min(b[0] for b in boxes) - 40
    y0 = min(b[1] - TITLE_H for b in boxes) - 80
    x1 = max(b[0] + b[2] for b in boxes) + 40
    y1 = max(b[1] + b[3] for b in boxes) + 40
    s = min(size[0] / (x1 - x0), size[1] / (y1 - y0))
    ox, oy = (size[0] - s * (x1 - x0)) / 2, (size[1] - s * (y1 - y0)) / 2

    def rect(x, y, w, h):
        return [ox + s * (x - x0), oy + s * (y - y0), ox + s * (x + w - x0), oy + s * (y + h - y0)]

    im = Image.new("RGB", size, (32, 32, 36))
    d = ImageDraw.Draw(im)
    for g in wf["groups"]:
        d.rectangle(rect(*g["bounding"]), fill=(44, 62, 80), outline=(63, 120, 158))
    for n in wf["nodes"]:
        x, y = n["pos"]
        w, h = n["size"]
        note = n["type"] in ("Note", "MarkdownNote")
        pila = n["type"].startswith("PILA")
        fill = (101, 85, 51) if note else (70, 120, 90) if pila else (60, 60, 66)
        d.rectangle(rect(x, y - TITLE_H, w, h + TITLE_H), fill=fill, outline=(20, 20, 20))
        d.rectangle(rect(x, y - TITLE_H, w, TITLE_H), fill=(140, 110, 60) if note else (90, 170, 120) if pila
                    else (85, 85, 95))
    for a in wf["links"]:
        src = next(n for n in wf["nodes"] if n["id"] == a[1])
        dst = next(n for n in wf["nodes"] if n["id"] == a[3])
        p = (ox + s * (src["pos"][0] + src["size"][0] - x0), oy + s * (src["pos"][1] + 10 + 20 * a[2] - y0))
        q = (ox + s * (dst["pos"][0] - x0), oy + s * (dst["pos"][1] + 10 + 20 * a[4] - y0))
        d.line([p, q], fill=(150, 150, 160), width=1)
    d.rectangle([0, 0, size[0], 26], fill=(20, 20, 24))
    d.text((8, 7), wf["extra"]["info"]["name"], fill=(235, 235, 235))
    im.save(path, quality=90)


def main():
    for name, build in WORKFLOWS.items():
        wf = build()
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(wf, indent=1, ensure_ascii=False) + "\n")
        thumbnail(wf, HERE / f"{name}.jpg")
        print(f"wrote {path} and {name}.jpg")


if __name__ == "__main__":
    main()
