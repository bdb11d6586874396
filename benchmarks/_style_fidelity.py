"""How style mixing by timestep divides a picture between two prompts on the reference world, judged by the pixel
oracle: pairs of captions A (structure) and B (style) that differ in shape, colour, position and size (the background
is the same), sampled with A's prediction before a cutoff of the schedule and B's after it, over cutoffs from 0 (B
alone) to 1 (A alone); and whether AdaIN gives latents exactly the
target's channel statistics.

Part of benchmarks/fidelity.py.
"""

import random

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core.adapters import sigmas_from_alphas_cumprod  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.core.sampling import karras_sigmas, sample_euler  # noqa: E402
from latent_space_control.core.style import (adain, channel_statistics, crossfade_weight,  # noqa: E402
                                              crossfaded_denoiser, schedule_position)
from latent_space_control.reference import models, oracle, world  # noqa: E402

PAIRS = 48  # one batch: about 3 minutes on one CPU thread
CUTOFFS = tuple(round(0.1 * i, 1) for i in range(11))
STEPS, CFG = 20, 4.0
DIFFERING = ("shape", "colour", "position", "size")  # what A and B disagree on
KEY_NAMES = {"shape": "shape", "colour": "color", "position": "position", "size": "size"}
STYLE_SEED = EVALUATION_SEED + 41  # the pairs; their noise seeds follow it
ADAIN_SEED = EVALUATION_SEED + 40


def prompt_pairs(count: int, seed: int) -> list[tuple[world.Scene, world.Scene]]:
    """``count`` pairs of training-pair scenes (A, B) that differ in every attribute of ``DIFFERING`` and share
    the background; the same for the same seed."""
    choose = random.Random(seed)
    pairs = []
    for a in world.scenes(count, seed, held_out=False):
        while True:
            b = world.Scene(**{name: choose.choice([v for v in values if v != getattr(a, name)])
                               if name in DIFFERING else getattr(a, name) for name, values in world.ATTRIBUTES.items()})
            if not b.held_out:
                break
        pairs.append((a, b))
    return pairs


def pair_seeds(count: int) -> list[int]:
    """The noise seed of each pair: one seed a picture, so ComfyUI's KSampler draws the same noise from it."""
    return [STYLE_SEED + 1 + i for i in range(count)]


def switched_pictures(family: models.ReferenceWorld, pairs, seeds: list[int]) -> dict[float, torch.Tensor]:
    """Pictures of every pair at every cutoff, each pair from the noise of its seed (a batch of all pairs). Before
    its cutoff a sampler runs A's prediction alone, so every cutoff continues the one trajectory of A: each is
    sampled with ``crossfaded_denoiser`` from A's state at the first step at or after the cutoff, which is exact and
    saves a third of the model passes."""
    contexts = family.encode_text([scene.caption() for pair in pairs for scene in pair]).hidden_states
    structure, style = family.denoiser(contexts[0::2], CFG), family.denoiser(contexts[1::2], CFG)
    training_sigmas = sigmas_from_alphas_cumprod(family.alphas_cumprod)

    def position(sigma: float) -> float:
        return schedule_position(sigma, training_sigmas)

    sigmas = karras_sigmas(STEPS, *family.sigma_range())
    trajectory = []
    noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in seeds])
    final = sample_euler(structure, noise * sigmas[0], sigmas, lambda step: trajectory.append(step["x"]))
    pictures = {}
    for cutoff in CUTOFFS:
        switch = next((i for i, sigma in enumerate(sigmas[:-1])
                       if crossfade_weight(position(float(sigma)), cutoff) > 0), STEPS)
        latents = final if switch == STEPS else sample_euler(
            crossfaded_denoiser(structure, style, position, cutoff), trajectory[switch], sigmas[switch:])
        pictures[cutoff] = family.decode(latents / family.scaling_factor).clamp(0, 1)
    return pictures


def _rate(readings, scenes, attribute: str) -> float:
    return sum(r[attribute] == getattr(s, attribute) for r, s in zip(readings, scenes)) / len(scenes)


@torch.inference_mode()
def timestep_mix_figures(family: models.ReferenceWorld) -> dict:
    """The rate at which each attribute follows A (and B) at each cutoff. The cutoff reported as ``style_cutoff`` is
    the one at which the most pictures have both A's layout (position) and B's colour: this family settles the
    position first, then the size, then the colour, and the shape last (at 8x8 latent cells it is fine detail), so
    no cutoff gives A's shape with B's colour, and structure is measured both as shape and as layout."""
    pairs = prompt_pairs(PAIRS, STYLE_SEED)
    a_scenes, b_scenes = [a for a, _ in pairs], [b for _, b in pairs]
    readings = {cutoff: oracle.read_batch(batch) for cutoff, batch in
                switched_pictures(family, pairs, pair_seeds(PAIRS)).items()}
    figures = {"style_cutoffs": list(CUTOFFS)}
    for attribute in DIFFERING:
        for source, scenes in (("a", a_scenes), ("b", b_scenes)):
            figures[f"style_curve_{KEY_NAMES[attribute]}_follows_{source}"] = [
                _rate(readings[cutoff], scenes, attribute) for cutoff in CUTOFFS]
    layout_and_colour = [sum(r["position"] == a.position and r["colour"] == b.colour
                             for r, a, b in zip(readings[cutoff], a_scenes, b_scenes)) / PAIRS for cutoff in CUTOFFS]
    figures["style_curve_layout_a_color_b"] = layout_and_colour
    best = max(range(len(CUTOFFS)), key=lambda i: layout_and_colour[i])
    figures.update({
        "style_cutoff": CUTOFFS[best],
        "style_structure_follows_a": figures["style_curve_shape_follows_a"][best],
        "style_layout_follows_a": figures["style_curve_position_follows_a"][best],
        "style_color_follows_b": figures["style_curve_color_follows_b"][best],
        "style_layout_a_color_b": layout_and_colour[best],
    })
    return figures


def _statistics_error(result: torch.Tensor, target: torch.Tensor) -> float:
    (mean, std), (target_mean, target_std) = channel_statistics(result), channel_statistics(target)
    return max((mean - target_mean).abs().max().item(), (std - target_std).abs().max().item())


@torch.inference_mode()
def adain_figures(family: models.ReferenceWorld) -> dict:
    """AdaIN's result against its target's per-channel mean and standard deviation: on random latents of unlike
    statistics and on the VAE latents of rendered pictures (content and style different scenes)."""
    generator = torch.Generator().manual_seed(ADAIN_SEED)
    content = torch.randn((16, *models.LATENT_SHAPE), generator=generator) * 3.0 + 2.0
    target = torch.randn((16, *models.LATENT_SHAPE), generator=generator) * 0.5 - 1.0
    scenes = world.scenes(64, ADAIN_SEED)
    latents = family.encode(world.render_batch(scenes))
    random_error = _statistics_error(adain(content, target), target)
    latent_error = _statistics_error(adain(latents[:32], latents[32:]), latents[32:])
    return {"adain_stat_error": max(random_error, latent_error), "adain_stat_error_random": random_error,
            "adain_stat_error_latents": latent_error}


def style_figures() -> dict:
    family = models.load()
    return {**timestep_mix_figures(family), **adain_figures(family)}
