"""Input checks shared by the engine: each failure names the input and says what was expected."""

from __future__ import annotations

import torch


def require_finite(x: torch.Tensor, name: str) -> None:
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected at least one element")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf value{'s' if bad > 1 else ''}; expected finite numbers")


def require_batch(x: torch.Tensor, name: str, min_ndim: int = 2) -> None:
    if x.ndim < min_ndim:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected a batch with at least {min_ndim} dimensions")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); expected at least one item")


def require_compatible(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, what: str = "latent") -> None:
    """Same shape apart from the batch, and batches equal or one of them 1 (it is broadcast)."""
    if a.ndim != b.ndim:
        raise ValueError(
            f"{name_b} is {b.ndim}-D {tuple(b.shape)} but {name_a} is {a.ndim}-D {tuple(a.shape)}; "
            f"expected two {what}s of the same kind (image latents are 4-D, video latents 5-D)")
    if a.ndim >= 2 and a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_b} has {b.shape[1]} channels but {name_a} has {a.shape[1]}; expected {what}s from the same model family")
    if a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"{name_b} has size {tuple(b.shape[2:])} but {name_a} has {tuple(a.shape[2:])} (in latent cells: pixels "
            f"divided by the VAE's downscale, 8 for most image models); expected the same size (resize one of them "
            "first)")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            f"{name_a} has batch {a.shape[0]} and {name_b} has batch {b.shape[0]}; expected equal batches or a batch of 1")
