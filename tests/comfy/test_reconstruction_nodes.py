"""Reconstruction Score, executed by ComfyUI's own validator and executor on the reference VAE: off-world pictures
(two shapes, unseen hues) score above world pictures, the errors and the heat map agree with the reconstruction it
returns and with the engine's VAE, sizes the VAE cannot take are cut to their centre, and bad input."""

import colorsys
import re

import pytest
import torch
from PIL import Image

from latent_space_control.core.reconstruction import HEAT_COLOURS
from latent_space_control.reference import models, world


def capture(source, label, slot=0):
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def loader():
    return {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}


def pictures_node(comfy, name, pictures):
    """A LoadImage of ``pictures`` [B, 3, H, W] in 0..1, saved as a multi-page TIFF in ComfyUI's input folder."""
    frames = [Image.fromarray((p.movedim(0, -1) * 255).round().byte().numpy()) for p in pictures]
    frames[0].save(comfy.input_dir / name, save_all=True, append_images=frames[1:])
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def score(image=("pictures", 0), vae=("loader", 2), error="squared", open_clip=None):
    inputs = {"image": list(image), "vae": list(vae), "error": error}
    if open_clip:
        inputs["open_clip"] = list(open_clip)
    return {"class_type": "LSC_ReconstructionScore", "inputs": inputs}


def outputs(label="score"):
    return {f"{label}_{name}": capture(label, f"{label}_{name}", slot)
            for slot, name in enumerate(("heat_map", "reconstruction", "report", "highest"))}


def world_and_off_world() -> tuple[torch.Tensor, int]:
    """Four world pictures, then two with two shapes and two in hues the world does not have; and the world count."""
    scenes = world.scenes(4, 21)
    pairs = [(world.Scene("circle", "red", "small", "left", "white"), world.Scene("square", "blue", "small", "right",
                                                                                  "white")),
             (world.Scene("triangle", "green", "small", "left", "white"),
              world.Scene("circle", "yellow", "small", "right", "white"))]
    doubles = [torch.minimum(world.render(a), world.render(b)) for a, b in pairs]  # on white, the shape is darker
    plain = world.render(world.Scene("square", "red", "large", "center", "black"))
    shape = (plain - 0.05).abs().sum(0) > 0.05  # the square's pixels, on black
    off_hues = []
    for hue in (30, 270):  # orange and violet, between the world's six
        colour = torch.tensor(colorsys.hsv_to_rgb(hue / 360, 0.89, 0.9))
        off_hues.append(torch.where(shape, colour[:, None, None], plain))
    return torch.cat([world.render_batch(scenes), torch.stack(doubles + off_hues)]), len(scenes)


def test_off_world_pictures_score_higher_and_the_outputs_agree(comfy):
    pictures, world_count = world_and_off_world()
    prompt = {"loader": loader(), "pictures": pictures_node(comfy, "mixed.tiff", pictures),
              "score": score(), "in": capture("pictures", "in"), **outputs()}
    result = comfy.run(prompt)
    assert result.ok, result.error
    captured = result.captured
    original, reconstruction = captured["in"], captured["score_reconstruction"]
    assert reconstruction.shape == original.shape and reconstruction.dtype == torch.float32
    errors = ((reconstruction - original) ** 2).mean((1, 2, 3))
    assert errors[world_count:].min() > errors[:world_count].max(), errors
    assert captured["score_highest"] == pytest.approx(float(errors.max()), rel=1e-4)
    report = captured["score_report"]
    listed = [(int(i), float(e)) for i, e in re.findall(r"picture (\d+): ([-\d.e]+)", report)]
    assert [i for i, _ in listed] == torch.sort(errors, descending=True, stable=True).indices.tolist()
    assert all(e == pytest.approx(float(errors[i]), rel=1e-3) for i, e in listed)
    heat = captured["score_heat_map"]
    assert heat.shape == original.shape and heat.min() >= 0 and heat.max() <= 1
    maps = ((reconstruction - original) ** 2).mean(-1)
    hottest = maps.flatten().argmax()
    assert torch.allclose(heat.reshape(-1, 3)[hottest], torch.tensor(HEAT_COLOURS[-1]), atol=1e-5)
    coldest = maps.flatten().argmin()
    assert heat.reshape(-1, 3)[coldest].sum() < 0.1
    top = float(re.search(r"pale yellow ([\d.e-]+)", report)[1])
    assert top == pytest.approx(float(maps.max()), rel=1e-3)
    assert torch.equal(captured["in"], original)  # the input is left as it was

    family = models.load()
    with torch.no_grad():
        engine = family.decode(family.encode(original.movedim(-1, 1))).clamp(0, 1).movedim(1, -1)
    assert (engine - reconstruction).abs().max() < 1e-3


