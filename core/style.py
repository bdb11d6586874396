"""Style mixing for diffusion, after StyleGAN's style mixing: structure from one source, style from another.

Diffusion has two axes along which the work divides. Time: the first steps lay out the picture, the last ones paint
detail and colour, so switching the conditioning at a point of the schedule takes structure from the prompt before and
style from the prompt after. Depth: the denoiser's blocks specialise, so a prompt fed to some blocks only carries what
those blocks decide. Beside them, latent statistics (AdaIN: each channel's mean and spread) and spatial frequency
(low: layout, high: texture) mix two latents directly, and shared attention (StyleAligned, Hertz et al. 2024) lets a
batch look at its first picture while it is drawn.

Schedule positions are fractions of the sampling schedule as ComfyUI counts them (0: the first, noisiest step; 1: the
end), so a cutoff means the same through the engine's sampler and through ComfyUI's.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .adapters import sigma_to_timestep

from .checks import require_compatible, require_finite
from .masks import mask_for_latent

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EPSILON = 1e-5  # keeps a flat channel's spread from dividing by zero


def crossfade_weight(position: float, cutoff: float, window: float = 0.0) -> float:
    """The second source's weight at ``position`` of the schedule: 0 before ``cutoff``, 1 after it; with a
    ``window`` the change is a smoothstep over ``window`` centred on the cutoff (clipped to the schedule)."""
    if window <= 0:  # a cutoff of 1 never switches, as in ComfyUI, where the schedule's end is never reached
        return 0.0 if position < cutoff or cutoff >= 1 else 1.0
    u = min(max((position - cutoff) / window + 0.5, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def crossfade_segments(cutoff: float, window: float = 0.0, pieces: int = 8) -> list[tuple[float, float, float]]:
    """The schedule cut into ``(start, end, weight)`` pieces over which the second source's weight is constant:
    one piece before the window, ``pieces`` across it (each at the weight of its middle), one after. Pieces of zero
    length are left out."""
    if not 0 <= cutoff <= 1:
        raise ValueError(f"cutoff is {cutoff}; expected a fraction of the schedule in 0..1")
    if window < 0:
        raise ValueError(f"window is {window}; expected 0 (a hard switch) or more")
    if window == 0:
        bounds = [0.0, cutoff, 1.0]
    else:
        low, high = cutoff - window / 2, cutoff + window / 2
        inner = [low + (high - low) * i / pieces for i in range(pieces + 1)]
        bounds = sorted({0.0, 1.0, *(min(max(b, 0.0), 1.0) for b in inner)})
    return [(start, end, crossfade_weight((start + end) / 2, cutoff, window))
            for start, end in zip(bounds[:-1], bounds[1:]) if end > start]


def schedule_position(sigma: float, sigmas: torch.Tensor) -> float:
    """Where the noise level ``sigma`` lies in a discrete-step model's schedule (``sigmas``, one per training step,
    rising), as ComfyUI counts it: 0 at the last training step, the noisiest, 1 at the first; fractional steps are
    interpolated in log sigma, as ComfyUI's ``percent_to_sigma`` does."""
    timestep = sigma_to_timestep(torch.tensor([float(sigma)], dtype=sigmas.dtype), sigmas)
    return 1.0 - float(timestep) / (len(sigmas) - 1)



def schedule_sigma(position: float, sigmas: torch.Tensor) -> float:
    """The noise level at ``position`` of a discrete-step model's schedule (``sigmas`` rising), the inverse of
    ``schedule_position`` and ComfyUI's ``percent_to_sigma``: at 0 (the start) every level is still to come (inf), at 1
    none is (0); between, the fractional training step (1 − position) × (steps − 1), interpolated in log sigma."""
    if position <= 0:
        return float("inf")
    if position >= 1:
        return 0.0
    log_sigmas = sigmas.double().log()
    step = (1 - position) * (len(sigmas) - 1)
    low = int(step)
    high = min(low + 1, len(sigmas) - 1)
    return float((log_sigmas[low] + (step - low) * (log_sigmas[high] - log_sigmas[low])).exp())

def crossfaded_denoiser(structure: Denoiser, style: Denoiser, position: Callable[[float], float], cutoff: float,
                        window: float = 0.0) -> Denoiser:
    """The denoiser of timestep mixing: ``structure``'s prediction before ``cutoff`` of the schedule, ``style``'s
    after, blended by ``crossfade_weight`` inside the window; ``position`` maps a noise level to its place in the
    schedule (``schedule_position``). A batch shares one noise level, as in every sampler here."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        weight = crossfade_weight(position(float(sigma.reshape(-1)[0])), cutoff, window)
        if weight == 0.0:
            return structure(x, sigma)
        if weight == 1.0:
            return style(x, sigma)
        return torch.lerp(structure(x, sigma), style(x, sigma), weight)

    return denoise


def _reduce_dims(x: torch.Tensor, per_frame: bool) -> tuple[int, ...]:
    """The dimensions statistics are taken over: every spatial one, or (``per_frame``) all but a 5-D latent's frames."""
    if per_frame and x.ndim == 5:
        return (-2, -1)
    return tuple(range(2, x.ndim))


