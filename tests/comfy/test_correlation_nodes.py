"""Attribute Correlation, executed by ComfyUI's own validator and executor: on the reference family (pictures of
several colours scored by CLIP "red" or by typed 0/1 scores; the oracle reads what the found direction does), on
latents of any channel count and on video latents, and fed bad input."""

import pytest
import torch
import torch.nn.functional as F

from latent_space_control.core import correlation
from latent_space_control.core.directions import mean_difference
from latent_space_control.nodes import plot
from latent_space_control.reference import models, oracle

# Two pictures a prompt (one KSampler batch each): red shapes, then the same scenes in other colours, so that the
# red − not-red mean difference is the colour alone.
RED = ("a large red circle on the left, white background", "a small red square on the right, black background",
       "a large red triangle in the middle, white background")
OTHER = ("a large blue circle on the left, white background", "a small green square on the right, black background",
         "a large yellow triangle in the middle, white background")
PROMPTS = RED + OTHER
RED_PROMPTS = len(RED)
PER_PROMPT = 2
BATCH = len(PROMPTS) * PER_PROMPT
SAMPLE_STEPS = 12
STRENGTH = 3.0  # the strength the reference world's benchmark reports (analysis_correlation_moves_color)
VIEWS = 1


def loader():
    return {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}


def capture(source, label, slot=0):
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def random_latent(seed, batch=6, channels=4, length=0, size=6):
    return {"class_type": "LSCTest_Latent", "inputs": {"seed": seed, "batch": batch, "channels": channels,
                                                       "length": length, "height": size, "width": size}}


def correlate(latent, scores="", objective=None, vae=None, components=8, decode_scale=1.0):
    inputs = {"latent": [latent, 0], "scores": scores, "components": components, "decode_scale": decode_scale}
    if objective:
        inputs["objective"] = [objective, 0]
    if vae:
        inputs["vae"] = list(vae)
    return {"class_type": "LSC_AttributeCorrelation", "inputs": inputs}


def apply(direction, latent, strength=STRENGTH):
    return {"class_type": "LSC_ApplyDirection", "inputs": {
        "direction": [direction, 0], "strength": strength, "tokens": "all_tokens", "auto_scale": False,
        "latent": [latent, 0]}}


