"""Training data: WISA-80K-style annotations + mp4 clips, our label mapping, decoding, synthetic physics clips.

Annotation format (WISA-80K, `data/wisa80k_example.json`): a JSON list of entries with
`en_caption` (the caption the backbone sees), `en_caption_1` (short caption), `phys_law` (a physics
description), `q0` (dynamics), `q1` (thermodynamics), `q2` (optics), `q3`, `q4`, `n0..n2` (densities,
durations, temperatures) and `label` (the main phenomenon). The clip of an entry is found from its
`video` / `video_path` / `path` / `file` field, else `<sha256>.mp4` (the WISA-80K zips store `<sha256>.mp4`),
else `<index>.mp4`, relative to the video folder.

Text (docs/method.md §4, **ours**): the backbone's text is `en_caption`; the physics description that feeds the
adapter's condition is `phys_law` (falling back to `en_caption_1`, then the caption).

## Label mapping (ours): WISA phenomena -> the 8 categories of docs/method.md §4 (multi-label)

The main `label` and every phrase of `q0` (dynamics) and `q1` (thermodynamics) are looked up in the table
below and their categories are united. `q2` (optics) is only used when the main label is itself optical:
WISA answers q2 for nearly every scene ("reflection" on any wet surface), while our Optical category is
for scenes where light is central (`physics_labels_dev_rules.md`). Unknown phrases add nothing; "no ..."
answers add nothing.

| WISA phenomenon (label or q0-q2 phrase) | categories |
|---|---|
| collision | Collision |
| rigid body motion | Rigid Body |
| elastic motion | Elastic |
| deformation | Elastic (strain/stress bank slots; plastic crushing also lands here) |
| liquid motion, liquid objects appearance | Fluid |
| gas motion, gas objects appearance | Compressible Flow |
| melting, solidification, liquefaction (condensation), solid objects appearance* | Phase Change, Thermal |
| vaporization (boiling, evaporation) | Phase Change, Fluid, Thermal |
| explosion | Compressible Flow, Collision, Thermal |
| combustion | Phase Change, Thermal |
| heat transfer, heat conduction, thermal expansion | Thermal |
| reflection, refraction, scattering, interference and diffraction, unnatural light sources | Optical (q2 only when the label is optical) |

\\* "solid objects appearance" is a WISA label for things that appear as solids; it adds no category on its
own (it is listed so the lookup does not warn), the q0/q1 answers decide.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("pila.training.data")

WISA_MAP: dict[str, tuple[str, ...]] = {
    "collision": ("Collision",),
    "rigid body motion": ("Rigid Body",),
    "elastic motion": ("Elastic",),
    "deformation": ("Elastic",),
    "liquid motion": ("Fluid",),
    "liquid objects appearance": ("Fluid",),
    "gas motion": ("Compressible Flow",),
    "gas objects appearance": ("Compressible Flow",),
    "melting": ("Phase Change", "Thermal"),
    "solidification": ("Phase Change", "Thermal"),
    "liquefaction": ("Phase Change", "Thermal"),
    "condensation": ("Phase Change", "Thermal"),
    "vaporization": ("Phase Change", "Fluid", "Thermal"),
    "boiling": ("Phase Change", "Fluid", "Thermal"),
    "evaporation": ("Phase Change", "Fluid", "Thermal"),
    "explosion": ("Compressible Flow", "Collision", "Thermal"),
    "combustion": ("Phase Change", "Thermal"),
    "heat transfer": ("Thermal",),
    "heat conduction": ("Thermal",),
    "thermal expansion": ("Thermal",),
    "solid objects appearance": (),
    "object decomposition and splitting": (),
    "no change": (),
    "reflection": ("Optical",),
    "refraction": ("Optical",),
    "scattering": ("Optical",),
    "interference and diffraction": ("Optical",),
    "interference": ("Optical",),
    "diffraction": ("Optical",),
    "unnatural light sources": ("Optical",),
}
OPTICAL_PHRASES = {"reflection", "refraction", "scattering", "interference and diffraction", "interference",
                   "diffraction", "unnatural light sources"}
VIDEO_KEYS = ("video", "video_path", "path", "file", "filename")


def _phrases(text: str) -> list[str]:
    """'liquid motion, deformation' / '1. a\\n2. b' -> ['liquid motion', 'deformation']."""
    parts = re.split(r"[,;\n]", str(text).lower())
    out = []
    for p in parts:
        p = re.sub(r"^\s*\d+\.\s*", "", p).strip(" .\t")
        if p and not p.startswith("no ") and p != "no":
            out.append(p)
    return out


def wisa_categories(entry: dict, *, unknown: Counter | None = None) -> list[str]:
    """Our mapping (module docstring) of one WISA entry to a sorted list of docs/method.md §4 categories."""
    from pila.taxonomy import CATEGORIES
    cats: set[str] = set()
    label = str(entry.get("label", "")).strip().lower()
    label_optical = label in OPTICAL_PHRASES
    sources = [label, *_phrases(entry.get("q0", "")), *_phrases(entry.get("q1", ""))]
    if label_optical:
        sources += _phrases(entry.get("q2", ""))
    for phrase in sources:
        if not phrase:
            continue
        if phrase in WISA_MAP:
            cats.update(WISA_MAP[phrase])
        elif unknown is not None:
            unknown[phrase] += 1
    return [c for c in CATEGORIES if c in cats]


def caption(entry: dict) -> str:
    return str(entry.get("en_caption") or entry.get("en_caption_1") or entry.get("caption") or "")


def physics_description(entry: dict) -> str:
    return str(entry.get("phys_law") or entry.get("en_caption_1") or caption(entry))


def video_file(entry: dict, index: int, video_dir: str | Path) -> Path:
    video_dir = Path(video_dir)
    for k in VIDEO_KEYS:
        if entry.get(k):
            return video_dir / str(entry[k])
    if entry.get("sha256"):
        return video_dir / f"{entry['sha256']}.mp4"
    return video_dir / f"{index}.mp4"


def load_annotations(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} not found (a WISA-80K-style JSON list of entries)")
    data = json.loads(path.read_text())
    if isinstance(data, dict):  # {"data": [...]} or {id: entry}
        data = data.get("data", list(data.values()))
    assert isinstance(data, list), f"{path}: expected a JSON list of annotation entries"
    return data


# --- decoding ---------------------------------------------------------------------------------------------

class ClipError(Exception):
    """A clip that cannot be used (missing, corrupt, too short); the caller skips and counts it."""


def decode_clip(path: str | Path, *, frames: int, height: int, width: int, stride: int = 1) -> np.ndarray:
    """Decode `frames` frames (every `stride`-th from the start) resized to cover `height x width` and
    centre-cropped; returns uint8 `[frames, height, width, 3]` RGB. Raises ClipError, never anything else."""
    import av
    import cv2
    path = Path(path)
    if not path.is_file():
        raise ClipError(f"missing: {path}")
    need = (frames - 1) * stride + 1
    out = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"no video stream: {path}")
            for i, frame in enumerate(container.decode(video=0)):
                if i % stride == 0:
                    out.append(_cover_crop(frame.to_ndarray(format="rgb24"), height, width, cv2))
                if len(out) == frames:
                    break
    except ClipError:
        raise
    except Exception as e:  # av raises many error types for damaged files
        raise ClipError(f"corrupt: {path} ({type(e).__name__}: {e})") from None
    if len(out) < frames:
        raise ClipError(f"too short: {path} has {len(out)} usable frames at stride {stride}, need {frames} ({need} raw)")
    return np.stack(out)


def _cover_crop(img: np.ndarray, height: int, width: int, cv2) -> np.ndarray:
    h, w = img.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(img[y0:y0 + height, x0:x0 + width])


@dataclass
class ClipSource:
    """The entries of an annotation file with their clip paths and mapped labels (decoded lazily)."""
    annotations: str | Path
    video_dir: str | Path
    frames: int = 81
    height: int = 480
    width: int = 832
    stride: int = 1
    label_source: str = "wisa"  # "wisa" (table above), "parser" (pila.labels on the caption), "union"
    entries: list[dict] = field(init=False)
    unknown_phrases: Counter = field(init=False, default_factory=Counter)

    def __post_init__(self):
        self.entries = load_annotations(self.annotations)
        assert self.label_source in ("wisa", "parser", "union"), f"label_source {self.label_source!r}"

    def __len__(self) -> int:
        return len(self.entries)

    def labels(self, i: int) -> list[str]:
        e = self.entries[i]
        cats: set[str] = set()
        if self.label_source in ("wisa", "union"):
            cats.update(wisa_categories(e, unknown=self.unknown_phrases))
        if self.label_source in ("parser", "union"):
            from pila.labels import parse
            cats.update(parse(caption(e)).labels)
        from pila.taxonomy import CATEGORIES
        return [c for c in CATEGORIES if c in cats]

    def item(self, i: int) -> dict:
        """{"id", "frames" uint8 [F, H, W, 3], "caption", "physics", "labels"}; raises ClipError."""
        e = self.entries[i]
        frames = decode_clip(video_file(e, i, self.video_dir), frames=self.frames, height=self.height,
                             width=self.width, stride=self.stride)
        return {"id": str(e.get("id", e.get("sha256", i))), "index": i, "frames": frames, "caption": caption(e),
                "physics": physics_description(e), "labels": self.labels(i)}


# --- synthetic physics clips (the quick start) ---------------------------------------------------------

SYNTHETIC_KINDS = ("moving", "falling", "bouncing", "diffusing")
_SYNTH_TEXT = {
    "moving": dict(label="Rigid Body Motion", q0="rigid body motion", q1="no obvious thermodynamic phenomenon.",
                   en_caption="A textured wooden block slides steadily across a table at constant speed.",
                   phys_law="a rigid body in uniform motion keeps its shape and velocity (newton's first law)."),
    "falling": dict(label="Rigid Body Motion", q0="rigid body motion", q1="no obvious thermodynamic phenomenon.",
                    en_caption="A stone block is dropped and falls faster and faster under gravity.",
                    phys_law="a rigid body in free fall accelerates uniformly under gravity."),
    "bouncing": dict(label="Collision", q0="collision, rigid body motion", q1="no obvious thermodynamic phenomenon.",
                     en_caption="A rubber ball falls onto the floor and bounces back up.",
                     phys_law="the ball collides with the floor; the impulse reverses its vertical velocity."),
    "diffusing": dict(label="Liquid Motion", q0="liquid motion", q1="heat transfer",
                      en_caption="A drop of warm dark dye spreads slowly through still water.",
                      phys_law="the dye and its heat diffuse outward, the concentration following the diffusion equation."),
}


def _texture(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth random texture in [0, 1] (blurred noise), so dense optical flow has something to track."""
    import cv2
    t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), scale)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return t


