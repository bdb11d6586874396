"""Curves as a ComfyUI IMAGE: one panel per series (each on its own scale), drawn with PIL."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

WIDTH, PANEL_HEIGHT, MARGIN = 512, 96, 8
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


def curves_image(series: dict[str, list[float]], x_label: str = "step") -> torch.Tensor:
    """IMAGE [1, H, W, 3] in 0..1 with a panel per named series against its index (1, 2, ...), labelled with the
    name and the first and last values."""
    named = [(name, values) for name, values in series.items() if values]
    height = max(len(named), 1) * PANEL_HEIGHT
    picture = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    if not named:
        draw.text((MARGIN, MARGIN), "nothing was recorded", fill=(0, 0, 0))
    for row, (name, values) in enumerate(named):
        top = row * PANEL_HEIGHT
        finite = [v for v in values if v == v and abs(v) != float("inf")] or [0.0]
        low, high = min(finite), max(finite)
        span = high - low or 1.0
        left, right = MARGIN, WIDTH - MARGIN
        plot_top, plot_bottom = top + 22, top + PANEL_HEIGHT - 14
        draw.rectangle((left, plot_top, right, plot_bottom), outline=(200, 200, 200))
        points = [(left + (right - left) * i / max(len(values) - 1, 1),
                   plot_bottom - (plot_bottom - plot_top) * (min(max(v, low), high) - low) / span)
                  for i, v in enumerate(values) if v == v]
        if len(points) > 1:
            draw.line(points, fill=COLOURS[row % len(COLOURS)], width=2)
        elif points:
            draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2),
                         fill=COLOURS[row % len(COLOURS)])
        draw.text((left, top + 6), f"{name}: {values[0]:.4g} -> {values[-1]:.4g} (range {low:.4g} .. {high:.4g})",
                  fill=(0, 0, 0))
        draw.text((left, plot_bottom + 1), f"{x_label} 1 .. {len(values)}", fill=(90, 90, 90))
    pixels = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8).reshape(height, WIDTH, 3)
    return pixels[None].float() / 255
