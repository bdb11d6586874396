"""Gradients inside a node. ComfyUI runs every node under inference mode with models whose weights are inference
tensors, so a gradient path needs private copies of the modules with ordinary weights (comfyui-contract.md §3.5),
kept per source module (and its weight patches) so the copy is made once, not per run, and freed with the source."""

from __future__ import annotations

import copy
import weakref

import torch

import comfy.model_management
import comfy.sampler_helpers
import comfy.samplers

from ..core.adapters import open_clip_image_scorer

_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[object, torch.nn.Module]]" = weakref.WeakKeyDictionary()


def differentiable_copy(module: torch.nn.Module, version: object = None,
                        memo: dict | None = None) -> torch.nn.Module:
    """A float32 copy of ``module`` in eval mode whose weights are ordinary, frozen tensors (gradients flow to the
    inputs, never into the weights); the shared model is left as it is. ``version`` names the state of its weights
    (a ModelPatcher's patches): a new version makes a new copy. ``memo`` maps objects the copy should share."""
    cached = _COPIES.get(module)
    if cached is not None and cached[0] == version:
        return cached[1]
    with torch.inference_mode(False):
        private = copy.deepcopy(module, memo).float().eval().requires_grad_(False)
    _COPIES[module] = (version, private)
    return private


def ordinary(tensor: torch.Tensor) -> torch.Tensor:
    """A copy that is not an inference tensor, so it may take part in a backward pass."""
    with torch.inference_mode(False):
        return tensor.detach().clone()


def differentiable_clip_scorer(open_clip):
    """An LSC_OPEN_CLIP's image tower as ``RGB in 0..1 -> unit embedding`` with gradients, on its own device."""
    device = open_clip.load()
    with torch.inference_mode(False):  # the normalisation constants take part in the backward pass
        score = open_clip_image_scorer(differentiable_copy(open_clip.model))
    return lambda image: score(image.to(device))


def differentiable_vae_decoder(vae):
    """A ComfyUI VAE as ``raw latent -> RGB in 0..1`` with gradients (unclamped, so they flow everywhere), on the
    VAE's device."""
    comfy.model_management.load_models_gpu([vae.patcher], force_full_load=True)
    decoder = differentiable_copy(vae.first_stage_model)

    def decode(latent: torch.Tensor) -> torch.Tensor:
        return (decoder.decode(latent.to(vae.device, torch.float32)) + 1) / 2

    return decode


def differentiable_diffusion_model(model):
    """The MODEL's diffusion model (a ComfyUI BaseModel, with the patcher's weight patches such as LoRAs applied) as a
    private float32 copy for gradients; its device."""
    comfy.model_management.load_models_gpu([model], force_full_load=True)
    source = model.model
    # Not a copy of whichever patcher last sampled with the source: the copy's sampling reports to this one. The
    # config is shared, not copied (the fork's config class answers every unknown attribute, __setstate__ included,
    # with None, which deepcopy then calls).
    private = differentiable_copy(source, model.patches_uuid, {id(source.current_patcher): None,
                                                               id(source.model_config): source.model_config})
    # A proxy, not the patcher itself: the patcher holds the source, and a cached copy holding it would keep the
    # source (the cache's weak key) alive for ever.
    private.current_patcher = weakref.proxy(model)
    private.diffusion_model.dtype = torch.float32  # what BaseModel casts inputs to
    private.manual_cast_dtype = None
    return private, model.load_device


def differentiable_denoiser(model, positive: list, negative: list, cfg: float, latent_image: torch.Tensor,
                            seed: int):
    """``x, sigma -> denoised`` in model space, with classifier-free guidance at ``cfg`` over the CONDITIONINGs, as
    ComfyUI's samplers compute it (areas, masks, model patches), through a private copy so gradients flow to x;
    the model-space latent the sampler starts from (``process_in(latent_image)``) and the model's device."""
    private, device = differentiable_diffusion_model(model)
    conds = {"positive": comfy.sampler_helpers.convert_cond(positive),
             "negative": comfy.sampler_helpers.convert_cond(negative)}
    process_in = model.get_model_object("latent_format").process_in
    with torch.inference_mode(False):
        start = process_in(latent_image.to(device, torch.float32).clone())
        conds = comfy.samplers.process_conds(private, start.clone(), conds, device, start.clone(), None, seed)
    options = model.model_options

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return comfy.samplers.sampling_function(private, x, sigma, conds["negative"], conds["positive"], cfg,
                                                options, seed)

    return denoise, start, device
