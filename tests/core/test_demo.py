"""The demo page: every panel shows what its node does on the reference world, decoded to pictures, with the oracle's
reading under each frame; the pictures are checked against the engine and the models run separately."""

import html
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latent_space_control.core.interpolation import interpolate_latents, path_positions
from latent_space_control.core.noise import seed_frames, seeded_noise
from latent_space_control.core.adapters import sigmas_from_alphas_cumprod
from latent_space_control.core.sampling import karras_sigmas, sample_euler
from latent_space_control.core.style import crossfaded_denoiser, schedule_position
from latent_space_control.core import objectives
from latent_space_control.core.optimize import few_step_sampler, optimise
from latent_space_control.core.directions import TEMPLATES
from latent_space_control.core.steering import (default_block, example_states, generate_text, hidden_states,
                                                 pooled_states, position_mask, steering, steering_vector,
                                                 transformer_blocks)
from latent_space_control.demo import (conditioning_interpolate_panel, direction_panel, guidance_panel,
                                       latent_analysis_panel, latent_interpolate_panel, latent_keyframes_panel,
                                       noise_travel_panel, optimize_panel, render_demo, steer_panel, style_panel)
from latent_space_control.demo.frames import reading_text
from latent_space_control.demo.page import write_png
from latent_space_control.demo.reference_panel import showcase_scenes
from latent_space_control.reference import grammar, models, oracle, world

READING = re.compile(r"(small|large) (\w+) (circle|square|triangle), (left|center|right), (white|black)"
                     r"|no shape, (white|black)")


def read_png(path) -> torch.Tensor:
    """A PNG as written by the demo: 8-bit RGB, [H, W, 3]."""
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return torch.from_numpy(np.array(image))


