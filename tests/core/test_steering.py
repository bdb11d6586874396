"""Activation steering: finding the blocks of every family, reading block specs, adding vectors where and only where
asked, making vectors from examples, and generating text with steering through the KV cache exactly as a full
recompute would."""

import pytest
import torch

EXTRAS = "steering tests need the test extras: pip install -e '.[test]'"
transformers = pytest.importorskip("transformers", reason=EXTRAS)
pytest.importorskip("open_clip", reason=EXTRAS)

from latent_space_control.core import steering as st  # noqa: E402
from latent_space_control.reference import models  # noqa: E402


@pytest.fixture(scope="module")
def lm():
    with torch.inference_mode():
        model = transformers.AutoModelForCausalLM.from_pretrained(models.WEIGHTS / "lm", local_files_only=True)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(models.WEIGHTS / "lm", local_files_only=True)


@pytest.fixture(scope="module")
def llama(tokenizer):
    """A random tiny Llama over the reference vocabulary (its decoder layers return tensors in transformers 5)."""
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, bos_token_id=models.BOS, eos_token_id=models.EOS,
                                      pad_token_id=models.PAD)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(config).eval()


class TupleBlock(torch.nn.Module):
    """A block as transformers 4.x writes them: hidden states first in a tuple."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, hidden):
        return self.linear(hidden), "extra"


class Stack(torch.nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)

    def forward(self, hidden):
        for block in self.blocks:
            hidden = st.block_output(block(hidden))
        return hidden


# ---- finding blocks -----------------------------------------------------------------------------------------------

def test_transformer_blocks_finds_gpt2_llama_and_open_clip_stacks(lm, llama):
    path, blocks = st.transformer_blocks(lm)
    assert path == "transformer.h" and blocks is lm.transformer.h and len(blocks) == 2
    path, blocks = st.transformer_blocks(llama)
    assert path == "model.layers" and blocks is llama.model.layers and len(blocks) == 3
    clip, _ = models.load_clip(models.WEIGHTS / "clip")
    path, blocks = st.transformer_blocks(clip.transformer)
    assert path == "resblocks" and blocks is clip.transformer.resblocks and len(blocks) == 3


def test_transformer_blocks_prefers_the_longest_uniform_list_and_names_a_model_without_one():
    model = torch.nn.Module()
    model.heads = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Tanh()])  # mixed classes
    model.short = torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 2)
    model.long = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
    path, blocks = st.transformer_blocks(model)
    assert path == "long" and blocks is model.long
    with pytest.raises(ValueError, match="my encoder .*no stack of transformer blocks"):
        st.transformer_blocks(torch.nn.Linear(2, 2), "my encoder")


# ---- block specs and vectors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [("3", [3]), ("2-4", [2, 3, 4]), ("1, 3,5", [1, 3, 5]), ("-1", [5]),
                                            ("-6", [0]), ("4,2-3,3", [2, 3, 4]), ("0 - 1", [0, 1]), ("5,-1", [5])])
def test_parse_layers_reads_numbers_ranges_and_negatives(spec, expected):
    assert st.parse_layers(spec, 6) == expected


@pytest.mark.parametrize("spec, message", [("6", "names block 6, but this model has 6 blocks"),
                                           ("-7", "names block -7"), ("4-2", "has the range 4-2"),
                                           ("2-6", "has the range 2-6"), ("two", "is 'two'; expected block numbers"),
                                           ("", "expected block numbers"), ("1,,2", "expected block numbers"),
                                           ("-1-2", "expected block numbers")])
def test_parse_layers_rejects_bad_specs_naming_the_input(spec, message):
    with pytest.raises(ValueError, match=f"^my layers .*{message}"):
        st.parse_layers(spec, 6, "my layers")


def test_layer_vectors_one_vector_goes_to_every_wanted_block_or_the_directions_own():
    vector = torch.arange(4.0)
    assert set(st.layer_vectors(vector, "1,2", [0, 3])) == {0, 3}
    own = st.layer_vectors(vector, "1, 2", None)
    assert set(own) == {1, 2} and all(torch.equal(v, vector) for v in own.values())
    with pytest.raises(ValueError, match="records no blocks; set my layers"):
        st.layer_vectors(vector, "", None, name="my layers")


def test_layer_vectors_per_block_vectors_keep_their_blocks():
    hidden = torch.arange(12.0).reshape(3, 4)
    own = st.layer_vectors(hidden, "2,3,4", None)
    assert list(own) == [2, 3, 4] and torch.equal(own[3], hidden[1])
    picked = st.layer_vectors(hidden, "2,3,4", [4])
    assert list(picked) == [4] and torch.equal(picked[4], hidden[2])
    with pytest.raises(ValueError, match="asks for block 1, but the direction has vectors for blocks 2,3,4"):
        st.layer_vectors(hidden, "2,3,4", [1, 4])
    with pytest.raises(ValueError, match="holds 3 vectors but records the blocks 2,3"):
        st.layer_vectors(hidden, "2,3", None)
    with pytest.raises(ValueError, match="holds 3 vectors but records the blocks 2,2,3"):
        st.layer_vectors(hidden, "2,2,3", None)
    with pytest.raises(ValueError, match="records the blocks 'two'; expected 0-based block numbers"):
        st.layer_vectors(hidden, "two", None)


def test_layer_vectors_must_fit_the_model_they_steer():
    """Blocks past the model's last are refused, naming the model; without a model (a file to write) any block
    goes."""
    hidden = torch.ones(2, 4)
    assert list(st.layer_vectors(hidden, "3,5", None, count=6)) == [3, 5]
    with pytest.raises(ValueError, match=r"direction has vectors for block 5, but lm 'x' has 4 blocks \(0 to 3\)"):
        st.layer_vectors(hidden, "3,5", None, count=4, owner="lm 'x'")
    assert list(st.layer_vectors(hidden, "3,5", None)) == [3, 5]
    with pytest.raises(ValueError, match="block 9, but this model has 4 blocks"):
        st.layer_vectors(torch.ones(4), "", [9], count=4)


# ---- adding vectors -----------------------------------------------------------------------------------------------

def test_block_output_reads_and_replaces_tensors_and_tuples():
    hidden, other = torch.ones(1, 2, 4), torch.zeros(3)
    replacement = torch.full((1, 2, 4), 5.0)
    assert st.block_output(hidden) is hidden and st.block_output((hidden, other)) is hidden
    assert st.with_block_output(hidden, replacement) is replacement
    replaced = st.with_block_output((hidden, other, "cache"), replacement)
    assert isinstance(replaced, tuple) and len(replaced) == 3
    assert replaced[0] is replacement and replaced[1] is other and replaced[2] == "cache"


def test_steer_hidden_adds_where_masked_and_never_modifies_its_input():
    hidden = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    before = hidden.clone()
    vector = torch.tensor([1.0, 0.0, -1.0, 2.0])
    everywhere = st.steer_hidden(hidden, vector, 0.5)
    assert torch.equal(hidden, before)
    torch.testing.assert_close(everywhere, before + 0.5 * vector)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    masked = st.steer_hidden(hidden, vector, 2.0, mask)
    assert torch.equal(hidden, before)
    torch.testing.assert_close(masked[mask], before[mask] + 2.0 * vector)
    torch.testing.assert_close(masked[~mask], before[~mask])


def test_steered_block_equals_the_steering_hook(lm):
    ids = torch.tensor([[models.BOS, 5, 9, 12, 7]])
    _, blocks = st.transformer_blocks(lm)
    vector = torch.randn(lm.config.n_embd, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[False, True, True, False, True]])
    with torch.inference_mode():
        plain = lm(ids).logits
        with st.steering(blocks, {1: vector}, 3.0, mask):
            hooked = lm(ids).logits
        original = blocks[1]
        blocks[1] = st.SteeredBlock(original, vector, 3.0, lambda hidden: mask)
        try:
            swapped = lm(ids).logits
        finally:
            blocks[1] = original
    assert not torch.allclose(hooked, plain, atol=1e-3)
    torch.testing.assert_close(swapped, hooked)
    assert "vector" not in dict(st.SteeredBlock(original, vector, 1.0).state_dict())


def test_steered_block_keeps_a_tuple_output():
    block = TupleBlock()
    hidden = torch.randn(1, 2, 4)
    out = st.SteeredBlock(block, torch.ones(4), 2.0)(hidden)
    assert out[1] == "extra"
    torch.testing.assert_close(out[0], block(hidden)[0] + 2.0)


def test_steering_adds_to_the_chosen_blocks_and_removes_its_hooks_even_on_error():
    stack = Stack([TupleBlock(), torch.nn.Identity(), torch.nn.Identity()])  # what blocks 1, 2 add shows as is
    hidden = torch.randn(1, 2, 4)
    plain = stack(hidden)
    vector = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with st.steering(stack.blocks, {0: vector, 2: -vector}, 1.5):
        torch.testing.assert_close(stack(hidden), plain)  # +1.5 v after block 0, −1.5 v after block 2
    with st.steering(stack.blocks, {1: vector}, 1.5):
        torch.testing.assert_close(stack(hidden), plain + 1.5 * vector)
    with pytest.raises(RuntimeError, match="boom"):
        with st.steering(stack.blocks, {0: vector, 1: vector}, 1.0):
            raise RuntimeError("boom")
    assert all(not block._forward_hooks for block in stack.blocks)
    torch.testing.assert_close(stack(hidden), plain)


def test_hidden_states_captures_block_outputs_as_float_and_removes_its_hooks():
    stack = Stack([TupleBlock(), torch.nn.Linear(4, 4)])
    hidden = torch.randn(1, 2, 4)
    captured = st.hidden_states(lambda: stack(hidden), stack.blocks, [0, 1])
    torch.testing.assert_close(captured[0], stack.blocks[0](hidden)[0])
    torch.testing.assert_close(captured[1], stack(hidden))
    assert all(not block._forward_hooks for block in stack.blocks)


# ---- positions and pooling ----------------------------------------------------------------------------------------

def test_position_mask_with_an_end_token():
    ids = torch.tensor([[1, 6, 2, 0, 0], [1, 6, 7, 8, 9]])  # the second row has no end token
    assert st.position_mask(ids, "all", end_token=2, pad_token=0) is None
    assert st.position_mask(ids, "prompt_tokens", end_token=2, pad_token=0).tolist() == [
        [True, True, True, False, False], [True, True, True, True, True]]
    assert st.position_mask(ids, "last", end_token=2, pad_token=0).tolist() == [
        [False, False, True, False, False], [False, False, False, False, True]]


def test_position_mask_with_padding_only():
    ids = torch.tensor([[5, 6, 7, 0, 0], [0, 0, 0, 0, 0], [5, 0, 7, 0, 0]])
    assert st.position_mask(ids, "all", pad_token=0) is None
    assert st.position_mask(ids, "prompt_tokens", pad_token=0).tolist() == [
        [True, True, True, False, False], [True, False, False, False, False], [True, True, True, False, False]]
    assert st.position_mask(ids, "last", pad_token=0).tolist() == [
        [False, False, True, False, False], [True, False, False, False, False], [False, False, True, False, False]]


def test_position_mask_without_end_or_pad_token_covers_the_whole_sequence():
    ids = torch.tensor([[5, 6, 7]])
    assert st.position_mask(ids, "all") is None
    assert st.position_mask(ids, "prompt_tokens").tolist() == [[True, True, True]]
    assert st.position_mask(ids, "last").tolist() == [[False, False, True]]
    with pytest.raises(ValueError, match="token_positions is 'first'; expected one of all, prompt_tokens, last"):
        st.position_mask(ids, "first")


def test_pooled_states_means_over_the_masked_positions():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]], [[2.0, 2.0], [4.0, 4.0], [6.0, 6.0]]])
    torch.testing.assert_close(st.pooled_states(hidden), hidden.mean(1))
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(st.pooled_states(hidden, mask), torch.tensor([[2.0, 1.0], [0.0, 0.0]]))


# ---- vectors from examples ----------------------------------------------------------------------------------------

def test_mean_difference_is_exact():
    positive = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    negative = torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(st.steering_vector(positive, negative), torch.tensor([3.0, 1.0]))


def test_pca_diff_points_to_positive_and_is_scaled_to_the_mean_projection():
    generator = torch.Generator().manual_seed(3)
    negative = torch.randn(32, 6, generator=generator)
    axis = torch.tensor([0.0, 3.0, 0.0, 4.0, 0.0, 0.0]) / 5
    moves = 2.0 + torch.rand(32, generator=generator)  # every pair moves along +axis by 2..3, plus a little noise
    positive = negative + moves[:, None] * axis + 0.05 * torch.randn(32, 6, generator=generator)
    vector = st.steering_vector(positive, negative, "pca_diff")
    unit = vector / vector.norm()
    assert torch.dot(unit, axis) > 0.99
    torch.testing.assert_close(vector.norm(), ((positive - negative) @ unit).mean(), rtol=1e-5, atol=1e-5)
    flipped = st.steering_vector(negative, positive, "pca_diff")  # swapping the sets flips the sign, not the size
    torch.testing.assert_close(flipped, -vector, rtol=1e-5, atol=1e-5)


def test_pca_diff_equals_mean_difference_when_all_differences_are_parallel():
    negative = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    direction = torch.tensor([1.0, -2.0, 0.5, 3.0])
    positive = negative + torch.tensor([1.0, 2.0, 0.5, 4.0, 1.5])[:, None] * direction
    torch.testing.assert_close(st.steering_vector(positive, negative, "pca_diff"),
                               st.steering_vector(positive, negative, "mean_difference"), rtol=1e-5, atol=1e-5)


def test_steering_vector_errors_name_the_problem():
    states = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="3 positive and 2 negative examples"):
        st.steering_vector(states, states[:2], "pca_diff")
    with pytest.raises(ValueError, match="the vector is zero"):
        st.steering_vector(states, states.clone(), "mean_difference")
    with pytest.raises(ValueError, match="the vector is zero"):
        st.steering_vector(states, states.clone(), "pca_diff")
    with pytest.raises(ValueError, match="method is 'pca'; expected one of mean_difference, pca_diff"):
        st.steering_vector(states, states, "pca")
    with pytest.raises(ValueError, match="negative holds \\(0, 4\\) states"):
        st.steering_vector(states, states[:0])
    with pytest.raises(ValueError, match="positive"):
        st.steering_vector(torch.full((2, 4), float("nan")), states)


# ---- language models ----------------------------------------------------------------------------------------------

def _word_tokenizer(**special):
    """A GPT-2-style tokenizer: no start token added, none appended."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<|endoftext|>": 0, "a": 1, "red": 2, "circle": 3, "[UNK]": 4}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **special)


