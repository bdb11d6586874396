"""The shipped reference family: it loads offline as stock library models, meets its quality thresholds on small
fresh evaluations, and the training code writes the same bytes in any process, leaves torch's global state as it
found it, and writes folders the loaders read back."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers", reason="the reference family needs the test extras: pip install -e '.[test]'")
pytest.importorskip("open_clip", reason="the reference family needs the test extras: pip install -e '.[test]'")
pytest.importorskip("transformers", reason="the reference family needs the test extras: pip install -e '.[test]'")

from latent_space_control.reference import evaluate, grammar, models, oracle, train, world  # noqa: E402

EVALUATION_SEED = 4242  # apart from the training seed and the benchmark's


@pytest.fixture(scope="module")
def family():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        with torch.inference_mode():  # as ComfyUI loads models: the weights become inference tensors
            family = models.load()
        yield family


def test_shipped_weights_are_safetensors_within_24_mb():
    """Small enough for every clone; float32 (ComfyUI runs the family as the engine does), with widths ComfyUI's
    32-group GroupNorms can build."""
    files = [path for path in models.WEIGHTS.rglob("*") if path.is_file()]
    weights = [path for path in files if path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")]
    assert weights and all(path.suffix == ".safetensors" for path in weights)
    assert sum(path.stat().st_size for path in files) <= 24 * 2 ** 20


def _shapes(model: torch.nn.Module) -> dict[str, torch.Size]:
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def test_family_loads_as_stock_library_models(family):
    import diffusers
    import open_clip
    import transformers

    assert isinstance(family.vae, diffusers.AutoencoderKL) and family.vae.config.latent_channels == 4
    assert isinstance(family.unet, diffusers.UNet2DConditionModel)
    assert family.unet.config.cross_attention_dim == family.clip.transformer.width
    assert isinstance(family.clip, open_clip.CLIP) and isinstance(family.clip_tokenizer, open_clip.tokenizer.HFTokenizer)
    assert isinstance(family.lm, transformers.GPT2LMHeadModel)
    models.register_clip_config()  # the config file in the repository builds the shipped CLIP's architecture
    assert _shapes(open_clip.create_model(models.CLIP_NAME)) == _shapes(family.clip)


def test_callables_have_the_engine_shapes(family):
    with torch.inference_mode():
        text = family.encode_text(["a large red circle on the left, white background", ""])
        assert text.hidden_states.shape == (2, 16, 64) and text.embedding.shape == (2, 64)
        torch.testing.assert_close(text.embedding.norm(dim=1), torch.ones(2))
        latents = family.encode(world.render_batch(world.scenes(2, seed=1)))
        assert latents.shape == (2, 4, 8, 8)
        assert family.decode(latents).shape == (2, 3, 32, 32)
        assert family.score_images(torch.rand(2, 3, 64, 64)).shape == (2, 64)


def test_vae_keeps_colour_and_shape(family):
    agreement = evaluate.vae_attribute_preservation(family, 256, seed=EVALUATION_SEED)
    assert agreement["colour"] >= 0.98 and agreement["shape"] >= 0.98, agreement


def test_clip_tells_colours_and_shapes_apart_zero_shot(family):
    accuracy = evaluate.clip_zero_shot(family, 256, seed=EVALUATION_SEED)
    assert accuracy["colour"] >= 0.95 and accuracy["shape"] >= 0.90, accuracy


def test_pictures_from_captions_show_the_caption(family):
    accuracy = evaluate.text_to_image_accuracy(family, 96, seed=EVALUATION_SEED)
    assert accuracy["colour"] >= 0.90 and accuracy["shape"] >= 0.85, accuracy


def test_captions_of_pairs_never_seen_in_training_mostly_come_out_right(family):
    accuracy = evaluate.text_to_image_accuracy(family, 48, seed=EVALUATION_SEED, held_out=True)
    assert accuracy["colour"] >= 0.75 and accuracy["shape"] >= 0.75, accuracy


def test_prompts_that_name_only_some_attributes_show_them(family):
    """The family trained on partial prompts too: "a red circle" is red and round, in CLIP and in pictures."""
    pictures = evaluate.partial_prompt_accuracy(family, 96, seed=EVALUATION_SEED)
    zero_shot = evaluate.clip_zero_shot_partial(family, 256, seed=EVALUATION_SEED)
    for accuracy in (pictures, zero_shot):
        assert set(accuracy) == set(world.ATTRIBUTES) and all(0 <= value <= 1 for value in accuracy.values())
        assert accuracy["colour"] >= 0.85 and accuracy["shape"] >= 0.8, accuracy


def test_training_never_shows_the_held_out_pairs_and_draws_prompts_that_fit_their_pictures():
    scenes, _ = train.training_set(count=2000)
    assert not any(scene.held_out for scene in scenes)
    prompts = train.TrainingPrompts.build()
    assert len(prompts.texts) == len(set(prompts.texts)) == 1260  # 3 shapes x (3 x 7 x 4 x 5) ways to name the rest
    assert set(models.every_caption()) <= set(prompts.texts) and "a red circle" in prompts.texts
    kinds = train._scene_kinds(scenes)
    drawn = prompts.draw(kinds, torch.Generator().manual_seed(0))
    values = torch.tensor([train._value_indices(scene) for scene in scenes])
    fits = prompts.matches(values, drawn)
    assert fits.diagonal().all()  # every picture's prompt describes it
    every = world.OPTIONAL_IN_PROMPTS
    full = sum(prompts.texts[i] in (scene.prompt(every), scene.prompt(every, background_first=True))
               for i, scene in zip(drawn.tolist(), scenes)) / len(scenes)
    assert 0.48 <= full <= 0.6  # half full captions, plus the 1/16 of partial draws that name everything
    assert not fits.all() and fits.float().mean() < 0.2  # other pictures mostly do not fit


def test_shipped_preview_colours_are_the_least_squares_fit(family):
    import json

    shipped = json.loads((models.WEIGHTS / "vae" / models.LATENT_PREVIEW_FILE).read_text())
    with torch.no_grad():
        fitted = train.latent_preview(family.vae, world.render_batch(world.scenes(512, seed=EVALUATION_SEED)))
    for key in ("latent_rgb_factors", "latent_rgb_factors_bias"):
        assert torch.allclose(torch.tensor(fitted[key]), torch.tensor(shipped[key]), atol=0.05), key


def test_unconditional_model_was_trained_for_guidance(family):
    """Caption dropout taught the UNet the empty prompt: from it, it draws the whole world, every colour and shape."""
    with torch.no_grad():
        pictures = family.generate([""] * 48, seed=EVALUATION_SEED, cfg_scale=1.0)
    readings = oracle.read_batch(pictures)
    assert len({r["colour"] for r in readings}) >= 5 and len({r["shape"] for r in readings}) == 3


def test_lm_writes_its_language(family):
    assert evaluate.lm_grammatical(family, 128, seed=EVALUATION_SEED) >= 0.95
    moods = {grammar.parse(text)["mood"] for text in family.write("", 64, seed=1) if grammar.parse(text)}
    assert moods == {"joyful", "gloomy"}
    continued = family.write("alas, a", 32, seed=2)
    assert all(text.startswith("alas, a") for text in continued)
    assert sum((grammar.parse(text) or {}).get("mood") == "gloomy" for text in continued) >= 28


def test_tokenizer_round_trips_captions_prompts_and_sentences():
    tokenizer = models.build_tokenizer()
    prompts = [prompt for _, prompt, _ in world.partial_prompts(64, seed=3)]
    texts = [world.scenes(1, seed=3)[0].caption(), *prompts, *grammar.sentences(3, seed=3)]
    ids = tokenizer(texts).input_ids
    assert all(row[0] == models.BOS and row[-1] == models.EOS for row in ids)
    assert tokenizer.unk_token_id not in sum(ids, [])
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == texts


# A short training of the LM and VAE stages, saved as train() saves them into sys.argv[1]. Given a second argument,
# the process first puts torch's global state somewhere else, which the stages must not depend on.
SHORT_TRAINING = """
import sys
from pathlib import Path
import torch
from latent_space_control.reference import models, train, world
out = Path(sys.argv[1])
if len(sys.argv) > 2:
    torch.manual_seed(999)
    torch.set_num_threads(1)
