"""The demo page: one panel per control, each with the figures that show it works."""

from __future__ import annotations

from pathlib import Path

from ..reference import models
from . import (conditioning_interpolate_panel, direction_panel, guidance_panel, latent_analysis_panel,
               latent_interpolate_panel, latent_keyframes_panel, noise_travel_panel, optimize_panel, reference_panel,
               steer_panel, style_panel)
from .page import page, progress_bar, step

# Each has render(out, progress, family) -> HTML and STEPS, its count of progress steps.
PANELS = [reference_panel, latent_interpolate_panel, latent_keyframes_panel, noise_travel_panel,
          conditioning_interpolate_panel, direction_panel, style_panel, optimize_panel, steer_panel,
          guidance_panel, latent_analysis_panel]


def render_demo(out_dir) -> Path:
    """Render every panel into ``out_dir``/index.html (images beside it); return the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar(1 + sum(panel.STEPS for panel in PANELS)) as progress:
        with step(progress, "loading the reference world"):
            family = models.load()
        sections = [panel.render(out, progress, family) for panel in PANELS]
    index = out / "index.html"
    index.write_text(page("Latent Space Control — demo",
                          "Each panel shows one control of the pack at work on the reference world the pack ships, with the figures that "
                          "measure it. Everything here ran on the CPU, from the shipped weights.",
                          sections), encoding="utf-8")
    return index
