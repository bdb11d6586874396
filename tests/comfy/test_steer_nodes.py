"""The steering nodes on ComfyUI CLIPs: Steer Vector from Prompts read against hidden states taken independently, and
Text Steer's steered CLIP against a temporary forward hook that adds the same vector, on the reference CLIP and on
tiny SD1.5, SDXL, SD3 and Flux CLIPs; the CLIP it was given keeps encoding as before."""

import pytest
import torch

import tiny_clips
from latent_space_control.core.directions import Direction


@pytest.fixture(scope="module")
def steer(comfy):
    from latent_space_control.nodes import steer

    return steer


@pytest.fixture(scope="module")
def clips(comfy, reference_family):
    """The reference CLIP and tiny CLIPs; "flux_wide_t5": Flux whose T5 (64 wide) outweighs its clip_l; "omnigen2":
    an LLM-based text encoder (Qwen2.5)."""
    with torch.inference_mode():
        from comfy.text_encoders import flux

        built = {family: tiny_clips.BUILDERS[family]() for family in tiny_clips.FAMILIES}
        built["flux_wide_t5"] = tiny_clips._clip(flux.FluxTokenizer, flux.flux_clip(), {
            "clip_l_model_config": tiny_clips.clip_config(), "t5xxl_model_config": tiny_clips.t5_config(64)}, 5)
        built["omnigen2"] = tiny_clips.omnigen2_clip()
    return {"reference": reference_family[1], **built}


def make_vector(steer, clip, positive="red", negative="blue", templates="none", encoder="auto", layers="auto",
                method="mean_difference", custom_templates=""):
    with torch.inference_mode():
        output = steer.SteerVectorFromPrompts.execute(
            clip=clip, positive=positive, negative=negative, templates=templates, custom_templates=custom_templates,
            encoder=encoder, layers=layers, method=method)
    return output.result[0], "".join(output.ui.as_dict()["text"])


def steered(steer, clip, direction, strength=1.0, layers="", token_positions="all"):
    with torch.inference_mode():
        return steer.TextSteer.execute(clip=clip, direction=direction, strength=strength, layers=layers,
                                       token_positions=token_positions).result[0]


def text_encode(comfy, clip, text="a red fox"):
    """What CLIPTextEncode makes: (conditioning tokens, pooled output or None)."""
    node = comfy.node_class("CLIPTextEncode")
    with torch.inference_mode():
        conditioning = getattr(node(), node.FUNCTION)(clip=clip, text=text)[0]
    return conditioning[0][0].clone(), conditioning[0][1].get("pooled_output")


def sub_encoder(clip, name):
    return getattr(clip.cond_stage_model, name)


def blocks_of(clip, name):
    transformer = sub_encoder(clip, name).transformer
    if name.startswith("qwen"):
        return transformer.model.layers
    return transformer.encoder.block if name == "t5xxl" else transformer.text_model.encoder.layers


def block_output(output):
    return output[0] if isinstance(output, tuple) else output


def recorder(captured: dict):
    """A forward hook keeping a copy of the block's output: ComfyUI's CLIP and T5 layers add to their input in
    place, so the tensor a block returns is changed by the blocks after it."""
    return lambda module, args, output: captured.update(state=block_output(output).float().clone())


def with_hook(clip, name, block, hook, run):
    """``run()`` with a forward hook on the block as ``clip``'s own patcher has it (ComfyUI loads that one first)."""
    clip.load_model()
    handle = blocks_of(clip, name)[block].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            return run()
    finally:
        handle.remove()


def prompt_ids(clip, name, text):
    key = name.removeprefix("clip_")
    return [token for token, _ in clip.tokenize(text)[key][0]]


