"""A standard diffusion sampler over any denoiser ``x, sigma -> x0``: the schedule of Karras et al. (2022) and their
deterministic Euler method.

Conventions are k-diffusion's and ComfyUI's, so samplers and guidance ported from either fit unchanged: the sampler
takes ``x`` already scaled to the first noise level (``noise * sigmas[0]``), and calls ``callback`` with a dict
``{"x", "i", "sigma", "denoised"}`` after every step.
"""

from __future__ import annotations

from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[dict], None]


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """``steps`` noise levels from sigma_max down to sigma_min, spaced evenly in sigma^(1/rho), then a final 0."""
    if steps < 1:
        raise ValueError(f"steps is {steps}; expected at least 1")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (high + ramp * (low - high)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """Integrate the probability-flow ODE dx/dsigma = (x - x0(x, sigma)) / sigma from ``x`` at noise level
    ``sigmas[0]`` (unit noise times sigmas[0]) down the schedule."""
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i].expand(x.shape[0])
        denoised = denoiser(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x
