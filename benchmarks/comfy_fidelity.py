"""How faithfully the controls work through ComfyUI's own executor, samplers and patch points, on the reference
family loaded by the pack's Reference Model Loader, judged by the pixel oracle and compared with the engine.

COMFYUI_PATH=/path/to/ComfyUI python benchmarks/comfy_fidelity.py [--json]
    [--only tour|text_to_image|directions|style|optimize|steer|guidance|sega|analysis_scan|
    analysis_correlation|analysis_retrieval]

Runs in the Python that runs that ComfyUI, with the engine's libraries (diffusers, open_clip) installed beside it.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from _bootstrap import load_pack, report
from _analysis_correlation_bench import comfy_figures as comfy_analysis_correlation_figures
from _analysis_retrieval_bench import comfy_figures as comfy_analysis_retrieval_figures
from _analysis_scan_bench import comfy_figures as comfy_analysis_scan_figures
from _guidance_bench import comfy_guidance_figures
from _optimize_fidelity import EDIT, KEEP_WEIGHT, OPTIMISE_SEED, PICTURES, TARGET, THRESHOLD, VIEWS, edit_scenes
from _steer_fidelity import (CLIP_LAYERS, CLIP_NEGATIVE, CLIP_PICTURES, CLIP_POSITIONS, CLIP_POSITIVE,
                             CLIP_STRENGTH, KEPT, STEER_SEED, clip_scenes)
from _sega_bench import comfy_sega_figures
from _style_fidelity import CUTOFFS, KEY_NAMES, STYLE_SEED, pair_seeds, prompt_pairs

load_pack()
from latent_space_control.core.directions import Direction, save_direction  # noqa: E402
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

EVALUATION_SEED = 20261202  # fresh captions and seeds, apart from every test's and from fidelity.py's
CAPTIONS = 256
PER_PROMPT = 32  # text-to-image branches per executed prompt
STEPS, CFG = 20, 4.0
DIRECTION_SEED = 20262001  # captions and seeds of the direction part, apart from EVALUATION_SEED's 256
DIRECTION_CAPTIONS = 128
DIRECTION_STRENGTH = 1.0
RANDOM_DIRECTION_FILE = "comfy_fidelity_random.safetensors"
# Per caption: no direction, the prompt-made red→blue direction, a random direction of the same size.
VARIANTS = ("plain", "text", "random")
PARTS = ("tour", "text_to_image", "directions", "style", "optimize", "steer", "guidance", "sega", "analysis_scan",
         "analysis_correlation", "analysis_retrieval")
# The first of _style_fidelity's pairs, each sampled as one batch from its seed (the first picture's noise is the
# engine's for that pair): a batch costs less per picture than single pictures, and each variant has 16 pictures.
STYLE_PAIRS, PAIR_BATCH = 4, 4
ALIGN_PROMPT = "a large circle in the middle, white background"  # no colour: each picture picks its own
ALIGN_BATCH, ALIGN_SEEDS = 8, 8
ALIGN_STRENGTHS = {"": 1.0, "_strong": 10.0}  # key suffix: StyleAlign's strength (1: StyleAligned's own)


def start_comfyui(work: Path):
    """ComfyUI in this process with the pack loaded by its own custom-node loader (the tests' harness)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "comfy"))
    from comfy_harness import ComfyUI, comfyui_root

    return ComfyUI(comfyui_root(), work)


def shared_nodes() -> dict:
    """The reference loader, the empty negative prompt and the empty latent every branch samples from."""
    return {
        "loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
        "empty": {"class_type": "LSC_EmptyLatentForVAE",
                  "inputs": {"vae": ["loader", 2], "width": world.SIZE, "height": world.SIZE, "batch_size": 1}},
    }


def ksampler(positive: list, seed: int, model: tuple[str, int] = ("loader", 0), latent: str = "empty") -> dict:
    """KSampler at the family's settings (euler, karras, STEPS, CFG) against the shared empty negative."""
    return {"class_type": "KSampler", "inputs": {
        "model": list(model), "positive": positive, "negative": ["negative", 0], "latent_image": [latent, 0],
        "seed": seed, "steps": STEPS, "cfg": CFG, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}}


def sampled_branch(key: str, positive: list, seed: int, model: tuple[str, int] = ("loader", 0),
                   latent: str = "empty") -> dict:
    """KSampler (euler, karras) -> VAEDecode from a positive conditioning, the picture captured under ``key``."""
    return {
        f"sample_{key}": ksampler(positive, seed, model, latent),
        f"decode_{key}": {"class_type": "VAEDecode", "inputs": {"samples": [f"sample_{key}", 0], "vae": ["loader", 2]}},
        f"capture_{key}": {"class_type": "LSCTest_Capture", "inputs": {"value": [f"decode_{key}", 0], "label": key}},
    }


def text_to_image_prompt(captions: list[str], seeds: list[int]) -> dict:
    """One API prompt: per caption CLIPTextEncode -> KSampler -> VAEDecode, captured under the caption's index."""
    prompt = shared_nodes()
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        prompt[f"text{i}"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": caption}}
        prompt.update(sampled_branch(str(i), [f"text{i}", 0], seed))
    return prompt


def comfy_pictures(comfy, captions: list[str], seeds: list[int]) -> torch.Tensor:
    pictures = []
    for start in range(0, len(captions), PER_PROMPT):
        chunk = captions[start:start + PER_PROMPT]
        result = comfy.run(text_to_image_prompt(chunk, seeds[start:start + PER_PROMPT]))
        if not result.ok:
            raise RuntimeError(f"ComfyUI failed: {result.error}")
        pictures += [result.captured[str(i)] for i in range(len(chunk))]
    return torch.cat(pictures).movedim(-1, 1)


@torch.inference_mode()
def engine_pictures(captions: list[str], seeds: list[int]) -> torch.Tensor:
    """The same captions, seeds and settings through the engine (diffusers, open_clip)."""
    family = models.load()
    noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in seeds])
    latents = family.sample_latents(family.encode_text(captions).hidden_states, noise, STEPS, CFG)
    return family.decode(latents).clamp(0, 1)