def test_prompt_ids_keep_the_start_token_and_drop_a_trailing_end_token(tokenizer):
    ids = st.prompt_ids(tokenizer, "a red circle")
    assert tokenizer("a red circle").input_ids[-1] == models.EOS  # the reference tokenizer appends one
    assert ids.shape == (1, 4) and ids[0, 0] == models.BOS and models.EOS not in ids[0].tolist()
    assert st.prompt_ids(tokenizer, "").tolist() == [[models.BOS]]


def test_prompt_ids_without_a_start_token():
    gpt2_like = _word_tokenizer(eos_token="<|endoftext|>")
    assert gpt2_like.bos_token_id is None
    assert st.prompt_ids(gpt2_like, "a red circle").tolist() == [[1, 2, 3]]
    assert st.prompt_ids(gpt2_like, "").tolist() == [[0]]  # GPT-2 starts from its end-of-text token
    with pytest.raises(ValueError, match="prompt is empty and this tokenizer has no start token"):
        st.prompt_ids(_word_tokenizer(), "")


def test_example_states_pool_each_text_over_its_own_tokens(lm, tokenizer):
    _, blocks = st.transformer_blocks(lm)
    texts = ["a bright small red circle on the left.", "alas, a dull large blue square in the middle weeps alone."]
    with torch.inference_mode():
        states = st.example_states(lm, tokenizer, texts, blocks, [0, 1])
        ids = st.prompt_ids(tokenizer, texts[1])
        alone = lm(ids, output_hidden_states=True).hidden_states
    assert states[0].shape == states[1].shape == (2, lm.config.n_embd)
    # hidden_states[k + 1] is block k's output, except the last, which transformers gives after the final norm
    torch.testing.assert_close(states[0][1], alone[1][0].mean(0))


