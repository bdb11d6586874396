"""How faithfully latent and noise optimisation do what their objective says, judged by the pixel oracle on the
reference world.

- "Make it green": 32 encoded reference pictures of other colours, optimised with the CLIP-text objective "green"
  plus Keep Reference (picture space). Target rate: the oracle reads green; keep rate: shape, size, position and
  background as before; iterations: the first step at which a picture reads green with everything else kept (the
  median over the pictures that get there).
- The constraint form: minimise the picture change subject to CLIP similarity to "green" at least τ; success: the
  constraint holds at the end. Against it, the smallest fixed weight on CLIP that succeeds as often, and the mean
  latent distance ‖z − z₀‖ (relative to ‖z₀‖) each needs.
- Noise optimisation: prompts that leave the colour open, a few Euler steps of the reference denoiser, the initial
  noise optimised towards "green"; the oracle reads green (against the same seeds unoptimised).

Part of benchmarks/fidelity.py.
"""

import statistics

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core import objectives  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.core.optimize import few_step_sampler, optimise  # noqa: E402
from latent_space_control.core.sampling import karras_sigmas  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

TARGET = "green"
KEPT = ("shape", "size", "position", "background")
PICTURES = 32
EDIT = dict(steps=40, learning_rate=0.2, smoothing=4.0)  # LatentOptimize's defaults
VIEWS = 8  # the CLIP objectives' default
KEEP_WEIGHT = 1.0  # Keep Reference's weight in the shipped edit workflow
THRESHOLD = 0.4  # "CLIP similarity to green at least 0.4": a rendered green shape reads about 0.45
FIXED_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
NOISE_STEPS, NOISE_CFG = 2, 4.0
NOISE_ITERATIONS, NOISE_LEARNING_RATE = 50, 0.1  # Noise Optimize's defaults (ReNO: 50 iterations)
OPTIMISE_SEED = EVALUATION_SEED + 50


def edit_scenes(count: int, seed: int) -> list[world.Scene]:
    """Training-pair scenes of other colours whose green version the family was trained on (the world holds green
    triangles out), the same for the same seed."""
    held_out_shapes = {shape for shape, colour in world.HELD_OUT if colour == TARGET}
    found = [scene for scene in world.scenes(20 * count, seed, held_out=False)
             if scene.colour != TARGET and scene.shape not in held_out_shapes][:count]
    assert len(found) == count, f"seed {seed} draws only {len(found)} scenes; draw more"
    return found


def _kept(after: dict, before: dict) -> bool:
    return all(after[name] == before[name] for name in KEPT)


def _clip_text(family: models.ReferenceWorld, views: int = VIEWS) -> objectives.Objective:
    with torch.no_grad():
        positive = family.encode_text([TARGET]).embedding
    return objectives.clip_text(family.score_images, positive, None, f"CLIP text '{TARGET}'", views)


def _readings(family, latents: torch.Tensor) -> list[dict]:
    with torch.no_grad():
        return oracle.read_batch(family.decode(latents).clamp(0, 1))


def _edit_objective(family, views: int = VIEWS) -> objectives.Objective:
    return objectives.combine([(_clip_text(family, views), 1.0),
                               (objectives.reference_distance("reference", "image"), KEEP_WEIGHT)])


