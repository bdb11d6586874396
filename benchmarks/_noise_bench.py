"""Noise injection and directional noise, measured against exact answers and the pixel oracle.

- The analytic mixture world (exact denoiser): Euler with full-strength fresh noise over the middle of the schedule
  must still find each component as often as its weight, at its own spread (gmm figures, with and without injection).
- The reference family: injection at a few amounts over the middle of the schedule, how much the pictures change and
  whether the oracle still reads the prompt's shape and colour (what the node's default amount is chosen from).
- The reference family: the starting noise tilted along the red-minus-blue latent direction, with prompts that leave
  the colour open: how often the oracle reads red (and blue) at each strength (the node's default strength).

Part of benchmarks/fidelity.py; ``python benchmarks/_noise_bench.py`` prints the JSON alone (progress on stderr).
"""

import json
import sys
import time

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core.directions import mean_difference  # noqa: E402
from latent_space_control.core.noise import seeded_noise, tilted_noise  # noqa: E402
from latent_space_control.core.noise_injection import injection_steps, sample_with_injection  # noqa: E402
from latent_space_control.core.sampling import karras_sigmas, sample_euler  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402
from latent_space_control.reference.gmm import mode_frequency_error, standard_mixture  # noqa: E402

GMM_WINDOW = (10.0, 0.1)  # sigma: the middle of karras(32, 0.002, 80), 14 of its 31 renoisable steps
PROMPTS = 96  # reference pictures per setting: one batch
STEPS, CFG = 20, 4.0
MIDDLE = set(range(STEPS // 3, 2 * STEPS // 3))  # the middle third of the reference schedule's steps
AMOUNTS = (0.25, 0.5, 1.0)
TILTS = (0.0, 2.0, 4.0, 8.0)
TOWARDS, AWAY = "red", "blue"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def euler_segments(denoiser):
    def sample_segment(x, sigmas, first):
        last = {}
        x = sample_euler(denoiser, x, sigmas, lambda step: last.update(denoised=step["denoised"]))
        return x, last.get("denoised")
    return sample_segment


def gmm_figures() -> dict:
    mixture = standard_mixture()
    noise = torch.randn((8000, *mixture.shape), generator=torch.Generator().manual_seed(EVALUATION_SEED))
    sigmas = karras_sigmas(32, 0.002, 80.0)
    chosen = injection_steps(sigmas, GMM_WINDOW, None)

    def spread(samples):
        components = mixture.component_posterior(samples, torch.tensor(0.0)).argmax(dim=1)
        return float(((samples - mixture.means[components]).flatten(1).std(dim=1) / mixture.stds[components]).mean())

    plain = sample_euler(mixture.denoise, noise * sigmas[0], sigmas)
    injected = sample_with_injection(euler_segments(mixture.denoise), noise * sigmas[0], sigmas, chosen, 1.0,
                                     torch.Generator().manual_seed(EVALUATION_SEED + 1), flow=False)
    return {
        "inject_gmm_mode_frequency_error": mode_frequency_error(mixture, injected),
        "inject_gmm_baseline_mode_frequency_error": mode_frequency_error(mixture, plain),
        "inject_gmm_std_ratio": spread(injected),
        "inject_gmm_baseline_std_ratio": spread(plain),  # Euler's own shrinkage at 32 steps
        "inject_gmm_window_sigma_high": GMM_WINDOW[0],
        "inject_gmm_window_sigma_low": GMM_WINDOW[1],
        "inject_gmm_injected_steps": len(chosen),
    }


def _match_rate(readings, scenes, attributes) -> float:
    return sum(all(r[a] == getattr(s, a) for a in attributes) for r, s in zip(readings, scenes)) / len(scenes)


def reference_injection_figures(family) -> dict:
    scenes = world.scenes(PROMPTS, EVALUATION_SEED + 60, held_out=False)
    context = family.encode_text([scene.caption() for scene in scenes]).hidden_states
    denoiser = family.denoiser(context, CFG)
    sigmas = karras_sigmas(STEPS, *family.sigma_range())
    noise = torch.cat([seeded_noise(EVALUATION_SEED + 61 + i, (1, *models.LATENT_SHAPE)) for i in range(PROMPTS)])
    chosen = injection_steps(sigmas, (float("inf"), 0.0), MIDDLE)

    def pictures(latents):
        return family.decode(latents / family.scaling_factor).clamp(0, 1)

    plain = pictures(sample_euler(denoiser, noise * sigmas[0], sigmas))
    figures = {"inject_ref_match_rate_amount_0": _match_rate(oracle.read_batch(plain), scenes, ("shape", "colour"))}
    for amount in AMOUNTS:
        start = time.perf_counter()
        injected = pictures(sample_with_injection(euler_segments(denoiser), noise * sigmas[0], sigmas, chosen, amount,
                                                  torch.Generator().manual_seed(EVALUATION_SEED + 62), flow=False))
        _log(f"reference injection at amount {amount}: {time.perf_counter() - start:.1f} s")
        figures[f"inject_ref_match_rate_amount_{amount:g}"] = _match_rate(oracle.read_batch(injected), scenes,
                                                                          ("shape", "colour"))
        figures[f"inject_ref_pixel_change_amount_{amount:g}"] = float((injected - plain).abs().mean())
    return figures


def _scenes_of_colour(colour: str, count: int, seed: int) -> list[world.Scene]:
    return [scene for scene in world.scenes(12 * count, seed, held_out=False) if scene.colour == colour][:count]


def directional_noise_figures(family) -> dict:
    """The red-minus-blue direction is the mean difference of 64 encoded red and 64 encoded blue pictures; the
    prompts name shape, size, position and background but no colour."""
    with torch.no_grad():
        towards = family.encode(world.render_batch(_scenes_of_colour(TOWARDS, 64, EVALUATION_SEED + 70)))
        away = family.encode(world.render_batch(_scenes_of_colour(AWAY, 64, EVALUATION_SEED + 71)))
    direction = mean_difference(towards, away, TOWARDS, AWAY)
    scenes = world.scenes(PROMPTS, EVALUATION_SEED + 72, held_out=False)
    context = family.encode_text([scene.prompt(("size", "position", "background")) for scene in scenes]).hidden_states
    denoiser = family.denoiser(context, CFG)
    sigmas = karras_sigmas(STEPS, *family.sigma_range())
    noise = torch.cat([seeded_noise(EVALUATION_SEED + 73 + i, (1, *models.LATENT_SHAPE)) for i in range(PROMPTS)])
    figures = {}
    for strength in TILTS:
        start = time.perf_counter()
        latents = sample_euler(denoiser, tilted_noise(noise, direction, strength) * sigmas[0], sigmas)
        readings = oracle.read_batch(family.decode(latents / family.scaling_factor).clamp(0, 1))
        _log(f"directional noise at strength {strength}: {time.perf_counter() - start:.1f} s")
        figures[f"dirnoise_{TOWARDS}_rate_strength_{strength:g}"] = (
            sum(r["colour"] == TOWARDS for r in readings) / len(readings))
        figures[f"dirnoise_{AWAY}_rate_strength_{strength:g}"] = (
            sum(r["colour"] == AWAY for r in readings) / len(readings))
        figures[f"dirnoise_kept_rate_strength_{strength:g}"] = _match_rate(readings, scenes,
                                                                           ("shape", "size", "position", "background"))
    return figures


@torch.no_grad()
def noise_figures() -> dict:
    start = time.perf_counter()
    figures = gmm_figures()
    _log(f"mixture world: {time.perf_counter() - start:.1f} s")
    family = models.load()
    figures.update(reference_injection_figures(family))
    figures.update(directional_noise_figures(family))
    return figures


if __name__ == "__main__":
    print(json.dumps(noise_figures()))
