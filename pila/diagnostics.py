"""Per-step diagnostics drawn from a `patch.Recorder` (paper Figures 6 and 7), as RGB images `[N, H, W, 3]` in
[0, 1] (ComfyUI's IMAGE layout). Plain tensor drawing plus Pillow for the text; no matplotlib needed.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .patch import Recorder
from .taxonomy import CATEGORIES

# a perceptually ordered dark -> bright ramp (black, purple, red, orange, pale yellow)
_RAMP = torch.tensor([[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33], [0.98, 0.55, 0.04], [0.99, 1.0, 0.64]])


def colorize(values: Tensor) -> Tensor:
    """[...] in [0, 1] -> [..., 3] RGB on the ramp above."""
    v = values.nan_to_num(0.0).clamp(0, 1) * (len(_RAMP) - 1)
    lo = v.floor().long().clamp(max=len(_RAMP) - 2)
    f = (v - lo.float())[..., None]
    return _RAMP[lo] * (1 - f) + _RAMP[lo + 1] * f


def _text(img: Tensor, items: list[tuple[int, int, str]], color=(255, 255, 255)) -> Tensor:
    """Write short labels onto an [H, W, 3] float image with Pillow's default font."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray((img.clamp(0, 1) * 255).round().byte().numpy())
    draw = ImageDraw.Draw(pil)
    for x, y, s in items:
        draw.text((x, y), s, fill=color)
    return torch.from_numpy(__import__("numpy").asarray(pil).copy()).float() / 255


def _wrap(text: str, width: int) -> list[str]:
    """Whole words on as few lines as fit `width` pixels in Pillow's default font (names are never cut)."""
    from PIL import ImageFont

    font = ImageFont.load_default()
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


LINE_H = 12  # pixels per text line


def _cond_row(rec) -> int:
    """Index of the first positive (cond) row of a call; 0 when unknown."""
    return list(rec.rows).index(0) if 0 in rec.rows else 0


def router_weights_image(recorder: Recorder, *, cell_w: int = 80, cell_h: int = 20) -> Tensor:
    """Figure 6: router weights per step (rows = steps, columns = the 8 experts, the weight written in each selected
    cell), positive row. [1, H, W, 3]."""
    recs = [r for r in recorder.calls if r.applied and r.weights is not None]
    if not recs:
        return _message("no router weights recorded: enable 'diagnostics' on the PILA correction and sample first")
    w = torch.stack([r.weights[_cond_row(r)].cpu() for r in recs])  # [S, 8]
    steps = [recorder.step_of(r) for r in recs]
    S, K = w.shape
    names = [_wrap(name, cell_w - 6) for name in CATEGORIES]
    left, top = 44, 24 + LINE_H * max(len(n) for n in names) + 6
    img = torch.full((top + S * cell_h + 6, left + K * cell_w + 6, 3), 0.12)
    cells = colorize(w / w.max().clamp_min(1e-8))  # [S, 8, 3]
    items, dark = [], []
    for i in range(S):
        for k in range(K):
            y0, x0 = top + i * cell_h, left + k * cell_w
            img[y0 + 1:y0 + cell_h, x0 + 1:x0 + cell_w] = cells[i, k] if w[i, k] > 0 else 0.2
            if w[i, k] > 0:
                dark.append((x0 + 8, y0 + 4, f"{float(w[i, k]):.2f}"))
        items.append((4, top + i * cell_h + 4, f"s{steps[i]}" if steps[i] is not None else f"c{i}"))
    items += [(left + k * cell_w + 3, 22 + j * LINE_H, line) for k, lines in enumerate(names) for j, line in enumerate(lines)]
    items.append((4, 4, "router weight per step (rows) and expert (columns); grey = not selected"))
    return _text(_text(img, items), dark, color=(0, 0, 0))[None]


def expert_change_images(recorder: Recorder, *, size: int = 96, max_steps: int = 64) -> Tensor:
    """Figure 7: per recorded step, a 2 x 4 grid of |w_k dB_k| (mean over frames) for the 8 experts on the
    positive row, each step normalised to its largest value. [N, H, W, 3]."""
    recs = [r for r in recorder.calls if r.applied and r.change is not None][:max_steps]
    if not recs:
        return _message("no expert maps recorded: enable 'diagnostics' on the PILA correction and sample first")
    frames = []
    for r in recs:
        ch = r.change[_cond_row(r)].cpu()  # [8, h, w]
        ch = ch / ch.max().clamp_min(1e-12)
        h, w = ch.shape[-2:]
        scale = max(1, size // max(h, w))
        tiles = F.interpolate(ch[:, None], scale_factor=scale, mode="nearest")[:, 0]  # [8, h', w']
        th, tw = tiles.shape[-2:]
        labels = [_wrap(f"{name} {float(r.weights[_cond_row(r), k]) if r.weights is not None else 0.0:.2f}", tw)
                  for k, name in enumerate(CATEGORIES)]
        pad, head = 4, LINE_H * max(len(lines) for lines in labels) + 2
        img = torch.zeros(2 * (th + head + pad) + 18, 4 * (tw + pad) + pad, 3)
        items = []
        for k in range(8):
            y0, x0 = 18 + (k // 4) * (th + head + pad) + head, pad + (k % 4) * (tw + pad)
            img[y0:y0 + th, x0:x0 + tw] = colorize(tiles[k])
            items += [(x0, y0 - head + j * LINE_H, line) for j, line in enumerate(labels[k])]
        st = recorder.step_of(r)
        items.append((pad, 2, f"step {st}  sigma {float(r.sigma.max()):.3f}"))
        frames.append(_text(img, items))
    return torch.stack(frames)


def _message(text: str, width: int = 512) -> Tensor:
    img = torch.zeros(40, width, 3)
    return _text(img, [(6, 12, text[:84])])[None]
