"""Curves and bar charts as a ComfyUI IMAGE: one panel per series (each on its own scale), drawn with PIL."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

WIDTH, PANEL_HEIGHT, BAR_PANEL_HEIGHT, MARGIN = 512, 96, 128, 8
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
    return _as_image(picture)


def bars_image(series: dict[str, list[float]], labels: list[str], title: str = "") -> torch.Tensor:
    """IMAGE [1, H, W, 3] in 0..1 with a panel per named series: one bar per label (every series has one value per
    label), drawn up or down from a zero line, the largest magnitude labelled; ``title`` above the first panel."""
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
    title_height = 20 if title else 0
    height = title_height + max(len(series), 1) * BAR_PANEL_HEIGHT
    picture = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    if title:
        draw.text((MARGIN, 4), title, fill=(0, 0, 0))
    if not series or not labels:
        draw.text((MARGIN, title_height + MARGIN), "nothing to show", fill=(0, 0, 0))
    # Label every bar while the labels fit, else every k-th, so 4 channels and 64 components both read.
    label_every = max(1, -(-len(labels) * 7 * max((len(label) for label in labels), default=1) // (WIDTH - 2 * MARGIN)))
    for row, (name, values) in enumerate(series.items()):
        if not labels:
            break
        top = title_height + row * BAR_PANEL_HEIGHT
        finite = [v if v == v and abs(v) != float("inf") else 0.0 for v in values]
        low, high = min(0.0, *finite), max(0.0, *finite)
        span = high - low or 1.0
        left, right = MARGIN, WIDTH - MARGIN
        plot_top, plot_bottom = top + 22, top + BAR_PANEL_HEIGHT - 16
        zero = plot_bottom - (plot_bottom - plot_top) * (0.0 - low) / span
        slot = (right - left) / len(labels)
        colour = COLOURS[row % len(COLOURS)]
        for i, value in enumerate(finite):
            level = plot_bottom - (plot_bottom - plot_top) * (value - low) / span
            x0, x1 = left + i * slot + 0.15 * slot, left + (i + 0.85) * slot
            draw.rectangle((x0, min(level, zero), max(x1, x0 + 1), max(level, zero)), fill=colour)
            if i % label_every == 0:
                draw.text((left + i * slot, plot_bottom + 2), labels[i], fill=(90, 90, 90))
        draw.line((left, zero, right, zero), fill=(120, 120, 120))
        strongest = max(range(len(finite)), key=lambda i: abs(finite[i]))
        draw.text((left, top + 6), f"{name}: {low:.3g} .. {high:.3g}; largest |value| at {labels[strongest]} "
                                   f"({finite[strongest]:.3g})", fill=(0, 0, 0))
    return _as_image(picture)


def _as_image(picture: Image.Image) -> torch.Tensor:
    pixels = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8).reshape(picture.height, picture.width, 3)
    return pixels[None].float() / 255
