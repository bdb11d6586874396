"""How faithfully Latent Scan and Latent Stats (core/latent_stats.py, nodes/latent_analysis.py) show what a latent
space holds, on the reference world.

- Scan: the red − not-red mean-difference latent direction (Direction from Latents on VAE-encoded world pictures)
  scanned from −2 to +2 around latents sampled from captions of other colours; the oracle reads the pictures at the
  ends. Moves colour: the share that read red at +2 (none of the bases does); shape kept: the share whose shape is
  the base's there; reverse: the share that read red at −2 (a direction, not just noise: about 0).
  A global latent direction is one average offset for every position and shape, so it turns about 0.4 of the
  pictures red at +2 (measured: 0.33 at 1.5, 0.39 at 2, 0.39 at 3 with shapes breaking; yellow shapes stay yellow).
- Stats: the same sampled latents are not flagged, ×3 are flagged burnt, ×0.2 washed out (the thresholds were set on
  another seed's latents); VAE-encoded world pictures are not flagged either.
- Through ComfyUI (``comfy_figures``): the same captions and seeds through KSampler -> Latent Scan -> VAEDecode, and
  Latent Stats with the reference MODEL's latent format.

The scan node's path is Direction Sweep's (nodes/common.latent_with_direction), so no perf ratio is measured.
Part of benchmarks/fidelity.py (engine) and comfy_fidelity.py.
"""

import sys
import tempfile
import time
from pathlib import Path

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core import latent_stats  # noqa: E402
from latent_space_control.core.directions import (Direction, apply_to_latent, mean_difference,  # noqa: E402
                                                  save_direction)
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

SCAN_SEED = EVALUATION_SEED + 1300
DIRECTION_PICTURES = 64  # red pictures; three times as many of other colours
BASES = 64
STEPS, CFG = 20, 4.0  # the family's defaults, as KSampler runs them in comfy_fidelity.py
SCAN_END = 2.0  # the scan runs from −SCAN_END to +SCAN_END in three steps (−, 0, +)
BURNT, WASHED = 3.0, 0.2  # factors that make a healthy latent burnt / washed out
DIRECTION_FILE = "analysis_scan_red.safetensors"
PER_PROMPT = 32


def direction_scenes() -> tuple[list[world.Scene], list[world.Scene]]:
    drawn = world.scenes(20 * DIRECTION_PICTURES, SCAN_SEED, held_out=False)
    red = [scene for scene in drawn if scene.colour == "red"][:DIRECTION_PICTURES]
    other = [scene for scene in drawn if scene.colour != "red"][:3 * DIRECTION_PICTURES]
    assert len(red) == DIRECTION_PICTURES and len(other) == 3 * DIRECTION_PICTURES, "draw more scenes"
    return red, other


def base_scenes() -> list[world.Scene]:
    found = [scene for scene in world.scenes(10 * BASES, SCAN_SEED + 1, held_out=False) if scene.colour != "red"]
    return found[:BASES]


def base_seeds() -> list[int]:
    return [SCAN_SEED + 2 + i for i in range(BASES)]


@torch.inference_mode()
def red_direction(family: models.ReferenceWorld) -> torch.Tensor:
    red, other = direction_scenes()
    return mean_difference(family.encode(world.render_batch(red)), family.encode(world.render_batch(other)),
                           "red pictures", "other pictures")


def scan_rates(base: list[dict], low: list[dict], high: list[dict], prefix: str) -> dict:
    count = len(base)
    return {f"{prefix}_scan_direction_moves_color":
            sum(after["colour"] == "red" and before["colour"] != "red" for after, before in zip(high, base)) / count,
            f"{prefix}_scan_shape_kept_rate":
            sum(after["shape"] == before["shape"] for after, before in zip(high, base)) / count,
            f"{prefix}_scan_reverse_red_rate": sum(after["colour"] == "red" for after in low) / count,
            f"{prefix}_scan_base_red_rate": sum(before["colour"] == "red" for before in base) / count}


def flag_figures(flags: list[str], prefix: str) -> dict:
    """``flags`` for the healthy, the ×BURNT and the ×WASHED latents, in that order."""
    count = len(flags) // 3
    expected = ["ok"] * count + ["burnt"] * count + ["washed out"] * count
    return {f"{prefix}_stats_flag_accuracy": sum(a == b for a, b in zip(flags, expected)) / len(flags),
            f"{prefix}_stats_healthy_flagged_rate": sum(flag != "ok" for flag in flags[:count]) / count}


