"""One latent offset that moves decoded pictures from a negative prompt towards a positive one, found by CLIP.

``clip_latent_direction`` optimises a single offset δ (one latent's shape) so that ``decode(latents + δ)`` moves
towards the positive text embedding and away from the negative one over a whole batch of latents: what it finds is
what the batch has in common (a colour, a style), not one picture's edit, so it transfers to other latents. δ is
measured in units of the latents' own RMS, so one setting of ``max_norm`` and ``learning_rate`` suits every VAE.
"""

from __future__ import annotations

from typing import Callable

import torch

from .checks import require_batch, require_finite

Progress = Callable[[int, int, torch.Tensor], None]


def _unit_mean(embeddings: torch.Tensor, name: str) -> torch.Tensor:
    """The mean of a side's embeddings [N, E], at unit length (so each side weighs the same in the score)."""
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"{name} has shape {tuple(embeddings.shape)}; expected text embeddings [prompts, width] with "
                         "at least one prompt")
    require_finite(embeddings, name)
    mean = embeddings.mean(dim=0)
    if mean.norm() < 1e-6:
        raise ValueError(f"{name} averages to a zero vector; expected embeddings of prompts that mean something alike")
    return mean / mean.norm()


def clip_latent_direction(decode: Callable[[torch.Tensor], torch.Tensor],
                          score: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
                          positive: torch.Tensor, negative: torch.Tensor, steps: int = 40,
                          learning_rate: float = 0.05, max_norm: float = 0.5,
                          progress: Progress | None = None) -> torch.Tensor:
    """The offset δ [C, *spatial] that maximises, over the batch ``latents`` [B, C, *spatial], the mean cosine of
    ``score(decode(latents + δ))`` to the mean ``positive`` text embedding [P, E] minus that to the mean ``negative``
    one [Q, E].

    ``decode`` maps latents to RGB pictures in 0..1 and ``score`` pictures to unit image embeddings of the same CLIP
    as the text embeddings (``adapters.vae_decoder`` and ``adapters.open_clip_image_scorer``); both must be
    differentiable, with weights that are not inference tensors (comfyui-contract.md §3.5). ``max_norm`` bounds δ's
    root-mean-square per latent element relative to that of ``latents`` (0.5: half the latents' own size), kept by
    projection after every Adam step; ``learning_rate`` is in the same unit. ``progress(step, steps, δ)`` is called
    after each step (1..steps); an exception it raises stops the search. Neither the latents nor the modules'
    parameters are changed; the result is detached, on the latents' device and dtype.
    """
    require_batch(latents, "latents")
    require_finite(latents, "latents")
    if steps < 1:
        raise ValueError(f"steps is {steps}; expected at least 1")
    if not max_norm > 0:
        raise ValueError(f"max_norm is {max_norm}; expected a positive size relative to the latents' RMS")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate is {learning_rate}; expected a positive step size")
    positive_mean, negative_mean = _unit_mean(positive, "positive"), _unit_mean(negative, "negative")
    if positive_mean.shape != negative_mean.shape:
        raise ValueError(f"positive has width {positive.shape[1]} but negative {negative.shape[1]}; expected "
                         "embeddings of the same text encoder")

    latents = latents.detach()
    scale = max(float(latents.float().pow(2).mean().sqrt()), 1e-6)  # the latents' RMS: δ is optimised in its units
    with torch.inference_mode(False), torch.enable_grad():
        target = (positive_mean - negative_mean).detach().clone().to(latents.device, torch.float32)
        offset = torch.zeros(latents.shape[1:], device=latents.device, dtype=torch.float32, requires_grad=True)
        optimizer = torch.optim.Adam([offset], lr=learning_rate)
        for step in range(steps):
            images = decode(latents.clone() + (offset * scale).to(latents.dtype)[None])
            embeddings = score(images).float()
            loss = -(embeddings @ target).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # project back onto the ball of RMS max_norm
                rms = offset.pow(2).mean().sqrt()
                if rms > max_norm:
                    offset.mul_(max_norm / rms)
            if progress is not None:
                progress(step + 1, steps, (offset * scale).detach().to(latents.dtype))
    return (offset * scale).detach().to(latents.dtype)
