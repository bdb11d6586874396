"""The block names and presets of Style Mix by Block on the real SD1.5 and SDXL UNet layouts (ComfyUI's own UNetModel
with those layouts, shrunk in width; weights never touched): the presets land where InstantStyle's blocks are."""

import pytest
import torch

# Layouts as ComfyUI's model detection reads them from the checkpoints (num_res_blocks 2; attention depth per
# res-block; the output list is read from its end).
LAYOUTS = {
    "sd15": dict(channel_mult=(1, 2, 4, 4), transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1),
    "sdxl": dict(channel_mult=(1, 2, 4), transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10,
                 adm_in_channels=64, num_classes="sequential"),
}
EXPECTED = {
    "sd15": {"names": ["input_1", "input_2", "input_4", "input_5", "input_7", "input_8", "middle_0"]
                      + [f"output_{i}" for i in range(3, 12)],
             "style": ["output_4"], "composition": ["input_8"],
             "coarse": ["input_7", "input_8", "middle_0", "output_3", "output_4", "output_5"],
             "fine": ["input_1", "input_2", "output_9", "output_10", "output_11"]},
    "sdxl": {"names": ["input_4", "input_5", "input_7", "input_8", "middle_0"] + [f"output_{i}" for i in range(6)],
             "style": ["output_1"], "composition": ["input_8"],
             "coarse": ["input_7", "input_8", "middle_0", "output_0", "output_1", "output_2"],
             "fine": ["input_4", "input_5", "output_3", "output_4", "output_5"]},
}


@pytest.fixture(scope="module")
def blocks_module(comfy):
    import sys

    return sys.modules[comfy.node_class("LSC_StyleMixBlocks").__module__.rsplit(".", 1)[0] + ".unet_blocks"]


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_presets_on_real_layouts(blocks_module, family):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, model_channels=32, out_channels=4, num_res_blocks=2,
                         num_head_channels=8, use_spatial_transformer=True, context_dim=32, legacy=False,
                         use_linear_in_transformer=True, operations=comfy.ops.disable_weight_init,
                         **LAYOUTS[family])
    blocks = blocks_module.attention_blocks(unet)
    assert [block.name for block in blocks] == EXPECTED[family]["names"]
    for preset in blocks_module.PRESETS:
        assert blocks_module.preset_blocks(blocks, preset) == EXPECTED[family][preset], (family, preset)
