"""Every shipped workflow, converted from its UI format and executed by ComfyUI: on tiny models, and on the reference
family, where the oracle reads what the pictures show."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from latent_space_control.reference import oracle, world
from ui_to_api import ui_to_api

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))
# Real model loaders become the tiny test checkpoint; sizes and step counts shrink so a CPU runs them in seconds.
TINY = {"CheckpointLoaderSimple": "LSCTest_TinyCheckpoint"}
FAST = {"EmptyLatentImage": {"width": 64, "height": 64}, "ImageScale": {"width": 64, "height": 64},
        "BasicScheduler": {"steps": 2}, "KSampler": {"steps": 2}, "LSC_LatentDirectionFromCLIP": {"steps": 2}}


def write_input_images(comfy, workflow):
    from PIL import Image

    for node in workflow["nodes"]:
        if node["type"] == "LoadImage":
            gradient = torch.linspace(0, 255, 96).to(torch.uint8)
            pixels = torch.stack([gradient.expand(96, 96), gradient.expand(96, 96).T, gradient.flip(0).expand(96, 96)], -1)
            Image.frombytes("RGB", (96, 96), bytes(pixels.flatten().tolist())).save(comfy.input_dir / node["widgets_values"][0])


def test_workflows_are_shipped():
    assert {path.name for path in WORKFLOWS} >= {"lsc_morph_animation.json", "lsc_interpolate_images.json",
                                                 "lsc_reference_tour.json", "lsc_prompt_slider.json",
                                                 "lsc_latent_direction_edit.json", "lsc_direction_library.json",
                                                 "lsc_style_mix_timestep.json", "lsc_style_mix_blocks_sdxl.json",
                                                 "lsc_latent_adain.json", "lsc_style_align_batch.json",
                                                 "lsc_clip_guided_edit.json", "lsc_noise_optimize_turbo.json",
                                                 "lsc_color_constraint.json", "lsc_text_encoder_steer.json",
                                                 "lsc_llm_prompt_writer.json", "lsc_clip_guided_sampling.json",
                                                 "lsc_semantic_guidance.json", "lsc_detail_noise_injection.json",
                                                 "lsc_directional_noise.json", "lsc_latent_scan.json",
                                                 "lsc_find_direction_from_examples.json"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_workflow_runs_in_comfyui(comfy, path):
    workflow = json.loads(path.read_text())
    types = {node["type"] for node in workflow["nodes"]}
    assert "Note" in types or "MarkdownNote" in types, "every workflow explains itself in a Note"
    assert any(t.startswith("LSC_") for t in types)
    write_input_images(comfy, workflow)
    prompt = ui_to_api(workflow, comfy.node_class, replace=TINY, overrides=FAST)
    result = comfy.run(prompt)
    assert result.ok, result.error
    saved = [image for output in result.outputs.values() for image in output.get("images", [])]
    assert saved, "the workflow saved or previewed no image"
    for image in saved:
        folder = comfy.output_dir if image["type"] == "output" else comfy.output_dir.parent / "temp"
        assert (folder / image["subfolder"] / image["filename"]).is_file()


def test_converter_refuses_widget_values_that_do_not_fit_the_node(comfy):
    workflow = json.loads(WORKFLOWS[0].read_text())
    node = next(n for n in workflow["nodes"] if n["type"].startswith("LSC_"))
    node["widgets_values"].append("surplus")
    with pytest.raises(ValueError, match="widget values but its inputs take"):
        ui_to_api(workflow, comfy.node_class)


# ---- on the reference family ------------------------------------------------------------------------------------

SCENE_A = world.Scene("circle", "red", "large", "left", "white")
SCENE_B = world.Scene("square", "blue", "small", "right", "black")


def _by_title(workflow, title):
    return next(str(node["id"]) for node in workflow["nodes"] if node.get("title") == title)


def _source_of(workflow, node_id, input_name):
    """The id of the node feeding ``input_name`` of node ``node_id``."""
    node = next(n for n in workflow["nodes"] if str(n["id"]) == node_id)
    link = next(slot["link"] for slot in node["inputs"] if slot["name"] == input_name)
    return str(next(l[1] for l in workflow["links"] if l[0] == link))


def _decoded(prompt, sampler_id):
    """Capture the pictures the VAEDecode after ``sampler_id`` makes."""
    decode = next(key for key, node in prompt.items()
                  if node["class_type"] == "VAEDecode" and node["inputs"]["samples"][0] == sampler_id)
    prompt[f"capture_{decode}"] = {"class_type": "LSCTest_Capture",
                                   "inputs": {"value": [decode, 0], "label": sampler_id}}
    return sampler_id


def _assert_reads(image, scene, label):
    reading = oracle.read_batch(image[None].movedim(-1, 1))[0]
    assert reading == scene.attributes(), f"{label}: expected {scene.caption()!r}, read {reading}"


def _tour(workflow, prompt):
    """Prompt A's pictures read as Prompt A; seed travel's first and last frames (the two seeds' own pictures) too;
    prompt travel starts at A and ends at B."""
    for title, scene in (("Prompt A", SCENE_A), ("Prompt B", SCENE_B)):
        assert prompt[_by_title(workflow, title)]["inputs"]["text"] == scene.caption()
    checks = {_decoded(prompt, _by_title(workflow, "Text to image (Prompt A)")): "t2i",
              _decoded(prompt, _by_title(workflow, "Seed travel")): "seeds",
              _decoded(prompt, _by_title(workflow, "Prompt travel")): "prompts"}

    def check(captured):
        by_name = {name: captured[key] for key, name in checks.items()}
        for i, image in enumerate(by_name["t2i"]):
            _assert_reads(image, SCENE_A, f"text to image, picture {i + 1}")
        for i in (0, -1):
            _assert_reads(by_name["seeds"][i], SCENE_A, f"seed travel, frame {i}")
        _assert_reads(by_name["prompts"][0], SCENE_A, "prompt travel, first frame")
        _assert_reads(by_name["prompts"][-1], SCENE_B, "prompt travel, last frame")
    return check


def _morph(workflow, prompt):
    """Prompt A and B become reference captions: the animation starts at A and ends at B."""
    travel = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_ConditioningInterpolate")
    for name, text in (("conditioning_a", SCENE_A.caption()), ("conditioning_b", SCENE_B.caption()), ("around", "")):
        prompt[_source_of(workflow, travel, name)]["inputs"]["text"] = text
    sampler = _decoded(prompt, next(k for k, n in prompt.items()
                                              if n["class_type"] == "SamplerCustomAdvanced"))

    def check(captured):
        _assert_reads(captured[sampler][0], SCENE_A, "first frame")
        _assert_reads(captured[sampler][-1], SCENE_B, "last frame")
    return check


def _interpolate_images(workflow, prompt):
    """Image A and B are reference pictures: the raw latent blend starts as A and ends as B."""
    blend = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_LatentInterpolate")
    frames = _decoded(prompt, blend)

    def check(captured):
        _assert_reads(captured[frames][0], SCENE_A, "first frame")
        _assert_reads(captured[frames][-1], SCENE_B, "last frame")
    return check


def _kept(reading, scene):
    return {name: value for name, value in reading.items() if name != "colour"} == {
        name: value for name, value in scene.attributes().items() if name != "colour"}


def _prompt_slider(workflow, prompt):
    """The slider sweeps a red→blue direction over the tour's red circle: the frame at strength 0 is the prompt's own
    picture, the frame at strength 1 is blue; every frame keeps shape, size, position and background."""
    assert prompt[_by_title(workflow, "Prompt")]["inputs"]["text"] == SCENE_A.caption()
    sweep = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_DirectionSweep")
    inputs = prompt[sweep]["inputs"]
    strengths = [inputs["start"] + (inputs["end"] - inputs["start"]) * i / (inputs["steps"] - 1)
                 for i in range(inputs["steps"])]
    sampler = _decoded(prompt, next(k for k, n in prompt.items() if n["class_type"] == "KSampler"))

    def check(captured):
        frames = captured[sampler]
        assert frames.shape[0] == len(strengths)
        readings = oracle.read_batch(frames.movedim(-1, 1))
        assert readings[strengths.index(0.0)] == SCENE_A.attributes(), readings
        assert readings[strengths.index(1.0)]["colour"] == "blue", readings
        assert all(_kept(reading, SCENE_A) for reading in readings), readings
    return check


def _direction_library(workflow, prompt):
    """The combined colour-not-size direction is saved and turns the small red square blue, still small."""
    scene = world.Scene("square", "red", "small", "center", "black")
    assert prompt[_by_title(workflow, "Prompt")]["inputs"]["text"] == scene.caption()
    sampler = _decoded(prompt, next(k for k, n in prompt.items() if n["class_type"] == "KSampler"))
    save = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_SaveDirection")
    prompt[f"capture_{save}"] = {"class_type": "LSCTest_Capture",
                                 "inputs": {"value": prompt[save]["inputs"]["direction"], "label": "saved"}}

    def check(captured):
        for reading in oracle.read_batch(captured[sampler].movedim(-1, 1)):
            assert reading == {**scene.attributes(), "colour": "blue"}, reading
        assert set(captured["saved"].spaces) == {"conditioning", "pooled"}
    return check


def _latent_direction_edit(workflow, prompt):
    """The picture is the tour's red circle. The CLIP-found offset must move it the way its prompts say, as the
    reference CLIP judges it (closer to the positive prompts, further from the negative ones), by a clear margin.
    (The oracle does not yet read a clean blue circle from one picture's offset: see the README's figures.)"""
    from latent_space_control.reference import models

    find = next(n for n in workflow["nodes"] if n["type"] == "LSC_LatentDirectionFromCLIP")
    apply = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_ApplyDirection")
    edited = _decoded(prompt, apply)
    original = _decoded(prompt, next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "VAEEncode"))
    positive, negative = (prompt[str(find["id"])]["inputs"][name].splitlines() for name in ("positive", "negative"))

    def check(captured):
        _assert_reads(captured[original][0], SCENE_A, "the encoded picture")
        family = models.load()
        with torch.inference_mode():
            text = family.encode_text(positive + negative).embedding
            towards = text[:len(positive)].mean(0) - text[len(positive):].mean(0)
            scores = [float(family.score_images(captured[key].movedim(-1, 1)) @ towards) for key in (original, edited)]
        assert scores[1] > scores[0] + 0.1, f"CLIP score towards the positive prompts: {scores[0]:.3f} → {scores[1]:.3f}"
    return check


def _readings(images):
    return oracle.read_batch(images.movedim(-1, 1))


def _style_mix_timestep(workflow, prompt):
    """Structure prompt A until the cutoff, style prompt B after it. The reference family settles size, position,
    background and colour before the workflow's cutoff and the shape after it: A's picture drawn as B's shape."""
    assert prompt[_by_title(workflow, "Structure prompt (A)")]["inputs"]["text"] == SCENE_A.caption()
    assert prompt[_by_title(workflow, "Style prompt (B)")]["inputs"]["text"] == SCENE_B.caption()
    mix = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_StyleMix")
    assert 0 < prompt[mix]["inputs"]["cutoff"] < 1 and prompt[mix]["inputs"]["window"] == 0
    sampler = _decoded(prompt, next(k for k, n in prompt.items() if n["class_type"] == "KSampler"))

    def check(captured):
        for reading in _readings(captured[sampler]):
            assert reading == {**SCENE_A.attributes(), "shape": SCENE_B.shape}, reading
    return check


def _style_mix_blocks(workflow, prompt):
    """The prompt alone draws A; with the style block fed B, A's size, position and background stay and the shape
    and colour come from elsewhere: B's square, no longer A's red."""
    assert prompt[_by_title(workflow, "Prompt (what the picture shows)")]["inputs"]["text"] == SCENE_A.caption()
    style = _by_title(workflow, "Style prompt (fed to the style block)")
    assert prompt[style]["inputs"]["text"] == SCENE_B.caption()
    styled = _decoded(prompt, _by_title(workflow, "Sampler (style block mixed)"))
    plain = _decoded(prompt, _by_title(workflow, "Sampler (the prompt alone)"))

    def check(captured):
        for reading in _readings(captured[plain]):
            assert reading == SCENE_A.attributes(), reading
        for reading in _readings(captured[styled]):
            kept = {name: reading[name] for name in ("size", "position", "background")}
            assert kept == {name: getattr(SCENE_A, name) for name in kept}, reading
            assert reading["shape"] == SCENE_B.shape and reading["colour"] != SCENE_A.colour, reading
    return check


def _latent_adain(workflow, prompt):
    """A's latent with B's channel statistics: B's black background, A's large size."""
    mix = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_LatentStyleMix")
    assert prompt[mix]["inputs"]["mode"] == "adain" and prompt[mix]["inputs"]["strength"] == 1.0
    mixed = _decoded(prompt, mix)
    a, b = (_decoded(prompt, prompt[mix]["inputs"][name][0]) for name in ("latent_a", "latent_b"))

    def check(captured):
        for source, scene in ((a, SCENE_A), (b, SCENE_B)):
            for reading in _readings(captured[source]):
                assert reading == scene.attributes(), reading
        for reading in _readings(captured[mixed]):
            assert (reading["background"], reading["size"]) == (SCENE_B.background, SCENE_A.size), reading
    return check


def _style_align_batch(workflow, prompt):
    """The aligned batch's first picture is the one drawn without Style Align; the others change, and every picture
    still shows what the prompt asks for."""
    text = prompt[_by_title(workflow, "Prompt")]["inputs"]["text"]
    asked = {"shape": "circle", "size": "large", "position": "center", "background": "white"}
    assert all(word in text for word in ("large", "circle", "middle", "white"))
    aligned = _decoded(prompt, _by_title(workflow, "Sampler (aligned)"))
    plain = _decoded(prompt, _by_title(workflow, "Sampler (without Style Align)"))

    def check(captured):
        pictures, before = captured[aligned], captured[plain]
        assert pictures.shape[0] == 4
        assert (pictures[0] - before[0]).abs().max() < 1e-4
        assert all((pictures[i] - before[i]).abs().max() > 0.03 for i in range(1, 4))  # ~0.07-0.25 at these seeds
        for reading in _readings(pictures):
            assert {name: reading[name] for name in asked} == asked, reading
    return check


def _clip_similarity(images, text, views=1):
    """The reference CLIP's similarity [B] of ``images`` [B, H, W, 3] to ``text`` over ``views`` views: what
    Objective: CLIP Text reads."""
    from latent_space_control.core.objectives import view_embedding
    from latent_space_control.reference import models

    family = models.load()
    with torch.inference_mode():
        embedding = torch.nn.functional.normalize(family.encode_text([text]).embedding[0].float(), dim=0)
        return view_embedding(family.score_images, images.movedim(-1, 1), views) @ embedding


def _picture_edit(workflow, prompt):
    """The encoded picture (the tour's red circle), the edited one, and the colour the CLIP text asks for."""
    colour = prompt[str(next(n["id"] for n in workflow["nodes"] if n["type"] == "LSC_ObjectiveCLIPText"))]["inputs"]
    assert colour["positive"] in world.COLOURS, colour
    edited = _decoded(prompt, next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_LatentOptimize"))
    original = _decoded(prompt, next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "VAEEncode"))
    return original, edited, colour["positive"]


def _clip_guided_edit(workflow, prompt):
    """CLIP text "green" weighed against keeping the picture turns the red circle green and keeps its shape, size,
    position and background."""
    original, edited, colour = _picture_edit(workflow, prompt)

    def check(captured):
        _assert_reads(captured[original][0], SCENE_A, "the encoded picture")
        _assert_reads(captured[edited][0], replace(SCENE_A, colour=colour), "the edited picture")
    return check


def _color_constraint(workflow, prompt):
    """Keep the picture subject to CLIP similarity to "green" at least the threshold: the edited picture meets the
    threshold, reads green, and keeps the red circle's shape, size, position and background."""
    original, edited, colour = _picture_edit(workflow, prompt)
    constraint = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_ObjectiveConstraint")
    threshold = prompt[constraint]["inputs"]["threshold"]
    views = prompt[prompt[constraint]["inputs"]["objective"][0]]["inputs"]["views"]

    def check(captured):
        _assert_reads(captured[original][0], SCENE_A, "the encoded picture")
        similarity = float(_clip_similarity(captured[edited], colour, views)[0])
        assert similarity >= threshold - 0.01, f"CLIP similarity to {colour!r} {similarity:.3f} < {threshold}"
        _assert_reads(captured[edited][0], replace(SCENE_A, colour=colour), "the edited picture")
    return check


def _noise_optimize_turbo(workflow, prompt):
    """The prompt leaves the colour open ("a large circle in the middle, white background"): SamplerCustomAdvanced
    fed the optimised NOISE draws exactly what Noise Optimize scored, a green circle as asked, which CLIP finds far
    greener than what the same seed's plain noise draws."""
    scene = world.Scene("circle", "green", "large", "center", "white")
    sample = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "SamplerCustomAdvanced")
    optimise = prompt[sample]["inputs"]["noise"][0]
    inputs = prompt[optimise]["inputs"]
    assert prompt[inputs["objective"][0]]["inputs"]["positive"] == scene.colour
    prompt[inputs["positive"][0]]["inputs"]["text"] = scene.prompt(("size", "position", "background"))
    sigmas = prompt[prompt[sample]["inputs"]["sigmas"][0]]["inputs"]
    assert (sigmas["scheduler"], sigmas["steps"]) == (inputs["scheduler"], inputs["sampler_steps"])
    assert prompt[prompt[sample]["inputs"]["guider"][0]]["inputs"]["cfg"] == inputs["cfg"]
    prompt["plain_noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": inputs["seed"]}}
    prompt["plain_sample"] = {"class_type": "SamplerCustomAdvanced",
                              "inputs": {**prompt[sample]["inputs"], "noise": ["plain_noise", 0]}}
    prompt["plain_decode"] = {"class_type": "VAEDecode",
                              "inputs": {"samples": ["plain_sample", 0], "vae": inputs["vae"]}}
    optimised, plain = _decoded(prompt, sample), _decoded(prompt, "plain_sample")
    for key, source in (("sampled", [sample, 0]), ("scored", [optimise, 1])):
        prompt[f"capture_{key}"] = {"class_type": "LSCTest_Capture", "inputs": {"value": source, "label": key}}

    def check(captured):
        assert (captured["sampled"]["samples"] - captured["scored"]["samples"]).abs().max() < 1e-3
        _assert_reads(captured[optimised][0], scene, "the picture from the optimised noise")
        before, after = (float(_clip_similarity(captured[key], scene.colour)[0]) for key in (plain, optimised))
        assert after > before + 0.2, f"CLIP similarity to {scene.colour!r}: plain noise {before:.3f}, optimised {after:.3f}"
    return check


