"""The style-mixing nodes, executed by ComfyUI's own validator and executor: the conditioning schedule StyleMix builds,
the block and shared-attention patches on the reference family (bypass, effect, no leak into the unpatched model),
the latent mixes on latents of every shape, and bad input."""

import pytest
import torch

from latent_space_control.core import style
from latent_space_control.reference import oracle
from test_interpolate_nodes import capture, expected_latent, latent

RED_CIRCLE = "a large red circle in the middle, white background"
BLUE_SQUARE = "a large blue square in the middle, white background"
STEPS = 12  # enough for the reference family to draw a readable shape


def loader():
    return {"class_type": "LSC_ReferenceModelLoader", "inputs": {}}


def text(prompt, clip=("loader", 1)):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": list(clip), "text": prompt}}


def style_mix(structure="a", style_source="b", cutoff=0.5, window=0.0):
    return {"class_type": "LSC_StyleMix", "inputs": {"structure": [structure, 0], "style": [style_source, 0],
                                                     "cutoff": cutoff, "window": window}}


def mix_blocks(blocks="style", weight=1.0, block_weights="", start=0.0, end=1.0, model=("loader", 0)):
    return {"class_type": "LSC_StyleMixBlocks", "inputs": {
        "model": list(model), "style": ["b", 0], "blocks": blocks, "weight": weight, "block_weights": block_weights,
        "start_percent": start, "end_percent": end}}


def style_align(normalise=True, start=0.0, end=1.0, strength=1.0):
    return {"class_type": "LSC_StyleAlign", "inputs": {"model": ["loader", 0], "normalise": normalise,
                                                       "start_percent": start, "end_percent": end,
                                                       "strength": strength}}


def latent_mix(mode="adain", strength=1.0, cutoff=4.0, channels="0", per_frame=False, a="a", b="b", mask=None):
    inputs = {"latent_a": [a, 0], "latent_b": [b, 0], "mode": mode, "strength": strength, "cutoff": cutoff,
              "channels": channels, "per_frame": per_frame}
    if mask:
        inputs["mask"] = [mask, 0]
    return {"class_type": "LSC_LatentStyleMix", "inputs": inputs}


def reference_graph(batch=1):
    """The reference family with prompts A (a red circle) and B (a blue square); ``sampler`` adds KSamplers."""
    return {"loader": loader(), "a": text(RED_CIRCLE), "b": text(BLUE_SQUARE), "neg": text(""),
            "empty": {"class_type": "LSC_EmptyLatentForVAE",
                      "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": batch}}}


