"""A text direction does what it says on the reference world, judged by the pixel oracle (a small version of
benchmarks/_direction_fidelity.py): "red"→"blue" made from the built-in templates turns pictures of red captions blue
and keeps what else the caption says, while a random direction of the same size leaves them red."""

import pytest
import torch

pytest.importorskip("diffusers", reason="the reference family needs the test extras: pip install -e '.[test]'")
pytest.importorskip("open_clip", reason="the reference family needs the test extras: pip install -e '.[test]'")
pytest.importorskip("transformers", reason="the reference family needs the test extras: pip install -e '.[test]'")

from latent_space_control.core.adapters import open_clip_text_encoder  # noqa: E402
from latent_space_control.core.directions import TEMPLATES, apply_to_tokens, text_direction  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

SEED = 4243  # apart from the benchmark's seeds and those the strength and templates were chosen on
STRENGTH = 1.0  # the node's default
COUNT = 16


@pytest.fixture(scope="module")
def family():
    with torch.inference_mode():
        return models.load()


def pictures(family, contexts: torch.Tensor) -> list[dict[str, str]]:
    """The oracle's readings of pictures generated from text hidden states, as the family generates from prompts."""
    noise = seeded_noise(SEED, (len(contexts), *models.LATENT_SHAPE))
    return oracle.read_batch(family.decode(family.sample_latents(contexts, noise)).clamp(0, 1))


def test_red_to_blue_direction_turns_red_pictures_blue_and_keeps_the_rest(family):
    with torch.inference_mode():
        encode = open_clip_text_encoder(family.clip, family.clip_tokenizer)
        direction = text_direction(encode, ["blue"], ["red"], TEMPLATES)["conditioning"]
        scenes = [scene for scene in world.scenes(12 * COUNT, SEED, held_out=False) if scene.colour == "red"][:COUNT]
        contexts = encode([scene.caption() for scene in scenes]).hidden_states
        edited = pictures(family, apply_to_tokens(contexts, direction, STRENGTH))
        noise = torch.randn(direction.shape, generator=torch.Generator().manual_seed(SEED))
        randomised = pictures(family, apply_to_tokens(contexts, noise * direction.norm() / noise.norm(), STRENGTH))

    flipped = sum(reading["colour"] == "blue" for reading in edited)
    kept = sum(all(reading[name] == getattr(scene, name) for name in ("shape", "size", "position", "background"))
               for reading, scene in zip(edited, scenes))
    random_flipped = sum(reading["colour"] == "blue" for reading in randomised)
    random_red = sum(reading["colour"] == "red" for reading in randomised)
    assert flipped >= 0.85 * COUNT, [reading["colour"] for reading in edited]
    assert kept >= 0.85 * COUNT, list(zip(edited, scenes))
    # The random direction moves the pictures as far, yet towards no colour in particular.
    assert random_flipped <= 0.15 * COUNT and random_red >= 0.8 * COUNT, [r["colour"] for r in randomised]
