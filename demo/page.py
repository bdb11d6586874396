"""The demo page's parts: PNG files from tensors, inline SVG line plots, the HTML page and its progress bar."""

from __future__ import annotations

import html
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from tqdm import tqdm


def eight_bit(values: torch.Tensor) -> torch.Tensor:
    """Values in 0..1 (clamped) as the 8-bit levels a PNG stores."""
    return (values.clamp(0, 1) * 255).round().to(torch.uint8)


def write_png(path: Path, rgb: torch.Tensor) -> None:
    """Write an image [H, W, 3] with values in 0..1 as an 8-bit PNG."""
    Image.fromarray(eight_bit(rgb).numpy()).save(path)


def upscale(picture: torch.Tensor, scale: int = 3) -> torch.Tensor:
    """A picture [3, H, W] as [H*scale, W*scale, 3], each pixel a scale×scale block (pixel art stays sharp)."""
    return picture.permute(1, 2, 0).repeat_interleave(scale, 0).repeat_interleave(scale, 1)


COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]


def tick_step(span: float, most: int = 6) -> float:
    """The smallest round step (1, 2, 2.5 or 5 times a power of ten) that covers ``span`` in at most ``most`` steps."""
    power = 10.0 ** math.floor(math.log10(span / most))
    return next(power * m for m in (1, 2, 2.5, 5, 10) if power * m * most >= span)


def _value_axes(width: int, height: int, left: int, right: int, top: int, bottom: int, low: float, high: float,
                step: float, baseline: float) -> tuple[list[str], Callable[[float], float]]:
    """The opening of an SVG chart with a value axis from ``low`` to ``high`` (ticks and grid every ``step``), its
    horizontal axis at ``baseline``; and the value -> y map."""

    def py(y: float) -> float:
        return height - bottom - (y - low) / (high - low) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" '
             f'font-family="sans-serif">',
             f'<line x1="{left}" y1="{py(baseline)}" x2="{width - right}" y2="{py(baseline)}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{py(low)}" stroke="#444"/>']
    for i in range(round((high - low) / step) + 1):
        y = low + step * i
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>'
                     f'<line x1="{left}" y1="{py(y):.1f}" x2="{width - right}" y2="{py(y):.1f}" stroke="#eee"/>')
    return parts, py


def line_plot(series: dict[str, list[float]], xs: list[float], x_label: str, y_label: str,
              width: int = 520, height: int = 260) -> str:
    """An inline SVG plot of named series over ``xs``, with axes, ticks and a legend."""
    left, right, top, bottom = 56, 150, 14, 40
    values = [v for ys in series.values() for v in ys]
    step = tick_step(max(values) * 1.05 - min(values + [0.0]))
    low, high = math.floor(min(values + [0.0]) / step) * step, math.ceil(max(values) * 1.05 / step) * step
    x0, x1 = min(xs), max(xs)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    parts, py = _value_axes(width, height, left, right, top, bottom, low, high, step, low)
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:.2f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(y_label)}</text>')
    for i, (name, ys) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        stroke = 1.5 * (len(series) - i)  # earlier series drawn wider, so lines that coincide all stay visible
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{stroke}"/>')
        parts.append(f'<line x1="{width - right + 12}" y1="{top + 10 + 18 * i}" x2="{width - right + 32}" '
                     f'y2="{top + 10 + 18 * i}" stroke="{colour}" stroke-width="{stroke}"/>'
                     f'<text x="{width - right + 38}" y="{top + 14 + 18 * i}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)



def bar_chart(series: dict[str, list[float]], categories: list[str], y_label: str,
              width: int = 520, height: int = 260) -> str:
    """An inline SVG bar chart: per category one bar of each named series side by side, up or down from zero, with a
    value axis and a legend."""
    left, right, top, bottom = 56, 150, 14, 40
    values = [v for values in series.values() for v in values]
    step = tick_step((max(max(values), 0) - min(min(values), 0)) * 1.05)
    high = math.ceil(max(max(values), 0) * 1.05 / step) * step
    low = math.floor(min(min(values), 0) * 1.05 / step) * step
    slot = (width - left - right) / len(categories)
    bar = 0.8 * slot / len(series)
    parts, py = _value_axes(width, height, left, right, top, bottom, low, high, step, 0.0)
    for c, category in enumerate(categories):
        parts.append(f'<text x="{left + (c + 0.5) * slot:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                     f'{html.escape(category)}</text>')
        for i, values in enumerate(series.values()):
            x = left + c * slot + 0.1 * slot + i * bar
            parts.append(f'<rect x="{x:.1f}" y="{min(py(values[c]), py(0)):.1f}" width="{bar:.1f}" '
                         f'height="{abs(py(0) - py(values[c])):.1f}" fill="{COLOURS[i % len(COLOURS)]}"/>')
    parts.append(f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(y_label)}</text>')
    for i, name in enumerate(series):
        parts.append(f'<rect x="{width - right + 12}" y="{top + 4 + 18 * i}" width="20" height="10" '
                     f'fill="{COLOURS[i % len(COLOURS)]}"/>'
                     f'<text x="{width - right + 38}" y="{top + 14 + 18 * i}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def figures_table(figures: dict[str, str]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in figures.items())
    return f'<table class="figures">{rows}</table>'


def page(title: str, intro: str, panels: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:1320px;margin:2em auto;color:#222}"
             "section{border-top:1px solid #ccc;margin-top:2em;padding-top:1em}"
             "img{image-rendering:pixelated;border:1px solid #ddd}"
             ".frames{display:flex;flex-wrap:wrap;gap:3px;margin:.3em 0 1.2em}"
             ".frames figure{margin:0;width:98px;font-size:11px;line-height:1.3}.frames img{display:block}"
             ".frames .marked img{border-color:#d62728;outline:2px solid #d62728}"
             ".figures td{padding:2px 12px 2px 0}.figures td:last-child{font-family:monospace}"
             ".grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;width:160px;font-size:12px}"
             ".blocks{display:flex;flex-wrap:wrap;column-gap:32px}"
             ".miss{color:#d62728}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{intro}</p>"
            + "".join(panels) + "</body></html>")


def progress_bar(total: int) -> tqdm:
    """One text progress bar on stderr over the whole page; ``step`` names what runs."""
    return tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True)


@contextmanager
def step(progress: tqdm, label: str):
    """Show ``label`` on the bar while the block runs; count it as one step when it is done."""
    progress.set_description(label)
    yield
    progress.update()


def node_section(display_name: str, node_id: str, body: str) -> str:
    """A panel about one node, headed by the display name artists see in ComfyUI's menu."""
    return (f'<section id="{node_id}"><h2>{html.escape(display_name)}</h2>'
            f"<p><small>node <code>{node_id}</code></small></p>{body}</section>")