def sampler(graph, name, positive, model=("loader", 0), seed=1):
    """A KSampler ``name`` and a capture of its latent under the label ``name``."""
    graph[name] = {"class_type": "KSampler", "inputs": {
        "model": list(model), "positive": [positive, 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
        "seed": seed, "steps": STEPS, "cfg": 4.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}}
    graph[f"capture_{name}"] = capture(name, name)


def samples(result, name):
    return result.captured[name]["samples"]


def readings(reference_family, latents):
    with torch.inference_mode():
        return oracle.read_batch(reference_family[2].decode(latents).movedim(-1, 1))


# ---- Style Mix by Timestep --------------------------------------------------------------------------------------

def _entries(conditioning):
    return [(extra.get("start_percent"), extra.get("end_percent"), extra.get("strength")) for _, extra in conditioning]


def test_style_mix_hard_switch_gives_each_prompt_its_part_of_the_schedule(comfy):
    result = comfy.run({**reference_graph(), "mix": style_mix(cutoff=0.4), "out": capture("mix", "mixed"),
                        "in_a": capture("a", "a"), "in_b": capture("b", "b")})
    assert result.ok, result.error
    mixed, a, b = (result.captured[name] for name in ("mixed", "a", "b"))
    assert _entries(mixed) == [(0.0, 0.4, 1.0), (0.4, 1.0, 1.0)]
    assert mixed[0][0] is a[0][0] and mixed[1][0] is b[0][0]  # the tokens themselves are passed on
    assert torch.equal(mixed[0][1]["pooled_output"], a[0][1]["pooled_output"])
    assert torch.equal(mixed[1][1]["pooled_output"], b[0][1]["pooled_output"])
    assert mixed[0][1] is not a[0][1] and set(a[0][1]) == set(b[0][1]) == {"pooled_output"}  # inputs untouched


def test_style_mix_window_cross_fades_in_pieces(comfy):
    result = comfy.run({**reference_graph(), "mix": style_mix(cutoff=0.5, window=0.2), "out": capture("mix", "mixed"),
                        "in_a": capture("a", "a")})
    assert result.ok, result.error
    mixed, a = result.captured["mixed"], result.captured["a"]
    from_a = [extra for tokens, extra in mixed if tokens is a[0][0]]
    from_b = [extra for tokens, extra in mixed if tokens is not a[0][0]]
    # A alone before the window, B alone after it; inside (0.4..0.6), both over the same pieces, weights adding to 1
    assert (from_a[0]["start_percent"], from_a[0]["end_percent"], from_a[0]["strength"]) == (0.0, 0.4, 1.0)
    assert (from_b[-1]["start_percent"], from_b[-1]["end_percent"], from_b[-1]["strength"]) == (0.6, 1.0, 1.0)
    inside_a, inside_b = from_a[1:], from_b[:-1]
    assert len(inside_a) == len(inside_b) == 8
    for piece_a, piece_b in zip(inside_a, inside_b):
        assert (piece_a["start_percent"], piece_a["end_percent"]) == pytest.approx(
            (piece_b["start_percent"], piece_b["end_percent"]))
        assert piece_a["end_percent"] - piece_a["start_percent"] == pytest.approx(0.2 / 8)
        assert piece_a["strength"] + piece_b["strength"] == pytest.approx(1.0)
        middle = (piece_a["start_percent"] + piece_a["end_percent"]) / 2
        u = (middle - 0.4) / 0.2  # smoothstep across the window
        assert piece_b["strength"] == pytest.approx(u * u * (3 - 2 * u))
    strengths_b = [piece["strength"] for piece in inside_b]
    assert strengths_b == sorted(strengths_b) and 0 < strengths_b[0] < 0.05 and 0.95 < strengths_b[-1] < 1


def test_style_mix_keeps_each_entrys_own_range_and_strength(comfy):
    """A two-entry structure (one limited to 0.2..0.6 by ConditioningSetTimestepRange) and a style at strength 0.5
    (ConditioningSetAreaStrength): each entry's range is intersected with its source's part, its strength kept."""
    graph = {**reference_graph(), "c": text("a triangle"),
             "a_range": {"class_type": "ConditioningSetTimestepRange",
                         "inputs": {"conditioning": ["a", 0], "start": 0.2, "end": 0.6}},
             "both": {"class_type": "ConditioningCombine",
                      "inputs": {"conditioning_1": ["a_range", 0], "conditioning_2": ["c", 0]}},
             "b_half": {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": ["b", 0],
                                                                                "strength": 0.5}},
             "late_b": {"class_type": "ConditioningSetTimestepRange",
                        "inputs": {"conditioning": ["b", 0], "start": 0.1, "end": 0.3}},
             "mix": style_mix("both", "b_half", cutoff=0.4), "out": capture("mix", "mixed"),
             "mix_empty": style_mix("both", "late_b", cutoff=0.4), "out_empty": capture("mix_empty", "late"),
             "in": capture("both", "structure"), "in_b": capture("b_half", "style")}
    result = comfy.run(graph)
    assert result.ok, result.error
    assert _entries(result.captured["mixed"]) == [(0.2, 0.4, 1.0), (0.0, 0.4, 1.0), (0.4, 1.0, 0.5)]
    # the style entry's own range (0.1..0.3) ends before the cutoff: nothing of it is left
    assert _entries(result.captured["late"]) == [(0.2, 0.4, 1.0), (0.0, 0.4, 1.0)]
    assert _entries(result.captured["structure"]) == [(0.2, 0.6, None), (None, None, None)]
    assert _entries(result.captured["style"]) == [(None, None, 0.5)]


