"""Semantic directions: vectors that change one attribute when added to a latent, a conditioning or a hidden state.

A ``Direction`` is one value for all of them: a tensor per space (``conditioning``: a token sequence [tokens, width];
``pooled``: [width]; ``latent``: [channels, *spatial]; ``hidden``: [width], or [blocks, width] with one vector per block) plus where it belongs (model family,
encoder, layer) and how it was made. Directions come from prompts (the mean text encoding of the positive prompts minus
that of the negative ones), from batches (mean difference, principal components) or from another encoder's space
(orthogonal Procrustes on anchor prompts), and are applied with a strength: ``x + strength * direction``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .checks import require_batch, require_finite
from .masks import mask_for_latent
from .tokens import common_length, tile_tokens

SPACES = ("conditioning", "pooled", "latent", "hidden")
# Built-in templates: the concept inside the sentence shapes prompts are written in, so a direction captures the word in
# context rather than the encoding of a lone word. "{}" marks the concept. The concept sits early (token 1 to 5), where
# adjectives sit in prompts; templates that put it at one fixed place bend what the direction does to the words after
# it (measured on the reference world: keep rate 0.93 with such templates, 0.996 with these).
TEMPLATES = (
    "{}",
    "a {} object",
    "a small {} object",
    "a large {} object",
    "a bright {} shape",
    "a photo of a {} object",
    "a picture of something {}",
    "a {} thing on a white background",
    "a {} thing on a black background",
)
# Anchors for carrying a direction between encoders: short, varied, plain prompts any text encoder reads alike.
ANCHOR_PROMPTS = tuple(f"a {size} {colour} {thing}{place}" for size, colour, thing, place in (
    ("small", "red", "circle", ""), ("large", "blue", "square", " on the left"), ("small", "green", "triangle", " on the right"),
    ("large", "yellow", "circle", " in the middle"), ("small", "cyan", "square", ", black background"),
    ("large", "magenta", "triangle", ", white background"), ("small", "blue", "circle", " on the left"),
    ("large", "red", "square", " on the right"), ("small", "yellow", "triangle", ", black background"),
    ("large", "green", "circle", ", white background"), ("small", "magenta", "square", " in the middle"),
    ("large", "cyan", "triangle", " on the left"), ("small", "red", "triangle", ", white background"),
    ("large", "blue", "circle", ", black background"), ("small", "green", "square", " on the left"),
    ("large", "yellow", "square", " on the right"), ("small", "cyan", "circle", " in the middle"),
    ("large", "magenta", "circle", " on the right"), ("small", "blue", "triangle", " in the middle"),
    ("large", "red", "triangle", " on the left"), ("small", "yellow", "circle", " on the right"),
    ("large", "green", "triangle", ", black background"), ("small", "cyan", "triangle", ", white background"),
    ("large", "magenta", "square", ", black background")))
# Token widths of the text encoders ComfyUI loads, to say what a bare conditioning probably came from.
KNOWN_WIDTHS = {768: "clip_l (SD1.x)", 1024: "open_clip ViT-H (SD2.x)", 1280: "clip_g", 2048: "clip_l+clip_g (SDXL)",
                4096: "t5xxl or clip_l+clip_g+t5xxl (SD3, Flux)"}
FORMAT = "latent-space-control.direction"
FORMAT_VERSION = "1"


class DirectionFileError(ValueError):
    """A direction file that cannot be read, or is not a direction."""


@dataclass(frozen=True)
class Direction:
    vectors: dict[str, torch.Tensor]
    family: str = ""  # model family: sd1, sdxl, sd3, flux, reference, ...
    encoder: str = ""  # clip_l, clip_l+clip_g, t5xxl, open_clip, ...
    layer: str = ""  # hidden: the blocks a steering vector belongs to, 0-based, comma-separated ("2" or "1,2,3")
    content_tokens: int = 0  # conditioning: leading tokens the source prompts occupy (start to end token); 0: unknown
    provenance: dict[str, str] = field(default_factory=dict)  # how it was made: method, prompts, templates, ...

    def __post_init__(self):
        if not self.vectors:
            raise ValueError("a direction needs at least one vector; got none")
        for space, vector in self.vectors.items():
            if space not in SPACES:
                raise ValueError(f"direction space is '{space}'; expected one of {', '.join(SPACES)}")
            expected_ndim = {"conditioning": (2,), "pooled": (1,), "hidden": (1, 2)}.get(space)
            if expected_ndim is not None and vector.ndim not in expected_ndim:
                expected = {"conditioning": "[tokens, width]", "pooled": "[width]",
                            "hidden": "[width] or [blocks, width]"}[space]
                raise ValueError(f"a {space} direction has shape {tuple(vector.shape)}; expected {expected}")
            if space == "latent" and vector.ndim < 2:
                raise ValueError(f"a latent direction has shape {tuple(vector.shape)}; expected [channels, *spatial]")

    @property
    def spaces(self) -> tuple[str, ...]:
        return tuple(self.vectors)

    def describe(self, space: str) -> str:
        """e.g. "768-wide clip_l (sd1) conditioning direction"."""
        vector = self.vectors[space]
        width = f"{vector.shape[0]}-channel" if space == "latent" else f"{vector.shape[-1]}-wide"
        origin = " ".join(part for part in (self.encoder, f"({self.family})" if self.family else "") if part)
        return f"{width} {origin + ' ' if origin else ''}{space} direction"

    def with_vectors(self, vectors: dict[str, torch.Tensor], **provenance: str) -> "Direction":
        return replace(self, vectors=vectors, provenance={**self.provenance, **provenance})


def describe_width(width: int) -> str:
    known = KNOWN_WIDTHS.get(width)
    return f"{width}-wide" + (f" ({known})" if known else "")


def require_prompts(prompts: Sequence[str], name: str) -> list[str]:
    cleaned = [prompt.strip() for prompt in prompts if prompt.strip()]
    if not cleaned:
        raise ValueError(f"{name} is empty; expected at least one prompt (one per line)")
    return cleaned


def expand_templates(concepts: Sequence[str], templates: Sequence[str] | None, name: str = "templates") -> list[str]:
    """Every concept in every template (template-major); without templates, the concepts as they are."""
    if not templates:
        return list(concepts)
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"{name} has the template '{template}' with {template.count('{}')} '{{}}' marks; "
                             "expected exactly one {} per template (where the prompt goes)")
    return [template.replace("{}", concept) for template in templates for concept in concepts]


# ``prompts -> (token sequences [N, tokens, width], pooled [N, width] or None)``
PromptEncoder = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor | None]]


def text_direction(encode: PromptEncoder, positive: Sequence[str], negative: Sequence[str],
                   templates: Sequence[str] | None = None, templates_name: str = "templates") -> dict[str, torch.Tensor]:
    """The mean encoding of the positive prompts minus that of the negative ones, each prompt in every template, all
    encoded in one call: ``{"conditioning": [tokens, width], "pooled": [width]}`` (pooled when the encoder has one)."""
    positive_prompts = expand_templates(require_prompts(positive, "positive"), templates, templates_name)
    negative_prompts = expand_templates(require_prompts(negative, "negative"), templates, templates_name)
    tokens, pooled = encode(positive_prompts + negative_prompts)
    count = len(positive_prompts)
    vectors = {"conditioning": tokens[:count].float().mean(0) - tokens[count:].float().mean(0)}
    if pooled is not None:
        vectors["pooled"] = pooled[:count].float().mean(0) - pooled[count:].float().mean(0)
    if all(not vector.any() for vector in vectors.values()):
        raise ValueError("positive and negative encode exactly alike, so the direction is zero; expected prompts "
                         "that differ")
    return vectors


def mean_difference(a: torch.Tensor, b: torch.Tensor, name_a: str = "a", name_b: str = "b") -> torch.Tensor:
    """Mean over ``a``'s batch minus mean over ``b``'s: the offset from what ``b`` shows to what ``a`` shows."""
    for x, name in ((a, name_a), (b, name_b)):
        require_batch(x, name)
        require_finite(x, name)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{name_a} has items of shape {tuple(a.shape[1:])} but {name_b} has {tuple(b.shape[1:])}; "
                         "expected the same shape (same model, same size)")
    return a.float().mean(0) - b.float().mean(0)


class PrincipalDirections(NamedTuple):
    directions: torch.Tensor  # [count, *item shape], unit vectors, strongest first
    deviations: torch.Tensor  # [count]: the batch's standard deviation along each
    explained: torch.Tensor  # [count]: the share of the batch's variance each explains


def principal_directions(x: torch.Tensor, count: int, name: str = "x") -> PrincipalDirections:
    """The ``count`` principal directions of the batch. Signs are fixed so each direction's largest entry is positive
    (reproducible)."""
    require_batch(x, name)
    require_finite(x, name)
    if x.shape[0] < 2:
        raise ValueError(f"{name} has a batch of {x.shape[0]}; expected at least 2 items to find principal directions")
    if not 1 <= count <= x.shape[0] - 1:
        raise ValueError(f"count is {count}; a batch of {x.shape[0]} has at most {x.shape[0] - 1} principal directions")
    rows = x.reshape(x.shape[0], -1).double()
    centred = rows - rows.mean(0)
    _, singular, basis = torch.linalg.svd(centred, full_matrices=False)
    total = (singular ** 2).sum()
    if total == 0:
        raise ValueError(f"every item of {name} is the same; expected a batch that varies")
    basis = basis[:count]
    largest = basis.gather(1, basis.abs().argmax(1, keepdim=True))
    basis = basis * largest.sign()
    deviations = singular[:count] / math.sqrt(x.shape[0] - 1)
    explained = singular[:count] ** 2 / total
    return PrincipalDirections(basis.float().reshape(count, *x.shape[1:]), deviations.float(), explained.float())


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    return v.double().flatten().norm()


def normalised(v: torch.Tensor, name: str = "direction") -> torch.Tensor:
    """Scaled to unit norm (over all its entries)."""
    norm = _flat_norm(v)
    if norm == 0:
        raise ValueError(f"{name} has zero norm; expected a direction that points somewhere")
    return (v.double() / norm).to(v.dtype)


def orthogonalised(a: torch.Tensor, b: torch.Tensor, name_b: str = "b") -> torch.Tensor:
    """``a`` without its component along ``b`` ("older, but not more male": b is the unwanted direction)."""
    if a.shape != b.shape:
        raise ValueError(f"{name_b} has shape {tuple(b.shape)} but the direction it is removed from has "
                         f"{tuple(a.shape)}; expected the same shape")
    unit = normalised(b, name_b).double()
    projection = (a.double() * unit).sum()
    return (a.double() - projection * unit).to(a.dtype)


def _aligned_tokens(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two token-sequence directions tiled to one length, so they add token by token."""
    length = common_length(a.shape[0], b.shape[0])
    return tile_tokens(a, length, dim=0), tile_tokens(b, length, dim=0)


