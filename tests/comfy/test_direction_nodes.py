"""The direction nodes, executed by ComfyUI's own validator and executor: on the reference family (where the oracle
reads what a direction does to the pictures), on tiny CLIPs of every family, and fed bad input."""

import pytest
import torch
from safetensors.torch import save_file

import tiny_clips
from latent_space_control.core import directions
from latent_space_control.reference import oracle

SLIDER_STRENGTH = 1.0  # the documented strength at which the prompt-made red→blue direction turns red shapes blue
RED_CIRCLE = "a large red circle on the left, white background"


def loader():
    return {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}


def capture(source, label, slot=0):
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def from_clip(clip=("loader", 1), positive="blue", negative="red", templates="built-in", space="both",
              normalise="none", custom_templates="a {} thing"):
    return {"class_type": "LSC_DirectionFromCLIP", "inputs": {
        "clip": list(clip), "positive": positive, "negative": negative, "templates": templates,
        "custom_templates": custom_templates, "space": space, "normalise": normalise}}


def text(clip_source, prompt):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": [clip_source, 1], "text": prompt}}


def combo_options(node_class, name):
    spec = node_class.INPUT_TYPES()["required"][name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def ui_text(result, node):
    return "".join(result.outputs[node]["text"])


def test_direction_from_clip_is_the_engines_text_direction_in_one_pass(comfy, reference_family):
    result = comfy.run({"loader": loader(), "dir": from_clip(), "out": capture("dir", "direction")})
    assert result.ok, result.error
    direction = result.captured["direction"]
    assert type(direction).__name__ == "Direction" and direction.spaces == ("conditioning", "pooled")
    assert (direction.family, direction.encoder) == ("sd1", "clip_l")
    assert 3 <= direction.content_tokens <= 16
    assert "64-wide clip_l (sd1) conditioning direction" in ui_text(result, "dir")

    clip = reference_family[1]
    with torch.inference_mode():
        def one_by_one(prompts):
            outputs = [clip.encode_from_tokens(clip.tokenize(p), return_pooled=True) for p in prompts]
            return torch.cat([c for c, _ in outputs]), torch.cat([p for _, p in outputs])
        expected = directions.text_direction(one_by_one, ["blue"], ["red"], directions.TEMPLATES)
    for space in ("conditioning", "pooled"):
        assert (direction.vectors[space] - expected[space]).abs().max() < 1e-5, space


def _sweep_prompt(direction_node, start, end, steps, prompt_text=RED_CIRCLE, seed=3):
    return {
        "loader": loader(), "dir": direction_node,
        "pos": text("loader", prompt_text), "neg": text("loader", ""),
        "empty": {"class_type": "LSC_EmptyLatentForVAE",
                  "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": 1}},
        "sweep": {"class_type": "LSC_DirectionSweep", "inputs": {
            "direction": ["dir", 0], "start": start, "end": end, "steps": steps, "tokens": "all_tokens",
            "auto_scale": False, "conditioning": ["pos", 0], "latent": ["empty", 0]}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["loader", 0], "positive": ["sweep", 0], "negative": ["neg", 0], "latent_image": ["sweep", 1],
            "seed": seed, "steps": 20, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["loader", 2]}},
        "out": capture("decode", "images"), "cond_in": capture("pos", "cond_in"), "cond_out": capture("sweep", "cond"),
        "latent_out": capture("sweep", "latent", 1),
    }


def test_sweep_turns_a_red_circle_blue_and_keeps_everything_else(comfy):
    result = comfy.run(_sweep_prompt(from_clip(), 0.0, SLIDER_STRENGTH, 2))
    assert result.ok, result.error
    readings = oracle.read_batch(result.captured["images"].movedim(-1, 1))
    assert readings[0] == {"shape": "circle", "colour": "red", "size": "large", "position": "left",
                           "background": "white"}
    assert readings[1] == {**readings[0], "colour": "blue"}, readings[1]
    cond = result.captured["cond"][0][0]
    assert cond.shape[0] == 2 and torch.equal(cond[0], result.captured["cond_in"][0][0][0])  # strength 0: unchanged
    assert result.captured["latent"]["batch_index"] == [0, 0]  # one noise for every strength


