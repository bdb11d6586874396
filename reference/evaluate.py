"""How good the trained reference family is, measured by the pixel oracle and the grammar, never by a model.

Each function draws a fresh set from ``seed`` and returns scores in 0..1: the three image measures a dict of
agreement per attribute, ``lm_grammatical`` a single fraction. The benchmarks run them at full size; the tests run
them small.
"""

from __future__ import annotations

import torch

from . import grammar, models, oracle, world


@torch.no_grad()
def vae_attribute_preservation(family: models.ReferenceWorld, count: int, seed: int) -> dict[str, float]:
    """How often the oracle reads the same attributes from a picture and from its VAE reconstruction."""
    pictures = world.render_batch(world.scenes(count, seed=seed))
    reconstructions = torch.cat([family.decode(family.encode(chunk)).clamp(0, 1) for chunk in pictures.split(256)])
    return oracle.accuracy(oracle.read_batch(reconstructions), oracle.read_batch(pictures))


@torch.no_grad()
def text_to_image_accuracy(family: models.ReferenceWorld, count: int, seed: int, steps: int = 20,
                           cfg_scale: float = 4.0, batch: int = 128) -> dict[str, float]:
    """How often the oracle reads in a picture generated from a caption the attributes the caption names."""
    scenes = world.scenes(count, seed=seed)
    pictures = []
    for start in range(0, count, batch):
        chunk = scenes[start:start + batch]
        pictures.append(family.generate([scene.caption() for scene in chunk], seed + start, steps, cfg_scale))
    return oracle.accuracy(oracle.read_batch(torch.cat(pictures)), [scene.attributes() for scene in scenes])


@torch.no_grad()
def clip_zero_shot(family: models.ReferenceWorld, count: int, seed: int) -> dict[str, float]:
    """Zero-shot classification of fresh pictures by CLIP, one attribute at a time, with every caption of the world
    as a prompt: a value's probability is the summed softmax probability of the captions that name it (the other
    attributes marginalised out), and a picture gets the most probable value."""
    scenes = world.scenes(count, seed=seed)
    image_features = torch.cat([family.score_images(chunk) for chunk in world.render_batch(scenes).split(512)])
    every_scene = models.every_scene()
    text_features = family.encode_text([scene.caption() for scene in every_scene]).embedding
    logits = family.clip.logit_scale.exp() * image_features @ text_features.T
    accuracy = {}
    for attribute, values in world.ATTRIBUTES.items():
        names = [getattr(scene, attribute) for scene in every_scene]
        scores = torch.stack([logits[:, [name == value for name in names]].logsumexp(dim=1) for value in values], 1)
        truth = torch.tensor([values.index(getattr(scene, attribute)) for scene in scenes])
        accuracy[attribute] = (scores.argmax(dim=1) == truth).float().mean().item()
    return accuracy


@torch.no_grad()
def lm_grammatical(family: models.ReferenceWorld, count: int, seed: int) -> float:
    """The fraction of sentences the LM writes from scratch that belong to its language."""
    sentences = family.write("", count, seed)
    return sum(grammar.parse(sentence) is not None for sentence in sentences) / count
