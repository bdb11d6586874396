"""How faithfully and how cheaply gradient guidance during sampling (core/guidance.py, Guided Noise Inject) does what
its objective says.

- The analytic world (reference/gmm.py: three Gaussian components with an exact denoiser): guidance towards the
  lightest component (weight 0.2) with the objective "latent distance to its mean at most τ" (a constraint: it pushes
  only while violated). Target-mode rate: the share of samples that land in that component (baseline: its weight);
  NLL increase: the mean negative log-likelihood per dimension of the guided samples under the mixture minus that of
  exact samples of the component (positive: samples off the distribution); std ratio: their RMS spread around the
  component's mean over its std (a collapse detector: 1 is the component's own spread, and plain Euler sampling
  reaches about 0.93). The same objective as a plain term (distance, no threshold) is shown collapsing beside it.
- The reference world: prompts that leave the colour open, 20 Euler steps on the Karras schedule at cfg 4 (the
  family's defaults), guided by the CLIP text objective "green"; the oracle reads the colour (target rate) and
  whether shape, size, position and background are as the prompt says (keep rate), against the same seeds unguided,
  in x0 and in exact mode.
- Through ComfyUI (``comfy_guidance_figures``): the same prompts through the nodes.
- Cost (``guidance_perf_figures``, needs COMFYUI_PATH): ComfyUI's KSampler with the guided model against the plain one,
  same steps, timed side by side.

Part of benchmarks/fidelity.py (engine), comfy_fidelity.py (``guidance``) and perf.py (cost).
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _bootstrap import EVALUATION_SEED, load_pack
from _optimize_fidelity import TARGET, edit_scenes

load_pack()
from latent_space_control.core import guidance, objectives  # noqa: E402
from latent_space_control.core.adapters import sigmas_from_alphas_cumprod  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.core.sampling import karras_sigmas, sample_euler  # noqa: E402
from latent_space_control.core.style import schedule_sigma  # noqa: E402
from latent_space_control.reference import gmm, models, oracle, world  # noqa: E402

GUIDE_SEED = EVALUATION_SEED + 60
KEPT = ("shape", "size", "position", "background")

# Analytic world: the lightest component, a few thousand samples, 32 Euler steps on the Karras schedule.
GMM_TARGET, GMM_SAMPLES, GMM_STEPS = 2, 2000, 32
GMM_SIGMA_RANGE = (0.005, 20.0)  # the components lie 6·√2 apart with stds 0.3–0.5
# "Relative squared distance to the mean at most 1": a sample of the component reads about 0.64 (its variance over
# the mean's), one of another component about 2.6.
GMM_THRESHOLD = 1.0
GMM_STRENGTH = 0.5

# Reference world: the workflow's settings (workflows/lsc_clip_guided_sampling.json). The colour is decided in the
# middle of the schedule: on 32 prompts strength 1 over 0–60 % (10 of 20 steps guided) turned 0.78 green and kept
# 0.84; over 40–80 % (4 steps) 0.78 and 1.0, at 40 % of the cost; 0–40 % only 0.56. One CLIP view: a guided step then
# costs about as much as a plain one (on 16 prompts, 8 views over 0–60 % turned 12 green against one view's 13 and
# kept 15 against 13, at about 8 times the cost per guided step).
# Chosen on 64 scenes of another seed (GUIDE_SEED + 500: other scenes and noise; the world has only ~24 open-colour
# prompt texts, so texts recur), engine x0, green / kept: strength 1.5 over 40–80 % 0.78 / 1.0 (unguided 0.31);
# decode_scale 0.5 there only 0.39 / 0.98 (so the whole latent is decoded); 30–70 % 0.73 / 1.0 (through ComfyUI
# 0.70 / 1.0, its unguided 0.25); strength 2 over 40–80 % 0.77 / 0.97, 2 over 30–70 % 0.69 / 0.92, 2.5 over 40–80 %
# 0.72 / 0.89; three steps (40–70 %) at strength 1.5, 2 and 2.5 only 0.67, 0.64, 0.66. Four guided steps cost
# guide_x0_overhead 1.13–1.22 (four runs; 1.28 once under load), so a fifth (30–80 %) would pass 1.2.
PICTURES = 64
STEPS, CFG = 20, 4.0
STRENGTH = 1.5
WINDOW = (0.4, 0.8)  # start, end percent
SCHEDULE = "constant"
VIEWS = 1
DECODE_SCALE = 1.0


def _gmm_samples(mixture, objective, strength: float, noise: torch.Tensor) -> torch.Tensor:
    sigma_min, sigma_max = GMM_SIGMA_RANGE
    sigmas = karras_sigmas(GMM_STEPS, sigma_min, sigma_max)
    weight = guidance.windowed_weight(sigma_max, sigma_min, "constant", sigma_min, sigma_max)
    denoiser = guidance.guided_denoiser(mixture.denoise, guidance.guidance_loss(objective, None), strength, weight)
    return sample_euler(denoiser, noise * sigmas[0], sigmas)


def _gmm_readings(mixture, samples: torch.Tensor, exact: torch.Tensor, prefix: str) -> dict:
    dims = samples[0].numel()
    zero = torch.tensor(0.0)

    def nll(x):
        return float(-mixture.log_density(x, zero).mean()) / dims

    landed = mixture.component_posterior(samples, zero).argmax(dim=1) == GMM_TARGET
    inside = samples[landed]
    spread = float((inside - mixture.means[GMM_TARGET]).pow(2).mean().sqrt() / mixture.stds[GMM_TARGET])
    return {f"{prefix}_target_mode_rate": float(landed.float().mean()),
            f"{prefix}_nll_increase": nll(samples) - nll(exact),
            f"{prefix}_std_ratio": spread if len(inside) else float("nan")}


def gmm_figures() -> dict:
    mixture = gmm.standard_mixture()
    generator = torch.Generator().manual_seed(GUIDE_SEED)
    noise = torch.randn((GMM_SAMPLES, *mixture.shape), generator=generator)
    exact = mixture.means[GMM_TARGET] + mixture.stds[GMM_TARGET] * torch.randn(noise.shape, generator=generator)
    distance = objectives.reference_distance("distance to the target's mean", "latent",
                                             mixture.means[GMM_TARGET][None])
    constrained = _gmm_samples(mixture, objectives.constrain(distance, GMM_THRESHOLD), GMM_STRENGTH, noise)
    as_a_term = _gmm_samples(mixture, distance, GMM_STRENGTH, noise)
    return {**_gmm_readings(mixture, constrained, exact, "guide_gmm"),
            **_gmm_readings(mixture, as_a_term, exact, "guide_gmm_term"),
            "guide_gmm_baseline_rate": float(mixture.weights[GMM_TARGET])}


def guide_scenes() -> list[world.Scene]:
    return edit_scenes(PICTURES, GUIDE_SEED + 1)


def open_colour_prompts(scenes: list[world.Scene]) -> list[str]:
    return [scene.prompt([name for name in world.OPTIONAL_IN_PROMPTS if name != "colour"]) for scene in scenes]


def clip_text(family: models.ReferenceWorld, views: int = VIEWS) -> objectives.Objective:
    with torch.no_grad():
        positive = family.encode_text([TARGET]).embedding
    return objectives.clip_text(family.score_images, positive, None, f"CLIP text '{TARGET}'", views)


def guided_latents(family: models.ReferenceWorld, context: torch.Tensor, noise: torch.Tensor, strength: float,
                   mode: str = "x0", window: tuple[float, float] = WINDOW, schedule: str = SCHEDULE,
                   views: int = VIEWS, decode_scale: float = DECODE_SCALE) -> torch.Tensor:
    """Raw latents sampled as the family samples them, guided towards CLIP text "green"."""
    from latent_space_control.core.optimize import scaled_decoder

    sigma_min, sigma_max = family.sigma_range()
    sigmas = karras_sigmas(STEPS, sigma_min, sigma_max)
    loss = guidance.guidance_loss(clip_text(family, views), scaled_decoder(family.decode, decode_scale))
    training_sigmas = sigmas_from_alphas_cumprod(family.alphas_cumprod)
    weight = guidance.windowed_weight(schedule_sigma(window[0], training_sigmas),
                                      schedule_sigma(window[1], training_sigmas), schedule, sigma_min, sigma_max)
    denoiser = guidance.guided_denoiser(family.denoiser(context, CFG), lambda x0: loss(x0 / family.scaling_factor),
                                        strength, weight, mode)
    with torch.no_grad():
        return sample_euler(denoiser, noise * sigmas[0], sigmas) / family.scaling_factor


def rates(readings: list[dict], scenes: list[world.Scene]) -> tuple[float, float]:
    """The share that reads green, and the share whose shape, size, position and background are as asked."""
    target = sum(reading["colour"] == TARGET for reading in readings) / len(readings)
    kept = sum(all(reading[name] == scene.attributes()[name] for name in KEPT)
               for reading, scene in zip(readings, scenes)) / len(readings)
    return target, kept


def reference_figures(family: models.ReferenceWorld) -> dict:
    scenes = guide_scenes()
    with torch.no_grad():
        context = family.encode_text(open_colour_prompts(scenes)).hidden_states
    noise = seeded_noise(GUIDE_SEED + 2, (len(scenes), *models.LATENT_SHAPE))
    figures = {}
    for key, strength, mode in (("baseline", 0.0, "x0"), ("x0", STRENGTH, "x0"), ("exact", STRENGTH, "exact")):
        with torch.no_grad():
            pictures = family.decode(guided_latents(family, context, noise, strength, mode)).clamp(0, 1)
        target, kept = rates(oracle.read_batch(pictures), scenes)
        name = "guide_clip" if key == "x0" else f"guide_clip_{key}"
        figures.update({f"{name}_target_rate" if key != "baseline" else "guide_clip_baseline_rate": target,
                        f"{name}_keep_rate": kept})
    return figures


def guidance_figures() -> dict:
    start = time.perf_counter()
    figures = {**gmm_figures(), **reference_figures(models.load())}
    figures["guide_seconds"] = time.perf_counter() - start
    return figures


# ---- through ComfyUI --------------------------------------------------------------------------------------------

def guided_prompt(prompts: list[str], seed: int, strength: float = STRENGTH, mode: str = "x0",
                  window: tuple[float, float] = WINDOW, schedule: str = SCHEDULE, views: int = VIEWS,
                  decode_scale: float = DECODE_SCALE, batch: int = 1) -> dict:
    """Reference Model Loader, Open CLIP Loader -> Objective: CLIP Text "green" -> Guided Noise Inject; per prompt a
    KSampler (euler, karras) with the guided model and one with the plain model, from one seed, each decoded and
    captured ("guided_i", "plain_i")."""
    from comfy_fidelity import sampled_branch, shared_nodes, text

    nodes = {**shared_nodes(),
             "open_clip": {"class_type": "LSC_OpenCLIPLoader", "inputs": {
                 "architecture": models.CLIP_NAME, "weights": "reference (shipped with the pack)"}},
             "green": {"class_type": "LSC_ObjectiveCLIPText", "inputs": {
                 "open_clip": ["open_clip", 0], "positive": TARGET, "negative": "", "views": views}},
             "guided": {"class_type": "LSC_GuidedNoiseInject", "inputs": {
                 "model": ["loader", 0], "objective": ["green", 0], "strength": strength,
                 "start_percent": window[0], "end_percent": window[1], "schedule": schedule, "mode": mode,
                 "decode_scale": decode_scale, "vae": ["loader", 2]}}}
    nodes["empty"]["inputs"]["batch_size"] = batch
    for i, prompt in enumerate(prompts):
        nodes[f"text{i}"] = text(prompt)
        nodes.update(sampled_branch(f"guided_{i}", [f"text{i}", 0], seed + i, ("guided", 0)))
        nodes.update(sampled_branch(f"plain_{i}", [f"text{i}", 0], seed + i))
    return nodes


def comfy_guidance_figures(comfy) -> dict:
    """The engine's reference-world figure through the nodes: the same prompts, each from its own seed."""
    start = time.perf_counter()
    scenes = guide_scenes()
    result = comfy.run(guided_prompt(open_colour_prompts(scenes), GUIDE_SEED))
    if not result.ok:
        raise RuntimeError(f"ComfyUI failed: {result.error}")
    figures = {}
    for key in ("guided", "plain"):
        pictures = torch.cat([result.captured[f"{key}_{i}"] for i in range(len(scenes))]).movedim(-1, 1)
        target, kept = rates(oracle.read_batch(pictures), scenes)
        name = "comfy_guide_clip" if key == "guided" else "comfy_guide_clip_baseline"
        figures.update({f"{name}_target_rate" if key == "guided" else "comfy_guide_clip_baseline_rate": target,
                        f"{name}_keep_rate": kept})
    figures["comfy_guide_seconds"] = time.perf_counter() - start
    return figures


