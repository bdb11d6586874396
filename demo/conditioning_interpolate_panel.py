"""The Conditioning Interpolate (LSC) panel: prompt travel between two captions — the text encoder's hidden states
slerped token by token (``interpolate_embeddings``, as the node calls it) — sampled from one noise and decoded."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from ..core.interpolation import interpolate_embeddings, path_positions
from ..core.noise import seeded_noise
from ..reference import models, oracle, world
from .frames import frame_row
from .page import figures_table, node_section, step

STEPS = 1
FRAMES = 9
NOISE_SEED = 3
ENDS = (world.Scene("circle", "red", "large", "left", "white"),
        world.Scene("square", "blue", "large", "right", "white"))


def reads_as(reading: dict[str, str], scene: world.Scene) -> str:
    return "yes" if reading == scene.attributes() else "no"


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    with step(progress, "Conditioning Interpolate: prompt travel"):
        ends = family.encode_text([scene.caption() for scene in ENDS]).hidden_states
        ts = path_positions(FRAMES, 0.0, 1.0)
        contexts = interpolate_embeddings(ends[:1], ends[1:], ts, "slerp")
        noise = seeded_noise(NOISE_SEED, (1, *models.LATENT_SHAPE)).expand(FRAMES, -1, -1, -1)
        pictures = family.decode(family.sample_latents(contexts, noise)).clamp(0, 1)
        readings = oracle.read_batch(pictures)
        row = frame_row(out, "conditioning_interpolate", pictures, [f"t {t:.3f}" for t in ts], readings)
    captions = [f"<i>{html.escape(scene.caption())}</i>" for scene in ENDS]
    figures = {"the oracle reads frame 0 as caption A": reads_as(readings[0], ENDS[0]),
               f"the oracle reads frame {FRAMES - 1} as caption B": reads_as(readings[-1], ENDS[1])}
    return node_section("Conditioning Interpolate (LSC)", "LSC_ConditioningInterpolate", (
        f"<p>Prompt travel from caption A, {captions[0]}, to caption B, {captions[1]}: the CLIP text tower's hidden "
        f"states of the two captions slerped token by token over {FRAMES} frames, each frame sampled by the "
        f"reference UNet from the same noise (seed {NOISE_SEED}; Euler, 20 steps, guidance 4) and decoded. The noise "
        "is fixed, so only the prompt moves: the red circle holds for two frames and squares off in the third; the "
        "square turns teal, then cyan, while still on the left, jumps to the right past the middle of the path and "
        "takes caption B's blue for the last three frames.</p>"
        + row + figures_table(figures)
    ))
