"""The Text Steer (LSC) panel: activation steering on the reference world. A gloomy→joyful vector made from example
sentences steers the reference LM as it writes (Text Steer Generate); a blue→red vector made from prompts steers the
reference CLIP's text encoder while captions are encoded (Text Steer); and a strength × block sweep of both shows
where steering starts to break the output."""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from ..core.directions import TEMPLATES
from ..core.noise import seeded_noise
from ..core.steering import (default_block, example_states, generate_text, hidden_states, pooled_states,
                             position_mask, steering, steering_vector, transformer_blocks)
from ..reference import grammar, models, oracle, world
from .frames import frame_row
from .page import figures_table, node_section, step

STEPS = 2
# The LM: a vector from example sentences of each mood, added at block 0 (Text Steer Generate's "auto" for this
# 2-block LM) while it writes after "a", where the mood word is the LM's own choice.
LM_PROMPT = "a"
LM_EXAMPLES, EXAMPLE_SEED = 40, 7  # sentences of each mood, drawn from grammar.sentences(10 × 40, EXAMPLE_SEED)
LM_BLOCK = 0
LM_TOKENS = 24  # Text Steer Generate's default max_new_tokens
LM_STRENGTHS = (0.0, 1.5, -1.5)
LM_COUNT, LM_SEED = 8, 10  # sentences per strength, sampled at temperature 1 (top_p 1) from one seed
# The text encoder: red minus blue, pooled over the prompts' tokens in the built-in templates, added with Text
# Steer's defaults: at core.steering.default_block (block 0 of three), over the caption's own tokens (token_positions
# "prompt_tokens"), at strength 2.
CLIP_POSITIVE, CLIP_NEGATIVE = "red", "blue"
CLIP_POSITIONS = "prompt_tokens"
CLIP_STRENGTH = 2.0
SCENE_SEED, SCENE_COUNT = 14, 6
NOISE_SEEDS = (60, 61, 62, 63, 64, 65)  # one per caption, the same unsteered and steered
# The sweep: one caption's picture per block and strength, all from one noise; the LM's sentences per block and
# strength, all from one seed.
SWEEP_SCENE = world.Scene("circle", "green", "large", "left", "white")
SWEEP_NOISE_SEED = 70
CLIP_SWEEP_BLOCKS = (0, 1, 2)
CLIP_SWEEP_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
LM_SWEEP_BLOCKS = (0, 1)
LM_SWEEP_STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
LM_SWEEP_COUNT = 16
NOT_IN_LANGUAGE = "✗ not in the language"


# ---- the language model ---------------------------------------------------------------------------------------------

def mood_examples() -> tuple[list[str], list[str]]:
    """``LM_EXAMPLES`` joyful and as many gloomy sentences of the LM's language."""
    drawn = grammar.sentences(10 * LM_EXAMPLES, EXAMPLE_SEED)
    joyful = [text for text in drawn if grammar.parse(text)["mood"] == "joyful"][:LM_EXAMPLES]
    gloomy = [text for text in drawn if grammar.parse(text)["mood"] == "gloomy"][:LM_EXAMPLES]
    return joyful, gloomy


def lm_vectors(family, blocks: torch.nn.ModuleList, layers) -> dict[int, torch.Tensor]:
    """Block -> the joyful mean minus the gloomy mean of the example sentences' mean hidden states there."""
    joyful, gloomy = mood_examples()
    positive = example_states(family.lm, family.lm_tokenizer, joyful, blocks, layers)
    negative = example_states(family.lm, family.lm_tokenizer, gloomy, blocks, layers)
    return {layer: steering_vector(positive[layer], negative[layer]) for layer in layers}


def write(family, blocks: torch.nn.ModuleList, block: int, vector: torch.Tensor, strength: float,
          count: int) -> list[str]:
    """``count`` sentences the LM writes after the prompt, ``strength`` · vector added to block ``block``'s output,
    each with the prompt in front."""
    with steering(blocks, {block: vector}, strength):
        texts = generate_text(family.lm, family.lm_tokenizer, LM_PROMPT, LM_TOKENS, 1.0, 1.0, LM_SEED, count)
    return [f"{LM_PROMPT} {text}" for text in texts]


def verdict(sentence: str) -> str:
    """The grammar's verdict: the sentence's mood, or that it is not in the language."""
    parsed = grammar.parse(sentence)
    return NOT_IN_LANGUAGE if parsed is None else parsed["mood"]


