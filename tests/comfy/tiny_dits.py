"""Tiny, random, weight-file-free Flux and SD3 MODELs (ComfyUI's own model classes with shrunk widths and depths),
for the tests of per-block patches on DiT models. Build them under ``torch.inference_mode()``, as ComfyUI's loaders
do, and only once ComfyUI is importable (the ``comfy`` fixture)."""

from __future__ import annotations

import torch

FLUX_TEXT_WIDTH, FLUX_POOLED_WIDTH = 32, 32
SD3_TEXT_WIDTH, SD3_POOLED_WIDTH = 4096, 64


def _patcher(config, seed: int):
    import comfy.model_management as mm
    import comfy.model_patcher
    from lsc_test_nodes import _initialise

    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    _initialise(base, seed)
    position = getattr(base.diffusion_model, "pos_embed", None)
    if position is not None:  # SD3's position table is a buffer made with torch.empty: whatever memory held before
        position.copy_(torch.randn(position.shape, generator=torch.Generator().manual_seed(seed)) * 0.02)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def flux_model(seed: int = 1):
    """Flux: 2 double and 2 single blocks, 64 wide; 16-channel latents."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.supported_models

    # Newer ComfyUI (the fork) also asks which text-id dimensions carry positions: none, as Flux.1 detects.
    fields = {field.name for field in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    newer = {"txt_ids_dims": []} if "txt_ids_dims" in fields else {}
    return _patcher(comfy.supported_models.Flux({**newer,
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": FLUX_POOLED_WIDTH,
        "context_in_dim": FLUX_TEXT_WIDTH, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2,
        "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True,
        "guidance_embed": False}), seed)


def sd3_model(seed: int = 2):
    """SD3: 3 joint blocks (the last updates only the picture), 192 wide (64 per block of depth); 16-channel latents."""
    import comfy.supported_models

    return _patcher(comfy.supported_models.SD3({
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 3, "num_patches": 64 * 64,
        "pos_embed_max_size": 64, "adm_in_channels": SD3_POOLED_WIDTH, "pos_embed_scaling_factor": None,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": SD3_TEXT_WIDTH, "out_features": 192}}}), seed)


BUILDERS = {"flux": (flux_model, FLUX_TEXT_WIDTH, FLUX_POOLED_WIDTH),
            "sd3": (sd3_model, SD3_TEXT_WIDTH, SD3_POOLED_WIDTH)}