def _text_encoder_steer(workflow, prompt):
    """The prompt becomes a green circle's caption: through the red-vs-blue steered CLIP it is drawn red, with its
    shape, size, position and background kept; through the plain CLIP, with the same seed, green as asked."""
    scene = world.Scene("circle", "green", "large", "left", "white")
    vector = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_SteerVectorFromPrompts")
    assert (prompt[vector]["inputs"]["positive"], prompt[vector]["inputs"]["negative"]) == ("red", "blue")
    prompt[_by_title(workflow, "Prompt")]["inputs"]["value"] = scene.caption()
    steered = _decoded(prompt, _by_title(workflow, "KSampler (steered)"))
    plain = _decoded(prompt, _by_title(workflow, "KSampler (plain, same seed)"))

    def check(captured):
        _assert_reads(captured[plain][0], scene, "the plain CLIP's picture")
        _assert_reads(captured[steered][0], replace(scene, colour="red"), "the steered CLIP's picture")
    return check


def _llm_prompt_writer(workflow, prompt):
    """The built-in reference LM, steered towards its joyful examples, writes a joyful sentence of its language;
    each text, as the prompt, is drawn as it says (shape, colour, size, position)."""
    from latent_space_control.reference import grammar

    generate = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_TextSteerGenerate")
    inputs = prompt[generate]["inputs"]
    assert inputs["strength"] > 0 and all(grammar.parse(line)["mood"] == "joyful"
                                          for line in inputs["positive_examples"].splitlines())
    prompt["capture_texts"] = {"class_type": "LSCTest_Capture", "inputs": {"value": [generate, 0], "label": "text"}}
    prompt["capture_unsteered"] = {"class_type": "LSCTest_Capture",
                                   "inputs": {"value": [generate, 1], "label": "unsteered"}}
    pictures = {"text": _decoded(prompt, _by_title(workflow, "KSampler (steered text)")),
                "unsteered": _decoded(prompt, _by_title(workflow, "KSampler (unsteered text)"))}

    def check(captured):
        for label, key in pictures.items():
            assert inputs["include_prompt"], "the texts are whole sentences, the prompt 'a' included"
            sentence = grammar.parse(captured[label])
            assert sentence is not None, f"the {label} text {captured[label]!r} is not in the LM's language"
            reading = oracle.read_batch(captured[key][0][None].movedim(-1, 1))[0]
            expected = {name: sentence[name] for name in ("shape", "colour", "size", "position")}
            assert {name: reading[name] for name in expected} == expected, (captured[label], reading)
            if label == "text":
                assert sentence["mood"] == "joyful", captured[label]
    return check


