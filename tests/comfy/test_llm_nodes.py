"""The text steering nodes, executed by ComfyUI's own validator and executor (and called directly under inference
mode, as ComfyUI runs nodes): the reference LM turns joyful or gloomy as steered, greedy steering with the KV cache
writes what a full recompute writes, tiny GPT-2 and Llama folders written here load under model management, control
vectors survive a round trip through GGUF, and bad input stops with messages that name it."""

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

from latent_space_control.core import steering
from latent_space_control.core.directions import Direction
from latent_space_control.reference import grammar, models

transformers = pytest.importorskip("transformers", reason="the language-model nodes need transformers")
pytest.importorskip("tokenizers", reason="the test models' tokenizer is built with tokenizers")

NODE_IDS = ("LSC_CausalLMLoader", "LSC_TextSteerGenerate", "LSC_SaveControlVector", "LSC_LoadControlVector")
REFERENCE = "reference (built-in)"
SAMPLES = 32  # seeds per mood measurement
STRENGTH = 1.5


@pytest.fixture(scope="module")
def llm(comfy):
    """The nodes' module as ComfyUI loaded the pack."""
    assert all(node_id in comfy.node_mappings for node_id in NODE_IDS)
    return sys.modules[comfy.node_class("LSC_CausalLMLoader").__module__]


@pytest.fixture(scope="module")
def folders(llm):
    """The pack's model-folder module as ComfyUI loaded it."""
    return importlib.import_module(f"{llm.__package__}.model_folders")


@pytest.fixture(scope="module")
def llm_folder(folders, tmp_path_factory):
    """A folder of the LLM model folder (as a user's extra_model_paths.yaml adds one)."""
    folder = tmp_path_factory.mktemp("LLM")
    folders.register_llm_folder()
    folders.folder_paths.add_model_folder_path("LLM", str(folder))
    return folder


@pytest.fixture(scope="module")
def reference_lm(comfy, llm):
    result = comfy.run({"lm": loader(), "out": capture("lm", "lm")})
    assert result.ok, result.error
    return result.captured["lm"]


def joyful_and_gloomy(count=48, seed=0):
    sentences = grammar.sentences(count, seed)
    return ([s for s in sentences if grammar.parse(s)["mood"] == "joyful"],
            [s for s in sentences if grammar.parse(s)["mood"] == "gloomy"])


JOYFUL, GLOOMY = joyful_and_gloomy()


def loader(model=REFERENCE, dtype="auto"):
    return {"class_type": "LSC_CausalLMLoader", "inputs": {"model": model, "dtype": dtype}}


def capture(source, label, slot=0):
    return {"class_type": "LSCTest_Capture", "inputs": {"value": [source, slot], "label": label}}


def generate(lm=("lm", 0), prompt="a", strength=STRENGTH, layers="0", method="mean_difference", max_new_tokens=24,
             temperature=1.0, top_p=1.0, seed=0, include_prompt=False, direction=None, positive="\n".join(JOYFUL),
             negative="\n".join(GLOOMY)):
    inputs = {"lm": list(lm), "prompt": prompt, "strength": strength, "layers": layers, "method": method,
              "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
              "include_prompt": include_prompt, "positive_examples": positive, "negative_examples": negative}
    if direction is not None:
        inputs["direction"] = list(direction)
    return {"class_type": "LSC_TextSteerGenerate", "inputs": inputs}


def run_generate(llm, lm, **inputs):
    """TextSteerGenerate called as ComfyUI calls it: (text, unsteered, direction)."""
    settings = dict(prompt="a", strength=STRENGTH, layers="0", method="mean_difference", max_new_tokens=24,
                    temperature=1.0, top_p=1.0, seed=0, include_prompt=False, direction=None,
                    positive_examples="\n".join(JOYFUL),
                    negative_examples="\n".join(GLOOMY))
    settings.update(inputs)
    with torch.inference_mode():
        return llm.TextSteerGenerate.execute(lm, **settings).result