def test_apply_direction_moves_the_conditioning_and_leaves_the_input_alone(comfy):
    prompt = {"loader": loader(), "dir": from_clip(space="conditioning"), "pos": text("loader", RED_CIRCLE),
              "apply": {"class_type": "LSC_ApplyDirection", "inputs": {
                  "direction": ["dir", 0], "strength": 0.5, "tokens": "prompt_tokens", "auto_scale": False,
                  "conditioning": ["pos", 0]}},
              "d": capture("dir", "direction"), "in": capture("pos", "in"), "out": capture("apply", "out")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    direction, before, after = result.captured["direction"], result.captured["in"], result.captured["out"]
    content = direction.content_tokens
    moved = after[0][0] - before[0][0]
    assert torch.allclose(moved[0, :content], 0.5 * direction.vectors["conditioning"][:content], atol=1e-6)
    assert not moved[0, content:].any()
    assert torch.equal(after[0][1]["pooled_output"], before[0][1]["pooled_output"])  # conditioning-only direction
    assert after[0][1] is not before[0][1]


def test_latent_directions_from_batches_pca_and_masked_apply(comfy):
    latent = lambda seed, batch: {"class_type": "LSCTest_Latent", "inputs": {  # noqa: E731
        "seed": seed, "batch": batch, "channels": 4, "length": 0, "height": 8, "width": 8}}
    mask = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}
    prompt = {"with": latent(1, 3), "without": latent(2, 2), "target": latent(3, 2), "mask": mask,
              "diff": {"class_type": "LSC_DirectionFromLatents",
                       "inputs": {"latent_with": ["with", 0], "latent_without": ["without", 0]}},
              "pca": {"class_type": "LSC_DirectionPCA", "inputs": {"component": 1, "report": 3, "latent": ["with", 0]}},
              "apply": {"class_type": "LSC_ApplyDirection", "inputs": {
                  "direction": ["diff", 0], "strength": 2.0, "tokens": "all_tokens", "auto_scale": False,
                  "latent": ["target", 0], "mask": ["mask", 0]}},
              "d": capture("diff", "diff"), "p": capture("pca", "pca"), "out": capture("apply", "out", 1),
              "in": capture("target", "in")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    expected_diff = (torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)).mean(0)
                     - torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2)).mean(0))
    assert torch.allclose(result.captured["diff"].vectors["latent"], expected_diff, atol=1e-6)
    assert torch.allclose(result.captured["out"]["samples"], result.captured["in"]["samples"] + 2 * expected_diff,
                          atol=1e-5)
    pca = result.captured["pca"].vectors["latent"]
    assert pca.shape == (4, 8, 8) and pca.norm() > 0
    assert "explained variance: 1:" in ui_text(result, "pca")


def test_combine_save_and_load_round_trip(comfy):
    prompt = {"loader": loader(), "colour": from_clip(), "size": from_clip(positive="large", negative="small"),
              "combine": {"class_type": "LSC_DirectionCombine", "inputs": {
                  "direction_a": ["colour", 0], "operation": "orthogonalise", "factor": 1.0,
                  "direction_b": ["size", 0]}},
              "save": {"class_type": "LSC_SaveDirection",
                       "inputs": {"direction": ["combine", 0], "filename_prefix": "lsc_test/bluer_not_larger"}},
              "out": capture("combine", "combined"), "size_out": capture("size", "size")}
    result = comfy.run(prompt)
    assert result.ok, result.error
    combined, size = result.captured["combined"], result.captured["size"]
    for space in combined.spaces:
        assert abs(float((combined.vectors[space] * size.vectors[space]).sum())) < 1e-3 * float(
            combined.vectors[space].norm() * size.vectors[space].norm())
    saved = ui_text(result, "save")
    assert "bluer_not_larger_00001.safetensors" in saved

    name = "lsc_test/bluer_not_larger_00001.safetensors"
    assert name in combo_options(comfy.node_class("LSC_LoadDirection"), "file")
    loaded = comfy.run({"load": {"class_type": "LSC_LoadDirection", "inputs": {"file": name}},
                        "out": capture("load", "loaded")})
    assert loaded.ok, loaded.error
    direction = loaded.captured["loaded"]
    assert (direction.family, direction.encoder) == ("sd1", "clip_l")
    assert all(torch.equal(direction.vectors[s], combined.vectors[s]) for s in combined.spaces)


