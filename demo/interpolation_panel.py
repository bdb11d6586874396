"""The Latent Interpolate panel on the reference world: seed travel by lerp and by slerp, sampled and decoded to
pictures, prompt travel between two captions, and the statistics of the noise along each path."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from ..core.interpolation import interpolate_embeddings, interpolate_path, path_positions, seeded_noise
from ..reference import models, oracle
from .page import figures_table, line_plot, upscale, write_png

STEPS = 4
FRAMES = 9
TRAVEL = ("a large red circle on the left, white background", "a large blue square on the right, white background")


def strip(pictures: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> one row of upscaled pictures with 2-pixel white gaps."""
    tiles = [upscale(picture) for picture in pictures]
    gap = torch.ones(tiles[0].shape[0], 2, 3)
    return torch.cat([part for tile in tiles for part in (tile, gap)][:-1], dim=1)


def render(out: Path, progress, family) -> str:
    a, b = seeded_noise(1, (1, *models.LATENT_SHAPE)), seeded_noise(2, (1, *models.LATENT_SHAPE))
    strip_ts = path_positions(FRAMES, 0.0, 1.0)
    context = family.encode_text([""]).hidden_states  # the empty prompt: the noise alone decides the picture
    readings = {}
    for method in ("lerp", "slerp"):
        noise = interpolate_path(a, b, strip_ts, method)[:, 0]
        with torch.no_grad():
            pictures = family.decode(family.sample_latents(context, noise, cfg_scale=1.0)).clamp(0, 1)
        write_png(out / f"interpolate_{method}.png", strip(pictures))
        readings[method] = " · ".join(f"{r['size']} {r['colour']} {r['shape']}, {r['background']}"
                                     for r in oracle.read_batch(pictures))
        progress.step(f"seed travel: {method}")

    with torch.no_grad():
        ends = family.encode_text(list(TRAVEL)).hidden_states
        contexts = interpolate_embeddings(ends[:1], ends[1:], strip_ts, "slerp")
        noise = seeded_noise(3, (1, *models.LATENT_SHAPE)).expand(FRAMES, -1, -1, -1)
        travel = family.decode(family.sample_latents(contexts, noise)).clamp(0, 1)
    write_png(out / "interpolate_prompt_travel.png", strip(travel))
    progress.step("prompt travel")

    plot_ts = path_positions(33, 0.0, 1.0)
    paths = {method: interpolate_path(a, b, plot_ts, method)[:, 0].flatten(1)
             for method in ("lerp", "slerp", "variance_preserving")}
    stds = {method: frames.std(dim=1).tolist() for method, frames in paths.items()}
    plots = line_plot(stds, plot_ts, "t (position along the path)", "std of the noise")
    progress.step("interpolation statistics")

    middle = len(plot_ts) // 2
    figures = {f"{method} midpoint noise std": f"{values[middle]:.3f}" for method, values in stds.items()}
    return (
        "<section><h2>Latent Interpolate</h2>"
        "<p><b>Seed travel.</b> Nine starting noises on the way from seed 1 to seed 2, each sampled by the reference "
        "UNet with the empty prompt — so the noise alone decides what is drawn — and decoded. The straight line "
        "(lerp) weakens the noise in the middle: halfway between two independent noises its standard deviation drops "
        "to √½ ≈ 0.71, and the sampler turns that too-quiet noise into pictures that belong to neither seed. Slerp "
        "keeps every frame a proper noise sample, so the morph stays with each seed's picture longer and changes "
        "evenly. Under each strip, what the oracle reads in each frame.</p>"
        f'<p><b>lerp</b><br><img class="strip" src="interpolate_lerp.png" alt="lerp seed travel"><br>'
        f'<small>{html.escape(readings["lerp"])}</small></p>'
        f'<p><b>slerp</b><br><img class="strip" src="interpolate_slerp.png" alt="slerp seed travel"><br>'
        f'<small>{html.escape(readings["slerp"])}</small></p>'
        f"<p><b>Prompt travel.</b> One noise, the text conditioning slerped token by token from <i>"
        f"{html.escape(TRAVEL[0])}</i> to <i>{html.escape(TRAVEL[1])}</i>.</p>"
        '<p><img class="strip" src="interpolate_prompt_travel.png" alt="prompt travel"></p>'
        f"<p>Spread of the starting noise along each path.</p>{plots}{figures_table(figures)}</section>"
    )
