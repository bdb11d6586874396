"""Retrieval: rank a batch by its distance to a query, in latent space (flattened L2 or cosine) or in an image
embedding space (cosine distance between unit CLIP embeddings).

Several query items stand for one query: their mean (for cosine, the mean of their unit vectors), so a handful of
examples of one thing retrieves what they share rather than what any one of them happens to show.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .checks import require_batch, require_finite
from .optimize import Progress  # progress(done, total, latest), as nodes/progress.LoopProgress takes it

METRICS = ("l2", "cosine")
# ``image [N, 3, H, W] in 0..1 -> unit embeddings [N, E]``, as the adapters' and OpenClipModel's image scorers are
ImageScorer = Callable[[torch.Tensor], torch.Tensor]


class Ranking(NamedTuple):
    order: torch.Tensor  # [k] indices into the batch, nearest first
    distances: torch.Tensor  # [k] their distances to the query, ascending


def in_chunks(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_size: int,
              progress: Progress | None = None) -> torch.Tensor:
    """``function`` over ``x``'s batch ``chunk_size`` items at a time, the results concatenated: bounded memory, and
    a progress report (and a chance to cancel) after each chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size is {chunk_size}; expected at least 1")
    pieces = x.split(chunk_size)
    results = []
    for done, piece in enumerate(pieces, 1):
        results.append(function(piece))
        if progress is not None:
            progress(done, len(pieces), results[-1])
    return torch.cat(results)


def item_embeddings(score: ImageScorer, pictures: torch.Tensor, chunk_size: int,
                    progress: Progress | None = None) -> torch.Tensor:
    """Unit embeddings [N, E] of pictures [N, 3, H, W], or of videos [N, T, 3, H, W] (the mean of their frames' unit
    embeddings, made unit again: what the clip shows throughout), float32."""
    if pictures.ndim not in (4, 5) or pictures.shape[-3] != 3:
        raise ValueError(f"pictures have shape {tuple(pictures.shape)}; expected RGB [N, 3, H, W] or videos "
                         "[N, T, 3, H, W]")
    frames = pictures.reshape(-1, *pictures.shape[-3:])
    embeddings = in_chunks(lambda chunk: score(chunk).float(), frames, chunk_size, progress)
    if pictures.ndim == 5:
        embeddings = F.normalize(embeddings.reshape(pictures.shape[0], pictures.shape[1], -1).mean(1), dim=-1)
    return embeddings


def _unit_rows(rows: torch.Tensor, name: str) -> torch.Tensor:
    norms = rows.norm(dim=1)
    if (norms == 0).any():
        item = int((norms == 0).nonzero()[0])
        raise ValueError(f"{name} item {item} is all zeros, which has no direction for a cosine distance; expected "
                         "non-zero items (an empty latent is all zeros: rank it by L2 distance, or sample it first)")
    return rows / norms[:, None]


def query_distances(query: torch.Tensor, batch: torch.Tensor, metric: str, query_name: str = "query",
                    batch_name: str = "batch") -> torch.Tensor:
    """Each batch item's distance [B] to the query (the mean of the query's items), over all their entries
    flattened: ``l2`` the Euclidean distance, ``cosine`` 1 − cosine similarity (0 alike, 1 unrelated, 2 opposite)."""
    if metric not in METRICS:
        raise ValueError(f"metric is '{metric}'; expected one of {', '.join(METRICS)}")
    for x, name in ((query, query_name), (batch, batch_name)):
        require_batch(x, name)
        require_finite(x, name)
    if query.shape[1:] != batch.shape[1:]:
        raise ValueError(f"{query_name} has items of shape {tuple(query.shape[1:])} but {batch_name} has "
                         f"{tuple(batch.shape[1:])}; expected items of the same shape (same model, same size)")
    query_rows = query.reshape(query.shape[0], -1).double()
    rows = batch.reshape(batch.shape[0], -1).double().to(query_rows.device)
    if metric == "l2":
        return (rows - query_rows.mean(0)).norm(dim=1).float()
    centre = _unit_rows(query_rows, query_name).mean(0)
    if centre.norm() == 0:
        raise ValueError(f"{query_name}'s items cancel out (their unit vectors sum to zero); expected query items "
                         "that point roughly the same way")
    return (1 - _unit_rows(rows, batch_name) @ (centre / centre.norm())).float()


def rank(distances: torch.Tensor, top_k: int = 0, batch_name: str = "batch") -> Ranking:
    """The ``top_k`` nearest items (0: all), nearest first; ties keep the batch's order."""
    count = distances.shape[0]
    if top_k < 0 or top_k > count:
        raise ValueError(f"top_k is {top_k} but {batch_name} has {count} item{'s' if count != 1 else ''}; expected "
                         f"0 (all) to {count}")
    ordered, order = torch.sort(distances, stable=True)
    keep = top_k or count
    return Ranking(order[:keep], ordered[:keep])


def nearest(query: torch.Tensor, batch: torch.Tensor, metric: str, top_k: int = 0, query_name: str = "query",
            batch_name: str = "batch") -> Ranking:
    """``rank(query_distances(...))``: the batch's items by distance to the query."""
    return rank(query_distances(query, batch, metric, query_name, batch_name), top_k, batch_name)
