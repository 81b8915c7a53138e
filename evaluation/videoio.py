"""Video files with PyAV: conversion to the mp4 (H.264) the evaluators read, and frame reading for contact sheets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def to_mp4(src: Path, dst: Path, *, fps: float | None = None) -> None:
    """Re-encodes any video/animation PyAV reads (webm, webp, gif, ...) as H.264 yuv420p mp4, written atomically."""
    import av

    part = dst.with_name(dst.name + ".part")
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        rate = fps or float(stream.average_rate or 16)
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(stream)]
    if not frames:
        raise ValueError(f"{src}: no video frames")
    h, w = frames[0].shape[:2]
    with av.open(str(part), mode="w", format="mp4") as out:
        s = out.add_stream("libx264", rate=round(rate))
        s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        for a in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(a[: s.height, : s.width]), format="rgb24")
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    os.replace(part, dst)


def read_frames(path: Path) -> np.ndarray:
    """All frames as uint8 [T, H, W, 3]."""
    import av

    with av.open(str(path)) as inp:
        return np.stack([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)])


def key_frames(path: Path) -> list[np.ndarray]:
    """First, middle and last frame."""
    fr = read_frames(path)
    return [fr[0], fr[len(fr) // 2], fr[-1]]