def _detail_noise_injection(workflow, prompt):
    """The tour's red circle, sampled through Noise Inject and plainly from the same seed: both pictures read as the
    prompt, and the injected one differs from the plain one (new detail, same subject)."""
    inject = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_NoiseInject")
    assert prompt[inject]["inputs"]["amount"] > 0
    prompt[_by_title(workflow, "Prompt")]["inputs"]["text"] = SCENE_A.caption()
    injected = _decoded(prompt, _by_title(workflow, "KSampler (noise injected)"))
    plain = _decoded(prompt, _by_title(workflow, "KSampler (plain, same seed)"))

    def check(captured):
        _assert_reads(captured[plain][0], SCENE_A, "the plain picture")
        _assert_reads(captured[injected][0], SCENE_A, "the noise-injected picture")
        assert (captured[injected] - captured[plain]).abs().mean() > 0.005, "injection changed nothing"
    return check


def _directional_noise(workflow, prompt):
    """A red-minus-blue direction from same-seed batches of red and blue circles; the prompt leaves the colour open.
    Over a batch of 16, the tilted noise draws more red circles and fewer blue ones than RandomNoise with the same
    seed (benchmarks: red 14 % → 35 %, blue 18 % → 0 % at strength 4), and every picture keeps the prompt's shape,
    size, position and background."""
    scene = world.Scene("circle", "red", "large", "center", "white")
    for title, text in (("Towards", scene.caption()), ("Away from", replace(scene, colour="blue").caption()),
                        ("Prompt", scene.prompt(("size", "position", "background")))):
        prompt[_by_title(workflow, title)]["inputs"]["text"] = text
    prompt[_by_title(workflow, "Picture")]["inputs"]["batch_size"] = 16
    tilted = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_DirectionalNoise")
    random = _by_title(workflow, "RandomNoise (same seed)")
    assert prompt[tilted]["inputs"]["seed"] == prompt[random]["inputs"]["noise_seed"]
    assert prompt[tilted]["inputs"]["strength"] > 0
    leaning = _decoded(prompt, _by_title(workflow, "Sample (directional noise)"))
    plain = _decoded(prompt, _by_title(workflow, "Sample (RandomNoise, same seed)"))

    def check(captured):
        before, after = _readings(captured[plain]), _readings(captured[leaning])

        def count(readings, colour):
            return sum(reading["colour"] == colour for reading in readings)
        assert count(after, "red") > count(before, "red"), (before, after)
        assert count(after, "blue") < count(before, "blue"), (before, after)
        assert all(_kept(reading, scene) for reading in after + before), (before, after)
    return check


