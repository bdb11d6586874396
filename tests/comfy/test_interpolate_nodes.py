"""The interpolation nodes, executed by ComfyUI's own validator and executor."""

import torch

from latent_space_control.core.interpolation import (interpolate_embeddings, interpolate_latents, keyframe_path,
                                                     path_positions)
from latent_space_control.core.noise import seeded_noise

PACK_NODES = ["LSC_LatentInterpolate", "LSC_LatentKeyframes", "LSC_NoiseTravel", "LSC_ConditioningInterpolate",
              "LSC_ReferenceModelLoader", "LSC_EmptyLatentForVAE",
              "LSC_DirectionFromCLIP", "LSC_LatentDirectionFromCLIP", "LSC_DirectionFromLatents", "LSC_DirectionPCA", "LSC_ApplyDirection",
              "LSC_DirectionSweep", "LSC_DirectionCombine", "LSC_DirectionTransfer", "LSC_SaveDirection",
              "LSC_LoadDirection", "LSC_OpenCLIPLoader",
              "LSC_StyleMix", "LSC_StyleMixBlocks", "LSC_LatentStyleMix", "LSC_StyleAlign",
              "LSC_ObjectiveCLIPText", "LSC_ObjectiveCLIPImage", "LSC_ObjectiveDirection", "LSC_ObjectiveReference",
              "LSC_ObjectiveColor", "LSC_ObjectiveCombine", "LSC_ObjectiveConstraint", "LSC_LatentOptimize",
              "LSC_NoiseOptimize",
              "LSC_SteerVectorFromPrompts", "LSC_TextSteer", "LSC_CausalLMLoader", "LSC_TextSteerGenerate",
              "LSC_SaveControlVector", "LSC_LoadControlVector",
              "LSC_GuidedNoiseInject", "LSC_SemanticGuidance", "LSC_NoiseInject", "LSC_DirectionalNoise",
              "LSC_LatentScan", "LSC_LatentStats", "LSC_AttributeCorrelation", "LSC_LatentNearest",
              "LSC_ReconstructionScore"]  # every node of the pack


def latent(seed, batch=1, channels=4, length=0, height=8, width=8):
    return {"class_type": "LSCTest_Latent", "inputs": {"seed": seed, "batch": batch, "channels": channels,
                                                       "length": length, "height": height, "width": width}}


def expected_latent(seed, batch=1, channels=4, length=0, height=8, width=8):
    shape = (batch, channels, *([length] if length else []), height, width)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def capture(source, label, slot=0):
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def interpolate_node(frames=1, t=0.5, method="slerp", easing="linear", t_start=0.0, t_end=1.0, a="a", b="b"):
    return {"class_type": "LSC_LatentInterpolate", "inputs": {
        "latent_a": [a, 0], "latent_b": [b, 0], "frames": frames, "t": t, "t_start": t_start, "t_end": t_end,
        "method": method, "easing": easing}}


def test_every_node_is_registered_with_a_label_and_tooltips(comfy):
    for node_id in PACK_NODES:
        node_class = comfy.node_class(node_id)
        schema = node_class.GET_SCHEMA()
        assert schema.display_name.endswith("(LSC)") and schema.category.startswith("latent space control/")
        assert schema.description
        for section in node_class.INPUT_TYPES().values():
            for name, spec in section.items():
                if isinstance(spec, tuple) and len(spec) > 1 and isinstance(spec[1], dict):
                    assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(output.tooltip for output in schema.outputs), f"{node_id} has an output without a tooltip"


def test_the_running_comfyui_is_one_the_pack_supports(comfy):
    import latent_space_control
    from latent_space_control.nodes.compat import _parse

    assert _parse(comfy.version) >= _parse(latent_space_control.MIN_COMFYUI_VERSION), comfy.version


def test_latent_interpolate_frames_video_latents_and_leaves_inputs_alone(comfy):
    prompt = {
        "a": latent(1, channels=16, length=3), "b": latent(2, channels=16, length=3),
        "i": interpolate_node(frames=5, easing="cosine"),
        "out": capture("i", "out"), "in": capture("a", "in"),
    }
    result = comfy.run(prompt)
    assert result.ok, result.error
    a, b = expected_latent(1, channels=16, length=3), expected_latent(2, channels=16, length=3)
    samples = result.captured["out"]["samples"]
    assert samples.shape == (5, 16, 3, 8, 8)
    torch.testing.assert_close(samples, interpolate_latents(a, b, path_positions(5, 0, 1, "cosine")))
    assert torch.equal(samples[0], a[0]) and torch.equal(samples[-1], b[0])
    assert torch.equal(result.captured["in"]["samples"], a), "the node changed its input latent"
    assert result.captured["out:inference_mode"]


def test_latent_interpolate_with_a_mask_and_per_item_keys(comfy):
    node = interpolate_node(frames=3, a="noise_mask")
    node["inputs"]["mask"] = ["nothing_travels", 0]
    prompt = {
        "a": latent(3, batch=2), "b": latent(4, batch=2),
        "nothing_travels": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}},
        "everywhere": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
        "noise_mask": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["a", 0], "mask": ["everywhere", 0]}},
        "i": node,
        "out": capture("i", "out"),
    }
    result = comfy.run(prompt)
    assert result.ok, result.error
    out = result.captured["out"]
    # A mask of zeros keeps every frame at latent_a; the latent's own noise_mask (batch 1) is carried over as it was.
    assert torch.equal(out["samples"], expected_latent(3, batch=2).repeat(3, 1, 1, 1))
    assert out["noise_mask"].shape[0] == 1 and torch.equal(out["noise_mask"], torch.ones_like(out["noise_mask"]))


