"""Objectives: differentiable scores of a latent and of the picture it decodes to, composable as weighted sums and as
constraints.

An ``Objective`` is a set of weighted ``Term``s (minimised together) and of ``Constraint``s (each must hold). A term
reads one number per batch item from a ``Candidate`` — the latent being optimised, the picture it decodes to, and the
latent the optimisation started from — and turns that reading into a loss: CLIP similarity (higher is better, loss
1 − similarity), a distance (lower is better, loss = distance), an amount along a direction (loss: the squared gap to
a target amount). The same objective drives LatentOptimize and guidance during sampling.

Constants a term holds (text embeddings, reference pictures) must be ordinary tensors, not inference tensors: they
take part in backward passes (comfyui-contract.md §3.5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .checks import require_finite
from .directions import fitted_to_latent
from .masks import mask_for_latent

AT_LEAST, AT_MOST = "at least", "at most"


class Candidate(NamedTuple):
    latent: torch.Tensor  # [B, C, *spatial], raw VAE space
    image: torch.Tensor | None  # [B, 3, H, W] RGB in 0..1 (unclamped), when a term needs it
    start: torch.Tensor  # [B or 1, C, *spatial]: where the optimisation began
    start_image: torch.Tensor | None  # its picture, decoded once, when a term needs pictures


Reading = Callable[[Candidate], torch.Tensor]


@dataclass(frozen=True)
class Term:
    """One score: ``reading(candidate)`` gives a number per item; ``goal`` says which way is better (``AT_LEAST``:
    higher, ``AT_MOST``: lower), which is also how a threshold on it reads ("similarity at least 0.3")."""
    name: str
    reading: Reading
    goal: str
    needs_image: bool
    weight: float = 1.0
    target: float | None = None  # a reading to reach exactly (loss: the squared gap), instead of "more"/"less"

    def loss(self, reading: torch.Tensor) -> torch.Tensor:
        if self.target is not None:
            return (reading - self.target) ** 2
        return 1 - reading if self.goal == AT_LEAST else reading


@dataclass(frozen=True)
class Constraint:
    """``terms``' reading must reach ``threshold``: one term's own reading ("CLIP similarity at least 0.3",
    "pixel distance at most 0.02"), or several terms' weighted loss sum at most ``threshold``."""
    terms: tuple[Term, ...]
    threshold: float

    @property
    def single(self) -> bool:
        """One term without a target: the constraint is on its own reading."""
        return len(self.terms) == 1 and self.terms[0].target is None

    @property
    def goal(self) -> str:
        return self.terms[0].goal if self.single else AT_MOST

    @property
    def name(self) -> str:
        what = self.terms[0].name if len(self.terms) == 1 else " + ".join(term.name for term in self.terms)
        return f"{what} {self.goal} {self.threshold:g}"

    def reading(self, readings: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.single:
            return readings[self.terms[0].name]
        return sum(term.weight * term.loss(readings[term.name]) for term in self.terms)

    def violation(self, readings: dict[str, torch.Tensor]) -> torch.Tensor:
        """How far each item is from satisfying the constraint: ≤ 0 where it holds."""
        value = self.reading(readings)
        return self.threshold - value if self.goal == AT_LEAST else value - self.threshold


@dataclass(frozen=True)
class Objective:
    terms: tuple[Term, ...] = ()
    constraints: tuple[Constraint, ...] = ()

    @property
    def needs_image(self) -> bool:
        return any(term.needs_image for term in self.every_term())

    def every_term(self) -> list[Term]:
        """The terms and the constraints' terms, each name once."""
        seen = {}
        for term in (*self.terms, *(term for constraint in self.constraints for term in constraint.terms)):
            seen.setdefault(term.name, term)
        return list(seen.values())

    def describe(self) -> str:
        parts = [f"{term.weight:g} × {term.name}" for term in self.terms]
        parts += [f"subject to {constraint.name}" for constraint in self.constraints]
        return "; ".join(parts) or "nothing"


def _single(term: Term) -> Objective:
    return Objective(terms=(term,))


def combine(objectives: list[tuple[Objective, float]]) -> Objective:
    """The weighted sum of objectives: their terms with weights multiplied, and all their constraints. Terms with one
    name (the same objective wired twice) add their weights."""
    weights: dict[str, float] = {}
    terms: dict[str, Term] = {}
    constraints: list[Constraint] = []
    for objective, weight in objectives:
        for term in objective.terms:
            weights[term.name] = weights.get(term.name, 0.0) + term.weight * weight
            terms.setdefault(term.name, term)
        constraints.extend(c for c in objective.constraints if c not in constraints)
    return Objective(tuple(replace(term, weight=weights[name]) for name, term in terms.items()), tuple(constraints))


def constrain(objective: Objective, threshold: float) -> Objective:
    """What ``objective`` scores must reach ``threshold`` (see ``Constraint``), as a constraint instead of a loss."""
    if not objective.terms:
        raise ValueError("objective has no terms to constrain (it holds only constraints); expected a score such as "
                         "CLIP text or reference")
    return Objective(constraints=(*objective.constraints, Constraint(objective.terms, threshold)))


def evaluate(objective: Objective, latent: torch.Tensor, start: torch.Tensor, start_image: torch.Tensor | None,
             decode: Callable[[torch.Tensor], torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every term's reading [B] (by name) and the weighted loss [B] of the objective's terms at ``latent``; the
    picture is decoded once, only when a term needs it (``start_image``: the start's picture, or None)."""
    image = None
    if objective.needs_image:
        if decode is None:
            raise ValueError(f"the objective ({objective.describe()}) scores pictures but no decoder was given; "
                             "expected a VAE")
        image = decode(latent)
    return score(objective, Candidate(latent, image, start, start_image))


def score(objective: Objective, candidate: Candidate) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every term's reading [B] (by name) and the weighted loss [B] of the objective's terms at ``candidate``."""
    batch = candidate.latent.shape[0]
    readings = {term.name: term.reading(candidate).reshape(batch) for term in objective.every_term()}
    loss = candidate.latent.new_zeros(batch, dtype=torch.float32)
    for term in objective.terms:
        loss = loss + term.weight * term.loss(readings[term.name]).float()
    return readings, loss


def _unit(vector: torch.Tensor, name: str) -> torch.Tensor:
    require_finite(vector, name)
    vector = vector.float().reshape(-1, vector.shape[-1]).mean(dim=0)
    if vector.norm() < 1e-8:
        raise ValueError(f"{name} is a zero vector; expected an embedding")
    return vector / vector.norm()


VIEW_SEED = 0
VIEW_SHIFT = 0.1  # the largest shift of a view, as a share of the picture's side
VIEW_NOISE = 0.03  # the pixel noise added to a view (RGB in 0..1)


def views(image: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` fixed views of each picture [B, 3, H, W] -> [count, B, 3, H, W]: the picture itself, then copies
    shifted by up to a tenth of their size (edges repeated), every other one mirrored, with faint pixel noise. The
    same views at every call, so an optimisation sees one smooth objective."""
    generator = torch.Generator().manual_seed(VIEW_SEED)
    height, width = image.shape[-2:]
    pad = max(1, round(VIEW_SHIFT * max(height, width)))
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
    out = [image]
    for index in range(1, count):
        dy, dx = (torch.randint(-pad, pad + 1, (2,), generator=generator) + pad).tolist()
        view = padded[..., dy:dy + height, dx:dx + width]
        if index % 2:
            view = view.flip(-1)
        # One noise for every item: an item's views do not depend on the batch it is in.
        noise = torch.randn((1, *view.shape[1:]), generator=generator).to(view.device, view.dtype)
        out.append(view + VIEW_NOISE * noise)
    return torch.stack(out)


def view_embedding(score: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, count: int) -> torch.Tensor:
    """The mean of the unit embeddings of ``count`` views of each picture, scored as one batch, at unit length
    [B, E]. CLIP's gradient for a single view is full of pixel-level detail that fools it; averaged over shifted,
    mirrored, noisy views it follows what the picture shows (benchmarks/fidelity.py, opt_*)."""
    stacked = views(image, count)
    embeddings = F.normalize(score(stacked.flatten(0, 1)).float(), dim=-1)
    return F.normalize(embeddings.unflatten(0, stacked.shape[:2]).mean(dim=0), dim=-1)


def _require_views(count: int) -> None:
    if count < 1:
        raise ValueError(f"views is {count}; expected at least 1")


def clip_text(score: Callable[[torch.Tensor], torch.Tensor], positive: torch.Tensor, negative: torch.Tensor | None,
              name: str, view_count: int = 1) -> Objective:
    """CLIP similarity of the picture to the text: cos(image, positive), minus cos(image, negative) when a negative
    embedding is given. ``score`` maps RGB in 0..1 to unit image embeddings; ``positive``/``negative`` are text
    embeddings [E] or [N, E] (averaged); ``view_count`` > 1 scores the mean embedding of that many views (``views``)."""
    positive = _unit(positive, "positive")
    negative = None if negative is None else _unit(negative, "negative")
    _require_views(view_count)

    def reading(candidate: Candidate) -> torch.Tensor:
        embedding = view_embedding(score, candidate.image, view_count)
        similarity = embedding @ positive.to(embedding.device)
        if negative is not None:
            similarity = similarity - embedding @ negative.to(embedding.device)
        return similarity

    return _single(Term(name, reading, AT_LEAST, needs_image=True))


def clip_image(score: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor, name: str,
               view_count: int = 1) -> Objective:
    """CLIP similarity of the picture to reference pictures' mean embedding (``reference``: RGB [N, 3, H, W]);
    ``view_count`` as in ``clip_text``."""
    _require_views(view_count)
    with torch.no_grad():
        target = _unit(score(reference).float(), "image")

    def reading(candidate: Candidate) -> torch.Tensor:
        embedding = view_embedding(score, candidate.image, view_count)
        return embedding @ target.to(embedding.device)

    return _single(Term(name, reading, AT_LEAST, needs_image=True))


def along_direction(direction: torch.Tensor, amount: float, name: str) -> Objective:
    """Move ``amount`` times ``direction`` ([C, *spatial], latent space) away from the start: the reading is how far
    the latent has moved along it, in units of the direction (1: the full direction); only that component is scored,
    the rest is left to the other terms."""
    require_finite(direction, "direction")
    squared_norm = direction.float().pow(2).sum()
    if squared_norm < 1e-12:
        raise ValueError("direction is a zero vector; expected a latent direction that moves something")

    def reading(candidate: Candidate) -> torch.Tensor:
        fitted = fitted_to_latent(direction, candidate.latent, "the latent the objective scores")
        moved = (candidate.latent - candidate.start).float().flatten(1)
        return moved @ fitted.flatten() / fitted.pow(2).sum()

    return _single(Term(name, reading, AT_LEAST, needs_image=False, target=amount))


def reference_distance(name: str, space: str, reference: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None) -> Objective:
    """Stay close to a reference: in ``space`` "latent" the mean squared difference per latent element relative to
    the reference's mean square; in "image" the mean absolute difference of the pixels (0..1), which charges a few
    pixels that change a lot less than many that change a little, so an edit stays where it is needed. ``reference``
    is a latent or RGB picture [1 or B, ...]; None keeps the start (its picture in image space). ``mask`` [B or 1,
    H, W] marks with 1 where change is free: only the rest counts."""
    if space not in ("latent", "image"):
        raise ValueError(f"space is {space!r}; expected 'latent' or 'image'")

    def reading(candidate: Candidate) -> torch.Tensor:
        value = candidate.latent if space == "latent" else candidate.image
        goal = reference if reference is not None else (candidate.start if space == "latent" else candidate.start_image)
        goal = goal.to(value.device, value.dtype)
        if goal.shape[1:] != value.shape[1:]:
            kind = "latent" if space == "latent" else "picture"
            raise ValueError(f"reference {kind} has shape {tuple(goal.shape[1:])} but the optimised {kind} has "
                             f"{tuple(value.shape[1:])}; expected the same size")
        if space == "latent":
            scale = goal.float().pow(2).flatten(1).mean(dim=1).clamp_min(1e-8)  # each item's own size
            error = (value - goal).float().pow(2) / scale.reshape(-1, *[1] * (value.ndim - 1))
        else:
            error = (value - goal).float().abs()
        if mask is None:
            return error.flatten(1).mean(dim=1)
        kept = (1 - mask_for_latent(mask.to(value.device), value, "mask")).expand(value.shape[0], 1, *value.shape[2:])
        return (error * kept).flatten(1).sum(dim=1) / (kept.flatten(1).sum(dim=1) * value.shape[1]).clamp_min(1e-8)

    return _single(Term(name, reading, AT_MOST, needs_image=space == "image"))


STATISTICS = ("colour", "brightness", "saturation")


def colour_statistic(statistic: str, target: tuple[float, float, float] | float, name: str,
                     mask: torch.Tensor | None = None) -> Objective:
    """Model-free picture statistics in a region (``mask`` [B or 1, H, W], 1 inside; None: the whole picture):
    "colour" is the distance of the region's mean RGB from ``target`` (r, g, b in 0..1), "brightness" and
    "saturation" the gap between the region's mean luma / mean saturation (max − min of RGB) and ``target``."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic is {statistic!r}; expected one of {', '.join(STATISTICS)}")
    goal = torch.tensor(target, dtype=torch.float32).reshape(-1)
    if statistic == "colour" and goal.numel() != 3 or statistic != "colour" and goal.numel() != 1:
        raise ValueError(f"target for {statistic} has {goal.numel()} numbers; expected "
                         f"{'three (red, green, blue)' if statistic == 'colour' else 'one'}")
    luma = torch.tensor([0.299, 0.587, 0.114])

    def reading(candidate: Candidate) -> torch.Tensor:
        image = candidate.image.float()
        if statistic == "colour":
            values = image
        elif statistic == "brightness":
            values = torch.einsum("bchw,c->bhw", image, luma.to(image.device))[:, None]
        else:
            values = (image.amax(dim=1) - image.amin(dim=1))[:, None]
        if mask is None:
            weight = torch.ones_like(values[:, :1])
        else:
            weight = mask_for_latent(mask.to(image.device), image, "mask").expand(image.shape[0], 1, *image.shape[2:])
        mean = (values * weight).flatten(2).sum(dim=2) / weight.flatten(2).sum(dim=2).clamp_min(1e-8)
        return (mean - goal.to(image.device)).norm(dim=1)

    return _single(Term(name, reading, AT_MOST, needs_image=True))
