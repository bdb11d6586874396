"""One latent offset that moves decoded pictures from a negative prompt towards a positive one, found by CLIP.

``clip_latent_direction`` optimises a single offset δ (one latent's shape) so that ``decode(latents + δ)`` moves
towards the positive text embedding and away from the negative one over a whole batch of latents: what it finds is
what the batch has in common (a colour, a style), not one picture's edit, so it carries over to other latents.

Pushed by CLIP alone, δ soon paints what CLIP likes anywhere — stray blobs of the wanted colour, noise CLIP misreads —
and the pictures fall apart. Two penalties keep the rest of each picture: the change of its CLIP embedding across the
text direction (what else CLIP sees changing: shape, size, place) and the mean absolute change of its pixels (which
costs faint changes spread over the background more than a strong one where it is needed). The way from one look to
the other passes through pictures that are neither, which both penalties dislike, so their weight grows from zero to
``keep`` over the steps: first find the change, then clean it up.

δ is measured in units of the latents' RMS, so one setting of ``max_norm`` and ``learning_rate`` suits every VAE.
"""

from __future__ import annotations

from typing import Callable

import torch

from .checks import require_batch, require_finite

Progress = Callable[[int, int, torch.Tensor], None]
# The pixel penalty's weight per unit of ``keep``: pictures in 0..1 change by ~0.01 on average where one shape in
# ten pixels changes colour, while a clean edit moves the CLIP embedding across the text direction by ~0.2.
PIXEL_WEIGHT = 2.0
_SEED = 0  # the order in which batches are drawn: fixed, so the result depends on the inputs alone


def _unit_mean(embeddings: torch.Tensor, name: str) -> torch.Tensor:
    """The mean of a side's embeddings [N, E] at unit length, so each side weighs the same in the score."""
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"{name} has shape {tuple(embeddings.shape)}; expected text embeddings [prompts, width] with "
                         "at least one prompt")
    require_finite(embeddings, name)
    mean = embeddings.float().mean(dim=0)
    if mean.norm() < 1e-6:
        raise ValueError(f"{name} averages to a zero vector; expected embeddings of prompts that mean something alike")
    return mean / mean.norm()


def _batches(count: int, batch_size: int, steps: int, device: torch.device) -> list[torch.Tensor]:
    """The latents each step uses: all of them, or ``batch_size`` at a time through shuffled passes (each latent
    once per pass)."""
    if batch_size >= count:
        return [torch.arange(count, device=device)] * steps
    generator = torch.Generator().manual_seed(_SEED)
    order = torch.cat([torch.randperm(count, generator=generator)
                       for _ in range(-(-steps * batch_size // count))])
    return [order[step * batch_size:(step + 1) * batch_size].to(device) for step in range(steps)]


def clip_latent_direction(decode: Callable[[torch.Tensor], torch.Tensor],
                          score: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
                          positive: torch.Tensor, negative: torch.Tensor, steps: int = 100,
                          learning_rate: float = 0.1, max_norm: float = 1.5, progress: Progress | None = None, *,
                          keep: float = 1.0, batch_size: int = 32) -> torch.Tensor:
    """The offset δ [C, *spatial] that moves ``score(decode(latents + δ))`` over the batch ``latents`` [B, C, *spatial]
    towards the mean ``positive`` text embedding [P, E] and away from the mean ``negative`` one [Q, E] (the mean cosine
    to the one minus that to the other), while keeping the rest of each picture.

    ``decode`` maps latents to RGB pictures in 0..1 and ``score`` pictures to unit image embeddings of the CLIP that
    made the text embeddings (``adapters.vae_decoder``, ``adapters.open_clip_image_scorer``); both must be
    differentiable, their weights not inference tensors (comfyui-contract.md §3.5). Each of the ``steps`` Adam steps
    decodes and scores ``batch_size`` latents (all of them if fewer). ``max_norm`` bounds δ's RMS per latent element
    relative to the RMS of ``latents`` (1: as large as a latent itself), kept by projection after every step;
    ``learning_rate`` is in the same unit. ``keep`` weighs the penalties that keep the rest of the pictures (module
    docstring; 0: CLIP alone). ``progress(step, steps, δ)`` is called after each step (1..steps); an exception it
    raises stops the search. Neither the inputs nor the modules' parameters are changed; the same inputs give the same
    δ, detached, on the latents' device and dtype.
    """
    require_batch(latents, "latents", min_ndim=3)
    require_finite(latents, "latents")
    if steps < 1:
        raise ValueError(f"steps is {steps}; expected at least 1")
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}; expected at least 1")
    for name, value in (("max_norm", max_norm), ("learning_rate", learning_rate)):
        if not value > 0 or value == float("inf"):
            raise ValueError(f"{name} is {value}; expected a positive number (in units of the latents' RMS)")
    if not keep >= 0 or keep == float("inf"):
        raise ValueError(f"keep is {keep}; expected a weight of 0 or more")
    positive_mean, negative_mean = _unit_mean(positive, "positive"), _unit_mean(negative, "negative")
    if positive_mean.shape != negative_mean.shape:
        raise ValueError(f"positive has width {positive.shape[1]} but negative {negative.shape[1]}; expected "
                         "embeddings of the same text encoder")
    rms = latents.detach().float().pow(2).mean().sqrt().item()
    if rms == 0:
        raise ValueError("latents are all zero (an empty latent); expected encoded or sampled pictures to learn from")

    with torch.inference_mode(False), torch.enable_grad():
        # Normal (not inference) copies: they take part in the backward pass.
        latents = latents.detach().clone()
        target = (positive_mean - negative_mean).clone().to(latents.device)
        across = target / target.norm()
        if keep > 0:
            with torch.no_grad():
                pictures = torch.cat([decode(chunk) for chunk in latents.split(batch_size)])
                embeddings = torch.cat([score(chunk) for chunk in pictures.split(batch_size)]).float()
        offset = torch.zeros(latents.shape[1:], device=latents.device, dtype=torch.float32, requires_grad=True)
        optimizer = torch.optim.Adam([offset], lr=learning_rate)
        for step, batch in enumerate(_batches(len(latents), batch_size, steps, latents.device)):
            edited = decode(latents[batch] + (offset * rms).to(latents.dtype))
            edited_embeddings = score(edited).float()
            loss = -(edited_embeddings @ target).mean()
            if keep > 0:
                weight = keep * step / max(steps - 1, 1)
                change = edited_embeddings - embeddings[batch]
                elsewhere = change - (change @ across)[:, None] * across
                loss = loss + weight * (elsewhere.pow(2).sum(dim=1).mean()
                                        + PIXEL_WEIGHT * (edited - pictures[batch]).abs().mean())
            # Only δ's gradient: nothing accumulates in the modules' parameters' .grad.
            offset.grad, = torch.autograd.grad(loss, offset)
            optimizer.step()
            with torch.no_grad():  # back onto the ball of RMS max_norm
                offset.mul_((max_norm / offset.pow(2).mean().sqrt().clamp_min(1e-12)).clamp(max=1))
            if progress is not None:
                progress(step + 1, steps, (offset * rms).detach().to(latents.dtype))
        return (offset * rms).detach().to(latents.dtype)
