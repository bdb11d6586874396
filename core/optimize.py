"""Gradient descent on a latent (or on the initial noise of a few-step sampler) against an ``Objective``:

    min_z  Σᵢ αᵢ·Lᵢ(G(z)) + λ·R(z)   subject to   cⱼ(G(z)) holds,

where G is the identity (LatentOptimize) or a differentiable sampler (NoiseOptimize), R a regulariser, and each
constraint is handled by an augmented Lagrangian (Hestenes–Powell–Rockafellar), so a user states what must hold
("CLIP similarity at least 0.3") instead of tuning a weight for it.

Each batch item is its own problem: losses are summed over the batch only to take one backward pass, Adam's and the
multipliers' state is per element / per item, and each item keeps its own best iterate and stops on its own.

Steps are in units of the start's RMS (the variable is z = z₀ + rms·δ, δ starting at 0), so one learning rate suits
every VAE and noise alike.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from .checks import require_batch, require_finite
from .masks import mask_for_latent
from .objectives import Objective, evaluate
from .sampling import Denoiser
from .style import low_frequencies

OPTIMISERS = ("adam", "sgd_nesterov")
REGULARISERS = ("distance_to_start", "norm", "gaussian_shell", "none")
MOMENTUM = 0.9
# The augmented Lagrangian's starting penalty μ and its growth while a constraint stays violated. Gentle on purpose:
# a CLIP constraint pushed hard is met by pictures that fool CLIP (on the reference world μ = 10 doubling reached
# "similarity 0.4" with a red circle CLIP read as green; μ = 1 growing by half reached it with a green circle).
PENALTY = 1.0
PENALTY_GROWTH = 1.5
MULTIPLIER_EVERY = 5  # steps between multiplier updates: the inner problem is solved roughly in between
PATIENCE = 10  # steps without a relative improvement of ``tolerance`` before an item counts as converged

Progress = Callable[[int, int, torch.Tensor], None]
Transform = Callable[[torch.Tensor], torch.Tensor]


def regulariser(name: str, z: torch.Tensor, start: torch.Tensor, rms: torch.Tensor | float) -> torch.Tensor:
    """R(z) per item [B]: ``distance_to_start`` mean ((z − z₀)/rms)²; ``norm`` the seed's mean (z/rms)²
    (``rms``: a number, or one per item shaped to broadcast over z); ``gaussian_shell`` the negative log-density of
    the norm of a d-dimensional unit Gaussian (chi distribution), per element and zero at its mode √(d − 1) — keeps
    noise where Gaussian noise lives; ``none`` zero."""
    flat = z.float().flatten(1)
    if name == "distance_to_start":
        return ((z - start).float() / rms).flatten(1).pow(2).mean(dim=1)
    if name == "norm":
        return (z.float() / rms).flatten(1).pow(2).mean(dim=1)
    if name == "gaussian_shell":
        d = flat.shape[1]
        radius = flat.norm(dim=1).clamp_min(1e-6)
        mode = math.sqrt(max(d - 1, 1))
        nll = radius.pow(2) / 2 - (d - 1) * radius.log()
        return (nll - (mode ** 2 / 2 - (d - 1) * math.log(mode))) / d
    if name == "none":
        return flat.new_zeros(flat.shape[0])
    raise ValueError(f"regulariser is {name!r}; expected one of {', '.join(REGULARISERS)}")


@dataclass
class OptimisationResult:
    variable: torch.Tensor  # the best iterate per item (latent or noise), detached
    latent: torch.Tensor  # G(variable): what the objective scored
    history: dict[str, list[float]]  # per step, the batch mean of every term's reading, "loss" and "total"
    steps_taken: int
    message: str  # why it stopped
    feasible: torch.Tensor  # [B] bool: every constraint holds at the best iterate
    readings: dict[str, torch.Tensor]  # every term's reading [B] at the best iterate


def _gap(reading: torch.Tensor) -> torch.Tensor:
    return reading.clamp_min(0)


def optimise(start: torch.Tensor, objective: Objective, decode: Callable[[torch.Tensor], torch.Tensor] | None,
             steps: int = 50, learning_rate: float = 0.05, optimiser: str = "adam",
             regulariser_name: str = "distance_to_start", regulariser_weight: float = 0.0,
             gradient_penalty: float = 0.0, mask: torch.Tensor | None = None, tolerance: float = 0.0,
             generate: Callable[[torch.Tensor], torch.Tensor] | None = None, smoothing: float = 0.0,
             progress: Progress | None = None) -> OptimisationResult:
    """Optimise ``start`` [B, C, *spatial] against ``objective``, scored at ``generate(z)`` (the identity when None)
    and its picture ``decode(·)`` (RGB in 0..1, differentiable; needed when the objective scores pictures).

    ``learning_rate`` is in units of the start's RMS per step. ``regulariser_weight`` λ weighs ``regulariser_name``
    (see ``regulariser``). ``gradient_penalty`` β adds β·‖∇_z L‖² (L: the objective's loss), which prefers flat
    minima; it needs a second backward pass through the decoder and scorer (about 2–3× the time per step).
    ``mask`` [B or 1, H, W] (any size) limits the change to where it is 1. ``smoothing`` > 0 passes the change
    through ``style.low_frequencies`` at that period (in latent cells) before it is added: CLIP's gradients are
    full of pixel-level detail, and a latent moved by them decodes to blotches and torn shapes; a smooth change
    recolours whole regions instead (benchmarks/fidelity.py: opt_keep_rate against opt_unsmoothed_keep_rate).
    ``tolerance`` > 0 stops an item once its best loss has improved by less than that fraction over the last
    ``PATIENCE`` steps with its constraints holding; the run ends when every item has stopped.
    ``progress(step, steps, z)`` runs after each step; an exception it raises stops the run.

    The best iterate per item is kept: among those where every constraint holds, the lowest loss; else the least
    violation. A non-finite loss stops the run with the best iterate so far and says so in ``message``. Nothing is
    changed in place; the result is detached, on ``start``'s device and dtype.
    """
    require_batch(start, "latent", min_ndim=3)
    require_finite(start, "latent")
    if steps < 1:
        raise ValueError(f"steps is {steps}; expected at least 1")
    if not learning_rate > 0 or not math.isfinite(learning_rate):
        raise ValueError(f"learning_rate is {learning_rate}; expected a positive number")
    if optimiser not in OPTIMISERS:
        raise ValueError(f"optimiser is {optimiser!r}; expected one of {', '.join(OPTIMISERS)}")
    for name, value in (("regulariser_weight", regulariser_weight), ("gradient_penalty", gradient_penalty),
                        ("tolerance", tolerance), ("smoothing", smoothing)):
        if not value >= 0 or not math.isfinite(value):
            raise ValueError(f"{name} is {value}; expected 0 or more")
    regulariser(regulariser_name, start[:1], start[:1], 1.0)  # checks the name
    if not objective.terms and not objective.constraints:
        raise ValueError("objective is empty; expected at least one score to optimise")
    if objective.needs_image and decode is None:
        raise ValueError(f"the objective ({objective.describe()}) scores pictures but no decoder was given; "
                         "expected a VAE")
    generate = generate or (lambda z: z)
    batch = start.shape[0]
    # Each item's own RMS, so an item's steps do not depend on the others; an all-zero item (an empty latent) steps
    # in absolute units.
    rms = start.detach().float().pow(2).flatten(1).mean(dim=1).sqrt()
    rms = torch.where(rms > 0, rms, torch.ones_like(rms)).reshape(-1, *[1] * (start.ndim - 1))

    # The gradient penalty differentiates a gradient: only the math attention kernel has a second derivative.
    attention = sdpa_kernel(SDPBackend.MATH) if gradient_penalty > 0 else contextlib.nullcontext()
    with torch.inference_mode(False), torch.enable_grad(), attention:
        start = start.detach().clone()  # an ordinary tensor: it takes part in the backward pass
        rms = rms.clone().to(start.device)
        free = None if mask is None else mask_for_latent(mask.to(start.device), start, "mask").clone()
        with torch.no_grad():
            start_latent = generate(start).detach()
            start_image = decode(start_latent).detach() if objective.needs_image else None
        delta = torch.zeros_like(start, dtype=torch.float32, requires_grad=True)
        if optimiser == "adam":
            step_rule = torch.optim.Adam([delta], lr=learning_rate)
        else:
            step_rule = torch.optim.SGD([delta], lr=learning_rate, momentum=MOMENTUM, nesterov=True)
        multipliers = [start.new_zeros(batch, dtype=torch.float32) for _ in objective.constraints]
        penalties = [start.new_full((batch,), PENALTY, dtype=torch.float32) for _ in objective.constraints]
        last_violation = [None for _ in objective.constraints]
        best = start.clone()
        best_key = torch.full((batch, 2), math.inf, device=start.device)  # (violation, loss): lexicographic
        best_history: list[torch.Tensor] = []
        done = torch.zeros(batch, dtype=torch.bool, device=start.device)
        history: dict[str, list[float]] = {}
        message = f"ran all {steps} steps"
        steps_taken = 0

        def moved(delta: torch.Tensor) -> torch.Tensor:
            change = low_frequencies(delta, smoothing) if smoothing > 0 else delta
            return start + (change if free is None else change * free) * rms

        for step in range(steps):
            z = moved(delta)
            latent = generate(z)
            readings, loss = evaluate(objective, latent, start_latent, start_image, decode)
            violations = [constraint.violation(readings) for constraint in objective.constraints]
            objective_value = loss + regulariser_weight * regulariser(regulariser_name, z, start, rms)
            total = objective_value
            for violation, multiplier, penalty in zip(violations, multipliers, penalties):
                total = total + ((multiplier + penalty * violation).clamp_min(0).pow(2)
                                 - multiplier.pow(2)) / (2 * penalty)
            if gradient_penalty > 0:
                slope, = torch.autograd.grad(loss.sum(), delta, create_graph=True)
                total = total + gradient_penalty * slope.flatten(1).pow(2).sum(dim=1)
            if not torch.isfinite(total).all():
                bad = int((~torch.isfinite(total)).sum())
                message = (f"stopped at step {step + 1}: the loss is not a finite number for {bad} of {batch} items "
                           "(NaN or Inf; try a smaller learning_rate); kept the best iterate before it")
                break
            steps_taken = step + 1
            # Record and keep the best iterate (the one just scored, before the step moves it).
            with torch.no_grad():
                violation = sum((_gap(v) for v in violations), torch.zeros_like(loss))
                key = torch.stack([violation, objective_value.detach()], dim=1)
                better = (key[:, 0] < best_key[:, 0]) | ((key[:, 0] == best_key[:, 0]) & (key[:, 1] < best_key[:, 1]))
                better &= ~done
                best = torch.where(better.reshape(-1, *[1] * (z.ndim - 1)), z.detach(), best)
                best_key = torch.where(better[:, None], key, best_key)
                best_history.append(best_key[:, 1].clone())
                for name, value in readings.items():
                    history.setdefault(name, []).append(float(value.detach().float().mean()))
                history.setdefault("loss", []).append(float(loss.detach().mean()))
                history.setdefault("total", []).append(float(total.detach().mean()))
            if tolerance > 0 and len(best_history) > PATIENCE:
                earlier, now = best_history[-PATIENCE - 1], best_history[-1]
                settled = (earlier - now) <= tolerance * earlier.abs().clamp_min(1e-8)
                done |= settled & (best_key[:, 0] == 0)
                if bool(done.all()):
                    message = f"converged after {step + 1} steps (every item improved by less than {tolerance:g} " \
                              f"over {PATIENCE} steps, its constraints holding)"
                    if progress is not None:
                        progress(step + 1, steps, best)
                    break
            # Items that have stopped keep moving with the others (one batched step) but no longer update their best.
            delta.grad, = torch.autograd.grad(total.sum(), delta)
            step_rule.step()
            if (step + 1) % MULTIPLIER_EVERY == 0:
                with torch.no_grad():
                    for index, violation in enumerate(violations):
                        violation = violation.detach()
                        multipliers[index] = (multipliers[index] + penalties[index] * violation).clamp_min(0)
                        if last_violation[index] is not None:
                            # Too little progress towards feasibility: a stiffer penalty.
                            stalled = _gap(violation) > 0.25 * _gap(last_violation[index])
                            penalties[index] = torch.where(stalled & (violation > 0),
                                                           penalties[index] * PENALTY_GROWTH, penalties[index])
                        last_violation[index] = violation
            if progress is not None:
                with torch.no_grad():
                    progress(step + 1, steps, moved(delta.detach()))
        with torch.no_grad():
            best_latent = generate(best).detach()
            readings = evaluate(objective, best_latent, start_latent, start_image, decode)[0]
        return OptimisationResult(best.detach().to(start.dtype), best_latent.to(start.dtype), history, steps_taken,
                                  message, best_key[:, 0] == 0,
                                  {name: value.detach() for name, value in readings.items()})


def checkpointed(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``function`` recomputed in the backward pass instead of keeping its activations: memory for time."""
    return lambda *args: checkpoint(function, *args, use_reentrant=False)


def few_step_sampler(denoiser: Denoiser, sigmas: torch.Tensor, noise_to_x: Transform,
                     finish: Transform = lambda x: x) -> Transform:
    """G(noise): Euler steps of the probability-flow ODE down ``sigmas`` (a few, as ReNO does with one-step models),
    differentiable in the noise. ``noise_to_x`` puts unit noise at the first level (``noise * sigmas[0]`` for
    variance-exploding models; ComfyUI's ``noise_scaling`` in general), ``finish`` maps the last x to the latent."""
    if len(sigmas) < 2:
        raise ValueError(f"sigmas has {len(sigmas)} levels; expected at least 2 (one step)")

    def generate(noise: torch.Tensor) -> torch.Tensor:
        x = noise_to_x(noise)
        for i in range(len(sigmas) - 1):
            sigma = sigmas[i].to(x.device)
            denoised = denoiser(x, sigma.expand(x.shape[0]))
            x = x + (x - denoised) / sigma * (sigmas[i + 1].to(x.device) - sigma)
        return finish(x)

    return generate


def scaled_decoder(decode: Transform, scale: float) -> Transform:
    """``decode`` of the latent resized by ``scale`` (< 1: a smaller picture for the scorers, about scale² the cost;
    CLIP looks at 224 pixels whatever it is given)."""
    if not 0 < scale <= 1:
        raise ValueError(f"decode_scale is {scale}; expected a factor in (0, 1]")
    if scale == 1:
        return decode

    def decode_smaller(latent: torch.Tensor) -> torch.Tensor:
        size = [max(1, round(side * scale)) for side in latent.shape[-2:]]
        # Video latents [B, C, T, H, W]: each frame on its own.
        frames = latent.movedim(2, 1).flatten(0, 1) if latent.ndim == 5 else latent
        smaller = torch.nn.functional.interpolate(frames, size=size, mode="bilinear", antialias=True,
                                                  align_corners=False)
        if latent.ndim == 5:
            smaller = smaller.unflatten(0, (latent.shape[0], latent.shape[2])).movedim(1, 2)
        return decode(smaller)

    return decode_smaller