def sentence_list(name: str, title: str, sentences: list[str]) -> str:
    items = "".join(f"<li><q>{html.escape(sentence)}</q> — <i>{html.escape(verdict(sentence))}</i></li>"
                    for sentence in sentences)
    return f'<div class="sentences" id="{name}"><p><b>{html.escape(title)}</b></p><ol>{items}</ol></div>'


def lm_sweep(family, blocks: torch.nn.ModuleList) -> dict[int, list[tuple[int, int]]]:
    """Block -> per strength (joyful, in the language) counts of ``LM_SWEEP_COUNT`` sentences."""
    vectors = lm_vectors(family, blocks, LM_SWEEP_BLOCKS)
    table = {}
    for block in LM_SWEEP_BLOCKS:
        table[block] = []
        for strength in LM_SWEEP_STRENGTHS:
            verdicts = [verdict(s) for s in write(family, blocks, block, vectors[block], strength, LM_SWEEP_COUNT)]
            table[block].append((verdicts.count("joyful"), sum(v != NOT_IN_LANGUAGE for v in verdicts)))
    return table


def sweep_table(table: dict[int, list[tuple[int, int]]]) -> str:
    header = "".join(f"<th>{strength:g}</th>" for strength in LM_SWEEP_STRENGTHS)
    rows = []
    for block, counts in table.items():
        for what, index in (("joyful", 0), ("in the language", 1)):
            cells = "".join(f"<td>{count[index]}/{LM_SWEEP_COUNT}</td>" for count in counts)
            rows.append(f"<tr><td>block {block}: {what}</td>{cells}</tr>")
    return (f'<table id="text_steer_lm_sweep" cellpadding="3"><tr><th>strength</th>{header}</tr>'
            + "".join(rows) + "</table>")


# ---- the text encoder -----------------------------------------------------------------------------------------------

def clip_special_tokens() -> tuple[int, int]:
    """The reference CLIP's end and padding token ids, as its open_clip config gives them."""
    text = json.loads(models.CLIP_CONFIG_FILE.read_text(encoding="utf-8"))["text_cfg"]
    return text["eos_id"], text["pad_id"]


def clip_vectors(family, blocks: torch.nn.ModuleList, layers) -> dict[int, torch.Tensor]:
    """Block -> "red" minus "blue": each word in every built-in template, the hidden states pooled over the
    prompt's tokens (start to end token), mean of one set minus mean of the other."""
    end, pad = clip_special_tokens()

    def pooled(word: str) -> dict[int, torch.Tensor]:
        prompts = [template.format(word) for template in TEMPLATES]
        states = hidden_states(lambda: family.encode_text(prompts), blocks, layers)
        mask = position_mask(family.clip_tokenizer(prompts), "prompt_tokens", end_token=end, pad_token=pad)
        return {layer: pooled_states(states[layer], mask) for layer in layers}

    positive, negative = pooled(CLIP_POSITIVE), pooled(CLIP_NEGATIVE)
    return {layer: steering_vector(positive[layer], negative[layer]) for layer in layers}


def steered_captions(family, blocks: torch.nn.ModuleList, block: int, vector: torch.Tensor, strength: float,
                     captions: list[str]) -> torch.Tensor:
    """The captions' text states with ``strength`` · vector added to block ``block``'s output over each caption's
    own tokens (start to end token, not the padding after it)."""
    end, pad = clip_special_tokens()
    mask = position_mask(family.clip_tokenizer(captions), CLIP_POSITIONS, end_token=end, pad_token=pad)
    with steering(blocks, {block: vector}, strength, mask):
        return family.encode_text(captions).hidden_states


def shown_scenes() -> list[world.Scene]:
    """``SCENE_COUNT`` scenes of colour pairs seen in training, none of them red."""
    return [scene for scene in world.scenes(8 * SCENE_COUNT, SCENE_SEED, held_out=False)
            if scene.colour != CLIP_POSITIVE][:SCENE_COUNT]


