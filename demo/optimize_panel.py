"""The Latent Optimize (LSC) panel: encoded reference pictures of several colours made green by gradient descent on
their latents (``optimise`` against CLIP text "green" plus Keep Reference in picture space, the node's defaults),
each shown before and after with the oracle's reading and the objective's curves; the CLIP similarity along a
straight latent path from a magenta square to a green one, which shows why magenta stays magenta; and Noise Optimize:
the initial noise of a 2-step sampler optimised towards "green" for a prompt that leaves the colour open."""

from __future__ import annotations

import copy
import dataclasses
import html
from pathlib import Path

import torch

from ..core import objectives
from ..core.interpolation import interpolate_latents
from ..core.noise import seeded_noise
from ..core.optimize import few_step_sampler, optimise
from ..core.sampling import karras_sigmas
from ..reference import models, oracle, world
from .frames import frame_row
from .page import figures_table, line_plot, node_section, step

STEPS = 3
TARGET = "green"
CLIP_NAME, KEEP_NAME = f"CLIP text '{TARGET}'", "reference"
VIEWS = 8  # the CLIP objectives' default
KEEP_WEIGHT = 1.0
EDIT = dict(steps=40, learning_rate=0.2, smoothing=4.0)  # Latent Optimize's defaults
EDITED = (world.Scene("circle", "red", "large", "center", "white"),
          world.Scene("square", "blue", "large", "left", "black"),
          world.Scene("circle", "yellow", "large", "right", "black"),
          world.Scene("square", "magenta", "large", "center", "white"))
KEPT = ("shape", "size", "position", "background")
# The straight latent path from a magenta square to the same square in green, scored by CLIP along the way.
PATH_ENDS = (world.Scene("square", "magenta", "large", "center", "white"),
             world.Scene("square", TARGET, "large", "center", "white"))
PATH_POINTS = 11
# Noise Optimize: a prompt that leaves the colour open, two noises, a 2-step Euler sampler with guidance 4.
PROMPT = "a large circle in the middle, white background"
NOISE_SEED, NOISES = 31, 2
SAMPLER_STEPS, CFG_SCALE = 2, 4.0
NOISE = dict(steps=50, learning_rate=0.1, regulariser_name="gaussian_shell", regulariser_weight=1.0)


def differentiable(family: models.ReferenceWorld) -> models.ReferenceWorld:
    """The family with private copies of its VAE, UNet and CLIP whose weights are ordinary, frozen tensors: loaded
    under inference mode (as the demo may be), weights cannot take part in a backward pass; gradients flow to the
    inputs only."""
    def frozen(module: torch.nn.Module) -> torch.nn.Module:
        return copy.deepcopy(module).requires_grad_(False)

    return dataclasses.replace(family, vae=frozen(family.vae), unet=frozen(family.unet), clip=frozen(family.clip),
                               alphas_cumprod=family.alphas_cumprod.clone())


def clip_objective(family) -> objectives.Objective:
    positive = family.encode_text([TARGET]).embedding
    return objectives.clip_text(family.score_images, positive, None, CLIP_NAME, view_count=VIEWS)


def edit_objective(family) -> objectives.Objective:
    """CLIP text "green" plus Keep Reference (picture space, the start's own picture), as the edit workflow wires
    them."""
    return objectives.combine([(clip_objective(family), 1.0),
                               (objectives.reference_distance(KEEP_NAME, "image"), KEEP_WEIGHT)])


def noise_sampler(family):
    """G(noise): the latent a 2-step Euler run of the reference UNet draws from unit noise for ``PROMPT``."""
    context = family.encode_text([PROMPT]).hidden_states
    sigmas = karras_sigmas(SAMPLER_STEPS, *family.sigma_range())
    return few_step_sampler(family.denoiser(context, CFG_SCALE), sigmas, lambda noise: noise * sigmas[0],
                            lambda x: x / family.scaling_factor)