def _clip_guided_sampling(workflow, prompt):
    """The prompt becomes one that leaves the colour open: the guided KSampler draws it green, as the CLIP objective
    asks, with the shape, size, position and background the prompt names; the plain one, same seed, another colour."""
    scene = world.Scene("square", "green", "large", "left", "black")
    objective = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_ObjectiveCLIPText")
    assert prompt[objective]["inputs"]["positive"] == scene.colour
    prompt[_by_title(workflow, "Prompt")]["inputs"]["text"] = scene.prompt(("size", "position", "background"))
    guided = _decoded(prompt, _by_title(workflow, "KSampler (guided)"))
    plain = _decoded(prompt, _by_title(workflow, "KSampler (plain, same seed)"))

    def check(captured):
        _assert_reads(captured[guided][0], scene, "the guided picture")
        reading = oracle.read_batch(captured[plain][0][None].movedim(-1, 1))[0]
        assert reading["colour"] != scene.colour, f"the plain picture is already {scene.colour}: {reading}"
    return check


def _semantic_guidance(workflow, prompt):
    """The prompt becomes a blue square's caption, the concept added "red" and the concept removed "blue": the guided
    picture is drawn red with its shape, size, position and background kept; the plain one, from the same seed, as
    the caption says."""
    scene = world.Scene("square", "blue", "large", "left", "white")
    guides = {prompt[str(n["id"])]["inputs"]["direction"]: str(n["id"])
              for n in workflow["nodes"] if n["type"] == "LSC_SemanticGuidance"}
    assert set(guides) == {"add", "remove"} and all(prompt[g]["inputs"]["scale"] > 0 for g in guides.values())
    prompt[_by_title(workflow, "Prompt")]["inputs"]["text"] = scene.caption()
    for direction, concept in (("add", "red"), ("remove", "blue")):
        prompt[_source_of(workflow, guides[direction], "concept")]["inputs"]["text"] = concept
    guided = _decoded(prompt, _by_title(workflow, "KSampler (guided)"))
    plain = _decoded(prompt, _by_title(workflow, "KSampler (plain, same seed)"))

    def check(captured):
        _assert_reads(captured[plain][0], scene, "the plain picture")
        _assert_reads(captured[guided][0], replace(scene, colour="red"), "the guided picture")
    return check


