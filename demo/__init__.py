"""The demo page: one panel per control, each with the figures that show it works."""

from __future__ import annotations

from pathlib import Path

from . import interpolation_panel
from .page import Progress, page

PANELS = [interpolation_panel]  # each has render(out, progress) -> HTML and STEPS, its count of progress steps


def render_demo(out_dir) -> Path:
    """Render every panel into ``out_dir``/index.html (images beside it); return the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(sum(panel.STEPS for panel in PANELS))
    sections = [panel.render(out, progress) for panel in PANELS]
    index = out / "index.html"
    index.write_text(page("Latent Space Control — demo",
                          "Each panel shows one control of the pack at work, with the figures that measure it.",
                          sections), encoding="utf-8")
    return index