@torch.inference_mode()
def fidelity_figures() -> dict:
    start = time.perf_counter()
    family = models.load()
    direction = red_direction(family)
    scenes = base_scenes()
    noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in base_seeds()])
    base = family.sample_latents(family.encode_text([scene.caption() for scene in scenes]).hidden_states, noise,
                                 STEPS, CFG)
    print("analysis scan: sampled the bases", file=sys.stderr)
    readings = {strength: oracle.read_batch(family.decode(apply_to_latent(base, direction, strength)).clamp(0, 1))
                for strength in (-SCAN_END, 0.0, SCAN_END)}
    figures = scan_rates(readings[0.0], readings[-SCAN_END], readings[SCAN_END], "analysis")
    scale = lambda x: x * family.scaling_factor  # noqa: E731 (the family's process_in)
    flags = latent_stats.latent_statistics(torch.cat([base, base * BURNT, base * WASHED]), scale).flags
    figures.update(flag_figures(flags, "analysis"))
    encoded = family.encode(world.render_batch(scenes))
    figures["analysis_stats_encoded_flagged_rate"] = sum(
        flag != "ok" for flag in latent_stats.latent_statistics(encoded, scale).flags) / len(scenes)
    figures["analysis_scan_seconds"] = time.perf_counter() - start
    return figures


# ---- through ComfyUI --------------------------------------------------------------------------------------------

def save_red_direction(direction: torch.Tensor) -> None:
    """Saved where Load Direction looks (a file, not an object: ComfyUI loads the pack under another module name)."""
    from latent_space_control.nodes import model_folders

    model_folders.register_folders()
    folder = Path(model_folders.folder_paths.get_folder_paths(model_folders.DIRECTIONS_FOLDER)[0])
    save_direction(folder / DIRECTION_FILE, Direction({"latent": direction}, family="reference",
                                                      provenance={"method": "red - not red"}))


def scan_prompt(captions: list[str], seeds: list[int]) -> dict:
    """Per caption: KSampler (the family's settings) -> Latent Scan along the loaded direction (−, 0, +) ->
    VAEDecode; the pictures captured as "scan<i>", the sampled latents as "latent<i>"."""
    from comfy_fidelity import ksampler, shared_nodes, text

    nodes = {**shared_nodes(), "direction": {"class_type": "LSC_LoadDirection", "inputs": {"file": DIRECTION_FILE}}}
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        nodes[f"text{i}"] = text(caption)
        nodes[f"sample{i}"] = ksampler([f"text{i}", 0], seed)
        nodes[f"scan{i}"] = {"class_type": "LSC_LatentScan", "inputs": {
            "latent": [f"sample{i}", 0], "mode": "direction", "channel": 0, "start": -SCAN_END, "end": SCAN_END,
            "steps": 3, "direction": ["direction", 0]}}
        nodes[f"decode{i}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"scan{i}", 0], "vae": ["loader", 2]}}
        nodes[f"capture_scan{i}"] = {"class_type": "LSCTest_Capture",
                                     "inputs": {"value": [f"decode{i}", 0], "label": f"scan{i}"}}
        nodes[f"capture_latent{i}"] = {"class_type": "LSCTest_Capture",
                                       "inputs": {"value": [f"sample{i}", 0], "label": f"latent{i}"}}
    return nodes


def comfy_figures(comfy) -> dict:
    start = time.perf_counter()
    save_red_direction(red_direction(models.load()))
    captions, seeds = [scene.caption() for scene in base_scenes()], base_seeds()
    pictures, latents, model = [], [], None
    for first in range(0, len(captions), PER_PROMPT):
        chunk = range(first, min(first + PER_PROMPT, len(captions)))
        nodes = scan_prompt([captions[i] for i in chunk], [seeds[i] for i in chunk])
        nodes["capture_model"] = {"class_type": "LSCTest_Capture", "inputs": {"value": ["loader", 0], "label": "model"}}
        result = comfy.run(nodes)
        if not result.ok:
            raise RuntimeError(f"ComfyUI failed: {result.error}")
        pictures += [result.captured[f"scan{i}"] for i in range(len(chunk))]
        latents += [result.captured[f"latent{i}"]["samples"] for i in range(len(chunk))]
        model = result.captured["model"]
    scanned = torch.stack(pictures).movedim(-1, 2)  # [bases, 3 offsets, 3, H, W]
    low, base, high = (oracle.read_batch(scanned[:, k]) for k in range(3))
    figures = scan_rates(base, low, high, "comfy_analysis")
    sampled = torch.cat(latents)
    stats_node = comfy.node_class("LSC_LatentStats")
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        out = stats_node.execute(latent={"samples": torch.cat([sampled, sampled * BURNT, sampled * WASHED])},
                                 model=model)
    figures.update(flag_figures(out.result[2].splitlines(), "comfy_analysis"))
    figures["comfy_analysis_scan_seconds"] = time.perf_counter() - start
    return figures


def main() -> None:
    import argparse
    import os

    from _bootstrap import report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("engine", "comfy"), help="measure only this part")
    args = parser.parse_args()
    figures = {}
    if args.only in (None, "engine"):
        figures.update(fidelity_figures())
    if args.only in (None, "comfy"):
        if not os.environ.get("COMFYUI_PATH"):
            sys.exit("the comfy part needs COMFYUI_PATH: the folder of a ComfyUI export")
        from comfy_fidelity import start_comfyui

        with tempfile.TemporaryDirectory() as work:
            figures.update(comfy_figures(start_comfyui(Path(work))))
    report(figures, True)


if __name__ == "__main__":
    main()