def synthetic_clip(kind: str, *, frames: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """One clip uint8 `[F, H, W, 3]` of a textured object and its motion facts (px per frame, x first)."""
    assert kind in SYNTHETIC_KINDS, f"kind must be one of {SYNTHETIC_KINDS}"
    rng = np.random.default_rng(seed)
    bg = 0.25 + 0.15 * _texture(rng, height, width, 3.0)
    size = max(6, min(height, width) // 3)
    tex = 0.4 + 0.6 * _texture(rng, size, size, 1.5)
    color = rng.uniform(0.5, 1.0, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out, facts = [], {"kind": kind}
    if kind == "moving":
        v = rng.uniform(0.6, 1.2, 2) * rng.choice([-1, 1], 2)
        facts["velocity_px"] = [float(v[0]), float(v[1])]
    x0 = rng.uniform(size * 0.6, width - size * 1.6)
    y0 = rng.uniform(size * 0.2, height * 0.3)
    g, floor = 0.08, height - size - 1
    vy_b = 0.0
    y_b = y0
    for t in range(frames):
        img = np.repeat(bg[..., None], 3, axis=2).copy()
        if kind == "diffusing":
            s2 = (2.0 + 0.35 * t) ** 2
            cx, cy = width / 2, height / 2
            c = (4.0 / (2.0 + 0.35 * t)) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s2))
            img = img * (1 - np.clip(c, 0, 1)[..., None]) + np.clip(c, 0, 1)[..., None] * np.array([0.9, 0.3, 0.1])
        else:
            if kind == "moving":
                px, py = x0 + v[0] * t, y0 + 0.5 * height * 0.2 + v[1] * t
            elif kind == "falling":
                px, py = x0, y0 + 0.5 * g * t * t
            else:  # bouncing
                if t > 0:
                    vy_b += g * 2
                    y_b += vy_b
                    if y_b > floor:
                        y_b, vy_b = floor - (y_b - floor), -0.85 * vy_b
                px, py = x0, y_b
            px = float(np.clip(px, 0, width - size))
            py = float(np.clip(py, 0, height - size))
            _paste(img, tex, color, px, py)
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.stack(out), facts


def _paste(img: np.ndarray, tex: np.ndarray, color: np.ndarray, px: float, py: float) -> None:
    """Paste the textured square at a sub-pixel position (bilinear warp of the texture)."""
    import cv2
    h, w = img.shape[:2]
    M = np.float32([[1, 0, px], [0, 1, py]])
    layer = cv2.warpAffine(tex, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.warpAffine(np.ones_like(tex), M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    img *= (1 - alpha[..., None])
    img += (layer[..., None] * color) * alpha[..., None]


def write_mp4(path: str | Path, frames: np.ndarray, *, fps: int = 16, crf: int = 12) -> Path:
    """uint8 `[F, H, W, 3]` -> an H.264 mp4 (even sizes)."""
    import av
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    F_, H, W, _ = frames.shape
    assert H % 2 == 0 and W % 2 == 0, f"mp4 (yuv420p) needs even sizes, got {H}x{W}"
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": str(crf), "preset": "veryfast"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def make_synthetic_dataset(out_dir: str | Path, *, clips: int = 8, frames: int = 17, height: int = 64, width: int = 64,
                           fps: int = 16, seed: int = 0, kinds: tuple[str, ...] = SYNTHETIC_KINDS) -> Path:
    """Write `clips` synthetic physics clips (cycling through `kinds`) and a WISA-style `annotations.json`.

    Each entry also carries `synthetic` (the motion facts). Returns the annotation path; re-running with the
    same arguments rewrites identical files."""
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(clips):
        kind = kinds[i % len(kinds)]
        video, facts = synthetic_clip(kind, frames=frames, height=height, width=width, seed=seed * 1000 + i)
        name = f"{i:05d}_{kind}.mp4"
        write_mp4(out_dir / "videos" / name, video, fps=fps)
        t = _SYNTH_TEXT[kind]
        entries.append({"id": f"synthetic-{i:05d}", "video": name, "label": t["label"], "q0": t["q0"], "q1": t["q1"],
                        "q2": "no obvious optical phenomenon", "q3": "no", "phys_law": t["phys_law"],
                        "en_caption": t["en_caption"], "en_caption_1": t["en_caption"], "synthetic": facts})
    ann = out_dir / "annotations.json"
    ann.write_text(json.dumps(entries, indent=1))
    return ann


def clip_geometry(frames: int) -> int:
    """Pixel frames -> latent frames of the Wan VAE (4x temporal, first frame alone): 81 -> 21."""
    assert (frames - 1) % 4 == 0, f"Wan clips have 4k + 1 frames (81, 49, 17, ...), got {frames}"
    return (frames - 1) // 4 + 1


__all__ = ["WISA_MAP", "wisa_categories", "caption", "physics_description", "video_file", "load_annotations",
           "ClipError", "decode_clip", "ClipSource", "synthetic_clip", "write_mp4", "make_synthetic_dataset",
           "SYNTHETIC_KINDS", "clip_geometry"]
