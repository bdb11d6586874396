"""Reconstruction error: send pictures through an autoencoder and back, and measure what came back different.

A VAE reconstructs what it was trained on well and what it never saw (unseen colours, several objects where it knew
one, artefacts) worse, so the per-picture error is an out-of-distribution score and the per-pixel error shows where.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from .checks import require_batch, require_finite
from .retrieval import ImageScorer, Progress, in_chunks, item_embeddings

ERRORS = ("squared", "absolute")
# A perceptually ordered dark-to-bright colour map (close to matplotlib's "inferno"): black, purple, red, orange,
# pale yellow; brightness alone still reads in grey.
HEAT_COLOURS = ((0.0, 0.0, 0.02), (0.34, 0.06, 0.43), (0.85, 0.26, 0.28), (0.99, 0.64, 0.04), (0.99, 1.0, 0.64))


class Reconstruction(NamedTuple):
    reconstructed: torch.Tensor  # [B, 3, H, W] in 0..1
    errors: torch.Tensor  # [B]: the mean per-pixel error of each picture
    error_maps: torch.Tensor  # [B, H, W]: the error of each pixel (mean over its colour channels)


def centre_crop(pictures: torch.Tensor, multiple: int, name: str = "image") -> torch.Tensor:
    """The centre of pictures [..., H, W] cut to a multiple of ``multiple`` in height and width (as ComfyUI's VAE
    encode cuts them), so a reconstruction lines up with its original pixel for pixel."""
    if multiple < 1:
        raise ValueError(f"multiple is {multiple}; expected at least 1")
    height, width = pictures.shape[-2:]
    if height < multiple or width < multiple:
        raise ValueError(f"{name} is {width}×{height} pixels; expected at least {multiple}×{multiple} (the VAE's "
                         "downscale factor)")
    top, left = (height % multiple) // 2, (width % multiple) // 2
    return pictures[..., top:top + height - height % multiple, left:left + width - width % multiple]


def reconstruction_errors(pictures: torch.Tensor, reconstructed: torch.Tensor, error: str = "squared",
                          name: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-picture errors [B] and per-pixel error maps [B, H, W]: squared or absolute differences, averaged over
    the colour channels (maps) and then over the pixels (errors)."""
    if error not in ERRORS:
        raise ValueError(f"error is '{error}'; expected one of {', '.join(ERRORS)}")
    if reconstructed.shape != pictures.shape:
        raise ValueError(f"the reconstruction of {name} has shape {tuple(reconstructed.shape)} but {name} has "
                         f"{tuple(pictures.shape)}; expected an autoencoder that gives back pictures of the size it "
                         "was given")
    difference = reconstructed.float().to(pictures.device) - pictures.float()
    maps = (difference.square() if error == "squared" else difference.abs()).mean(1)
    return maps.flatten(1).mean(1), maps


def reconstruct(pictures: torch.Tensor, round_trip: Callable[[torch.Tensor], torch.Tensor], error: str = "squared",
                chunk_size: int = 16, progress: Progress | None = None, name: str = "image") -> Reconstruction:
    """Every picture [B, 3, H, W] in 0..1 through ``round_trip`` (encode then decode: ``pictures -> pictures``),
    ``chunk_size`` at a time, and the errors of what came back."""
    require_batch(pictures, name, min_ndim=4)
    require_finite(pictures, name)
    if pictures.ndim != 4 or pictures.shape[1] != 3:
        raise ValueError(f"{name} has shape {tuple(pictures.shape)}; expected RGB pictures [batch, 3, height, width]")
    reconstructed = in_chunks(round_trip, pictures, chunk_size, progress)
    errors, maps = reconstruction_errors(pictures, reconstructed, error, name)
    return Reconstruction(reconstructed.float(), errors, maps)


def perceptual_distances(score: ImageScorer, pictures: torch.Tensor, reconstructed: torch.Tensor,
                         chunk_size: int = 64, progress: Progress | None = None) -> torch.Tensor:
    """1 − cosine between the image embeddings of each picture and of its reconstruction [B]: what a CLIP sees
    change (content), beside the pixel error (appearance)."""
    embeddings = item_embeddings(score, torch.cat([pictures, reconstructed.to(pictures.device)]), chunk_size, progress)
    return 1 - (embeddings[:len(pictures)] * embeddings[len(pictures):]).sum(1)


def heat_map(error_maps: torch.Tensor, top: float | None = None) -> tuple[torch.Tensor, float]:
    """Error maps [B, H, W] as colour pictures [B, H, W, 3] in 0..1 on one scale for the whole batch (0 black, ``top``
    pale yellow; default: the batch's largest error), so pictures compare; and that top."""
    top = float(error_maps.max()) if top is None else top
    level = (error_maps.float() / top).clamp(0, 1) if top > 0 else torch.zeros_like(error_maps, dtype=torch.float32)
    colours = torch.tensor(HEAT_COLOURS, device=level.device)
    position = level * (len(HEAT_COLOURS) - 1)
    lower = position.floor().long().clamp(max=len(HEAT_COLOURS) - 2)
    fraction = (position - lower)[..., None]
    return colours[lower] * (1 - fraction) + colours[lower + 1] * fraction, top
