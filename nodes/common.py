"""Node-side plumbing shared by every node: building new LATENT dicts and CONDITIONING lists without touching inputs."""

from __future__ import annotations

import torch

CATEGORY = "latent space control"


def new_latent(source: dict, samples: torch.Tensor) -> dict:
    """A new LATENT dict with ``samples``, carrying the source's other keys; per-item keys (``batch_index``, a
    per-item ``noise_mask``) no longer describe the new batch and are dropped. The source is left as it is."""
    out = {key: value for key, value in source.items() if key not in ("samples", "noise_mask", "batch_index")}
    out["samples"] = samples
    mask = source.get("noise_mask")
    if mask is not None and mask.shape[0] == 1:
        out["noise_mask"] = mask
    return out


def latent_with_frames(source: dict, samples: torch.Tensor, frames: int) -> dict:
    """Like ``new_latent`` for a frame-major batch of ``frames`` frames of the source's batch: per-item keys are
    repeated for each frame."""
    out = new_latent(source, samples)
    batch = samples.shape[0] // frames
    mask = source.get("noise_mask")
    if mask is not None and mask.shape[0] == batch > 1:
        out["noise_mask"] = mask.repeat(frames, *([1] * (mask.ndim - 1)))
    index = source.get("batch_index")
    if index is not None and len(index) == batch:
        out["batch_index"] = list(index) * frames
    return out


def pair_entries(a: list, b: list, name_a: str, name_b: str) -> list[tuple]:
    """Pairs of CONDITIONING entries: element-wise, or a single entry against each entry of the other."""
    if not a or not b:
        raise ValueError(f"{name_a if not a else name_b} is an empty conditioning; expected at least one entry")
    if len(a) == len(b):
        return list(zip(a, b))
    if len(a) == 1:
        return [(a[0], entry) for entry in b]
    if len(b) == 1:
        return [(entry, b[0]) for entry in a]
    raise ValueError(f"{name_a} has {len(a)} entries and {name_b} has {len(b)}; "
                     "expected the same number of entries, or a single one in either")
