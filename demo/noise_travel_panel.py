"""The Noise Travel (LSC) panel: seed travel as the node makes it (``noise_travel``) through three seeds, sampled
with the empty prompt and decoded; beside it the naive lerp between the same noises, and each seed sampled alone."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.interpolation import keyframe_path
from ..core.noise import noise_travel, seed_frames, seeded_noise
from ..reference import models, oracle
from .frames import frame_row
from .page import eight_bit, figures_table, node_section, step

STEPS = 2
SEEDS = (1, 2, 3)
FRAMES_PER_SEGMENT = 6
FRAMES = FRAMES_PER_SEGMENT * (len(SEEDS) - 1) + 1  # so the seeds sit on frames 0, 6, 12 on both paths


def pictures_from_noise(family, noise: torch.Tensor) -> torch.Tensor:
    """What the UNet draws from unit ``noise`` with the empty prompt, so the noise alone decides the picture."""
    context = family.encode_text([""]).hidden_states
    return family.decode(family.sample_latents(context, noise, cfg_scale=1.0)).clamp(0, 1)


def small_in_the_middle(readings: list[dict[str, str]], anchors: list[int]) -> int:
    """How many frames between seeds the oracle reads as a small shape in the middle."""
    return sum(r["size"] == "small" and r["position"] == "center" for i, r in enumerate(readings) if i not in anchors)


def noise_row(out: Path, family, name: str, noise: torch.Tensor,
              anchors: list[int]) -> tuple[str, torch.Tensor, list[dict[str, str]]]:
    """Sample and decode each frame's noise; return the row of frames, each labelled with its noise's std, the
    pictures and their readings."""
    pictures = pictures_from_noise(family, noise)
    readings = oracle.read_batch(pictures)
    labels = [f"frame {i} · noise std {std:.2f}" for i, std in enumerate(noise.flatten(1).std(dim=1).tolist())]
    marks = {frame: f"seed {seed}" for seed, frame in zip(SEEDS, anchors)}
    return frame_row(out, name, pictures, labels, readings, marks), pictures, readings


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    anchors = seed_frames(len(SEEDS), FRAMES)
    seed_noises = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in SEEDS])
    with step(progress, "Noise Travel: three seeds"):
        travel = noise_travel(SEEDS, models.LATENT_SHAPE, FRAMES)
        travel_row, travel_pictures, travel_readings = noise_row(out, family, "noise_travel", travel, anchors)
    with step(progress, "Noise Travel: lerp, and each seed alone"):
        lerp = keyframe_path(seed_noises, FRAMES_PER_SEGMENT, "lerp")
        lerp_row, _, lerp_readings = noise_row(out, family, "noise_travel_lerp", lerp, anchors)
        alone = torch.cat([pictures_from_noise(family, noise[None]) for noise in seed_noises])  # batch 1, as a user
        alone_row = frame_row(out, "noise_travel_seed", alone, [f"seed {seed} alone" for seed in SEEDS],
                              oracle.read_batch(alone))
    largest_gap = int((eight_bit(travel_pictures[anchors]).int() - eight_bit(alone).int()).abs().max())
    travel_stds, lerp_stds = travel.flatten(1).std(dim=1), lerp.flatten(1).std(dim=1)
    between = FRAMES - len(SEEDS)
    travel_small, lerp_small = (small_in_the_middle(readings, anchors) for readings in (travel_readings, lerp_readings))
    figures = {
        f"seeds' frames ({', '.join(map(str, anchors))}) against each seed sampled alone: largest pixel difference":
            f"{largest_gap}/255",
        "noise std over the frames, Noise Travel: lowest, highest":
            f"{travel_stds.min():.3f}, {travel_stds.max():.3f}",
        "noise std over the frames, lerp: lowest, highest": f"{lerp_stds.min():.3f}, {lerp_stds.max():.3f}",
        f"frames between seeds the oracle reads as a small shape in the middle (of {between}): Noise Travel, lerp":
            f"{travel_small}, {lerp_small}",
    }
    return node_section("Noise Travel (LSC)", "LSC_NoiseTravel", (
        f"<p>Seed travel through seeds {', '.join(map(str, SEEDS))} over {FRAMES} frames, the noise made as the node "
        "makes it, sampled by the reference UNet with the empty prompt (no guidance) so the noise alone decides "
        f"what is drawn, and decoded. Each seed sits on a frame of its own ({', '.join(map(str, anchors))}, "
        "outlined), and that frame is that seed's own picture: the last row samples each seed alone, as a batch of "
        f"one, and the pixels match (largest difference {largest_gap}/255). Between seeds the noise follows the "
        f"variance-preserving path, so every frame is unit noise (std {travel_stds.min():.2f} to "
        f"{travel_stds.max():.2f}).</p>"
        "<p>What the frames show: next to each seed the travel stays close to that seed's picture for a frame or so, "
        "then moves on through other pictures of the world, each frame one clean shape whose colour and form change "
        "from frame to frame. The middle row joins the same noises by lerp: its noise between seeds is quieter (std "
        f"down to {lerp_stds.min():.2f}, where a sampler expects 1), and the oracle reads {lerp_small} of its "
        f"{between} frames between seeds as a small shape in the middle, against {travel_small} for the travel.</p>"
        f"<p><b>Noise Travel</b></p>{travel_row}<p><b>lerp between the same noises</b></p>{lerp_row}"
        f"<p><b>each seed alone</b></p>{alone_row}"
        + figures_table(figures)
    ))