def to_bytes(pictures: torch.Tensor) -> torch.Tensor:
    """Pictures [N, 3, H, W] in 0..1 as the demo's 96×96 PNGs show them: 8-bit, each pixel a 3×3 block."""
    pixels = (pictures.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return pixels.repeat_interleave(3, 1).repeat_interleave(3, 2)


def pixel_gap(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest difference between two 8-bit pictures."""
    return int((a.int() - b.int()).abs().max())


def frames(out, text, name):
    """One row of frames on the page: per frame its mark (or None), its label, the oracle's reading and its pixels."""
    row = re.search(rf'<div class="frames" id="{name}">(.*?)</div>', text)
    assert row, f"no row of frames named {name}"
    figures = re.findall(r'<figure( class="marked")?><img src="([^"]+)" alt="[^"]*"><figcaption>(?:<b>([^<]+)</b><br>)?'
                         r"([^<]*)<br><i>oracle:</i> ([^<]*)</figcaption></figure>", row[1])
    assert len(figures) == row[1].count("<figure"), "every frame is a figure with a label and one reading"
    parsed = []
    for index, (marked, file, mark, label, reading) in enumerate(figures):
        assert file == f"{name}_{index:02d}.png" and bool(marked) == bool(mark)
        assert READING.fullmatch(reading), reading
        parsed.append({"mark": mark or None, "label": label, "reading": reading, "pixels": read_png(out / file)})
    return parsed


def figure(text, name):
    """The value of a row of a panel's figures table."""
    match = re.search(rf"<td>{re.escape(html.escape(name))}</td><td>([^<]+)</td>", text)
    assert match, f"no figure '{name}'"
    return match[1]


def panel(text, node_id):
    section = re.search(rf'<section id="{node_id}">(.*?)</section>', text, re.S)
    assert section, f"no panel for {node_id}"
    return section[1]


def test_png_round_trip(tmp_path):
    image = torch.rand(7, 5, 3)
    write_png(tmp_path / "x.png", image)
    assert torch.equal(read_png(tmp_path / "x.png"), (image * 255).round().to(torch.uint8))


@pytest.fixture(scope="module")
def family():
    pytest.importorskip("diffusers", reason="the demo runs the reference world: pip install -e '.[reference]'")
    return models.load()


@pytest.fixture(scope="module")
def demo(family, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    with torch.inference_mode():
        index = render_demo(out)
    return out, index.read_text()


def test_every_node_shown_has_a_panel_headed_by_its_display_name(demo):
    _, text = demo
    assert re.findall(r"<h2>([^<]+)</h2>", text) == [
        "Reference world", "Latent Interpolate (LSC)", "Latent Keyframes (LSC)", "Noise Travel (LSC)",
        "Conditioning Interpolate (LSC)", "Direction Sweep (LSC)", "Style Mix by Timestep (LSC)",
        "Latent Optimize (LSC)", "Text Steer (LSC)", "Guided Noise Inject (LSC)",
        "Attribute Correlation, Latent Scan, Latent Stats (LSC)"]


def test_reference_panel_shows_generated_pictures_with_oracle_readings(demo):
    out, text = demo
    captions = re.findall(r'<img src="sample_(\d+).png" alt="([^"]+)"><figcaption>([^<]+)<br><i>oracle:</i>', text)
    assert len(captions) == 18
    assert {caption for _, caption, _ in captions} == {scene.caption() for scene in showcase_scenes()}
    for number, caption, shown in captions:
        assert shown == caption and read_png(out / f"sample_{number}.png").shape == (96, 96, 3)
    seen = figure(text, "showcase above, pairs seen in training: oracle agrees with the caption (colour, shape)")
    assert all(float(value) >= 0.85 for value in seen.split(", "))
    held_out = figure(text, "showcase above, the held-out pairs (colour, shape)")
    assert all(0 <= float(value) <= 1 for value in held_out.split(", "))
    assert "LM: sentences in the grammar" in text and text.count("✓</li>") >= 5


def test_latent_interpolate_panel_decodes_the_nodes_slerp_and_lerp_between_two_pictures(demo, family):
    out, text = demo
    text = panel(text, "LSC_LatentInterpolate")
    ts = path_positions(latent_interpolate_panel.FRAMES, 0.0, 1.0)
    with torch.inference_mode():
        ends = family.encode(world.render_batch(list(latent_interpolate_panel.ENDS)))
        expected = {method: to_bytes(family.decode(interpolate_latents(ends[:1], ends[1:], ts, method)))
                    for method in ("slerp", "lerp")}
    rows = {method: frames(out, text, f"latent_interpolate_{method}") for method in ("slerp", "lerp")}
    for method, row in rows.items():
        assert len(row) == len(ts)
        assert [frame["label"].split(" · ")[0] for frame in row] == [f"t {t:.3f}" for t in ts]
        shown = torch.stack([frame["pixels"] for frame in row])
        assert shown.shape == (len(ts), 96, 96, 3)
        assert pixel_gap(shown, expected[method]) <= 1  # the engine's frames, decoded
        assert row[0]["reading"] == "large red circle, left, white"
        assert row[-1]["reading"] == "large red circle, right, white"
    # Both paths end exactly at the two pictures' latents, and part in between.
    slerp, lerp = rows["slerp"], rows["lerp"]
    assert torch.equal(slerp[0]["pixels"], lerp[0]["pixels"]) and torch.equal(slerp[-1]["pixels"], lerp[-1]["pixels"])
    middle = len(ts) // 2
    assert pixel_gap(slerp[middle]["pixels"], lerp[middle]["pixels"]) > 32
    slerp_ratio, lerp_ratio = map(float, figure(text, "middle frame's latent norm against the ends' mean norm: "
                                                      "slerp, lerp").split(", "))
    assert abs(slerp_ratio - 1.0) < 0.05 and lerp_ratio < 0.8
    assert "<svg" in text
    assert abs(float(figure(text, "lerp midpoint noise std")) - 0.707) < 0.05
    assert abs(float(figure(text, "slerp midpoint noise std")) - 1.0) < 0.05
    assert abs(float(figure(text, "variance_preserving midpoint noise std")) - 1.0) < 0.05


def test_latent_keyframes_panel_lands_every_keyframe_on_its_frame(demo, family):
    out, text = demo
    text = panel(text, "LSC_LatentKeyframes")
    per_segment, scenes = latent_keyframes_panel.FRAMES_PER_SEGMENT, latent_keyframes_panel.KEYFRAMES
    row = frames(out, text, "latent_keyframes")
    assert len(row) == (len(scenes) - 1) * per_segment + 1
    assert all(frame["pixels"].shape == (96, 96, 3) for frame in row)
    marked = {index: frame["mark"] for index, frame in enumerate(row) if frame["mark"]}
    assert marked == {k * per_segment: f"keyframe {k + 1}" for k in range(len(scenes))}
    with torch.inference_mode():
        keys = to_bytes(family.decode(family.encode(world.render_batch(list(scenes)))))
    for k, scene in enumerate(scenes):
        frame = row[k * per_segment]
        assert pixel_gap(frame["pixels"], keys[k]) <= 1
        assert frame["reading"] == f"{scene.size} {scene.colour} {scene.shape}, {scene.position}, {scene.background}"
    between = [frame["pixels"] for index, frame in enumerate(row) if index not in marked]
    assert not any(torch.equal(frame, key) for frame in between for key in keys)
    assert float(figure(text, "largest difference between a keyframe's frame and the keyframe latent")) == 0.0


def test_noise_travel_panel_puts_each_seeds_own_picture_on_its_frame(demo, family):
    out, text = demo
    text = panel(text, "LSC_NoiseTravel")
    seeds, count = noise_travel_panel.SEEDS, noise_travel_panel.FRAMES
    anchors = seed_frames(len(seeds), count)
    with torch.inference_mode():
        context = family.encode_text([""]).hidden_states
        own = [to_bytes(family.decode(family.sample_latents(context, seeded_noise(seed, (1, *models.LATENT_SHAPE)),
                                                            cfg_scale=1.0)))[0] for seed in seeds]
    travel, lerp = frames(out, text, "noise_travel"), frames(out, text, "noise_travel_lerp")
    for row in (travel, lerp):
        assert len(row) == count and all(frame["pixels"].shape == (96, 96, 3) for frame in row)
        assert {i: frame["mark"] for i, frame in enumerate(row) if frame["mark"]} == {
            frame: f"seed {seed}" for seed, frame in zip(seeds, anchors)}
        for frame, picture in zip(anchors, own):  # both paths pass through the seeds' noises exactly
            assert pixel_gap(row[frame]["pixels"], picture) <= 1
    between = [frame["pixels"] for i, frame in enumerate(travel) if i not in anchors]
    assert not any(torch.equal(frame, picture) for frame in between for picture in own)
    alone = frames(out, text, "noise_travel_seed")
    assert [frame["label"] for frame in alone] == [f"seed {seed} alone" for seed in seeds]
    assert all(pixel_gap(frame["pixels"], picture) <= 1 for frame, picture in zip(alone, own))
    # Every frame of the travel is unit noise; lerp's in-between frames are quieter.
    travel_stds = [float(frame["label"].split("noise std ")[1]) for frame in travel]
    lerp_stds = [float(frame["label"].split("noise std ")[1]) for frame in lerp]
    assert all(0.9 < std < 1.1 for std in travel_stds) and min(lerp_stds) < 0.75
    assert int(figure(text, f"seeds' frames ({', '.join(map(str, anchors))}) against each seed sampled alone: "
                            "largest pixel difference").split("/")[0]) <= 1


def test_conditioning_interpolate_panel_travels_from_caption_a_to_caption_b(demo, family):
    out, text = demo
    text = panel(text, "LSC_ConditioningInterpolate")
    row = frames(out, text, "conditioning_interpolate")
    ts = path_positions(conditioning_interpolate_panel.FRAMES, 0.0, 1.0)
    assert [frame["label"] for frame in row] == [f"t {t:.3f}" for t in ts]
    assert all(frame["pixels"].shape == (96, 96, 3) for frame in row)
    a, b = conditioning_interpolate_panel.ENDS
    assert row[0]["reading"] == "large red circle, left, white"
    assert row[-1]["reading"] == "large blue square, right, white"
    assert figure(text, "the oracle reads frame 0 as caption A") == "yes"
    assert figure(text, f"the oracle reads frame {len(ts) - 1} as caption B") == "yes"
    # One noise throughout: the end frames are the pictures each caption alone gives from that noise.
    with torch.inference_mode():
        a_alone, b_alone = (to_bytes(family.generate([scene.caption()], conditioning_interpolate_panel.NOISE_SEED))[0]
                            for scene in (a, b))
    assert pixel_gap(row[0]["pixels"], a_alone) <= 1
    assert pixel_gap(row[-1]["pixels"], b_alone) <= 1
    middle = row[len(ts) // 2]["pixels"]
    assert pixel_gap(middle, a_alone) > 32 and pixel_gap(middle, b_alone) > 32


def test_direction_sweep_panel_turns_red_shapes_blue_at_strength_one_and_a_random_direction_does_not(demo, family):
    out, text = demo
    text = panel(text, "LSC_DirectionSweep")
    strengths, scenes = direction_panel.STRENGTHS, direction_panel.CAPTIONS
    flip, still = strengths.index(1.0), strengths.index(0.0)
    swept = [frames(out, text, f"direction_sweep_{row}") for row in range(len(scenes))]
    random = [frames(out, text, f"direction_sweep_random_{row}") for row in range(len(scenes))]
    for row, mark in [(row, "flip point") for row in swept] + [(row, "strength 1") for row in random]:
        assert [frame["label"] for frame in row] == [f"strength {strength:+.1f}" for strength in strengths]
        assert {i: frame["mark"] for i, frame in enumerate(row) if frame["mark"]} == {flip: mark}
        assert all(frame["pixels"].shape == (96, 96, 3) for frame in row)
    for scene, row, random_row in zip(scenes, swept, random):
        caption = f"{scene.size} {{}} {scene.shape}, {scene.position}, {scene.background}"
        assert row[still]["reading"] == caption.format("red")
        assert all(" red " in frame["reading"] for frame in row[:still])  # pushed the other way: still red
        assert row[flip]["reading"] == caption.format("blue")  # only the colour flips
        assert not any(" blue " in frame["reading"] for frame in random_row)
    # One noise per row: strength 0 is the caption as written, sampled alone from its seed, in both blocks.
    with torch.inference_mode():
        alone = torch.cat([to_bytes(family.generate([scene.caption()], seed))
                           for scene, seed in zip(scenes, direction_panel.SEEDS)])
    for row, random_row, picture in zip(swept, random, alone):
        assert pixel_gap(row[still]["pixels"], picture) <= 1 and pixel_gap(random_row[still]["pixels"], picture) <= 1
    # The random direction is as large and does move the pictures; it just does not make them blue.
    assert max(pixel_gap(row[0]["pixels"], row[still]["pixels"]) for row in random) > 32
    with torch.inference_mode():
        norm = float(direction_panel.red_to_blue(family).norm())
    assert figure(text, "direction norm: red→blue, random") == f"{norm:.2f}, {norm:.2f}"
    blue = f"captions the oracle reads blue at strength {', '.join(f'{strength:g}' for strength in strengths)}"
    assert figure(text, f"{blue}: random") == ", ".join(["0"] * len(strengths))
    assert figure(text, f"{blue}: red→blue").split(", ")[flip] == str(len(scenes))


def test_style_mix_panel_switches_from_caption_a_to_b_and_counts_what_follows_a(demo, family):
    out, text = demo
    text = panel(text, "LSC_StyleMix")
    a, b, cutoffs, seeds = style_panel.A, style_panel.B, style_panel.CUTOFFS, style_panel.SEEDS
    rows = [frames(out, text, f"style_mix_{row}") for row in range(len(seeds))]
    column = {label: index for index, label in enumerate(style_panel.COLUMNS)}
    for row in rows:
        assert [frame["label"] for frame in row] == ["A alone", "B alone", *(f"cutoff {c:g}" for c in cutoffs)]
        assert all(frame["pixels"].shape == (96, 96, 3) for frame in row)
    # Each caption alone is what the reference world draws for it from that seed.
    with torch.inference_mode():
        alone = {scene: torch.cat([to_bytes(family.generate([scene.caption()], seed)) for seed in seeds])
                 for scene in (a, b)}
    for index, row in enumerate(rows):
        assert pixel_gap(row[column["A alone"]]["pixels"], alone[a][index]) <= 1
        assert pixel_gap(row[column["B alone"]]["pixels"], alone[b][index]) <= 1
    # A mix is the node's cross-fade run from the seed's noise, all the way: A before the cutoff, B from it on.
    with torch.inference_mode():
        captions = family.encode_text([a.caption(), b.caption()]).hidden_states
        training_sigmas = sigmas_from_alphas_cumprod(family.alphas_cumprod)
        mixed = crossfaded_denoiser(family.denoiser(captions[:1], 4.0), family.denoiser(captions[1:], 4.0),
                                    lambda sigma: schedule_position(sigma, training_sigmas), 0.9)
        sigmas = karras_sigmas(20, *family.sigma_range())
        latent = sample_euler(mixed, seeded_noise(seeds[0], (1, *models.LATENT_SHAPE)) * sigmas[0], sigmas)
        expected = to_bytes(family.decode(latent / family.scaling_factor))[0]
    assert pixel_gap(rows[0][column["cutoff 0.9"]]["pixels"], expected) <= 1
    # What the text says, frame by frame: layout first, then colour, shape last.
    def readings(label):
        return [row[column[label]]["reading"] for row in rows]
    assert readings("A alone") == ["large red circle, left, white"] * len(seeds)
    assert readings("B alone") == readings("cutoff 0.3") == ["large blue square, right, black"] * len(seeds)
    assert all(r.endswith(", left, white") and " red " not in r and " circle" not in r for r in readings("cutoff 0.6"))
    assert readings("cutoff 0.9") == ["large red square, left, white"] * len(seeds)
    assert readings("cutoff 0.97") == ["large red circle, left, white"] * len(seeds)
    assert not any(" blue circle" in r for c in cutoffs for r in readings(f"cutoff {c:g}"))  # A's shape, B's colour
    # The table and the curve count the frames above.
    group = {"colour": 2, "shape": 3, "position": 4, "background": 5}  # in READING
    counts = {}
    for attribute in style_panel.ATTRIBUTES:
        shown = figure(text, f"seeds (of {len(seeds)}) following A at cutoff 0 (B alone), "
                             f"{', '.join(f'{c:g}' for c in cutoffs)}: {attribute}")
        counts[attribute] = [int(value) for value in shown.split(", ")]
        assert counts[attribute] == [sum(READING.fullmatch(reading)[group[attribute]] == getattr(a, attribute)
                                         for reading in readings(label))
                                     for label in ["B alone", *(f"cutoff {c:g}" for c in cutoffs)]]
    settled = {attribute: next(c for c, n in zip((0.0, *cutoffs), values) if n == len(seeds))
               for attribute, values in counts.items()}
    assert settled["position"] == settled["background"] < settled["colour"] < settled["shape"]
    assert figure(text, f"seeds (of {len(seeds)}) where A alone / B alone reads as its caption") == \
        f"{len(seeds)}, {len(seeds)}"
    assert "<svg" in text and text.count("<polyline") == len(style_panel.ATTRIBUTES)


def shown_picture(frame) -> torch.Tensor:
    """A frame's 96×96 PNG back as the 32×32 picture [3, H, W] in 0..1 it shows (each pixel was a 3×3 block)."""
    return frame["pixels"][::3, ::3].permute(2, 0, 1).float() / 255


def polylines(text) -> list[list[tuple[float, float]]]:
    """Every curve of the panel's plots, in order: its points (x, y in SVG pixels, y downwards)."""
    return [[tuple(map(float, point.split(","))) for point in points.split()]
            for points in re.findall(r'<polyline points="([^"]+)"', text)]


def test_latent_optimize_panel_shows_the_optimised_pictures_their_readings_and_curves(demo, family):
    out, text = demo
    text = panel(text, "LSC_LatentOptimize")
    scenes = optimize_panel.EDITED
    clip_name = "CLIP text 'green'"
    # The edit recomputed from the engine: CLIP text "green" (8 views) + Keep Reference in picture space, weight 1,
    # at Latent Optimize's defaults.
    with torch.no_grad():
        start = family.encode(world.render_batch(list(scenes)))
        clip = objectives.clip_text(family.score_images, family.encode_text(["green"]).embedding, None, clip_name,
                                    view_count=8)
    keep = objectives.reference_distance("reference", "image")
    edit = optimise(start, objectives.combine([(clip, 1.0), (keep, 1.0)]), family.decode, steps=40, learning_rate=0.2,
                    smoothing=4.0)
    with torch.no_grad():
        before, after = to_bytes(family.decode(start)), to_bytes(family.decode(edit.variable))
    rows = [frames(out, text, f"latent_optimize_{index}") for index in range(len(scenes))]
    for index, (scene, row) in enumerate(zip(scenes, rows)):
        assert [frame["label"] for frame in row] == [
            "before (encoded)", f"after · CLIP {float(edit.readings[clip_name][index]):.2f}"]
        assert pixel_gap(row[0]["pixels"], before[index]) <= 1 and pixel_gap(row[1]["pixels"], after[index]) <= 1
        for frame in row:  # each reading is the oracle's on the picture shown above it
            assert frame["reading"] == reading_text(oracle.read(shown_picture(frame)))
        assert row[0]["reading"] == f"{scene.size} {scene.colour} {scene.shape}, {scene.position}, {scene.background}"
    # What the text says, picture by picture: red and yellow turn green and keep the rest, the blue and magenta
    # squares keep their colours.
    assert [row[1]["reading"] for row in rows] == [
        "large green circle, center, white", "large blue square, left, black", "large green circle, right, black",
        "large magenta square, center, white"]
    assert [row[1]["mark"] for row in rows] == [None, "not green", None, "not green"]
    assert pixel_gap(rows[0][0]["pixels"], rows[0][1]["pixels"]) > 32
    assert figure(text, "pictures the oracle reads green after the edit") == "2/4"
    assert figure(text, "pictures read green with shape, size, position and background kept") == "2/4"
    assert figure(text, "CLIP similarity to 'green' after the edit, per picture") == ", ".join(
        f"{value:.2f}" for value in edit.readings[clip_name].tolist())
    # Along the straight latent path from the magenta square to the green one CLIP is flat, then jumps.
    ts = [index / 10 for index in range(11)]
    with torch.no_grad():
        ends = family.encode(world.render_batch(list(optimize_panel.PATH_ENDS)))
        path = torch.cat([torch.lerp(ends[:1], ends[1:], t) for t in ts])
        similarity = objectives.evaluate(clip, path, path, None, family.decode)[0][clip_name].tolist()
    shown = figure(text, "CLIP similarity to 'green' along the magenta → green path at t "
                         + ", ".join(f"{t:g}" for t in ts))
    assert shown == ", ".join(f"{value:.2f}" for value in similarity)
    assert max(abs(value) for value in similarity[:5]) < 0.05 and min(similarity[5:]) > 0.35
    # Noise Optimize recomputed: the seed's noises through the 2-step Euler sampler (guidance 4), optimised 50
    # iterations at learning rate 0.1 towards CLIP text "green" with the Gaussian-shell prior.
    with torch.no_grad():
        context = family.encode_text([optimize_panel.PROMPT]).hidden_states
    sigmas = karras_sigmas(2, *family.sigma_range())
    generate = few_step_sampler(family.denoiser(context, 4.0), sigmas, lambda noise: noise * sigmas[0],
                                lambda x: x / family.scaling_factor)
    noise = seeded_noise(optimize_panel.NOISE_SEED, (2, *models.LATENT_SHAPE))
    found = optimise(noise, clip, family.decode, 50, 0.1, regulariser_name="gaussian_shell", regulariser_weight=1.0,
                     generate=generate)
    with torch.no_grad():
        plain, optimised = to_bytes(family.decode(generate(noise))), to_bytes(family.decode(found.latent))
    noise_rows = [frames(out, text, f"noise_optimize_{index}") for index in range(2)]
    for index, row in enumerate(noise_rows):
        assert pixel_gap(row[0]["pixels"], plain[index]) <= 1 and pixel_gap(row[1]["pixels"], optimised[index]) <= 1
        assert row[1]["label"] == f"optimised · CLIP {float(found.readings[clip_name][index]):.2f}"
        for frame in row:
            assert frame["reading"] == reading_text(oracle.read(shown_picture(frame)))
    assert [row[0]["reading"] for row in noise_rows] == ["large red circle, center, white"] * 2
    assert [oracle.read(shown_picture(row[1]))["colour"] for row in noise_rows] == ["green"] * 2
    assert figure(text, "Noise Optimize: pictures read green, plain seed / optimised") == "0/2, 2/2"
    # The curves: CLIP and Keep Reference per edit step, CLIP along the path, CLIP and the total per noise
    # iteration; both CLIP curves rise (SVG y grows downwards).
    curves = polylines(text)
    assert [len(curve) for curve in curves] == [40, 40, 11, 50, 50]
    assert curves[0][-1][1] < curves[0][0][1] and curves[3][-1][1] < curves[3][0][1]
    assert text.count(html.escape(clip_name)) >= 3


def sentences(text, name) -> list[tuple[str, str]]:
    """One list of the LM's sentences on the page: (sentence, the verdict shown beside it)."""
    block = re.search(rf'<div class="sentences" id="{name}">(.*?)</div>', text)
    assert block, f"no list of sentences named {name}"
    return [(html.unescape(sentence), html.unescape(verdict))
            for sentence, verdict in re.findall(r"<li><q>([^<]*)</q> — <i>([^<]*)</i></li>", block[1])]


def lm_sweep_rows(text) -> dict[str, list[int]]:
    """The LM sweep table: row label ("block 0: joyful", ...) -> the count per strength (of 16)."""
    table = re.search(r'<table id="text_steer_lm_sweep"[^>]*>(.*?)</table>', text)
    assert table, "no LM sweep table"
    header = re.findall(r"<th>([^<]+)</th>", table[1])
    assert header == ["strength", "0", "0.5", "1", "1.5", "2", "3", "4"]
    rows = {}
    for label, cells in re.findall(r"<tr><td>(block \d: [^<]+)</td>((?:<td>[^<]+</td>)+)</tr>", table[1]):
        counts = re.findall(r"<td>(\d+)/16</td>", cells)
        assert len(counts) == len(header) - 1, label
        rows[label] = [int(count) for count in counts]
    return rows


def test_text_steer_panel_steers_the_lm_mood_and_clip_colour_and_sweeps_strength_and_block(demo, family):
    out, text = demo
    text = panel(text, "LSC_TextSteer")
    assert "LSC_TextSteerGenerate" in text
    # The LM: a joyful−gloomy vector at block 0 from 40 example sentences of each mood, recomputed from the grammar
    # and the engine; each list is 8 sentences after "a" from one seed, at strength 0, +1.5 and −1.5.
    drawn = grammar.sentences(400, steer_panel.EXAMPLE_SEED)
    joyful = [sentence for sentence in drawn if grammar.parse(sentence)["mood"] == "joyful"][:40]
    gloomy = [sentence for sentence in drawn if grammar.parse(sentence)["mood"] == "gloomy"][:40]
    _, lm_blocks = transformer_blocks(family.lm)
    with torch.inference_mode():
        vector = steering_vector(example_states(family.lm, family.lm_tokenizer, joyful, lm_blocks, [0])[0],
                                 example_states(family.lm, family.lm_tokenizer, gloomy, lm_blocks, [0])[0])

    def written(block, vector, strength, count):
        with torch.inference_mode(), steering(lm_blocks, {block: vector}, strength):
            return ["a " + sentence for sentence in generate_text(family.lm, family.lm_tokenizer, "a", 24, 1.0, 1.0,
                                                                  steer_panel.LM_SEED, count)]

    lists = [sentences(text, f"text_steer_lm_{index}") for index in range(3)]
    for shown, strength in zip(lists, (0.0, 1.5, -1.5)):
        assert [sentence for sentence, _ in shown] == written(0, vector, strength, 8)
        for sentence, verdict in shown:  # the verdict is the parser's
            parsed = grammar.parse(sentence)
            assert verdict == ("✗ not in the language" if parsed is None else parsed["mood"])
    moods = [[verdict for _, verdict in shown] for shown in lists]
    assert moods[1].count("joyful") > moods[0].count("joyful") and moods[2].count("gloomy") > moods[0].count("gloomy")
    assert [m.count("joyful") for m in moods] == [4, 8, 0] and [m.count("gloomy") for m in moods] == [3, 0, 8]
    assert figure(text, "LM sentences (of 8) joyful, unsteered, +1.5, -1.5") == "4, 8, 0"
    assert figure(text, "LM sentences (of 8) in the language, unsteered, +1.5, -1.5") == "7, 8, 8"
    # CLIP: red−blue with Text Steer's defaults: at default_block of its 3 text blocks (block 0), over each prompt's
    # own tokens (the reference CLIP ends prompts with [EOS] and pads with [PAD]) and at strength 2, recomputed here;
    # 6 non-red captions drawn from one noise each, unsteered and steered.
    _, clip_blocks = transformer_blocks(family.clip.transformer)
    clip_block = default_block(len(clip_blocks))
    assert len(clip_blocks) == 3 and clip_block == 0

    def prompt_tokens(prompts):
        return position_mask(family.clip_tokenizer(prompts), "prompt_tokens", models.EOS, models.PAD)

    def pooled(word):
        prompts = [template.format(word) for template in TEMPLATES]
        states = hidden_states(lambda: family.encode_text(prompts), clip_blocks, [clip_block])[clip_block]
        return pooled_states(states, prompt_tokens(prompts))

    def steered_picture(caption, strength, seed):
        with steering(clip_blocks, {clip_block: red}, strength, prompt_tokens([caption])):
            context = family.encode_text([caption]).hidden_states
        noise = seeded_noise(seed, (1, *models.LATENT_SHAPE))
        return to_bytes(family.decode(family.sample_latents(context, noise)))[0]

    scenes = steer_panel.shown_scenes()
    assert len(scenes) == 6 and not any(scene.colour == "red" for scene in scenes)
    with torch.inference_mode():
        red = steering_vector(pooled("red"), pooled("blue"))
        steered_first = steered_picture(scenes[0].caption(), 2.0, steer_panel.NOISE_SEEDS[0])
        plain_first = to_bytes(family.generate([scenes[0].caption()], steer_panel.NOISE_SEEDS[0]))[0]
    plain, steered = frames(out, text, "text_steer_clip_plain"), frames(out, text, "text_steer_clip_steered")
    assert [frame["label"] for frame in plain] == [scene.caption() for scene in scenes]
    assert [frame["label"] for frame in steered] == ["steered +2"] * 6
    assert all(frame["pixels"].shape == (96, 96, 3) for frame in plain + steered)
    assert pixel_gap(plain[0]["pixels"], plain_first) <= 1 and pixel_gap(steered[0]["pixels"], steered_first) <= 1
    for row in (plain, steered):
        for frame in row:
            assert frame["reading"] == reading_text(oracle.read(shown_picture(frame)))
    assert "block 0 of the 3" in text and "token_positions <code>prompt_tokens</code>" in text
    assert "at strength 2, while" in text
    # What the text says: the blue triangle, the cyan circle, the magenta square and the green square turn red, the
    # cyan triangle reads yellow and the yellow circle stays; all six keep the rest of their caption.
    assert [scene.colour for scene in scenes] == ["blue", "cyan", "magenta", "cyan", "green", "yellow"]
    assert [scene.shape for scene in scenes] == ["triangle", "circle", "square", "triangle", "square", "circle"]
    for scene, before, after, colour in zip(scenes, plain, steered, ["red", "red", "red", "yellow", "red", "yellow"]):
        caption = f"{scene.size} {{}} {scene.shape}, {scene.position}, {scene.background}"
        assert before["reading"] == caption.format(scene.colour) and after["reading"] == caption.format(colour)
    assert figure(text, "captions (of 6) the oracle reads red: unsteered, steered") == "0, 4"
    assert figure(text, "captions (of 6) with shape, size, position and background as written: unsteered, "
                        "steered") == "6, 6"
    # The benchmark the text cites measures block 0 over the prompt's tokens at 2.5 on 64 captions.
    benchmark = (Path(steer_panel.__file__).parents[1] / "benchmarks" / "_steer_fidelity.py").read_text()
    assert all(re.search(rf"^{setting}$", benchmark, re.M) for setting in (
        'CLIP_LAYERS = "0"', 'CLIP_POSITIONS = "prompt_tokens"', r"CLIP_STRENGTH = 2\.5", "CLIP_PICTURES = 64"))
    assert "at strength 2.5 on 64 captions: 0.83 read red, 0.95 keep" in text
    # The sweep: one caption per block and strength from one noise, steered over its own tokens; strength 0 is the
    # caption unsteered; block 0 at 8 recomputed.
    sweep = {block: frames(out, text, f"text_steer_sweep_{block}") for block in (0, 1, 2)}
    with torch.inference_mode():
        alone = to_bytes(family.generate([steer_panel.SWEEP_SCENE.caption()], steer_panel.SWEEP_NOISE_SEED))[0]
        broken = steered_picture(steer_panel.SWEEP_SCENE.caption(), 8.0, steer_panel.SWEEP_NOISE_SEED)
    for row in sweep.values():
        assert [frame["label"] for frame in row] == [f"strength {s}" for s in ("0", "0.5", "1", "2", "4", "8")]
        assert pixel_gap(row[0]["pixels"], alone) <= 1
    assert pixel_gap(sweep[0][5]["pixels"], broken) <= 1
    # What the text says: green up to 1, red from 2 at every block, the layout kept except after block 0 at 8.
    for block in (1, 2):
        assert [frame["reading"] for frame in sweep[block]] == [
            "large green circle, left, white"] * 3 + ["large red circle, left, white"] * 3
    assert [frame["reading"] for frame in sweep[0]] == [
        "large green circle, left, white"] * 3 + ["large red circle, left, white"] * 2 + [
        "large red circle, right, white"]
    # The LM sweep: 16 sentences per block and strength, one seed; one cell recomputed from the engine.
    rows = lm_sweep_rows(text)
    assert list(rows) == ["block 0: joyful", "block 0: in the language", "block 1: joyful", "block 1: in the language"]
    with torch.inference_mode():
        block_1 = steering_vector(example_states(family.lm, family.lm_tokenizer, joyful, lm_blocks, [1])[1],
                                  example_states(family.lm, family.lm_tokenizer, gloomy, lm_blocks, [1])[1])
    parsed = [grammar.parse(sentence) for sentence in written(1, block_1, 3.0, 16)]
    assert rows["block 1: joyful"][5] == sum(p is not None and p["mood"] == "joyful" for p in parsed)
    assert rows["block 1: in the language"][5] == sum(p is not None for p in parsed)
    # What the text says: 13 of 16 joyful unsteered; from strength 1 every sentence in the language is joyful; one
    # or two fall out at 1 to 2, 9 and 8 remain at 3, 2 and 1 at 4.
    for block in (0, 1):
        joyful_counts, grammatical = rows[f"block {block}: joyful"], rows[f"block {block}: in the language"]
        assert joyful_counts[0] == 13 and joyful_counts[2:] == grammatical[2:]
        assert all(14 <= count <= 15 for count in grammatical[2:5])
    assert [rows["block 0: in the language"][5:], rows["block 1: in the language"][5:]] == [[9, 2], [8, 1]]


def test_guided_noise_inject_panel_turns_open_colour_prompts_green_and_lands_the_mixture_on_its_target(demo, family):
    out, text = demo
    text = panel(text, "LSC_GuidedNoiseInject")
    scenes = guidance_panel.open_colour_scenes()
    plain, guided = frames(out, text, "guidance_plain"), frames(out, text, "guidance_guided")
    assert len(plain) == len(guided) == len(scenes) == 8
    # The plain row is the family's own sampler from the panel's seed, the prompts with the colour left out.
    prompts = [scene.prompt(["size", "position", "background"]) for scene in scenes]
    assert [frame["label"] for frame in plain] == prompts
    with torch.inference_mode():
        noise = seeded_noise(guidance_panel.NOISE_SEED, (len(scenes), *models.LATENT_SHAPE))
        pictures = family.decode(family.sample_latents(family.encode_text(prompts).hidden_states, noise)).clamp(0, 1)
    for frame, picture in zip(plain, to_bytes(pictures)):
        assert pixel_gap(frame["pixels"], picture) <= 1
    green = [sum("green" in frame["reading"] for frame in row) for row in (plain, guided)]
    assert green[1] >= 6 and green[1] >= green[0] + 4, green
    kept = sum(frame["reading"].startswith(f"{scene.size} ") and frame["reading"].endswith(
        f"{scene.shape}, {scene.position}, {scene.background}") for frame, scene in zip(guided, scenes))
    assert kept >= 7
    assert figure(text, "plain pictures read green") == f"{green[0]} of 8"
    assert figure(text, "guided pictures read green") == f"{green[1]} of 8"
    plain_share, guided_share = map(float, figure(text, "analytic world: samples in the target component, plain → "
                                                        "guided").split(" → "))
    assert plain_share < 0.3 and guided_share >= 0.9
    # The mode histogram (3 components × weights, plain, guided, and a legend) and the schedule's four shapes.
    histogram, curves = re.findall(r"<svg.*?</svg>", text, re.S)
    assert histogram.count("<rect") == 3 * 3 + 3
    assert all(shape in curves for shape in ("constant", "ramp_down", "ramp_up", "bell"))


def test_latent_analysis_panel_charts_the_correlations_scans_the_found_direction_and_flags_scaled_latents(demo, family):
    out, text = demo
    text = panel(text, "LSC_AttributeCorrelation")
    scenes = latent_analysis_panel.BASES
    with torch.inference_mode():
        noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in latent_analysis_panel.SEEDS])
        bases = family.sample_latents(family.encode_text([scene.caption() for scene in scenes]).hidden_states, noise)
        pictures = to_bytes(family.decode(bases).clamp(0, 1))
    # Each scan row holds its base, sampled independently here, at strength 0, marked; every channel row the first.
    for index, scene in enumerate(scenes):
        row = frames(out, text, f"latent_scan_red_{index}")
        assert [frame["label"] for frame in row] == [f"red {s:+g}" for s in latent_analysis_panel.SCAN]
        base = latent_analysis_panel.SCAN.index(0.0)
        assert [frame["mark"] for frame in row] == ["base" if i == base else None for i in range(len(row))]
        assert pixel_gap(row[base]["pixels"], pictures[index]) <= 1
        assert row[base]["reading"].startswith(f"{scene.size} {scene.colour} {scene.shape}")
        assert all(pixel_gap(a["pixels"], b["pixels"]) > 8 for a, b in zip(row, row[1:])), "a step changed nothing"
    for channel in range(models.LATENT_SHAPE[0]):
        row = frames(out, text, f"latent_scan_channel_{channel}")
        assert pixel_gap(row[latent_analysis_panel.CHANNEL_SCAN.index(0.0)]["pixels"], pictures[0]) <= 1
    # The found direction is close to the oracle-labelled mean difference, found with no label.
    assert float(figure(text, "cosine of the found direction with the red − not-red mean difference")) >= 0.8
    # Two correlation charts (4 channels, 8 components; each value in -1..1) and the RMS chart (3 factors × 3 bases
    # and a legend of 3).
    channels, components, rms = re.findall(r"<svg.*?</svg>", text, re.S)
    assert channels.count("<rect") == 4 + 1 and components.count("<rect") == latent_analysis_panel.COMPONENTS + 1
    assert rms.count("<rect") == 3 * 3 + 3
    assert figure(text, "Latent Stats flags, latents as sampled") == "ok, ok, ok"
    assert figure(text, "Latent Stats flags, latents ×3") == "burnt, burnt, burnt"
    assert figure(text, "Latent Stats flags, latents ×0.2") == "washed out, washed out, washed out"
