"""Test-only ComfyUI nodes, loaded by ComfyUI's own custom-node loader beside the pack.

Models are built inside ``execute``, i.e. under the executor's ``torch.inference_mode()``, exactly as a loader node
builds them, so the tests meet the same inference tensors as real workflows do.
"""


import torch
from comfy_api.latest import ComfyExtension, io

import lsc_test_capture

TEXT_WIDTH = 32  # tiny CLIP hidden size = tiny UNet context width


def _initialise(module: torch.nn.Module, seed: int) -> None:
    """comfy.ops layers start as uninitialised memory: give every parameter seeded, sensible values."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        if name.endswith("bias"):
            values = torch.zeros(parameter.shape)
        elif parameter.ndim < 2:
            values = torch.ones(parameter.shape)
        else:
            values = torch.randn(parameter.shape, generator=generator) * 0.02
        parameter.data.copy_(values.to(parameter.dtype))


def tiny_model():
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15({
        "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
        "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_middle": 1,
        "transformer_depth_output": [1, 1, 1, 1], "context_dim": TEXT_WIDTH, "use_spatial_transformer": True,
        "legacy": False, "use_linear_in_transformer": False, "adm_in_channels": None,
        "use_temporal_attention": False, "use_temporal_resblock": False, "use_checkpoint": False,
        "dtype": torch.float32})
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    _initialise(base, 1)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def tiny_clip():
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32, "clip_l_model_config": {
        "hidden_size": TEXT_WIDTH, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
        "projection_dim": TEXT_WIDTH}})
    _initialise(clip.cond_stage_model, 2)
    return clip


def tiny_vae():
    import comfy.sd
    import comfy.taesd.taesd

    reference = comfy.taesd.taesd.TAESD(latent_channels=4)
    generator = torch.Generator().manual_seed(3)
    state = {key: torch.randn(value.shape, generator=generator) * 0.05 for key, value in reference.state_dict().items()}
    state["vae_scale"], state["vae_shift"] = torch.tensor(1.0), torch.tensor(0.0)
    return comfy.sd.VAE(sd=state)


class TinyCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LSCTest_TinyCheckpoint", category="lsc tests",
                         inputs=[io.String.Input("ckpt_name", default="tiny")],
                         outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()])

    @classmethod
    def execute(cls, ckpt_name):
        return io.NodeOutput(tiny_model(), tiny_clip(), tiny_vae())


class TestLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LSCTest_Latent", category="lsc tests",
                         inputs=[io.Int.Input("seed", default=0), io.Int.Input("batch", default=1),
                                 io.Int.Input("channels", default=4), io.Int.Input("length", default=0),
                                 io.Int.Input("height", default=8), io.Int.Input("width", default=8)],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, seed, batch, channels, length, height, width):
        shape = (batch, channels, *([length] if length else []), height, width)
        samples = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        return io.NodeOutput({"samples": samples})


class Capture(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LSCTest_Capture", category="lsc tests", is_output_node=True,
                         inputs=[io.AnyType.Input("value"), io.String.Input("label", default="value")],
                         outputs=[])

    @classmethod
    def execute(cls, value, label):
        lsc_test_capture.CAPTURED[label] = value
        lsc_test_capture.CAPTURED[label + ":inference_mode"] = torch.is_inference_mode_enabled()
        return io.NodeOutput()


class TestNodes(ComfyExtension):
    async def get_node_list(self):
        return [TinyCheckpoint, TestLatent, Capture]


async def comfy_entrypoint():
    return TestNodes()
