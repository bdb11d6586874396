"""Attribute Correlation (core/correlation.py, nodes/correlation.py) on the reference world, judged by the pixel
oracle: pictures sampled from captions of every colour are scored by the CLIP text objective "red" (one view, on the
clamped picture, as the node reads VAE Decode's pictures), and the direction the node fits to those scores is compared
with the mean difference of the latents the oracle reads red and those it reads otherwise (cosine), then applied to
other, not-red pictures: how many turn red, how many keep shape, size, position and background.

- ``fidelity_figures``: the engine (diffusers, open_clip), the fit on FIT pictures, judged on the rest.
- ``comfy_figures``: the same captions and seeds sampled by ComfyUI's KSampler, joined by Latent Batch, scored by
  Objective: CLIP Text and fitted by Attribute Correlation: the cosine with the mean difference.
- ``perf_figures``: the dual solve (B×B) against the primal normal equations (D×D), side by side.
- ``ridge_sweep`` (--sweep): the measurement behind core/correlation.py's RIDGE.

Part of benchmarks/fidelity.py (engine), comfy_fidelity.py (nodes) and perf.py (speed).
python benchmarks/_analysis_correlation_bench.py [--comfy] [--perf] [--sweep]   (--comfy: COMFYUI_PATH)
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core import correlation, objectives  # noqa: E402
from latent_space_control.core.directions import apply_to_latent, mean_difference  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

CORRELATION_SEED = EVALUATION_SEED + 130  # the captions; noise seeds follow it
PICTURES, FIT = 256, 192  # sampled; the first FIT find the direction, the others' not-red pictures are edited
COMFY_PICTURES = 128  # the first of the same captions and seeds, through ComfyUI
STEPS, CFG = 20, 4.0
ATTRIBUTE = "red"
VIEWS = 1
STRENGTH = 3.0  # the strength the moves_color figures apply (strength 1: one std more score in the fit's batch)
KEPT = ("shape", "size", "position", "background")
SWEEP_RIDGES = (0.1, 1.0, 3.0, 10.0, 30.0)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def evaluation_set(count: int = PICTURES) -> tuple[list[str], list[int]]:
    scenes = world.scenes(count, CORRELATION_SEED, held_out=False)
    return [scene.caption() for scene in scenes], [CORRELATION_SEED + 1 + i for i in range(count)]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def is_red(readings: list[dict]) -> torch.Tensor:
    return torch.tensor([reading["colour"] == ATTRIBUTE for reading in readings])


class EngineRun:
    """The evaluation set sampled once by the engine, its pictures read by the oracle and scored as the node
    scores them."""

    @torch.inference_mode()
    def __init__(self):
        self.family = models.load()
        captions, seeds = evaluation_set()
        noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in seeds])
        progress(f"sampling {len(captions)} pictures")
        self.latents = self.family.sample_latents(self.family.encode_text(captions).hidden_states, noise, STEPS, CFG)
        self.readings = oracle.read_batch(self.decode(self.latents))
        self.red = is_red(self.readings)
        embedding = self.family.encode_text([ATTRIBUTE]).embedding.float()[0]
        objective = objectives.clip_text(self.family.score_images, embedding, None, f"CLIP text '{ATTRIBUTE}'",
                                         VIEWS)
        self.scores = correlation.objective_scores(objective, self.latents, self.decode)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.family.decode(latents).clamp(0, 1)

    def fit_difference(self) -> torch.Tensor:
        latents, red = self.latents[:FIT], self.red[:FIT]
        return mean_difference(latents[red], latents[~red])

    @torch.inference_mode()
    def moved(self, direction: torch.Tensor, strength: float) -> tuple[float, float]:
        """The share of the held-out not-red pictures that read red once moved, and that keep KEPT."""
        held_out = [i for i in range(FIT, PICTURES) if not self.red[i]]
        after = oracle.read_batch(self.decode(apply_to_latent(self.latents[held_out], direction, strength)))
        red = sum(reading["colour"] == ATTRIBUTE for reading in after) / len(held_out)
        kept = sum(all(a[name] == self.readings[i][name] for name in KEPT)
                   for a, i in zip(after, held_out)) / len(held_out)
        return red, kept


def fidelity_figures() -> dict:
    run = EngineRun()
    start = time.perf_counter()
    fit = correlation.ridge_fit(run.latents[:FIT], run.scores[:FIT])
    seconds = time.perf_counter() - start
    difference = run.fit_difference()
    red, kept = run.moved(fit.direction, STRENGTH)
    # The anchor: the oracle-labelled mean difference itself, at strength 1 (from the not-red mean to the red mean).
    anchor_red, anchor_kept = run.moved(difference, 1.0)
    return {
        "analysis_correlation_recovers_color": cosine(fit.direction, difference),
        "analysis_correlation_moves_color": red,
        "analysis_correlation_moves_color_keep_rate": kept,
        "analysis_correlation_moves_color_strength": STRENGTH,
        "analysis_correlation_mean_difference_moves_color": anchor_red,
        "analysis_correlation_mean_difference_keep_rate": anchor_kept,
        "analysis_correlation_score_label_correlation": float(correlation.pearson(run.red[:FIT, None].double(),
                                                                                  run.scores[:FIT])[0]),
        "analysis_correlation_r2": fit.r2,
        "analysis_correlation_loo_r2": fit.loo_r2,
        "analysis_correlation_fit_seconds": seconds,
    }


def ridge_sweep() -> list[dict]:
    """Cosine with the mean difference, leave-one-out R² and the moves at STRENGTH for each ridge factor."""
    run = EngineRun()
    difference = run.fit_difference()
    rows = []
    for ridge in SWEEP_RIDGES:
        fit = correlation.ridge_fit(run.latents[:FIT], run.scores[:FIT], ridge)
        red, kept = run.moved(fit.direction, STRENGTH)
        rows.append({"ridge": ridge, "cosine": cosine(fit.direction, difference), "loo_r2": fit.loo_r2,
                     "red": red, "kept": kept})
        progress(json.dumps(rows[-1]))
    return rows


def correlation_prompt(captions: list[str], seeds: list[int]) -> tuple[dict, str]:
    """One KSampler per caption (euler, karras), joined by Latent Batch, scored by CLIP text 'red' and fitted; the
    prompt and the id of the node that outputs the whole batch."""
    from comfy_fidelity import ksampler, shared_nodes, text

    prompt = {**shared_nodes(),
              "oc": {"class_type": "LSC_OpenCLIPLoader",
                     "inputs": {"architecture": models.CLIP_NAME, "weights": "reference (shipped with the pack)"}},
              "red": {"class_type": "LSC_ObjectiveCLIPText",
                      "inputs": {"open_clip": ["oc", 0], "positive": ATTRIBUTE, "negative": "", "views": VIEWS}}}
    previous = None
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        prompt[f"text{i}"] = text(caption)
        prompt[f"sample{i}"] = ksampler([f"text{i}", 0], seed)
        if previous is not None:
            prompt[f"join{i}"] = {"class_type": "LatentBatch",
                                  "inputs": {"samples1": [previous, 0], "samples2": [f"sample{i}", 0]}}
        previous = f"sample{i}" if previous is None else f"join{i}"
    prompt["correlate"] = {"class_type": "LSC_AttributeCorrelation", "inputs": {
        "latent": [previous, 0], "scores": "", "components": 8, "decode_scale": 1.0, "objective": ["red", 0],
        "vae": ["loader", 2]}}
    prompt["pictures"] = {"class_type": "VAEDecode", "inputs": {"samples": [previous, 0], "vae": ["loader", 2]}}
    return prompt, previous


def comfy_figures(comfy) -> dict:
    from comfy_fidelity import captured_values

    captions, seeds = evaluation_set(COMFY_PICTURES)
    prompt, batch = correlation_prompt(captions, seeds)
    start = time.perf_counter()
    captured = captured_values(comfy, prompt, {"batch": [batch, 0], "direction": ["correlate", 0],
                                               "pictures": ["pictures", 0]})
    seconds = time.perf_counter() - start
    latents = captured["batch"]["samples"]
    red = is_red(oracle.read_batch(captured["pictures"].movedim(-1, 1)))
    direction = captured["direction"].vectors["latent"]
    return {"comfy_analysis_correlation_recovers_color": cosine(direction, mean_difference(latents[red],
                                                                                            latents[~red])),
            "comfy_analysis_correlation_red_pictures": int(red.sum()),
            "comfy_analysis_correlation_seconds": seconds}


def perf_figures() -> dict:
    """The dual fit against the primal normal equations (XᵀX + λI) w = Xᵀy, each timed on the same batch of 64:
    at 4×32×32 (D = 4096), where the primal D×D system still fits, and the dual alone at SD1.5's 4×64×64
    (D = 16384: the primal system would be 2 GiB in float64)."""
    generator = torch.Generator().manual_seed(0)
    figures = {}
    for side, suffix in ((32, "_4096"), (64, "_sd15")):
        latents = torch.randn(64, 4, side, side, generator=generator)
        scores = torch.randn(64, generator=generator)
        dual = min(_timed(lambda: correlation.ridge_fit(latents, scores)) for _ in range(3))
        figures[f"analysis_correlation_dual_seconds{suffix}"] = dual
        if side == 32:
            fit = correlation.ridge_fit(latents, scores)
            rows = latents.double().flatten(1)
            x, y = rows - rows.mean(0), scores.double() - scores.double().mean()

            def primal():
                return torch.linalg.solve(x.T @ x + fit.ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)

            figures["analysis_correlation_primal_seconds_4096"] = min(_timed(primal) for _ in range(3))
            figures["analysis_correlation_primal_over_dual_4096"] = figures[
                "analysis_correlation_primal_seconds_4096"] / dual
            weights = primal()
            figures["analysis_correlation_primal_dual_cosine_4096"] = cosine(weights, fit.direction)
    return figures


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfy", action="store_true")
    parser.add_argument("--perf", action="store_true")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    if args.sweep:
        print(json.dumps(ridge_sweep()))
    elif args.comfy:
        from comfy_fidelity import start_comfyui

        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(comfy_figures(start_comfyui(Path(work)))))
    elif args.perf:
        print(json.dumps(perf_figures()))
    else:
        print(json.dumps(fidelity_figures()))


if __name__ == "__main__":
    main()
