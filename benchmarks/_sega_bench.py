"""Semantic guidance (SEGA) on the reference world, judged by the pixel oracle: captions of blue squares (every other
attribute at random) sampled with the concept "red" added. Does the picture turn red (``sega_attr_shift_rate``) while
shape, size, position and background stay as the caption says (``sega_keep_rate``), against the same captions and
seeds without the concept? The same through ComfyUI's nodes, and the speed of evaluating two concepts in the
sampler's one batched model call against one call per concept.

Part of benchmarks/fidelity.py (engine), comfy_fidelity.py (nodes) and perf.py (speed).
python benchmarks/_sega_bench.py [--sweep [START_PERCENT ...]] [--comfy] [--perf]   (--comfy, --perf: COMFYUI_PATH)
"""

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core.adapters import epsilon_denoiser, sigmas_from_alphas_cumprod, unet_epsilon  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.core.sampling import karras_sigmas, sample_euler  # noqa: E402
from latent_space_control.core.semantic_guidance import Concept, semantic_guidance_denoiser  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

SEGA_SEED = EVALUATION_SEED + 61  # the captions; their noise seeds follow it
CAPTIONS = 128  # the evaluation set
SWEEP_CAPTIONS, SWEEP_OFFSET = 96, 1000  # the sweep set: its scenes and noise seeds drawn apart from the evaluation's
STEPS, CFG = 20, 4.0
CONCEPT = "red"
KEPT = ("shape", "size", "position", "background")
# The node's defaults (nodes/semantic_guidance.py), chosen by sweep() below.
SETTINGS = dict(scale=10.0, threshold=0.25, warmup=0.5, momentum_scale=0.0, momentum_beta=0.6)
SWEEP_GRID = dict(warmup=(0.0, 0.2, 0.3, 0.4, 0.5), scale=(5.0, 7.5, 10.0, 15.0), threshold=(0.5, 0.8, 0.9))


def blue_squares(count: int, seed: int) -> list[world.Scene]:
    """Blue-square scenes with every other attribute drawn at random."""
    return [replace(scene, shape="square", colour="blue") for scene in world.scenes(count, seed, held_out=False)]


def percent_to_sigma(family: models.ReferenceWorld, percent: float) -> float:
    """ComfyUI's start/end percent of a discrete-step model as a noise level: the training step (1 - percent) of
    the way along, interpolated in log sigma."""
    if percent <= 0:
        return float("inf")
    sigmas = sigmas_from_alphas_cumprod(family.alphas_cumprod.double())
    position = (1 - percent) * (len(sigmas) - 1)
    low = int(position)
    high = min(low + 1, len(sigmas) - 1)
    weight = position - low
    return float((sigmas[low].log() * (1 - weight) + sigmas[high].log() * weight).exp())


def concept_of(family, settings: dict, sign: int = 1) -> Concept:
    return Concept(scale=settings["scale"], threshold=settings["threshold"], sign=sign,
                   momentum_scale=settings["momentum_scale"], momentum_beta=settings["momentum_beta"],
                   start_sigma=percent_to_sigma(family, settings["warmup"]))


class SegaRun:
    """What every setting shares for one set of captions: the noise, the schedule, and the UNet over the batch
    laid out as the unconditional prompt, the captions, then the concept CONCEPT (one call per step)."""

    def __init__(self, family: models.ReferenceWorld, captions: list[str], seeds: list[int]):
        encode = family.encode_text
        batch = len(captions)
        self.family = family
        self.captions = captions
        self.sigmas = karras_sigmas(STEPS, *family.sigma_range())
        self.start = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in seeds]) * self.sigmas[0]
        contexts = torch.cat([encode([""]).hidden_states.expand(batch, -1, -1), encode(captions).hidden_states,
                              encode([CONCEPT]).hidden_states.expand(batch, -1, -1)])
        self.batched = epsilon_denoiser(unet_epsilon(family.unet, contexts), family.alphas_cumprod)

    @torch.inference_mode()
    def latents(self, concept: Concept, x: torch.Tensor | None = None, first_step: int = 0,
                last_step: int = STEPS) -> torch.Tensor:
        """Sampled with ``concept`` guiding from ``x`` at step ``first_step`` (the start noise by default) to step
        ``last_step`` (the end)."""
        x = self.start if x is None else x
        return sample_euler(semantic_guidance_denoiser(self.batched, CFG, [concept]), x,
                            self.sigmas[first_step:last_step + 1])

    @torch.inference_mode()
    def plain_latents(self) -> torch.Tensor:
        return sample_euler(self.family.denoiser(self.family.encode_text(self.captions).hidden_states, CFG),
                            self.start, self.sigmas)

    @torch.inference_mode()
    def pictures(self, latents: torch.Tensor) -> torch.Tensor:
        return self.family.decode(latents / self.family.scaling_factor).clamp(0, 1)


