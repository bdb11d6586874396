"""How faithfully a latent direction found by CLIP does what its prompts say, judged by the pixel oracle: one offset
found on a batch of encoded red shapes, with the engine's defaults, turns other red shapes blue and leaves their shape,
size, position and background alone.

Part of benchmarks/fidelity.py.
"""

import time

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core.latent_direction import clip_latent_direction  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

POSITIVE, NEGATIVE = "blue", "red"
KEPT = ("shape", "size", "position", "background")  # what a colour direction must leave alone
FIND_COUNT = 96  # the batch the direction is found on, as a user would encode it
APPLY_COUNT = 512  # the other pictures it is judged on


def scenes_of_colour(colour: str, count: int, seed: int) -> list[world.Scene]:
    """``count`` random scenes of the training pairs that have ``colour``, the same for the same seed."""
    found = [scene for scene in world.scenes(12 * count, seed, held_out=False) if scene.colour == colour][:count]
    assert len(found) == count, f"seed {seed} draws only {len(found)} {colour} scenes; draw more"
    return found


def captions_of_colour(colour: str) -> list[str]:
    """Every caption of the world that names ``colour``: the prompts average to the colour alone, the other
    attributes cancelling out."""
    return sorted({scene.caption() for scene in models.every_scene() if scene.colour == colour})


def latent_direction_figures() -> dict:
    family = models.load()
    with torch.no_grad():
        text = family.encode_text(captions_of_colour(POSITIVE) + captions_of_colour(NEGATIVE)).embedding
        found_on = family.encode(world.render_batch(scenes_of_colour(NEGATIVE, FIND_COUNT, EVALUATION_SEED + 31)))
        applied_to = family.encode(world.render_batch(scenes_of_colour(NEGATIVE, APPLY_COUNT, EVALUATION_SEED + 32)))
    positive, negative = text.chunk(2)
    start = time.perf_counter()
    offset = clip_latent_direction(family.decode, family.score_images, found_on, positive, negative)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        # "Kept" compares each edited picture with its unedited decoding: only what the offset changed counts.
        unedited = oracle.read_batch(family.decode(applied_to).clamp(0, 1))
        edited = oracle.read_batch(family.decode(applied_to + offset).clamp(0, 1))
    return {
        "dir_latent_flip_rate": sum(reading["colour"] == POSITIVE for reading in edited) / len(edited),
        "dir_latent_keep_rate": sum(all(after[name] == before[name] for name in KEPT)
                                    for after, before in zip(edited, unedited)) / len(edited),
        "dir_latent_seconds": seconds,
    }
