"""Gradient guidance during sampling: the sampler's noise prediction is tilted along the gradient of an ``Objective``,
so every step of any sampler moves the sample towards what the objective asks (universal guidance, with the
objective's gradient taken at the denoised estimate or through the denoiser).

With a denoiser ``x, sigma -> x0`` (k-diffusion's convention: the sampler's derivative is (x − x0)/σ, for EPS,
V-prediction and flow models alike), adding δ to the predicted noise ε = (x − x0)/σ is the same as taking
x0' = x0 − σ·δ. Guidance adds δ = strength · w(σ) · ĝ, where ĝ is the objective's gradient normalised to unit RMS per
batch item: one strength then suits every objective, every VAE and every model (a raw gradient's size differs by
orders of magnitude between a CLIP similarity and a latent distance). Each Euler step then moves x by
strength · w(σ) · ĝ · Δσ, i.e. the same push per unit of log σ relative to the noise there is.

``w(σ)`` is a schedule over a window of noise levels: ``window_position`` says where σ lies in it (0 at its noisy
end, 1 at its quiet end, evenly in log σ), ``schedule_weight`` what a shape makes of that.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .objectives import Candidate, Objective, score
from .sampling import Denoiser

SCHEDULES = ("constant", "ramp_down", "ramp_up", "bell")
MODES = ("x0", "exact")
# A sampler's float32 noise levels land a rounding away from the float64 ends of the model's range: still inside.
ROUNDING = 1e-5

LossOfLatent = Callable[[torch.Tensor], torch.Tensor]  # latent [B, ...] -> loss [B], differentiable
WeightOfSigma = Callable[[torch.Tensor], float | None]  # the noise level [B] -> the schedule's weight (None: off)


def window_position(sigma: float, sigma_start: float, sigma_end: float) -> float | None:
    """Where ``sigma`` lies in the window of noise levels from ``sigma_start`` (noisy) down to ``sigma_end`` (quiet),
    both positive: 0 at the noisy end, 1 at the quiet end, evenly in log σ; None outside the window. A window of
    one level is position 0 there."""
    if not 0 < sigma_end <= sigma_start:
        raise ValueError(f"the guidance window runs from σ {sigma_start:g} down to σ {sigma_end:g}; expected "
                         "0 < end ≤ start")
    if not sigma_end * (1 - ROUNDING) <= sigma <= sigma_start * (1 + ROUNDING):
        return None
    if sigma_start == sigma_end:
        return 0.0
    return min(1.0, max(0.0, math.log(sigma_start / sigma) / math.log(sigma_start / sigma_end)))


def schedule_weight(position: float, shape: str) -> float:
    """The guidance weight at ``position`` (0..1) of the window: ``constant`` 1; ``ramp_down`` 1 → 0 (guide the
    layout early, let the model finish the details unguided); ``ramp_up`` 0 → 1 (details only); ``bell`` 0 → 1 → 0
    (sin πp: the middle, where colour and shape are decided)."""
    if shape == "constant":
        return 1.0
    if shape == "ramp_down":
        return 1.0 - position
    if shape == "ramp_up":
        return position
    if shape == "bell":
        return math.sin(math.pi * position)
    raise ValueError(f"schedule is {shape!r}; expected one of {', '.join(SCHEDULES)}")


def guidance_loss(objective: Objective, decode: Callable[[torch.Tensor], torch.Tensor] | None) -> LossOfLatent:
    """The loss [B] guidance descends at a latent (raw VAE space): the objective's weighted terms plus, per
    constraint, its violation where it is violated (a hinge: no push once it holds). The start a term measures from
    (Keep Reference, Direction) is the latent itself, so such terms push only through their gradient there; the
    picture is decoded once (``decode``: latent -> RGB in 0..1, differentiable; needed when a term scores pictures)."""
    if not objective.terms and not objective.constraints:
        raise ValueError("objective is empty; expected at least one score to guide towards")
    if objective.needs_image and decode is None:
        raise ValueError(f"the objective ({objective.describe()}) scores pictures but no decoder was given; "
                         "expected a VAE")

    def loss_of(latent: torch.Tensor) -> torch.Tensor:
        image = decode(latent) if objective.needs_image else None
        start_image = None if image is None else image.detach()
        readings, loss = score(objective, Candidate(latent, image, latent.detach(), start_image))
        for constraint in objective.constraints:
            loss = loss + constraint.violation(readings).float().clamp_min(0)
        return loss

    return loss_of


def unit_rms(gradient: torch.Tensor) -> torch.Tensor:
    """Each item of ``gradient`` [B, ...] scaled to unit RMS; an all-zero item stays zero."""
    rms = gradient.float().pow(2).flatten(1).mean(dim=1).sqrt()
    rms = torch.where(rms > 0, rms, torch.ones_like(rms)).reshape(-1, *[1] * (gradient.ndim - 1))
    return (gradient.float() / rms).to(gradient.dtype)


def x0_gradient(loss_of_x0: LossOfLatent, denoised: torch.Tensor) -> torch.Tensor:
    """The gradient of the loss at the denoised estimate, per item (no backward pass through the denoiser)."""
    with torch.inference_mode(False), torch.enable_grad():
        x0 = denoised.detach().clone().requires_grad_(True)
        gradient, = torch.autograd.grad(loss_of_x0(x0).sum(), x0)
    return gradient


def exact_gradient(denoiser: Denoiser, loss_of_x0: LossOfLatent, x: torch.Tensor,
                   sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoised estimate (detached) and the gradient of its loss with respect to the noisy ``x``, through the
    denoiser (``denoiser`` must be differentiable), per item."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        denoised = denoiser(x, sigma.detach().clone())
        gradient, = torch.autograd.grad(loss_of_x0(denoised).sum(), x)
    return denoised.detach(), gradient


def guided_estimate(denoised: torch.Tensor, gradient: torch.Tensor, sigma: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """x0' = x0 − σ · scale · ĝ (ĝ: ``gradient`` at unit RMS per item): the noise prediction plus scale · ĝ."""
    sigma = sigma.reshape(-1, *[1] * (denoised.ndim - 1)).to(denoised.device, denoised.dtype)
    return denoised - sigma * scale * unit_rms(gradient).to(denoised.device, denoised.dtype)