def channel_statistics(x: torch.Tensor, per_frame: bool = False,
                       weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's per-channel mean and standard deviation over its spatial dimensions (and frames unless
    ``per_frame``), kept as broadcastable dimensions; ``weights`` (broadcastable to ``x``, ≥ 0) weighs the cells."""
    dims = _reduce_dims(x, per_frame)
    if weights is None:
        mean = x.mean(dims, keepdim=True)
        variance = (x - mean).square().mean(dims, keepdim=True)
    else:
        weights = weights.expand_as(x)
        total = weights.sum(dims, keepdim=True).clamp_min(EPSILON)
        mean = (x * weights).sum(dims, keepdim=True) / total
        variance = ((x - mean).square() * weights).sum(dims, keepdim=True) / total
    return mean, variance.sqrt()


def _style_statistics(style: torch.Tensor, content: torch.Tensor, per_frame: bool,
                      names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The style's statistics shaped to broadcast over the content: per frame only where both are 5-D."""
    frames = per_frame and content.ndim == 5 and style.ndim == 5
    if frames and style.shape[2] not in (1, content.shape[2]):
        raise ValueError(f"{names[1]} has {style.shape[2]} frames and {names[0]} {content.shape[2]}; per frame needs "
                         f"the same number of frames, or one in {names[1]}")
    mean, std = channel_statistics(style, frames)
    shape = (*mean.shape[:2], *([1] * (content.ndim - 2)))
    if frames:
        shape = mean.shape
    return mean.reshape(shape), std.reshape(shape)


def adain(content: torch.Tensor, style: torch.Tensor, strength: float = 1.0, mask: torch.Tensor | None = None,
          per_frame: bool = False, names: tuple[str, str, str] = ("latent_a", "latent_b", "mask")) -> torch.Tensor:
    """``content`` [B, C, *spatial] with each channel's mean and standard deviation replaced by ``style``'s
    (adaptive instance normalisation), blended in by ``strength`` (1: exactly the style's statistics).

    The style may have any spatial size (only its statistics count) and a batch equal to the content's or 1. With a
    ``mask`` [H, W] / [B, H, W] (any resolution), the content's statistics are taken inside the mask and the result
    replaces the content there only, blending at soft edges. ``per_frame``: a 5-D latent's frames each get their own
    statistics (a video whose light changes keeps its change)."""
    _require_pair(content, style, names[:2], same_size=False)
    weights = None if mask is None else mask_for_latent(mask, content, names[2])
    mean, std = channel_statistics(content, per_frame, weights)
    style_mean, style_std = _style_statistics(style, content, per_frame, names[:2])
    normalised = (content - mean) / (std + EPSILON) * style_std + style_mean
    return torch.lerp(content, normalised, strength if weights is None else strength * weights)


def _lowpass_filter(size: int, cutoff: float, device, dtype) -> torch.Tensor:
    """Gaussian transfer function over ``size`` FFT bins: 1/2 at a period of ``cutoff`` cells."""
    frequencies = torch.fft.fftfreq(size, device=device, dtype=dtype)
    # exp(-a f²) = 1/2 at f = 1/cutoff
    return torch.exp(-math.log(2) * (frequencies * cutoff).square())