def text_to_image_figures(comfy) -> dict:
    scenes = world.scenes(CAPTIONS, seed=EVALUATION_SEED, held_out=False)
    captions = [scene.caption() for scene in scenes]
    seeds = [EVALUATION_SEED + i for i in range(CAPTIONS)]
    ours = oracle.read_batch(comfy_pictures(comfy, captions, seeds))
    engine = oracle.read_batch(engine_pictures(captions, seeds))
    accuracy = oracle.accuracy(ours, [scene.attributes() for scene in scenes])
    return {
        "comfy_ref_t2i_color_accuracy": accuracy["colour"],
        "comfy_ref_t2i_shape_accuracy": accuracy["shape"],
        **{f"comfy_ref_t2i_{name}_accuracy": accuracy[name] for name in ("size", "position", "background")},
        # Same caption, seed and settings: do ComfyUI's picture and the engine's read the same on every attribute?
        "comfy_engine_agreement": sum(a == b for a, b in zip(ours, engine)) / len(ours),
    }


def tour_figures(comfy) -> dict:
    """The shipped no-download tour, as a user queues it: the first run loads the reference model too."""
    from ui_to_api import ui_to_api

    workflow = json.loads((Path(__file__).resolve().parents[1] / "workflows" / "lsc_reference_tour.json").read_text())
    start = time.perf_counter()
    result = comfy.run(ui_to_api(workflow, comfy.node_class))
    seconds = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"the tour failed in ComfyUI: {result.error}")
    return {"comfy_ref_tour_seconds": seconds}


def direction_from_clip() -> dict:
    """Direction from CLIP as a user sets it up for the slider: blue minus red, built-in templates, both spaces."""
    return {"class_type": "LSC_DirectionFromCLIP", "inputs": {
        "clip": ["loader", 1], "positive": "blue", "negative": "red", "templates": "built-in",
        "custom_templates": "a {} thing", "space": "both", "normalise": "none"}}


