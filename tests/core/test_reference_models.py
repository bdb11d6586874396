"""The shipped reference family: it loads offline as stock library models, meets its quality thresholds on small
fresh evaluations, and the training code is deterministic and writes folders the loaders read back."""

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


def test_shipped_weights_are_safetensors_within_20_mb():
    files = [path for path in models.WEIGHTS.rglob("*") if path.is_file()]
    weights = [path for path in files if path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")]
    assert weights and all(path.suffix == ".safetensors" for path in weights)
    assert sum(path.stat().st_size for path in files) <= 20 * 2 ** 20


def test_family_loads_as_stock_library_models(family):
    import diffusers
    import open_clip
    import transformers

    assert isinstance(family.vae, diffusers.AutoencoderKL) and family.vae.config.latent_channels == 4
    assert isinstance(family.unet, diffusers.UNet2DConditionModel)
    assert family.unet.config.cross_attention_dim == family.clip.transformer.width
    assert isinstance(family.clip, open_clip.CLIP) and isinstance(family.clip_tokenizer, open_clip.tokenizer.HFTokenizer)
    assert isinstance(family.lm, transformers.GPT2LMHeadModel)
    models.register_clip_config()
    assert models.CLIP_NAME in open_clip.list_models()


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


def test_tokenizer_round_trips_captions_and_sentences():
    tokenizer = models.build_tokenizer()
    texts = [world.scenes(1, seed=3)[0].caption(), *grammar.sentences(3, seed=3)]
    ids = tokenizer(texts).input_ids
    assert all(row[0] == models.BOS and row[-1] == models.EOS for row in ids)
    assert tokenizer.unk_token_id not in sum(ids, [])
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == texts


def test_training_is_deterministic(tmp_path):
    tokenizer = models.build_tokenizer()
    first, again = (train.train_lm(tokenizer, log=lambda _: None, steps=3, batch=8) for _ in range(2))
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    pictures = world.render_batch(world.scenes(16, seed=0))
    vaes = [train.train_vae(pictures, log=lambda _: None, steps=2, batch=4) for _ in range(2)]
    for (name, a), (_, b) in zip(vaes[0].state_dict().items(), vaes[1].state_dict().items()):
        assert torch.equal(a, b), name


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
