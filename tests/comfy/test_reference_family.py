"""The reference family as native ComfyUI models: the same numbers as the engine's libraries on the same inputs, core
nodes, samplers, schedulers and patch points working on it, previews in colour, and broken weights refused cleanly."""

import shutil

import pytest
import torch

from latent_space_control.reference import models, oracle, world

pytest.importorskip("diffusers", reason="the engine side of the comparison needs diffusers and open_clip")
pytest.importorskip("open_clip", reason="the engine side of the comparison needs diffusers and open_clip")

TOLERANCE = 1e-4  # float32, two implementations of the same modules
PROMPTS = ["a red circle", "a large blue square on the left, black background", "white background, a triangle"]


@pytest.fixture(scope="module")
def engine():
    with torch.inference_mode():
        return models.load()


def encode(clip, prompt):
    cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def sample(model, positive, negative, seed=1, steps=20, cfg=4.0, sampler="euler", scheduler="karras", batch=1):
    import comfy.sample

    latent = torch.zeros(batch, *models.LATENT_SHAPE)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                               disable_pbar=True, seed=seed)


def read(reference_family, latents):
    _, _, vae = reference_family
    return oracle.read_batch(vae.decode(latents).movedim(-1, 1))


@torch.inference_mode()
def test_text_encoder_matches_open_clip(reference_family, engine):
    _, clip, _ = reference_family
    expected = engine.encode_text(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
        assert cond.shape == (1, 16, 64)
        assert (cond[0] - expected.hidden_states[i]).abs().max() <= TOLERANCE
        assert (torch.nn.functional.normalize(pooled[0], dim=-1) - expected.embedding[i]).abs().max() <= TOLERANCE


@torch.inference_mode()
def test_clip_layer_selection_gives_open_clips_intermediate_layer(reference_family, engine):
    _, clip, _ = reference_family
    skipped = clip.clone()
    skipped.clip_layer(-2)
    cond = skipped.encode_from_tokens(skipped.tokenize(PROMPTS[1]))
    tokens = engine.clip_tokenizer([PROMPTS[1]])
    expected = engine.clip.forward_intermediates(text=tokens, text_indices=2, normalize_intermediates=True)
    assert (cond[0] - expected["text_intermediates"][0][0]).abs().max() <= TOLERANCE
    assert (clip.encode_from_tokens(clip.tokenize(PROMPTS[1]))[0] - cond[0]).abs().max() > 1e-2


@torch.inference_mode()
def test_prompt_weights_follow_comfyuis_rule(reference_family):
    """(word:w) moves that token's hidden state w times as far from the empty prompt's."""
    _, clip, _ = reference_family
    plain = clip.encode_from_tokens(clip.tokenize("a red circle"))
    weighted = clip.encode_from_tokens(clip.tokenize("a (red:1.5) circle"))
    empty = clip.encode_from_tokens(clip.tokenize(""))
    red = 2  # [BOS] a red circle [EOS]
    assert (weighted[0, red] - (empty[0, red] + 1.5 * (plain[0, red] - empty[0, red]))).abs().max() <= TOLERANCE
    others = [i for i in range(16) if i != red]
    assert (weighted[0, others] - plain[0, others]).abs().max() <= TOLERANCE


@torch.inference_mode()
def test_denoiser_matches_diffusers(reference_family, engine):
    model, clip, _ = reference_family
    context = engine.encode_text(PROMPTS).hidden_states
    x = torch.randn(len(PROMPTS), *models.LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    sigmas = model.get_model_object("model_sampling").sigmas
    for step in (0, 250, 999):  # training steps: no rounding on either side
        sigma = sigmas[step].expand(len(PROMPTS))
        ours = model.model.apply_model(x * (1 + sigma[0] ** 2).sqrt(), sigma, c_crossattn=context)
        expected = engine.denoiser(context, cfg_scale=1.0)(x * (1 + sigma[0] ** 2).sqrt(), sigma)
        assert (ours - expected).abs().max() <= TOLERANCE * max(1.0, float(sigma[0]))


@torch.inference_mode()
def test_vae_matches_diffusers(reference_family, engine):
    _, _, vae = reference_family
    pictures = world.render_batch(world.scenes(8, seed=3))
    latents = vae.encode(pictures.movedim(1, -1))
    assert latents.shape == (8, *models.LATENT_SHAPE)
    assert (latents - engine.encode(pictures)).abs().max() <= TOLERANCE
    decoded = vae.decode(latents).movedim(-1, 1)
    assert (decoded - engine.decode(latents).clamp(0, 1)).abs().max() <= TOLERANCE


def _nearest(colour: torch.Tensor, palette: dict) -> str:
    return min(palette, key=lambda name: float((torch.tensor(palette[name]) - colour).abs().sum()))


@torch.inference_mode()
def test_latent_format_and_colour_previews(reference_family):
    """The sampler preview of an encoded picture shows the layout in colour: a cell on the far side of the picture
    in the background's colour, the shape standing out from it, and the shape's hue far more often than chance (a
    linear preview catches the VAE's non-linear hue code only roughly)."""
    import latent_preview

    model, _, vae = reference_family
    latent_format = model.model.latent_format
    assert latent_format.scale_factor == pytest.approx(engine_scaling_factor())
    scenes = world.scenes(64, seed=4)
    scaled = latent_format.process_in(vae.encode(world.render_batch(scenes).movedim(1, -1)))
    previewer = latent_preview.Latent2RGBPreviewer(latent_format.latent_rgb_factors,
                                                   latent_format.latent_rgb_factors_bias)
    hues = 0
    for scene, latent in zip(scenes, scaled):
        preview = picture_tensor(previewer.decode_latent_to_preview(latent[None]))  # [3, 8, 8]
        row, column = int((world.SIZE / 2 + scene.dy) // 4), int((world.POSITIONS[scene.position] + scene.dx) // 4)
        background = preview[:, row, 6 if scene.position == "left" else 1]
        assert _nearest(background, world.BACKGROUNDS) == scene.background, scene
        assert (preview[:, row, column] - background).abs().max() > 0.1, scene
        hues += _nearest(preview[:, row, column], world.COLOURS) == scene.colour
    assert hues / len(scenes) >= 0.4  # chance: 1/6


def picture_tensor(image) -> torch.Tensor:
    """A PIL preview as [3, H, W] in 0..1."""
    import numpy

    return torch.from_numpy(numpy.array(image.convert("RGB"))).float().movedim(-1, 0) / 255


def engine_scaling_factor():
    import json

    return json.loads((models.WEIGHTS / "vae" / "config.json").read_text())["scaling_factor"]


@torch.inference_mode()
def test_text_to_image_reads_as_the_prompt(reference_family):
    model, clip, _ = reference_family
    negative = encode(clip, "")
    for prompt, expected in (("a red circle", {"colour": "red", "shape": "circle"}),
                             ("a large yellow square on the right, black background",
                              {"colour": "yellow", "shape": "square", "position": "right", "background": "black"})):
        reading = read(reference_family, sample(model, encode(clip, prompt), negative))[0]
        assert {name: reading[name] for name in expected} == expected, prompt


def _fails_on_sd15(sampler, scheduler) -> bool:
    """Whether this ComfyUI's sampler fails on its own SD1.5 model too (the tiny test one): its bug, not ours."""
    from lsc_test_nodes import tiny_clip, tiny_model

    clip = tiny_clip()
    try:
        sample(tiny_model(), encode(clip, "a fox"), encode(clip, ""), steps=10, sampler=sampler, scheduler=scheduler)
    except Exception:
        return True
    return False


@torch.inference_mode()
def test_every_core_sampler_and_scheduler_runs(reference_family):
    import comfy.samplers

    model, clip, _ = reference_family
    positive, negative = encode(clip, "a green circle on the left"), encode(clip, "")
    failures, broken_in_comfyui = [], []
    combos = [(sampler, "karras") for sampler in comfy.samplers.KSampler.SAMPLERS]
    combos += [("euler", scheduler) for scheduler in comfy.samplers.KSampler.SCHEDULERS if scheduler != "karras"]
    for sampler, scheduler in combos:
        try:
            latents = sample(model, positive, negative, steps=10, sampler=sampler, scheduler=scheduler)
        except Exception as error:
            assert _fails_on_sd15(sampler, scheduler), f"{sampler}/{scheduler} fails only on the reference model: {error}"
            broken_in_comfyui.append(sampler)
            continue
        if not torch.isfinite(latents).all():
            failures.append((sampler, scheduler, "not finite"))
            continue
        reading = read(reference_family, latents)[0]
        if reading["colour"] != "green":
            failures.append((sampler, scheduler, reading))
    # A few samplers are built for other model kinds or need many more steps; all but a handful must read right.
    assert len(failures) <= len(combos) // 10, failures
    assert len(broken_in_comfyui) <= 2, broken_in_comfyui


def _recording(calls, name, result=None):
    def patch(*args, **kwargs):
        calls.append(name)
        return args[0] if result is None else result(*args, **kwargs)
    return patch


@torch.inference_mode()
def test_patch_points_are_called_and_leave_the_model_alone(reference_family):
    model, clip, _ = reference_family
    positive, negative = encode(clip, "a blue square"), encode(clip, "")
    before = sample(model, positive, negative, steps=4)
    calls, shapes = [], {}

    def attn2(q, context_attn2, value_attn2, extra_options):
        shapes["attn2"] = (tuple(q.shape), tuple(context_attn2.shape))
        calls.append("attn2")
        return q, context_attn2, value_attn2

    def attn2_replace(q, k, v, extra_options):
        calls.append("attn2_replace")
        import comfy.ldm.modules.attention as attention
        return attention.optimized_attention(q, k, v, extra_options["n_heads"])

    def wrapper(apply_model, args):
        calls.append("wrapper")
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched = model.clone()
    patched.set_model_attn1_patch(_recording(calls, "attn1", lambda q, k, v, extra: (q, k, v)))
    patched.set_model_attn2_patch(attn2)
    patched.set_model_attn2_replace(attn2_replace, "input", 1)
    patched.set_model_input_block_patch(_recording(calls, "input_block"))
    patched.set_model_output_block_patch(_recording(calls, "output_block", lambda h, hsp, extra: (h, hsp)))
    patched.set_model_unet_function_wrapper(wrapper)
    patched.set_model_sampler_cfg_function(lambda args: args["uncond"] + 4.0 * (args["cond"] - args["uncond"]))
    patched.set_model_sampler_post_cfg_function(_recording(calls, "post_cfg", lambda args: args["denoised"]))
    after = sample(patched, positive, negative, steps=4)
    assert {"attn1", "attn2", "attn2_replace", "input_block", "output_block", "wrapper", "post_cfg"} <= set(calls)
    assert shapes["attn2"][1][-1] == 64  # the text hidden states the UNet attends to
    # Every patch above is an identity (the cfg function is the usual rule): same pictures.
    assert (after - before).abs().max() <= TOLERANCE
    calls.clear()
    assert (sample(model, positive, negative, steps=4) - before).abs().max() == 0 and not calls


@torch.inference_mode()
def test_cfg_function_replacing_guidance_is_used(reference_family):
    """A cfg function that returns the conditional prediction samples as cfg 1 does."""
    model, clip, _ = reference_family
    positive, negative = encode(clip, "a magenta triangle"), encode(clip, "a red circle")
    patched = model.clone()
    patched.set_model_sampler_cfg_function(lambda args: args["cond"], disable_cfg1_optimization=True)
    conditional_only = sample(model, positive, negative, steps=4, cfg=1.0)
    assert (sample(patched, positive, negative, steps=4, cfg=7.0) - conditional_only).abs().max() <= TOLERANCE


def _weight_patch_effects(clip, width):
    """A weight patch on a clone of ``clip`` (the final norm's bias + 0.5): how far it moves the clone's hidden
    states, and how far the original's move afterwards."""
    plain = clip.encode_from_tokens(clip.tokenize("a red circle"))
    patched = clip.clone()
    key = next(k for k in patched.get_key_patches() if k.endswith("final_layer_norm.bias"))
    patched.add_patches({key: (torch.full((width,), 0.5),)}, strength_patch=1.0)
    moved = patched.encode_from_tokens(patched.tokenize("a red circle")) - plain
    after = clip.encode_from_tokens(clip.tokenize("a red circle")) - plain
    return round(moved.mean().item(), 4), round(after.abs().max().item(), 4)


@torch.inference_mode()
def test_clip_weight_patches_behave_as_on_an_sd15_clip(reference_family):
    """The clone moves by the patch; what the original does afterwards is ComfyUI's business, and must be what it
    does with its own SD1.5 CLIP (the tiny test one)."""
    from lsc_test_nodes import TEXT_WIDTH, tiny_clip

    _, clip, _ = reference_family
    ours = _weight_patch_effects(clip, 64)
    assert ours[0] == 0.5
    assert ours == _weight_patch_effects(tiny_clip(), TEXT_WIDTH)


# ---- through the executor --------------------------------------------------------------------------------------

def t2i_prompt(text, seed=5, sampler="euler", scheduler="karras"):
    return {
        "loader": {"class_type": "LSC_ReferenceModelLoader", "inputs": {}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": text}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": ""}},
        "empty": {"class_type": "LSC_EmptyLatentForVAE",
                  "inputs": {"vae": ["loader", 2], "width": 32, "height": 32, "batch_size": 2}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["loader", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "seed": seed, "steps": 20, "cfg": 4.0, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["loader", 2]}},
        "out": {"class_type": "LSCTest_Capture", "inputs": {"value": ["decode", 0], "label": "images"}},
    }


def test_loader_node_text_to_image_in_the_executor(comfy):
    result = comfy.run(t2i_prompt("a small cyan circle in the middle, white background"))
    assert result.ok, result.error
    images = result.captured["images"]
    assert images.shape == (2, 32, 32, 3)
    for reading in oracle.read_batch(images.movedim(-1, 1)):
        assert (reading["colour"], reading["shape"], reading["background"]) == ("cyan", "circle", "white")


def test_ksampler_advanced_and_sampler_custom_advanced_agree_with_ksampler(comfy):
    prompt = t2i_prompt("a large red square")
    prompt["advanced"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["loader", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
        "add_noise": "enable", "noise_seed": 5, "steps": 20, "cfg": 4.0, "sampler_name": "euler",
        "scheduler": "karras", "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    prompt.update({
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["loader", 0], "positive": ["pos", 0],
                                                        "negative": ["neg", 0], "cfg": 4.0}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["loader", 0], "scheduler": "karras",
                                                              "steps": 20, "denoise": 1.0}},
        "custom": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["empty", 0]}},
        "cap_k": {"class_type": "LSCTest_Capture", "inputs": {"value": ["sample", 0], "label": "ksampler"}},
        "cap_a": {"class_type": "LSCTest_Capture", "inputs": {"value": ["advanced", 0], "label": "advanced"}},
        "cap_c": {"class_type": "LSCTest_Capture", "inputs": {"value": ["custom", 0], "label": "custom"}},
    })
    result = comfy.run(prompt)
    assert result.ok, result.error
    k, a, c = (result.captured[name]["samples"] for name in ("ksampler", "advanced", "custom"))
    assert (a - k).abs().max() <= TOLERANCE and (c - k).abs().max() <= TOLERANCE


