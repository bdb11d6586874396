"""Attribute correlation: which parts of a latent batch go with a score given per item (typed by hand, or an
objective read on the decoded pictures), and the linear direction that best predicts it — a supervised direction
found from examples.

The direction is ridge regression of the score on the flattened latents, solved in the dual: a batch holds far fewer
items (B) than a latent has values (D), so the B×B Gram matrix is factorised instead of the D×D covariance, and its
eigendecomposition gives every leave-one-out residual in closed form.
"""

from __future__ import annotations

import math
import re
from typing import Callable, NamedTuple

import torch

from .checks import require_batch, require_finite
from .directions import principal_directions
from .objectives import Candidate, Objective, score

MIN_ITEMS = 3
# The ridge λ in units of the batch's mean squared (centred) item norm, i.e. its total variance per item. Large
# against the Gram matrix's eigenvalues (B × the variance along each principal direction) when the batch is small,
# so few examples give the covariance direction Σ (score − mean) · latent (the mean difference for a 0/1 score);
# with many examples the data outweigh it. Measured on the reference world (benchmarks/_analysis_correlation_bench.py
# --sweep: 192 sampled pictures of every colour scored by the CLIP text objective "red", one view): λ factor
# 0.1 / 1 / 3 / 10 / 30 gave cosine 0.28 / 0.65 / 0.82 / 0.91 / 0.94 with the red − not-red mean difference (the
# oracle's labels) and leave-one-out R² 0.42 / 0.42 / 0.41 / 0.35 / 0.24; at strength 3 they turned 0.00 / 0.06 /
# 0.22 / 0.28 / 0.28 of 54 other not-red pictures red, keeping shape, size, position and background in 0.94–1.0.
# On another 192 (other scenes and seeds), 10 and 30 gave cosine 0.94 / 0.93 and turned 0.38 / 0.38 of 50 red. 30:
# the mean-difference direction with a margin, moving the colour as far as any; what it gives up is predicting the
# score's other variation (what else CLIP's score follows), which an attribute direction should not take along.
RIDGE = 30.0
DECODE_CHUNK = 16  # pictures decoded and scored at a time: bounds memory, and paces the progress bar


def parse_scores(text: str, name: str = "scores") -> list[float]:
    """Numbers separated by commas, semicolons, spaces or new lines."""
    values = []
    for word in (part for part in re.split(r"[\s,;]+", text.strip()) if part):
        try:
            values.append(float(word))
        except ValueError:
            raise ValueError(f"{name} holds '{word}', which is not a number; expected one number per latent, "
                             "separated by commas, spaces or new lines") from None
    return values


def require_scores(scores: torch.Tensor, count: int, name: str = "scores") -> torch.Tensor:
    """``scores`` as float64 [count]: one finite score per item that is not the same for all."""
    scores = scores.reshape(-1)
    if scores.numel() != count:
        raise ValueError(f"{name} has {scores.numel()} score{'s' if scores.numel() != 1 else ''} but latent has a "
                         f"batch of {count}; expected one score per latent")
    require_finite(scores, name)
    scores = scores.double()
    if (scores == scores[0]).all():
        raise ValueError(f"{name}: every score is the same ({float(scores[0]):g}); expected scores that vary over "
                         "the batch (more and less of the attribute)")
    return scores


def require_items(latents: torch.Tensor, name: str = "latent") -> None:
    require_batch(latents, name, min_ndim=3)
    require_finite(latents, name)
    if latents.shape[0] < MIN_ITEMS:
        raise ValueError(f"{name} has a batch of {latents.shape[0]}; expected at least {MIN_ITEMS} latents to "
                         "correlate with their scores")


