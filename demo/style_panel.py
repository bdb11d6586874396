"""The Style Mix by Timestep (LSC) panel: two captions, A and B, and pictures sampled with A's prediction before a
cutoff of the schedule and B's after it (``crossfaded_denoiser`` with ``schedule_position``, the node's convention),
one row per noise; beside them how often each attribute still follows A at each cutoff."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..core.adapters import sigmas_from_alphas_cumprod
from ..core.noise import seeded_noise
from ..core.sampling import karras_sigmas, sample_euler
from ..core.style import crossfaded_denoiser, schedule_position
from ..reference import models, oracle, world
from .frames import frame_row
from .page import figures_table, line_plot, node_section, step

STEPS = 1
A = world.Scene("circle", "red", "large", "left", "white")
B = world.Scene("square", "blue", "large", "right", "black")
ATTRIBUTES = ("position", "background", "colour", "shape")  # those where A and B differ
CUTOFFS = (0.3, 0.6, 0.9, 0.97)
SEEDS = (21, 22, 23)  # one row each: every picture of a row starts from that seed's noise
SAMPLING_STEPS, CFG_SCALE = 20, 4.0  # as ReferenceWorld.sample_latents samples
COLUMNS = ("A alone", "B alone", *(f"cutoff {cutoff:g}" for cutoff in CUTOFFS))


def sample_grid(family) -> torch.Tensor:
    """Pictures [columns × seeds, 3, H, W], column-major: A alone, B alone, then the switch from A to B at each cutoff,
    every column from the same seeds' noises."""
    captions = family.encode_text([A.caption(), B.caption()]).hidden_states
    structure, style = family.denoiser(captions[:1], CFG_SCALE), family.denoiser(captions[1:], CFG_SCALE)
    position = partial(schedule_position, sigmas=sigmas_from_alphas_cumprod(family.alphas_cumprod))
    sigmas = karras_sigmas(SAMPLING_STEPS, *family.sigma_range())
    noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in SEEDS])
    seeds = len(SEEDS)
    # A and B alone in one run, one caption per item; A's states are kept: a hard switch leaves every step before
    # the cutoff to A, so each mix continues A's own run from the step where B takes over.
    alone = family.denoiser(captions.repeat_interleave(seeds, 0), CFG_SCALE)
    a_states = []
    ends = sample_euler(alone, noise.repeat(2, 1, 1, 1) * sigmas[0], sigmas,
                        lambda state: a_states.append(state["x"][:seeds]))
    columns = [ends[:seeds], ends[seeds:]]
    for cutoff in CUTOFFS:
        switch = next(i for i, sigma in enumerate(sigmas[:-1]) if position(float(sigma)) >= cutoff)
        columns.append(sample_euler(crossfaded_denoiser(structure, style, position, cutoff), a_states[switch],
                                    sigmas[switch:]))
    return family.decode(torch.cat(columns) / family.scaling_factor).clamp(0, 1)


def follows_a(readings: list[dict[str, str]], attribute: str) -> int:
    """How many of the readings have A's value of ``attribute``."""
    return sum(reading[attribute] == getattr(A, attribute) for reading in readings)


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    with step(progress, "Style Mix by Timestep: A, B and the mixes"):
        pictures = sample_grid(family)
    readings = oracle.read_batch(pictures)
    seeds = len(SEEDS)
    by_column = [readings[column * seeds:(column + 1) * seeds] for column in range(len(COLUMNS))]
    rows = []
    for row, seed in enumerate(SEEDS):
        frames = list(range(row, len(pictures), seeds))
        rows.append(f"<p><i>seed {seed}</i></p>"
                    + frame_row(out, f"style_mix_{row}", pictures[frames], list(COLUMNS),
                                [readings[i] for i in frames]))
    # B alone is cutoff 0 (B's prediction at every step): the counts run over it and the mixes.
    counts = {attribute: [follows_a(column, attribute) for column in by_column[1:]] for attribute in ATTRIBUTES}
    cutoffs = ", ".join(f"{cutoff:g}" for cutoff in CUTOFFS)
    figures = {f"seeds (of {seeds}) following A at cutoff 0 (B alone), {cutoffs}: {attribute}":
               ", ".join(map(str, values)) for attribute, values in counts.items()}
    figures[f"seeds (of {seeds}) where A alone / B alone reads as its caption"] = (
        f"{sum(r == A.attributes() for r in by_column[0])}, {sum(r == B.attributes() for r in by_column[1])}")
    plot = line_plot({attribute: [count / seeds for count in values] for attribute, values in counts.items()},
                     [0.0, *CUTOFFS], "cutoff (where B takes over)", "share of seeds following A")
    return node_section("Style Mix by Timestep (LSC)", "LSC_StyleMix", (
        f"<p>Caption A, “{A.caption()}”, drives the first part of the schedule and caption B, "
        f"“{B.caption()}”, the rest: before the cutoff the sampler takes A's prediction, from the cutoff on B's, a "
        "hard switch. The cutoff is a fraction of the schedule counted as ComfyUI counts it (0: the noisiest step, "
        "1: the end; <code>schedule_position</code>), so these cutoffs mean the same in the node. Every picture of a "
        f"row starts from one seed's noise (Euler, {SAMPLING_STEPS} steps on the Karras schedule, guidance "
        f"{CFG_SCALE:g}); the first two columns are each caption alone.</p>"
        "<p>What the pictures show: this world does not settle structure first and style last. It settles the "
        "layout first: at cutoff 0.3 every picture is still B's; by 0.6 the place and the background are A's, "
        "around a smudged bluish square that the oracle does not always read as one. The colour comes next, A's red "
        "by 0.9, and the shape last of all: at 0.9 every picture is a red square on the left on white, A's colour, "
        "place and background with B's shape, and only a switch in the last few steps (0.97) leaves A's circle. So "
        "on this world the late prompt chooses the shape and the early one the colour: no cutoff here gives A's "
        "shape in B's colour. The curve and the table count, over the rows above, how many seeds follow A in each "
        "attribute at each cutoff.</p>"
        + "".join(rows) + plot + figures_table(figures)
    ))