def test_timestep_range_and_combine_switch_prompts_mid_sampling(comfy):
    """ConditioningSetTimestepRange + ConditioningCombine: the first half of the schedule lays out one prompt, the
    second paints another; the colour comes from the late prompt, as on SD1.5."""
    prompt = t2i_prompt("")
    prompt.update({
        "early": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": "a large red circle"}},
        "late": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["loader", 1], "text": "a large blue circle"}},
        "early_range": {"class_type": "ConditioningSetTimestepRange",
                        "inputs": {"conditioning": ["early", 0], "start": 0.0, "end": 0.3}},
        "late_range": {"class_type": "ConditioningSetTimestepRange",
                       "inputs": {"conditioning": ["late", 0], "start": 0.3, "end": 1.0}},
        "both": {"class_type": "ConditioningCombine",
                 "inputs": {"conditioning_1": ["early_range", 0], "conditioning_2": ["late_range", 0]}},
    })
    prompt["sample"]["inputs"]["positive"] = ["both", 0]
    result = comfy.run(prompt)
    assert result.ok, result.error
    readings = oracle.read_batch(result.captured["images"].movedim(-1, 1))
    assert all(reading["shape"] == "circle" for reading in readings)


def test_empty_latent_for_vae_refuses_sizes_the_vae_cannot_make(comfy):
    prompt = t2i_prompt("a circle")
    prompt["empty"]["inputs"]["width"] = 30
    result = comfy.run(prompt)
    assert not result.ok and "width: expected a multiple of the VAE's downscale factor 4, got 30" in result.error