COMBINE_OPERATIONS = ("add", "subtract", "orthogonalise", "scale", "normalise")


def combine(a: Direction, b: Direction | None, operation: str, factor: float = 1.0) -> Direction:
    """``a + factor·b``, ``a − factor·b``, ``a`` without its component along ``b`` (then times factor), ``factor·a``,
    or ``a`` at norm ``factor``; space by space. Two directions must live in the same spaces with the same widths."""
    if operation not in COMBINE_OPERATIONS:
        raise ValueError(f"operation is '{operation}'; expected one of {', '.join(COMBINE_OPERATIONS)}")
    if operation in ("scale", "normalise"):
        vectors = {space: factor * (normalised(v, f"direction_a's {space} vector") if operation == "normalise" else v)
                   for space, v in a.vectors.items()}
        return a.with_vectors(vectors, method=f"{a.provenance.get('method', 'direction')}, {operation} {factor:g}")
    if b is None:
        raise ValueError(f"operation '{operation}' needs direction_b; connect a second direction")
    if set(a.spaces) != set(b.spaces):
        raise ValueError(f"direction_a is in {', '.join(a.spaces)} space but direction_b is in "
                         f"{', '.join(b.spaces)}; expected directions in the same spaces")
    vectors = {}
    for space in a.spaces:
        va, vb = a.vectors[space], b.vectors[space]
        if space == "conditioning":
            if va.shape[-1] != vb.shape[-1]:
                raise ValueError(f"direction_a is a {a.describe(space)} but direction_b is a {b.describe(space)}; "
                                 "expected directions of the same encoder")
            va, vb = _aligned_tokens(va, vb)
        elif va.shape != vb.shape:
            raise ValueError(f"direction_a is a {a.describe(space)} {tuple(va.shape)} but direction_b is a "
                             f"{b.describe(space)} {tuple(vb.shape)}; expected the same shape")
        if operation == "add":
            vectors[space] = va + factor * vb
        elif operation == "subtract":
            vectors[space] = va - factor * vb
        else:
            vectors[space] = factor * orthogonalised(va, vb, f"direction_b's {space} vector")
    return a.with_vectors(vectors, method=f"({a.provenance.get('method', 'a')}) {operation} "
                                          f"({b.provenance.get('method', 'b')}), factor {factor:g}")


