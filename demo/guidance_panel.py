"""The Guided Noise Inject (LSC) panel: sampling guided by an objective's gradient. On the reference world, prompts
that leave the colour open are sampled plainly and guided by the CLIP text objective "green", from the same noises;
on the analytic world (a Gaussian mixture with an exact denoiser), guidance towards its lightest component moves
where the samples land without moving them off the mixture; and the guidance schedule's shapes drawn over a
sampler's steps."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core import guidance, objectives
from ..core.adapters import sigmas_from_alphas_cumprod
from ..core.noise import seeded_noise
from ..core.sampling import karras_sigmas, sample_euler
from ..core.style import schedule_sigma
from ..reference import gmm, models, oracle, world
from .frames import frame_row
from .optimize_panel import differentiable
from .page import bar_chart, figures_table, line_plot, node_section, step

STEPS = 2
TARGET = "green"
# The shipped workflow's window (workflows/lsc_clip_guided_sampling.json, benchmarks/_guidance_bench.py): 40 % to 80 %
# of the schedule, where this world decides the colour, a constant schedule, one CLIP view; strength 1 (the workflow's
# 1.5 turns 6 of these 8 green, 1 turns 7).
STRENGTH, WINDOW, SCHEDULE, VIEWS = 1.0, (0.4, 0.8), "constant", 1
SAMPLING_STEPS, CFG_SCALE = 20, 4.0  # as ReferenceWorld.sample_latents samples
SCENE_SEED, SCENE_COUNT, NOISE_SEED = 31, 8, 32
# The analytic world: "latent distance to the lightest component's mean at most 1" (a constraint: guidance pushes
# only while it is violated), strength 0.5 over the whole schedule, as benchmarks/_guidance_bench.py measures it.
GMM_TARGET, GMM_THRESHOLD, GMM_STRENGTH = 2, 1.0, 0.5
GMM_SAMPLES, GMM_STEPS, GMM_SIGMA_RANGE, GMM_SEED = 2000, 32, (0.005, 20.0), 33
CURVE_WINDOW = (0.2, 0.8)  # a window that leaves room on both sides, to show where each shape acts


def open_colour_scenes() -> list[world.Scene]:
    """Scenes of other colours than the target whose target-coloured version the family was trained on (it never
    saw green triangles)."""
    held_out = {shape for shape, colour in world.HELD_OUT if colour == TARGET}
    found = [scene for scene in world.scenes(20 * SCENE_COUNT, SCENE_SEED, held_out=False)
             if scene.colour != TARGET and scene.shape not in held_out]
    return found[:SCENE_COUNT]


def guided_pictures(family, scenes: list[world.Scene]) -> torch.Tensor:
    """Pictures [2N, 3, H, W]: the prompts (colour left out) sampled plainly, then guided, from the same noises."""
    prompts = [scene.prompt([name for name in world.OPTIONAL_IN_PROMPTS if name != "colour"]) for scene in scenes]
    context = family.encode_text(prompts).hidden_states
    sigma_min, sigma_max = family.sigma_range()
    sigmas = karras_sigmas(SAMPLING_STEPS, sigma_min, sigma_max)
    schedule = sigmas_from_alphas_cumprod(family.alphas_cumprod)
    objective = objectives.clip_text(family.score_images, family.encode_text([TARGET]).embedding, None,
                                     f"CLIP text '{TARGET}'", VIEWS)
    loss = guidance.guidance_loss(objective, family.decode)
    weight = guidance.windowed_weight(schedule_sigma(WINDOW[0], schedule), schedule_sigma(WINDOW[1], schedule),
                                      SCHEDULE, sigma_min, sigma_max)
    plain = family.denoiser(context, CFG_SCALE)
    guided = guidance.guided_denoiser(plain, lambda x0: loss(x0 / family.scaling_factor), STRENGTH, weight)
    noise = seeded_noise(NOISE_SEED, (len(scenes), *models.LATENT_SHAPE)) * sigmas[0]
    latents = torch.cat([sample_euler(plain, noise, sigmas), sample_euler(guided, noise, sigmas)])
    return family.decode(latents / family.scaling_factor).clamp(0, 1)


def mixture_frequencies() -> dict[str, list[float]]:
    """How often samples land in each component: the weights, plain Euler sampling, and guided sampling."""
    mixture = gmm.standard_mixture()
    noise = torch.randn((GMM_SAMPLES, *mixture.shape), generator=torch.Generator().manual_seed(GMM_SEED))
    sigma_min, sigma_max = GMM_SIGMA_RANGE
    sigmas = karras_sigmas(GMM_STEPS, sigma_min, sigma_max)
    distance = objectives.reference_distance("distance to the target's mean", "latent",
                                             mixture.means[GMM_TARGET][None])
    loss = guidance.guidance_loss(objectives.constrain(distance, GMM_THRESHOLD), None)
    weight = guidance.windowed_weight(sigma_max, sigma_min, "constant", sigma_min, sigma_max)
    guided = guidance.guided_denoiser(mixture.denoise, loss, GMM_STRENGTH, weight)
    zero = torch.tensor(0.0)

    def frequencies(samples: torch.Tensor) -> list[float]:
        landed = mixture.component_posterior(samples, zero).argmax(dim=1)
        return (torch.bincount(landed, minlength=len(mixture.weights)).double() / len(samples)).tolist()

    return {"mixture weights": mixture.weights.tolist(),
            "plain sampling": frequencies(sample_euler(mixture.denoise, noise * sigmas[0], sigmas)),
            "guided": frequencies(sample_euler(guided, noise * sigmas[0], sigmas))}


def schedule_curves(family) -> tuple[dict[str, list[float]], list[float]]:
    """Each shape's guidance weight at each step of the family's sampler (0 outside the window), over the steps'
    place in the schedule."""
    sigma_min, sigma_max = family.sigma_range()
    schedule = sigmas_from_alphas_cumprod(family.alphas_cumprod)
    start, end = (schedule_sigma(position, schedule) for position in CURVE_WINDOW)
    steps = karras_sigmas(SAMPLING_STEPS, sigma_min, sigma_max)[:-1]
    curves = {}
    for shape in guidance.SCHEDULES:
        weight = guidance.windowed_weight(start, end, shape, sigma_min, sigma_max)
        curves[shape] = [weight(sigma) or 0.0 for sigma in steps]
    return curves, [index / SAMPLING_STEPS for index in range(SAMPLING_STEPS)]


def render(out: Path, progress, family) -> str:
    scenes = open_colour_scenes()
    # Out of inference mode (the demo may run inside it, as ComfyUI does): the models and the objectives' constants
    # take part in the guidance's backward passes.
    with torch.inference_mode(False), torch.no_grad():
        family = differentiable(family)
        with step(progress, "Guided Noise Inject: plain and guided pictures"):
            pictures = guided_pictures(family, scenes)
        with step(progress, "Guided Noise Inject: the analytic world"):
            frequencies = mixture_frequencies()
    readings = oracle.read_batch(pictures)
    count = len(scenes)
    plain, guided = readings[:count], readings[count:]
    captions = [scene.prompt([name for name in world.OPTIONAL_IN_PROMPTS if name != "colour"]) for scene in scenes]
    curves, positions = schedule_curves(family)
    kept = sum(all(reading[name] == getattr(scene, name) for name in ("shape", "size", "position", "background"))
               for reading, scene in zip(guided, scenes))
    figures = {
        f"plain pictures read {TARGET}": f"{sum(r['colour'] == TARGET for r in plain)} of {count}",
        f"guided pictures read {TARGET}": f"{sum(r['colour'] == TARGET for r in guided)} of {count}",
        "guided pictures with shape, size, position and background as asked": f"{kept} of {count}",
        "analytic world: samples in the target component, plain → guided":
            f"{frequencies['plain sampling'][GMM_TARGET]:.3f} → {frequencies['guided'][GMM_TARGET]:.3f}",
    }
    components = [f"component {k} (weight {w:g})" for k, w in enumerate(frequencies["mixture weights"])]
    return node_section("Guided Noise Inject (LSC)", "LSC_GuidedNoiseInject", (
        "<p>Guidance tilts the sampler's predicted noise along the gradient of an objective at every step inside a "
        "window, so the sampler itself draws what the objective asks; no picture is edited afterwards. Each pair "
        f"below shares its noise (Euler, {SAMPLING_STEPS} steps on the Karras schedule, guidance {CFG_SCALE:g}); the "
        f"prompts name no colour, and the guided row follows the CLIP text objective “{TARGET}” at strength "
        f"{STRENGTH:g} from {WINDOW[0]:.0%} to {WINDOW[1]:.0%} of the schedule (x0 mode: the gradient at the "
        "denoised estimate, no backward pass through the denoiser), over the shipped workflow's window.</p>"
        + frame_row(out, "guidance_plain", pictures[:count], captions, plain)
        + frame_row(out, "guidance_guided", pictures[count:], [f"guided: {text}" for text in captions], guided)
        + "<h3>The analytic world</h3>"
        "<p>Three Gaussian components with an exact denoiser. Guidance towards the lightest one (the constraint "
        f"“latent distance to its mean at most {GMM_THRESHOLD:g}”, which pushes only while it is violated) sends "
        "most samples there, each still spread like the component itself.</p>"
        + bar_chart(frequencies, components, "share of samples")
        + "<h3>The schedule</h3>"
        f"<p>The guidance weight at each of the {SAMPLING_STEPS} steps for each schedule shape, with the window set "
        f"from {CURVE_WINDOW[0]:.0%} to {CURVE_WINDOW[1]:.0%} of the schedule; outside it, guidance costs "
        "nothing.</p>"
        + line_plot(curves, positions, "place of the step in the schedule", "guidance weight")
        + figures_table(figures)
    ))
