"""Latent Nearest, executed by ComfyUI's own validator and executor: CLIP retrieval of reference-world pictures
(checked against the engine's reference CLIP), latent-space ranking of latents (4-D and 5-D, any channel count),
pictures ranked in latent space and latents by CLIP through the VAE, top_k, and bad input."""

import re

import pytest
import torch
from PIL import Image

from latent_space_control.reference import models, world

CLIP_NAME = "LSC-Reference-CLIP"


def capture(source, label, slot=0):
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def loader():
    return {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}


def open_clip_loader():
    return {"class_type": "LSC_OpenCLIPLoader",
            "inputs": {"architecture": CLIP_NAME, "weights": "reference (shipped with the pack)"}}


def random_latent(seed, batch=5, channels=4, length=0, size=8):
    return {"class_type": "LSCTest_Latent", "inputs": {"seed": seed, "batch": batch, "channels": channels,
                                                       "length": length, "height": size, "width": size}}


def pictures_node(comfy, name, pictures):
    """A LoadImage of ``pictures`` [B, 3, H, W] in 0..1, saved as a multi-page TIFF in ComfyUI's input folder."""
    frames = [Image.fromarray((p.movedim(0, -1) * 255).round().byte().numpy()) for p in pictures]
    frames[0].save(comfy.input_dir / name, save_all=True, append_images=frames[1:])
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def nearest(metric="latent_l2", top_k=0, **wired):
    return {"class_type": "LSC_LatentNearest",
            "inputs": {"metric": metric, "top_k": top_k, **{name: list(source) for name, source in wired.items()}}}


def outputs(label="near"):
    return {f"{label}_{name}": capture(label, f"{label}_{name}", slot)
            for slot, name in enumerate(("latent", "image", "report", "indices", "index", "distance"))}


def every_pair() -> list[world.Scene]:
    """One scene of each shape and colour, on white, at varied sizes and positions."""
    sizes, positions = tuple(world.SIZES), tuple(world.POSITIONS)
    return [world.Scene(shape, colour, sizes[(i + j) % 2], positions[(i + 2 * j) % 3], "white")
            for i, shape in enumerate(world.SHAPES) for j, colour in enumerate(world.COLOURS)]


@pytest.fixture(scope="module")
def family():
    return models.load()


def test_clip_retrieval_finds_the_same_shape_and_colour_and_matches_the_engine(comfy, family):
    gallery = every_pair()
    query_scene = world.Scene("circle", "red", "small", "right", "white", dy=2.0)
    target = gallery.index(next(s for s in gallery if (s.shape, s.colour) == ("circle", "red")))
    assert (gallery[target].size, gallery[target].position) != ("small", "right")
    prompt = {"oc": open_clip_loader(), "gallery": pictures_node(comfy, "gallery.tiff", world.render_batch(gallery)),
              "query": pictures_node(comfy, "query.png", world.render_batch([query_scene])),
              "near": nearest("clip_cosine", image=("gallery", 0), query_image=("query", 0), open_clip=("oc", 0)),
              "g": capture("gallery", "gallery"), "q": capture("query", "query"), **outputs()}
    result = comfy.run(prompt)
    assert result.ok, result.error
    captured = result.captured
    assert captured["near_index"] == target
    order = [int(i) for i in captured["near_indices"].split(", ")]
    assert sorted(order) == list(range(len(gallery))) and order[0] == target
    assert torch.equal(captured["near_image"], captured["gallery"][order])
    assert captured["near_latent"] is None  # pictures ranked by CLIP without a VAE: no latents
    with torch.no_grad():
        engine_gallery = family.score_images(captured["gallery"].movedim(-1, 1))
        engine_query = family.score_images(captured["query"].movedim(-1, 1))
    engine = 1 - engine_gallery @ engine_query[0]
    assert torch.allclose(engine[order], torch.sort(engine).values)
    assert captured["near_distance"] == pytest.approx(float(engine.min()), abs=1e-4)
    report = captured["near_report"]
    assert report.startswith("18 of 18 image items by CLIP cosine distance (1 − cos) to query_image, nearest first")
    listed = [(int(i), float(d)) for i, d in re.findall(r"item (\d+): ([-\d.e]+)", report)]
    assert [i for i, _ in listed] == order
    assert all(abs(d - float(engine[i])) < 1e-3 for i, d in listed)