def _latent_scan(workflow, prompt):
    """The base is the tour's red circle; Direction PCA's first component of 8 circles from 8 seeds is scanned from
    -2 to 2 std around it: the middle picture is the base picture itself and reads as its caption, every step of the
    scan changes the picture, the labels name each strength, and Latent Stats flags none of the latents within one
    std (the ±2 std ends break the circle on this family and are flagged burnt)."""
    prompt[_by_title(workflow, "Prompt")]["inputs"]["text"] = SCENE_A.caption()
    prompt[_by_title(workflow, "Variety prompt")]["inputs"]["text"] = "a large circle in the middle, white background"
    scan = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_LatentScan")
    stats = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_LatentStats")
    assert prompt[scan]["inputs"]["mode"] == "direction" and prompt[scan]["inputs"]["steps"] == 5
    assert prompt[scan]["inputs"]["start"] == -prompt[scan]["inputs"]["end"]  # symmetric: the middle is the base
    scanned = _decoded(prompt, scan)
    loader = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    prompt["decode_base"] = {"class_type": "VAEDecode", "inputs": {
        "samples": [_by_title(workflow, "KSampler (base)"), 0], "vae": [loader, 2]}}
    prompt["capture_base"] = {"class_type": "LSCTest_Capture", "inputs": {"value": ["decode_base", 0], "label": "base"}}
    prompt["capture_labels"] = {"class_type": "LSCTest_Capture", "inputs": {"value": [scan, 1], "label": "labels"}}
    prompt["capture_flags"] = {"class_type": "LSCTest_Capture", "inputs": {"value": [stats, 2], "label": "flags"}}

    def check(captured):
        pictures = captured[scanned]
        assert pictures.shape[0] == 5
        assert torch.allclose(pictures[2], captured["base"][0], atol=1e-4), "the scan's middle is not the base"
        _assert_reads(pictures[2], SCENE_A, "the scan's middle picture")
        changes = (pictures[1:] - pictures[:-1]).abs().mean((1, 2, 3))
        assert bool((changes > 0.002).all()), f"a step of the scan changed nothing: {changes}"
        assert all(reading["shape"] != "none" for reading in oracle.read_batch(pictures.movedim(-1, 1)))
        assert captured["labels"].splitlines() == [f"PCA component 1 {t:+.2f}" for t in (-2, -1, 0, 1, 2)]
        assert captured["flags"].splitlines()[1:4] == ["ok"] * 3, captured["flags"]
    return check


