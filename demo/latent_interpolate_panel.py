"""The Latent Interpolate (LSC) panel: two pictures of the world, encoded by the VAE, interpolated in latent space as
the node does it (``interpolate_latents``) by slerp and by lerp, and decoded; then the spread of Gaussian noise along
each method's path between two noises."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from ..core.interpolation import interpolate_latents, interpolate_path, path_positions
from ..core.noise import seeded_noise
from ..reference import models, oracle, world
from .frames import frame_row
from .page import figures_table, line_plot, node_section, step

STEPS = 2
FRAMES = 9
# The same circle on either side: latents nearly at right angles, where slerp and lerp part the most.
ENDS = (world.Scene("circle", "red", "large", "left", "white"), world.Scene("circle", "red", "large", "right", "white"))
METHODS = ("slerp", "lerp")
NOISE_SEEDS = (1, 2)
NOISE_METHODS = ("lerp", "slerp", "variance_preserving")


def norms(latents: torch.Tensor) -> list[float]:
    return latents.flatten(1).norm(dim=1).tolist()


def noise_spread() -> tuple[list[float], dict[str, list[float]]]:
    """Positions and, per method, the standard deviation of each point on its path between two seeds' noises."""
    a, b = (seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in NOISE_SEEDS)
    ts = path_positions(33, 0.0, 1.0)
    return ts, {method: interpolate_path(a, b, ts, method).flatten(1).std(dim=1).tolist() for method in NOISE_METHODS}


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    with step(progress, "Latent Interpolate: slerp and lerp between two pictures"):
        ends = family.encode(world.render_batch(list(ENDS)))
        ts = path_positions(FRAMES, 0.0, 1.0)
        paths = {method: interpolate_latents(ends[:1], ends[1:], ts, method) for method in METHODS}
        rows = []
        for method, latents in paths.items():
            pictures = family.decode(latents).clamp(0, 1)
            labels = [f"t {t:.3f} · norm {norm:.1f}" for t, norm in zip(ts, norms(latents))]
            rows.append(f"<p><b>{method}</b></p>" + frame_row(out, f"latent_interpolate_{method}", pictures, labels,
                                                              oracle.read_batch(pictures)))
    with step(progress, "Latent Interpolate: noise along each path"):
        noise_ts, stds = noise_spread()

    middle, noise_middle = FRAMES // 2, len(noise_ts) // 2
    end_norm = sum(norms(ends)) / 2
    middle_norm = {method: norms(latents)[middle] / end_norm for method, latents in paths.items()}
    cosine = float(torch.nn.functional.cosine_similarity(ends[0].flatten(), ends[1].flatten(), dim=0))
    figures = {
        "cosine between the two pictures' latents": f"{cosine:+.3f}",
        "middle frame's latent norm against the ends' mean norm: slerp, lerp":
            ", ".join(f"{middle_norm[method]:.3f}" for method in METHODS),
        **{f"{method} midpoint noise std": f"{values[noise_middle]:.3f}" for method, values in stds.items()},
    }
    captions = [f"<i>{html.escape(scene.caption())}</i>" for scene in ENDS]
    return node_section("Latent Interpolate (LSC)", "LSC_LatentInterpolate", (
        f"<p>The world's pictures of {captions[0]} and {captions[1]}, encoded by the VAE and interpolated in its "
        f"latent space in {FRAMES} frames, then decoded. Under each frame: its position t, the norm of its latent "
        "and what the oracle reads. Neither path moves the circle across; both cross-fade — the left circle fades "
        "while a faint one appears on the right, and two blobs share the middle frames — and the colours pass "
        "through magenta and yellow-green on the way, hues neither end has. The two latents are far from parallel "
        f"(cosine {cosine:+.2f}), so the straight line (lerp) cuts the corner: its middle latent has "
        f"{middle_norm['lerp']:.2f} of the ends' norm and its middle frames are paler, while slerp keeps the norm "
        f"({middle_norm['slerp']:.2f}).</p>"
        + "".join(rows)
        + "<p><b>Noise.</b> The same methods between two Gaussian noises (seeds "
        f"{NOISE_SEEDS[0]} and {NOISE_SEEDS[1]}), and the standard deviation of each point on the way. Lerp "
        f"drops to {stds['lerp'][noise_middle]:.2f} halfway — too quiet for a sampler, which expects unit "
        f"noise — while slerp ({stds['slerp'][noise_middle]:.2f}) and the variance-preserving path "
        f"({stds['variance_preserving'][noise_middle]:.2f}) keep it.</p>"
        + line_plot(stds, noise_ts, "t (position along the path)", "std of the noise")
        + figures_table(figures)
    ))
