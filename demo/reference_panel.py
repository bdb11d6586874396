"""The reference world panel: pictures generated from captions with the oracle's reading under each, and the
figures that say how good each model of the family is."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from ..reference import evaluate, grammar, oracle, world
from .page import figures_table, step, upscale, write_png

STEPS = 5
SEED = 7


def showcase_scenes() -> list[world.Scene]:
    """Every colour with every shape once; size, position and background cycle so each value appears."""
    sizes, positions, backgrounds = tuple(world.SIZES), tuple(world.POSITIONS), tuple(world.BACKGROUNDS)
    return [world.Scene(shape, colour, sizes[i % 2], positions[(i + j) % 3], backgrounds[(i // 3 + j) % 2])
            for i, colour in enumerate(world.COLOURS) for j, shape in enumerate(world.SHAPES)]


def reading_html(reading: dict[str, str], truth: dict[str, str]) -> str:
    words = []
    for name in ("size", "colour", "shape", "position", "background"):
        word = html.escape(reading[name])
        words.append(word if reading[name] == truth[name] else f'<b class="miss">{word}</b>')
    return " ".join(words)


def render(out: Path, progress, family) -> str:
    scenes = showcase_scenes()
    with step(progress, "text to image: showcase"):
        with torch.no_grad():
            pictures = family.generate([scene.caption() for scene in scenes], SEED)
        readings = oracle.read_batch(pictures)
        cells = []
        for index, (scene, picture, reading) in enumerate(zip(scenes, pictures, readings)):
            write_png(out / f"sample_{index:02d}.png", upscale(picture))
            held_out = "<br><i>a pair held out of training</i>" if scene.held_out else ""
            cells.append(f'<figure><img src="sample_{index:02d}.png" alt="{html.escape(scene.caption())}">'
                         f"<figcaption>{html.escape(scene.caption())}<br><i>oracle:</i> "
                         f"{reading_html(reading, scene.attributes())}{held_out}</figcaption></figure>")

    with step(progress, "text to image: 128 fresh captions"):
        t2i = evaluate.text_to_image_accuracy(family, 128, seed=SEED + 1)
    with step(progress, "VAE round trip"):
        vae = evaluate.vae_attribute_preservation(family, 256, seed=SEED + 2)
    with step(progress, "CLIP zero-shot"):
        clip = evaluate.clip_zero_shot(family, 256, seed=SEED + 3)
    with step(progress, "LM sentences"):
        sentences = family.write("", 6, seed=SEED + 4)
        grammatical = evaluate.lm_grammatical(family, 128, seed=SEED + 5)

    def agreement(held_out: bool) -> dict[str, float]:
        pairs = [(reading, scene.attributes()) for scene, reading in zip(scenes, readings)
                 if scene.held_out == held_out]
        return oracle.accuracy(*zip(*pairs))

    seen, held_out = agreement(False), agreement(True)
    figures = {
        "showcase above, pairs seen in training: oracle agrees with the caption (colour, shape)":
            f"{seen['colour']:.2f}, {seen['shape']:.2f}",
        "showcase above, the held-out pairs (colour, shape)": f"{held_out['colour']:.2f}, {held_out['shape']:.2f}",
        "128 fresh captions: colour, shape, size, position, background":
            ", ".join(f"{t2i[name]:.2f}" for name in ("colour", "shape", "size", "position", "background")),
        "VAE round trip, 256 pictures: oracle reads the same colour, shape": f"{vae['colour']:.3f}, {vae['shape']:.3f}",
        "CLIP zero-shot, 256 pictures: colour, shape": f"{clip['colour']:.3f}, {clip['shape']:.3f}",
        "LM: sentences in the grammar (128 written)": f"{grammatical:.3f}",
    }
    lines = "".join(f"<li>{html.escape(text)} {'✓' if grammar.parse(text) else '✗'}</li>" for text in sentences)
    return (
        "<section><h2>Reference world</h2>"
        "<p>The pack ships a small model family trained on a procedural world whose every attribute is known: a "
        "diffusers VAE (32×32 pictures, 4×8×8 latents), an open_clip CLIP, a text-conditioned diffusers UNet that "
        "attends to the CLIP text tower, and a GPT-2-style LM. Every control is measured here. Below, pictures the "
        "UNet draws from their captions (Euler, 20 steps, classifier-free guidance 4), and what the pixel oracle "
        "reads in each — a word in <b class='miss'>red</b> is where it disagrees with the caption. Three "
        "shape-and-colour pairs (magenta circles, cyan squares, green triangles) were held out of training, so "
        "their pictures show what the family makes of a combination it never saw.</p>"
        f"<div class='grid'>{''.join(cells)}</div>"
        f"{figures_table(figures)}"
        f"<p>Sentences the LM writes from scratch (✓: in its grammar):</p><ul>{lines}</ul></section>"
    )