train.save_lm(train.train_lm(models.build_tokenizer(), log=print, steps=3, batch=8), out / "lm")
pictures = world.render_batch(world.scenes(16, seed=0))
train.train_vae(pictures, log=print, steps=2, batch=4).save_pretrained(out / "vae")
"""


def _digests(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in folder.rglob("*") if path.is_file()}


def test_retraining_in_another_process_writes_the_same_bytes(tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", SHORT_TRAINING, str(tmp_path / "first")], env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            subprocess.Popen([sys.executable, "-c", SHORT_TRAINING, str(tmp_path / "disturbed"), "disturbed"],
                             env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    for run in runs:  # both at once: each takes a few seconds, mostly importing the libraries
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 0, output
    first = _digests(tmp_path / "first")
    assert {"lm/model.safetensors", "lm/tokenizer.json", "vae/diffusion_pytorch_model.safetensors"} <= first.keys()
    assert _digests(tmp_path / "disturbed") == first


@pytest.mark.parametrize("deterministic, warn_only", [(False, False), (True, True)])
def test_training_leaves_the_global_torch_state_as_it_found_it(deterministic, warn_only):
    pictures = world.render_batch(world.scenes(4, seed=0))
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.get_num_threads(), torch.get_rng_state())
    try:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(1)
        torch.manual_seed(123)
        rng_state = torch.get_rng_state()
        train.train_vae(pictures, log=lambda _: None, steps=1, batch=2)
        assert torch.are_deterministic_algorithms_enabled() == deterministic
        assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
        assert torch.get_num_threads() == 1
        assert torch.equal(torch.get_rng_state(), rng_state)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved[2])
        torch.set_rng_state(saved[3])


def test_saved_clip_folder_loads_back_the_same_model(tmp_path):
    scenes = world.scenes(32, seed=0)
    tokenizer = models.build_tokenizer()
    clip = train.train_clip(scenes, world.render_batch(scenes), tokenizer, log=lambda _: None, steps=2, batch=8)
    train.save_clip(clip, tokenizer, tmp_path / "clip")
    loaded, loaded_tokenizer = models.load_clip(tmp_path / "clip")
    text = loaded_tokenizer(["a small blue square in the middle, black background"])
    assert text.shape == (1, 16) and text[0, 0] == models.BOS
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(text), clip.encode_text(text))