def pearson(values: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each column of ``values`` [B, K] with ``scores`` [B]: [K]; a column that does not
    vary correlates with nothing (0)."""
    x = values.double() - values.double().mean(0)
    y = scores.double() - scores.double().mean()
    spread = x.norm(dim=0) * y.norm()
    return torch.where(spread > 0, (x.T @ y) / spread.clamp_min(1e-300), torch.zeros_like(spread))


def channel_correlations(latents: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The correlation of each channel's mean (over space and time) with the score: [C]."""
    return pearson(latents.double().flatten(2).mean(2), scores)


class Components(NamedTuple):
    correlations: torch.Tensor  # [count]: of each principal coordinate with the score
    explained: torch.Tensor  # [count]: the share of the batch's variance each component explains


def component_correlations(latents: torch.Tensor, scores: torch.Tensor, count: int, name: str = "latent") -> Components:
    """The correlation with the score of each item's coordinate along the batch's first ``count`` principal
    directions (at most B − 1)."""
    found = principal_directions(latents, min(count, latents.shape[0] - 1), name)
    rows = latents.double().flatten(1)
    coordinates = (rows - rows.mean(0)) @ found.directions.double().flatten(1).T
    return Components(pearson(coordinates, scores), found.explained)


class Fit(NamedTuple):
    direction: torch.Tensor  # [*item shape]: the change along the fit that goes with one std more score in the batch
    r2: float  # share of the scores' variance the fit explains on the batch it was fitted on
    loo_r2: float  # the same for each item predicted by the fit on the others (leave-one-out)
    correlation: float  # Pearson correlation of the items' coordinate along the direction with the scores
    score_per_strength: float  # how much the fit's predicted score rises per unit of strength along the direction
    ridge: float  # λ as used, in the Gram matrix's units
    ridge_factor: float  # λ over the batch's variance per item


def ridge_fit(latents: torch.Tensor, scores: torch.Tensor, ridge: float = RIDGE, name: str = "latent") -> Fit:
    """Ridge regression (with an unpenalised intercept) of ``scores`` [B] on the flattened latents [B, ...], in the
    dual: α = (K + λI)⁻¹ (y − ȳ), w = Xᵀα with X the centred latents and K = XXᵀ; λ = ``ridge`` × trace(K) / B.

    The direction is w's unit vector u scaled by how far the batch's items lie along it per standard deviation of
    score (the slope of x·u on the score, times the score's std): for a 0/1 score, strength 1/std(score) is the
    distance between the two groups' means along u. Not w itself, whose length the ridge shrinks, nor the batch's
    whole spread along u, which holds variation the score does not follow."""
    require_items(latents, name)
    if ridge <= 0:
        raise ValueError(f"ridge is {ridge}; expected a positive regularisation")
    rows = latents.double().flatten(1)
    x = rows - rows.mean(0)
    y = scores.double().reshape(-1) - scores.double().mean()
    gram = x @ x.T
    variance = float(gram.trace()) / x.shape[0]
    if variance == 0:
        raise ValueError(f"every item of {name} is the same; expected latents that differ")
    lam = ridge * variance
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    eigenvalues = eigenvalues.clamp_min(0)  # round-off below zero
    inverse = (eigenvectors / (eigenvalues + lam)) @ eigenvectors.T  # (K + λI)⁻¹
    alpha = inverse @ y
    residual = lam * alpha  # y − Kα
    # Leave-one-out residuals of a linear smoother: r_i / (1 − H_ii), with H = 11ᵀ/B + K(K + λI)⁻¹ and
    # K(K + λI)⁻¹ = I − λ(K + λI)⁻¹.
    leverage = 1.0 / x.shape[0] + 1.0 - lam * inverse.diagonal()
    left_out = residual / (1.0 - leverage)
    total = float(y.pow(2).sum())
    weights = x.T @ alpha
    norm = float(weights.norm())
    if norm == 0:
        raise ValueError(f"the scores do not vary with {name} at all; expected scores that depend on the latents")
    unit = weights / norm
    along = x @ unit
    step = float(along @ y) / math.sqrt(total * (x.shape[0] - 1))  # cov(x·u, y) / std(y)
    return Fit((unit * step).float().reshape(latents.shape[1:]),
               1.0 - float(residual.pow(2).sum()) / total, 1.0 - float(left_out.pow(2).sum()) / total,
               float(pearson(along[:, None], y)[0]), norm * step, lam, ridge)


Decode = Callable[[torch.Tensor], torch.Tensor]


def objective_scores(objective: Objective, latents: torch.Tensor, decode: Decode,
                     progress: Callable[[int, int, torch.Tensor], None] | None = None,
                     chunk: int = DECODE_CHUNK) -> torch.Tensor:
    """The score of each latent by ``objective``: minus its weighted loss (an objective's loss is lower when it is
    met, so higher is more of what it asks), read on the decoded picture ``chunk`` latents at a time. ``decode``
    gives RGB in 0..1, [b, 3, H, W] or for video [b, frames, 3, H, W] (then each frame is scored and the frames'
    scores averaged). The picture is its own start: "keep reference" terms without a reference read 0."""
    if not objective.terms:
        raise ValueError(f"objective ({objective.describe()}) holds only constraints and no score; expected an "
                         "objective with a term to read (CLIP text, colour, ...)")
    steps = math.ceil(latents.shape[0] / chunk)
    out = []
    for step in range(steps):
        latent = latents[step * chunk:(step + 1) * chunk]
        image = decode(latent) if objective.needs_image else None
        frames = 1
        if image is not None and image.ndim == 5:
            frames = image.shape[1]
            image = image.flatten(0, 1)
            latent = latent.repeat_interleave(frames, 0)
        _, loss = score(objective, Candidate(latent, image, latent, image))
        out.append(-loss.double().reshape(-1, frames).mean(1).cpu())
        if progress is not None:
            progress(step + 1, steps, latent)
    return torch.cat(out)


def correlation_report(fit: Fit, channels: torch.Tensor, components: Components, scores: torch.Tensor,
                       source: str) -> str:
    """The fit and the correlations in words, for the node's text output."""
    score_std = float(scores.double().std())
    lines = [
        f"scores: {source}; {scores.numel()} items, mean {float(scores.double().mean()):.4g}, std {score_std:.4g}",
        f"direction: ridge regression of the score on the latents (λ = {fit.ridge_factor:g} × the batch's variance per item); "
        f"fit R² {fit.r2:.3f} on the batch, {fit.loo_r2:.3f} leave-one-out (the ridge shrinks predictions towards "
        f"the mean score); the items' place along the direction correlates {fit.correlation:+.3f} with the score",
        f"strength 1 is the change along the direction that goes with one std more score in the batch (norm "
        f"{float(fit.direction.double().norm()):.4g}); the fit predicts the score to rise by "
        f"{fit.score_per_strength:.4g} per unit of strength",
        "correlation of each channel's mean with the score: "
        + ", ".join(f"{c}: {float(r):+.3f}" for c, r in enumerate(channels)),
        "correlation of each PCA component's coordinate with the score (share of variance): "
        + ", ".join(f"{k + 1} ({100 * float(share):.1f}%): {float(r):+.3f}"
                    for k, (r, share) in enumerate(zip(components.correlations, components.explained))),
    ]
    return "\n".join(lines)
