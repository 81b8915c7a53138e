"""The diagnostics images name every expert in full (the router-weight header and the expert-map tiles)."""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from pila.diagnostics import expert_change_images, router_weights_image
from pila.patch import CallRecord, Recorder
from pila.taxonomy import CATEGORIES


def recorder(steps: int = 3) -> Recorder:
    rec = Recorder(keep_maps=True)
    g = torch.Generator().manual_seed(0)
    for i in range(steps):
        w = torch.zeros(1, 8)
        w[0, [0, 3, 4, 6]] = torch.tensor([0.4, 0.3, 0.2, 0.1])
        rec.add(CallRecord(run=1, step_offset=0, sigma=torch.tensor([1.0 - i / steps]), rows=(0,), applied=True,
                           step=i + 1, weights=w, change=torch.rand(1, 8, 8, 8, generator=g)))
    return rec


def lit(img: Image.Image) -> int:
    return sum(1 for p in img.convert("L").getdata() if p > 127)


def test_router_weight_header_names_every_category_in_full():
    img = router_weights_image(recorder())[0]
    left, cell_w, y0, y1 = 44, 80, 20, 20 + 12 * 2 + 4  # the header rows above the first step
    for k, name in enumerate(CATEGORIES):
        x0 = left + k * cell_w
        header = Image.fromarray((img[y0:y1, x0:x0 + cell_w] * 255).round().byte().numpy())
        # reference: the full name drawn with Pillow alone, words on lines of at most the column's width
        ref = Image.new("RGB", (cell_w, y1 - y0))
        d = ImageDraw.Draw(ref)
        words, lines = name.split(), []
        for word in words:
            if lines and d.textlength(f"{lines[-1]} {word}") <= cell_w - 6:
                lines[-1] += f" {word}"
            else:
                lines.append(word)
        for j, line in enumerate(lines):
            d.text((3, 2 + 12 * j), line, fill=(255, 255, 255))
        # the same lit pixels up to anti-aliasing on the grey background (a name cut to 7 letters loses far more)
        assert abs(lit(header) - lit(ref)) <= 0.08 * lit(ref), f"{name}: the header does not show the full name"


def test_expert_maps_fit_and_survive_non_finite_records():
    rec = recorder(2)
    rec.calls[1].change[0, 2, 0, 0] = float("nan")  # a damaged adapter's record must not crash the node
    maps = expert_change_images(rec)
    assert maps.shape[0] == 2 and torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
