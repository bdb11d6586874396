"""How well retrieval (core/retrieval.py, Latent Nearest) finds what a query shows, and how well the reconstruction
score (core/reconstruction.py, Reconstruction Score) tells pictures of the world from pictures off it.

- Retrieval: a gallery of rendered pictures of many random scenes, and queries of other scenes (other seeds: other
  positions, sizes, backgrounds, offsets, brightness). The rate at which the nearest gallery picture shows the
  query's colour and shape: in the reference CLIP's space (``analysis_retrieval_top1``: what the picture shows) and,
  for comparison, in the reference VAE's latent space (``..._latent``: where its pixels are).
- Anomalies: the reference VAE's reconstruction error (mean squared, per picture) of world pictures against two kinds
  of off-world pictures: two shapes in one picture (two renders composed, one left, one right), and unseen hues (a
  render recoloured to a hue halfway between two of the world's six). AUROC: the chance that an off-world picture
  scores higher than a world picture (ties count half), per kind and pooled; ``..._clip``: the same for the CLIP
  distance between each picture and its reconstruction (Reconstruction Score with open_clip).
- Through ComfyUI (``comfy_figures``): Open CLIP Loader (reference) + Latent Nearest on the same gallery, one node
  per query; the reference loader's VAE + Reconstruction Score on the same pictures, its report read back.
- Cost (``perf_figures``): reconstruction and CLIP embedding in chunks against one picture at a time, timed side by
  side (engine; and the Reconstruction Score node on a batch against one node call per picture).
"""

import colorsys
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _bootstrap import EVALUATION_SEED, load_pack

load_pack()
from latent_space_control.core import reconstruction, retrieval  # noqa: E402
from latent_space_control.reference import models, world  # noqa: E402

ANALYSIS_SEED = EVALUATION_SEED + 1300
GALLERY, QUERIES = 1296, 256  # 1296 = 6 random scenes per distinct scene of the world, on average
COMFY_QUERIES = 64  # each a Latent Nearest node that embeds the whole gallery
ANOMALIES = 128  # world pictures, and pictures of each off-world kind
EMBED_CHUNK = 64
RECONSTRUCT_CHUNK = 16
# Off-world hues: halfway between the world's six (red 0°, yellow 60°, ... 300°), at their saturation and value.
OFF_HUES = (30, 90, 150, 210, 270, 330)
SATURATION, VALUE = 0.89, 0.9
PERF_PICTURES, PERF_REPEATS = 64, 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def auroc(off_world: torch.Tensor, in_world: torch.Tensor) -> float:
    """The chance that an off-world score exceeds an in-world one (ties count half): 1 separates them perfectly,
    0.5 is chance."""
    difference = off_world.double()[:, None] - in_world.double()[None, :]
    return float((difference > 0).double().mean() + 0.5 * (difference == 0).double().mean())


def _background(scene: world.Scene) -> torch.Tensor:
    return torch.tensor(world.BACKGROUNDS[scene.background])[:, None, None]


def two_shapes(count: int, seed: int) -> torch.Tensor:
    """Pictures [count, 3, 32, 32] with two shapes each: one scene's shape on the left, another's on the right, on the
    first one's background."""
    firsts, seconds = world.scenes(count, seed), world.scenes(count, seed + 1)
    pictures = []
    for a, b in zip(firsts, seconds):
        a = world.Scene(a.shape, a.colour, a.size, "left", a.background, a.dy, a.dx, a.brightness)
        b = world.Scene(b.shape, b.colour, b.size, "right", a.background, b.dy, b.dx, b.brightness)
        first, second, background = world.render(a), world.render(b), _background(a)
        nearer_second = (second - background).abs().sum(0) > (first - background).abs().sum(0)
        pictures.append(torch.where(nearer_second, second, first))
    return torch.stack(pictures)


def unseen_hues(count: int, seed: int) -> torch.Tensor:
    """Pictures [count, 3, 32, 32] of world scenes whose shape is recoloured to a hue the world does not have (each
    pixel keeps how much of it the shape covers)."""
    pictures = []
    for index, scene in enumerate(world.scenes(count, seed)):
        picture, background = world.render(scene), _background(scene)
        colour = torch.tensor(world.COLOURS[scene.colour])[:, None, None] * scene.brightness
        offset = colour - background
        coverage = ((picture - background) * offset).sum(0) / (offset * offset).sum(0)
        hue = OFF_HUES[index % len(OFF_HUES)] / 360
        new = torch.tensor(colorsys.hsv_to_rgb(hue, SATURATION, VALUE))[:, None, None] * scene.brightness
        pictures.append(background * (1 - coverage) + new * coverage)
    return torch.stack(pictures)


def retrieval_sets() -> tuple[list[world.Scene], list[world.Scene]]:
    return world.scenes(GALLERY, ANALYSIS_SEED), world.scenes(QUERIES, ANALYSIS_SEED + 1)


def anomaly_sets() -> dict[str, torch.Tensor]:
    return {"world": world.render_batch(world.scenes(ANOMALIES, ANALYSIS_SEED + 2)),
            "two_shapes": two_shapes(ANOMALIES, ANALYSIS_SEED + 3),
            "unseen_hues": unseen_hues(ANOMALIES, ANALYSIS_SEED + 5)}