PERF_BATCH, PERF_REPEATS = 4, 5


def guidance_perf_figures(comfy) -> dict:
    """KSampler (euler, karras, cfg 4, the family's 20 steps, a batch of 4) with the model guided as the workflow
    guides it, in x0 and in exact mode, against the plain model; the nodes' outputs come from one executed prompt and
    the KSampler node itself is timed on them, interleaved. ``comfy``: a started harness
    (``comfy_fidelity.start_comfyui``; one per process: the pack registers under the first one's folder)."""
    from comfy_fidelity import captured_values

    nodes = guided_prompt([open_colour_prompts(guide_scenes())[0]], GUIDE_SEED, batch=PERF_BATCH)
    nodes["exact"] = {**nodes["guided"], "inputs": {**nodes["guided"]["inputs"], "mode": "exact"}}
    nodes = {key: node for key, node in nodes.items() if not key.startswith(("sample_", "decode_", "capture_"))}
    made = captured_values(comfy, nodes, {"plain": ["loader", 0], "x0": ["guided", 0], "exact": ["exact", 0],
                                          "positive": ["text0", 0], "negative": ["negative", 0],
                                          "latent": ["empty", 0]})
    ksampler = comfy.node_class("KSampler")()

    def sample(model):
        with torch.inference_mode():  # as ComfyUI's executor runs every node
            ksampler.sample(model, 1, STEPS, CFG, "euler", "karras", made["positive"], made["negative"],
                            made["latent"])

    times = {label: [] for label in ("plain", "x0", "exact")}
    for label in times:
        sample(made[label])  # warm up: private copies are made at the first guided step
    for _ in range(PERF_REPEATS):  # interleaved, so that drifting machine load hits all alike
        for label in times:
            start = time.perf_counter()
            sample(made[label])
            times[label].append(time.perf_counter() - start)
    seconds = {label: statistics.median(values) for label, values in times.items()}
    return {"guide_x0_overhead": seconds["x0"] / seconds["plain"],
            "guide_exact_overhead": seconds["exact"] / seconds["plain"],
            "guide_x0_seconds": seconds["x0"], "guide_exact_seconds": seconds["exact"],
            "guide_plain_seconds": seconds["plain"]}


def main() -> None:
    import argparse

    from _bootstrap import report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    parser.add_argument("--only", choices=("engine", "comfy", "perf"), help="measure only this part")
    args = parser.parse_args()
    figures = {}
    if args.only in (None, "engine"):
        figures.update(guidance_figures())
    if args.only in (None, "comfy", "perf"):
        if not os.environ.get("COMFYUI_PATH"):
            sys.exit("the comfy and perf parts need COMFYUI_PATH: the folder of a ComfyUI export")
        from comfy_fidelity import start_comfyui

        with tempfile.TemporaryDirectory() as work:
            comfy = start_comfyui(Path(work))
            if args.only in (None, "comfy"):
                figures.update(comfy_guidance_figures(comfy))
            if args.only in (None, "perf"):
                figures.update(guidance_perf_figures(comfy))
    report(figures, args.json)


if __name__ == "__main__":
    main()
