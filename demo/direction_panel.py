"""The Direction Sweep (LSC) panel: a semantic direction sweep on the reference world. A red→blue direction made from
prompts with the reference CLIP (``text_direction``, as Direction from CLIP makes it), swept over a range of strengths
on the conditioning of red-shape captions (``apply_to_tokens``, as the sweep node applies it), sampled from one noise
per caption and decoded; beside it a random direction of the same norm swept over the same strengths."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from ..core.directions import TEMPLATES, apply_to_tokens, strength_steps, text_direction
from ..core.noise import seeded_noise
from ..reference import models, oracle, world
from .frames import frame_row
from .page import figures_table, node_section, step

STEPS = 2
POSITIVE, NEGATIVE = "blue", "red"
STRENGTHS = strength_steps(-1.0, 1.5, 6)
FLIP = STRENGTHS.index(1.0)  # strength 1 adds the whole move from the negative prompts' mean to the positive ones'
CAPTIONS = (world.Scene("circle", "red", "large", "left", "white"),
            world.Scene("square", "red", "large", "right", "black"),
            world.Scene("triangle", "red", "small", "center", "white"))
SEEDS = (11, 12, 13)  # one per caption: every frame of a row starts from its caption's noise
RANDOM_SEED = 5


def red_to_blue(family) -> torch.Tensor:
    """The conditioning direction [tokens, width]: "blue" minus "red", each in every built-in template."""
    return text_direction(lambda prompts: (family.encode_text(prompts).hidden_states, None),
                          [POSITIVE], [NEGATIVE], TEMPLATES)["conditioning"]


def random_like(direction: torch.Tensor) -> torch.Tensor:
    """A seeded Gaussian direction of the same shape and norm: as big a move that means nothing."""
    generator = torch.Generator(device="cpu").manual_seed(RANDOM_SEED)
    noise = torch.randn(direction.shape, generator=generator)
    return noise * (direction.norm() / noise.norm())


def sweep_rows(out: Path, family, name: str, direction: torch.Tensor,
               flip_mark: str) -> tuple[str, list[list[dict[str, str]]]]:
    """Each caption's conditioning moved along ``direction`` at every strength, sampled from that caption's noise and
    decoded: one row of frames per caption (strength 1 marked ``flip_mark``), and the readings per row."""
    captions = family.encode_text([scene.caption() for scene in CAPTIONS]).hidden_states
    contexts = torch.cat([apply_to_tokens(tokens[None], direction, strength)
                          for tokens in captions for strength in STRENGTHS])
    noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)).expand(len(STRENGTHS), -1, -1, -1)
                       for seed in SEEDS])
    pictures = family.decode(family.sample_latents(contexts, noise)).clamp(0, 1)
    readings = oracle.read_batch(pictures)
    labels = [f"strength {strength:+.1f}" for strength in STRENGTHS]
    rows, row_readings = [], []
    for row, scene in enumerate(CAPTIONS):
        frames = slice(row * len(STRENGTHS), (row + 1) * len(STRENGTHS))
        rows.append(f"<p><i>{html.escape(scene.caption())}</i></p>"
                    + frame_row(out, f"{name}_{row}", pictures[frames], labels, readings[frames], {FLIP: flip_mark}))
        row_readings.append(readings[frames])
    return "".join(rows), row_readings


def count_per_strength(rows: list[list[dict[str, str]]], colour: str) -> list[int]:
    return [sum(row[i]["colour"] == colour for row in rows) for i in range(len(STRENGTHS))]


def shapes_kept(rows: list[list[dict[str, str]]]) -> int:
    return sum(reading["shape"] == scene.shape for scene, row in zip(CAPTIONS, rows) for reading in row)


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    with step(progress, "Direction Sweep: red to blue"):
        direction = red_to_blue(family)
        text_rows, text_readings = sweep_rows(out, family, "direction_sweep", direction, "flip point")
    with step(progress, "Direction Sweep: a random direction"):
        random_direction = random_like(direction)
        random_rows, random_readings = sweep_rows(out, family, "direction_sweep_random", random_direction,
                                                  "strength 1")

    captions, frames = len(CAPTIONS), len(CAPTIONS) * len(STRENGTHS)
    strengths = ", ".join(f"{strength:g}" for strength in STRENGTHS)
    figures = {
        "direction norm: red→blue, random": f"{float(direction.norm()):.2f}, {float(random_direction.norm()):.2f}",
        f"captions the oracle reads blue at strength {strengths}: red→blue":
            ", ".join(map(str, count_per_strength(text_readings, POSITIVE))),
        f"captions the oracle reads blue at strength {strengths}: random":
            ", ".join(map(str, count_per_strength(random_readings, POSITIVE))),
        "frames the oracle reads with the caption's shape: red→blue, random":
            f"{shapes_kept(text_readings)}/{frames}, {shapes_kept(random_readings)}/{frames}",
    }
    template_list = ", ".join(f"“{template}”" for template in TEMPLATES[:3])
    return node_section("Direction Sweep (LSC)", "LSC_DirectionSweep", (
        "<p><b>A semantic direction sweep on the reference world.</b> The direction is made from prompts as Direction "
        f"from CLIP (LSC) makes it: positive “{POSITIVE}”, negative “{NEGATIVE}”, each put in the {len(TEMPLATES)} "
        f"built-in templates ({template_list}, …) and encoded by the reference CLIP; the direction is the mean of the "
        "“blue” token sequences minus the mean of the “red” ones. Direction Sweep (LSC) adds it, times each strength "
        f"from {STRENGTHS[0]:g} to {STRENGTHS[-1]:g}, to every token of the conditioning of {captions} red-shape "
        "captions; each row is sampled by the reference UNet from one noise (Euler, 20 steps, guidance 4) and "
        "decoded, so only the direction differs along a row. Strength 1 (outlined) adds the whole move from the "
        "“red” prompts to the “blue” ones: the flip point.</p>"
        "<p>What the pictures show: below strength 0 the shapes stay red (at −1, pushed the other way, the small "
        "triangle grows large); at 0 each caption draws its red shape. At 0.5 the colour is on its way: the circle "
        "purple, the square already blue, the triangle still red. At strength 1 all three are blue, each keeping its "
        "shape, size and place; at 1.5 the blue holds but the small triangle breaks up into a blot the oracle reads "
        "as a circle, the cost of pushing past the flip point. The second block sweeps a random direction of the "
        "same norm over the same strengths and noises. The move is as large and it does change the pictures, but it "
        "means nothing: no picture turns blue.</p>"
        f"<div class='blocks'><div><p><b>red→blue</b></p>{text_rows}</div>"
        f"<div><p><b>random direction, same norm</b></p>{random_rows}</div></div>"
        + figures_table(figures)
    ))