def test_style_mix_cutoff_0_is_the_style_prompt_and_1_the_structure_prompt_exactly(comfy, reference_family):
    graph = {**reference_graph(), "mix_0": style_mix(cutoff=0.0), "mix_1": style_mix(cutoff=1.0),
             "mix_late": style_mix(cutoff=0.9)}
    for name, positive in (("plain_a", "a"), ("plain_b", "b"), ("cut_0", "mix_0"), ("cut_1", "mix_1"),
                           ("cut_late", "mix_late")):
        sampler(graph, name, positive)
    result = comfy.run(graph)
    assert result.ok, result.error
    assert torch.equal(samples(result, "cut_0"), samples(result, "plain_b"))
    assert torch.equal(samples(result, "cut_1"), samples(result, "plain_a"))
    a, b, late = readings(reference_family, torch.cat([samples(result, n) for n in ("plain_a", "plain_b", "cut_late")]))
    assert (a["shape"], a["colour"], b["shape"], b["colour"]) == ("circle", "red", "square", "blue")
    # The reference family settles the colour before 90 % of the schedule and the shape after: A's colour, B's shape.
    assert (late["shape"], late["colour"]) == ("square", "red"), late


@pytest.mark.parametrize("empty", ["structure", "style"])
def test_style_mix_refuses_an_empty_conditioning(comfy, empty):
    """No core node makes an empty conditioning, so the node is called as the executor would."""
    one = [[torch.zeros(1, 77, 64), {}]]
    inputs = {"structure": one, "style": one, empty: []}
    with torch.inference_mode(), pytest.raises(ValueError, match=f"{empty} is an empty conditioning"):
        comfy.node_class("LSC_StyleMix").execute(**inputs, cutoff=0.5, window=0.0)


# ---- Style Mix by Block -----------------------------------------------------------------------------------------

def _no_leak_graph(patch_node, batch=1):
    """The original model samples after the patched one has (its latent, times 0, is the original's start: zeros, as
    the empty latent's), so a patch left on the shared model would show."""
    graph = {**reference_graph(batch), "patch": patch_node}
    sampler(graph, "patched", "a", model=("patch", 0))
    graph["after_patched"] = {"class_type": "LatentMultiply", "inputs": {"samples": ["patched", 0], "multiplier": 0.0}}
    sampler(graph, "original", "a")
    graph["original"]["inputs"]["latent_image"] = ["after_patched", 0]
    return graph


def _plain_run(comfy, batch=1, prompt=RED_CIRCLE):
    graph = {**reference_graph(batch), "a": text(prompt)}
    sampler(graph, "plain", "a")
    result = comfy.run(graph)
    assert result.ok, result.error
    return result


def test_style_mix_blocks_at_weight_0_or_outside_its_window_is_the_plain_model(comfy):
    graph = {**reference_graph(), "weight_0": mix_blocks(weight=0.0),
             "closed": mix_blocks("coarse", start=0.5, end=0.5), "all_0": mix_blocks("custom", block_weights="all:0")}
    for model in ("loader", "weight_0", "closed", "all_0"):
        sampler(graph, f"sample_{model}", "a", model=(model, 0))
    result = comfy.run(graph)
    assert result.ok, result.error
    for model in ("weight_0", "closed", "all_0"):
        assert torch.equal(samples(result, f"sample_{model}"), samples(result, "sample_loader")), model


def test_style_mix_blocks_presets_change_the_picture_and_leave_the_original_model_alone(comfy, reference_family):
    plain_result = _plain_run(comfy)
    result = comfy.run(_no_leak_graph(mix_blocks("style")))
    assert result.ok, result.error
    assert torch.equal(samples(result, "original"), samples(plain_result, "plain"))
    before, after = readings(reference_family, torch.cat([samples(plain_result, "plain"), samples(result, "patched")]))
    assert (before["shape"], before["colour"]) == ("circle", "red")
    assert (after["shape"], after["colour"]) != ("circle", "red"), after  # the style block took B's prompt


def test_style_mix_blocks_custom_weights_add_to_a_preset(comfy):
    graph = {**reference_graph(), "preset": mix_blocks("style"),
             "same": mix_blocks("custom", block_weights="output_1"),
             "more": mix_blocks("style", block_weights="input_1: 0.5\nmiddle_0;output_3:-0.25")}
    for name in ("preset", "same", "more"):
        graph[f"model_{name}"] = capture(name, f"model_{name}")
    result = comfy.run(graph)
    assert result.ok, result.error

    def patch(name):
        return result.captured[f"model_{name}"].model_options["transformer_options"]["patches"]["attn2_patch"][-1]

    assert patch("preset").weights == patch("same").weights == {("output", 1): 1.0}
    assert patch("more").weights == {("output", 1): 1.0, ("input", 1): 0.5, ("middle", 0): 1.0, ("output", 3): -0.25}
    assert torch.equal(patch("more").style_tokens, patch("preset").style_tokens)