class Alignment(NamedTuple):
    """A map from one encoder's space to another's: ``target ≈ scale · (source − source_mean) @ matrix.T + target_mean``."""
    matrix: torch.Tensor  # [target width, source width], orthonormal rows or columns
    scale: float
    source_mean: torch.Tensor
    target_mean: torch.Tensor
    r2: float  # share of the target anchors' variance the map explains
    cosine: float  # mean cosine between mapped and true (centred) anchors

    def carry(self, direction: torch.Tensor) -> torch.Tensor:
        """A direction (a difference, so means cancel) in the source space, expressed in the target space."""
        return self.scale * direction.float() @ self.matrix.T.to(direction.device)


def procrustes(source: torch.Tensor, target: torch.Tensor) -> Alignment:
    """Orthogonal Procrustes with one scale (Schönemann 1966), fitted on paired anchor encodings [N, width]: the
    rotation (a semi-orthogonal map when widths differ) that best carries the centred source anchors onto the target's."""
    for x, name in ((source, "source anchors"), (target, "target anchors")):
        if x.ndim != 2:
            raise ValueError(f"{name} have shape {tuple(x.shape)}; expected [anchors, width]")
        require_finite(x, name)
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"{source.shape[0]} source anchors but {target.shape[0]} target anchors; expected pairs")
    if source.shape[0] < 3:
        raise ValueError(f"{source.shape[0]} anchors; expected at least 3 to fit an alignment")
    x, y = source.double(), target.double()
    source_mean, target_mean = x.mean(0), y.mean(0)
    x, y = x - source_mean, y - target_mean
    u, singular, vh = torch.linalg.svd(y.T @ x, full_matrices=False)
    matrix = u @ vh
    spread = (x ** 2).sum()
    if spread == 0 or (y ** 2).sum() == 0:
        raise ValueError("the anchors all encode alike; expected anchor prompts that differ")
    scale = float(singular.sum() / spread)
    mapped = scale * x @ matrix.T
    r2 = float(1 - ((mapped - y) ** 2).sum() / (y ** 2).sum())
    cosine = float(F.cosine_similarity(mapped, y, dim=1).mean())
    return Alignment(matrix.float(), scale, source_mean.float(), target_mean.float(), r2, cosine)


