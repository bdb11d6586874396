"""Latent Scan and Latent Stats, executed by ComfyUI's own validator and executor: on random latents of several
shapes, on the reference family (where the oracle reads the scanned pictures), and fed bad input."""

import pytest
import torch

from latent_space_control.reference import oracle

RED_CIRCLE = "a large red circle on the left, white background"


def capture(source, label, slot=0):
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def random_latent(seed=0, batch=1, channels=4, length=0, size=8):
    return {"class_type": "LSCTest_Latent", "inputs": {"seed": seed, "batch": batch, "channels": channels,
                                                       "length": length, "height": size, "width": size}}


def scan(latent=("base", 0), mode="channel", channel=0, start=-2.0, end=2.0, steps=5, **links):
    inputs = {"latent": list(latent), "mode": mode, "channel": channel, "start": start, "end": end, "steps": steps}
    inputs.update({name: list(source) for name, source in links.items()})
    return {"class_type": "LSC_LatentScan", "inputs": inputs}


def stats(latent=("base", 0), **links):
    return {"class_type": "LSC_LatentStats",
            "inputs": {"latent": list(latent), **{name: list(source) for name, source in links.items()}}}


def test_channel_scan_moves_one_channel_in_the_batchs_spread_offset_major(comfy):
    prompt = {"base": random_latent(seed=1, batch=2, channels=16),
              "scan": scan(channel=3, start=-2.0, end=2.0, steps=3),
              "out": capture("scan", "latent"), "labels": capture("scan", "labels", 1), "in": capture("base", "in")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    base = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(result.captured["in"]["samples"], base)  # the input is left as it was
    out = result.captured["latent"]
    assert out["samples"].shape == (6, 16, 8, 8) and out["batch_index"] == [0, 1, 0, 1, 0, 1]
    spread = base[:, 3].flatten().std()
    for frame, offset in enumerate((-2.0, 0.0, 2.0)):
        moved = out["samples"][2 * frame:2 * frame + 2] - base
        assert torch.allclose(moved[:, 3], torch.full((2, 8, 8), offset * float(spread)), atol=1e-5)
        assert not moved[:, [c for c in range(16) if c != 3]].any()
    assert result.captured["labels"].splitlines() == [
        "item 1, channel 3 -2.00σ", "item 2, channel 3 -2.00σ", "item 1, channel 3 +0.00σ",
        "item 2, channel 3 +0.00σ", "item 1, channel 3 +2.00σ", "item 2, channel 3 +2.00σ"]
    assert result.captured["labels"] == "".join(result.outputs["scan"]["text"])


def test_channel_scan_with_the_model_is_in_its_latent_formats_unit(comfy, reference_family):
    prompt = {"loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
              "base": {"class_type": "LSC_EmptyLatentForVAE",
                       "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": 1}},
              "scan": scan(channel=1, start=0.0, end=3.0, steps=2, model=("loader", 0)),
              "out": capture("scan", "latent")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    scale = reference_family[0].get_model_object("latent_format").scale_factor
    samples = result.captured["latent"]["samples"]
    assert torch.allclose(samples[1, 1], torch.full_like(samples[1, 1], 3.0 / scale), atol=1e-5)
    assert not samples[0].any() and not samples[1, [0, 2, 3]].any()  # an empty latent scans fine with a model


def test_direction_scan_of_a_video_latent_along_a_pca_component(comfy):
    prompt = {"batch": random_latent(seed=2, batch=6, channels=16, length=3, size=4),
              "base": random_latent(seed=3, channels=16, length=3, size=4),
              "pca": {"class_type": "LSC_DirectionPCA",
                      "inputs": {"component": 1, "report": 3, "latent": ["batch", 0]}},
              "scan": scan(mode="direction", start=-1.0, end=1.0, steps=3, direction=("pca", 0)),
              "out": capture("scan", "latent"), "labels": capture("scan", "labels", 1),
              "dir": capture("pca", "direction")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    base = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    vector = result.captured["direction"].vectors["latent"]
    samples = result.captured["latent"]["samples"]
    assert samples.shape == (3, 16, 3, 4, 4)
    assert torch.equal(samples[1], base[0])  # the middle of a symmetric scan is the base itself
    assert torch.allclose(samples[2] - samples[0], 2 * vector, atol=1e-5)
    assert result.captured["labels"].splitlines() == ["PCA component 1 -1.00", "PCA component 1 +0.00",
                                                      "PCA component 1 +1.00"]


@pytest.mark.parametrize("nodes, message", [
    ({"base": random_latent(channels=4), "scan": scan(channel=4)},
     "channel is 4 but latent has 4 channels; expected 0 to 3"),
    ({"base": random_latent(), "scan": scan(mode="direction")}, "mode is direction but direction is not connected"),
    ({"base": random_latent(), "other": random_latent(seed=1, batch=3, channels=16),
      "pca": {"class_type": "LSC_DirectionPCA", "inputs": {"component": 1, "report": 1, "latent": ["other", 0]}},
      "scan": scan(mode="direction", direction=("pca", 0))},
     "the direction has 16 channels but latent has 4"),
    ({"loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
      "dir": {"class_type": "LSC_DirectionFromCLIP", "inputs": {
          "clip": ["loader", 1], "positive": "blue", "negative": "red", "templates": "none",
          "custom_templates": "{}", "space": "both", "normalise": "none"}},
      "base": random_latent(), "scan": scan(mode="direction", direction=("dir", 0))},
     "expected a latent direction here"),
    ({"loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}, "base": random_latent(channels=16),
      "scan": scan(model=("loader", 0))},
     "model's latent format has 4 channels but latent has 16"),
    ({"base": random_latent(), "scan": scan(start=1.0, end=1.0)}, "start and end are both 1.0; expected a range"),
    ({"base": random_latent(), "scan": scan(steps=1)}, "smaller than min of 2"),
])
def test_scan_errors_name_the_input(comfy, nodes, message):
    result = comfy.run({**nodes, "out": capture("scan", "latent")})
    assert not result.ok and message in result.error, result.error


def test_stats_without_a_model_report_the_batch_and_plot_it(comfy):
    result = comfy.run({"base": random_latent(seed=4, batch=5, channels=16), "stats": stats(),
                        "report": capture("stats", "report"), "plot": capture("stats", "plot", 1),
                        "flags": capture("stats", "flags", 2)})
    assert result.ok, result.error
    base = torch.randn(5, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    report = result.captured["report"]
    assert report.startswith("latent (5, 16, 8, 8): 5 item(s), 16 channels")
    assert f"channel max: {float(base[:, 0].max()):.3g}," in report
    assert "no model connected" in report and "PCA explained variance: 1:" in report
    assert result.captured["flags"] == ""
    plot = result.captured["plot"]
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.std() > 0
    assert report == "".join(result.outputs["stats"]["text"])


def test_stats_flag_burnt_and_washed_out_latents_of_the_reference_model(comfy):
    loader = {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}
    sample = {"class_type": "KSampler", "inputs": {
        "model": ["loader", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
        "seed": 5, "steps": 12, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}}
    prompt = {"loader": loader,
              "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": RED_CIRCLE}},
              "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
              "empty": {"class_type": "LSC_EmptyLatentForVAE",
                        "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": 2}},
              "sample": sample,
              "burnt": {"class_type": "LatentMultiply", "inputs": {"samples": ["sample", 0], "multiplier": 3.0}},
              "washed": {"class_type": "LatentMultiply", "inputs": {"samples": ["sample", 0], "multiplier": 0.2}},
              "all": {"class_type": "LatentBatch", "inputs": {"samples1": ["sample", 0], "samples2": ["burnt", 0]}},
              "all2": {"class_type": "LatentBatch", "inputs": {"samples1": ["all", 0], "samples2": ["washed", 0]}},
              "stats": stats(("all2", 0), model=("loader", 0)),
              "flags": capture("stats", "flags", 2), "report": capture("stats", "report")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    assert result.captured["flags"].splitlines() == ["ok", "ok", "burnt", "burnt", "washed out", "washed out"]
    assert "flagged: 3: burnt, 4: burnt, 5: washed out, 6: washed out" in result.captured["report"]


def test_scan_of_a_sampled_picture_decodes_to_a_row_around_it(comfy):
    prompt = {"loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
              "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": RED_CIRCLE}},
              "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
              "empty": {"class_type": "LSC_EmptyLatentForVAE",
                        "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": 1}},
              "sample": {"class_type": "KSampler", "inputs": {
                  "model": ["loader", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
                  "seed": 3, "steps": 20, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
              "scan": scan(("sample", 0), channel=0, start=-3.0, end=3.0, steps=5, model=("loader", 0)),
              "decode_scan": {"class_type": "VAEDecode", "inputs": {"samples": ["scan", 0], "vae": ["loader", 2]}},
              "decode_base": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["loader", 2]}},
              "scanned": capture("decode_scan", "scanned"), "base": capture("decode_base", "base")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    scanned, base = result.captured["scanned"], result.captured["base"]
    assert scanned.shape == (5, 32, 32, 3)
    assert torch.allclose(scanned[2], base[0], atol=1e-4)  # offset 0 is the base picture
    steps = (scanned[1:] - scanned[:-1]).abs().mean((1, 2, 3))
    assert bool((steps > 1e-3).all()), steps  # every step of the scan changes the picture
    readings = oracle.read_batch(base.movedim(-1, 1))
    assert readings[0]["shape"] == "circle"
