"""Many prompts through any ComfyUI CLIP in one batched pass, with the numbers ComfyUI gives each prompt alone.

ComfyUI encodes one prompt at a time: ``CLIP.encode_from_tokens`` sets the clip options, loads the model and calls
the family's ``encode_token_weights``, which hands each sub-encoder (clip_l, clip_g, T5, ...) its token sections
through that sub-encoder's ``encode(sections)`` and then applies prompt weights and joins the encoders' outputs.
Here every sub-encoder's ``encode`` is briefly replaced by a memo: its first call runs the transformer once over
every section any of the prompts will ask for (grouped by length, so nothing is padded), and each prompt's calls are
answered from those rows. ComfyUI's own weighting and joining then run unchanged for each prompt. A section the
memo did not foresee is encoded by the real ``encode``, so the results never depend on the foresight.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import NamedTuple

import torch

from ..core.tokens import common_length, tile_tokens

# Token-dict keys in the order their encoders are named; other keys follow in the tokenizer's order.
_KEY_ORDER = ("l", "g")
# Families whose conditioning does not start with the first named encoder's tokens (Flux's is T5's alone;
# clip_l only gives the pooled vector).
_LEADING_KEY = {"flux": "t5xxl"}


class EncodedPrompts(NamedTuple):
    tokens: torch.Tensor  # [N, T, D] float32 conditioning; tiled to a common T where the prompts' lengths differ
    pooled: torch.Tensor | None  # [N, P] float32, None for families without a pooled vector
    content_tokens: list[int]  # per prompt: leading positions its text occupies, start and end tokens included
    lengths: list[int]  # per prompt: its own conditioning length before tiling to T
    family: str  # "sd1", "sdxl", "sd3", "flux": the text-encoder class name lower-cased, less "ClipModel"
    encoder: str  # "clip_l", "clip_l+clip_g", "clip_l+clip_g+t5xxl", "clip_l+t5xxl", ...


def encode_prompts(clip, prompts: list[str]) -> EncodedPrompts:
    """Every prompt encoded as ``clip.encode_from_tokens(clip.tokenize(p))`` would, each sub-encoder run once."""
    if not prompts:
        raise ValueError("prompts is an empty list; expected at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompts[{i}] is a {type(prompt).__name__}; expected a string")
    prompt_tokens = [clip.tokenize(prompt) for prompt in prompts]
    with batched_sub_encoders(clip.cond_stage_model, prompt_tokens):
        outputs = [clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True) for tokens in prompt_tokens]

    conds = [output["cond"] for output in outputs]
    lengths = [cond.shape[1] for cond in conds]
    length = common_length(*lengths)
    tokens = torch.cat([tile_tokens(cond, length) for cond in conds]).float()
    pooled = [output.get("pooled_output") for output in outputs]
    pooled = None if any(p is None for p in pooled) else torch.cat(pooled).float()

    family = family_name(clip.cond_stage_model)
    keys = ordered_keys(prompt_tokens[0])
    leading = _LEADING_KEY.get(family, keys[0])
    content = [content_tokens(clip, prompt, leading) for prompt in prompts]
    return EncodedPrompts(tokens, pooled, content, lengths, family, encoder_name(keys))


def family_name(text_encoder: torch.nn.Module) -> str:
    """SD1ClipModel -> "sd1", SDXLClipModel -> "sdxl", SD3ClipModel_ -> "sd3", FluxClipModel_ -> "flux",
    Omnigen2TEModel_ -> "omnigen2", QwenImageTEModel -> "qwenimage"."""
    name = type(text_encoder).__name__.rstrip("_")
    for suffix in ("ClipModel", "TEModel"):
        if name.endswith(suffix) and name != suffix:
            return name.removesuffix(suffix).lower()
    return name.lower()


def ordered_keys(tokens: dict) -> list[str]:
    return sorted(tokens, key=lambda key: _KEY_ORDER.index(key) if key in _KEY_ORDER else len(_KEY_ORDER))


def encoder_name(keys: list[str]) -> str:
    """Token-dict keys as encoder names: one-letter keys are CLIP towers ("l" -> "clip_l"), others as they are."""
    return "+".join(f"clip_{key}" if len(key) == 1 else key for key in keys)


def content_tokens(clip, prompt: str, key: str) -> int:
    """Leading positions of ``key``'s token sequence up to the prompt's last word and the end token after it."""
    sections = clip.tokenize(prompt, return_word_ids=True)[key]
    word_ids = [entry[2] for section in sections for entry in section]  # 0: start, end or padding
    tokenizer = getattr(clip.tokenizer, key, None) or getattr(clip.tokenizer, f"clip_{key}", None)
    has_start = getattr(tokenizer, "start_token", None) is not None
    has_end = tokenizer is None or getattr(tokenizer, "end_token", None) is not None
    words = [i for i, word in enumerate(word_ids) if word != 0]
    return words[-1] + 1 + has_end if words else has_start + has_end


@contextlib.contextmanager
def batched_sub_encoders(text_encoder: torch.nn.Module, prompt_tokens: list[dict]):
    """Within the block, each sub-encoder's ``encode`` answers the prompts' sections from one batched run.
    Afterwards, error or not, every sub-encoder has its own ``encode`` again."""
    import comfy.sd1_clip

    named = [(name.rpartition(".")[2], module) for name, module in text_encoder.named_modules()
             if isinstance(module, comfy.sd1_clip.ClipTokenWeightEncoder)]
    saved = [(module, module.__dict__.get("encode")) for _, module in named]  # None: no instance attribute
    try:
        for name, module in named:
            module.encode = SectionMemo(module, name, prompt_tokens)
        yield
    finally:
        for module, own in saved:
            if own is None:
                del module.encode  # the class's method shows through again
            else:
                module.encode = own


class SectionMemo:
    """Stands in for one sub-encoder's ``encode(sections)`` while a list of prompts is encoded in order."""

    def __init__(self, module: torch.nn.Module, name: str, prompt_tokens: list[dict]):
        self.module, self.name, self.prompt_tokens = module, name, prompt_tokens
        self.encode = module.encode  # the real one
        self.rows = None  # section key -> that section's slice of every output tensor

    def __call__(self, sections):
        if self.rows is None:  # the first prompt's call: the clip options for this pass are set by now
            self.rows = self.prefetch(sections)
        keys = [section_key(section) for section in sections]
        if any(key not in self.rows for key in keys):
            return self.encode(sections)
        return joined([self.rows[key] for key in keys])

    def prefetch(self, first_call: list) -> dict:
        """Encode every section the prompts will ask for, one run per section length. Which token-dict key feeds
        this sub-encoder is read off the first call: the key whose foreseen sections for the first prompt match
        (where several do, the one named like the sub-encoder: "l" feeds clip_l)."""
        wanted = [section_key(section) for section in first_call]
        feeds = [key for key, sections in self.prompt_tokens[0].items()
                 if None not in wanted and requested_sections(self.module, sections) == wanted]
        if not feeds:
            return {}
        feed = min(feeds, key=lambda key: self.name not in (key, f"clip_{key}"))
        by_length = {}
        for tokens in self.prompt_tokens:
            for key in requested_sections(self.module, tokens.get(feed)) or []:
                if key is not None:
                    by_length.setdefault(len(key), {})[key] = None
        rows = {}
        for group in by_length.values():
            output = self.encode([list(key) for key in group])
            with contextlib.suppress(NotPerSection):
                rows.update(zip(group, split(output, len(group))))
        return rows