def transfer(vectors: dict[str, torch.Tensor], source_tokens: torch.Tensor, source_pooled: torch.Tensor | None,
             target_tokens: torch.Tensor, target_pooled: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], str]:
    """Conditioning and pooled vectors carried from the source encoder's space into the target's, each by an
    alignment fitted on the same anchor prompts encoded by both (tokens: every position of every anchor, the two
    encoders' sequences tiled to one length), and the fits in words."""
    carried, fits = {}, []
    if "conditioning" in vectors:
        vector = vectors["conditioning"]
        if vector.shape[-1] != source_tokens.shape[-1]:
            raise ValueError(f"the direction is {describe_width(vector.shape[-1])} but source_clip encodes "
                             f"{describe_width(source_tokens.shape[-1])}; expected the encoder the direction was made with")
        length = common_length(source_tokens.shape[1], target_tokens.shape[1], vector.shape[0])
        alignment = procrustes(tile_tokens(source_tokens.float(), length).reshape(-1, source_tokens.shape[-1]),
                               tile_tokens(target_tokens.float(), length).reshape(-1, target_tokens.shape[-1]))
        carried["conditioning"] = tile_tokens(alignment.carry(tile_tokens(vector, length, dim=0)),
                                              target_tokens.shape[1], dim=0)
        fits.append(f"conditioning R² {alignment.r2:.3f}, cosine {alignment.cosine:.3f}")
    if "pooled" in vectors:
        vector = vectors["pooled"]
        if source_pooled is None or target_pooled is None:
            raise ValueError(f"the direction has a pooled part but {'source' if source_pooled is None else 'target'}"
                             "_clip gives no pooled embedding; expected encoders that both have one (or a "
                             "conditioning-only direction)")
        if vector.shape[-1] != source_pooled.shape[-1]:
            raise ValueError(f"the pooled direction is {vector.shape[-1]}-wide but source_clip's pooled embedding is "
                             f"{source_pooled.shape[-1]}-wide; expected the encoder the direction was made with")
        alignment = procrustes(source_pooled.float(), target_pooled.float())
        carried["pooled"] = alignment.carry(vector)
        fits.append(f"pooled R² {alignment.r2:.3f}, cosine {alignment.cosine:.3f}")
    return carried, "; ".join(fits)