def mood(text):
    parsed = grammar.parse("a " + text)
    return parsed["mood"] if parsed else None


def test_the_reference_lm_loads_under_comfyuis_model_management(comfy, llm, reference_lm):
    from comfy import model_management as mm, model_patcher

    lm = reference_lm
    assert isinstance(lm.patcher, model_patcher.ModelPatcher) and lm.patcher.model.inner is lm.model
    assert (lm.name, lm.model_type, lm.blocks, lm.width) == (REFERENCE, "gpt2", 2, 64)
    assert lm.patcher.load_device == mm.get_torch_device()
    assert lm.patcher.offload_device == mm.unet_offload_device()
    assert not lm.model.training and next(lm.model.parameters()).dtype == torch.float32  # auto on the CPU
    with torch.inference_mode():
        model = lm.load()
        assert any(loaded.model is lm.patcher for loaded in mm.current_loaded_models)
        assert next(model.parameters()).device == torch.device(lm.patcher.load_device)
        texts = steering.generate_text(model, lm.tokenizer, "a", 24, 1.0, 1.0, seed=0, count=8)
    assert sum(mood(text) is not None for text in texts) >= 6, texts  # it writes its language
    assert llm.CausalLMLoader.GET_SCHEMA().inputs[0].options[0] == REFERENCE


def tiny_tokenizer(folder):
    """The reference world's word-level tokenizer, built in code and saved beside the model."""
    folder.mkdir(parents=True, exist_ok=True)
    models.save_tokenizer(folder)
    return len(models.build_tokenizer())


def save_tiny_model(folder, config):
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return model


def tiny_gpt2(folder):
    vocab = tiny_tokenizer(folder)
    return save_tiny_model(folder, transformers.GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=32, n_layer=3, n_head=2, bos_token_id=models.BOS,
        eos_token_id=models.EOS, pad_token_id=models.PAD))


def tiny_llama(folder):
    vocab = tiny_tokenizer(folder)
    return save_tiny_model(folder, transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=models.BOS, eos_token_id=models.EOS,
        pad_token_id=models.PAD))


def test_tiny_gpt2_and_llama_folders_are_listed_and_load(comfy, llm, llm_folder):
    written = {"tiny-gpt2": tiny_gpt2(llm_folder / "tiny-gpt2"),
               "org/tiny-llama": tiny_llama(llm_folder / "org" / "tiny-llama")}
    (llm_folder / "notes").mkdir()
    (llm_folder / "notes" / "readme.txt").write_text("not a model")
    options = llm.CausalLMLoader.GET_SCHEMA().inputs[0].options  # read from disk: no restart needed
    assert options[0] == REFERENCE and {"tiny-gpt2", "org/tiny-llama"} <= set(options) and "notes" not in options
    assert "org" not in options

    from comfy import model_patcher

    for name, expected_type, blocks, width in (("tiny-gpt2", "gpt2", 3, 32), ("org/tiny-llama", "llama", 4, 48)):
        prompt = {"lm": loader(name), "gen": generate(layers="auto", max_new_tokens=6, temperature=0.0),
                  "out": capture("lm", "lm"), "text": capture("gen", "text"), "direction": capture("gen", "dir", 2)}
        result = comfy.run(prompt)
        assert result.ok, f"{name}: {result.error}"
        lm = result.captured["lm"]
        assert isinstance(lm.patcher, model_patcher.ModelPatcher)
        assert (lm.model_type, lm.blocks, lm.width) == (expected_type, blocks, width)
        state = written[name].state_dict()
        assert all(torch.equal(tensor, state[key]) for key, tensor in lm.model.state_dict().items())
        direction = result.captured["dir"]
        assert direction.layer == str((blocks - 1) // 3) and direction.encoder == expected_type
        assert direction.vectors["hidden"].shape == (1, width)
        assert isinstance(result.captured["text"], str)

    result = comfy.run({"lm": loader("tiny-gpt2", dtype="bfloat16"), "out": capture("lm", "lm")})
    assert result.ok, result.error
    assert {p.dtype for p in result.captured["lm"].model.parameters()} == {torch.bfloat16}


def test_bad_model_folders_fail_with_messages_naming_them(comfy, llm, llm_folder, monkeypatch):
    no_tokenizer = llm_folder / "no-tokenizer"
    save_tiny_model(no_tokenizer, transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1,
                                                          n_head=2))
    not_causal = llm_folder / "vision-model"
    not_causal.mkdir()
    transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32).save_pretrained(not_causal)
    no_weights = llm_folder / "no-weights"
    no_weights.mkdir()
    transformers.GPT2Config(vocab_size=50, n_layer=1, n_embd=16, n_head=2).save_pretrained(no_weights)
    tiny_tokenizer(no_weights)

    for name, message in (("no-tokenizer", "model 'no-tokenizer' has no tokenizer"),
                          ("vision-model", "model 'vision-model' is a 'vit' model (no architectures listed), not a causal "
                                           "language model"),
                          ("no-weights", "model 'no-weights' cannot be loaded")):
        result = comfy.run({"lm": loader(name), "out": capture("lm", "lm")})
        assert not result.ok and message in result.error, (name, result.error)
    # The fork checks combo choices before running (upstream does not): either ComfyUI or the node refuses them.
    result = comfy.run({"lm": loader("gone"), "out": capture("lm", "lm")})
    assert not result.ok and "gone" in result.error
    with torch.inference_mode(), pytest.raises(ValueError, match="model is 'gone', which is not a folder in models/LLM"):
        llm.CausalLMLoader.execute("gone", "auto")

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the package were not installed
    result = comfy.run({"lm": loader("tiny-gpt2" if (llm_folder / "tiny-gpt2").exists() else REFERENCE),
                        "out": capture("lm", "lm")})
    assert not result.ok
    assert "package 'transformers' is needed for the Causal LM Loader" in result.error and "pip install" in result.error