def test_latent_ranking_sorts_the_latent_and_its_per_item_keys(comfy):
    prompt = {"all": random_latent(1, batch=6),
              "batch": {"class_type": "LatentFromBatch", "inputs": {"samples": ["all", 0], "batch_index": 1,
                                                                    "length": 4}},
              "query": {"class_type": "LatentFromBatch", "inputs": {"samples": ["all", 0], "batch_index": 3,
                                                                    "length": 1}},
              "near": nearest("latent_l2", latent=("batch", 0), query_latent=("query", 0)),
              "in": capture("batch", "in"), **outputs()}
    result = comfy.run(prompt)
    assert result.ok, result.error
    captured = result.captured
    samples = captured["in"]["samples"]
    expected = (samples - samples[2]).flatten(1).norm(dim=1)
    order = torch.sort(expected).indices
    assert captured["near_index"] == 2 and captured["near_distance"] == 0.0
    assert torch.equal(captured["near_latent"]["samples"], samples[order])
    assert captured["near_latent"]["batch_index"] == [captured["in"]["batch_index"][i] for i in order.tolist()]
    assert captured["in"]["batch_index"] == [1, 2, 3, 4]  # the input is left as it was
    assert captured["near_image"] is None


@pytest.mark.parametrize("metric, channels, length", [("latent_cosine", 16, 3), ("latent_l2", 48, 0)])
def test_any_channel_count_and_video_latents_with_top_k(comfy, metric, channels, length):
    prompt = {"batch": random_latent(2, batch=7, channels=channels, length=length),
              "query": random_latent(3, batch=2, channels=channels, length=length),
              "near": nearest(metric, top_k=3, latent=("batch", 0), query_latent=("query", 0)),
              "in": capture("batch", "in"), "q": capture("query", "q"), **outputs()}
    result = comfy.run(prompt)
    assert result.ok, result.error
    samples, query = result.captured["in"]["samples"], result.captured["q"]["samples"]
    if metric == "latent_l2":
        distances = (samples - query.mean(0)).flatten(1).norm(dim=1)
    else:
        centre = torch.nn.functional.normalize(query.flatten(1), dim=1).mean(0)
        distances = 1 - torch.nn.functional.cosine_similarity(samples.flatten(1), centre[None], dim=1)
    top = torch.sort(distances).indices[:3]
    ranked = result.captured["near_latent"]["samples"]
    assert ranked.shape == (3, *samples.shape[1:])
    assert torch.equal(ranked, samples[top])
    assert result.captured["near_report"].startswith("3 of 7 latent items by latent ")
    assert "query_latent (2 items, their mean)" in result.captured["near_report"]