def _token_rms(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square length of the token vectors, per item: [B, 1, 1]."""
    return x.float().pow(2).sum(-1).mean(-1).sqrt().reshape(-1, 1, 1)


def apply_to_tokens(tokens: torch.Tensor, direction: torch.Tensor, strength: float, content_tokens: int = 0,
                    auto_scale: bool = False, name: str = "conditioning") -> torch.Tensor:
    """``tokens + strength · direction``, token by token: the direction repeated or cut to the sequence's length
    (a prompt over 77 tokens is encoded 77 at a time); with ``content_tokens``, only the leading tokens its prompts
    occupied move. ``auto_scale``: strength 1 moves each token by the sequence's own RMS token length."""
    if tokens.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(tokens.shape)}; expected [batch, tokens, width]")
    if tokens.shape[-1] != direction.shape[-1]:
        raise ValueError(f"the direction is {describe_width(direction.shape[-1])} but {name} is "
                         f"{describe_width(tokens.shape[-1])}; expected a direction made with this model's text "
                         "encoder")
    delta = tile_tokens(direction.float(), tokens.shape[1], dim=0)
    if content_tokens:
        keep = (torch.arange(tokens.shape[1], device=delta.device) < content_tokens).to(delta.dtype)
        delta = delta * keep[:, None]
    delta = delta.unsqueeze(0).to(tokens.device)
    if auto_scale:
        size = _token_rms(delta)
        if size.max() == 0:
            raise ValueError("the direction has zero norm; expected a direction that points somewhere")
        delta = delta * (_token_rms(tokens) / size)
    return (tokens.float() + strength * delta).to(tokens.dtype)


def apply_to_pooled(pooled: torch.Tensor, direction: torch.Tensor, strength: float, auto_scale: bool = False,
                    name: str = "pooled_output") -> torch.Tensor:
    if pooled.shape[-1] != direction.shape[-1]:
        raise ValueError(f"the pooled direction is {direction.shape[-1]}-wide but {name} is {pooled.shape[-1]}-wide; "
                         "expected a direction made with this model's text encoder")
    delta = direction.float().to(pooled.device)
    if auto_scale:
        size = delta.norm()
        if size == 0:
            raise ValueError("the pooled direction has zero norm; expected a direction that points somewhere")
        delta = delta * (pooled.float().norm(dim=-1, keepdim=True) / size)
    return (pooled.float() + strength * delta).to(pooled.dtype)


def fitted_to_latent(direction: torch.Tensor, latent: torch.Tensor, name: str = "latent") -> torch.Tensor:
    """A latent direction [C, *spatial] checked against ``latent`` [B, C, *spatial] and, when it was found at another
    size, resized (bilinear; trilinear for video) to the latent's: float32 on the latent's device."""
    require_batch(latent, name, min_ndim=3)
    if direction.ndim != latent.ndim - 1:
        raise ValueError(f"the direction has shape {tuple(direction.shape)} but {name} is {latent.ndim}-D "
                         f"{tuple(latent.shape)}; expected a direction from latents of the same kind")
    if direction.shape[0] != latent.shape[1]:
        raise ValueError(f"the direction has {direction.shape[0]} channels but {name} has {latent.shape[1]}; "
                         "expected a direction from latents of the same model family")
    delta = direction.float().to(latent.device)
    if delta.shape[1:] != latent.shape[2:]:
        mode = "bilinear" if delta.ndim == 3 else "trilinear"
        delta = F.interpolate(delta.unsqueeze(0), size=tuple(latent.shape[2:]), mode=mode, align_corners=False)[0]
    return delta


