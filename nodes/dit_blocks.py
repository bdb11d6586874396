"""Per-block style mixing on DiT models: Flux (``double_<i>`` and ``single_<i>`` blocks) and SD3 (``joint_<i>``).

A DiT has no cross-attention to hand another prompt to: its text tokens are a stream of their own that every block
updates together with the picture's. So the style prompt gets a stream too: from the first block on, each block also
runs on the style prompt's stream beside the picture (one batched call), and a chosen block reads its text from that
stream instead of the prompt's, by its weight. That costs one more text-and-picture pass per block up to the last
chosen one, for the positive passes only, inside the schedule window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.tokens import tile_tokens
from .schedule_window import active


@dataclass(frozen=True)
class DitBlock:
    name: str  # "double_3"
    key: tuple[str, int]  # ("double_block", 3), as ComfyUI's patches_replace["dit"]
    depth: int  # position in the order the model runs its blocks


def dit_blocks(diffusion_model: torch.nn.Module) -> list[DitBlock] | None:
    """The blocks of a Flux or SD3 model in the order they run; None for any other model."""
    if all(hasattr(diffusion_model, part) for part in ("double_blocks", "single_blocks", "txt_in")):
        double = [DitBlock(f"double_{i}", ("double_block", i), i) for i in range(len(diffusion_model.double_blocks))]
        return double + [DitBlock(f"single_{i}", ("single_block", i), len(double) + i)
                         for i in range(len(diffusion_model.single_blocks))]
    if all(hasattr(diffusion_model, part) for part in ("joint_blocks", "context_embedder")):
        # The last joint block updates only the picture: its text is never read again.
        return [DitBlock(f"joint_{i}", ("double_block", i), i) for i in range(len(diffusion_model.joint_blocks) - 1)]
    return None


def dit_preset_blocks(blocks: list[DitBlock], preset: str) -> list[str]:
    """Presets by depth (DiT blocks all work at one resolution): composition the first third, style the last third
    of the text-and-picture (double/joint) blocks, coarse the first half of all blocks, fine the second half."""
    paired = [block for block in blocks if not block.name.startswith("single")]
    third = max(len(paired) // 3, 1)
    if preset == "composition":
        return [block.name for block in paired[:third]]
    if preset == "style":
        return [block.name for block in paired[-third:]]
    if preset == "coarse":
        return [block.name for block in blocks[:max(len(blocks) // 2, 1)]]
    if preset == "fine":
        return [block.name for block in blocks[len(blocks) // 2:]]
    raise ValueError(f"blocks is '{preset}'; expected one of style, composition, coarse, fine or custom")


def require_text_width(tokens: torch.Tensor, diffusion_model: torch.nn.Module, name: str = "style") -> None:
    """The style conditioning must come from the model's own text encoder: as wide as the tokens the model reads."""
    if hasattr(diffusion_model, "txt_in"):
        width = diffusion_model.txt_in.in_features
    elif hasattr(diffusion_model, "context_embedder") and getattr(diffusion_model, "context_processor", None) is None:
        width = diffusion_model.context_embedder.in_features
    else:
        width = next((module.attn2.to_k.in_features for module in diffusion_model.modules()
                      if getattr(module, "attn2", None) is not None), None)
    if width is not None and tokens.shape[-1] != width:
        raise ValueError(f"{name} holds {tokens.shape[-1]}-wide tokens but the model reads {width}-wide ones; "
                         "expected a conditioning made by this model's own text encoder")