def rates(readings, scenes) -> tuple[float, float]:
    """(the share read red, the share whose kept attributes read as the caption says)."""
    red = sum(r["colour"] == "red" for r in readings) / len(scenes)
    kept = sum(all(r[name] == getattr(s, name) for name in KEPT) for r, s in zip(readings, scenes)) / len(scenes)
    return red, kept


def evaluation_set(count: int = CAPTIONS, seed: int = SEGA_SEED) -> tuple[list[world.Scene], list[int]]:
    return blue_squares(count, seed), [seed + 1 + i for i in range(count)]


def sega_figures(settings: dict = SETTINGS) -> dict:
    scenes, seeds = evaluation_set()
    run = SegaRun(models.load(), [scene.caption() for scene in scenes], seeds)
    plain_red, plain_kept = rates(oracle.read_batch(run.pictures(run.plain_latents())), scenes)
    red, kept = rates(oracle.read_batch(run.pictures(run.latents(concept_of(run.family, settings)))), scenes)
    return {"sega_attr_shift_rate": red, "sega_keep_rate": kept,
            "sega_plain_attr_shift_rate": plain_red, "sega_plain_keep_rate": plain_kept}


def sega_node(model: list, concept: list, settings: dict = SETTINGS, direction: str = "add") -> dict:
    return {"class_type": "LSC_SemanticGuidance", "inputs": {
        "model": model, "concept": concept, "direction": direction, "scale": settings["scale"],
        "threshold": settings["threshold"], "start_percent": settings["warmup"], "end_percent": 1.0,
        "momentum_scale": settings["momentum_scale"], "momentum_beta": settings["momentum_beta"]}}


def comfy_sega_figures(comfy) -> dict:
    """The same captions and seeds through the nodes: CLIPTextEncode (caption, concept) -> Semantic Guidance ->
    KSampler (euler, karras, cfg 4) -> VAEDecode, beside the unguided KSampler."""
    from comfy_fidelity import sampled_branch, shared_nodes, text, variant_pictures

    scenes, seeds = evaluation_set()

    def build(captions: list[str], chunk_seeds: list[int]) -> dict:
        prompt = {**shared_nodes(), "concept": text(CONCEPT), "sega": sega_node(["loader", 0], ["concept", 0])}
        for i, (caption, seed) in enumerate(zip(captions, chunk_seeds)):
            prompt[f"text{i}"] = text(caption)
            prompt.update(sampled_branch(f"plain{i}", [f"text{i}", 0], seed))
            prompt.update(sampled_branch(f"sega{i}", [f"text{i}", 0], seed, ("sega", 0)))
        return prompt

    pictures = variant_pictures(comfy, build, ("plain", "sega"), [scene.caption() for scene in scenes], seeds)
    red, kept = rates(oracle.read_batch(pictures["sega"]), scenes)
    plain_red, plain_kept = rates(oracle.read_batch(pictures["plain"]), scenes)
    return {"comfy_sega_attr_shift_rate": red, "comfy_sega_keep_rate": kept,
            "comfy_sega_plain_attr_shift_rate": plain_red, "comfy_sega_plain_keep_rate": plain_kept}


# (picture size, batch, key suffix): the reference family's native 32x32 pictures one at a time, as artists run it and
# as the fidelity figures sample, then a larger setting where the model's compute weighs more.
PERF_SETTINGS = ((32, 1, ""), (64, 4, "_64px_batch4"))
PERF_STEPS, PERF_REPEATS = 20, 5


def one_call_per_cond(executor, model, conds, x_in, timestep, model_options):
    """A CALC_COND_BATCH wrapper that evaluates each cond list in its own model call: the sequential baseline."""
    return [executor(model, [cond], x_in, timestep, model_options)[0] for cond in conds]


