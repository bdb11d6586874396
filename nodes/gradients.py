"""Gradients inside a node. ComfyUI runs every node under inference mode with models whose weights are inference
tensors, so a gradient path needs private copies of the modules with ordinary weights (comfyui-contract.md §3.5),
kept per source module so the copy is made once, not per run."""

from __future__ import annotations

import copy
import weakref

import torch

import comfy.model_management

_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()


def differentiable_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of ``module`` in eval mode whose weights are ordinary, frozen tensors (gradients flow to the
    inputs, never into the weights); the shared model is left as it is."""
    private = _COPIES.get(module)
    if private is None:
        with torch.inference_mode(False):
            private = copy.deepcopy(module).float().eval().requires_grad_(False)
        _COPIES[module] = private
    return private


def differentiable_vae_decoder(vae):
    """A ComfyUI VAE as ``raw latent -> RGB in 0..1`` with gradients (unclamped, so they flow everywhere), on the
    VAE's device."""
    comfy.model_management.load_models_gpu([vae.patcher], force_full_load=True)
    decoder = differentiable_copy(vae.first_stage_model)

    def decode(latent: torch.Tensor) -> torch.Tensor:
        return (decoder.decode(latent.to(vae.device, torch.float32)) + 1) / 2

    return decode