def _greedy_by_full_recompute(model, blocks, vectors, strength, ids, max_new_tokens, end):
    """Greedy decoding that re-runs the whole sequence for every token (no cache), steering with its own hooks."""
    def add(vector):
        return lambda module, args, output: st.with_block_output(output, st.block_output(output) + strength * vector)

    handles = [blocks[layer].register_forward_hook(add(vector)) for layer, vector in vectors.items()]
    try:
        new = []
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], 1), use_cache=False).logits
            new.append(int(logits[0, -1].argmax()))
            if new[-1] == end:
                break
    finally:
        for handle in handles:
            handle.remove()
    return new


@pytest.mark.parametrize("model_name", ["lm", "llama"])
def test_greedy_generation_with_steering_equals_a_full_recompute(model_name, request, tokenizer):
    """The KV cache keeps the steered states of earlier positions: generating with it must give what re-running
    the whole steered sequence for every token gives."""
    model = request.getfixturevalue(model_name)
    _, blocks = st.transformer_blocks(model)
    width = model.config.hidden_size
    vectors = {0: torch.randn(width, generator=torch.Generator().manual_seed(6)),
               len(blocks) - 1: torch.randn(width, generator=torch.Generator().manual_seed(7))}
    strength = 2.0 if model_name == "lm" else 0.5
    prompt = "a"
    ids = st.prompt_ids(tokenizer, prompt)
    with torch.inference_mode():
        expected = _greedy_by_full_recompute(model, blocks, vectors, strength, ids, 12, tokenizer.eos_token_id)
        with st.steering(blocks, vectors, strength):
            steered = st.generate_text(model, tokenizer, prompt, 12, 0.0, 1.0, seed=0)
        plain = st.generate_text(model, tokenizer, prompt, 12, 0.0, 1.0, seed=0)
    assert len(expected) >= 4
    assert steered == [tokenizer.decode(expected, skip_special_tokens=True).strip()]
    assert steered != plain  # the steering changed the text, so the comparison says something