def mood_counts(comfy, strength):
    """(steered, unsteered) moods of SAMPLES continuations of "a", steered from the gloomy examples to the joyful
    ones at block 0."""
    prompt = {"lm": loader()}
    for seed in range(SAMPLES):
        prompt[f"gen{seed}"] = generate(strength=strength, seed=seed)
        prompt[f"text{seed}"] = capture(f"gen{seed}", f"text{seed}")
        prompt[f"plain{seed}"] = capture(f"gen{seed}", f"plain{seed}", 1)
    result = comfy.run(prompt)
    assert result.ok, result.error
    steered = [mood(result.captured[f"text{seed}"]) for seed in range(SAMPLES)]
    unsteered = [mood(result.captured[f"plain{seed}"]) for seed in range(SAMPLES)]
    return steered, unsteered, [result.captured[f"plain{seed}"] for seed in range(SAMPLES)]


def test_steering_from_examples_moves_the_mood_both_ways(comfy, llm, reference_lm):
    joyful, unsteered, plain_texts = mood_counts(comfy, STRENGTH)
    gloomy, unsteered_again, _ = mood_counts(comfy, -STRENGTH)
    assert unsteered == unsteered_again  # the unsteered text depends on the seed alone
    # The LM leans joyful from "a" (about 25 of 32), so the gloomy side shows the effect most.
    assert joyful.count("joyful") >= SAMPLES - 1 and joyful.count("joyful") > unsteered.count("joyful"), joyful
    assert gloomy.count("gloomy") >= SAMPLES - 2 and unsteered.count("gloomy") <= SAMPLES // 4, (gloomy, unsteered)

    lm = reference_lm
    with torch.inference_mode():  # unsteered is generate_text without steering, same seed
        model = lm.load()
        for seed in (0, 5, 17):
            assert plain_texts[seed] == steering.generate_text(model, lm.tokenizer, "a", 24, 1.0, 1.0, seed)[0]