def share_rate(nearest_indices: list[int], gallery: list[world.Scene], queries: list[world.Scene]) -> float:
    """The share of queries whose nearest gallery scene has the query's colour and shape."""
    hits = [(gallery[j].colour, gallery[j].shape) == (query.colour, query.shape)
            for query, j in zip(queries, nearest_indices)]
    return sum(hits) / len(hits)


def _nearest_each(query_rows: torch.Tensor, gallery_rows: torch.Tensor, metric: str) -> list[int]:
    return [int(retrieval.nearest(query_rows[i:i + 1], gallery_rows, metric, 1).order[0])
            for i in range(query_rows.shape[0])]


def anomaly_figures(errors: dict[str, torch.Tensor], prefix: str) -> dict:
    figures = {f"{prefix}_{kind}": auroc(errors[kind], errors["world"]) for kind in ("two_shapes", "unseen_hues")}
    figures[prefix] = auroc(torch.cat([errors["two_shapes"], errors["unseen_hues"]]), errors["world"])
    return figures


def fidelity_figures() -> dict:
    start = time.perf_counter()
    family = models.load()
    gallery, queries = retrieval_sets()
    gallery_pictures, query_pictures = world.render_batch(gallery), world.render_batch(queries)
    log("retrieval: embedding and encoding the gallery and the queries")
    with torch.no_grad():
        gallery_embeddings = retrieval.item_embeddings(family.score_images, gallery_pictures, EMBED_CHUNK)
        query_embeddings = retrieval.item_embeddings(family.score_images, query_pictures, EMBED_CHUNK)
        gallery_latents, query_latents = family.encode(gallery_pictures), family.encode(query_pictures)
    figures = {
        "analysis_retrieval_top1": share_rate(_nearest_each(query_embeddings, gallery_embeddings, "cosine"),
                                              gallery, queries),
        "analysis_retrieval_top1_latent": share_rate(_nearest_each(query_latents, gallery_latents, "l2"),
                                                     gallery, queries)}
    log("anomalies: reconstructing world and off-world pictures")
    with torch.no_grad():
        round_trip = lambda x: family.decode(family.encode(x)).clamp(0, 1)  # noqa: E731  (as ComfyUI's VAE clamps)
        errors, clip_distances = {}, {}
        for kind, pictures in anomaly_sets().items():
            result = reconstruction.reconstruct(pictures, round_trip, "squared", RECONSTRUCT_CHUNK)
            errors[kind] = result.errors
            clip_distances[kind] = reconstruction.perceptual_distances(family.score_images, pictures,
                                                                       result.reconstructed, EMBED_CHUNK)
    figures.update(anomaly_figures(errors, "analysis_anomaly_auroc"))
    figures.update(anomaly_figures(clip_distances, "analysis_anomaly_auroc_clip"))
    figures["analysis_retrieval_seconds"] = time.perf_counter() - start
    return figures


# ---- through ComfyUI --------------------------------------------------------------------------------------------

def _save_pictures(comfy, name: str, pictures: torch.Tensor) -> dict:
    """A LoadImage node of ``pictures`` [B, 3, H, W], saved as a multi-page TIFF (lossless, one page a picture) in
    ComfyUI's input folder."""
    from PIL import Image

    frames = [Image.fromarray((p.movedim(0, -1) * 255).round().byte().numpy()) for p in pictures]
    frames[0].save(comfy.input_dir / name, save_all=True, append_images=frames[1:])
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def _one_of(source: str, index: int, length: int = 1) -> dict:
    return {"class_type": "ImageFromBatch", "inputs": {"image": [source, 0], "batch_index": index, "length": length}}


def _run(comfy, prompt: dict) -> dict:
    result = comfy.run(prompt)
    if not result.ok:
        raise RuntimeError(f"ComfyUI failed: {result.error}")
    return result.captured


