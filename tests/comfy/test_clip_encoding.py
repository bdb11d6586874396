"""Many prompts through a ComfyUI CLIP in one batched pass: the same numbers as ComfyUI's one-prompt-at-a-time
encoding, for tiny CLIPs of every family (SD1.5, SDXL, SD3, Flux) and the reference family, on each ComfyUI."""

import pytest
import torch

import tiny_clips
from latent_space_control.core.tokens import tile_tokens
from latent_space_control.nodes.clip_encoding import encode_prompts

TOLERANCE = 1e-5
CASES = tiny_clips.FAMILIES + ("reference",)
LONG = ", ".join(["a large red circle on the left", "a small blue square in the middle, black background"] * 6)
PROMPTS = ["a red circle", "(red:1.3) circle", "", LONG, "a (blue:0.8) square, (black background:1.2)"]
NAMES = {"sd1": ("sd1", "clip_l"), "sdxl": ("sdxl", "clip_l+clip_g"), "sd3": ("sd3", "clip_l+clip_g+t5xxl"),
         "flux": ("flux", "clip_l+t5xxl"), "reference": ("sd1", "clip_l")}  # the reference CLIP is an SD1-style clip_l


@pytest.fixture(scope="module")
def built(comfy):
    return {}


@pytest.fixture(params=CASES)
def case(request):
    return request.param


@pytest.fixture
def clip(case, built, request):
    if case == "reference":
        return request.getfixturevalue("reference_family")[1]
    if case not in built:
        with torch.inference_mode():
            built[case] = tiny_clips.BUILDERS[case]()
    return built[case]


def one_at_a_time(clip, prompts):
    return [clip.encode_from_tokens(clip.tokenize(p), return_pooled=True, return_dict=True) for p in prompts]


def sub_encoders(clip):
    import comfy.sd1_clip

    return [m for m in clip.cond_stage_model.modules() if isinstance(m, comfy.sd1_clip.ClipTokenWeightEncoder)]


def assert_matches_one_at_a_time(clip, prompts):
    encoded = encode_prompts(clip, prompts)
    expected = one_at_a_time(clip, prompts)
    lengths = [e["cond"].shape[1] for e in expected]
    assert encoded.lengths == lengths
    assert encoded.tokens.dtype == torch.float32
    assert encoded.tokens.shape == (len(prompts), encoded.tokens.shape[1], expected[0]["cond"].shape[2])
    assert encoded.tokens.shape[1] >= max(lengths)
    for i, e in enumerate(expected):
        tiled = tile_tokens(e["cond"], encoded.tokens.shape[1])[0]
        assert (encoded.tokens[i] - tiled).abs().max() <= TOLERANCE, f"prompt {i}"
        assert encoded.pooled.shape == (len(prompts), e["pooled_output"].shape[1])
        assert (encoded.pooled[i] - e["pooled_output"][0]).abs().max() <= TOLERANCE, f"prompt {i}"
    return encoded


@torch.inference_mode()
def test_batched_gives_each_prompts_own_conditioning(clip, case):
    encoded = assert_matches_one_at_a_time(clip, PROMPTS)
    assert (encoded.family, encoded.encoder) == NAMES[case]
    assert len(set(encoded.lengths)) > 1 or case == "flux"  # the long prompt: more sections (Flux: 256 T5 tokens)


@torch.inference_mode()
def test_single_prompt_and_same_length_prompts_are_not_tiled(clip):
    encoded = assert_matches_one_at_a_time(clip, ["a red circle"])
    assert encoded.tokens.shape[0] == 1
    encoded = assert_matches_one_at_a_time(clip, ["a red circle", "(a blue square:1.1)"])
    assert encoded.tokens.shape[1] == encoded.lengths[0] == encoded.lengths[1]


@torch.inference_mode()
def test_clip_skip_is_honoured(clip, case):
    skipped = clip.clone()
    skipped.clip_layer(-3 if case == "sdxl" else -2)  # SDXL already takes the penultimate layer
    encoded = assert_matches_one_at_a_time(skipped, PROMPTS[:2])
    plain = encode_prompts(clip, PROMPTS[:2])
    assert (encoded.tokens - plain.tokens).abs().max() > 1e-3


@torch.inference_mode()
def test_content_tokens_end_with_the_end_token(clip, case):
    encoded = encode_prompts(clip, PROMPTS)
    key = "t5xxl" if case == "flux" else "l"
    for prompt, count in zip(PROMPTS, encoded.content_tokens):
        word_ids = [entry[2] for section in clip.tokenize(prompt, return_word_ids=True)[key] for entry in section]
        if prompt:
            assert word_ids[count - 2] != 0  # the last word, then the end token
        assert not any(word_ids[count - 1:])
    if case == "flux":  # T5: the words' pieces and </s>, no start token
        assert encoded.content_tokens[0] == len(clip.tokenizer.t5xxl.tokenizer("a red circle")["input_ids"])
        assert encoded.content_tokens[2] == 1
    else:  # start, a, red, circle, end
        assert encoded.content_tokens[0] == 5
        assert encoded.content_tokens[2] == 2


@torch.inference_mode()
def test_each_sub_encoder_runs_once_per_section_length(clip):
    """The sequential run shows every section each sub-encoder needs; the batched run encodes each distinct
    section once, in one forward per section length."""
    seen = {}

    def record(module, args):
        seen.setdefault(module, []).append([tuple(section) for section in args[0]])

    modules = sub_encoders(clip)
    hooks = [m.register_forward_pre_hook(record) for m in modules]
    try:
        one_at_a_time(clip, PROMPTS)
        sequential, seen = seen, {}
        encode_prompts(clip, PROMPTS)
        batched = seen
    finally:
        for hook in hooks:
            hook.remove()
    assert set(sequential) == set(batched) == set(modules)
    for module in modules:
        needed = {section for call in sequential[module] for section in call}
        assert len(sequential[module]) == len(PROMPTS)
        assert sorted(len(call[0]) for call in batched[module]) == sorted({len(s) for s in needed})
        assert sorted(section for call in batched[module] for section in call) == sorted(needed)


def assert_unpatched(clip):
    for module in sub_encoders(clip):
        assert "encode" not in module.__dict__
        assert module.encode.__func__ is type(module).encode


@torch.inference_mode()
def test_model_is_unpatched_afterwards_even_after_an_error(clip):
    encode_prompts(clip, PROMPTS[:2])
    assert_unpatched(clip)

    def fail(module, args):
        raise RuntimeError("out of memory, say")

    hook = sub_encoders(clip)[-1].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            encode_prompts(clip, PROMPTS[:2])
    finally:
        hook.remove()
    assert_unpatched(clip)
    assert_matches_one_at_a_time(clip, PROMPTS[:2])


@torch.inference_mode()
def test_an_encode_wrapper_set_by_someone_else_is_kept(clip):
    module = sub_encoders(clip)[0]
    calls = []

    def wrapper(sections, real=module.encode):
        calls.append(len(sections))
        return real(sections)

    module.encode = wrapper
    try:
        assert_matches_one_at_a_time(clip, PROMPTS[:2])
        assert module.encode is wrapper
        assert calls
    finally:
        del module.encode
    assert_unpatched(clip)


def test_an_empty_prompt_list_is_refused(clip):
    with pytest.raises(ValueError, match="prompts .*expected at least one prompt"):
        encode_prompts(clip, [])
    with pytest.raises(ValueError, match=r"prompts\[1\] .*expected a string"):
        encode_prompts(clip, ["a red circle", None])