@pytest.mark.parametrize("inputs, message", [
    ({"blocks": "custom", "block_weights": "input_99"}, "block_weights: 'input_99' is not a block of this model"),
    ({"block_weights": "output_1:strong"}, "block_weights: 'output_1:strong' has weight 'strong'"),
    ({"blocks": "custom", "block_weights": " , "}, "block_weights is empty with blocks = custom"),
    ({"start": 0.6, "end": 0.2}, "end_percent (0.2) is before start_percent (0.6)"),
])
def test_style_mix_blocks_bad_inputs(comfy, inputs, message):
    node = mix_blocks(**inputs)
    result = comfy.run({**reference_graph(), "blocks": node, "out": capture("blocks", "model")})
    assert not result.ok and message in result.error, result.error


def test_style_mix_blocks_refuses_a_style_from_another_text_encoder(comfy):
    graph = {**reference_graph(), "tiny": {"class_type": "LSCTest_TinyCheckpoint", "inputs": {"ckpt_name": "tiny"}},
             "b": text(BLUE_SQUARE, clip=("tiny", 1)), "blocks": mix_blocks(), "out": capture("blocks", "model")}
    result = comfy.run(graph)
    assert not result.ok and "style holds 32-wide tokens but the model reads 64-wide ones" in result.error, result.error


def test_block_patches_refuse_a_model_that_is_neither_unet_nor_dit(comfy):
    """Style Mix by Block knows UNets, Flux and SD3 (tests/comfy/test_style_dit.py); Style Align UNets only."""
    from comfy import model_management, model_patcher

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    with torch.inference_mode():
        model = model_patcher.ModelPatcher(Other(), load_device=model_management.get_torch_device(),
                                           offload_device=model_management.unet_offload_device())
        style_conditioning = [[torch.zeros(1, 77, 4), {}]]
        with pytest.raises(ValueError, match=r"model is a ModuleList; expected a UNet \(SD1.5, SDXL, the reference "
                                             r"family\), Flux or SD3 model"):
            comfy.node_class("LSC_StyleMixBlocks").execute(model, style_conditioning, "style", 1.0, "", 0.0, 1.0)
        with pytest.raises(ValueError, match=r"model is a ModuleList; expected a UNet model \(SD1.5, SDXL"):
            comfy.node_class("LSC_StyleAlign").execute(model, True, 0.0, 1.0, 1.0)


# SD1.5's and SDXL's block layouts (depths and levels as in ComfyUI's detected configs), at toy widths, as whole
# models that sample (test_style_block_layouts.py checks the presets' names on the full-depth layouts).
TINY_UNETS = {
    "sd15": ("SD15", {"model_channels": 32, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
                      "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
                      "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "context_dim": 32,
                      "use_linear_in_transformer": False, "adm_in_channels": None}),
    "sdxl": ("SDXL", {"model_channels": 32, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
                      "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
                      "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1], "context_dim": 64,
                      "use_linear_in_transformer": True, "adm_in_channels": 2816, "num_classes": "sequential",
                      "num_head_channels": 16}),
}


RELATIVE_ROUNDING = 1e-5  # float32 noise relative to the scale of a random model's latents (hundreds, not ~1)


def tiny_unet(kind):
    from comfy import model_management, model_patcher, supported_models
    from lsc_test_nodes import _initialise

    config_class, shape = TINY_UNETS[kind]
    config = getattr(supported_models, config_class)({
        "image_size": 32, "in_channels": 4, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
        "use_temporal_attention": False, "use_temporal_resblock": False, "use_checkpoint": False,
        "dtype": torch.float32, **shape})
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    _initialise(base, 7)
    return model_patcher.ModelPatcher(base, load_device=model_management.get_torch_device(),
                                      offload_device=model_management.unet_offload_device())


def _tiny_sample(model, conditioning, batch=1, seed=0):
    from comfy import sample

    latent = torch.zeros(batch, 4, 8, 8)
    noise = sample.prepare_noise(latent, seed)
    negative = [[torch.zeros_like(conditioning[0][0]), dict(conditioning[0][1])]]
    return sample.sample(model, noise, 3, 4.0, "euler", "karras", conditioning, negative, latent,
                         disable_pbar=True, seed=seed)