def _capture(source: str, slot: int, label: str) -> dict:
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def comfy_figures(comfy) -> dict:
    start = time.perf_counter()
    gallery, queries = retrieval_sets()
    queries = queries[:COMFY_QUERIES]
    prompt = {"open_clip": {"class_type": "LSC_OpenCLIPLoader", "inputs": {
                  "architecture": models.CLIP_NAME, "weights": "reference (shipped with the pack)"}},
              "gallery": _save_pictures(comfy, "analysis_gallery.tiff", world.render_batch(gallery)),
              "queries": _save_pictures(comfy, "analysis_queries.tiff", world.render_batch(queries))}
    for i in range(len(queries)):
        prompt[f"query_{i}"] = _one_of("queries", i)
        prompt[f"nearest_{i}"] = {"class_type": "LSC_LatentNearest", "inputs": {
            "metric": "clip_cosine", "top_k": 1, "image": ["gallery", 0], "query_image": [f"query_{i}", 0],
            "open_clip": ["open_clip", 0]}}
        prompt[f"capture_{i}"] = _capture(f"nearest_{i}", 4, f"nearest_{i}")
    log(f"comfy retrieval: {len(queries)} Latent Nearest nodes over a gallery of {len(gallery)}")
    captured = _run(comfy, prompt)
    figures = {"comfy_analysis_retrieval_top1": share_rate([captured[f"nearest_{i}"] for i in range(len(queries))],
                                                           gallery, queries)}

    from latent_space_control.nodes.reconstruction import REPORT_LINES  # importable once ComfyUI is loaded

    prompt = {"loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}}
    sets = anomaly_sets()
    for kind, pictures in sets.items():
        prompt[kind] = _save_pictures(comfy, f"analysis_{kind}.tiff", pictures)
        for part, first in enumerate(range(0, len(pictures), REPORT_LINES)):  # every picture listed in a report
            key = f"{kind}_{part}"
            prompt[f"pictures_{key}"] = _one_of(kind, first, min(REPORT_LINES, len(pictures) - first))
            prompt[f"score_{key}"] = {"class_type": "LSC_ReconstructionScore", "inputs": {
                "image": [f"pictures_{key}", 0], "vae": ["loader", 2], "error": "squared"}}
            prompt[f"capture_{key}"] = _capture(f"score_{key}", 2, key)
    log("comfy anomalies: Reconstruction Score on world and off-world pictures")
    captured = _run(comfy, prompt)
    errors = {}
    for kind, pictures in sets.items():
        values = []
        for part in range(0, len(pictures), REPORT_LINES):
            listed = dict((int(i), float(e)) for i, e in re.findall(r"picture (\d+): ([-\d.e]+)",
                                                                     captured[f"{kind}_{part // REPORT_LINES}"]))
            values += [listed[i] for i in range(len(listed))]
        errors[kind] = torch.tensor(values)
    figures.update(anomaly_figures(errors, "comfy_analysis_anomaly_auroc"))
    figures["comfy_analysis_retrieval_seconds"] = time.perf_counter() - start
    return figures


# ---- cost ------------------------------------------------------------------------------------------------------

def perf_figures(comfy=None) -> dict:
    """Chunked against one picture at a time, interleaved per repeat so drifting load hits both alike."""
    family = models.load()
    pictures = world.render_batch(world.scenes(PERF_PICTURES, ANALYSIS_SEED + 7))
    round_trip = lambda x: family.decode(family.encode(x)).clamp(0, 1)  # noqa: E731
    runs = {
        "reconstruct_batched": lambda: reconstruction.reconstruct(pictures, round_trip, chunk_size=RECONSTRUCT_CHUNK),
        "reconstruct_single": lambda: reconstruction.reconstruct(pictures, round_trip, chunk_size=1),
        "embed_batched": lambda: retrieval.item_embeddings(family.score_images, pictures, EMBED_CHUNK),
        "embed_single": lambda: retrieval.item_embeddings(family.score_images, pictures, 1)}
    if comfy is not None:
        from comfy_fidelity import captured_values

        vae = captured_values(comfy, {"loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}},
                              {"vae": ["loader", 2]})["vae"]
        node = comfy.node_class("LSC_ReconstructionScore")
        image = pictures.movedim(1, -1)
        runs["node_batched"] = lambda: node.execute(image, vae, "squared")
        runs["node_single"] = lambda: [node.execute(image[i:i + 1], vae, "squared") for i in range(len(image))]
    seconds = {label: [] for label in runs}
    with torch.inference_mode():  # as ComfyUI runs nodes
        for run in runs.values():
            run()  # warm up
        for _ in range(PERF_REPEATS):
            for label, run in runs.items():
                begin = time.perf_counter()
                run()
                seconds[label].append(time.perf_counter() - begin)
    median = {label: statistics.median(values) for label, values in seconds.items()}
    figures = {"analysis_reconstruction_batched_speedup": median["reconstruct_single"] / median["reconstruct_batched"],
               "analysis_embedding_batched_speedup": median["embed_single"] / median["embed_batched"],
               "analysis_reconstruction_batched_seconds": median["reconstruct_batched"]}
    if comfy is not None:
        figures["comfy_analysis_reconstruction_batched_speedup"] = median["node_single"] / median["node_batched"]
    return figures


def main() -> None:
    import argparse

    from _bootstrap import report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object of named figures")
    parser.add_argument("--only", choices=("engine", "comfy", "perf"), help="measure only this part")
    args = parser.parse_args()
    figures = {}
    if args.only in (None, "engine"):
        figures.update(fidelity_figures())
    comfy = None
    with tempfile.TemporaryDirectory() as work:
        if args.only in (None, "comfy", "perf") and os.environ.get("COMFYUI_PATH"):
            from comfy_fidelity import start_comfyui

            comfy = start_comfyui(Path(work))
        elif args.only == "comfy":
            sys.exit("the comfy part needs COMFYUI_PATH: the folder of a ComfyUI export")
        if comfy is not None and args.only in (None, "comfy"):
            figures.update(comfy_figures(comfy))
        if args.only in (None, "perf"):
            figures.update(perf_figures(comfy))
    report(figures, args.json)


if __name__ == "__main__":
    main()