def section_key(section) -> tuple[int, ...] | None:
    """A section of plain token ids as a dict key; None for one holding embeddings (never memoised)."""
    if all(isinstance(token, int) or isinstance(token, numbers.Integral) for token in section):  # int: fast path
        return tuple(int(token) for token in section)
    return None


def requested_sections(module, sections) -> list | None:
    """The section keys ComfyUI's ``encode_token_weights`` hands ``module.encode`` for one prompt's
    (token, weight) sections: the sections, then an empty prompt as long as the longest when weights are used
    (or when there are none); None where the sections are not such lists."""
    import comfy.sd1_clip

    if not (isinstance(sections, list) and all(isinstance(section, list) for section in sections)
            and all(isinstance(entry, tuple) and len(entry) >= 2 for section in sections for entry in section)):
        return None
    keys = [section_key([entry[0] for entry in section]) for section in sections]
    weighted = any(entry[1] != 1.0 for section in sections for entry in section)
    if (weighted or not sections) and hasattr(module, "special_tokens"):
        empty = getattr(module, "gen_empty_tokens", comfy.sd1_clip.gen_empty_tokens)
        keys.append(section_key(empty(module.special_tokens, max(map(len, sections), default=0))))
    return keys


class NotPerSection(Exception):
    """An encode output holding something that is not one row per section (left to the real encode)."""


def split(value, count: int) -> list:
    """One encode output (tuples/dicts of [count, ...] tensors and Nones) as ``count`` one-section outputs."""
    if value is None:
        return [None] * count
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == count:
        return list(value.split(1))
    if isinstance(value, (tuple, dict)):
        keys = range(len(value)) if isinstance(value, tuple) else list(value)
        parts = {key: split(value[key], count) for key in keys}
        if isinstance(value, tuple):
            return [tuple(parts[key][i] for key in keys) for i in range(count)]
        return [{key: parts[key][i] for key in keys} for i in range(count)]
    raise NotPerSection(type(value).__name__)


def joined(rows: list):
    """The inverse of ``split``: one output over the rows' sections, in new tensors (ComfyUI weights in place)."""
    first = rows[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(rows)
    if isinstance(first, tuple):
        return tuple(joined([row[i] for row in rows]) for i in range(len(first)))
    return {key: joined([row[key] for row in rows]) for key in first}