def _find_direction_from_examples(workflow, prompt):
    """The examples become reference scenes: three red shapes, then the same scenes in other colours, and the
    picture a blue circle; CLIP "red" scores the examples. The sweep's strength-0 frame is the picture as sampled
    (blue); at strength 3 the direction Attribute Correlation found has turned it red, keeping its shape, size,
    position and background (benchmarks: analysis_correlation_moves_color)."""
    red = [world.Scene("circle", "red", "large", "left", "white"), world.Scene("square", "red", "small", "right", "black"),
           world.Scene("triangle", "red", "large", "center", "white")]
    other = [replace(red[0], colour="blue"), replace(red[1], colour="green"), replace(red[2], colour="yellow")]
    for i, scene in enumerate(red + other):
        prompt[_by_title(workflow, f"Example {i + 1}")]["inputs"]["text"] = scene.caption()
    base = world.Scene("circle", "blue", "large", "center", "white")
    prompt[_by_title(workflow, "Prompt")]["inputs"]["text"] = base.caption()
    objective = next(str(n["id"]) for n in workflow["nodes"] if n["type"] == "LSC_ObjectiveCLIPText")
    assert prompt[objective]["inputs"]["positive"] == "red"
    sweep = _by_title(workflow, "Sweep: strength 0 to 3")
    inputs = prompt[sweep]["inputs"]
    assert (inputs["start"], inputs["end"], inputs["steps"]) == (0.0, 3.0, 4)
    swept = _decoded(prompt, sweep)

    def check(captured):
        readings = _readings(captured[swept])
        assert readings[0] == base.attributes(), readings
        assert readings[-1] == replace(base, colour="red").attributes(), readings
    return check