def kept(reading: dict[str, str], scene: world.Scene) -> bool:
    return all(reading[name] == getattr(scene, name) for name in ("shape", "size", "position", "background"))


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    with step(progress, "Text Steer: the LM's mood"):
        _, lm_blocks = transformer_blocks(family.lm)
        lm_vector = lm_vectors(family, lm_blocks, [LM_BLOCK])[LM_BLOCK]
        written = {strength: write(family, lm_blocks, LM_BLOCK, lm_vector, strength, LM_COUNT)
                   for strength in LM_STRENGTHS}
        lm_table = lm_sweep(family, lm_blocks)
    with step(progress, "Text Steer: CLIP red vs blue, and the sweep"):
        _, clip_blocks = transformer_blocks(family.clip.transformer)
        clip_block = default_block(len(clip_blocks))
        clip_vector = clip_vectors(family, clip_blocks, CLIP_SWEEP_BLOCKS)
        scenes = shown_scenes()
        captions = [scene.caption() for scene in scenes]
        contexts = [family.encode_text(captions).hidden_states,
                    steered_captions(family, clip_blocks, clip_block, clip_vector[clip_block], CLIP_STRENGTH,
                                     captions)]
        contexts += [steered_captions(family, clip_blocks, block, clip_vector[block], strength,
                                      [SWEEP_SCENE.caption()])
                     for block in CLIP_SWEEP_BLOCKS for strength in CLIP_SWEEP_STRENGTHS]
        # One run for all pictures; the unconditional branch encodes the empty prompt unsteered.
        caption_noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in NOISE_SEEDS])
        sweep_noise = seeded_noise(SWEEP_NOISE_SEED, (1, *models.LATENT_SHAPE))
        noise = torch.cat([caption_noise, caption_noise,
                           sweep_noise.expand(len(CLIP_SWEEP_BLOCKS) * len(CLIP_SWEEP_STRENGTHS), -1, -1, -1)])
        pictures = family.decode(family.sample_latents(torch.cat(contexts), noise)).clamp(0, 1)
    readings = oracle.read_batch(pictures)
    joyful, gloomy = mood_examples()
    count = len(scenes)
    plain, steered = readings[:count], readings[count:2 * count]

    lm_lists = "".join(sentence_list(f"text_steer_lm_{index}",
                                     "unsteered" if strength == 0 else f"strength {strength:+g}", written[strength])
                       for index, strength in enumerate(LM_STRENGTHS))
    clip_rows = (frame_row(out, "text_steer_clip_plain", pictures[:count], captions, plain)
                 + frame_row(out, "text_steer_clip_steered", pictures[count:2 * count],
                             [f"steered {CLIP_STRENGTH:+g}"] * count, steered))
    sweep_rows = []
    columns = len(CLIP_SWEEP_STRENGTHS)
    for row, block in enumerate(CLIP_SWEEP_BLOCKS):
        frames = slice(2 * count + row * columns, 2 * count + (row + 1) * columns)
        sweep_rows.append(f"<p><i>block {block}</i></p>"
                          + frame_row(out, f"text_steer_sweep_{block}", pictures[frames],
                                      [f"strength {strength:g}" for strength in CLIP_SWEEP_STRENGTHS],
                                      readings[frames]))
    strengths = ", ".join(f"{strength:+g}" if strength else "unsteered" for strength in LM_STRENGTHS)
    verdicts = [[verdict(sentence) for sentence in written[strength]] for strength in LM_STRENGTHS]
    figures = {
        f"LM sentences (of {LM_COUNT}) joyful, {strengths}": ", ".join(str(v.count("joyful")) for v in verdicts),
        f"LM sentences (of {LM_COUNT}) gloomy, {strengths}": ", ".join(str(v.count("gloomy")) for v in verdicts),
        f"LM sentences (of {LM_COUNT}) in the language, {strengths}":
            ", ".join(str(len(v) - v.count(NOT_IN_LANGUAGE)) for v in verdicts),
        f"LM vector norm at block {LM_BLOCK}": f"{float(lm_vector.norm()):.2f}",
        f"captions (of {count}) the oracle reads red: unsteered, steered":
            ", ".join(str(sum(r["colour"] == CLIP_POSITIVE for r in row)) for row in (plain, steered)),
        f"captions (of {count}) with shape, size, position and background as written: unsteered, steered":
            f"{sum(map(kept, plain, scenes))}, {sum(map(kept, steered, scenes))}",
        f"CLIP vector norm at block {', '.join(map(str, CLIP_SWEEP_BLOCKS))}":
            ", ".join(f"{float(clip_vector[block].norm()):.2f}" for block in CLIP_SWEEP_BLOCKS),
    }
    return node_section("Text Steer (LSC)", "LSC_TextSteer", (
        "<p><b>Activation steering</b>: a vector added to the output of chosen transformer blocks while a model runs "
        "(the residual stream after block k, as repeng and llama.cpp's control vectors do). Text Steer (LSC) steers a "
        "CLIP's text encoder; Text Steer Generate (LSC) (<code>LSC_TextSteerGenerate</code>) steers a language model "
        "as it writes.</p>"
        "<h3>The language model's mood</h3>"
        f"<p>The reference LM writes sentences of a small language in one mood each, joyful (“{joyful[0]}”) or "
        f"gloomy (“{gloomy[0]}”). "
        f"The vector is the mean hidden state at block {LM_BLOCK} of {LM_EXAMPLES} joyful example sentences minus "
        f"that of {LM_EXAMPLES} gloomy ones. The LM continues the prompt “{LM_PROMPT}” ({LM_COUNT} sentences at "
        "temperature 1, top_p 1, one seed for every list, so only the steering differs); the grammar's parser gives "
        "each sentence's mood, or says it is not in the language.</p>"
        f"<div class='blocks'>{lm_lists}</div>"
        "<p>What to read: unsteered, this seed's eight sentences mix the moods (four joyful, three gloomy, one that "
        "mixes both and so is not in the language); at +1.5 all eight are joyful and at −1.5 all eight gloomy, all "
        "in the language. One seed gives nearly the same sentences in every list: steering changes the mood word "
        "and adds or swaps the ending to match (“dances in the sun”, “fades into the dark”), the rest mostly "
        "stays.</p>"
        "<h3>The text encoder: blue → red</h3>"
        f"<p>The vector is “{CLIP_POSITIVE}” minus “{CLIP_NEGATIVE}”: each word in the {len(TEMPLATES)} built-in "
        f"templates, encoded by the reference CLIP, the states of block {clip_block} pooled over each prompt's own "
        f"tokens. Text Steer adds it with its defaults: to the output of block {clip_block} of the "
        f"{len(clip_blocks)} (<code>default_block</code>: a third of the way up, counting from 0), over each "
        f"caption's own tokens (token_positions <code>{CLIP_POSITIONS}</code>: start to end token, not the padding "
        f"after it) and at strength {CLIP_STRENGTH:g}, while the captions below are encoded; the pictures are sampled "
        "by the reference UNet from one noise per caption (Euler, 20 steps, guidance 4), first unsteered, then "
        "steered.</p>"
        + clip_rows +
        "<p>What to read: the oracle reads four of the six red after steering: the blue triangle, the cyan circle, "
        "the magenta square and the green square (the cyan circle orange-red in places, the green square with a "
        "green edge). The cyan triangle turns orange, which the oracle reads by its mean hue as yellow, and the "
        "yellow circle stays yellow: at this strength the vector moves most colours to red, not every one. All six "
        "keep their shape, size, place and background. The fidelity benchmark "
        "(<code>benchmarks/_steer_fidelity.py</code>) measures these settings at strength 2.5 on 64 captions: 0.83 "
        "read red, 0.95 keep their shape, size, position and background.</p>"
        "<h3>Where steering breaks: strength × block</h3>"
        f"<p>The caption “{SWEEP_SCENE.caption()}” with the red−blue vector of each block (made as above, at that "
        "block) added over the caption's own tokens at each strength, every picture from one noise.</p>"
        + "".join(sweep_rows) +
        "<p>What to read: nothing changes at 0.5; at 1 a trace of red browns the middle of the circle (most after "
        "block 1), but the oracle still reads green at every block; at 2 it is red at every block (after block 2 "
        "red inside a green rim), and at 4 too, the circle still large on the left on white. Only at 8 does the "
        "picture lose what the caption says besides the colour, and only after block 0: the circle, orange-red now, "
        "moves up and to the right. After blocks 1 and 2 it is still a large red circle on the left on white at "
        "8.</p>"
        f"<p>The LM: of {LM_SWEEP_COUNT} sentences written at each strength with the gloomy→joyful vector of block 0 "
        "or block 1 (one seed throughout), how many are joyful (in the language and in that mood) and how many are "
        "in the language at all.</p>"
        + sweep_table(lm_table) +
        "<p>What to read: unsteered, 13 of the 16 are joyful already: this LM leans joyful after “a” (the eight "
        "in the lists above happen to be more mixed). From strength 1 on, at either block, every sentence that is "
        "in the language is joyful; what steering costs is grammar. At 1 to 2 one or two of the 16 fall out of the "
        "language, each by saying its joyful ending twice (“… smiles at me smiles at me.”); at 3 about half do (9 "
        "and 8 left in the language) and at 4 nearly all (2 and 1), mood words piling up until the grammar comes "
        "apart. So on this LM steering does its work from about 1 and breaks at 3, at block 0 and block 1 alike.</p>"
        + figures_table(figures)
    ))
