"""Tiny, random, weight-file-free ``comfy.sd.CLIP`` objects of several model families, for tests.

ComfyUI's own tokenizers (the real CLIP BPE and T5 vocabularies shipped with ComfyUI) and text-encoder classes are
used; only the transformer widths and depths are shrunk through ``<encoder>_model_config`` model options. Build
them under ``torch.inference_mode()``, as ComfyUI's loaders do. Call only after ComfyUI is importable (the ``comfy``
fixture).
"""

from __future__ import annotations

import torch

WIDTH = 32  # hidden size of every tiny CLIP tower and of the Flux T5
# Three layers: SDXL and SD3 read clip_l and clip_g at layer -2, and ComfyUI asserts abs(layer) < layer count.
SD3_T5_WIDTH = 4096  # SD3 pads its CLIP tokens to 4096 wide and joins T5's tokens after them: T5 must be that wide
FAMILIES = ("sd1", "sdxl", "sd3", "flux")


def clip_config(width: int = WIDTH) -> dict:
    return {"hidden_size": width, "intermediate_size": 2 * width, "num_attention_heads": 2, "num_hidden_layers": 3,
            "projection_dim": width}


def t5_config(width: int) -> dict:
    return {"d_model": width, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}


def _clip(tokenizer, model, model_options: dict, seed: int):
    import comfy.sd
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(tokenizer, model)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32, **model_options})
    from lsc_test_nodes import _initialise  # imports ComfyUI, so only once the comfy fixture made it importable

    _initialise(clip.cond_stage_model, seed)
    return clip


def sd1_clip(seed: int = 1):
    """SD1.5: clip_l; conditioning [1, 77, 32], pooled [1, 32]."""
    import comfy.sd1_clip

    return _clip(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel, {"clip_l_model_config": clip_config()}, seed)


def sdxl_clip(seed: int = 2):
    """SDXL: clip_l and clip_g side by side; conditioning [1, 77, 64], pooled (clip_g's) [1, 32]."""
    import comfy.sdxl_clip

    return _clip(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel,
                 {"clip_l_model_config": clip_config(), "clip_g_model_config": clip_config()}, seed)


def sd3_clip(seed: int = 3):
    """SD3: clip_l+clip_g tokens (zero-padded to 4096 wide) followed by T5's; conditioning [1, 77 + 77, 4096],
    pooled (clip_l's and clip_g's) [1, 64]. The 4096-wide T5 holds ~132 M parameters (its 32128-row embedding)."""
    from comfy.text_encoders import sd3_clip

    return _clip(sd3_clip.SD3Tokenizer, sd3_clip.sd3_clip(),
                 {"clip_l_model_config": clip_config(), "clip_g_model_config": clip_config(),
                  "t5xxl_model_config": t5_config(SD3_T5_WIDTH)}, seed)


def flux_clip(seed: int = 4):
    """Flux: T5 tokens (at least 256) as the conditioning, clip_l's pooled vector; [1, 256, 32] and [1, 32]."""
    from comfy.text_encoders import flux

    return _clip(flux.FluxTokenizer, flux.flux_clip(),
                 {"clip_l_model_config": clip_config(), "t5xxl_model_config": t5_config(WIDTH)}, seed)


BUILDERS = {"sd1": sd1_clip, "sdxl": sdxl_clip, "sd3": sd3_clip, "flux": flux_clip}


def omnigen2_clip(seed: int = 6):
    """OmniGen2: a Qwen2.5 language model as the text encoder (an LLM-based encoder; its chat template around the
    prompt, no end token, padding 151643). 64 wide with 2 blocks; the 151936-row embedding is most of it."""
    from comfy.text_encoders import omnigen2

    return _clip(omnigen2.Omnigen2Tokenizer, omnigen2.te(), {"qwen25_3b_model_config": {
        "hidden_size": WIDTH * 2, "intermediate_size": WIDTH * 4, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1}}, seed)