def sega_perf_figures(comfy) -> dict:
    """KSampler (euler, karras, 20 steps, cfg 4) on the reference model guided by two chained concepts, the prompt,
    the negative and both concepts in one batched model call a step, against the same patch with each of the four
    evaluated in its own call, side by side. Batching saves the per-call cost (the Python and dispatch work of
    each model call, the same whatever the batch); it is what dominates at the reference family's native size, and
    what weighs less as the model's own compute grows (the larger setting, ``..._64px_batch4``). ``comfy``: a started
    harness (``comfy_fidelity.start_comfyui``; one per process)."""
    from comfy.patcher_extension import WrappersMP
    from comfy_fidelity import captured_values
    from perf import compare

    figures = {}
    ksampler = comfy.node_class("KSampler")()
    for size, batch, suffix in PERF_SETTINGS:
        nodes = {
            "loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
            "positive": {"class_type": "CLIPTextEncode", "inputs": {
                "clip": ["loader", 1], "text": "a large blue square in the middle, white background"}},
            "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
            "red": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": "red"}},
            "black": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1],
                                                                 "text": "black background"}},
            "latent": {"class_type": "LSC_EmptyLatentForVAE", "inputs": {
                "vae": ["loader", 2], "width": size, "height": size, "batch_size": batch}},
            "first": sega_node(["loader", 0], ["red", 0]),
            "both": sega_node(["first", 0], ["black", 0], direction="remove"),
        }
        made = captured_values(comfy, nodes, {"both": ["both", 0], "positive": ["positive", 0],
                                              "negative": ["negative", 0], "latent": ["latent", 0]})
        sequential = made["both"].clone()
        sequential.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, "one_call_per_cond", one_call_per_cond)

        def sample(model):
            def run():
                with torch.inference_mode():  # as ComfyUI's executor runs every node
                    ksampler.sample(model, 1, PERF_STEPS, CFG, "euler", "karras", made["positive"],
                                    made["negative"], made["latent"])
            return run

        print(f"_sega_bench.py: timing {size}x{size} pictures, batch {batch}", file=sys.stderr, flush=True)
        batched, one_by_one = compare(sample(made["both"]), sample(sequential), torch.device("cpu"),
                                      PERF_REPEATS)
        figures.update({f"sega_batched_vs_sequential_speedup{suffix}": one_by_one / batched,
                        f"sega_batched_seconds{suffix}": batched, f"sega_sequential_seconds{suffix}": one_by_one})
    return figures


def sweep(grid: dict = SWEEP_GRID) -> list[dict]:
    """The rates of every combination of ``grid``'s values (momentum off) on the sweep set. The steps before a
    concept's start are plain CFG whatever its scale and threshold: they are sampled once per start."""
    family = models.load()
    scenes, seeds = evaluation_set(SWEEP_CAPTIONS, SEGA_SEED + SWEEP_OFFSET)
    run = SegaRun(family, [scene.caption() for scene in scenes], seeds)
    rows = []
    for warmup in grid["warmup"]:
        start_sigma = percent_to_sigma(family, warmup)
        first_step = int((run.sigmas > start_sigma).sum())
        shared = dict(SETTINGS, warmup=warmup, momentum_scale=0.0)
        x = run.latents(concept_of(family, shared), last_step=first_step)
        for scale in grid["scale"]:
            for threshold in grid["threshold"]:
                settings = dict(shared, scale=scale, threshold=threshold)
                latents = run.latents(concept_of(family, settings), x, first_step)
                red, kept = rates(oracle.read_batch(run.pictures(latents)), scenes)
                rows.append({**settings, "red": red, "kept": kept})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", nargs="*", type=float, metavar="START_PERCENT",
                        help="sweep the grid (only these start percents, when given)")
    parser.add_argument("--comfy", action="store_true")
    parser.add_argument("--perf", action="store_true")
    args = parser.parse_args()
    if args.sweep is not None:
        print(json.dumps(sweep(dict(SWEEP_GRID, warmup=tuple(args.sweep) or SWEEP_GRID["warmup"]))))
    elif args.comfy:
        from comfy_fidelity import start_comfyui

        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(comfy_sega_figures(start_comfyui(Path(work)))))
    elif args.perf:
        from comfy_fidelity import start_comfyui

        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(sega_perf_figures(start_comfyui(Path(work)))))
    else:
        print(json.dumps(sega_figures()))


if __name__ == "__main__":
    main()
