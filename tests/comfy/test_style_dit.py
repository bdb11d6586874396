"""Style Mix by Block on DiT models (tiny Flux and SD3 built from ComfyUI's own classes): the style prompt's text
stream reaches the chosen blocks, an identical style prompt changes nothing, and the input model stays untouched."""

import pytest
import torch

import tiny_dits


def conditioning(width: int, pooled: int, length: int, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, length, width, generator=generator),
             {"pooled_output": torch.randn(1, pooled, generator=generator)}]]


def sample(model, positive: list) -> torch.Tensor:
    import comfy.sample

    latent = torch.zeros(2, 16, 8, 8)
    negative = [[torch.zeros_like(positive[0][0]), {"pooled_output": torch.zeros_like(positive[0][1]["pooled_output"])}]]
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 1), 3, 3.0, "euler", "simple", positive,
                               negative, latent, seed=1, disable_pbar=True)


@pytest.fixture(scope="module", params=sorted(tiny_dits.BUILDERS))
def dit(request, comfy):
    build, width, pooled = tiny_dits.BUILDERS[request.param]
    with torch.inference_mode():
        model = build()
        prompt, other = conditioning(width, pooled, 20, 1), conditioning(width, pooled, 12, 2)
        plain = sample(model, prompt)
        # How much the whole prompt moves this random model's sample: a block's share of it is judged against this.
        reach = (sample(model, other) - plain).abs().max()
        return request.param, model, prompt, other, plain, reach


def mix(comfy, model, style, blocks="style", block_weights="", weight=1.0, start=0.0, end=1.0):
    node = comfy.node_class("LSC_StyleMixBlocks")
    return node.execute(model, style, blocks, weight, block_weights, start, end).result[0]


@pytest.mark.parametrize("preset", ["style", "composition", "coarse", "fine"])
def test_the_prompt_itself_as_style_changes_nothing_and_another_prompt_does(comfy, dit, preset):
    family, model, prompt, other, plain, reach = dit
    with torch.inference_mode():
        assert torch.equal(sample(mix(comfy, model, prompt, preset), prompt), plain), family
        changed = sample(mix(comfy, model, other, preset), prompt)
    assert (changed - plain).abs().max() > 0.05 * reach > 0, family


def test_block_names_weights_and_window(comfy, dit):
    family, model, prompt, other, plain, reach = dit
    names = {"flux": ["double_0", "double_1", "single_0", "single_1"], "sd3": ["joint_0", "joint_1"]}[family]
    with torch.inference_mode():
        for name in names:
            alone = sample(mix(comfy, model, other, "custom", name), prompt)
            assert (alone - plain).abs().max() > 0.05 * reach > 0, (family, name)
        assert torch.equal(sample(mix(comfy, model, other, "custom", f"{names[-1]}:0"), prompt), plain)
        assert torch.equal(sample(mix(comfy, model, other, "custom", "all", start=1.0, end=1.0), prompt), plain)
        with pytest.raises(ValueError, match=rf"block_weights: 'input_4' is not a block of this model; expected one "
                                             rf"of {names[0]}"):
            mix(comfy, model, other, "custom", "input_4")
    # the input model was patched only on its clones
    with torch.inference_mode():
        assert torch.equal(sample(model, prompt), plain)
    assert "dit" not in model.model_options.get("transformer_options", {}).get("patches_replace", {})


def test_a_conditioning_of_another_width_is_refused(comfy, dit):
    family, model, *_ = dit
    narrow = conditioning(8, 8, 5, 3)
    with pytest.raises(ValueError, match=r"style holds 8-wide tokens but the model reads \d+-wide ones; expected"):
        mix(comfy, model, narrow)


def test_style_align_refuses_dit_models_by_name(comfy, dit):
    family, model, *_ = dit
    node = comfy.node_class("LSC_StyleAlign")
    with pytest.raises(ValueError, match=r"model is a \w+; expected a UNet model"):
        node.execute(model, True, 0.0, 1.0, 1.0)
