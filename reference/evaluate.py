"""How good the trained reference family is, measured by the pixel oracle and the grammar, never by a model.

Each function draws a fresh set from ``seed`` and returns scores in 0..1: the image measures a dict of
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


def _generate(family: models.ReferenceWorld, prompts: list[str], seed: int, steps: int, cfg_scale: float,
              batch: int) -> torch.Tensor:
    return torch.cat([family.generate(prompts[start:start + batch], seed + start, steps, cfg_scale)
                      for start in range(0, len(prompts), batch)])


@torch.no_grad()
def text_to_image_accuracy(family: models.ReferenceWorld, count: int, seed: int, steps: int = 20,
                           cfg_scale: float = 4.0, batch: int = 128, held_out: bool = False) -> dict[str, float]:
    """How often the oracle reads in a picture generated from a caption the attributes the caption names: captions
    of the shape-and-colour pairs seen in training, or (``held_out``) of those never seen (``world.HELD_OUT``)."""
    scenes = world.scenes(count, seed=seed, held_out=held_out)
    pictures = _generate(family, [scene.caption() for scene in scenes], seed, steps, cfg_scale, batch)
    return oracle.accuracy(oracle.read_batch(pictures), [scene.attributes() for scene in scenes])


@torch.no_grad()
def partial_prompt_accuracy(family: models.ReferenceWorld, count: int, seed: int, steps: int = 20,
                            cfg_scale: float = 4.0, batch: int = 128) -> dict[str, float]:
    """The same for prompts as artists write them, naming only some attributes (``world.partial_prompts``): for each
    attribute, how often the oracle reads it as named, over the prompts that name it."""
    prompts = world.partial_prompts(count, seed)
    pictures = _generate(family, [prompt for _, prompt, _ in prompts], seed, steps, cfg_scale, batch)
    readings = oracle.read_batch(pictures)
    accuracy = {}
    for name in world.ATTRIBUTES:
        hits = [reading[name] == getattr(scene, name) for (scene, _, named), reading in zip(prompts, readings)
                if name in named]
        accuracy[name] = sum(hits) / len(hits)
    return accuracy


def _image_features(family: models.ReferenceWorld, scenes: list[world.Scene]) -> torch.Tensor:
    return torch.cat([family.score_images(chunk) for chunk in world.render_batch(scenes).split(512)])


def _zero_shot(family: models.ReferenceWorld, image_features: torch.Tensor, truths: list[world.Scene],
               prompts: dict[str, world.Scene], attributes) -> dict[str, float]:
    """Zero-shot classification by CLIP, one attribute at a time: a value's probability is the summed softmax
    probability of the prompts whose scene has it (the attributes a prompt leaves out marginalised out), and a
    picture gets the most probable value."""
    text_features = family.encode_text(list(prompts)).embedding
    logits = family.clip.logit_scale.exp() * image_features @ text_features.T
    accuracy = {}
    for attribute in attributes:
        values = world.ATTRIBUTES[attribute]
        names = [getattr(scene, attribute) for scene in prompts.values()]
        scores = torch.stack([logits[:, [name == value for name in names]].logsumexp(dim=1) for value in values], 1)
        truth = torch.tensor([values.index(getattr(scene, attribute)) for scene in truths])
        accuracy[attribute] = (scores.argmax(dim=1) == truth).float().mean().item()
    return accuracy


@torch.no_grad()
def clip_zero_shot(family: models.ReferenceWorld, count: int, seed: int) -> dict[str, float]:
    """Zero-shot classification of fresh pictures by CLIP with every caption of the world as a prompt."""
    scenes = world.scenes(count, seed=seed)
    prompts = {scene.caption(): scene for scene in models.every_scene()}
    return _zero_shot(family, _image_features(family, scenes), scenes, prompts, world.ATTRIBUTES)


# Prompt styles artists write (the attributes named beside the shape; background clause first): "a red circle", the
# caption without its background clause, and "white background, a red circle".
PARTIAL_ZERO_SHOT_STYLES = ((("colour",), False), (("size", "colour", "position"), False),
                            (("colour", "background"), True))


@torch.no_grad()
def clip_zero_shot_partial(family: models.ReferenceWorld, count: int, seed: int) -> dict[str, float]:
    """Zero-shot classification of fresh pictures with partial prompts, one style of ``PARTIAL_ZERO_SHOT_STYLES`` at
    a time (every distinct prompt of the style): per attribute, the accuracy averaged over the styles that name it
    (shape: all of them)."""
    scenes = world.scenes(count, seed=seed)
    image_features = _image_features(family, scenes)
    per_style = []
    for named, background_first in PARTIAL_ZERO_SHOT_STYLES:
        prompts = {}
        for scene in models.every_scene():
            prompts.setdefault(scene.prompt(named, background_first), scene)
        per_style.append(_zero_shot(family, image_features, scenes, prompts, ("shape", *named)))
    return {name: sum(style[name] for style in per_style if name in style) / sum(name in style for style in per_style)
            for name in world.ATTRIBUTES}


@torch.no_grad()
def lm_grammatical(family: models.ReferenceWorld, count: int, seed: int) -> float:
    """The fraction of sentences the LM writes from scratch that belong to its language."""
    sentences = family.write("", count, seed)
    return sum(grammar.parse(sentence) is not None for sentence in sentences) / count