def test_sampled_generation_is_seeded_and_leaves_the_global_generator_alone(lm, tokenizer):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with torch.inference_mode():
        first = st.generate_text(lm, tokenizer, "a", 16, 1.0, 1.0, seed=11, count=6)
        again = st.generate_text(lm, tokenizer, "a", 16, 1.0, 1.0, seed=11, count=6)
        other = st.generate_text(lm, tokenizer, "a", 16, 1.0, 1.0, seed=12, count=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == again and first != other
    assert len(first) == 6 and len(set(first)) > 1  # sampled, so the six differ


def test_on_token_is_called_once_per_new_token_and_its_exception_stops_generation(lm, tokenizer):
    calls = []
    with torch.inference_mode():
        st.generate_text(lm, tokenizer, "a", 5, 0.0, 1.0, seed=0, count=2, on_token=calls.append)
    ids = st.prompt_ids(tokenizer, "a")
    with torch.inference_mode():
        greedy = _greedy_by_full_recompute(lm, st.transformer_blocks(lm)[1], {}, 0.0, ids, 5, tokenizer.eos_token_id)
    assert calls == list(range(1, len(greedy) + 1)) and len(greedy) == 5

    class Cancelled(Exception):
        pass

    seen = []

    def cancel_at_three(count):
        seen.append(count)
        if count == 3:
            raise Cancelled

    with pytest.raises(Cancelled), torch.inference_mode():
        st.generate_text(lm, tokenizer, "a", 10, 1.0, 1.0, seed=0, on_token=cancel_at_three)
    assert seen == [1, 2, 3]


def test_include_prompt_decodes_the_prompt_with_its_continuation(lm, tokenizer):
    with torch.inference_mode():
        new = st.generate_text(lm, tokenizer, "a", 8, 0.0, 1.0, seed=0)
        whole = st.generate_text(lm, tokenizer, "a", 8, 0.0, 1.0, seed=0, include_prompt=True)
    assert new[0] and whole == [f"a {new[0]}"]


def test_blocks_found_from_the_input_embedding_skip_a_longer_vision_tower():
    """A text model with a vision tower beside it (as Qwen-Image's text encoder has: 32 vision blocks, 28 language
    blocks): without the embedding the longest stack wins, the vision blocks; with it, the language blocks."""
    class Block(torch.nn.Linear):
        pass

    class Language(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = torch.nn.Embedding(10, 4)
            self.layers = torch.nn.ModuleList(Block(4, 4) for _ in range(2))

    class WithVision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Language()
            self.visual = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))

    model = WithVision()
    assert st.transformer_blocks(model)[0] == "visual"
    path, blocks = st.transformer_blocks(model, embedding=model.model.embed_tokens)
    assert path == "model.layers" and blocks is model.model.layers
    assert st.transformer_blocks(model, embedding=torch.nn.Embedding(2, 2))[0] == "visual"  # not inside: the whole model
