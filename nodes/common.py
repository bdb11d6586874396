"""Node-side plumbing in plain Python, so CI tests it without ComfyUI: new LATENT dicts and CONDITIONING lists built
without touching the inputs, the NOISE object seed travel hands to samplers, and parsing of text inputs."""

from __future__ import annotations

import re
from typing import Sequence

import torch

from ..core.directions import Direction, apply_to_latent, apply_to_pooled, apply_to_tokens
from ..core.interpolation import interpolate_embeddings
from ..core.noise import noise_travel
from ..core.style import crossfade_segments
from ..core.tokens import tile_tokens

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


def interpolate_conditioning(conditioning_a: list, conditioning_b: list, ts: Sequence[float], method: str,
                             around: list | None = None,
                             names: tuple[str, str, str] = ("conditioning_a", "conditioning_b", "around")) -> list:
    """Prompt travel over CONDITIONING lists: a new list whose entries hold, frame-major, the token-wise path between
    paired entries (and between their pooled outputs when both have one); ``around``'s first entry is the origin.
    Other keys come from ``conditioning_a``'s entry; an attention mask follows its tokens."""
    origin_tokens, origin_extra = around[0] if around else (None, {})
    result = []
    for (tokens_a, extra_a), (tokens_b, extra_b) in pair_entries(conditioning_a, conditioning_b, *names[:2]):
        tokens = interpolate_embeddings(tokens_a, tokens_b, ts, method, origin_tokens, names)
        extra = dict(extra_a)
        pooled_a, pooled_b = extra_a.get("pooled_output"), extra_b.get("pooled_output")
        if pooled_a is not None and pooled_b is not None:
            pooled_names = tuple(f"{name} pooled_output" for name in names)
            extra["pooled_output"] = interpolate_embeddings(pooled_a, pooled_b, ts, method,
                                                            origin_extra.get("pooled_output"), pooled_names)
        mask = extra.get("attention_mask")
        if mask is not None:  # follows the tokens: tiled to their length, repeated for each frame
            mask = tile_tokens(mask, tokens.shape[1], dim=-1)
            extra["attention_mask"] = mask.repeat(tokens.shape[0] // mask.shape[0], *([1] * (mask.ndim - 1)))
        result.append([tokens, extra])
    return result


def conditioning_with_direction(conditioning: list, direction: Direction, strengths: Sequence[float],
                                prompt_tokens_only: bool, auto_scale: bool, name: str = "conditioning") -> list:
    """A new CONDITIONING list with the direction added to every entry at each strength, frame-major (all items at the
    first strength, then at the second, ...): its token-sequence vector to the tokens, its pooled vector to the
    pooled output. Other keys are carried over; an attention mask is repeated with the tokens."""
    if not conditioning:
        raise ValueError(f"{name} is an empty conditioning; expected at least one entry")
    content = direction.content_tokens if prompt_tokens_only else 0
    token_vector, pooled_vector = direction.vectors.get("conditioning"), direction.vectors.get("pooled")
    result = []
    for index, (tokens, extra) in enumerate(conditioning):
        entry_name = name if len(conditioning) == 1 else f"{name} entry {index + 1}"
        frames = []
        for strength in strengths:
            frames.append(tokens if token_vector is None else
                          apply_to_tokens(tokens, token_vector, strength, content, auto_scale, entry_name))
        out = dict(extra)
        pooled = extra.get("pooled_output")
        if pooled_vector is not None:
            if pooled is None:
                raise ValueError(f"{entry_name} has no pooled output but the direction is pooled-only; expected a "
                                 "conditioning from a model with a pooled text embedding (SDXL, SD3, Flux), or a "
                                 "direction made in the token-sequence space")
            out["pooled_output"] = torch.cat([apply_to_pooled(pooled, pooled_vector, strength, auto_scale,
                                                              f"{entry_name} pooled_output") for strength in strengths])
        elif pooled is not None and len(strengths) > 1:
            out["pooled_output"] = pooled.repeat(len(strengths), *([1] * (pooled.ndim - 1)))
        mask = extra.get("attention_mask")
        if mask is not None and len(strengths) > 1:
            out["attention_mask"] = mask.repeat(len(strengths), *([1] * (mask.ndim - 1)))
        result.append([torch.cat(frames), out])
    return result


def latent_with_direction(latent: dict, direction: Direction, strengths: Sequence[float], mask=None) -> dict:
    """A new LATENT dict: the direction added at each strength, frame-major; every frame of an item keeps the item's
    batch index, so a sampler gives all strengths the same noise and only the direction differs."""
    samples = latent["samples"]
    frames = [apply_to_latent(samples, direction.vectors["latent"], strength, mask) for strength in strengths]
    return repeated_latent(latent, torch.cat(frames), len(strengths))


def repeated_latent(latent: dict, samples: torch.Tensor, frames: int) -> dict:
    """``latent_with_frames`` that also gives a latent without batch indices its own (0, 1, ...), so the frames of one
    item share that item's noise."""
    source = latent if "batch_index" in latent else {**latent,
                                                      "batch_index": list(range(latent["samples"].shape[0]))}
    return latent_with_frames(source, samples, frames)


def timestep_mixed_conditioning(structure: list, style: list, cutoff: float, window: float,
                                names: tuple[str, str] = ("structure", "style")) -> list:
    """A new CONDITIONING list that is ``structure`` before ``cutoff`` of the schedule and ``style`` after it, each
    entry limited to the pieces of ``crossfade_segments`` where its source has weight, with that weight as its
    ``strength`` (ComfyUI averages the predictions of entries active together, weighted by strength: a cross-fade).
    An entry's own start/end percent and strength are kept within that: its range is intersected, its strength
    multiplied."""
    for conditioning, name in zip((structure, style), names):
        if not conditioning:
            raise ValueError(f"{name} is an empty conditioning; expected at least one entry")
    result = []
    for start, end, style_weight in crossfade_segments(cutoff, window):
        for conditioning, weight in ((structure, 1.0 - style_weight), (style, style_weight)):
            if weight <= 0:
                continue
            for tokens, extra in conditioning:
                own_start, own_end = extra.get("start_percent", 0.0), extra.get("end_percent", 1.0)
                piece_start, piece_end = max(start, own_start), min(end, own_end)
                if piece_end <= piece_start:
                    continue
                out = dict(extra)
                out.update(start_percent=piece_start, end_percent=piece_end,
                           strength=extra.get("strength", 1.0) * weight)
                result.append([tokens, out])
    return result


def prompt_lines(text: str) -> list[str]:
    """One prompt per line; blank lines are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_channels(text: str, name: str) -> list[int]:
    """Channel indices and ranges, as in '0, 2' or '4-7' (ranges include both ends)."""
    channels = []
    for word in (part.strip() for part in re.split(r"[\s,;]+", text.strip())):
        if not word:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", word)
        if match is None:
            raise ValueError(f"{name} is '{text}'; expected channel numbers or ranges, as in '0, 2' or '4-7'")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"{name}: the range '{word}' runs backwards; expected first-last with first ≤ last")
        channels.extend(range(first, last + 1))
    return sorted(set(channels))


MAX_SEED = 0xFFFFFFFFFFFFFFFF


def parse_seeds(text: str, name: str) -> list[int]:
    """Seeds written as whole numbers separated by commas, semicolons or spaces; empty text gives none."""
    words = [word for word in re.split(r"[\s,;]+", text.strip()) if word]
    try:
        seeds = [int(word) for word in words]
    except ValueError:
        raise ValueError(f"{name} is '{text}'; expected whole numbers separated by commas or spaces") from None
    if any(seed < 0 or seed > MAX_SEED for seed in seeds):
        raise ValueError(f"{name} is '{text}'; expected seeds between 0 and {MAX_SEED}")
    return seeds


class TravelNoise:
    """A NOISE for SamplerCustomAdvanced: the batch travels through the seeds' noises, each frame unit-Gaussian.

    Shape, channels and dimensionality come from the latent the sampler passes in; ``batch_index`` picks frames of the
    whole travel, as ComfyUI's own seeded noise does.
    """

    def __init__(self, seeds: list[int], easing: str):
        self.seeds = seeds
        self.seed = seeds[0]  # ancestral and SDE samplers seed their fresh noise from this
        self.easing = easing

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        index = input_latent.get("batch_index")
        frames = samples.shape[0] if index is None else max(index) + 1
        if frames < len(self.seeds):
            raise ValueError(f"Noise Travel visits {len(self.seeds)} seeds but the latent batch has {frames} "
                             f"frame{'s' if frames > 1 else ''}; expected a batch of at least {len(self.seeds)} "
                             "(one frame per seed): raise the batch size of the sampler's latent")
        return noise_travel(self.seeds, samples.shape[1:], frames, self.easing, index, samples.dtype)


def vae_pictures(vae, samples: torch.Tensor, name: str = "latent") -> torch.Tensor:
    """Raw latents decoded by a ComfyUI VAE to RGB in 0..1, channels first ([B, 3, H, W]; video [B, T, 3, H, W]),
    float32, once the VAE is known to decode their channel count."""
    channels = getattr(vae, "latent_channels", None)
    if samples.ndim < 3 or (channels is not None and samples.shape[1] != channels):
        raise ValueError(f"{name} has shape {tuple(samples.shape)} but vae decodes {channels}-channel latents; "
                         "expected the VAE of the model that made the latents")
    return vae.decode(samples).float().movedim(-1, -3)


def image_channels_first(image: torch.Tensor, name: str) -> torch.Tensor:
    """A ComfyUI IMAGE [B, H, W, C] as RGB [B, 3, H, W] float32 (an alpha channel is dropped)."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{name} has shape {tuple(image.shape)}; expected an IMAGE [batch, height, width, 3]")
    return image[..., :3].movedim(-1, 1).float()