def edit_figures(family: models.ReferenceWorld, scenes: list[world.Scene], start: torch.Tensor,
                 before: list[dict]) -> dict:
    first_success = [None] * len(before)

    def watch(step, steps, latent):
        for index, (after, was) in enumerate(zip(_readings(family, latent), before)):
            if first_success[index] is None and after["colour"] == TARGET and _kept(after, was):
                first_success[index] = step

    result = optimise(start, _edit_objective(family), family.decode, progress=watch, **EDIT)
    after = _readings(family, result.variable)
    reached = [step for step in first_success if step is not None]
    # What the defaults add: the same edit with one CLIP view, and without smoothing.
    single_view = _readings(family, optimise(start, _edit_objective(family, 1), family.decode, **EDIT).variable)
    unsmoothed = _readings(family, optimise(start, _edit_objective(family), family.decode,
                                            **{**EDIT, "smoothing": 0.0}).variable)
    by_colour = {}
    for colour in sorted({scene.colour for scene in scenes}):
        items = [i for i, scene in enumerate(scenes) if scene.colour == colour]
        by_colour[f"opt_clip_target_rate_from_{colour}"] = sum(after[i]["colour"] == TARGET for i in items) / len(items)
    return {
        "opt_clip_target_rate": sum(reading["colour"] == TARGET for reading in after) / len(after),
        "opt_keep_rate": sum(_kept(a, b) for a, b in zip(after, before)) / len(after),
        "opt_target_and_keep_rate": sum(a["colour"] == TARGET and _kept(a, b)
                                        for a, b in zip(after, before)) / len(after),
        "opt_median_iters": statistics.median(reached) if reached else float("inf"),
        **by_colour,
        "opt_single_view_target_rate": sum(r["colour"] == TARGET for r in single_view) / len(after),
        "opt_single_view_keep_rate": sum(_kept(a, b) for a, b in zip(single_view, before)) / len(after),
        "opt_unsmoothed_target_rate": sum(r["colour"] == TARGET for r in unsmoothed) / len(after),
        "opt_unsmoothed_keep_rate": sum(_kept(a, b) for a, b in zip(unsmoothed, before)) / len(after),
    }


def _relative_distance(result, start: torch.Tensor) -> float:
    return float(((result.variable - start).flatten(1).norm(dim=1) / start.flatten(1).norm(dim=1)).mean())


def constraint_figures(family: models.ReferenceWorld, start: torch.Tensor) -> dict:
    clip = _clip_text(family)
    keep = objectives.reference_distance("reference", "image")
    constrained = optimise(start, objectives.combine([(keep, 1.0), (objectives.constrain(clip, THRESHOLD), 1.0)]),
                           family.decode, **EDIT)
    success = float(constrained.feasible.float().mean())
    figures = {"opt_constraint_success": success, "opt_constraint_distance": _relative_distance(constrained, start)}
    # The fixed-weight form: the smallest weight on CLIP whose results reach the threshold as often.
    for weight in FIXED_WEIGHTS:
        fixed = optimise(start, objectives.combine([(keep, 1.0), (clip, weight)]), family.decode, **EDIT)
        reached = float((fixed.readings[clip.terms[0].name] >= THRESHOLD).float().mean())
        if reached >= success:
            figures.update(opt_fixed_weight=weight, opt_fixed_weight_success=reached,
                           opt_fixed_weight_distance=_relative_distance(fixed, start))
            break
    else:
        figures.update(opt_fixed_weight=float("nan"), opt_fixed_weight_success=reached,
                       opt_fixed_weight_distance=float("nan"))
    return figures


def noise_figures(family: models.ReferenceWorld) -> dict:
    scenes = edit_scenes(PICTURES, OPTIMISE_SEED + 1)
    prompts = [scene.prompt([name for name in world.OPTIONAL_IN_PROMPTS if name != "colour"]) for scene in scenes]
    with torch.no_grad():
        context = family.encode_text(prompts).hidden_states
    sigmas = karras_sigmas(NOISE_STEPS, *family.sigma_range())
    generate = few_step_sampler(family.denoiser(context, NOISE_CFG), sigmas, lambda noise: noise * sigmas[0],
                                lambda x: x / family.scaling_factor)
    noise = seeded_noise(OPTIMISE_SEED + 2, (len(scenes), *models.LATENT_SHAPE))
    with torch.no_grad():
        plain = oracle.read_batch(family.decode(generate(noise)).clamp(0, 1))
    result = optimise(noise, _clip_text(family), family.decode, NOISE_ITERATIONS, NOISE_LEARNING_RATE,
                      regulariser_name="gaussian_shell", regulariser_weight=1.0, generate=generate)
    optimised = _readings(family, result.latent)
    return {
        "noiseopt_target_rate": sum(reading["colour"] == TARGET for reading in optimised) / len(optimised),
        "noiseopt_baseline_rate": sum(reading["colour"] == TARGET for reading in plain) / len(plain),
    }


def optimize_figures() -> dict:
    family = models.load()
    scenes = edit_scenes(PICTURES, OPTIMISE_SEED)
    with torch.no_grad():
        start = family.encode(world.render_batch(scenes))
    before = _readings(family, start)
    return {**edit_figures(family, scenes, start, before), **constraint_figures(family, start),
            **noise_figures(family)}