def apply_to_latent(latent: torch.Tensor, direction: torch.Tensor, strength: float,
                    mask: torch.Tensor | None = None, name: str = "latent") -> torch.Tensor:
    """``latent + strength · direction`` for every item; a direction found at another size is resized (bilinear) to
    the latent's; the mask (ComfyUI MASK, any resolution) limits where it applies."""
    delta = strength * fitted_to_latent(direction, latent, name).unsqueeze(0)
    if mask is not None:
        delta = delta * mask_for_latent(mask, latent).float()
    return (latent.float() + delta).to(latent.dtype)


def strength_steps(start: float, end: float, steps: int) -> list[float]:
    """``steps`` evenly spaced strengths from ``start`` to ``end``, both included."""
    if steps < 1:
        raise ValueError(f"steps is {steps}; expected at least 1")
    if steps == 1:
        return [float(start)]
    return [start + (end - start) * i / (steps - 1) for i in range(steps)]


def save_direction(path: str | Path, direction: Direction) -> None:
    """A safetensors file: one tensor per space, where the direction belongs and how it was made in the header."""
    from safetensors.torch import save_file

    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": direction.family,
                "encoder": direction.encoder, "layer": direction.layer,
                "content_tokens": str(direction.content_tokens), "provenance": json.dumps(direction.provenance)}
    tensors = {space: vector.detach().float().cpu().contiguous() for space, vector in direction.vectors.items()}
    save_file(tensors, str(path), metadata=metadata)


def _condelta(tensors: dict[str, torch.Tensor], path: Path) -> Direction:
    """A ConDelta file (ComfyUI-ConDelta): a conditioning delta [1, tokens, width] and maybe a pooled delta [1, width],
    with no record of the model."""
    vectors = {"conditioning": tensors["conditioning_delta"].reshape(-1, tensors["conditioning_delta"].shape[-1])}
    pooled = tensors.get("pooled_output")
    if pooled is not None:
        vectors["pooled"] = pooled.reshape(-1)
    return Direction(vectors, provenance={"method": "ConDelta file", "file": path.name})


def load_direction(path: str | Path) -> Direction:
    """A direction file written by ``save_direction``, or a ConDelta file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DirectionFileError(f"direction file '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key).float() for key in file.keys()}
    except Exception as error:  # safetensors raises several kinds for a damaged or foreign file
        raise DirectionFileError(f"direction file '{path.name}' could not be read as safetensors ({error}); expected a "
                                 "file saved by Save Direction or a ConDelta file") from None
    try:
        if metadata.get("format") == FORMAT:
            direction = Direction(tensors, family=metadata.get("family", ""), encoder=metadata.get("encoder", ""),
                                  layer=metadata.get("layer", ""),
                                  content_tokens=int(metadata.get("content_tokens", "0")),
                                  provenance=json.loads(metadata.get("provenance", "{}")))
        elif "conditioning_delta" in tensors:
            direction = _condelta(tensors, path)
        else:
            raise DirectionFileError(f"direction file '{path.name}' holds tensors {', '.join(sorted(tensors)) or '(none)'} and no "
                                     "direction header; expected a file saved by Save Direction or a ConDelta file")
    except (ValueError, json.JSONDecodeError) as error:
        if isinstance(error, DirectionFileError):
            raise
        raise DirectionFileError(f"direction file '{path.name}' is damaged: {error}") from None
    for space, vector in direction.vectors.items():
        if not torch.isfinite(vector).all():
            raise DirectionFileError(f"direction file '{path.name}': its {space} vector holds NaN/Inf values; "
                                     "expected finite numbers (save the direction again)")
    return direction


def require_spaces(direction: Direction, spaces: Sequence[str], name: str = "direction") -> None:
    if not any(space in direction.vectors for space in spaces):
        raise ValueError(f"{name} is in {', '.join(direction.spaces)} space; expected a {' or '.join(spaces)} "
                         "direction here")