def batch_of_prompts() -> dict:
    """KSampler per prompt (two pictures each), joined by LatentBatch into one batch ``batch``."""
    nodes = {"loader": loader(), "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
             "empty": {"class_type": "LSC_EmptyLatentForVAE",
                       "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": PER_PROMPT}}}
    previous = None
    for i, prompt in enumerate(PROMPTS):
        nodes[f"pos{i}"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": prompt}}
        nodes[f"ks{i}"] = {"class_type": "KSampler", "inputs": {
            "model": ["loader", 0], "positive": [f"pos{i}", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "seed": 10 + i, "steps": SAMPLE_STEPS, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras",
            "denoise": 1.0}}
        if previous is not None:
            nodes[f"join{i}"] = {"class_type": "LatentBatch",
                                 "inputs": {"samples1": [previous, 0], "samples2": [f"ks{i}", 0]}}
        previous = f"ks{i}" if previous is None else f"join{i}"
    nodes["batch"] = {"class_type": "LatentMultiply", "inputs": {"samples": [previous, 0], "multiplier": 1.0}}
    return nodes


def labels() -> list[float]:
    return [1.0 if i < RED_PROMPTS else 0.0 for i in range(len(PROMPTS)) for _ in range(PER_PROMPT)]


@pytest.fixture(scope="module")
def reference_run(comfy):
    nodes = {
        **batch_of_prompts(),
        "oc": {"class_type": "LSC_OpenCLIPLoader",
               "inputs": {"architecture": "LSC-Reference-CLIP", "weights": "reference (shipped with the pack)"}},
        "red": {"class_type": "LSC_ObjectiveCLIPText",
                "inputs": {"open_clip": ["oc", 0], "positive": "red", "negative": "", "views": VIEWS}},
        "by_clip": correlate("batch", objective="red", vae=("loader", 2)),
        "by_hand": correlate("batch", scores=", ".join(f"{v:g}" for v in labels())),
        "moved": apply("by_clip", "batch"),
        "before": {"class_type": "VAEDecode", "inputs": {"samples": ["batch", 0], "vae": ["loader", 2]}},
        "after": {"class_type": "VAEDecode", "inputs": {"samples": ["moved", 1], "vae": ["loader", 2]}},
        "capture_batch": capture("batch", "batch"),
        "capture_clip": capture("by_clip", "clip"), "capture_clip_report": capture("by_clip", "clip_report", 1),
        "capture_chart": capture("by_clip", "chart", 2),
        "capture_hand": capture("by_hand", "hand"), "capture_hand_report": capture("by_hand", "hand_report", 1),
        "capture_before": capture("before", "before"), "capture_after": capture("after", "after"),
    }
    result = comfy.run(nodes)
    assert result.ok, result.error
    return result


@pytest.fixture(scope="module")
def world():
    """The reference family loaded by the engine, outside ComfyUI: an independent judge of CLIP similarity."""
    return models.load()


def cosine(a, b):
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_the_batch_shows_what_its_prompts_say(reference_run):
    readings = oracle.read_batch(reference_run.captured["before"].movedim(-1, 1))
    red = [reading["colour"] == "red" for reading in readings]
    assert red == [bool(v) for v in labels()], readings


def test_typed_scores_give_the_engines_fit_close_to_the_mean_difference(reference_run):
    samples = reference_run.captured["batch"]["samples"]
    direction = reference_run.captured["hand"]
    assert type(direction).__name__ == "Direction" and direction.spaces == ("latent",)
    vector = direction.vectors["latent"]
    assert vector.shape == samples.shape[1:] and vector.dtype == torch.float32
    expected = correlation.ridge_fit(samples, torch.tensor(labels()))
    assert torch.allclose(vector, expected.direction, atol=1e-5)
    is_red = torch.tensor(labels()).bool()
    assert cosine(vector, mean_difference(samples[is_red], samples[~is_red])) > 0.95
    report = reference_run.captured["hand_report"]
    assert report.startswith(f"scores: typed; {BATCH} items")
    assert f"R² {expected.r2:.3f} on the batch, {expected.loo_r2:.3f} leave-one-out" in report, report
    assert direction.provenance["scores"] == "typed"


def test_clip_red_scores_give_a_direction_that_makes_pictures_red(reference_run, world):
    """Measured on this batch: at strength 3, 4 of the 6 not-red pictures turn red and 4 keep shape, size, position
    and background (the typed 0/1 direction, the mean difference of three scene pairs, turns none: CLIP's score
    follows the colour more closely than three pairs do)."""
    samples = reference_run.captured["batch"]["samples"]
    vector = reference_run.captured["clip"].vectors["latent"]
    is_red = torch.tensor(labels()).bool()
    assert cosine(vector, mean_difference(samples[is_red], samples[~is_red])) > 0.8  # measured 0.86
    report = reference_run.captured["clip_report"]
    assert "scores: minus the loss of 1 × CLIP text 'red'" in report
    before_pictures, after_pictures = reference_run.captured["before"], reference_run.captured["after"]
    before = oracle.read_batch(before_pictures.movedim(-1, 1))
    after = oracle.read_batch(after_pictures.movedim(-1, 1))
    not_red = [i for i, reading in enumerate(before) if reading["colour"] != "red"]
    assert len(not_red) == len(OTHER) * PER_PROMPT
    assert sum(after[i]["colour"] == "red" for i in not_red) >= 3, [after[i] for i in not_red]
    kept = sum(all(after[i][name] == before[i][name] for name in ("shape", "size", "position", "background"))
               for i in not_red)
    assert kept >= 3, (before, after)
    with torch.inference_mode():  # an independent judge: the engine's CLIP similarity to "red" rises for every one
        red = F.normalize(world.encode_text(["red"]).embedding.float()[0], dim=0)
        similarity = [F.normalize(world.score_images(pictures.movedim(-1, 1)[not_red]).float(), dim=-1) @ red
                      for pictures in (before_pictures, after_pictures)]
    assert (similarity[1] > similarity[0] + 0.05).all(), similarity


def test_chart_has_a_channel_panel_and_a_component_panel(reference_run):
    chart = reference_run.captured["chart"]
    assert chart.ndim == 4 and chart.shape[0] == 1 and chart.shape[2] == plot.WIDTH and chart.shape[3] == 3
    assert chart.shape[1] > 2 * plot.BAR_PANEL_HEIGHT  # two panels and a title
    coloured = (chart.amax(dim=-1) - chart.amin(dim=-1)) > 0.3
    assert coloured[0, :chart.shape[1] // 2].sum() > 50 and coloured[0, chart.shape[1] // 2:].sum() > 50


@pytest.mark.parametrize("channels, length", [(16, 0), (4, 3)])  # many channels; a 5-D video latent
def test_any_latent_works_under_inference_mode_and_is_left_alone(comfy, channels, length):
    scores = "0.1 0.9 0.4\n0.7, 0.2, 0.5"
    result = comfy.run({"random": random_latent(3, channels=channels, length=length),
                        "node": correlate("random", scores=scores, components=3),
                        "capture_random": capture("random", "random"), "capture_direction": capture("node", "direction"),
                        "capture_report": capture("node", "report", 1)})
    assert result.ok, result.error
    assert result.captured["direction:inference_mode"]
    samples = result.captured["random"]["samples"]
    shape = (6, channels, *([length] if length else []), 6, 6)
    assert list(result.captured["random"]) == ["samples"]
    assert torch.equal(samples, torch.randn(shape, generator=torch.Generator().manual_seed(3)))
    vector = result.captured["direction"].vectors["latent"]
    assert vector.shape == shape[1:]
    scores_tensor = torch.tensor(correlation.parse_scores(scores))
    assert torch.allclose(vector, correlation.ridge_fit(samples, scores_tensor).direction, atol=1e-5)
    report = result.captured["report"]
    assert report.count("%)") == 3 and f"{channels - 1}: " in report


def test_decode_scale_and_a_colour_objective_score_every_picture(comfy):
    """Random latents decoded at half size by the reference VAE and scored by a colour statistic: the report's
    score mean is minus the mean colour distance, recomputed from VAE Decode's pictures (at full size: close)."""
    result = comfy.run({"loader": loader(), "random": random_latent(4, batch=5, size=8),
                        "colour": {"class_type": "LSC_ObjectiveColor",
                                   "inputs": {"statistic": "colour", "color": "#e61a1a", "value": 0.5}},
                        "node": correlate("random", objective="colour", vae=("loader", 2), decode_scale=0.5),
                        "full": correlate("random", objective="colour", vae=("loader", 2)),
                        "pictures": {"class_type": "VAEDecode", "inputs": {"samples": ["random", 0],
                                                                           "vae": ["loader", 2]}},
                        "capture_report": capture("node", "report", 1), "capture_full": capture("full", "full", 1),
                        "capture_pictures": capture("pictures", "pictures")})
    assert result.ok, result.error
    pictures = result.captured["pictures"]
    distance = (pictures.mean(dim=(1, 2)) - torch.tensor([0xE6, 0x1A, 0x1A]) / 255).norm(dim=1)
    full = result.captured["full"]
    assert full.startswith(f"scores: minus the loss of 1 × colour → #e61a1a; 5 items, mean {-float(distance.mean()):.4g}")
    assert result.captured["report"] != full  # decoded at half size: other pictures, other scores


@pytest.mark.parametrize("node, message", [
    (correlate("random", scores="1 2 3"), "scores has 3 scores but latent has a batch of 6"),
    (correlate("random", scores="1 1 1 1 1 1"), "scores: every score is the same (1)"),
    (correlate("random", scores="1 2 nan 4 5 6"), "scores contains 1 NaN/Inf value"),
    (correlate("random"), "scores is empty and no objective is connected"),
    (correlate("random", scores="1 2 3 4 5 6", objective="colour"), "scores is typed and objective is connected"),
    (correlate("random", objective="colour"), "scores the decoded pictures but vae is not connected"),
    (correlate("small", scores="1 2"), "latent has a batch of 2; expected at least 3"),
])
def test_bad_inputs_name_the_input(comfy, node, message):
    result = comfy.run({"random": random_latent(1), "small": random_latent(2, batch=2),
                        "colour": {"class_type": "LSC_ObjectiveColor",
                                   "inputs": {"statistic": "colour", "color": "#e61a1a", "value": 0.5}},
                        "node": node, "out": capture("node", "out")})
    assert not result.ok and message in result.error, result.error


def test_a_word_in_scores_is_refused_when_queued(comfy):
    result = comfy.run({"random": random_latent(1), "node": correlate("random", scores="1, 2, red, 4, 5, 6"),
                        "out": capture("node", "out")})
    assert not result.ok and "scores holds 'red', which is not a number" in result.error, result.error


def test_objective_with_a_vae_of_other_channels_is_refused(comfy):
    result = comfy.run({"loader": loader(), "random": random_latent(1, channels=16),
                        "colour": {"class_type": "LSC_ObjectiveColor",
                                   "inputs": {"statistic": "colour", "color": "#e61a1a", "value": 0.5}},
                        "node": correlate("random", objective="colour", vae=("loader", 2)),
                        "out": capture("node", "out")})
    assert not result.ok and "latent has shape (6, 16, 6, 6) but vae decodes 4-channel latents" in result.error, \
        result.error