def test_pictures_in_latent_space_and_latents_by_clip_go_through_the_vae(comfy, family):
    scenes = every_pair()[:6]
    prompt = {"loader": loader(), "oc": open_clip_loader(),
              "gallery": pictures_node(comfy, "six.tiff", world.render_batch(scenes)),
              "encoded": {"class_type": "VAEEncode", "inputs": {"pixels": ["gallery", 0], "vae": ["loader", 2]}},
              "by_latent": nearest("latent_l2", image=("gallery", 0), query_latent=("encoded", 0),
                                   vae=("loader", 2)),
              "by_clip": nearest("clip_cosine", top_k=2, latent=("encoded", 0), query_image=("gallery", 0),
                                 vae=("loader", 2), open_clip=("oc", 0)),
              "latents": nearest("latent_l2", top_k=3, latent=("encoded", 0), query_latent=("encoded", 0),
                                 vae=("loader", 2)),
              "e": capture("encoded", "encoded"), "g": capture("gallery", "gallery"),
              **outputs("by_latent"), **outputs("by_clip"), **outputs("latents")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    captured = result.captured
    encoded = captured["encoded"]["samples"]
    order = torch.sort((encoded - encoded.mean(0)).flatten(1).norm(dim=1)).indices
    assert torch.allclose(captured["by_latent_latent"]["samples"], encoded[order], atol=1e-5)
    assert torch.equal(captured["by_latent_image"], captured["gallery"][order])
    decoded = captured["by_clip_image"]
    assert decoded.shape == (2, world.SIZE, world.SIZE, 3)
    top = [int(i) for i in captured["by_clip_indices"].split(", ")]
    assert torch.equal(captured["by_clip_latent"]["samples"], encoded[top])
    with torch.no_grad():
        pictures = family.decode(encoded).clamp(0, 1)
        expected = family.score_images(pictures) @ torch.nn.functional.normalize(
            family.score_images(captured["gallery"].movedim(-1, 1)).mean(0), dim=0)
    assert top == torch.sort(1 - expected).indices[:2].tolist()
    assert (decoded.movedim(-1, 1) - pictures[top]).abs().max() < 1e-3
    # Latents ranked in latent space come back as pictures too when a vae is connected, to preview.
    nearest_three = [int(i) for i in captured["latents_indices"].split(", ")]
    assert nearest_three == order[:3].tolist()
    assert (captured["latents_image"].movedim(-1, 1) - pictures[nearest_three]).abs().max() < 1e-3


# ---- Bad input -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("node, message", [
    (nearest(query_latent=("a", 0)),
     "the batch to rank: neither latent nor image is connected; expected exactly one of them"),
    (nearest(latent=("a", 0), image=("picture", 0), query_latent=("a", 0)),
     "the batch to rank: both latent and image are connected; expected exactly one of them"),
    (nearest(latent=("a", 0)),
     "the query: neither query_latent nor query_image is connected; expected exactly one of them"),
    (nearest("clip_cosine", image=("picture", 0), query_image=("picture", 0)),
     "metric is 'clip_cosine' but open_clip is not connected"),
    (nearest("latent_l2", image=("picture", 0), query_latent=("a", 0)),
     "image holds pictures but metric is 'latent_l2', which compares latents, and vae is not connected; expected"),
    (nearest("clip_cosine", latent=("a", 0), query_image=("picture", 0), open_clip=("oc", 0)),
     "latent holds latents but metric is 'clip_cosine', which compares pictures, and vae is not connected"),
    (nearest("clip_cosine", latent=("wide", 0), query_image=("picture", 0), open_clip=("oc", 0), vae=("loader", 2)),
     "latent has shape (5, 16, 8, 8) but vae decodes 4-channel latents"),
    (nearest(latent=("a", 0), query_latent=("small", 0)),
     "query_latent has items of shape (4, 4, 4) but latent has (4, 8, 8); expected items of the same shape"),
    (nearest(top_k=6, latent=("a", 0), query_latent=("a", 0)),
     "top_k is 6 but latent has 5 items; expected 0 (all) to 5"),
    (nearest("latent_cosine", latent=("empty", 0), query_latent=("a", 0)), "latent item 0 is all zeros"),
])
def test_bad_input_is_refused_naming_it(comfy, node, message):
    prompt = {"loader": loader(), "oc": open_clip_loader(), "a": random_latent(1),
              "wide": random_latent(2, channels=16),
              "small": random_latent(3, batch=1, size=4),
              "empty": {"class_type": "LSC_EmptyLatentForVAE",
                        "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": 2}},
              "picture": {"class_type": "EmptyImage",
                          "inputs": {"width": 32, "height": 32, "batch_size": 2, "color": 0xFF0000}},
              "near": node, **outputs()}
    result = comfy.run(prompt)
    assert not result.ok and message in result.error, result.error


def test_top_k_below_zero_fails_validation(comfy):
    prompt = {"a": random_latent(1), "near": nearest(top_k=-1, latent=("a", 0), query_latent=("a", 0)), **outputs()}
    result = comfy.run(prompt)
    assert not result.ok and "smaller than min" in result.error and "'top_k'" in result.error, result.error
