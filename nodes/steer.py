"""Steering nodes for ComfyUI CLIPs: a steering vector from contrasting prompts, and a CLIP whose text encoder adds
it to the output of chosen transformer blocks while it encodes.

A ComfyUI CLIP holds one or more sub-encoders (``comfy.sd1_clip.SDClipModel``: clip_l, clip_g, t5xxl, ...). Steering
is a per-clone object patch (contract §6.1(b)): the clone's patcher swaps a steering wrapper in for each chosen
block when that clone is loaded and the original back when another clone of the CLIP loads, so the CLIP the node was
given, and every other clone of it, encodes as before. Which token positions to steer is read from the token ids the
sub-encoder really sees: a recorder object-patched over its input-embedding module keeps the ids of each call
(ComfyUI embeds each token row with one call just before the transformer runs).
"""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..core import directions, steering
from ..core.directions import Direction
from .clip_encoding import family_name
from .common import CATEGORY, prompt_lines
from .compat import log
from .directions import DIRECTION, chosen_templates, template_inputs

FAMILY = f"{CATEGORY}/steer"
AUTO = "auto"
POSITIONS_TIP = ("Which token positions of the steered blocks get the vector. all: every position, padding included "
                 "(padding carries the prompt's summary, so this steers hardest); prompt_tokens: the prompt's own "
                 "tokens, from the start token up to and including its end token; last: only the end token (the "
                 "one a CLIP's pooled output is read from)")


# ---- ComfyUI CLIPs: sub-encoders and their blocks -------------------------------------------------------------------

def sub_encoders(clip) -> dict[str, tuple[str, torch.nn.Module]]:
    """Sub-encoder name (clip_l, clip_g, t5xxl, ...) -> (its path inside ``clip.cond_stage_model``, the module)."""
    import comfy.sd1_clip

    return {path.rpartition(".")[2]: (path, module) for path, module in clip.cond_stage_model.named_modules()
            if isinstance(module, comfy.sd1_clip.SDClipModel)}


def choose_encoder(clip, name: str) -> tuple[str, str, torch.nn.Module]:
    """(name, path, module) of the sub-encoder called ``name``; "auto": the one with the most parameters (on a tie
    the one named last: clip_g after clip_l)."""
    found = sub_encoders(clip)
    if not found:
        raise ValueError(f"clip ({type(clip.cond_stage_model).__name__}) has no CLIP or T5 text encoder to steer; "
                         "expected the CLIP of an SD1.x, SD2.x, SDXL, SD3 or Flux model")
    name = name.strip()
    if name == AUTO:
        order = list(found)
        name = max(order, key=lambda key: (sum(p.numel() for p in found[key][1].parameters()), order.index(key)))
    if name not in found:
        raise ValueError(f"encoder is '{name}', but this clip has the text encoders {', '.join(found)}; expected "
                         f"one of them (or {AUTO})")
    return (name, *found[name])


def encoder_blocks(sub_encoder: torch.nn.Module, name: str) -> tuple[str, torch.nn.ModuleList]:
    """The path (inside the sub-encoder's transformer) and the stack of its text blocks, found from its input
    embedding, so a vision tower beside them (Qwen-Image) is not taken for them."""
    transformer = sub_encoder.transformer
    return steering.transformer_blocks(transformer, name, transformer.get_input_embeddings())


def encoder_width(sub_encoder: torch.nn.Module) -> int:
    return sub_encoder.transformer.get_input_embeddings().weight.shape[-1]


def end_and_pad(sub_encoder: torch.nn.Module) -> tuple[int | None, int | None]:
    tokens = sub_encoder.special_tokens
    return tokens.get("end"), tokens.get("pad")


def module_path(root: torch.nn.Module, target: torch.nn.Module, what: str) -> str:
    for path, module in root.named_modules():
        if module is target:
            return path
    raise ValueError(f"clip's {what} is not inside its text encoder; this text encoder cannot be steered by token "
                     "position (use token_positions all)")


def restored(clip):
    """The CLIP's modules as its own patcher has them (another clone of it, a steered CLIP, may be loaded with its
    wrappers in place; loading this one swaps them): hooks put on its blocks then sit on the modules it runs."""
    clip.load_model()
    return clip


