"""How faithfully activation steering does what it says on the reference world, judged by the grammar and the pixel
oracle.

- Language model: a joyful−gloomy vector from example sentences of each mood, added to the output of the LM's
  blocks while it writes after the prompt "a" (a sentence may start there, so the mood word is the LM's own choice
  at a position steering reaches; the first token after the start token barely depends on context). Mood rate: the
  share of sentences in the target mood (joyful at +strength, gloomy at −strength); grammatical: the share that
  parse at all.
- Text encoder: a red−blue vector from CLIP's hidden states over the direction templates, added while captions of
  every other colour are encoded; the pictures sampled from the same noise with and without it are read by the
  oracle. Colour shift: the share read red; keep: shape, size, position and background as the caption says.
- A strength × block sweep of both, on a few pictures and sentences per cell, to show where steering starts to break
  the output.

Part of benchmarks/fidelity.py.
"""

import sys
import time

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core.directions import TEMPLATES  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.core.steering import (example_states, generate_text, hidden_states,  # noqa: E402
                                                 parse_layers, pooled_states, position_mask,
                                                 steering, steering_vector, transformer_blocks)
from latent_space_control.reference import grammar, models, oracle, world  # noqa: E402

LM_PROMPT = "a"
LM_EXAMPLES = 40  # sentences of each mood the vector is made from
LM_SAMPLES = 128  # sentences per target
LM_TOKENS = 24
LM_LAYERS = "0"  # the nodes' "auto" for this 2-block LM: core.steering.default_block
# Block 0 at strength 1 moves 97% of sentences to the target mood with 98% grammatical; from 3 on the LM repeats
# endings and grammar breaks (steer_sweep).
LM_STRENGTH = 1.0
CLIP_POSITIVE, CLIP_NEGATIVE = "red", "blue"
# Chosen on 32 captions apart from the evaluation set, over blocks 0, 1, 2, 0-2, positions all, prompt_tokens, last
# and strengths 1-8: block 0 over the prompt's tokens at 2.5 shifts most (0.75) with keep at least 0.85 (0.94); at 3
# positions start to move (keep 0.72). Steering the last token alone (the pooled [EOS]) shifts nothing: the UNet
# attends to every token.
CLIP_LAYERS = "0"
CLIP_POSITIONS = "prompt_tokens"
CLIP_STRENGTH = 2.5
CLIP_PICTURES = 64
KEPT = ("shape", "size", "position", "background")  # what a colour vector must leave alone
SWEEP_BLOCKS = ("0", "1", "2")
SWEEP_STRENGTHS = (0.5, 1.0, 2.0, 4.0, 8.0)
SWEEP_COUNT = 16
STEER_SEED = EVALUATION_SEED + 60


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


# ---- language model -----------------------------------------------------------------------------------------------

def mood_examples(count: int, seed: int) -> tuple[list[str], list[str]]:
    """``count`` joyful and ``count`` gloomy sentences of the LM's language."""
    drawn = grammar.sentences(20 * count, seed)
    joyful = [text for text in drawn if grammar.parse(text)["mood"] == "joyful"][:count]
    gloomy = [text for text in drawn if grammar.parse(text)["mood"] == "gloomy"][:count]
    assert len(joyful) == len(gloomy) == count, f"seed {seed} draws too few sentences of one mood; draw more"
    return joyful, gloomy


def lm_vectors(family: models.ReferenceWorld, blocks: torch.nn.ModuleList, layers: list[int]) -> dict:
    """Block -> the joyful−gloomy mean difference of the example sentences' mean hidden states there."""
    joyful, gloomy = mood_examples(LM_EXAMPLES, STEER_SEED)
    positive = example_states(family.lm, family.lm_tokenizer, joyful, blocks, layers)
    negative = example_states(family.lm, family.lm_tokenizer, gloomy, blocks, layers)
    return {layer: steering_vector(positive[layer], negative[layer]) for layer in layers}


def lm_readings(family: models.ReferenceWorld, blocks, vectors: dict, strength: float, count: int,
                seed: int) -> list[dict | None]:
    """The grammar's reading of ``count`` sentences written after the prompt with ``strength`` · vectors added."""
    with steering(blocks, vectors, strength):
        texts = generate_text(family.lm, family.lm_tokenizer, LM_PROMPT, LM_TOKENS, 1.0, 1.0, seed, count)
    return [grammar.parse(f"{LM_PROMPT} {text}") for text in texts]