def test_the_direction_output_is_the_engines_vector(llm, reference_lm):
    lm = reference_lm
    text, unsteered, direction = run_generate(llm, lm, layers="0,1", method="pca_diff",
                                              positive_examples="\n".join(JOYFUL[:10]),
                                              negative_examples="\n".join(GLOOMY[:10]))
    assert (direction.family, direction.encoder, direction.layer) == ("causal_lm", "gpt2", "0,1")
    assert direction.provenance["method"] == "pca_diff" and direction.provenance["model"] == REFERENCE
    with torch.inference_mode():
        model = lm.load()
        _, blocks = steering.transformer_blocks(model)
        positive = steering.example_states(model, lm.tokenizer, JOYFUL[:10], blocks, [0, 1])
        negative = steering.example_states(model, lm.tokenizer, GLOOMY[:10], blocks, [0, 1])
    for row, layer in enumerate((0, 1)):
        expected = steering.steering_vector(positive[layer], negative[layer], "pca_diff")
        torch.testing.assert_close(direction.vectors["hidden"][row], expected)


def full_recompute_greedy(model, tokenizer, prompt, blocks, vectors, strength, max_new_tokens):
    """Greedy decoding without the KV cache: every step runs the whole sequence again, the vector added at every
    position of each steered block by a forward hook."""
    def hook(vector):
        return lambda module, args, output: steering.with_block_output(
            output, steering.block_output(output) + strength * vector)

    ids = steering.prompt_ids(tokenizer, prompt)
    start = ids.shape[1]
    handles = [blocks[layer].register_forward_hook(hook(vector)) for layer, vector in vectors.items()]
    try:
        for _ in range(max_new_tokens):
            token = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
            ids = torch.cat([ids, token.view(1, 1)], 1)
            if token == tokenizer.eos_token_id:
                break
    finally:
        for handle in handles:
            handle.remove()
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("strength", [-STRENGTH, -3.0, 2.5])
def test_greedy_steering_with_the_kv_cache_equals_a_full_recompute(llm, reference_lm, strength):
    lm = reference_lm
    text, unsteered, direction = run_generate(llm, lm, strength=strength, layers="0,1", temperature=0.0)
    with torch.inference_mode():
        model = lm.load()
        _, blocks = steering.transformer_blocks(model)
        vectors = dict(zip((0, 1), direction.vectors["hidden"]))
        expected = full_recompute_greedy(model, lm.tokenizer, "a", blocks, vectors, strength, 24)
        plain = full_recompute_greedy(model, lm.tokenizer, "a", blocks, {}, 0.0, 24)
    assert text == expected and unsteered == plain
    assert text != unsteered  # the steering changed what was written, so the comparison means something