# ---- which positions to steer ---------------------------------------------------------------------------------------

class TokenRecorder(torch.nn.Module):
    """Stands in for a sub-encoder's input-embedding module: embeds as before and hands the token ids of each call
    to ``on_ids``."""

    def __init__(self, embedding: torch.nn.Module, on_ids):
        super().__init__()
        self.embedding = embedding
        self.on_ids = on_ids

    @property
    def weight(self) -> torch.Tensor:  # ComfyUI reads the embedding's weight for the device to embed on
        return self.embedding.weight

    def forward(self, ids, *args, **kwargs):
        self.on_ids(ids)
        return self.embedding(ids, *args, **kwargs)


class RecordedPositions:
    """A steering mask source: the positions to steer in the hidden states of one forward, from the token rows the
    recorder saw before it. Every steered block of that forward reads the same rows; the next embedding call after
    a forward used them starts a new list. Rows that do not line up with the hidden states (a textual-inversion
    embedding adds vectors without token ids) fall back to steering every position, with one warning."""

    def __init__(self, positions: str, end_token: int | None, pad_token: int | None, encoder: str):
        self.positions, self.end_token, self.pad_token, self.encoder = positions, end_token, pad_token, encoder
        self.rows: list[torch.Tensor] = []
        self.used = False
        self.warned = False

    def record(self, ids: torch.Tensor) -> None:
        if self.used:
            self.rows, self.used = [], False
        self.rows.append(ids.detach().reshape(-1, ids.shape[-1]))

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor | None:
        self.used = True
        if (self.rows and all(row.shape[1] == hidden.shape[1] for row in self.rows)
                and sum(row.shape[0] for row in self.rows) == hidden.shape[0]):
            ids = torch.cat(self.rows).to(hidden.device)
            return steering.position_mask(ids, self.positions, self.end_token, self.pad_token)
        if not self.warned:
            self.warned = True
            log.warning("Text Steer: the %s tokens do not line up with its hidden states (a textual-inversion "
                        "embedding in the prompt?); token_positions %s falls back to all positions",
                        self.encoder, self.positions)
        return None


def recording_clone(clip, sub_path: str, sub_encoder: torch.nn.Module, on_ids):
    """A clone of ``clip`` whose sub-encoder hands the token ids of each embedding call to ``on_ids``."""
    embedding = sub_encoder.transformer.get_input_embeddings()
    path = module_path(clip.cond_stage_model, embedding, f"{sub_path} input embedding")
    clone = clip.clone()
    clone.patcher.add_object_patch(path, TokenRecorder(clip.patcher.get_model_object(path), on_ids))
    return clone


def method_input(example: str, note: str = "") -> io.Combo.Input:
    """How a steering vector is made from positive and negative examples (prompts, texts)."""
    return io.Combo.Input("method", options=list(steering.METHODS), default="mean_difference",
                          tooltip=f"mean_difference: the mean state of the positive {example}s minus that of the "
                                  f"negative ones; pca_diff: pairs the i-th positive {example} with the i-th negative "
                                  f"one (as many of each) and takes the direction their differences share{note}")


# ---- the nodes ------------------------------------------------------------------------------------------------------

def _require_clip(clip) -> None:
    if clip is None:
        raise ValueError("clip is empty (the checkpoint loaded has no text encoder); expected a CLIP")


def _summary(direction: Direction, count: int) -> str:
    hidden = direction.vectors["hidden"]
    norms = ", ".join(f"{float(norm):.4g}" for norm in hidden.reshape(-1, hidden.shape[-1]).norm(dim=-1))
    return (f"{direction.describe('hidden')} at block {direction.layer} of {count} (0 to {count - 1}); "
            f"norm {norms}")


class SteerVectorFromPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_SteerVectorFromPrompts",
            display_name="Steer Vector from Prompts (LSC)",
            category=FAMILY,
            description="A steering vector for Text Steer: the hidden states one text encoder's transformer blocks "
                        "produce for the positive prompts, minus those for the negative prompts (each prompt averaged "
                        "over its own tokens). Text Steer adds it inside the encoder, so every prompt encoded with "
                        "the steered CLIP moves towards the positive prompts.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model you will steer"),
                io.String.Input("positive", multiline=True, default="red",
                                tooltip="What to steer towards: one prompt or word per line"),
                io.String.Input("negative", multiline=True, default="blue",
                                tooltip="What to steer away from: one prompt or word per line"),
                *template_inputs("vector"),
                io.String.Input("encoder", default=AUTO,
                                tooltip="Which text encoder of the CLIP to read: auto is the largest (clip_g for "
                                        "SDXL, t5xxl for SD3 and Flux, clip_l for SD1.x); or a name such as clip_l, "
                                        "clip_g, t5xxl"),
                io.String.Input("layers", default=AUTO,
                                tooltip="Which transformer blocks (0-based) to make vectors for: auto is the block "
                                        "a third of the way up (early blocks steer what the prompt means; later "
                                        "ones less); or 3, 2-4, 1,3,5, -1 (the last block); one vector per block"),
                method_input("prompt"),
            ],
            outputs=[DIRECTION.Output(display_name="direction",
                                      tooltip="A hidden-space direction: one vector per block, with the encoder it "
                                              "belongs to (for Text Steer)")],
        )

    @classmethod
    def execute(cls, clip, positive, negative, templates, custom_templates, encoder, layers,
                method) -> io.NodeOutput:
        _require_clip(clip)
        template_list = chosen_templates(templates, custom_templates)
        positive_prompts = directions.expand_templates(
            directions.require_prompts(prompt_lines(positive), "positive"), template_list, "custom_templates")
        negative_prompts = directions.expand_templates(
            directions.require_prompts(prompt_lines(negative), "negative"), template_list, "custom_templates")
        if method == "pca_diff" and len(positive_prompts) != len(negative_prompts):
            raise ValueError(f"method pca_diff pairs the i-th positive prompt with the i-th negative one, but "
                             f"positive has {len(positive_prompts)} and negative {len(negative_prompts)} prompts "
                             "(after templates); expected as many lines in each (or use mean_difference)")

        name, sub_path, sub_encoder = choose_encoder(clip, encoder)
        _, blocks = encoder_blocks(sub_encoder, name)
        chosen = [steering.default_block(len(blocks))] if layers.strip() == AUTO else \
            steering.parse_layers(layers, len(blocks), "layers", f"clip's {name}")
        end_token, pad_token = end_and_pad(sub_encoder)
        seen = []  # the token rows the sub-encoder embeds for the prompt being read
        reading = recording_clone(clip, sub_path, sub_encoder, seen.append)

        def pooled(prompt: str, side: str) -> dict[int, torch.Tensor]:
            """Block -> the prompt's mean hidden state over its tokens (start to end token, every section)."""
            seen.clear()
            tokens = reading.tokenize(prompt)
            states = steering.hidden_states(lambda: reading.encode_from_tokens(tokens), blocks, chosen)
            if len(states) != len(chosen):
                raise ValueError(f"{side} prompt '{prompt}' did not run {name}; expected a prompt this text "
                                 "encoder reads")
            hidden = states[chosen[0]]
            if any(row.shape[-1] != hidden.shape[1] for row in seen) or len(seen) != hidden.shape[0]:
                raise ValueError(f"{side} prompt '{prompt}' holds something other than words for {name} (a "
                                 "textual-inversion embedding?); expected plain text")
            mask = steering.position_mask(torch.cat(seen).to(hidden.device), "prompt_tokens", end_token, pad_token)
            # A weighted prompt also encodes an empty section after its own: leave that out.
            sections = tokens.get(name.removeprefix("clip_")) or tokens.get(name)
            rows = len(sections) if sections else hidden.shape[0]
            return {layer: steering.pooled_states(state[:rows].reshape(1, -1, state.shape[-1]),
                                                  mask[:rows].reshape(1, -1))[0] for layer, state in states.items()}

        try:
            restored(reading)  # loaded before the hooks go on, so they sit on the blocks it runs
            positive_states = [pooled(prompt, "positive") for prompt in positive_prompts]
            negative_states = [pooled(prompt, "negative") for prompt in negative_prompts]
        finally:
            restored(clip)  # the recorder out again
        vectors = torch.stack([steering.steering_vector(torch.stack([s[layer] for s in positive_states]),
                                                        torch.stack([s[layer] for s in negative_states]), method)
                               for layer in chosen])
        direction = Direction({"hidden": vectors}, family=family_name(clip.cond_stage_model), encoder=name,
                              layer=steering.format_layers(chosen),
                              provenance={"method": method, "positive": positive.strip(), "negative": negative.strip(),
                                          "templates": templates, "blocks_in_encoder": str(len(blocks)),
                                          "pooling": "prompt_tokens"})
        return io.NodeOutput(direction, ui=ui.PreviewText(_summary(direction, len(blocks))))