def lm_scores(family, blocks, vectors, strength: float, count: int, seed: int) -> dict:
    """Per target mood (joyful at +strength, gloomy at −strength): the share in that mood, and the share that
    parses at all."""
    scores = {}
    for mood, sign in (("joyful", 1.0), ("gloomy", -1.0)):
        readings = lm_readings(family, blocks, vectors, sign * strength, count, seed)
        scores[mood] = (_share(r is not None and r["mood"] == mood for r in readings),
                        _share(r is not None for r in readings))
    return scores


@torch.inference_mode()
def lm_figures(family: models.ReferenceWorld) -> dict:
    _, blocks = transformer_blocks(family.lm)
    vectors = lm_vectors(family, blocks, parse_layers(LM_LAYERS, len(blocks)))
    seed = STEER_SEED + 1
    steered = lm_scores(family, blocks, vectors, LM_STRENGTH, LM_SAMPLES, seed)
    unsteered = lm_scores(family, blocks, vectors, 0.0, LM_SAMPLES, seed)
    return {
        "steer_lm_layers": LM_LAYERS,
        "steer_lm_strength": LM_STRENGTH,
        "steer_lm_mood_rate": sum(rate for rate, _ in steered.values()) / 2,
        "steer_lm_grammatical": sum(grammatical for _, grammatical in steered.values()) / 2,
        "steer_lm_mood_rate_unsteered": sum(rate for rate, _ in unsteered.values()) / 2,
        "steer_lm_grammatical_unsteered": sum(grammatical for _, grammatical in unsteered.values()) / 2,
        **{f"steer_lm_{mood}_rate": rate for mood, (rate, _) in steered.items()},
        **{f"steer_lm_{mood}_grammatical": grammatical for mood, (_, grammatical) in steered.items()},
        **{f"steer_lm_{mood}_rate_unsteered": rate for mood, (rate, _) in unsteered.items()},
    }


# ---- text encoder -------------------------------------------------------------------------------------------------

def clip_mask(family: models.ReferenceWorld, prompts: list[str], positions: str) -> torch.Tensor | None:
    """The positions to steer in the prompts' token sequences (the reference CLIP ends prompts with [EOS], id 2,
    and pads with [PAD], id 0, as its open_clip config says)."""
    return position_mask(family.clip_tokenizer(prompts), positions, end_token=models.EOS, pad_token=models.PAD)


def clip_vectors(family: models.ReferenceWorld, blocks: torch.nn.ModuleList, layers: list[int]) -> dict:
    """Block -> the red−blue mean difference of the template prompts' hidden states, pooled over prompt tokens."""
    def pooled(word):
        prompts = [template.format(word) for template in TEMPLATES]
        states = hidden_states(lambda: family.encode_text(prompts), blocks, layers)
        mask = clip_mask(family, prompts, "prompt_tokens")
        return {layer: pooled_states(states[layer], mask) for layer in layers}

    positive, negative = pooled(CLIP_POSITIVE), pooled(CLIP_NEGATIVE)
    return {layer: steering_vector(positive[layer], negative[layer]) for layer in layers}


def clip_scenes(count: int, seed: int) -> list[world.Scene]:
    """``count`` training-pair scenes of every colour but the target's."""
    found = [scene for scene in world.scenes(4 * count, seed, held_out=False) if scene.colour != CLIP_POSITIVE][:count]
    assert len(found) == count, f"seed {seed} draws only {len(found)} scenes; draw more"
    return found


def steered_readings(family: models.ReferenceWorld, blocks, vectors: dict, strength: float, positions: str,
                     scenes: list[world.Scene], seed: int) -> list[dict]:
    """The oracle's reading of the scenes' captions encoded with ``strength`` · vectors added at ``positions``,
    sampled from the noise of ``seed`` (the unconditional branch stays the plain empty prompt)."""
    prompts = [scene.caption() for scene in scenes]
    with steering(blocks, vectors, strength, clip_mask(family, prompts, positions)):
        contexts = family.encode_text(prompts).hidden_states
    noise = seeded_noise(seed, (len(scenes), *models.LATENT_SHAPE))
    return oracle.read_batch(family.decode(family.sample_latents(contexts, noise)).clamp(0, 1))