MEANINGS = {"lsc_style_mix_timestep": _style_mix_timestep, "lsc_style_mix_blocks_sdxl": _style_mix_blocks,
            "lsc_latent_adain": _latent_adain, "lsc_style_align_batch": _style_align_batch,
            "lsc_latent_direction_edit": _latent_direction_edit, "lsc_reference_tour": _tour, "lsc_morph_animation": _morph, "lsc_interpolate_images": _interpolate_images,
            "lsc_prompt_slider": _prompt_slider, "lsc_direction_library": _direction_library,
            "lsc_clip_guided_edit": _clip_guided_edit, "lsc_color_constraint": _color_constraint,
            "lsc_noise_optimize_turbo": _noise_optimize_turbo, "lsc_text_encoder_steer": _text_encoder_steer,
            "lsc_llm_prompt_writer": _llm_prompt_writer, "lsc_detail_noise_injection": _detail_noise_injection,
            "lsc_directional_noise": _directional_noise, "lsc_latent_scan": _latent_scan,
            "lsc_find_direction_from_examples": _find_direction_from_examples, "lsc_clip_guided_sampling": _clip_guided_sampling,
            "lsc_semantic_guidance": _semantic_guidance}


def write_reference_pictures(comfy, prompt):
    """LoadImage nodes load reference-world pictures: the first Scene A, the others Scene B."""
    from PIL import Image

    loads = [node for _, node in sorted(prompt.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)
             if node["class_type"] == "LoadImage"]
    for i, (node, scene) in enumerate(zip(loads, [SCENE_A] + [SCENE_B] * (len(loads) - 1))):
        pixels = (world.render(scene).movedim(0, -1) * 255).round().to(torch.uint8)
        node["inputs"]["image"] = f"lsc_reference_{i}.png"
        Image.fromarray(pixels.numpy()).save(comfy.input_dir / node["inputs"]["image"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_workflow_on_the_reference_family_shows_what_it_says(comfy, path):
    workflow = json.loads(path.read_text())
    assert path.stem in MEANINGS, f"{path.name}: say what its pictures must show on the reference family"
    prompt = ui_to_api(workflow, comfy.node_class, reference=True)
    check = MEANINGS[path.stem](workflow, prompt)
    write_reference_pictures(comfy, prompt)
    result = comfy.run(prompt)
    assert result.ok, result.error
    check(result.captured)
