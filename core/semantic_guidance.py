"""Semantic guidance (SEGA, Brack et al. 2023): steer sampling towards or away from concepts given as extra
prompts, touching only the parts of the latent where a concept's prediction differs most from the unconditional one.

In noise space, with ε_u the unconditional prediction and ε_i the prediction for concept i:
ψ_i = ε_i − ε_u; a mask keeps the elements whose |ψ_i| reaches the ``threshold``-quantile of |ψ_i| over each item's
channel; γ_i = sign_i · scale_i · mask · ψ_i. A momentum ν_i ← β ν_i + (1 − β) γ_i accumulates from the first step,
and inside the concept's window the guided noise is ε_cfg + Σ (γ_i + s_m ν_i), with ν_i the momentum of the steps
before. Samplers here (k-diffusion's, ComfyUI's) work with denoised predictions d at noise level σ, where
ε = (x − d) / σ for every model family (EPS, V, flow): so ψ_i = (d_u − d_i) / σ and the guided prediction is
d_cfg − σ · Σ (γ_i + s_m ν_i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .sampling import Denoiser


@dataclass(frozen=True)
class Concept:
    """How one concept steers: ``sign`` +1 adds it, −1 removes it; it acts while the noise level lies in
    [end_sigma, start_sigma] (its momentum accumulates from the first step on)."""
    scale: float
    threshold: float = 0.9
    sign: int = 1
    momentum_scale: float = 0.0
    momentum_beta: float = 0.6
    start_sigma: float = math.inf
    end_sigma: float = 0.0

    def __post_init__(self):
        if self.scale < 0:
            raise ValueError(f"scale is {self.scale}; expected 0 or more (use sign -1 to remove a concept)")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold is {self.threshold}; expected a quantile in [0, 1)")
        if self.sign not in (1, -1):
            raise ValueError(f"sign is {self.sign}; expected 1 (add the concept) or -1 (remove it)")
        if self.momentum_scale < 0:
            raise ValueError(f"momentum_scale is {self.momentum_scale}; expected 0 or more")
        if not 0.0 <= self.momentum_beta < 1.0:
            raise ValueError(f"momentum_beta is {self.momentum_beta}; expected a value in [0, 1)")
        if self.end_sigma > self.start_sigma:
            raise ValueError(f"end_sigma ({self.end_sigma}) is above start_sigma ({self.start_sigma}); expected "
                             "end_sigma ≤ start_sigma")

    def acts_at(self, sigma: float) -> bool:
        return self.end_sigma <= sigma <= self.start_sigma

    def needs_prediction(self, sigma: float) -> bool:
        """Whether this step needs the concept's prediction: to act, or to feed a momentum it will use later."""
        return self.acts_at(sigma) or (self.momentum_scale > 0 and sigma > self.start_sigma)


def quantile_mask(values: torch.Tensor, threshold: float) -> torch.Tensor:
    """Where |values| reaches the ``threshold``-quantile (the lower one: an element of the data) of |values| over
    each item's channel, [B, C, ...] of any number of trailing dimensions; a bool tensor of ``values``' shape."""
    magnitude = values.abs().flatten(2).float()
    count = magnitude.shape[-1]
    rank = math.floor(threshold * (count - 1)) + 1  # kthvalue, unlike torch.quantile, has no size limit
    cutoff = magnitude.kthvalue(rank, dim=-1, keepdim=True).values
    return (magnitude >= cutoff).reshape(values.shape)


def concept_guidance(difference: torch.Tensor, concept: Concept) -> torch.Tensor:
    """γ = sign · scale · mask · ψ for one concept, from ψ = ε_concept − ε_uncond."""
    return torch.where(quantile_mask(difference, concept.threshold), difference * (concept.sign * concept.scale),
                       torch.zeros_like(difference))


def momentum_update(momentum: torch.Tensor | None, guidance: torch.Tensor, beta: float) -> torch.Tensor:
    """ν ← β ν + (1 − β) γ (no momentum yet counts as zero)."""
    if momentum is None:
        return guidance * (1 - beta)
    return momentum * beta + guidance * (1 - beta)


def semantic_guidance_step(denoised: torch.Tensor, uncond_denoised: torch.Tensor,
                           concept_denoised: Sequence[torch.Tensor], sigma: torch.Tensor,
                           concepts: Sequence[Concept], momenta: Sequence[torch.Tensor | None]
                           ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
    """One step: the guided denoised prediction and the concepts' next momenta. ``denoised`` is the CFG result,
    ``uncond_denoised`` and ``concept_denoised`` the predictions it came from, ``sigma`` the noise level of each item
    ([B]); ``momenta`` holds each concept's momentum (None before the first step). At noise level 0 there is no noise
    to guide: the prediction and the momenta come back as they are."""
    if not len(concept_denoised) == len(concepts) == len(momenta):
        raise ValueError(f"{len(concepts)} concepts, {len(concept_denoised)} concept predictions and "
                         f"{len(momenta)} momenta; expected one of each per concept")
    level = float(sigma.max())
    if level <= 0:
        return denoised, tuple(momenta)
    scale = sigma.to(denoised).reshape(-1, *[1] * (denoised.ndim - 1))
    total = torch.zeros_like(denoised)
    next_momenta = []
    for concept, prediction, momentum in zip(concepts, concept_denoised, momenta):
        guidance = concept_guidance((uncond_denoised - prediction) / scale, concept)
        if concept.acts_at(level):
            total = total + guidance
            if momentum is not None and concept.momentum_scale > 0:
                total = total + momentum * concept.momentum_scale
        next_momenta.append(momentum_update(momentum, guidance, concept.momentum_beta))
    return denoised - scale * total, tuple(next_momenta)


def semantic_guidance_denoiser(batched: Denoiser, cfg_scale: float, concepts: Sequence[Concept]) -> Denoiser:
    """A CFG denoiser with semantic guidance, for one sampling run (it keeps the concepts' momenta between calls).

    ``batched(x, sigma)`` evaluates the model once over a batch laid out as the unconditional prompt, the prompt, then
    each concept, ``len(x)`` items each: the denoiser hands it ``x`` repeated that way, so every prediction of a step
    comes from one model call."""
    momenta: tuple[torch.Tensor | None, ...] = (None,) * len(concepts)
    parts = 2 + len(concepts)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal momenta
        predictions = batched(x.repeat(parts, *[1] * (x.ndim - 1)), sigma.repeat(parts)).chunk(parts)
        uncond, cond = predictions[0], predictions[1]
        guided, momenta = semantic_guidance_step(uncond + cfg_scale * (cond - uncond), uncond, predictions[2:],
                                                 sigma, concepts, momenta)
        return guided

    return denoise
