"""Node-side plumbing in plain Python, so CI tests it without ComfyUI: new LATENT dicts and CONDITIONING lists built
without touching the inputs, the NOISE object seed travel hands to samplers, and parsing of text inputs."""

from __future__ import annotations

import re
from typing import Sequence

import torch

from ..core.interpolation import interpolate_embeddings
from ..core.noise import noise_travel
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