EXPECTED = {  # clip -> (auto encoder, its width, its blocks)
    "reference": ("clip_l", 64, None), "sd1": ("clip_l", 32, 3), "sdxl": ("clip_g", 32, 3),
    "sd3": ("t5xxl", tiny_clips.SD3_T5_WIDTH, 2), "flux": ("clip_l", 32, 3), "flux_wide_t5": ("t5xxl", 64, 2),
    "omnigen2": ("qwen25_3b", 64, 2),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_vector_from_prompts_records_where_it_belongs(steer, clips, name):
    """auto reads the sub-encoder with the most parameters (tiny SDXL's towers tie: clip_g, named last; tiny Flux's
    clip_l outweighs its 32-wide T5, a 64-wide T5 outweighs it) at the block a third of the way up."""
    clip = clips[name]
    encoder, width, count = EXPECTED[name]
    count = count or len(blocks_of(clip, encoder))
    direction, summary = make_vector(steer, clip)
    assert (direction.encoder, direction.family) == (encoder, "sd1" if name == "reference" else name.split("_")[0])
    assert direction.vectors["hidden"].shape == (1, width)
    assert direction.layer == str((count - 1) // 3) and direction.provenance["blocks_in_encoder"] == str(count)
    assert direction.provenance["pooling"] == "prompt_tokens" and direction.provenance["method"] == "mean_difference"
    assert f"{width}-wide {encoder}" in summary and f"at block {(count - 1) // 3} of {count}" in summary
    assert direction.vectors["hidden"].norm() > 0


def test_vector_from_prompts_other_encoders_and_blocks(steer, clips):
    direction, _ = make_vector(steer, clips["sdxl"], encoder="clip_l", layers="2, 0")
    assert (direction.encoder, direction.layer, direction.vectors["hidden"].shape) == ("clip_l", "0,2", (2, 32))
    direction, _ = make_vector(steer, clips["sd3"], encoder="clip_g", layers="-1")
    assert (direction.encoder, direction.layer, direction.vectors["hidden"].shape) == ("clip_g", "2", (1, 32))


def pooled_state(clip, name, block, text):
    """The prompt's mean output of the block over its tokens, start to end token (taken by a hook, here)."""
    captured = {}
    with_hook(clip, name, block, recorder(captured), lambda: clip.encode_from_tokens(clip.tokenize(text)))
    ids = prompt_ids(clip, name, text)
    end = ids.index(sub_encoder(clip, name).special_tokens["end"])
    return captured["state"][0, :end + 1].mean(0)


@pytest.mark.parametrize("name, encoder", [("reference", "clip_l"), ("flux", "t5xxl")])
def test_mean_difference_is_the_mean_pooled_state_difference(steer, clips, name, encoder):
    clip = clips[name]
    positive, negative = ["a red circle", "a green square"], ["a blue circle"]
    direction, _ = make_vector(steer, clip, positive="\n".join(positive) + "\n\n", negative=negative[0],
                               encoder=encoder, layers="0,1")
    for row, block in enumerate((0, 1)):
        expected = (torch.stack([pooled_state(clip, encoder, block, p) for p in positive]).mean(0)
                    - torch.stack([pooled_state(clip, encoder, block, p) for p in negative]).mean(0))
        assert torch.allclose(direction.vectors["hidden"][row], expected, atol=1e-5), block


def test_templates_and_pca_diff(steer, clips):
    clip = clips["reference"]
    templated, _ = make_vector(steer, clip, templates="custom", custom_templates="a {} circle\na {} square")
    state = lambda text: pooled_state(clip, "clip_l", 0, text)  # noqa: E731  (auto: block 0 of 3)
    expected = (state("a red circle") + state("a red square") - state("a blue circle") - state("a blue square")) / 2
    assert templated.layer == "0" and torch.allclose(templated.vectors["hidden"][0], expected, atol=1e-5)
    paired, _ = make_vector(steer, clip, positive="red\ngreen", negative="blue\nyellow", method="pca_diff")
    assert paired.provenance["method"] == "pca_diff" and paired.vectors["hidden"].shape == (1, 64)
    with pytest.raises(ValueError, match="pca_diff pairs the i-th positive prompt .* positive has 2 and negative 1"):
        make_vector(steer, clip, positive="red\ngreen", negative="blue", method="pca_diff")


def hooked_encoding(clip, name, block, vector, strength, text="a red fox"):
    """The base CLIP's CLIPTextEncode output with strength · vector added to the block's output by a hook."""
    def add(module, args, output):
        hidden = block_output(output)
        moved = hidden + (strength * vector).to(hidden.dtype)
        return (moved, *output[1:]) if isinstance(output, tuple) else moved

    clip.load_model()
    handle = blocks_of(clip, name)[block].register_forward_hook(add)
    try:
        with torch.inference_mode():
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    finally:
        handle.remove()
    return cond[0][0], cond[0][1].get("pooled_output")


def same(a, b):
    return torch.equal(a[0], b[0]) and (a[1] is None) == (b[1] is None) and (a[1] is None or torch.equal(a[1], b[1]))


@pytest.mark.parametrize("name, encoder", [("reference", "clip_l"), ("sd1", "clip_l"), ("sdxl", "clip_g"),
                                           ("sdxl", "clip_l"), ("sd3", "clip_g"), ("flux", "t5xxl"),
                                           ("omnigen2", "qwen25_3b")])
def test_steered_clip_is_a_hook_at_that_block_and_leaves_the_base_alone(comfy, steer, clips, name, encoder):
    clip = clips[name]
    width = sub_encoder(clip, encoder).transformer.get_input_embeddings().weight.shape[-1]
    vector = torch.randn(width, generator=torch.Generator().manual_seed(7)) * 3
    family = "sd1" if name == "reference" else name
    direction = Direction({"hidden": vector}, family=family, encoder=encoder)
    before = text_encode(comfy, clip)

    steered_clip = steered(steer, clip, direction, strength=0.7, layers="0")
    assert same(text_encode(comfy, clip), before)  # a steered clone exists, not yet loaded
    moved = text_encode(comfy, steered_clip)
    assert not torch.equal(moved[0], before[0])
    expected = hooked_encoding(clip, encoder, 0, vector, 0.7)
    assert torch.allclose(moved[0], expected[0], atol=1e-5)
    if expected[1] is not None:
        assert torch.allclose(moved[1], expected[1], atol=1e-5)

    assert same(text_encode(comfy, clip), before)  # after the steered clone ran
    assert same(text_encode(comfy, clip.clone()), before)  # another clone of the base
    again = steered(steer, clip, direction, strength=0.7, layers="0")  # made while the first one is loaded
    text_encode(comfy, steered_clip)
    assert same(text_encode(comfy, again), moved)
    assert same(text_encode(comfy, steered(steer, clip, direction, strength=0.0, layers="0")), before)
    assert same(text_encode(comfy, clip), before)


def test_vector_from_prompts_steers_its_own_blocks(comfy, steer, clips):
    clip = clips["reference"]
    direction, _ = make_vector(steer, clip, layers="0,2")
    before = text_encode(comfy, clip)
    moved = text_encode(comfy, steered(steer, clip, direction, strength=2.0))
    vectors = dict(zip((0, 2), direction.vectors["hidden"]))

    def add(block):
        return lambda module, args, output: output + 2.0 * vectors[block]

    clip.load_model()
    handles = [blocks_of(clip, "clip_l")[block].register_forward_hook(add(block)) for block in vectors]
    try:
        expected = text_encode_unloaded(clip)
    finally:
        for handle in handles:
            handle.remove()
    assert not torch.equal(moved[0], before[0]) and torch.allclose(moved[0], expected, atol=1e-5)
    only_second = text_encode(comfy, steered(steer, clip, direction, strength=2.0, layers="2"))
    assert not torch.allclose(only_second[0], moved[0], atol=1e-5)


def text_encode_unloaded(clip, text="a red fox"):
    """CLIPTextEncode's tokens with the model as it is now (the caller loaded it and put hooks on)."""
    with torch.inference_mode():
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0]


@pytest.mark.parametrize("name, encoder", [("reference", "clip_l"), ("sdxl", "clip_g"), ("flux", "t5xxl")])
@pytest.mark.parametrize("positions", ["prompt_tokens", "last"])
def test_token_positions_steer_only_the_prompts_tokens(steer, clips, name, encoder, positions):
    clip, text, block = clips[name], "a red fox", 0
    width = sub_encoder(clip, encoder).transformer.get_input_embeddings().weight.shape[-1]
    vector = torch.randn(width, generator=torch.Generator().manual_seed(3))
    steered_clip = steered(steer, clip, Direction({"hidden": vector}, encoder=encoder), 1.5, str(block), positions)

    def output_of_block(source):
        captured = {}
        source.load_model()  # the block as this CLIP has it: the steering wrapper, or the original
        handle = blocks_of(source, encoder)[block].register_forward_hook(recorder(captured))
        try:
            with torch.inference_mode():
                source.encode_from_tokens(source.tokenize(text))
        finally:
            handle.remove()
        return captured["state"][0]

    difference = output_of_block(steered_clip) - output_of_block(clip)
    ids = prompt_ids(clip, encoder, text)
    end = ids.index(sub_encoder(clip, encoder).special_tokens["end"])
    picked = torch.zeros(len(ids), dtype=torch.bool)
    picked[:end + 1] = positions == "prompt_tokens"
    picked[end] = True
    assert difference.shape[0] == len(ids) > end + 1
    assert torch.allclose(difference[picked], (1.5 * vector).expand(int(picked.sum()), -1), atol=1e-5)
    assert not difference[~picked].any()
    # a second prompt through the same steered CLIP finds its own end token
    text = "a large blue square on the left"
    ids = prompt_ids(clip, encoder, text)
    end = ids.index(sub_encoder(clip, encoder).special_tokens["end"])
    difference = output_of_block(steered_clip) - output_of_block(clip)
    assert difference[end].abs().sum() > 0 and not difference[end + 1:].any()


def test_token_positions_of_an_llm_encoder_without_an_end_token(steer, clips):
    """OmniGen2's Qwen2.5 encoder has no end token and does not pad: prompt_tokens is every position of the chat
    template and the prompt, last is the final one."""
    clip, encoder = clips["omnigen2"], "qwen25_3b"
    vector = torch.randn(64, generator=torch.Generator().manual_seed(4))
    for positions in ("prompt_tokens", "last"):
        steered_clip = steered(steer, clip, Direction({"hidden": vector}, encoder=encoder), 1.5, "0", positions)
        outputs = []
        for source in (steered_clip, clip):
            captured = {}
            source.load_model()
            handle = blocks_of(source, encoder)[0].register_forward_hook(recorder(captured))
            try:
                with torch.inference_mode():
                    source.encode_from_tokens(source.tokenize("a red fox"))
            finally:
                handle.remove()
            outputs.append(captured["state"][0])
        difference = outputs[0] - outputs[1]
        moved = difference.abs().sum(-1) > 0
        assert int(moved.sum()) == (difference.shape[0] if positions == "prompt_tokens" else 1), positions
        assert moved[-1] and torch.allclose(difference[-1], 1.5 * vector, atol=1e-5)


def test_textual_inversion_rows_fall_back_to_every_position(steer, caplog):
    """Token rows that do not line up with the hidden states (an embedding spliced in) steer every position, with
    one warning."""
    positions = steer.RecordedPositions("prompt_tokens", end_token=2, pad_token=0, encoder="clip_l")
    positions.record(torch.tensor([[1, 5, 2, 0]]))
    assert positions(torch.zeros(1, 4, 8)).tolist() == [[True, True, True, False]]
    assert positions(torch.zeros(1, 4, 8)).tolist() == [[True, True, True, False]]  # a second steered block
    positions.record(torch.tensor([[1, 2, 0]]))  # a new forward: a new list, one embedding shorter than the states
    with caplog.at_level("WARNING", logger="latent_space_control"):
        assert positions(torch.zeros(1, 4, 8)) is None and positions(torch.zeros(1, 4, 8)) is None
    assert sum("falls back to all positions" in record.message for record in caplog.records) == 1


def hidden(width, layer="", encoder="clip_l", family="sd1", rows=None):
    shape = (width,) if rows is None else (rows, width)
    return Direction({"hidden": torch.ones(shape)}, family=family, encoder=encoder, layer=layer)


@pytest.mark.parametrize("direction, layers, message", [
    (hidden(32), "7", "layers names block 7, but clip's clip_l has 3 blocks"),
    (hidden(32), "", "the direction records no blocks; set layers"),
    (hidden(32, "0,1", rows=2), "2", "layers asks for block 2, but the direction has vectors for blocks 0,1"),
    (hidden(32, "5", rows=1), "", "direction has vectors for block 5, but clip's clip_l has 3 blocks"),
    (hidden(32, encoder="t5xxl"), "0", "direction was made with the t5xxl text encoder, but clip has clip_l"),
    (hidden(64), "0", "direction is 64-wide (made with clip_l) but clip's clip_l is 32-wide"),
    (hidden(32, family="sdxl"), "0", "direction was made for a sdxl text encoder but clip is sd1"),
    (Direction({"pooled": torch.ones(32)}), "0", "direction is in pooled space; expected a hidden direction"),
])
def test_text_steer_refuses_what_does_not_fit(steer, clips, direction, layers, message):
    with pytest.raises(ValueError) as error:
        steered(steer, clips["sd1"], direction, layers=layers)
    assert message in str(error.value)


def test_text_steer_needs_a_clip(steer):
    with pytest.raises(ValueError, match="clip is empty"):
        steered(steer, None, hidden(32), layers="0")


@pytest.mark.parametrize("arguments, message", [
    (dict(positive="  \n"), "positive is empty"),
    (dict(negative=""), "negative is empty"),
    (dict(encoder="clip_x"), "encoder is 'clip_x', but this clip has the text encoders clip_l, clip_g"),
    (dict(layers="3"), "layers names block 3, but clip's clip_g has 3 blocks"),
    (dict(layers="two"), "layers is 'two'; expected block numbers"),
    (dict(positive="red", negative="red"), "the same hidden states"),
    (dict(templates="custom", custom_templates="no mark"), "custom_templates has the template 'no mark'"),
])
def test_vector_from_prompts_bad_inputs(steer, clips, arguments, message):
    with pytest.raises(ValueError) as error:
        make_vector(steer, clips["sdxl"], **arguments)
    assert message in str(error.value)


def test_a_steered_clip_can_be_steered_again(comfy, steer, clips):
    """Text Steer on a Text Steer's CLIP adds both vectors: two steps of 1.0 and 0.5 at one block encode as one step
    of 1.5, and two vectors at two blocks as both hooks together; the first steered CLIP and the base are unchanged."""
    clip = clips["reference"]
    width = sub_encoder(clip, "clip_l").transformer.get_input_embeddings().weight.shape[-1]
    first, second = (torch.randn(width, generator=torch.Generator().manual_seed(seed)) for seed in (11, 12))
    before = text_encode(comfy, clip)
    once = steered(steer, clip, Direction({"hidden": first}, family="sd1", encoder="clip_l"), 1.0, "0")
    alone = text_encode(comfy, once)
    twice = steered(steer, once, Direction({"hidden": first}, family="sd1", encoder="clip_l"), 0.5, "0")
    assert torch.allclose(text_encode(comfy, twice)[0],
                          text_encode(comfy, steered(steer, clip, Direction({"hidden": first}, family="sd1",
                                                                           encoder="clip_l"), 1.5, "0"))[0], atol=1e-5)
    other_block = steered(steer, once, Direction({"hidden": second}, family="sd1", encoder="clip_l"), 1.0, "1")
    clip.load_model()  # the base's own blocks in place (not a steered clone's wrappers) before the hooks go on
    hooks = [blocks_of(clip, "clip_l")[block].register_forward_hook(
        lambda module, args, output, vector=vector: output + vector) for block, vector in ((0, first), (1, second))]
    try:
        expected = text_encode(comfy, clip)
    finally:
        for handle in hooks:
            handle.remove()
    assert torch.allclose(text_encode(comfy, other_block)[0], expected[0], atol=1e-5)
    assert same(text_encode(comfy, once), alone) and same(text_encode(comfy, clip), before)
