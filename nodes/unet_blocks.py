"""The attention blocks of a ComfyUI UNet (SD1.5, SDXL, the reference family) as users name them, the block presets,
and the attention patches of the style nodes. Blocks are named as ComfyUI's patches see them: ``input_4`` is
``diffusion_model.input_blocks[4]``, ``middle_0`` the middle block, ``output_1`` ``output_blocks[1]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from comfy.ldm.modules.attention import optimized_attention, optimized_attention_masked

from ..core.style import shared_attention
from ..core.tokens import common_length, tile_tokens
from .schedule_window import active

PRESETS = ("style", "composition", "coarse", "fine")
PRESET_TIPS = {
    "style": "the middle attention block of the first (lowest-resolution) up level with attention: InstantStyle's "
             "style block (SDXL output_1, SD1.5 output_4)",
    "composition": "the last attention block of the down path: InstantStyle's layout block (SDXL and SD1.5 input_8)",
    "coarse": "the attention blocks of the lowest-resolution down and up levels with attention, and the middle block "
              "(layout, what is where)",
    "fine": "every attention block at the highest resolution (texture, edges, colour detail)",
}


@dataclass(frozen=True)
class AttentionBlock:
    name: str  # "input_4"
    key: tuple[str, int]  # ("input", 4), as ComfyUI's transformer_options["block"]
    level: int  # how many times the resolution has been halved


def is_unet(diffusion_model: torch.nn.Module) -> bool:
    return all(hasattr(diffusion_model, part) for part in ("input_blocks", "middle_block", "output_blocks"))


def attention_blocks(diffusion_model: torch.nn.Module, input_name: str = "model") -> list[AttentionBlock]:
    """Every block of the UNet that holds a SpatialTransformer, in the order the UNet runs them."""
    if not is_unet(diffusion_model):
        raise ValueError(f"{input_name} is a {type(diffusion_model).__name__}; expected a UNet model (SD1.5, SDXL, "
                         "the reference family)")
    blocks, level = [], 0

    def kinds(block):
        return {type(module).__name__ for module in block.modules()}

    for number, block in enumerate(diffusion_model.input_blocks):
        found = kinds(block)
        if "Downsample" in found:
            level += 1
        if "SpatialTransformer" in found:
            blocks.append(AttentionBlock(f"input_{number}", ("input", number), level))
    if "SpatialTransformer" in kinds(diffusion_model.middle_block):
        blocks.append(AttentionBlock("middle_0", ("middle", 0), level))
    for number, block in enumerate(diffusion_model.output_blocks):
        found = kinds(block)
        if "SpatialTransformer" in found:
            blocks.append(AttentionBlock(f"output_{number}", ("output", number), level))
        if "Upsample" in found:  # the upsample ends its block: the next block is one level up
            level -= 1
    if not blocks:
        raise ValueError(f"{input_name} has no attention blocks; expected a UNet with cross-attention")
    return blocks


def preset_blocks(blocks: list[AttentionBlock], preset: str) -> list[str]:
    """The block names of ``preset`` on this UNet (see PRESET_TIPS)."""
    paths = [block for block in blocks if block.key[0] != "middle"] or blocks
    deepest = max(block.level for block in paths)
    shallowest = min(block.level for block in blocks)
    if preset == "coarse":
        return [block.name for block in blocks if block.level >= deepest]
    if preset == "fine":
        return [block.name for block in blocks if block.level == shallowest]
    if preset == "composition":
        return [[block.name for block in blocks if block.key[0] == "input"][-1]]
    if preset == "style":
        outputs = [block for block in blocks if block.key[0] == "output"]
        first_level = [block for block in outputs if block.level == outputs[0].level]
        return [first_level[len(first_level) // 2].name]
    raise ValueError(f"blocks is '{preset}'; expected one of {', '.join(PRESETS)} or custom")


def parse_block_weights(text: str, blocks: list, default: float,
                        name: str = "block_weights") -> dict[str, float]:
    """``"input_8, output_1:0.5"``: block names (each at ``default``) or ``name:weight``, separated by commas,
    semicolons or new lines; ``all`` stands for every block. Unknown names and weights that are not numbers are
    errors that list what this UNet has."""
    known = [block.name for block in blocks]
    weights = {}
    for item in (part.strip() for part in re.split(r"[,;\n]+", text)):
        if not item:
            continue
        block, _, value = (part.strip() for part in item.partition(":"))
        try:
            weight = float(value) if value else default
        except ValueError:
            raise ValueError(f"{name}: '{item}' has weight '{value}'; expected a number, as in output_1:0.5") from None
        targets = known if block == "all" else [block]
        if block != "all" and block not in known:
            raise ValueError(f"{name}: '{block}' is not a block of this model; expected one of "
                             f"{', '.join(known)} (or all)")
        weights.update({target: weight for target in targets})
    return weights


class CrossAttentionMix:
    """attn2 patch: in the chosen blocks, the positive passes' text tokens move towards ``style_tokens`` [1, T, D]
    by each block's weight (1: the style prompt alone), inside the schedule window."""

    def __init__(self, style_tokens: torch.Tensor, weights: dict[tuple[str, int], float],
                 window: tuple[float, float]):
        self.style_tokens = style_tokens
        self.weights = weights
        self.window = window

    def __call__(self, n, context, value, extra_options):
        weight = self.weights.get(tuple(extra_options.get("block") or ()), 0.0)
        if weight == 0.0 or not active(extra_options, self.window):
            return n, context, value
        return n, self._mixed(context, extra_options, weight), self._mixed(value, extra_options, weight)

    def _mixed(self, tokens: torch.Tensor, extra_options: dict, weight: float) -> torch.Tensor:
        chunks = extra_options["cond_or_uncond"]
        per_chunk = tokens.shape[0] // len(chunks)
        style = self.style_tokens.to(tokens)
        length = common_length(tokens.shape[1], style.shape[1])
        tokens, style = tile_tokens(tokens, length), tile_tokens(style, length)
        positive = torch.tensor([kind == 0 for kind in chunks for _ in range(per_chunk)], device=tokens.device)
        mixed = torch.lerp(tokens, style.expand_as(tokens), weight)
        return torch.where(positive[:, None, None], mixed, tokens)


class SharedSelfAttention:
    """attn1 replacement: StyleAligned's shared attention (core.style.shared_attention) inside the schedule window,
    the block's plain attention outside it."""

    def __init__(self, window: tuple[float, float], normalise: bool, strength: float):
        self.window = window
        self.normalise = normalise
        self.strength = strength

    def __call__(self, q, k, v, extra_options):
        heads, precision = extra_options["n_heads"], extra_options.get("attn_precision")
        if not active(extra_options, self.window):
            return optimized_attention(q, k, v, heads, attn_precision=precision)
        q, k, v, bias = shared_attention(q, k, v, len(extra_options["cond_or_uncond"]), self.normalise, self.strength)
        if bias is None:
            return optimized_attention(q, k, v, heads, attn_precision=precision)
        return optimized_attention_masked(q, k, v, heads, bias, attn_precision=precision)
