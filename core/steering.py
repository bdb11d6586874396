"""Activation steering: a vector added to the hidden states of chosen transformer blocks while a model runs.

A transformer is a stack of blocks, each adding its work to a residual stream. Adding ``strength · vector`` to the
output of block k (the stream after it, as repeng and llama.cpp do) moves everything computed after that point: a
text encoder's conditioning, or every token a language model writes. Vectors come from contrasting example sets (the
mean hidden state of the positive examples minus that of the negative ones, or the direction their paired differences
share) and travel as ``Direction`` values in ``hidden`` space, their blocks listed in ``Direction.layer``.

Blocks are found, not named: the longest ``ModuleList`` of one block class is the stack (CLIP's encoder layers, T5's
blocks, GPT-2's ``h``, Llama's ``layers``), so every family works without a table of attribute paths. A block's output
is a tensor or a tuple led by one (transformers 4.x returns tuples, 5.x tensors); both are handled.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable, Iterator, Sequence

import torch

from .checks import require_finite
from .optional import require_package

POSITIONS = ("all", "prompt_tokens", "last")
METHODS = ("mean_difference", "pca_diff")
# A mask source answers, for the block output at hand, which positions to steer ([batch, tokens], or None: all).
MaskSource = Callable[[torch.Tensor], "torch.Tensor | None"]


def transformer_blocks(model: torch.nn.Module, name: str = "model",
                       embedding: torch.nn.Module | None = None) -> tuple[str, torch.nn.ModuleList]:
    """The model's stack of transformer blocks and its path: the longest ``ModuleList`` whose entries share one
    class (the first such list where two are as long). With ``embedding`` (the model's input-embedding module) the
    stack is the one in the smallest module around the embedding that holds one, so a vision tower beside the
    language model (Qwen-Image's text encoder has 32 vision blocks to the language model's 28) is not taken for it.
    A block already wrapped by ``SteeredBlock`` counts as the block it wraps, so a steered model can be steered
    again."""
    scopes = [""]
    if embedding is not None:
        path = next((path for path, module in model.named_modules() if module is embedding), None)
        if path is not None:
            parts = path.split(".")
            scopes = [".".join(parts[:end]) for end in range(len(parts) - 1, -1, -1)]  # the parent first
    for scope in scopes:
        found = None
        for path, module in model.get_submodule(scope).named_modules(prefix=scope):
            if isinstance(module, torch.nn.ModuleList) and len(module) and len({_block_class(m) for m in module}) == 1:
                if found is None or len(module) > len(found[1]):
                    found = (path, module)
        if found is not None:
            return found
    raise ValueError(f"{name} ({type(model).__name__}) has no stack of transformer blocks; expected a "
                     "transformer (a text encoder or a language model)")


def _block_class(module: torch.nn.Module) -> type:
    while isinstance(module, SteeredBlock):
        module = module.block
    return type(module)


def default_block(count: int) -> int:
    """The block steered when none is named: a third of the way up, counting from 0 (on the reference models early
    blocks steer what the text means while later ones barely move it or break it; ActAdd's default is about 20 %
    of the depth)."""
    return (count - 1) // 3


def recorded_blocks(layer: str, name: str = "the direction") -> list[int]:
    """The blocks ``Direction.layer`` lists (0-based, comma-separated; empty: none)."""
    items = [item.strip() for item in layer.split(",") if item.strip()]
    if not all(item.isdigit() for item in items):
        raise ValueError(f"{name} records the blocks '{layer}'; expected 0-based block numbers like 1,2,3")
    return [int(item) for item in items]


_LAYER = re.compile(r"^-?\d+$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_layers(spec: str, count: int, name: str = "layers", owner: str = "this model") -> list[int]:
    """Block indices from text: "3", "2-4", "1, 3, 5", "-1" (counted from the end); sorted, each once. ``owner``
    names the model in messages."""
    layers = set()
    for item in (part.strip() for part in spec.split(",")):
        if _LAYER.match(item):
            index = int(item)
            if not -count <= index < count:
                raise ValueError(f"{name} names block {index}, but {owner} has {count} blocks (0 to {count - 1}, "
                                 f"or -1 to -{count} from the end)")
            layers.add(index % count)
        elif _RANGE.match(item):
            first, last = map(int, _RANGE.match(item).groups())
            if first > last or last >= count:
                raise ValueError(f"{name} has the range {item}, but {owner} has {count} blocks (0 to {count - 1}); "
                                 "expected first-last with first ≤ last")
            layers.update(range(first, last + 1))
        else:
            raise ValueError(f"{name} is '{spec}'; expected block numbers like 3, 2-4 or 1,3,5 (-1 is the last block)")
    return sorted(layers)


def format_layers(layers: Sequence[int]) -> str:
    return ",".join(str(layer) for layer in layers)


def layer_vectors(hidden: torch.Tensor, direction_layer: str, wanted: Sequence[int] | None,
                  count: int | None = None, owner: str = "this model", name: str = "layers") -> dict[int, torch.Tensor]:
    """Block -> vector for a ``hidden`` direction ([width]: one vector for any block; [blocks, width]: one per block
    its ``Direction.layer`` lists) at the ``wanted`` blocks (None: the direction's own), on a model of ``count``
    blocks (``owner`` in messages; None: no model to fit)."""
    direction_layers = recorded_blocks(direction_layer)
    if hidden.ndim == 1:
        if not wanted and not direction_layers:
            raise ValueError(f"the direction records no blocks; set {name} to the blocks to steer")
        vectors = {layer: hidden for layer in (wanted or direction_layers)}
    else:
        own = dict(zip(direction_layers, hidden))
        if len(own) != hidden.shape[0]:
            raise ValueError(f"the direction holds {hidden.shape[0]} vectors but records the blocks "
                             f"{format_layers(direction_layers) or '(none)'}; expected one block per vector")
        missing = [layer for layer in (wanted or ()) if layer not in own]
        if missing:
            raise ValueError(f"{name} asks for block {format_layers(missing)}, but the direction has vectors for "
                             f"blocks {format_layers(own)} only; leave {name} empty to use the direction's own blocks")
        vectors = {layer: own[layer] for layer in (wanted or own)}
    beyond = [layer for layer in vectors if count is not None and layer >= count]
    if beyond:
        raise ValueError(f"direction has vectors for block {format_layers(beyond)}, but {owner} has {count} blocks "
                         f"(0 to {count - 1}); expected a direction made for it, or {name} set to blocks it has")
    return vectors


def block_output(output) -> torch.Tensor:
    """The hidden states a block returned (a tensor, or the first entry of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def with_block_output(output, hidden: torch.Tensor):
    """``output`` with its hidden states replaced, in the same structure."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def steer_hidden(hidden: torch.Tensor, vector: torch.Tensor, strength: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """``hidden + strength · vector`` at every position, or where ``mask`` [batch, tokens] is true; a new tensor."""
    delta = (strength * vector.float()).to(device=hidden.device, dtype=hidden.dtype)
    if mask is None:
        return hidden + delta
    return hidden + mask.to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1) * delta


class SteeredBlock(torch.nn.Module):
    """A block that runs as before, then adds ``strength · vector`` to its output (at the positions ``mask_source``
    picks): swapped in for the original by a model patch, so only the patched model is steered."""

    def __init__(self, block: torch.nn.Module, vector: torch.Tensor, strength: float,
                 mask_source: MaskSource | None = None):
        super().__init__()
        self.block = block
        self.vector = vector.detach().float()  # not a buffer: it must not join the model's state dict
        self.strength = strength
        self.mask_source = mask_source

    def forward(self, *args, **kwargs):
        output = self.block(*args, **kwargs)
        hidden = block_output(output)
        mask = self.mask_source(hidden) if self.mask_source is not None else None
        return with_block_output(output, steer_hidden(hidden, self.vector, self.strength, mask))


@contextlib.contextmanager
def steering(blocks: torch.nn.ModuleList, vectors: dict[int, torch.Tensor], strength: float,
             mask: torch.Tensor | None = None) -> Iterator[None]:
    """Within the block, block k's output gains ``strength · vectors[k]`` (where ``mask`` is true); the hooks are
    gone afterwards, error or not. For models the caller owns (an engine model, a language model being sampled)."""
    def hook(vector):
        return lambda module, args, output: with_block_output(
            output, steer_hidden(block_output(output), vector, strength, mask))

    handles = []
    try:
        for layer, vector in vectors.items():
            handles.append(blocks[layer].register_forward_hook(hook(vector)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def hidden_states(run: Callable[[], object], blocks: torch.nn.ModuleList, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """The outputs of the ``layers`` blocks (float32) while ``run()`` runs the model once."""
    captured = {}

    def hook(layer):
        def record(module, args, output):
            captured[layer] = block_output(output).detach().float().clone()  # later blocks add to it in place
        return record

    handles = [blocks[layer].register_forward_hook(hook(layer)) for layer in layers]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def position_mask(token_ids: torch.Tensor, positions: str, end_token: int | None = None,
                  pad_token: int | None = None) -> torch.Tensor | None:
    """Which positions of ``token_ids`` [batch, tokens] to steer: all (None), the prompt's tokens (up to and
    including the first end token; without one, every token that is not padding), or only the prompt's last token."""
    if positions not in POSITIONS:
        raise ValueError(f"token_positions is '{positions}'; expected one of {', '.join(POSITIONS)}")
    if positions == "all":
        return None
    index = torch.arange(token_ids.shape[1], device=token_ids.device).expand_as(token_ids)
    if end_token is not None:
        is_end = token_ids == end_token
        # first end token per row; a row without one ends at its last position
        last = torch.where(is_end.any(1), is_end.int().argmax(1), torch.full_like(is_end[:, 0], token_ids.shape[1] - 1,
                                                                                  dtype=torch.long))
    elif pad_token is not None:
        real = token_ids != pad_token
        last = torch.where(real.any(1), (real.int() * index).argmax(1), torch.zeros_like(real[:, 0], dtype=torch.long))
    else:
        last = torch.full((token_ids.shape[0],), token_ids.shape[1] - 1, device=token_ids.device)
    last = last.unsqueeze(1)
    return index <= last if positions == "prompt_tokens" else index == last


def pooled_states(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each item's mean hidden state [batch, width] over its positions (where ``mask`` is true)."""
    if mask is None:
        return hidden.float().mean(1)
    weights = mask.float().unsqueeze(-1)
    return (hidden.float() * weights).sum(1) / weights.sum(1).clamp_min(1)


def steering_vector(positive: torch.Tensor, negative: torch.Tensor, method: str = "mean_difference") -> torch.Tensor:
    """A vector [width] from the pooled hidden states of positive [N, width] and negative [M, width] examples.

    mean_difference: mean(positive) − mean(negative). pca_diff: the i-th positive is paired with the i-th negative
    and the vector is the direction their differences share most (their first right singular vector, uncentred, so
    the common move itself is kept; repeng centres it away), signed to point from negative to positive and scaled to
    the pairs' mean move along it, so strength 1 means the same in both methods."""
    if method not in METHODS:
        raise ValueError(f"method is '{method}'; expected one of {', '.join(METHODS)}")
    for states, name in ((positive, "positive"), (negative, "negative")):
        if states.ndim != 2 or states.shape[0] == 0:
            raise ValueError(f"{name} holds {tuple(states.shape)} states; expected at least one example")
        require_finite(states, f"the hidden states of the {name} examples")
    if method == "mean_difference":
        vector = positive.float().mean(0) - negative.float().mean(0)
    else:
        if positive.shape[0] != negative.shape[0]:
            raise ValueError(f"pca_diff pairs the i-th positive example with the i-th negative one, but there are "
                             f"{positive.shape[0]} positive and {negative.shape[0]} negative examples; expected as many "
                             "of each (or use mean_difference)")
        differences = positive.double() - negative.double()
        _, _, basis = torch.linalg.svd(differences, full_matrices=False)
        unit = basis[0]
        along = differences @ unit
        if along.mean() < 0:
            unit, along = -unit, -along
        vector = (unit * along.mean()).float()
    if not vector.any():
        raise ValueError("the positive and negative examples have the same hidden states, so the vector is zero; "
                         "expected examples that differ")
    return vector


# ---- causal language models ---------------------------------------------------------------------------------------

def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    """The prompt's token ids [1, tokens] as the model continues it: the tokenizer's start token kept, a trailing end
    token dropped (some tokenizers append one); an empty prompt starts from the start token alone."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids[0].tolist()
    if ids and tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id and len(ids) > 1:
        ids = ids[:-1]
    if not ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ValueError("prompt is empty and this tokenizer has no start token to begin from; expected a prompt")
        ids = [start]
    return torch.tensor([ids])


def example_states(model: torch.nn.Module, tokenizer, texts: Sequence[str], blocks: torch.nn.ModuleList,
                   layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Block -> [texts, width]: each text's mean hidden state over its tokens at those blocks, one text at a time
    (no padding to get wrong)."""
    device = next(model.parameters()).device
    rows = {layer: [] for layer in layers}
    for text in texts:
        ids = prompt_ids(tokenizer, text).to(device)
        states = hidden_states(lambda: model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False),
                               blocks, layers)
        for layer in layers:
            rows[layer].append(pooled_states(states[layer])[0])
    return {layer: torch.stack(states) for layer, states in rows.items()}


def generate_text(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                  top_p: float, seed: int, count: int = 1, on_token: Callable[[int], None] | None = None,
                  include_prompt: bool = False) -> list[str]:
    """``count`` continuations of ``prompt`` (only the new text, or the prompt and its continuation decoded together
    with ``include_prompt``), with the KV cache. Temperature 0 is greedy;
    otherwise sampling at ``temperature`` within the ``top_p`` nucleus, from a private generator seeded by ``seed``
    (the global one is left as it was). ``on_token(n)`` is called after each new token and may raise to stop."""
    transformers = require_package("transformers", "transformers", "language-model generation")

    class EachToken(transformers.StoppingCriteria):
        def __init__(self):
            self.count = 0

        def __call__(self, input_ids, scores, **kwargs):
            self.count += 1
            if on_token is not None:
                on_token(self.count)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    device = next(model.parameters()).device
    ids = prompt_ids(tokenizer, prompt).to(device).expand(count, -1)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
        dict(do_sample=False)
    end = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, use_cache=True,
                             eos_token_id=end, pad_token_id=pad, stopping_criteria=[EachToken()], **sampling)
    start = 0 if include_prompt else ids.shape[1]
    return [text.strip() for text in tokenizer.batch_decode(out[:, start:], skip_special_tokens=True)]