def test_mismatched_latents_fail_with_a_message_naming_the_input(comfy):
    prompt = {"a": latent(1, channels=4), "b": latent(2, channels=16), "i": interpolate_node(), "out": capture("i", "o")}
    result = comfy.run(prompt)
    assert not result.ok
    assert "latent_b has 16 channels but latent_a has 4" in result.error


def test_latent_keyframes_through_a_batch(comfy):
    prompt = {
        "k": latent(5, batch=3),
        "p": {"class_type": "LSC_LatentKeyframes", "inputs": {"keyframes": ["k", 0], "frames_per_segment": 4,
                                                               "method": "slerp", "easing": "linear", "smooth": True}},
        "out": capture("p", "out"),
    }
    result = comfy.run(prompt)
    assert result.ok, result.error
    keys = expected_latent(5, batch=3)
    torch.testing.assert_close(result.captured["out"]["samples"], keyframe_path(keys, 4, "slerp", smooth=True))


def test_noise_travel_starts_on_seed_a_exactly_as_random_noise(comfy):
    prompt = {
        "travel": {"class_type": "LSC_NoiseTravel", "inputs": {"seed_a": 11, "seed_b": 22, "easing": "linear",
                                                               "more_seeds": "33"}},
        "random": {"class_type": "RandomNoise", "inputs": {"noise_seed": 11}},
        "t": capture("travel", "travel"), "r": capture("random", "random"),
    }
    result = comfy.run(prompt)
    assert result.ok, result.error
    travel, random = result.captured["travel"], result.captured["random"]
    frames = travel.generate_noise({"samples": torch.zeros(5, 16, 3, 8, 8)})
    assert frames.shape == (5, 16, 3, 8, 8)
    single = random.generate_noise({"samples": torch.zeros(1, 16, 3, 8, 8)})
    assert torch.equal(frames[0], single[0])
    assert torch.equal(frames[4], seeded_noise(33, (1, 16, 3, 8, 8))[0])
    picked = travel.generate_noise({"samples": torch.zeros(2, 16, 3, 8, 8), "batch_index": [2, 4]})
    assert torch.equal(picked, frames[[2, 4]])
    assert travel.seed == 11


def test_bad_more_seeds_are_refused(comfy):
    prompt = {"travel": {"class_type": "LSC_NoiseTravel", "inputs": {"seed_a": 1, "seed_b": 2, "easing": "linear",
                                                                     "more_seeds": "7, x"}},
              "t": capture("travel", "travel")}
    result = comfy.run(prompt)
    assert not result.ok and "more_seeds is '7, x'" in result.error


def sampling_graph(positive, noise_node, batch):
    return {
        "ckpt": {"class_type": "LSCTest_TinyCheckpoint", "inputs": {"ckpt_name": "tiny"}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": positive,
                                                          "negative": ["negative", 0], "cfg": 3.0}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "normal",
                                                               "steps": 3, "denoise": 1.0}},
        "noise": noise_node,
        "sample": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["empty", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "images": capture("decode", "images"),
    }


def test_prompt_travel_and_seed_travel_sample_a_batch_of_frames(comfy):
    prompt = sampling_graph(["travel_cond", 0], {"class_type": "LSC_NoiseTravel", "inputs": {
        "seed_a": 5, "seed_b": 6, "easing": "ease_in_out", "more_seeds": ""}}, batch=4)
    prompt.update({
        "cond_a": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red circle"}},
        "cond_b": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1],
                                                              "text": "a blue square on the left " * 20}},
        "travel_cond": {"class_type": "LSC_ConditioningInterpolate", "inputs": {
            "conditioning_a": ["cond_a", 0], "conditioning_b": ["cond_b", 0], "frames": 4, "t": 0.5,
            "t_start": 0.0, "t_end": 1.0, "method": "slerp", "easing": "linear", "around": ["negative", 0]}},
        "cond": capture("travel_cond", "cond"), "a": capture("cond_a", "a"), "b": capture("cond_b", "b"),
        "neg": capture("negative", "neg"),
    })
    result = comfy.run(prompt)
    assert result.ok, result.error
    images = result.captured["images"]
    assert images.shape == (4, 64, 64, 3) and torch.isfinite(images).all()
    (tokens, extra), = result.captured["cond"]
    (tokens_a, extra_a), = result.captured["a"]
    (tokens_b, extra_b), = result.captured["b"]
    (tokens_n, extra_n), = result.captured["neg"]
    assert tokens_b.shape[1] == 154 and tokens.shape == (4, 154, 32) and extra["pooled_output"].shape == (4, 32)
    ts = path_positions(4, 0, 1)
    names = ("a", "b", "around")
    torch.testing.assert_close(tokens, interpolate_embeddings(tokens_a, tokens_b, ts, "slerp", tokens_n, names))
    torch.testing.assert_close(extra["pooled_output"], interpolate_embeddings(
        extra_a["pooled_output"], extra_b["pooled_output"], ts, "slerp", extra_n["pooled_output"], names))
    torch.testing.assert_close(tokens[-1], tokens_b[0])
    assert extra_a["pooled_output"].shape == (1, 32), "the node changed its input conditioning"