def _directions_folder(comfy):
    from latent_space_control.nodes.model_folders import DIRECTIONS_FOLDER, register_folders

    register_folders()
    from latent_space_control.nodes.model_folders import folder_paths

    return folder_paths.get_folder_paths(DIRECTIONS_FOLDER)[0]


def test_load_direction_reads_condelta_files_and_refuses_others(comfy):
    from pathlib import Path

    root = Path(_directions_folder(comfy))
    condelta = root.parent / "ConDelta"
    condelta.mkdir(exist_ok=True)
    save_file({"conditioning_delta": torch.ones(1, 77, 64), "pooled_output": torch.ones(1, 64)},
              str(condelta / "warm.safetensors"))
    (root / "broken.safetensors").write_bytes(b"not a tensor file")
    save_file({"lora_down.weight": torch.ones(2, 2)}, str(root / "a_lora.safetensors"))
    options = combo_options(comfy.node_class("LSC_LoadDirection"), "file")
    assert "ConDelta/warm.safetensors" in options
    load = lambda name: comfy.run({"load": {"class_type": "LSC_LoadDirection", "inputs": {"file": name}},  # noqa: E731
                                   "out": capture("load", "loaded")})
    result = load("ConDelta/warm.safetensors")
    assert result.ok, result.error
    assert result.captured["loaded"].vectors["conditioning"].shape == (77, 64)
    assert "could not be read as safetensors" in load("broken.safetensors").error
    assert "holds tensors lora_down.weight and no direction header" in load("a_lora.safetensors").error


@pytest.mark.parametrize("node, message", [
    (from_clip(positive="  \n"), "positive is empty"),
    (from_clip(positive="red"), "encode exactly alike"),
    (from_clip(templates="custom", custom_templates=""), "custom_templates is empty"),
    (from_clip(templates="custom", custom_templates="no mark"), "custom_templates has the template 'no mark' with 0"),
])
def test_direction_from_clip_bad_inputs(comfy, node, message):
    result = comfy.run({"loader": loader(), "dir": node, "out": capture("dir", "d")})
    assert not result.ok and message in result.error, result.error


def test_apply_refuses_what_does_not_fit(comfy):
    tiny = {"class_type": "LSCTest_TinyCheckpoint", "inputs": {"ckpt_name": "tiny"}}
    base = {"loader": loader(), "tiny": tiny, "dir": from_clip()}
    result = comfy.run({**base, "pos": text("tiny", "a fox"), "apply": {"class_type": "LSC_ApplyDirection", "inputs": {
        "direction": ["dir", 0], "strength": 1.0, "tokens": "all_tokens", "auto_scale": False,
        "conditioning": ["pos", 0]}}, "out": capture("apply", "out")})
    assert not result.ok and "the direction is 64-wide but conditioning is 32-wide" in result.error
    latent = {"class_type": "LSCTest_Latent", "inputs": {"seed": 0, "batch": 1, "channels": 4, "length": 0,
                                                         "height": 8, "width": 8}}
    result = comfy.run({**base, "latent": latent, "apply": {"class_type": "LSC_ApplyDirection", "inputs": {
        "direction": ["dir", 0], "strength": 1.0, "tokens": "all_tokens", "auto_scale": False,
        "latent": ["latent", 0]}}, "out": capture("apply", "out", 1)})
    assert not result.ok and "expected a latent direction for a latent" in result.error
    result = comfy.run({**base, "apply": {"class_type": "LSC_ApplyDirection", "inputs": {
        "direction": ["dir", 0], "strength": 1.0, "tokens": "all_tokens", "auto_scale": False}},
        "out": capture("apply", "out")})
    assert not result.ok and "connect conditioning" in result.error
    zero = {"class_type": "LSC_DirectionCombine", "inputs": {"direction_a": ["dir", 0], "operation": "scale",
                                                             "factor": 0.0}}
    result = comfy.run({**base, "zero": zero, "norm": {"class_type": "LSC_DirectionCombine", "inputs": {
        "direction_a": ["zero", 0], "operation": "normalise", "factor": 1.0}}, "out": capture("norm", "out")})
    assert not result.ok and "zero norm" in result.error