class TextSteer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_TextSteer",
            display_name="Text Steer (LSC)",
            category=FAMILY,
            description="Activation steering of a text encoder: a CLIP that adds strength × the direction's vector "
                        "to the output of chosen transformer blocks while it encodes, so every CLIP Text Encode fed "
                        "from it makes steered conditioning. The CLIP you connect is left as it was.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder to steer (the one the direction was made with)"),
                DIRECTION.Input("direction", tooltip="A hidden-space direction, e.g. from Steer Vector from Prompts"),
                io.Float.Input("strength", default=2.0, min=-100.0, max=100.0, step=0.05,
                               tooltip="How much of the vector to add (1: the full difference between the "
                                       "prompts' states, thinned out over the prompt's other tokens, so about 2 is "
                                       "a clear change); negative steers the other way, 0 changes nothing; too "
                                       "much and the encoder's output stops meaning anything"),
                io.String.Input("layers", default="",
                                tooltip="Which transformer blocks (0-based) to steer: empty is the direction's own "
                                        "blocks; or 3, 2-4, 1,3,5, -1 (the last block). A direction with a single "
                                        "vector needs this"),
                io.Combo.Input("token_positions", options=list(steering.POSITIONS), default="prompt_tokens",
                               tooltip=POSITIONS_TIP),
            ],
            outputs=[io.Clip.Output(display_name="clip",
                                    tooltip="The steered CLIP: encodes every prompt with the vector added")],
        )

    @classmethod
    def execute(cls, clip, direction, strength, layers, token_positions) -> io.NodeOutput:
        _require_clip(clip)
        directions.require_spaces(direction, ("hidden",))
        family = family_name(clip.cond_stage_model)
        if direction.family and direction.family != family:
            raise ValueError(f"direction was made for a {direction.family} text encoder but clip is {family}; "
                             "expected the CLIP the direction was made with")
        found = sub_encoders(clip)
        if direction.encoder and direction.encoder not in found:
            raise ValueError(f"direction was made with the {direction.encoder} text encoder, but clip has "
                             f"{', '.join(found) or 'no CLIP or T5 text encoder'}; expected a direction made with "
                             "one of them")
        name, sub_path, sub_encoder = choose_encoder(clip, direction.encoder or AUTO)
        hidden = direction.vectors["hidden"]
        width = encoder_width(sub_encoder)
        if hidden.shape[-1] != width:
            made_with = direction.encoder or "an encoder it does not name"
            raise ValueError(f"direction is {hidden.shape[-1]}-wide (made with {made_with}) but clip's {name} is "
                             f"{width}-wide; expected a direction made with this text encoder")
        blocks_path, blocks = encoder_blocks(sub_encoder, name)
        owner = f"clip's {name}"
        wanted = steering.parse_layers(layers, len(blocks), "layers", owner) if layers.strip() else None
        vectors = steering.layer_vectors(hidden, direction.layer, wanted, len(blocks), owner)

        if token_positions == "all":
            steered, mask_source = clip.clone(), None
        else:
            mask_source = RecordedPositions(token_positions, *end_and_pad(sub_encoder), name)
            steered = recording_clone(clip, sub_path, sub_encoder, mask_source.record)
        for layer, vector in vectors.items():
            path = f"{sub_path}.transformer.{blocks_path}.{layer}"
            steered.patcher.add_object_patch(path, steering.SteeredBlock(
                clip.patcher.get_model_object(path), vector, strength, mask_source))
        return io.NodeOutput(steered)


NODES = [SteerVectorFromPrompts, TextSteer]