# ---- broken weights ---------------------------------------------------------------------------------------------

BREAKAGES = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:path.stat().st_size // 2]),
    "lfs_pointer": lambda path: path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"),
    "missing": lambda path: path.unlink(),
}
FILES = ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
         "clip/open_clip_model.safetensors", "clip/tokenizer.json", "vae/config.json", "vae/latent_preview.json"]


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("name", FILES)
def test_broken_weights_name_the_file_and_register_nothing(reference_loader, tmp_path, name, breakage):
    import comfy.model_management

    weights = tmp_path / "weights"
    shutil.copytree(models.WEIGHTS, weights)
    BREAKAGES[breakage](weights / name)
    registered = {id(loaded) for loaded in comfy.model_management.current_loaded_models}
    with torch.inference_mode(), pytest.raises(reference_loader.ReferenceWeightsError, match=str(weights / name)):
        reference_loader.load_reference_family(weights)
    assert {id(loaded) for loaded in comfy.model_management.current_loaded_models} <= registered


def test_weights_of_another_model_are_refused(reference_loader, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "weights"
    shutil.copytree(models.WEIGHTS, weights)
    path = weights / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(path)
    tensors["encoder.conv_in.weight"] = tensors["encoder.conv_in.weight"][:16]
    save_file(tensors, path)
    refused = pytest.raises(reference_loader.ReferenceWeightsError, match="wrong shape: encoder.conv_in")
    with torch.inference_mode(), refused:
        reference_loader.load_reference_family(weights)


def test_a_config_without_a_setting_names_the_file_and_the_setting(reference_loader, tmp_path):
    import json

    weights = tmp_path / "weights"
    shutil.copytree(models.WEIGHTS, weights)
    path = weights / "unet" / "config.json"
    config = json.loads(path.read_text())
    del config["block_out_channels"]
    path.write_text(json.dumps(config))
    refused = pytest.raises(reference_loader.ReferenceWeightsError,
                            match=r"config.json lacks a setting .*block_out_channels")
    with torch.inference_mode(), refused:
        reference_loader.load_reference_family(weights)


def test_loader_node_reports_broken_weights(comfy, reference_loader, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(models.WEIGHTS, weights)
    (weights / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 10)
    monkeypatch.setattr(reference_loader, "WEIGHTS", weights)
    result = comfy.run(t2i_prompt("a circle"))
    assert not result.ok and "diffusion_pytorch_model.safetensors is not a readable safetensors file" in result.error