def test_the_global_random_state_is_left_alone(llm, reference_lm):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = run_generate(llm, reference_lm, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # a moved global generator changes nothing either: each text depends on its seed alone
    second = run_generate(llm, reference_lm, seed=3)
    assert first[:2] == second[:2]


class TupleBlock(torch.nn.Module):
    """A block as transformers 4.x returns it: a tuple led by the hidden states."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        return self.block(*args, **kwargs), None


class TupleBlockList(torch.nn.ModuleList):
    """The stack as a 4.x model uses it: the caller takes the hidden states out of each block's tuple."""

    def __iter__(self):
        return iter([lambda *args, block=block, **kwargs: block(*args, **kwargs)[0] for block in super().__iter__()])


def test_blocks_that_return_tuples_steer_alike(llm, reference_lm):
    with torch.inference_mode():
        model = transformers.AutoModelForCausalLM.from_pretrained(llm.REFERENCE_FOLDER, local_files_only=True)
        model.transformer.h = TupleBlockList([TupleBlock(block) for block in model.transformer.h])
        tuple_lm = llm.managed_lm(model, reference_lm.tokenizer, "tuple blocks")
        hidden = torch.randn(1, 3, 64)
        assert isinstance(model.transformer.h[0](hidden), tuple)
    assert tuple_lm.blocks == 2
    for inputs in (dict(temperature=0.0, strength=-STRENGTH, layers="0,1"), dict(seed=4, strength=-STRENGTH)):
        tensor_result = run_generate(llm, reference_lm, **inputs)
        tuple_result = run_generate(llm, tuple_lm, **inputs)
        assert tuple_result[:2] == tensor_result[:2] and tuple_result[0] != tuple_result[1]
        torch.testing.assert_close(tuple_result[2].vectors["hidden"], tensor_result[2].vectors["hidden"])


def directions_root(folders):
    return Path(folders.folder_paths.get_folder_paths(folders.DIRECTIONS_FOLDER)[0])


def test_control_vectors_round_trip_through_gguf(comfy, llm, folders, reference_lm, tmp_path):
    prefix = f"control_vectors/{tmp_path.name}"
    result = comfy.run({"lm": loader(), "gen": generate(layers="1"), "dir": capture("gen", "direction", 2),
                        "save": {"class_type": "LSC_SaveControlVector", "inputs": {
                            "direction": ["gen", 2], "filename_prefix": prefix, "model_hint": ""}}})
    assert result.ok, result.error
    original = result.captured["direction"]
    name = f"{prefix}_00001.gguf"
    path = directions_root(folders) / name
    assert path.is_file() and str(path) in "".join(result.outputs["save"]["text"])
    assert name in llm.LoadControlVector.GET_SCHEMA().inputs[0].options

    result = comfy.run({"load": {"class_type": "LSC_LoadControlVector", "inputs": {"file": name}},
                        "out": capture("load", "direction")})
    assert result.ok, result.error
    loaded = result.captured["direction"]
    assert (loaded.family, loaded.encoder, loaded.layer) == ("causal_lm", "gpt2", "1")
    assert loaded.provenance == {"method": "GGUF control vector", "file": name}
    torch.testing.assert_close(loaded.vectors["hidden"], original.vectors["hidden"], rtol=0, atol=0)

    for seed in (0, 1):  # the loaded direction, at its own blocks, steers exactly as the original
        steered_original = run_generate(llm, reference_lm, direction=original, layers="", seed=seed,
                                        positive_examples="", negative_examples="")
        steered_loaded = run_generate(llm, reference_lm, direction=loaded, layers="", seed=seed,
                                      positive_examples="", negative_examples="")
        assert steered_loaded[:2] == steered_original[:2]

    with torch.inference_mode():  # a model_hint given on the node wins over the direction's encoder
        llm.SaveControlVector.execute(original, prefix, "llama")
    assert llm.gguf.read_control_vector(directions_root(folders) / f"{prefix}_00002.gguf").model_hint == "llama"


def test_control_vector_files_that_cannot_be_used_are_refused(comfy, llm, folders, reference_lm):
    direction = run_generate(llm, reference_lm, layers="0")[2]
    with torch.inference_mode(), pytest.raises(ValueError, match="llama.cpp rejects direction.0"):
        llm.SaveControlVector.execute(direction, "control_vectors/block0", "")
    no_blocks = Direction({"hidden": torch.ones(64)}, family="causal_lm", encoder="gpt2")
    with torch.inference_mode(), pytest.raises(ValueError, match="direction records no blocks"):
        llm.SaveControlVector.execute(no_blocks, "control_vectors/none", "")
    no_hint = Direction({"hidden": torch.ones(64)}, family="causal_lm", layer="1")
    with torch.inference_mode(), pytest.raises(ValueError, match="model_hint is empty"):
        llm.SaveControlVector.execute(no_hint, "control_vectors/nohint", "")

    (directions_root(folders) / "notes.gguf").write_text("these are notes, not a control vector")
    assert "notes.gguf" in llm.LoadControlVector.GET_SCHEMA().inputs[0].options
    result = comfy.run({"load": {"class_type": "LSC_LoadControlVector", "inputs": {"file": "notes.gguf"}},
                        "out": capture("load", "direction")})
    assert not result.ok and "control vector file 'notes.gguf' is not a GGUF file" in result.error
    with torch.inference_mode(), pytest.raises(ValueError, match="file is 'missing.gguf'"):
        llm.LoadControlVector.execute("missing.gguf")


NO_EXAMPLES = dict(positive_examples="", negative_examples="")


def hidden_direction(width=64, encoder="gpt2", family="causal_lm", layer="1", rows=1):
    return Direction({"hidden": torch.ones(rows, width)}, family=family, encoder=encoder, layer=layer)


@pytest.mark.parametrize("inputs, message", [
    (dict(layers="2"), "layers names block 2, but lm ('reference (built-in)') has 2 blocks"),
    (dict(layers="one"), "layers is 'one'; expected block numbers"),
    (dict(layers=""), "layers is empty, which means the direction's own blocks, but no direction is connected"),
    (dict(direction=hidden_direction(width=32), **NO_EXAMPLES), "direction is 32-wide, but lm ('reference (built-in)') has 64-wide"),
    (dict(direction=hidden_direction(encoder="llama"), **NO_EXAMPLES), "direction was made for a 'llama' model, but lm is "
                                                        "'reference (built-in)', a 'gpt2' model"),
    (dict(direction=hidden_direction(family="sd1", encoder="clip_l"), **NO_EXAMPLES), "direction was made for a sd1 text encoder"),
    (dict(direction=Direction({"pooled": torch.ones(64)}), **NO_EXAMPLES), "direction is in pooled space; expected a hidden"),
    (dict(direction=hidden_direction(layer="5"), layers="", **NO_EXAMPLES), "direction has vectors for block 5, but lm"),
    (dict(direction=hidden_direction(layer="1"), layers="0", **NO_EXAMPLES), "layers asks for block 0, but the direction has "
                                                              "vectors for blocks 1 only"),
    (dict(direction=hidden_direction()), "a direction is connected and examples are written"),
    (dict(positive_examples="", negative_examples=""), "positive_examples and negative_examples are empty"),
    (dict(negative_examples=" \n "), "negative_examples is empty and no direction is connected"),
    (dict(method="pca_diff", positive_examples="\n".join(JOYFUL[:3]), negative_examples="\n".join(GLOOMY[:4])),
     "there are 3 positive and 4 negative examples"),
    (dict(max_new_tokens=31), "exceed the 32 positions lm ('reference (built-in)') can read; expected "
                              "max_new_tokens of at most 30"),
])
def test_bad_generate_inputs_fail_with_messages_naming_the_input(llm, reference_lm, inputs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_generate(llm, reference_lm, **inputs)


def test_the_llm_folder_is_registered_once(folders):
    folder_paths = folders.folder_paths
    before = folder_paths.get_folder_paths("LLM")
    folders.register_llm_folder()
    assert folder_paths.get_folder_paths("LLM") == before and len(set(map(str, before))) == len(before)


def test_include_prompt_gives_the_prompt_and_its_continuation_as_one_text(llm, reference_lm):
    """The reference LM continues "a": with include_prompt the text is a whole sentence of its language (decoded
    from the prompt's tokens and the new ones together), the same continuation as without it."""
    for seed in range(4):
        alone = run_generate(llm, reference_lm, seed=seed)
        whole = run_generate(llm, reference_lm, seed=seed, include_prompt=True)
        for short, full in zip(alone[:2], whole[:2]):
            assert full == f"a {short}" and grammar.parse(full) is not None, (short, full)


def test_auto_layers_take_a_connected_directions_own_blocks(llm, reference_lm):
    """A control vector for blocks 0 and 1 steers both with layers auto (as with layers empty), not just the block a
    third of the way up that auto picks for examples."""
    direction = run_generate(llm, reference_lm, layers="0,1")[2]
    settings = dict(direction=direction, positive_examples="", negative_examples="", temperature=0.0, strength=2.0)
    auto = run_generate(llm, reference_lm, layers="auto", **settings)
    assert auto[0] == run_generate(llm, reference_lm, layers="", **settings)[0]
    assert auto[0] != run_generate(llm, reference_lm, layers="0", **settings)[0]