def similarity_along_path(family) -> tuple[list[float], list[float]]:
    """Positions 0..1 and CLIP's similarity to "green" at each point of the straight latent path between the
    encoded ``PATH_ENDS``."""
    ends = family.encode(world.render_batch(list(PATH_ENDS)))
    ts = torch.linspace(0, 1, PATH_POINTS)
    latents = interpolate_latents(ends[:1], ends[1:], ts, "lerp")
    objective = clip_objective(family)
    readings, _ = objectives.evaluate(objective, latents, latents, None, family.decode)
    return ts.tolist(), readings[CLIP_NAME].tolist()


def curves(history: dict[str, list[float]], names: list[str], x_label: str) -> str:
    steps = len(history[names[0]])
    return line_plot({name: history[name] for name in names}, list(range(1, steps + 1)), x_label,
                     "reading (batch mean)")


def green_and_kept(after: dict[str, str], before: dict[str, str]) -> bool:
    return after["colour"] == TARGET and all(after[name] == before[name] for name in KEPT)


def render(out: Path, progress, family) -> str:
    # The demo may run under inference mode; the models, the objective's constants and the start take part in
    # backward passes, so they are made as ordinary tensors (gradients are switched on inside ``optimise`` only).
    with torch.inference_mode(False), torch.no_grad():
        family = differentiable(family)
        with step(progress, "Latent Optimize: making pictures green"):
            start = family.encode(world.render_batch(list(EDITED)))
            edit = optimise(start, edit_objective(family), family.decode, **EDIT)
            before = family.decode(start).clamp(0, 1)
            after = family.decode(edit.variable).clamp(0, 1)
        with step(progress, "Latent Optimize: CLIP along a straight path"):
            path_ts, path_similarity = similarity_along_path(family)
        with step(progress, "Noise Optimize: a 2-step sampler's noise"):
            generate = noise_sampler(family)
            noise = seeded_noise(NOISE_SEED, (NOISES, *models.LATENT_SHAPE))
            clip = clip_objective(family)
            plain_latent = generate(noise)
            plain = family.decode(plain_latent).clamp(0, 1)
            plain_similarity = objectives.evaluate(clip, plain_latent, plain_latent, None, family.decode)[0][CLIP_NAME]
            optimised = optimise(noise, clip, family.decode, generate=generate, **NOISE)
            noise_pictures = family.decode(optimised.latent).clamp(0, 1)

    before_readings, after_readings = oracle.read_batch(before), oracle.read_batch(after)
    start_similarity = edit.history[CLIP_NAME][0]  # the batch mean at step 1, before any change
    similarity = edit.readings[CLIP_NAME]
    pairs = []
    for index, scene in enumerate(EDITED):
        marks = {} if green_and_kept(after_readings[index], before_readings[index]) else {
            1: "not green" if after_readings[index]["colour"] != TARGET else "green, but changed"}
        pairs.append(f"<div><p><i>{html.escape(scene.caption())}</i></p>"
                     + frame_row(out, f"latent_optimize_{index}", torch.stack([before[index], after[index]]),
                                 ["before (encoded)", f"after · CLIP {float(similarity[index]):.2f}"],
                                 [before_readings[index], after_readings[index]], marks) + "</div>")
    noise_rows = []
    plain_readings, optimised_readings = oracle.read_batch(plain), oracle.read_batch(noise_pictures)
    noise_std = optimised.variable.flatten(1).std(dim=1)
    for index in range(NOISES):
        noise_rows.append(
            f"<div><p><i>noise {index + 1} of seed {NOISE_SEED}</i></p>"
            + frame_row(out, f"noise_optimize_{index}", torch.stack([plain[index], noise_pictures[index]]),
                        [f"plain seed · CLIP {float(plain_similarity[index]):.2f}",
                         f"optimised · CLIP {float(optimised.readings[CLIP_NAME][index]):.2f}"],
                        [plain_readings[index], optimised_readings[index]]) + "</div>")

    edited = len(EDITED)
    figures = {
        f"pictures the oracle reads {TARGET} after the edit":
            f"{sum(r['colour'] == TARGET for r in after_readings)}/{edited}",
        f"pictures read {TARGET} with shape, size, position and background kept":
            f"{sum(map(green_and_kept, after_readings, before_readings))}/{edited}",
        f"CLIP similarity to '{TARGET}' after the edit, per picture":
            ", ".join(f"{value:.2f}" for value in similarity.tolist()),
        f"CLIP similarity to '{TARGET}' before the edit (mean)": f"{start_similarity:.2f}",
        "mean absolute pixel change after the edit, per picture":
            ", ".join(f"{v:.3f}" for v in edit.readings[KEEP_NAME].tolist()),
        f"CLIP similarity to '{TARGET}' along the magenta → green path at t "
        f"{', '.join(f'{t:g}' for t in path_ts)}": ", ".join(f"{value:.2f}" for value in path_similarity),
        f"Noise Optimize: pictures read {TARGET}, plain seed / optimised":
            f"{sum(r['colour'] == TARGET for r in plain_readings)}/{NOISES}, "
            f"{sum(r['colour'] == TARGET for r in optimised_readings)}/{NOISES}",
        "Noise Optimize: optimised noise std per noise": ", ".join(f"{v:.2f}" for v in noise_std.tolist()),
    }
    magenta = PATH_ENDS[0]
    return node_section("Latent Optimize (LSC)", "LSC_LatentOptimize", (
        f"<p><b>Gradient descent on a latent.</b> {edited} reference pictures of different colours are encoded by "
        f"the VAE and each latent is optimised against Objective: CLIP Text “{TARGET}” ({VIEWS} views) plus "
        f"Objective: Keep Reference in picture space (weight {KEEP_WEIGHT:g}), as Latent Optimize runs it with its "
        f"defaults: Adam, {EDIT['steps']} steps, learning rate {EDIT['learning_rate']:g} (in units of the latent's "
        f"own RMS), smoothing {EDIT['smoothing']:g} latent cells. Every step decodes the latent, scores the picture "
        "and follows the gradient back through CLIP and the decoder; the best step per picture is kept. Under each "
        "picture: what the oracle reads in its pixels.</p>"
        "<p>What the pictures show: red and yellow turn green and keep everything else. The blue and the magenta "
        "squares keep their colours: on this world the edit fails on colours far round the colour wheel from "
        "green — magenta most of all, often blue and red (here red made it). CLIP's similarity to “green” is flat "
        "on the way there: along the "
        f"straight latent path from the {magenta.size} {magenta.colour} {magenta.shape} to the same square in green "
        "(the second plot) it stays near zero for the first part of the way and then jumps to green's level "
        "within one tenth of it, so at the magenta end gradient descent has nothing to follow.</p>"
        f"<div class='blocks'>{''.join(pairs)}</div>"
        + curves(edit.history, [CLIP_NAME, KEEP_NAME], "step")
        + line_plot({CLIP_NAME: path_similarity}, path_ts, "position on the straight latent path (0: magenta, "
                    "1: green)", "CLIP similarity")
        + "<h3>Noise Optimize (LSC)</h3>"
        f"<p>The same CLIP objective drives Noise Optimize (ReNO-style): for the prompt “{PROMPT}”, which leaves the "
        f"colour open, a {SAMPLER_STEPS}-step Euler sampler (Karras schedule, guidance {CFG_SCALE:g}) is "
        f"differentiable in its initial noise, which is optimised {NOISE['steps']} iterations at learning rate "
        f"{NOISE['learning_rate']:g} with the Gaussian-shell prior (weight {NOISE['regulariser_weight']:g}) keeping "
        "it at the norm unit noise has. Left: what the seed's noise draws as it is; right: what the optimised "
        "noise draws through the same sampler.</p>"
        "<p>What the pictures show: from the seed's noises the model draws red circles, the colour it picks when "
        "the prompt leaves it open. The optimised noises draw green ones, but the noise is free to change "
        "anything CLIP sees, and the prompt holds shape and place only as firmly as two sampler steps do: the "
        "readings under the pictures say what else moved.</p>"
        f"<div class='blocks'>{''.join(noise_rows)}</div>"
        + curves(optimised.history, [CLIP_NAME, "total"], "iteration")
        + figures_table(figures)
    ))