def low_frequencies(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``x`` smoothed over its last two dimensions by a Gaussian filter whose response falls to one half at a period
    of ``cutoff`` cells: shapes larger than ``cutoff`` pass, finer detail does not. The edges are mirrored first so
    the picture does not wrap round."""
    height, width = x.shape[-2:]
    pad_h, pad_w = min(height - 1, height // 2), min(width - 1, width // 2)
    flat = x.reshape(-1, 1, height, width)
    padded = F.pad(flat, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if pad_h or pad_w else flat
    spectrum = torch.fft.fft2(padded.float())
    filter_h = _lowpass_filter(padded.shape[-2], cutoff, x.device, torch.float32)
    filter_w = _lowpass_filter(padded.shape[-1], cutoff, x.device, torch.float32)
    smoothed = torch.fft.ifft2(spectrum * filter_h[:, None] * filter_w[None, :]).real
    smoothed = smoothed[..., pad_h:pad_h + height, pad_w:pad_w + width]
    return smoothed.reshape(x.shape).to(x.dtype)


def frequency_mix(low_source: torch.Tensor, high_source: torch.Tensor, cutoff: float, strength: float = 1.0,
                  mask: torch.Tensor | None = None,
                  names: tuple[str, str, str] = ("latent_a", "latent_b", "mask")) -> torch.Tensor:
    """The coarse shapes of ``low_source`` with the fine detail of ``high_source`` (same size; batches equal or 1):
    frequencies are split by ``low_frequencies`` at ``cutoff`` cells. ``strength`` blends from ``low_source`` (0) to
    the mix (1); a ``mask`` limits the mix to a region."""
    if cutoff <= 0:
        raise ValueError(f"cutoff is {cutoff}; expected a period in latent cells above 0")
    _require_pair(low_source, high_source, names[:2], same_size=True)
    mixed = low_frequencies(low_source, cutoff) + high_source - low_frequencies(high_source, cutoff)
    return _blend(low_source, mixed, strength, mask, names[2])


def channel_mix(base: torch.Tensor, source: torch.Tensor, channels: list[int], strength: float = 1.0,
                mask: torch.Tensor | None = None,
                names: tuple[str, str, str] = ("latent_a", "latent_b", "mask")) -> torch.Tensor:
    """``base`` with the listed ``channels`` taken from ``source`` (same size; batches equal or 1)."""
    _require_pair(base, source, names[:2], same_size=True)
    bad = [c for c in channels if not 0 <= c < base.shape[1]]
    if bad:
        raise ValueError(f"channels {bad} do not exist; expected channel numbers 0..{base.shape[1] - 1} of these "
                         "latents")
    if not channels:
        raise ValueError("channels is empty; expected at least one channel index")
    mixed = base.clone()
    mixed[:, channels] = source.expand_as(base)[:, channels]
    return _blend(base, mixed, strength, mask, names[2])


def _blend(base: torch.Tensor, mixed: torch.Tensor, strength: float, mask: torch.Tensor | None,
           name: str) -> torch.Tensor:
    if mask is None:
        return torch.lerp(base, mixed, strength)  # exact at both ends
    return torch.lerp(base.expand_as(mixed), mixed, strength * mask_for_latent(mask, mixed, name))


def _require_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], same_size: bool) -> None:
    require_finite(a, names[0])
    require_finite(b, names[1])
    if same_size:
        require_compatible(a, b, *names)
        if b.shape[0] not in (1, a.shape[0]):
            raise ValueError(f"{names[1]} has batch {b.shape[0]} and {names[0]} {a.shape[0]}; expected the same "
                             f"batch, or 1 in {names[1]}")
        return
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[1]} has {b.shape[1]} channels but {names[0]} has {a.shape[1]}; expected latents "
                         "from the same model family")
    if b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"{names[1]} has batch {b.shape[0]} and {names[0]} {a.shape[0]}; expected the same batch, "
                         f"or 1 in {names[1]}")


def shared_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunks: int, normalise: bool = True,
                     strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """StyleAligned's shared self-attention, as the inputs of an ordinary attention call: every item of each of the
    ``chunks`` equal parts of the batch (ComfyUI batches the positive and negative passes together) attends to its
    own tokens and to those of its part's first item, the reference.

    ``q``, ``k``, ``v`` are [N, T, D] (projected, heads not yet split). With ``normalise``, each item's queries and
    keys first take the reference's per-feature mean and spread over its tokens (AdaIN), so they meet the
    reference's keys on the reference's terms. ``strength`` weighs the reference's tokens against the item's own
    (as if each were there ``strength`` times): returned as an additive logit bias [N, 1, 1, 2T], None at 1.
    Returns q [N, T, D], k and v [N, 2T, D] and the bias. The reference itself sees its own tokens twice, which
    leaves its attention, and so its picture, as it was."""
    total, tokens, width = q.shape
    if total % chunks:
        raise ValueError(f"a batch of {total} does not split into {chunks} equal parts")
    if strength <= 0:
        raise ValueError(f"strength is {strength}; expected a weight above 0")
    per_chunk = total // chunks

    def by_chunk(x):
        return x.reshape(chunks, per_chunk, *x.shape[1:])

    q, k, v = by_chunk(q), by_chunk(k), by_chunk(v)
    if normalise:
        q, k = _adain_tokens(q), _adain_tokens(k)
    reference_k = k[:, :1].expand(-1, per_chunk, -1, -1)
    reference_v = v[:, :1].expand(-1, per_chunk, -1, -1)
    k = torch.cat([k, reference_k], dim=2)
    v = torch.cat([v, reference_v], dim=2)
    bias = None
    if strength != 1.0:
        bias = torch.zeros(chunks, per_chunk, 1, 1, 2 * tokens, dtype=q.dtype, device=q.device)
        bias[:, 1:, ..., tokens:] = math.log(strength)  # the reference keeps its own attention
        bias = bias.reshape(total, 1, 1, 2 * tokens)
    return (q.reshape(total, tokens, width), k.reshape(total, 2 * tokens, width),
            v.reshape(total, 2 * tokens, width), bias)


def _adain_tokens(x: torch.Tensor) -> torch.Tensor:
    """[chunks, items, T, D]: every item's per-feature token statistics replaced by its chunk's first item's."""
    mean = x.mean(2, keepdim=True)
    std = x.std(2, keepdim=True, correction=0)
    normalised = (x - mean) / (std + EPSILON) * std[:, :1] + mean[:, :1]
    return torch.cat([x[:, :1], normalised[:, 1:]], dim=1)
