"""The Latent Interpolate panel: lerp against slerp between two seeds' noise, as pictures and as statistics."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.interpolation import interpolate_path, path_positions, seeded_noise
from .page import figures_table, line_plot, write_png

# A fixed map from 4 latent channels to RGB, so every frame of every strip is coloured the same way.
CHANNELS_TO_RGB = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, -0.3]])
SCALE = 3  # pixels per latent cell
STEPS = 3


def latent_to_rgb(latent: torch.Tensor, contrast: float) -> torch.Tensor:
    """[4, H, W] -> [H*SCALE, W*SCALE, 3] in 0..1, with one contrast shared by all pictures of the panel."""
    rgb = torch.einsum("chw,cr->hwr", latent, CHANNELS_TO_RGB)
    rgb = 0.5 + rgb / (2 * contrast)
    return rgb.repeat_interleave(SCALE, 0).repeat_interleave(SCALE, 1)


def strip(frames: torch.Tensor, contrast: float) -> torch.Tensor:
    gap = torch.ones(frames.shape[-2] * SCALE, 2, 3)
    pictures = []
    for frame in frames:
        pictures += [latent_to_rgb(frame, contrast), gap]
    return torch.cat(pictures[:-1], dim=1)


def render(out: Path, progress) -> str:
    a, b = seeded_noise(1, (1, 4, 32, 32)), seeded_noise(2, (1, 4, 32, 32))
    strip_ts = path_positions(9, 0.0, 1.0)
    # Two standard deviations of the first frame span the full colour range, so a fade is plain to see.
    contrast = 2 * torch.einsum("chw,cr->hwr", a[0], CHANNELS_TO_RGB).std().item()
    for method in ("lerp", "slerp"):
        write_png(out / f"interpolate_{method}.png", strip(interpolate_path(a, b, strip_ts, method)[:, 0], contrast))
        progress.step(f"interpolation strip: {method}")

    plot_ts = path_positions(33, 0.0, 1.0)
    paths = {method: interpolate_path(a, b, plot_ts, method)[:, 0].flatten(1)
             for method in ("lerp", "slerp", "variance_preserving")}
    stds = {method: frames.std(dim=1).tolist() for method, frames in paths.items()}
    rms = {method: (frames.norm(dim=1) / frames.shape[1] ** 0.5).tolist() for method, frames in paths.items()}
    plots = (line_plot(stds, plot_ts, "t (position along the path)", "std of the frame")
             + line_plot(rms, plot_ts, "t (position along the path)", "norm / √numel of the frame"))
    progress.step("interpolation statistics")

    middle = len(plot_ts) // 2
    figures = {f"{method} midpoint std": f"{values[middle]:.3f}" for method, values in stds.items()}
    figures["endpoints std (seed 1, seed 2)"] = f"{a.std().item():.3f}, {b.std().item():.3f}"
    return (
        "<section><h2>Latent Interpolate</h2>"
        "<p>Nine frames from seed 1's noise to seed 2's (4 channels, 32×32), shown directly as latents — until the "
        "reference world ships, these are latents coloured by a fixed channel map, not decoded images. The straight "
        "line (lerp) washes the middle frames out: halfway between two independent noises its standard deviation "
        "drops to √½ ≈ 0.71, and a sampler then starts from noise that is too weak. Slerp keeps every frame at the "
        "strength of its ends.</p>"
        '<p><b>lerp</b><br><img class="strip" src="interpolate_lerp.png" alt="lerp strip"></p>'
        '<p><b>slerp</b><br><img class="strip" src="interpolate_slerp.png" alt="slerp strip"></p>'
        "<p>Spread of each frame along the path: its standard deviation, and its norm per element, which is what "
        "slerp holds on the straight line between the two ends' norms. For zero-mean noise the two agree; slerp and "
        "variance-preserving coincide here.</p>"
        f"{plots}{figures_table(figures)}</section>"
    )
