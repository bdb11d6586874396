"""How faithfully the controls work through ComfyUI's own executor, samplers and patch points, on the reference
family loaded by the pack's Reference Model Loader, judged by the pixel oracle and compared with the engine.

COMFYUI_PATH=/path/to/ComfyUI python benchmarks/comfy_fidelity.py [--json]

Runs in the Python that runs that ComfyUI, with the engine's libraries (diffusers, open_clip) installed beside it.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from _bootstrap import load_pack, report

load_pack()
from latent_space_control.core.noise import seeded_noise  # noqa: E402
from latent_space_control.reference import models, oracle, world  # noqa: E402

EVALUATION_SEED = 20261202  # fresh captions and seeds, apart from every test's and from fidelity.py's
CAPTIONS = 256
PER_PROMPT = 32  # text-to-image branches per executed prompt
STEPS, CFG = 20, 4.0


def start_comfyui(work: Path):
    """ComfyUI in this process with the pack loaded by its own custom-node loader (the tests' harness)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "comfy"))
    from comfy_harness import ComfyUI, comfyui_root

    return ComfyUI(comfyui_root(), work)


def text_to_image_prompt(captions: list[str], seeds: list[int]) -> dict:
    """One API prompt: the reference loader, then per caption CLIPTextEncode -> KSampler (euler, karras) ->
    VAEDecode, captured under the caption's index."""
    prompt = {
        "loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
        "empty": {"class_type": "LSC_EmptyLatentForVAE",
                  "inputs": {"vae": ["loader", 2], "width": world.SIZE, "height": world.SIZE, "batch_size": 1}},
    }
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        prompt.update({
            f"text{i}": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": caption}},
            f"sample{i}": {"class_type": "KSampler", "inputs": {
                "model": ["loader", 0], "positive": [f"text{i}", 0], "negative": ["negative", 0],
                "latent_image": ["empty", 0], "seed": seed, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
                "scheduler": "karras", "denoise": 1.0}},
            f"decode{i}": {"class_type": "VAEDecode", "inputs": {"samples": [f"sample{i}", 0], "vae": ["loader", 2]}},
            f"capture{i}": {"class_type": "LSCTest_Capture", "inputs": {"value": [f"decode{i}", 0], "label": str(i)}},
        })
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    args = parser.parse_args()
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("comfy_fidelity.py needs COMFYUI_PATH: the folder of a ComfyUI export whose requirements are "
                 "installed in this Python (see README, Tests)")
    with tempfile.TemporaryDirectory() as work:
        comfy = start_comfyui(Path(work))
        figures = {**tour_figures(comfy), **text_to_image_figures(comfy)}
    report(figures, args.json)


if __name__ == "__main__":
    main()