def _tiny_prompts(kind):
    """A prompt and a style prompt in the tiny model's widths (SDXL also reads a pooled vector and the size)."""
    width = TINY_UNETS[kind][1]["context_dim"]
    generator = torch.Generator().manual_seed(len(kind))
    extra = {"pooled_output": torch.randn(1, 1280, generator=generator)} if kind == "sdxl" else {}
    return ([[torch.randn(1, 77, width, generator=generator), extra]],
            [[torch.randn(1, 77, width, generator=generator) * 3, extra]])


@pytest.mark.parametrize("kind", TINY_UNETS)
def test_style_mix_blocks_on_sd15_and_sdxl_unets(comfy, kind):
    """Sampling SD1.5- and SDXL-shaped models: the style preset changes the sample, weight 0 does not, and the model
    it was given samples as before."""
    node = comfy.node_class("LSC_StyleMixBlocks")
    prompt, style_prompt = _tiny_prompts(kind)
    with torch.inference_mode():
        model = tiny_unet(kind)
        plain = _tiny_sample(model, prompt)
        styled = _tiny_sample(node.execute(model, style_prompt, "style", 1.0, "", 0.0, 1.0).result[0], prompt)
        unweighted = _tiny_sample(node.execute(model, style_prompt, "coarse", 0.0, "", 0.0, 1.0).result[0], prompt)
        again = _tiny_sample(model, prompt)
    assert (styled - plain).abs().max() > 100 * RELATIVE_ROUNDING * plain.abs().max()
    assert torch.equal(unweighted, plain) and torch.equal(again, plain)


@pytest.mark.parametrize("kind", TINY_UNETS)
def test_style_align_on_sd15_and_sdxl_unets(comfy, kind):
    prompt, _ = _tiny_prompts(kind)
    with torch.inference_mode():
        model = tiny_unet(kind)
        plain = _tiny_sample(model, prompt, batch=3)
        aligned = _tiny_sample(comfy.node_class("LSC_StyleAlign").execute(model, True, 0.0, 1.0, 3.0).result[0],
                               prompt, batch=3)
        again = _tiny_sample(model, prompt, batch=3)
    change = [float((aligned[i] - plain[i]).abs().max() / plain[i].abs().max()) for i in range(3)]
    assert change[0] <= RELATIVE_ROUNDING and min(change[1:]) > 100 * RELATIVE_ROUNDING, change
    assert torch.equal(again, plain)


# ---- Style Align ------------------------------------------------------------------------------------------------

ANY_COLOUR = "a large circle in the middle, white background"  # the batch's pictures differ in colour
FIRST_PICTURE_TOLERANCE = 2e-5  # the reference sees its own keys twice: the same attention up to float rounding


@pytest.mark.parametrize("normalise, strength", [(True, 1.0), (False, 1.0), (True, 3.0)])
def test_style_align_keeps_the_first_picture_and_changes_the_others(comfy, normalise, strength):
    plain = samples(_plain_run(comfy, batch=3, prompt=ANY_COLOUR), "plain")
    graph = _no_leak_graph(style_align(normalise, strength=strength), batch=3)
    graph["a"] = text(ANY_COLOUR)
    result = comfy.run(graph)
    assert result.ok, result.error
    aligned = samples(result, "patched")
    assert (aligned[0] - plain[0]).abs().max() <= FIRST_PICTURE_TOLERANCE
    assert all((aligned[i] - plain[i]).abs().max() > 0.05 for i in (1, 2))
    assert torch.equal(samples(result, "original"), plain)  # the unpatched model, after the patched one sampled


def test_style_align_outside_its_window_is_the_plain_model(comfy):
    graph = {**reference_graph(3), "a": text(ANY_COLOUR), "closed": style_align(start=0.5, end=0.5)}
    sampler(graph, "plain", "a")
    sampler(graph, "aligned", "a", model=("closed", 0))
    result = comfy.run(graph)
    assert result.ok, result.error
    assert torch.equal(samples(result, "aligned"), samples(result, "plain"))


def test_style_align_refuses_a_window_that_ends_before_it_starts(comfy):
    result = comfy.run({**reference_graph(), "align": style_align(start=0.7, end=0.3),
                        "out": capture("align", "model")})
    assert not result.ok and "end_percent (0.3) is before start_percent (0.7)" in result.error, result.error