class StyleStream:
    """The style prompt's text stream during one model call, shared by the patches of every block up to the last
    chosen one."""

    def __init__(self, diffusion_model: torch.nn.Module, style_tokens: torch.Tensor, window: tuple[float, float]):
        self.flux = hasattr(diffusion_model, "txt_in")
        self.embed = diffusion_model.txt_in if self.flux else diffusion_model.context_embedder
        self.processor = None if self.flux else diffusion_model.context_processor
        self.registers = None if self.flux or diffusion_model.register_length == 0 else diffusion_model.register
        self.style_tokens = style_tokens
        self.window = window
        self.tokens = None  # [positive items, T, D] while a call runs

    def start(self, text: torch.Tensor, positive: torch.Tensor) -> None:
        """The stream at the first block, as the model builds its own from the prompt's tokens, as long as ``text``."""
        registers = 0 if self.registers is None else self.registers.shape[1]
        tokens = self.style_tokens.to(text)
        if self.processor is not None:
            tokens = self.processor(tokens)
        tokens = self.embed(tile_tokens(tokens, text.shape[1] - registers))
        if self.registers is not None:
            tokens = torch.cat([self.registers.to(tokens), tokens], dim=1)
        self.tokens = tokens.expand(int(positive.sum()), -1, -1)


def _positive_rows(args: dict, batch: int) -> torch.Tensor:
    chunks = args["transformer_options"]["cond_or_uncond"]
    return torch.tensor([kind == 0 for kind in chunks for _ in range(batch // len(chunks))])


def _stacked(value, rows: torch.Tensor):
    """``value`` followed by its positive rows along the batch (a batch of 1 or None is shared as it is)."""
    if value is None or value.shape[0] == 1:
        return value
    return torch.cat([value, value[rows.to(value.device)]])


class StyleStreamBlock:
    """The replacement of one block (``patches_replace["dit"][key]``): runs the block on the prompt's text and, in
    the same call, on the style stream, then passes the prompt's text on, moved towards the style stream by
    ``weight`` where the block is chosen (0: only carries the stream along)."""

    def __init__(self, stream: StyleStream, first: bool, single: bool, weight: float):
        self.stream, self.first, self.single, self.weight = stream, first, single, weight

    def __call__(self, args: dict, extra: dict) -> dict:
        block = extra["original_block"]
        options = args["transformer_options"]
        if not active(options, self.stream.window):
            return block(args)
        picture = args["img"]
        rows = _positive_rows(args, picture.shape[0])
        if self.single:
            length = self.stream.tokens.shape[1]
            text, picture = picture[:, :length], picture[:, length:]
        else:
            text = args["txt"]
        if self.first:
            self.stream.start(text, rows)
        style = self.stream.tokens
        if self.weight:
            mixed = text.clone()
            mixed[rows.to(text.device)] = torch.lerp(text[rows.to(text.device)], style, self.weight)
            text = mixed
        picture_both = torch.cat([picture, picture[rows.to(picture.device)]])
        text_both = torch.cat([text, style])
        run = {**args, "vec": _stacked(args["vec"], rows)}
        for key in ("pe", "attn_mask"):
            if key in args:
                run[key] = _stacked(args[key], rows)
        batch = picture.shape[0]
        if self.single:
            out = block({**run, "img": torch.cat([text_both, picture_both], dim=1)})["img"]
            self.stream.tokens = out[batch:, :style.shape[1]]
            return {"img": out[:batch]}
        out = block({**run, "img": picture_both, "txt": text_both})
        self.stream.tokens = None if out["txt"] is None else out["txt"][batch:]
        return {"img": out["img"][:batch], "txt": None if out["txt"] is None else out["txt"][:batch]}


def patch_dit(model_patcher, blocks: list[DitBlock], weights: dict[str, float], style_tokens: torch.Tensor,
              window: tuple[float, float]) -> None:
    """Registers the style stream on ``model_patcher`` (a clone): every block from the first to the last chosen."""
    last = max(block.depth for block in blocks if block.name in weights)
    stream = StyleStream(model_patcher.get_model_object("diffusion_model"), style_tokens, window)
    for block in blocks[:last + 1]:
        step = StyleStreamBlock(stream, block.depth == 0, block.name.startswith("single"), weights.get(block.name, 0.0))
        model_patcher.set_model_patch_replace(step, "dit", *block.key)
