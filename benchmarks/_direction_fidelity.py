"""How faithfully text directions do what they say on the reference world, judged by the pixel oracle: a red→blue
direction made from prompts turns red pictures blue and leaves the rest alone while a random one of the same size
does not; a direction carried into another encoder's space by Procrustes against the one made there; and what the
principal directions of a batch line up with.

Part of benchmarks/fidelity.py.
"""

import torch
import torch.nn.functional as F

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core.adapters import open_clip_text_encoder  # noqa: E402
from latent_space_control.core.directions import (TEMPLATES, Alignment, apply_to_tokens,  # noqa: E402
                                                  mean_difference, principal_directions, procrustes, text_direction)
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

# Strength 1 adds the whole difference between the prompts' encodings: about as far as writing the other word.
STRENGTH = 1.0
POSITIVE, NEGATIVE = "blue", "red"
KEPT = ("shape", "size", "position", "background")  # what a colour direction must leave alone
FLIP_COUNT = 256
PARTIAL_COUNT = 128


def scenes_of_colour(colour: str, count: int, seed: int) -> list[world.Scene]:
    """``count`` random scenes of the training pairs that have ``colour``, the same for the same seed."""
    found = [scene for scene in world.scenes(12 * count, seed, held_out=False) if scene.colour == colour][:count]
    assert len(found) == count, f"seed {seed} draws only {len(found)} {colour} scenes; draw more"
    return found


def generate(family: models.ReferenceWorld, contexts: torch.Tensor, seed: int, batch: int = 128) -> torch.Tensor:
    """Pictures from text hidden states as ``evaluate._generate`` makes them from prompts: batch by batch, from the
    noise of ``seed`` plus the batch's start, with the family's sampler, steps and guidance (the negative prompt
    stays the empty one)."""
    pictures = []
    for start in range(0, len(contexts), batch):
        chunk = contexts[start:start + batch]
        noise = seeded_noise(seed + start, (len(chunk), *models.LATENT_SHAPE))
        pictures.append(family.decode(family.sample_latents(chunk, noise)).clamp(0, 1))
    return torch.cat(pictures)