# ---- Latent Style Mix -------------------------------------------------------------------------------------------

def _latent_graph(node, a=(1, 2, 4, 0, 8, 8), b=(2, 1, 4, 0, 8, 8), **extra):
    return {"a": latent(*a), "b": latent(*b), "mix": node, "out": capture("mix", "mixed"),
            "in_a": capture("a", "a"), "in_b": capture("b", "b"), **extra}


def _run_mix(comfy, node, a=(1, 2, 4, 0, 8, 8), b=(2, 1, 4, 0, 8, 8), **extra):
    result = comfy.run(_latent_graph(node, a, b, **extra))
    assert result.ok, result.error
    assert torch.equal(result.captured["a"]["samples"], expected_latent(*a))  # inputs as they were made
    assert torch.equal(result.captured["b"]["samples"], expected_latent(*b))
    return result.captured["mixed"]["samples"], expected_latent(*a), expected_latent(*b)


@pytest.mark.parametrize("a, b, per_frame", [
    ((1, 2, 4, 0, 8, 8), (2, 1, 4, 0, 16, 12), False),  # another size: only the statistics count
    ((1, 2, 16, 0, 8, 8), (2, 2, 16, 0, 8, 8), False),  # 16-channel latents (SD3, Flux)
    ((1, 1, 16, 5, 4, 4), (2, 1, 16, 3, 4, 4), False),  # video latents: statistics over frames too
    ((1, 1, 4, 5, 4, 4), (2, 1, 4, 5, 4, 4), True),  # video latents, frame by frame
])
def test_adain_gives_latent_a_latent_bs_statistics(comfy, a, b, per_frame):
    mixed, latent_a, latent_b = _run_mix(comfy, latent_mix("adain", per_frame=per_frame), a, b)
    assert mixed.shape == latent_a.shape
    dims = (-2, -1) if per_frame else tuple(range(2, latent_a.ndim))
    for got, wanted in ((mixed.mean(dims), latent_b.mean(dims)),
                        (mixed.std(dims, correction=0), latent_b.std(dims, correction=0))):
        assert (got - wanted.expand_as(got)).abs().max() <= 1e-3
    # the structure is latent_a's: each channel is an affine map of it
    flat_a, flat_mixed = latent_a.flatten(2), mixed.flatten(2)
    if not per_frame:
        correlation = torch.stack([torch.corrcoef(torch.stack([x, y]))[0, 1]
                                   for x, y in zip(flat_a.flatten(0, 1), flat_mixed.flatten(0, 1))])
        assert correlation.min() > 1 - 1e-4


def test_adain_strength_blends_from_latent_a(comfy):
    half, latent_a, latent_b = _run_mix(comfy, latent_mix("adain", strength=0.5))
    full = style.adain(latent_a, latent_b)
    assert torch.allclose(half, (latent_a + full) / 2, atol=1e-5)
    none, _, _ = _run_mix(comfy, latent_mix("adain", strength=0.0))
    assert torch.equal(none, latent_a)


def test_frequency_mix_keeps_latent_as_layout_and_takes_latent_bs_detail(comfy):
    mixed, latent_a, latent_b = _run_mix(comfy, latent_mix("frequency", cutoff=4.0), b=(2, 2, 4, 0, 8, 8))
    low, high = style.low_frequencies, lambda x: x - style.low_frequencies(x, 4.0)
    assert torch.allclose(mixed, low(latent_a, 4.0) + high(latent_b), atol=1e-5)
    # far more of the coarse layout is a's than b's, far more of the fine detail b's than a's
    assert (low(mixed, 4.0) - low(latent_a, 4.0)).norm() < (low(mixed, 4.0) - low(latent_b, 4.0)).norm()
    assert (high(mixed) - high(latent_b)).norm() < (high(mixed) - high(latent_a)).norm()


@pytest.mark.parametrize("channels, taken", [("0, 2", [0, 2]), ("1-3", [1, 2, 3]), ("3;0 ,3", [0, 3])])
def test_channel_mix_takes_the_listed_channels_from_latent_b(comfy, channels, taken):
    mixed, latent_a, latent_b = _run_mix(comfy, latent_mix("channels", channels=channels))
    for channel in range(4):
        source = latent_b if channel in taken else latent_a
        assert torch.allclose(mixed[:, channel], source.expand_as(latent_a)[:, channel], rtol=0, atol=1e-6), channel