def guided_denoiser(denoiser: Denoiser, loss_of_x0: LossOfLatent, strength: float, weight_of_sigma: WeightOfSigma,
                    mode: str = "x0") -> Denoiser:
    """``denoiser`` with guidance: where ``weight_of_sigma(sigma)`` is not None (nor 0), its estimate moved by
    ``guided_estimate`` at scale strength · weight along the gradient of ``loss_of_x0`` (a loss [B] of the
    denoiser's own latents) — taken at the estimate (``mode`` "x0", one loss gradient per step) or through the
    denoiser (``mode`` "exact", differentiable ``denoiser``, about a denoiser backward pass more)."""
    if mode not in MODES:
        raise ValueError(f"mode is {mode!r}; expected one of {', '.join(MODES)}")

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        weight = weight_of_sigma(sigma)
        if not weight or strength == 0:
            return denoiser(x, sigma)
        if mode == "x0":
            denoised = denoiser(x, sigma)
            gradient = x0_gradient(loss_of_x0, denoised)
        else:
            denoised, gradient = exact_gradient(denoiser, loss_of_x0, x, sigma)
        return guided_estimate(denoised, gradient, sigma, strength * weight)

    return guided


def windowed_weight(sigma_start: float, sigma_end: float, shape: str, sigma_min: float,
                    sigma_max: float) -> WeightOfSigma:
    """``weight_of_sigma`` for ``guided_denoiser``: ``schedule_weight`` of ``shape`` over the window from
    ``sigma_start`` down to ``sigma_end``, None outside it. The window is first clamped to the model's noise range
    (ComfyUI's percent sentinels, σ 1e9 at 0 % and 0 at 100 %, become its ends), so positions spread over the
    levels a sampler visits; a window outside the range is never active. The batch shares one noise level (its
    largest is read)."""
    schedule_weight(0.0, shape)  # checks the shape
    start, end = min(sigma_start, sigma_max), max(sigma_end, sigma_min)

    def weight(sigma: torch.Tensor) -> float | None:
        if end > start:
            return None
        position = window_position(float(torch.as_tensor(sigma).max()), start, end)
        return None if position is None else schedule_weight(position, shape)

    return weight