def random_directions(like: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` random directions of ``like``'s shape and Frobenius norm."""
    noise = torch.randn((count, *like.shape), generator=torch.Generator().manual_seed(seed))
    return noise * (like.norm() / noise.flatten(1).norm(dim=1)).reshape(-1, *[1] * like.ndim)


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def _unchanged(reading: dict, reference: dict, names) -> bool:
    return all(reading[name] == reference[name] for name in names)


@torch.inference_mode()
def flip_figures(family: models.ReferenceWorld) -> dict:
    """The red→blue direction at ``STRENGTH`` on fresh red captions. "Kept" compares each edited picture with the
    picture of the same caption and seed made without the direction, so it counts only what the direction changed,
    not the model's own misses (also given against the caption)."""
    encode = open_clip_text_encoder(family.clip, family.clip_tokenizer)
    direction = text_direction(encode, [POSITIVE], [NEGATIVE], TEMPLATES)["conditioning"]
    scenes = scenes_of_colour(NEGATIVE, FLIP_COUNT, EVALUATION_SEED + 11)
    contexts = encode([scene.caption() for scene in scenes]).hidden_states
    seed = EVALUATION_SEED + 12
    unedited = oracle.read_batch(generate(family, contexts, seed))
    edited = oracle.read_batch(generate(family, apply_to_tokens(contexts, direction, STRENGTH), seed))
    randoms = random_directions(direction, len(scenes), EVALUATION_SEED + 13)
    randomised_contexts = torch.cat([apply_to_tokens(context[None], random, STRENGTH)
                                     for context, random in zip(contexts, randoms)])
    randomised = oracle.read_batch(generate(family, randomised_contexts, seed))
    truths = [scene.attributes() for scene in scenes]
    figures = {
        "dir_text_strength": STRENGTH,
        "dir_text_flip_rate": _share(reading["colour"] == POSITIVE for reading in edited),
        "dir_text_keep_rate": _share(_unchanged(e, u, KEPT) for e, u in zip(edited, unedited)),
        "dir_text_keep_rate_vs_caption": _share(_unchanged(e, t, KEPT) for e, t in zip(edited, truths)),
        "dir_text_unedited_accuracy": _share(_unchanged(u, t, world.ATTRIBUTES) for u, t in zip(unedited, truths)),
        "dir_random_flip_rate": _share(reading["colour"] == POSITIVE for reading in randomised),
        "dir_random_keep_rate": _share(_unchanged(r, u, KEPT) for r, u in zip(randomised, unedited)),
        "dir_random_colour_kept_rate": _share(r["colour"] == u["colour"] for r, u in zip(randomised, unedited)),
    }
    return {**figures, **partial_prompt_figures(family, encode, direction)}


def partial_prompt_figures(family: models.ReferenceWorld, encode, direction: torch.Tensor) -> dict:
    """The same direction on prompts as artists write them ("a red circle", "white background, a small red
    square"), where the colour word sits elsewhere in the sequence than in the captions. Kept: the other attributes
    the prompt names (those it leaves out the model picks from the noise, and may pick again)."""
    prompts = [(scene, prompt, named) for scene, prompt, named in world.partial_prompts(12 * PARTIAL_COUNT,
                                                                                        EVALUATION_SEED + 14)
               if scene.colour == NEGATIVE and "colour" in named][:PARTIAL_COUNT]
    assert len(prompts) == PARTIAL_COUNT, f"only {len(prompts)} prompts name {NEGATIVE}; draw more"
    contexts = encode([prompt for _, prompt, _ in prompts]).hidden_states
    seed = EVALUATION_SEED + 15
    unedited = oracle.read_batch(generate(family, contexts, seed))
    edited = oracle.read_batch(generate(family, apply_to_tokens(contexts, direction, STRENGTH), seed))
    return {
        "dir_text_partial_prompt_flip_rate": _share(reading["colour"] == POSITIVE for reading in edited),
        "dir_text_partial_prompt_keep_rate": _share(_unchanged(e, u, named.intersection(KEPT))
                                                    for e, u, (_, _, named) in zip(edited, unedited, prompts)),
    }


def lm_encoder(family: models.ReferenceWorld, layer: int = -1):
    """The reference LM as a prompt encoder: (hidden states of ``layer`` [N, tokens, width], their mean over each
    prompt's tokens [N, width]); layer 0 is the input embeddings (word plus position), -1 the last layer."""

    def encode(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = family.lm_tokenizer(prompts, return_tensors="pt", padding=True)
        hidden = family.lm(**tokens, output_hidden_states=True).hidden_states[layer]
        mask = tokens.attention_mask[..., None].to(hidden)
        return hidden, (hidden * mask).sum(1) / mask.sum(1)

    return encode


def _carried_cosine(source_anchors, target_anchors, source_direction, target_direction) -> tuple[float, Alignment]:
    alignment = procrustes(source_anchors, target_anchors)
    return F.cosine_similarity(alignment.carry(source_direction), target_direction, dim=0).item(), alignment


@torch.inference_mode()
def transfer_figures(family: models.ReferenceWorld) -> dict:
    """The red→blue direction made from the templates in CLIP's pooled text space, carried by orthogonal
    Procrustes into another space and compared with the one made there from the same prompts.

    Anchors are the world's 216 captions. They name every colour, red and blue included; the direction's prompts
    (the templates) are none of them. Anchors without red and blue cannot carry that pair: an orthogonal map fitted
    where they vary fixes nothing along the red↔blue axis (``_unseen_pair``, the leak-free limit); shuffling the
    anchors' pairing is the null a map that learnt nothing scores."""
    clip = open_clip_text_encoder(family.clip, family.clip_tokenizer)
    captions = models.every_caption()
    unseen = [caption for caption in captions if not {POSITIVE, NEGATIVE} & set(caption.replace(",", "").split())]
    clip_direction = text_direction(clip, [POSITIVE], [NEGATIVE], TEMPLATES)["pooled"]
    clip_anchors, clip_unseen = clip(captions).embedding, clip(unseen).embedding
    figures = {}
    for name, layer in (("lm", -1), ("lm_embeddings", 0)):
        lm = lm_encoder(family, layer)
        lm_direction = text_direction(lm, [POSITIVE], [NEGATIVE], TEMPLATES)["pooled"]
        lm_anchors = lm(captions)[1]
        cosine, alignment = _carried_cosine(clip_anchors, lm_anchors, clip_direction, lm_direction)
        reverse, _ = _carried_cosine(lm_anchors, clip_anchors, lm_direction, clip_direction)
        shuffled = lm_anchors[torch.randperm(len(captions), generator=torch.Generator().manual_seed(0))]
        figures.update({
            f"dir_transfer_cosine_clip_to_{name}": cosine,
            f"dir_transfer_cosine_{name}_to_clip": reverse,
            f"dir_transfer_fit_r2_clip_to_{name}": alignment.r2,
            f"dir_transfer_fit_cosine_clip_to_{name}": alignment.cosine,
            f"dir_transfer_cosine_clip_to_{name}_unseen_pair": _carried_cosine(
                clip_unseen, lm(unseen)[1], clip_direction, lm_direction)[0],
            f"dir_transfer_cosine_clip_to_{name}_shuffled_anchors": _carried_cosine(
                clip_anchors, shuffled, clip_direction, lm_direction)[0],
        })
    figures.update(text_to_image_figures(family, clip_direction))
    # The pair the bar names: CLIP's pooled text space into the LM's input-embedding space (its contextual last layer
    # shares too little with CLIP to carry a direction: dir_transfer_cosine_clip_to_lm).
    figures["dir_transfer_cosine"] = figures["dir_transfer_cosine_clip_to_lm_embeddings"]
    return figures


def text_to_image_figures(family: models.ReferenceWorld, clip_direction: torch.Tensor) -> dict:
    """CLIP's text space into its image space: anchors are each caption and its scene's picture; the native
    direction is the mean image embedding of blue pictures minus that of red ones."""
    scenes = models.every_scene()
    anchors_text = family.encode_text([scene.caption() for scene in scenes]).embedding
    anchors_image = family.score_images(world.render_batch(scenes))
    pictures = world.scenes(2000, EVALUATION_SEED + 16)
    embeddings = torch.cat([family.score_images(chunk) for chunk in world.render_batch(pictures).split(500)])
    colours = [scene.colour for scene in pictures]
    image_direction = mean_difference(embeddings[[c == POSITIVE for c in colours]],
                                      embeddings[[c == NEGATIVE for c in colours]], "blue pictures", "red pictures")
    cosine, alignment = _carried_cosine(anchors_text, anchors_image, clip_direction, image_direction)
    without_pair = [scene.colour not in (POSITIVE, NEGATIVE) for scene in scenes]
    return {
        "dir_transfer_cosine_text_to_image": cosine,
        "dir_transfer_fit_r2_text_to_image": alignment.r2,
        "dir_transfer_cosine_text_to_image_unmapped": F.cosine_similarity(clip_direction, image_direction, 0).item(),
        "dir_transfer_cosine_text_to_image_unseen_pair": _carried_cosine(
            anchors_text[without_pair], anchors_image[without_pair], clip_direction, image_direction)[0],
    }


def correlation_ratio(scores: torch.Tensor, labels: list[str]) -> float:
    """η²: the share of the scores' variance that the labels' group means explain (1: the score is the label)."""
    centred = scores - scores.mean()
    between = sum(centred[[label == value for label in labels]].sum() ** 2 / labels.count(value)
                  for value in set(labels))
    return float(between / (centred ** 2).sum())


def _principal_figures(name: str, batch: torch.Tensor, scenes: list[world.Scene], count: int = 4) -> dict:
    found = principal_directions(batch, count, name)
    rows = batch.reshape(len(batch), -1)
    first = (rows - rows.mean(0)) @ found.directions[0].reshape(-1)
    eta = {attribute: correlation_ratio(first, [getattr(scene, attribute) for scene in scenes])
           for attribute in world.ATTRIBUTES}
    strongest = max(eta, key=eta.get)
    return {**{f"dir_pca_explained_{name}_{k + 1}": value for k, value in enumerate(found.explained.tolist())},
            f"dir_pca_{name}_first_attribute": strongest, f"dir_pca_{name}_first_eta2": eta[strongest]}


@torch.inference_mode()
def pca_figures(family: models.ReferenceWorld) -> dict:
    """Principal directions of the captions' conditionings and of the VAE latents of their pictures: the share of
    variance each explains, and which attribute the first one follows (η² of its scores)."""
    scenes = world.scenes(1024, EVALUATION_SEED + 17)
    conditionings = family.encode_text([scene.caption() for scene in scenes]).hidden_states
    latents = torch.cat([family.encode(chunk) for chunk in world.render_batch(scenes).split(256)])
    return {**_principal_figures("conditioning", conditionings, scenes),
            **_principal_figures("latent", latents, scenes)}


def text_direction_figures() -> dict:
    family = models.load()
    return {**flip_figures(family), **transfer_figures(family), **pca_figures(family)}
