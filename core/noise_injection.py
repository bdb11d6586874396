"""Fresh noise injected during sampling, variance-correct for any sampler: the ancestral split of a step.

A step sigma -> sigma_next chosen for injection with amount eta is split as ancestral samplers split it: the sampler's
own (deterministic or not) update runs down to sigma_down < sigma_next, then fresh Gaussian noise brings x back up to
sigma_next, so x keeps the marginal of its noise level and only part of it is replaced by new randomness. The driver
samples in segments: the steps between injections are one call of the sampler over that part of the schedule, so any
sampler (multistep, SDE, ancestral) runs unchanged between them. Sigma conventions are k-diffusion's:
x = x0 + sigma n (EPS/V models) or x = (1 - sigma) x0 + sigma n (flow models).
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch

from .masks import mask_for_latent

# sample_segment(x, sigmas, first_step_index) -> (x at sigmas[-1], the last denoised estimate or None)
SegmentSampler = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor | None]]


def ancestral_sigma_down(sigma: float, sigma_next: float, amount: float, flow: bool) -> float:
    """Where the sampler's own step ends when fresh noise brings x back to ``sigma_next`` (``amount`` 1: the full
    share of an ancestral sampler; 0: ``sigma_next`` itself)."""
    if flow:
        return sigma_next * (1 + (sigma_next / sigma - 1) * amount)
    sigma_up = min(sigma_next, amount * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return math.sqrt(sigma_next ** 2 - sigma_up ** 2)


def renoise(x: torch.Tensor, sigma_from: float, sigma_to: float, noise: torch.Tensor, flow: bool) -> torch.Tensor:
    """x at noise level ``sigma_from`` brought up to ``sigma_to`` ≥ ``sigma_from`` with fresh unit ``noise``, exactly:
    x0's share and the total noise variance come out as a sample at ``sigma_to`` has them."""
    if flow:
        scale = (1 - sigma_to) / (1 - sigma_from)  # alpha_to / alpha_from
        added = math.sqrt(max(sigma_to ** 2 - (scale * sigma_from) ** 2, 0.0))
        return scale * x + added * noise
    return x + math.sqrt(max(sigma_to ** 2 - sigma_from ** 2, 0.0)) * noise


def injection_steps(sigmas: torch.Tensor, window: tuple[float, float], steps: set[int] | None) -> list[int]:
    """The steps (0-based; step i goes sigmas[i] -> sigmas[i+1]) that get fresh noise: those starting inside the
    window (high, low), among ``steps`` when given, and not ending at sigma 0 (nothing is left to renoise there)."""
    high, low = window
    return [i for i in range(len(sigmas) - 1)
            if low <= float(sigmas[i]) <= high and float(sigmas[i + 1]) > 0 and (steps is None or i in steps)]


def spaced_steps(chosen: list[int], total_steps: int, min_segment: int) -> list[int]:
    """The chosen steps that leave every segment at least ``min_segment`` steps long (the one after the last
    injection too, unless the schedule ends there): a step that would end a shorter segment goes without noise."""
    kept, start = [], 0
    for step in chosen:
        left = total_steps - (step + 1)
        if step + 1 - start >= min_segment and (left == 0 or left >= min_segment):
            kept.append(step)
            start = step + 1
    return kept


def sample_with_injection(sample_segment: SegmentSampler, x: torch.Tensor, sigmas: torch.Tensor, chosen: list[int],
                          amount: float, generator: torch.Generator, flow: bool, mask: torch.Tensor | None = None,
                          min_segment: int = 1) -> torch.Tensor:
    """Sample ``x`` (at ``sigmas[0]``) down ``sigmas`` with fresh noise on the ``chosen`` steps.

    Each chosen step ends its segment at sigma_down, then ``renoise`` brings x to sigma_next with one draw of x's shape
    from ``generator`` (CPU) and the next segment starts there. Where ``mask`` (a MASK [B, H, W], 1 = inject) is 0, x
    instead continues from sigma_down to sigma_next along its last Euler direction, deterministically; soft values
    blend the two. ``min_segment`` > 1 serves samplers that cannot run a single step (see ``spaced_steps``). With
    ``amount`` 0 or nothing chosen this is one call of ``sample_segment``: the plain sampler.
    """
    chosen = spaced_steps(chosen, len(sigmas) - 1, min_segment)
    if amount <= 0 or not chosen:
        return sample_segment(x, sigmas, 0)[0]
    weight = None if mask is None else mask_for_latent(mask, x).to(x.device)
    start = 0
    for step in chosen:
        sigma, sigma_next = float(sigmas[step]), float(sigmas[step + 1])
        sigma_down = ancestral_sigma_down(sigma, sigma_next, amount, flow)
        segment = torch.cat([sigmas[start:step + 1], sigmas.new_tensor([sigma_down])])
        x_down, denoised = sample_segment(x, segment, start)
        fresh = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
        x = renoise(x_down, sigma_down, sigma_next, fresh, flow)
        if weight is not None:
            if denoised is None:
                raise ValueError("the sampler reported no denoised estimate to its callback; a mask needs one to "
                                 "carry the unmasked part on to the next noise level")
            kept = x_down + (x_down - denoised) / sigma_down * (sigma_next - sigma_down)
            x = kept + weight * (x - kept)
        start = step + 1
    if start < len(sigmas) - 1:
        x = sample_segment(x, sigmas[start:], start)[0]
    return x


def parse_steps(text: str, name: str = "steps") -> set[int] | None:
    """Step numbers (0-based) and ranges as in '3, 5-7'; empty text means every step (None)."""
    words = [word for word in re.split(r"[\s,;]+", text.strip()) if word]
    if not words:
        return None
    chosen = set()
    for word in words:
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", word)
        if match is None:
            raise ValueError(f"{name} is '{text}'; '{word}' is not a step number; expected 0-based step numbers or "
                             "ranges such as '3, 5-7', or nothing for every step")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"{name}: the range '{word}' runs backwards; expected first-last with first ≤ last")
        chosen.update(range(first, last + 1))
    return chosen