def test_absolute_error_and_a_size_the_vae_cannot_take(comfy):
    pictures, _ = world_and_off_world()
    odd = torch.nn.functional.pad(pictures[:3], (1, 2, 2, 1), value=0.5)  # 35×35: cut to the centre 32×32
    prompt = {"loader": loader(), "pictures": pictures_node(comfy, "odd.tiff", odd),
              "score": score(error="absolute"), "in": capture("pictures", "in"), **outputs()}
    result = comfy.run(prompt)
    assert result.ok, result.error
    captured = result.captured
    reconstruction = captured["score_reconstruction"]
    assert reconstruction.shape == (3, 32, 32, 3) and captured["score_heat_map"].shape == (3, 32, 32, 3)
    centre = captured["in"][:, 1:33, 1:33]
    errors = (reconstruction - centre).abs().mean((1, 2, 3))
    assert captured["score_highest"] == pytest.approx(float(errors.max()), rel=1e-4)
    report = captured["score_report"]
    assert "mean absolute error per pixel" in report
    assert "the pictures were cut to their centre 32×32 (a multiple of the VAE's downscale)" in report


def test_with_open_clip_the_report_gives_each_pictures_clip_distance(comfy):
    pictures, _ = world_and_off_world()
    prompt = {"loader": loader(), "pictures": pictures_node(comfy, "clip.tiff", pictures),
              "oc": {"class_type": "LSC_OpenCLIPLoader", "inputs": {
                  "architecture": models.CLIP_NAME, "weights": "reference (shipped with the pack)"}},
              "score": score(open_clip=("oc", 0)), "in": capture("pictures", "in"), **outputs()}
    result = comfy.run(prompt)
    assert result.ok, result.error
    report = result.captured["score_report"]
    assert "and CLIP distance (1 − cos) from picture to reconstruction" in report
    listed = {int(i): float(d) for i, d in re.findall(r"picture (\d+): [-\d.e]+ \(CLIP ([-\d.e]+)\)", report)}
    assert sorted(listed) == list(range(len(pictures)))
    family = models.load()
    with torch.no_grad():
        original = result.captured["in"].movedim(-1, 1)
        reconstruction = result.captured["score_reconstruction"].movedim(-1, 1)
        expected = 1 - (family.score_images(original) * family.score_images(reconstruction)).sum(1)
    assert all(abs(distance - float(expected[i])) < 1e-4 for i, distance in listed.items()), (listed, expected)


def test_a_picture_smaller_than_the_downscale_is_refused(comfy):
    prompt = {"tiny": {"class_type": "LSCTest_TinyCheckpoint", "inputs": {"ckpt_name": "tiny"}},
              "pictures": {"class_type": "EmptyImage",
                           "inputs": {"width": 6, "height": 16, "batch_size": 1, "color": 0}},
              "score": score(vae=("tiny", 2)), **outputs()}
    result = comfy.run(prompt)
    assert not result.ok
    assert "image is 6×16 pixels; expected at least 8×8 (the VAE's downscale factor)" in result.error, \
        result.error


def test_an_unknown_error_kind_is_refused(comfy):
    prompt = {"loader": loader(), "pictures": {"class_type": "EmptyImage",
                                               "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
              "score": score(error="cubic"), **outputs()}
    result = comfy.run(prompt)
    assert not result.ok, result.error
    # refused by ComfyUI's combo check where it checks V3 combos, else by the node
    assert "cubic" in result.error and ("error is 'cubic'; expected one of squared, absolute" in result.error
                                        or "'error'" in result.error), result.error
