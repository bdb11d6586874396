"""Seeded noise as ComfyUI makes it, seed travel (noise that moves from one seed's noise to the next), and noise
tilted along a direction."""

from __future__ import annotations

from typing import Sequence

import torch

from .directions import fitted_to_latent
from .interpolation import ease, interpolate


def seeded_noise(seed: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard Gaussian noise from ``seed`` on the CPU generator: for a batch-1 shape this is the noise ComfyUI's own
    seeded noise gives for that seed, so a seed's picture is reproduced exactly at its frame."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device="cpu")


def seed_frames(seeds: int, frames: int) -> list[int]:
    """The frame each of ``seeds`` seeds sits on, over ``frames`` frames: the first seed on the first frame, the last
    on the last, the others as evenly spaced as whole frames allow (seed k on round(k (frames-1) / (seeds-1)))."""
    if seeds < 2:
        raise ValueError(f"{seeds} seed given; expected at least 2 seeds to travel between")
    if frames < seeds:
        raise ValueError(f"{frames} frames for {seeds} seeds; expected at least one frame per seed "
                         f"(a batch of at least {seeds})")
    # Integer rounding half up keeps consecutive seeds on distinct frames whenever frames >= seeds.
    return [(2 * k * (frames - 1) + seeds - 1) // (2 * (seeds - 1)) for k in range(seeds)]


def noise_travel(seeds: Sequence[int], sample_shape: Sequence[int], frames: int, easing: str = "linear",
                 indices: Sequence[int] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise travelling through the seeds' noises over ``frames`` frames: [len(indices), *sample_shape].

    Every seed sits on a frame of its own (see ``seed_frames``), and that frame is exactly the seed's noise. The frames
    between two consecutive seeds take the variance-preserving path cos(pi u/2) n_i + sin(pi u/2) n_j, u running
    from 0 to 1 between their frames (spaced by ``easing``), so every frame of independent Gaussian noises is itself
    exactly standard Gaussian. ``indices`` picks frames (default: all).
    """
    anchors = seed_frames(len(seeds), frames)
    indices = list(range(frames)) if indices is None else [int(i) for i in indices]
    if any(i < 0 or i >= frames for i in indices):
        raise ValueError(f"frame indices {indices} fall outside 0..{frames - 1}")
    noises: dict[int, torch.Tensor] = {}

    def noise(k: int) -> torch.Tensor:
        if k not in noises:
            noises[k] = seeded_noise(seeds[k], (1, *sample_shape), dtype)[0]
        return noises[k]

    out = torch.empty((len(indices), *sample_shape), dtype=dtype)
    for row, i in enumerate(indices):
        k = max(s for s in range(len(anchors) - 1) if anchors[s] <= i)  # the segment that holds frame i
        u = ease((i - anchors[k]) / (anchors[k + 1] - anchors[k]), easing)
        out[row] = interpolate(noise(k), noise(k + 1), u, "variance_preserving", start_dim=0)
    return out


def tilted_noise(noise: torch.Tensor, direction: torch.Tensor, strength: float,
                 name: str = "direction") -> torch.Tensor:
    """Noise moved ``strength`` standard deviations along a latent ``direction`` [C, *spatial] (resized to the noise's
    size if found at another), then scaled back to each item's own norm, so it stays on the Gaussian shell a sampler
    expects: n' = |n| (n + s u) / |n + s u| with u the unit direction. Strength 0 gives ``noise`` itself."""
    fitted = fitted_to_latent(direction, noise, name="the latent")
    if strength == 0:
        return noise
    length = fitted.norm()
    if length == 0:
        raise ValueError(f"{name} is zero at the latent's size; expected a direction that points somewhere")
    moved = noise.float() + strength * (fitted / length)  # unit Gaussian noise has std 1 along any unit vector
    items = noise.float().flatten(1).norm(dim=1) / moved.flatten(1).norm(dim=1)
    return (moved * items.reshape(-1, *([1] * (noise.ndim - 1)))).to(noise.dtype)
