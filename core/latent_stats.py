"""What a batch of latents holds: per-channel statistics, per-item size, the PCA spectrum, flags for latents outside a
model's usual range, and the one-hot channel directions a channel scan moves along.

A latent format maps raw VAE latents to the model's space by ``process_in`` (``x · scale_factor``, with a shift or a
per-channel mean and std for some families), where a healthy latent has roughly unit spread. Its gain per channel
says how far one unit of the model's space is in raw units, so a channel scan measured in those units means the
same on 4-channel and 16-channel families.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from .checks import require_batch, require_finite
from .directions import principal_directions

# Flags on an item's RMS in model space (process_in applied). Measured on the reference world's latents sampled from
# 64 captions (20 Euler steps): healthy RMS 0.54 to 1.40 at cfg 1, 0.59 to 1.51 at cfg 4, 0.60 to 1.67 at cfg 8
# (white backgrounds sit high, black ones low); the same latents ×0.2 reach at most 0.30, ×3 fall below 2 only where
# the latent was under 0.67 (about 5 %); an average of two latents keeps 0.48 or more, the mean of 64 falls to 0.26.
WASHED_OUT_BELOW = 0.35
BURNT_ABOVE = 2.0
MAX_COMPONENTS = 8  # PCA spectrum: the leading components reported

ProcessIn = Callable[[torch.Tensor], torch.Tensor]


def format_gain(process_in: ProcessIn, like: torch.Tensor) -> torch.Tensor:
    """Per-channel gain [C] of a linear latent format (``process_in(x) = gain · x + offset``), probed on tensors of
    ``like``'s item shape."""
    probe = torch.zeros_like(like[:1], dtype=torch.float32)
    gain = (process_in(probe + 1) - process_in(probe)).transpose(0, 1).reshape(like.shape[1], -1).mean(1)
    if not bool((gain > 0).all()):
        raise ValueError("the model's latent format does not scale every channel up (gain "
                         f"{[round(float(g), 4) for g in gain]}); expected a linear format such as SD's or Flux's")
    return gain


def _channel_rows(samples: torch.Tensor) -> torch.Tensor:
    """[C, everything else]: each channel's values over items and positions."""
    return samples.float().transpose(0, 1).reshape(samples.shape[1], -1)


def _row_std(rows: torch.Tensor) -> torch.Tensor:
    return rows.std(1) if rows.shape[1] > 1 else torch.zeros(rows.shape[0], device=rows.device)


def channel_spread(samples: torch.Tensor, process_in: ProcessIn | None = None, name: str = "latent") -> torch.Tensor:
    """Raw size of one unit per channel [C]: with a latent format, its unit spread (1 / gain); without one, the
    batch's own standard deviation per channel (over items and positions)."""
    require_batch(samples, name, min_ndim=3)
    require_finite(samples, name)
    if process_in is not None:
        return 1 / format_gain(process_in, samples)
    return _row_std(_channel_rows(samples))


def channel_direction(samples: torch.Tensor, channel: int, process_in: ProcessIn | None = None,
                      name: str = "latent") -> torch.Tensor:
    """The latent direction [C, *spatial] that moves one channel everywhere by one unit (``channel_spread``) and
    leaves the others: a channel scan is a direction scan along it."""
    require_batch(samples, name, min_ndim=3)
    channels = samples.shape[1]
    if not 0 <= channel < channels:
        raise ValueError(f"channel is {channel} but {name} has {channels} channels; expected 0 to {channels - 1}")
    spread = float(channel_spread(samples, process_in, name)[channel])
    if spread == 0:
        raise ValueError(f"channel {channel} of {name} is constant (e.g. an empty latent), so it has no spread to "
                         "measure the scan in; connect a model to measure in its latent format's units")
    direction = torch.zeros(samples.shape[1:], dtype=torch.float32, device=samples.device)
    direction[channel] = spread
    return direction


