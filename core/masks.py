"""Masks over latents: ComfyUI-style MASK tensors [B, H, W] (any resolution) applied to latents [B, C, (T,) H, W]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import require_finite


def mask_for_latent(mask: torch.Tensor, latent: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """The mask resized (bilinear) to the latent's spatial size, shaped to broadcast over it: [B or 1, 1, (1,) H, W]."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected a mask [batch, height, width]")
    require_finite(mask, name)
    if mask.shape[0] not in (1, latent.shape[0]):
        raise ValueError(f"{name} has batch {mask.shape[0]} but the latent has {latent.shape[0]}; expected 1 or {latent.shape[0]}")
    height, width = latent.shape[-2:]
    resized = F.interpolate(mask.unsqueeze(1).float(), size=(height, width), mode="bilinear", align_corners=False)
    resized = resized.clamp(0.0, 1.0).to(latent.dtype)
    return resized.reshape(resized.shape[0], 1, *([1] * (latent.ndim - 4)), height, width)


def blend_masked(base: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """``edited`` where the mask is 1, ``base`` where it is 0, a soft blend between."""
    weight = mask_for_latent(mask, base, name)
    return torch.lerp(base, edited, weight)