def test_channel_mix_on_16_channel_video_latents(comfy):
    mixed, latent_a, latent_b = _run_mix(comfy, latent_mix("channels", channels="8-15"), a=(1, 1, 16, 3, 4, 4),
                                         b=(2, 1, 16, 3, 4, 4))
    assert torch.equal(mixed[:, :8], latent_a[:, :8])
    assert torch.allclose(mixed[:, 8:], latent_b[:, 8:], rtol=0, atol=1e-6)


def _left_half_mask():
    return {"zeros": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}},
            "ones": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 64}},
            "left": {"class_type": "MaskComposite", "inputs": {"destination": ["zeros", 0], "source": ["ones", 0],
                                                               "x": 0, "y": 0, "operation": "add"}}}


@pytest.mark.parametrize("mode", ["channels", "adain", "frequency"])
def test_a_mask_limits_the_mix_to_its_region(comfy, mode):
    mixed, latent_a, latent_b = _run_mix(comfy, latent_mix(mode, channels="0-3", mask="left"), b=(2, 2, 4, 0, 8, 8),
                                         **_left_half_mask())
    assert torch.equal(mixed[..., 4:], latent_a[..., 4:])
    assert (mixed[..., :4] - latent_a[..., :4]).abs().min() > 0
    if mode == "channels":
        assert torch.allclose(mixed[..., :4], latent_b[..., :4], rtol=0, atol=1e-6)
    if mode == "adain":  # the statistics inside the mask are latent_b's
        inside = mixed[..., :4].flatten(2)
        assert (inside.mean(-1) - latent_b.flatten(2).mean(-1)).abs().max() <= 1e-3
        assert (inside.std(-1, correction=0) - latent_b.flatten(2).std(-1, correction=0)).abs().max() <= 1e-3


def test_latent_style_mix_keeps_latent_as_other_keys(comfy):
    graph = _latent_graph(latent_mix("adain", a="masked"))
    graph["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["a", 0], "mask": ["ones", 0]}}
    graph["ones"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
    graph["in_masked"] = capture("masked", "masked")
    result = comfy.run(graph)
    assert result.ok, result.error
    mixed, masked = result.captured["mixed"], result.captured["masked"]
    assert mixed["noise_mask"] is masked["noise_mask"] and mixed is not masked
    assert torch.equal(masked["samples"], expected_latent(1, 2))


@pytest.mark.parametrize("node, a, b, message", [
    (latent_mix("adain"), (1, 1, 4, 0, 8, 8), (2, 1, 16, 0, 8, 8), "latent_b has 16 channels but latent_a has 4"),
    (latent_mix("adain"), (1, 2, 4, 0, 8, 8), (2, 3, 4, 0, 8, 8), "latent_b has batch 3 and latent_a 2"),
    (latent_mix("frequency"), (1, 1, 4, 0, 8, 8), (2, 1, 4, 0, 16, 16), "latent_b"),
    (latent_mix("channels"), (1, 1, 4, 0, 8, 8), (2, 1, 4, 3, 8, 8), "latent_b"),
    (latent_mix("adain", per_frame=True), (1, 1, 4, 5, 4, 4), (2, 1, 4, 3, 4, 4),
     "latent_b has 3 frames and latent_a 5"),
    (latent_mix("channels", channels="red"), (1, 1, 4, 0, 8, 8), (2, 1, 4, 0, 8, 8),
     "channels is 'red'; expected channel numbers or ranges"),
    (latent_mix("channels", channels="3-1"), (1, 1, 4, 0, 8, 8), (2, 1, 4, 0, 8, 8), "channels: the range '3-1'"),
    (latent_mix("channels", channels="2, 7"), (1, 1, 4, 0, 8, 8), (2, 1, 4, 0, 8, 8), "channels [7] do not exist"),
    (latent_mix("channels", channels=" "), (1, 1, 4, 0, 8, 8), (2, 1, 4, 0, 8, 8), "channels is empty"),
])
def test_latent_style_mix_bad_inputs(comfy, node, a, b, message):
    result = comfy.run(_latent_graph(node, a, b))
    assert not result.ok and message in result.error, result.error