def save_random_direction(like) -> None:
    """A random direction with ``like``'s spaces, shapes and per-space Frobenius norms, saved where Load Direction
    looks for RANDOM_DIRECTION_FILE. (A file, not an object: ComfyUI loads the pack under another module name, so its
    Direction class is not this process's.)"""
    from latent_space_control.nodes import model_folders

    model_folders.register_folders()
    folder = Path(model_folders.folder_paths.get_folder_paths(model_folders.DIRECTIONS_FOLDER)[0])
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    vectors = {}
    for space, vector in like.vectors.items():
        noise = torch.randn(vector.shape, generator=generator)
        vectors[space] = noise * (vector.float().norm() / noise.norm())
    save_direction(folder / RANDOM_DIRECTION_FILE, Direction(vectors, family=like.family, encoder=like.encoder,
                                                             provenance={"method": "random, norms of blue - red"}))


def direction_prompt(captions: list[str], seeds: list[int]) -> dict:
    """One API prompt: per caption CLIPTextEncode, sampled as it is, moved by Apply Direction along the prompt-made
    direction, and along the random one loaded from its file; captured as "<variant><index>"."""
    prompt = {**shared_nodes(), "text_direction": direction_from_clip(),
              "random_direction": {"class_type": "LSC_LoadDirection", "inputs": {"file": RANDOM_DIRECTION_FILE}}}
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        prompt[f"caption{i}"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": caption}}
        prompt.update(sampled_branch(f"plain{i}", [f"caption{i}", 0], seed))
        for variant in ("text", "random"):
            prompt[f"apply_{variant}{i}"] = {"class_type": "LSC_ApplyDirection", "inputs": {
                "direction": [f"{variant}_direction", 0], "strength": DIRECTION_STRENGTH, "tokens": "all_tokens",
                "auto_scale": False, "conditioning": [f"caption{i}", 0]}}
            prompt.update(sampled_branch(f"{variant}{i}", [f"apply_{variant}{i}", 0], seed))
    return prompt


def variant_pictures(comfy, build: Callable[[list[str], list[int]], dict], variants: tuple[str, ...],
                     captions: list[str], seeds: list[int]) -> dict[str, torch.Tensor]:
    """Every variant's pictures, [captions, 3, H, W] each, from prompts ``build(captions, seeds)`` that capture
    "<variant><index>", as many captions per prompt as PER_PROMPT branches allow."""
    pictures = {variant: [] for variant in variants}
    per_prompt = PER_PROMPT // len(variants)
    for start in range(0, len(captions), per_prompt):
        chunk = captions[start:start + per_prompt]
        result = comfy.run(build(chunk, seeds[start:start + per_prompt]))
        if not result.ok:
            raise RuntimeError(f"ComfyUI failed: {result.error}")
        for variant in variants:
            pictures[variant] += [result.captured[f"{variant}{i}"] for i in range(len(chunk))]
    return {variant: torch.cat(batch).movedim(-1, 1) for variant, batch in pictures.items()}


def direction_readings(comfy, captions: list[str], seeds: list[int]) -> dict[str, list[dict[str, str]]]:
    """The oracle's readings of every variant's pictures; first the prompt-made direction is made once on its own,
    to give the random direction its shapes and norms."""
    made = comfy.run({"loader": shared_nodes()["loader"], "text_direction": direction_from_clip(),
                      "capture": {"class_type": "LSCTest_Capture", "inputs": {"value": ["text_direction", 0],
                                                                              "label": "direction"}}})
    if not made.ok:
        raise RuntimeError(f"Direction from CLIP failed in ComfyUI: {made.error}")
    save_random_direction(made.captured["direction"])
    pictures = variant_pictures(comfy, direction_prompt, VARIANTS, captions, seeds)
    return {variant: oracle.read_batch(batch) for variant, batch in pictures.items()}


def direction_scenes(count: int) -> list[world.Scene]:
    """Red-shape scenes (red is no held-out pair's colour) with every other attribute drawn at random."""
    return [replace(scene, colour="red") for scene in world.scenes(count, seed=DIRECTION_SEED, held_out=False)]


def direction_figures(comfy) -> dict:
    """The red→blue slider through the nodes a user wires: Direction from CLIP -> Apply Direction on fresh captions
    of red shapes -> KSampler. Does it turn them blue, keeping shape, size, position and background as the same
    caption and seed draw them without it, and does a random direction of the same size not?"""
    start = time.perf_counter()
    captions = [scene.caption() for scene in direction_scenes(DIRECTION_CAPTIONS)]
    seeds = [DIRECTION_SEED + i for i in range(DIRECTION_CAPTIONS)]
    readings = direction_readings(comfy, captions, seeds)
    kept = [all(moved[name] == plain[name] for name in ("shape", "size", "position", "background"))
            for moved, plain in zip(readings["text"], readings["plain"])]
    return {
        "comfy_dir_text_flip_rate": sum(r["colour"] == "blue" for r in readings["text"]) / DIRECTION_CAPTIONS,
        "comfy_dir_text_keep_rate": sum(kept) / DIRECTION_CAPTIONS,
        "comfy_dir_random_flip_rate": sum(r["colour"] == "blue" for r in readings["random"]) / DIRECTION_CAPTIONS,
        "comfy_dir_seconds": time.perf_counter() - start,
    }


def text(prompt: str) -> dict:
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": prompt}}


def captured_pictures(comfy, prompt: dict, keys: list[str]) -> dict[str, torch.Tensor]:
    """Run ``prompt``; the pictures captured under ``keys``, [B, 3, H, W] each."""
    result = comfy.run(prompt)
    if not result.ok:
        raise RuntimeError(f"ComfyUI failed: {result.error}")
    return {key: result.captured[key].movedim(-1, 1) for key in keys}



def captured_values(comfy, nodes: dict, slots: dict[str, list]) -> dict:
    """Run ``nodes`` with each slot (label -> [node id, output index]) captured; the values by label."""
    prompt = {**nodes, **{f"capture_{label}": {"class_type": "LSCTest_Capture",
                                               "inputs": {"value": source, "label": label}}
                          for label, source in slots.items()}}
    result = comfy.run(prompt)
    if not result.ok:
        raise RuntimeError(f"ComfyUI failed: {result.error}")
    return result.captured

def pair_readings(comfy, pairs, seeds, variants: dict[str, Callable]) -> dict[str, list[dict[str, str]]]:
    """The oracle's readings of every variant, PAIR_BATCH pictures a pair, pair by pair. ``variants[name](i)`` gives
    the nodes of pair ``i``'s branch, the positive conditioning and the model it samples with; the pair's prompts
    are nodes a{i} and b{i}. As many pairs share an executed prompt as keep it near PER_PROMPT branches."""
    readings = {name: [] for name in variants}
    per_prompt = max(1, PER_PROMPT // len(variants))
    for start in range(0, len(pairs), per_prompt):
        indices = range(start, min(start + per_prompt, len(pairs)))
        prompt = {**shared_nodes(), "pair_batch": {"class_type": "LSC_EmptyLatentForVAE", "inputs": {
            "vae": ["loader", 2], "width": world.SIZE, "height": world.SIZE, "batch_size": PAIR_BATCH}}}
        for i in indices:
            a, b = pairs[i]
            prompt.update({f"a{i}": text(a.caption()), f"b{i}": text(b.caption())})
            for name, branch in variants.items():
                nodes, positive, model = branch(i)
                prompt.update({**nodes, **sampled_branch(f"{name}_{i}", positive, seeds[i], model, "pair_batch")})
        pictures = captured_pictures(comfy, prompt, [f"{name}_{i}" for name in variants for i in indices])
        for name in variants:
            readings[name] += oracle.read_batch(torch.cat([pictures[f"{name}_{i}"] for i in indices]))
    return readings


def each_picture(scenes: list[world.Scene]) -> list[world.Scene]:
    """One scene per picture of pair_readings: each pair's PAIR_BATCH times."""
    return [scene for scene in scenes for _ in range(PAIR_BATCH)]


def _follow_rate(readings, scenes, attribute: str) -> float:
    return sum(r[attribute] == getattr(s, attribute) for r, s in zip(readings, scenes)) / len(scenes)


def style_mix_figures(comfy, pairs, seeds) -> dict:
    """Style Mix by Timestep -> KSampler over the engine's cutoffs and the documented one (DEFAULT_CUTOFF): the
    rate at which each attribute follows the structure prompt A and the style prompt B."""
    from latent_space_control.nodes.style import DEFAULT_CUTOFF

    cutoffs = list(CUTOFFS) + ([] if DEFAULT_CUTOFF in CUTOFFS else [DEFAULT_CUTOFF])

    def mixed(k):
        def branch(i):
            node = {"class_type": "LSC_StyleMix", "inputs": {"structure": [f"a{i}", 0], "style": [f"b{i}", 0],
                                                             "cutoff": cutoffs[k], "window": 0.0}}
            return {f"mix{k}_{i}": node}, [f"mix{k}_{i}", 0], ("loader", 0)
        return branch

    readings = pair_readings(comfy, pairs, seeds, {f"cut{k}": mixed(k) for k in range(len(cutoffs))})
    by_cutoff = dict(zip(cutoffs, readings.values()))
    a_scenes, b_scenes = each_picture([a for a, _ in pairs]), each_picture([b for _, b in pairs])
    figures = {"comfy_style_cutoffs": list(CUTOFFS), "comfy_style_cutoff": DEFAULT_CUTOFF}
    for attribute, key in KEY_NAMES.items():
        for source, scenes in (("a", a_scenes), ("b", b_scenes)):
            figures[f"comfy_style_curve_{key}_follows_{source}"] = [
                _follow_rate(by_cutoff[cutoff], scenes, attribute) for cutoff in CUTOFFS]
    documented = by_cutoff[DEFAULT_CUTOFF]
    figures.update({
        "comfy_style_structure_follows_a": _follow_rate(documented, a_scenes, "shape"),
        "comfy_style_layout_follows_a": _follow_rate(documented, a_scenes, "position"),
        "comfy_style_color_follows_b": _follow_rate(documented, b_scenes, "colour"),
    })
    return figures


def style_block_figures(comfy, pairs, seeds) -> dict:
    """Style Mix by Block with B's prompt in each single attention block of the reference UNet, and in each preset,
    while the sampler's prompt is A: the rate at which colour, shape and position follow B (unpatched, A alone:
    comfy_style_curve_*_follows_b at cutoff 1)."""
    from latent_space_control.nodes.unet_blocks import PRESETS, attention_blocks

    loaded = comfy.run({"loader": shared_nodes()["loader"],
                        "capture": {"class_type": "LSCTest_Capture", "inputs": {"value": ["loader", 0],
                                                                                "label": "model"}}})
    if not loaded.ok:
        raise RuntimeError(f"the Reference Model Loader failed in ComfyUI: {loaded.error}")
    names = [block.name for block in attention_blocks(loaded.captured["model"].get_model_object("diffusion_model"))]
    settings = {f"block_{name}": ("custom", name) for name in names}
    settings.update({f"preset_{preset}": (preset, "") for preset in PRESETS})

    def patched(variant):
        blocks, block_weights = settings[variant]

        def branch(i):
            node = {"class_type": "LSC_StyleMixBlocks", "inputs": {
                "model": ["loader", 0], "style": [f"b{i}", 0], "blocks": blocks, "weight": 1.0,
                "block_weights": block_weights, "start_percent": 0.0, "end_percent": 1.0}}
            return {f"patch_{variant}_{i}": node}, [f"a{i}", 0], (f"patch_{variant}_{i}", 0)
        return branch

    readings = pair_readings(comfy, pairs, seeds, {variant: patched(variant) for variant in settings})
    b_scenes = each_picture([b for _, b in pairs])
    return {f"comfy_style_{variant}_{KEY_NAMES[attribute]}_follows_b": _follow_rate(readings[variant], b_scenes,
                                                                                    attribute)
            for variant in settings for attribute in ("colour", "shape", "position")}


def style_align_figures(comfy) -> dict:
    """Style Align Batch on batches of ALIGN_BATCH from a prompt that names no colour, one batch a seed: the share of
    pictures 2..N whose colour is the first picture's, aligned at each of ALIGN_STRENGTHS and unaligned; how often
    the first picture reads as it does unaligned (shared attention should leave it as it is), and how often
    pictures 2..N read otherwise than unaligned in any attribute (whether the patch changes what is drawn at all)."""
    prompt = {**shared_nodes(), "prompt": text(ALIGN_PROMPT),
              "batch": {"class_type": "LSC_EmptyLatentForVAE", "inputs": {
                  "vae": ["loader", 2], "width": world.SIZE, "height": world.SIZE, "batch_size": ALIGN_BATCH}}}
    models_by_variant = {"unaligned": ("loader", 0)}
    for suffix, strength in ALIGN_STRENGTHS.items():
        prompt[f"align{suffix}"] = {"class_type": "LSC_StyleAlign", "inputs": {
            "model": ["loader", 0], "normalise": True, "start_percent": 0.0, "end_percent": 1.0,
            "strength": strength}}
        models_by_variant[suffix] = (f"align{suffix}", 0)
    seeds = [STYLE_SEED + 1000 + i for i in range(ALIGN_SEEDS)]
    for variant, model in models_by_variant.items():
        for seed in seeds:
            prompt.update(sampled_branch(f"align{variant}_{seed}", ["prompt", 0], seed, model, latent="batch"))
    pictures = captured_pictures(comfy, prompt, [f"align{variant}_{seed}" for variant in models_by_variant
                                                 for seed in seeds])
    batches = {variant: [oracle.read_batch(pictures[f"align{variant}_{seed}"]) for seed in seeds]
               for variant in models_by_variant}

    def consistency(variant):
        return sum(item["colour"] == batch[0]["colour"] for batch in batches[variant]
                   for item in batch[1:]) / (len(seeds) * (ALIGN_BATCH - 1))

    figures = {"style_align_consistency_unaligned": consistency("unaligned")}
    for suffix, strength in ALIGN_STRENGTHS.items():
        figures.update({
            f"style_align{suffix}_strength": strength,
            f"style_align_consistency{suffix}": consistency(suffix),
            f"style_align{suffix}_first_unchanged": sum(
                aligned[0] == plain[0] for aligned, plain in zip(batches[suffix], batches["unaligned"])) / len(seeds),
            f"style_align{suffix}_others_changed": sum(
                a != p for aligned, plain in zip(batches[suffix], batches["unaligned"])
                for a, p in zip(aligned[1:], plain[1:])) / (len(seeds) * (ALIGN_BATCH - 1)),
        })
    return figures


def style_figures(comfy) -> dict:
    """The style nodes on the engine's pairs (_style_fidelity: A and B differ in shape, colour, position and size)."""
    start = time.perf_counter()
    pairs, seeds = prompt_pairs(STYLE_PAIRS, STYLE_SEED), pair_seeds(STYLE_PAIRS)
    figures = {**style_mix_figures(comfy, pairs, seeds), **style_block_figures(comfy, pairs, seeds),
               **style_align_figures(comfy)}
    figures["comfy_style_seconds"] = time.perf_counter() - start
    return figures


def optimize_prompt(comfy, scenes: list[world.Scene]) -> dict:
    """The engine's "make it green" edit through the nodes: the pictures as files, LoadImage -> ImageBatch ->
    VAEEncode -> Latent Optimize (its defaults) with Objective: CLIP Text + Keep Reference, and the constraint form
    (Keep Reference subject to CLIP similarity at least the threshold) beside it."""
    from PIL import Image

    prompt = {"loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
              "open_clip": {"class_type": "LSC_OpenCLIPLoader", "inputs": {
                  "architecture": models.CLIP_NAME, "weights": "reference (shipped with the pack)"}}}
    for i, scene in enumerate(scenes):
        name = f"lsc_optimize_{i}.png"
        Image.fromarray((world.render(scene).movedim(0, -1) * 255).round().to(torch.uint8).numpy()).save(
            comfy.input_dir / name)
        prompt[f"load{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        if i:
            prompt[f"batch{i}"] = {"class_type": "ImageBatch", "inputs": {
                "image1": [f"batch{i - 1}" if i > 1 else "load0", 0], "image2": [f"load{i}", 0]}}
    last = [f"batch{len(scenes) - 1}" if len(scenes) > 1 else "load0", 0]
    settings = {"steps": EDIT["steps"], "learning_rate": EDIT["learning_rate"], "optimiser": "adam",
                "regulariser": "distance_to_start", "regulariser_weight": 0.0, "gradient_penalty": 0.0,
                "decode_scale": 1.0, "early_stop": 0.0, "smoothing": EDIT["smoothing"]}
    prompt.update({
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": last, "vae": ["loader", 2]}},
        "clip": {"class_type": "LSC_ObjectiveCLIPText", "inputs": {
            "open_clip": ["open_clip", 0], "positive": TARGET, "negative": "", "views": VIEWS}},
        "keep": {"class_type": "LSC_ObjectiveReference", "inputs": {"space": "image"}},
        "weighted": {"class_type": "LSC_ObjectiveCombine", "inputs": {
            "objective_a": ["clip", 0], "weight_a": 1.0, "objective_b": ["keep", 0], "weight_b": KEEP_WEIGHT}},
        "condition": {"class_type": "LSC_ObjectiveConstraint", "inputs": {"objective": ["clip", 0],
                                                                          "threshold": THRESHOLD}},
        "constrained": {"class_type": "LSC_ObjectiveCombine", "inputs": {
            "objective_a": ["keep", 0], "weight_a": 1.0, "objective_b": ["condition", 0], "weight_b": 1.0}},
    })
    for key, objective in (("edit", "weighted"), ("constraint", "constrained")):
        prompt[f"optimise_{key}"] = {"class_type": "LSC_LatentOptimize", "inputs": {
            "latent": ["encode", 0], "vae": ["loader", 2], "objective": [objective, 0], **settings}}
        prompt[f"decode_{key}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"optimise_{key}", 0],
                                                                         "vae": ["loader", 2]}}
        prompt[f"capture_{key}"] = {"class_type": "LSCTest_Capture", "inputs": {"value": [f"decode_{key}", 0],
                                                                                "label": key}}
    prompt["decode_start"] = {"class_type": "VAEDecode", "inputs": {"samples": ["encode", 0], "vae": ["loader", 2]}}
    prompt["capture_start"] = {"class_type": "LSCTest_Capture", "inputs": {"value": ["decode_start", 0],
                                                                           "label": "start"}}
    return prompt


def optimize_figures(comfy) -> dict:
    """The share of pictures the node turns green (and keeps), and how often the constraint form's report says its
    constraint holds, read from the same pictures as benchmarks/fidelity.py's opt_* figures."""
    start = time.perf_counter()
    scenes = edit_scenes(PICTURES, OPTIMISE_SEED)
    result = comfy.run(optimize_prompt(comfy, scenes))
    if not result.ok:
        raise RuntimeError(f"ComfyUI failed: {result.error}")
    readings = {key: oracle.read_batch(result.captured[key].movedim(-1, 1)) for key in ("start", "edit", "constraint")}
    kept = ("shape", "size", "position", "background")
    report_text = "".join(result.outputs["optimise_constraint"]["text"])
    held = int(report_text.split("constraints hold for ")[1].split(" of ")[0])
    return {
        "comfy_opt_clip_target_rate": sum(r["colour"] == TARGET for r in readings["edit"]) / len(scenes),
        "comfy_opt_keep_rate": sum(all(a[k] == b[k] for k in kept)
                                   for a, b in zip(readings["edit"], readings["start"])) / len(scenes),
        "comfy_opt_constraint_success": held / len(scenes),
        "comfy_opt_constraint_target_rate": sum(r["colour"] == TARGET for r in readings["constraint"]) / len(scenes),
        "comfy_opt_seconds": time.perf_counter() - start,
    }


def steer_prompt(captions: list[str], seeds: list[int]) -> dict:
    """One API prompt: Steer Vector from Prompts (red vs blue) -> Text Steer on the reference CLIP; per caption
    core CLIPTextEncode from the steered CLIP and from the plain one, each through KSampler, captured as
    "steered<i>" / "plain<i>"."""
    prompt = {**shared_nodes(),
              "vector": {"class_type": "LSC_SteerVectorFromPrompts", "inputs": {
                  "clip": ["loader", 1], "positive": CLIP_POSITIVE, "negative": CLIP_NEGATIVE,
                  "templates": "built-in", "custom_templates": "a {} thing", "encoder": "auto",
                  "layers": CLIP_LAYERS, "method": "mean_difference"}},
              "steer": {"class_type": "LSC_TextSteer", "inputs": {
                  "clip": ["loader", 1], "direction": ["vector", 0], "strength": CLIP_STRENGTH,
                  "layers": "", "token_positions": CLIP_POSITIONS}}}
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        for variant, clip in (("steered", ["steer", 0]), ("plain", ["loader", 1])):
            prompt[f"{variant}_text{i}"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": caption}}
            prompt.update(sampled_branch(f"{variant}{i}", [f"{variant}_text{i}", 0], seed))
    return prompt


def steer_figures(comfy) -> dict:
    """The text-encoder steer as a user wires it: Steer Vector from Prompts and Text Steer with the engine figure's
    settings, the steered CLIP feeding core CLIPTextEncode and KSampler. The engine figure's captions (every colour
    but red), each with its own seed: does the oracle read red, with shape, size, position and background as the
    caption says?"""
    start = time.perf_counter()
    scenes = clip_scenes(CLIP_PICTURES, STEER_SEED + 2)
    captions = [scene.caption() for scene in scenes]
    seeds = [STEER_SEED + i for i in range(len(scenes))]
    pictures = variant_pictures(comfy, steer_prompt, ("steered", "plain"), captions, seeds)
    readings = {variant: oracle.read_batch(batch) for variant, batch in pictures.items()}
    count = len(scenes)
    kept = [all(reading[name] == getattr(scene, name) for name in KEPT)
            for reading, scene in zip(readings["steered"], scenes)]
    return {
        "comfy_steer_clip_color_shift": sum(r["colour"] == "red" for r in readings["steered"]) / count,
        "comfy_steer_clip_color_shift_unsteered": sum(r["colour"] == "red" for r in readings["plain"]) / count,
        "comfy_steer_clip_keep_rate": sum(kept) / count,
        "comfy_steer_seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    parser.add_argument("--only", choices=PARTS, help="measure only this part (default: all of them)")
    args = parser.parse_args()
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("comfy_fidelity.py needs COMFYUI_PATH: the folder of a ComfyUI export whose requirements are "
                 "installed in this Python (see README, Tests)")
    with tempfile.TemporaryDirectory() as work:
        comfy = start_comfyui(Path(work))
        parts = {"tour": tour_figures, "text_to_image": text_to_image_figures, "directions": direction_figures,
                 "style": style_figures, "optimize": optimize_figures, "steer": steer_figures,
                 "guidance": comfy_guidance_figures, "sega": comfy_sega_figures,
                 "analysis_scan": comfy_analysis_scan_figures, "analysis_correlation": comfy_analysis_correlation_figures,
                 "analysis_retrieval": comfy_analysis_retrieval_figures}
        figures = {}
        for name in [args.only] if args.only else PARTS:
            figures.update(parts[name](comfy))
    report(figures, args.json)


if __name__ == "__main__":
    main()