def scan_labels(what: str, strengths: Sequence[float], batch: int, unit: str = "") -> list[str]:
    """One label per item of a strength-major scan (all items at the first strength, then the next, ...)."""
    return [f"{f'item {item + 1}, ' if batch > 1 else ''}{what} {strength:+.2f}{unit}"
            for strength in strengths for item in range(batch)]


class LatentStatistics(NamedTuple):
    channel_mean: torch.Tensor  # [C], raw, over items and positions
    channel_std: torch.Tensor  # [C]
    channel_min: torch.Tensor  # [C]
    channel_max: torch.Tensor  # [C]
    item_norm: torch.Tensor  # [B]: the L2 norm of each raw item
    item_rms: torch.Tensor  # [B]: its root mean square
    model_rms: torch.Tensor | None  # [B]: RMS in model space (process_in applied); None without a latent format
    flags: list[str] | None  # per item: "ok", "burnt" or "washed out"; None without a latent format
    explained: torch.Tensor | None  # leading PCA components' share of the batch's variance; None: no spectrum


def flags_for(model_rms: torch.Tensor) -> list[str]:
    return ["burnt" if rms > BURNT_ABOVE else "washed out" if rms < WASHED_OUT_BELOW else "ok"
            for rms in model_rms.tolist()]


def latent_statistics(samples: torch.Tensor, process_in: ProcessIn | None = None,
                      name: str = "latent") -> LatentStatistics:
    """The statistics of a latent batch [B, C, *spatial], batch-wide tensor ops; flags need the latent format."""
    require_batch(samples, name, min_ndim=3)
    require_finite(samples, name)
    x = samples.float()
    per_channel = _channel_rows(x)
    rows = x.reshape(x.shape[0], -1)
    model_rms = flags = None
    if process_in is not None:
        model_rms = process_in(x).reshape(x.shape[0], -1).pow(2).mean(1).sqrt()
        flags = flags_for(model_rms)
    explained = None
    if x.shape[0] >= 2 and bool((rows != rows[:1]).any()):
        explained = principal_directions(x, min(x.shape[0] - 1, MAX_COMPONENTS), name).explained
    return LatentStatistics(per_channel.mean(1), _row_std(per_channel), per_channel.amin(1), per_channel.amax(1),
                            rows.norm(dim=1), rows.pow(2).mean(1).sqrt(), model_rms, flags, explained)


def _values(tensor: torch.Tensor) -> str:
    return ", ".join(f"{float(v):.3g}" for v in tensor)


def describe(stats: LatentStatistics, shape: Sequence[int]) -> str:
    """The statistics as a short text report."""
    lines = [f"latent {tuple(shape)}: {shape[0]} item(s), {shape[1]} channels"]
    for label, values in (("channel mean", stats.channel_mean), ("channel std", stats.channel_std),
                          ("channel min", stats.channel_min), ("channel max", stats.channel_max),
                          ("item norm", stats.item_norm), ("item RMS", stats.item_rms)):
        lines.append(f"{label}: {_values(values)}")
    if stats.model_rms is None:
        lines.append("no model connected: the batch's own statistics only, no flags (connect the model to compare "
                     "with its latent format's unit spread)")
    else:
        lines.append(f"item RMS in model space: {_values(stats.model_rms)} (healthy {WASHED_OUT_BELOW:g} to "
                     f"{BURNT_ABOVE:g})")
        flagged = [f"{index + 1}: {flag}" for index, flag in enumerate(stats.flags) if flag != "ok"]
        lines.append(f"flagged: {', '.join(flagged)}" if flagged else "flagged: none")
    if stats.explained is None:
        lines.append("PCA spectrum: needs at least 2 items that differ")
    else:
        lines.append("PCA explained variance: " + ", ".join(f"{index + 1}: {100 * float(share):.1f}%"
                                                            for index, share in enumerate(stats.explained)))
    return "\n".join(lines)
