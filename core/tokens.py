"""Token sequences of different lengths (conditionings from prompts of different length or different encoders)."""

from __future__ import annotations

import math

import torch

# Beyond this many times the longer length, tiling to the least common multiple costs more than it is worth.
_MAX_LCM_FACTOR = 4


def common_length(*lengths: int) -> int:
    """The length every sequence is tiled to: their least common multiple when that stays small, else the longest."""
    lcm = math.lcm(*lengths)
    return lcm if lcm <= _MAX_LCM_FACTOR * max(lengths) else max(lengths)


def tile_tokens(x: torch.Tensor, length: int, dim: int = 1) -> torch.Tensor:
    """Repeat the whole sequence along ``dim`` up to ``length`` tokens.

    Repeating every token the same number of times leaves cross-attention over the sequence unchanged (each key's
    softmax weight is split evenly between its copies), unlike zero padding, which adds attended-to tokens.
    """
    current = x.shape[dim]
    if current == length:
        return x
    repeats = -(-length // current)
    return torch.cat([x] * repeats, dim=dim).narrow(dim, 0, length)