def clip_scores(readings: list[dict], scenes: list[world.Scene]) -> dict:
    truths = [scene.attributes() for scene in scenes]
    by_colour = {colour: [r for r, scene in zip(readings, scenes) if scene.colour == colour]
                 for colour in sorted({scene.colour for scene in scenes})}
    return {
        "shift": _share(reading["colour"] == CLIP_POSITIVE for reading in readings),
        **{f"shift_from_{colour}": _share(r["colour"] == CLIP_POSITIVE for r in found)
           for colour, found in by_colour.items()},
        "keep": _share(all(r[name] == t[name] for name in KEPT) for r, t in zip(readings, truths)),
        **{f"keep_{name}": _share(r[name] == t[name] for r, t in zip(readings, truths)) for name in KEPT},
    }


@torch.inference_mode()
def clip_figures(family: models.ReferenceWorld) -> dict:
    _, blocks = transformer_blocks(family.clip.transformer)
    vectors = clip_vectors(family, blocks, parse_layers(CLIP_LAYERS, len(blocks)))
    scenes = clip_scenes(CLIP_PICTURES, STEER_SEED + 2)
    seed = STEER_SEED + 3
    steered = clip_scores(steered_readings(family, blocks, vectors, CLIP_STRENGTH, CLIP_POSITIONS, scenes, seed),
                          scenes)
    unsteered = clip_scores(steered_readings(family, blocks, vectors, 0.0, CLIP_POSITIONS, scenes, seed), scenes)
    return {
        "steer_clip_layers": CLIP_LAYERS,
        "steer_clip_token_positions": CLIP_POSITIONS,
        "steer_clip_strength": CLIP_STRENGTH,
        "steer_clip_color_shift": steered["shift"],
        "steer_clip_color_shift_unsteered": unsteered["shift"],
        "steer_clip_keep_rate": steered["keep"],
        "steer_clip_keep_rate_unsteered": unsteered["keep"],
        **{f"steer_clip_keep_rate_{name}": steered[f"keep_{name}"] for name in KEPT},
        # A red−blue vector removes blue and adds red: blue and magenta captions turn red, yellow and green resist.
        **{f"steer_clip_color_shift_{name.removeprefix('shift_')}": value for name, value in steered.items()
           if name.startswith("shift_from_")},
    }


# ---- sweep --------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def sweep_figures(family: models.ReferenceWorld) -> dict:
    """Colour shift, keep, mood rate and grammaticality per block (rows) and strength (columns); the LM has fewer
    blocks than the CLIP, so its rows past its last block are None."""
    _, clip_blocks = transformer_blocks(family.clip.transformer)
    _, lm_blocks = transformer_blocks(family.lm)
    scenes = clip_scenes(SWEEP_COUNT, STEER_SEED + 4)
    table = {name: [] for name in ("color_shift", "keep", "lm_mood", "lm_grammatical")}
    for block in SWEEP_BLOCKS:
        clip_vector = clip_vectors(family, clip_blocks, parse_layers(block, len(clip_blocks)))
        lm_layers = parse_layers(block, len(lm_blocks)) if int(block) < len(lm_blocks) else None
        lm_vector = lm_vectors(family, lm_blocks, lm_layers) if lm_layers else None
        rows = {name: [] for name in table}
        for strength in SWEEP_STRENGTHS:
            clip = clip_scores(steered_readings(family, clip_blocks, clip_vector, strength, CLIP_POSITIONS, scenes,
                                                STEER_SEED + 5), scenes)
            rows["color_shift"].append(clip["shift"])
            rows["keep"].append(clip["keep"])
            if lm_vector is None:
                rows["lm_mood"].append(None)
                rows["lm_grammatical"].append(None)
                continue
            lm = lm_scores(family, lm_blocks, lm_vector, strength, SWEEP_COUNT // 2, STEER_SEED + 6)
            rows["lm_mood"].append(sum(rate for rate, _ in lm.values()) / 2)
            rows["lm_grammatical"].append(sum(grammatical for _, grammatical in lm.values()) / 2)
        for name in table:
            table[name].append(rows[name])
    return {"steer_sweep": {"blocks": list(SWEEP_BLOCKS), "strengths": list(SWEEP_STRENGTHS), **table}}


def steer_figures() -> dict:
    start = time.perf_counter()
    family = models.load()
    figures = {}
    for part in (lm_figures, clip_figures, sweep_figures):
        part_start = time.perf_counter()
        figures.update(part(family))
        print(f"steer {part.__name__}: {time.perf_counter() - part_start:.0f} s", file=sys.stderr)
    print(f"steer figures: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return figures
