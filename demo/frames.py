"""Rows of decoded frames, each frame a small figure with the oracle's reading under it: what every interpolation
panel shows."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from .page import upscale, write_png


def reading_text(reading: dict[str, str]) -> str:
    """An oracle reading as a short phrase: "large red circle, left, white"."""
    if reading["shape"] == "none":
        return f"no shape, {reading['background']}"
    return f"{reading['size']} {reading['colour']} {reading['shape']}, {reading['position']}, {reading['background']}"


def frame_row(out: Path, name: str, pictures: torch.Tensor, labels: list[str], readings: list[dict[str, str]],
              marks: dict[int, str] | None = None) -> str:
    """Write each picture [N, 3, H, W] as ``name``_NN.png and return them as one row of figures, each captioned with
    its label, its mark (if any, also outlined) and the oracle's reading."""
    marks = marks or {}
    if not len(pictures) == len(labels) == len(readings):
        raise ValueError(f"{len(pictures)} pictures, {len(labels)} labels and {len(readings)} readings; expected one "
                         "of each per frame")
    figures = []
    for index, (picture, label, reading) in enumerate(zip(pictures, labels, readings)):
        file = f"{name}_{index:02d}.png"
        write_png(out / file, upscale(picture))
        mark = f"<b>{html.escape(marks[index])}</b><br>" if index in marks else ""
        figure = '<figure class="marked">' if index in marks else "<figure>"
        figures.append(f'{figure}<img src="{file}" alt="{html.escape(name)} frame {index}">'
                       f"<figcaption>{mark}{html.escape(label)}<br><i>oracle:</i> "
                       f"{html.escape(reading_text(reading))}</figcaption></figure>")
    return f'<div class="frames" id="{html.escape(name)}">{"".join(figures)}</div>'