@pytest.mark.parametrize("family", tiny_clips.FAMILIES)
def test_every_family_makes_and_applies_directions(comfy, family):
    """Direction from CLIP and Apply Direction on tiny CLIPs of SD1.5, SDXL, SD3 and Flux: the direction has the
    family's widths (SDXL: clip_l ‖ clip_g tokens and clip_g's pooled; SD3 and Flux: T5-wide tokens), and applying it
    to that family's conditioning moves tokens and pooled output by exactly strength × direction."""
    make, apply = comfy.node_class("LSC_DirectionFromCLIP"), comfy.node_class("LSC_ApplyDirection")
    with torch.inference_mode():
        clip = tiny_clips.BUILDERS[family]()
        direction = make.execute(clip=clip, positive="blue\nnavy", negative="red", templates="built-in",
                                 custom_templates="", space="both", normalise="none").result[0]
        cond, pooled = clip.encode_from_tokens(clip.tokenize("a red fox"), return_pooled=True)
        conditioning = [[cond, {"pooled_output": pooled}]]
        moved = apply.execute(direction=direction, strength=0.75, tokens="all_tokens", auto_scale=False,
                              conditioning=conditioning).result[0]
    assert direction.family == family
    assert direction.vectors["conditioning"].shape[-1] == cond.shape[-1]
    assert direction.vectors["pooled"].shape == pooled.shape[1:]
    tiled = directions.apply_to_tokens(cond, direction.vectors["conditioning"], 0.75)
    assert torch.allclose(moved[0][0], tiled, atol=1e-6)
    assert torch.allclose(moved[0][1]["pooled_output"], pooled + 0.75 * direction.vectors["pooled"], atol=1e-6)
    assert conditioning[0][0] is cond and torch.equal(conditioning[0][1]["pooled_output"], pooled)


def test_transfer_carries_an_sd15_direction_to_sdxl(comfy):
    make, transfer = comfy.node_class("LSC_DirectionFromCLIP"), comfy.node_class("LSC_DirectionTransfer")
    with torch.inference_mode():
        sd1, sdxl = tiny_clips.BUILDERS["sd1"](), tiny_clips.BUILDERS["sdxl"]()
        direction = make.execute(clip=sd1, positive="blue", negative="red", templates="none", custom_templates="",
                                 space="both", normalise="none").result[0]
        output = transfer.execute(direction=direction, source_clip=sd1, target_clip=sdxl,
                                  anchors="\n".join(directions.ANCHOR_PROMPTS))
        carried = output.result[0]
        cond, pooled = sdxl.encode_from_tokens(sdxl.tokenize("a fox"), return_pooled=True)
    assert (carried.family, carried.encoder) == ("sdxl", "clip_l+clip_g")
    assert carried.vectors["conditioning"].shape == (cond.shape[1], cond.shape[2])
    assert carried.vectors["pooled"].shape == pooled.shape[1:]
    assert "R²" in "".join(output.ui.as_dict()["text"]) and "transferred_from" in carried.provenance
    with pytest.raises(ValueError, match="anchors has 2 prompt"):
        transfer.execute(direction=direction, source_clip=sd1, target_clip=sdxl, anchors="a\nb")
