"""Direction nodes: semantic directions from prompts, batches and other encoders; applied, swept, combined, saved."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..core import directions
from ..core.directions import Direction
from ..core.latent_direction import clip_latent_direction
from ..core.tokens import common_length, tile_tokens
from .clip_encoding import encode_prompts
from .common import CATEGORY, conditioning_with_direction, latent_with_direction, prompt_lines, repeated_latent
from .gradients import differentiable_clip_scorer, differentiable_vae_decoder
from .model_folders import DIRECTIONS_FOLDER, direction_files, direction_path, new_direction_path
from .open_clip import OPEN_CLIP
from .progress import LoopProgress

FAMILY = f"{CATEGORY}/directions"
DIRECTION = io.Custom("LSC_DIRECTION")

TEMPLATE_CHOICES = ("built-in", "none", "custom")
SPACE_CHOICES = ("both", "conditioning", "pooled")
TOKEN_CHOICES = ("all_tokens", "prompt_tokens")
SPACE_TIP = ("conditioning: the token sequence the diffusion model attends to (every family); pooled: the single "
             "text embedding (SDXL, SD3 and Flux use it; SD1.5 ignores it); both: one direction in each")
TOKENS_TIP = ("all_tokens: add the direction to every token (padding tokens carry the prompt's summary and matter "
              "most); prompt_tokens: only the leading tokens the direction's own prompts occupied")
AUTO_SCALE_TIP = ("On: strength 1 moves each token by the conditioning's own typical token length, whatever the "
                  "direction's size. Off: strength 1 adds the direction as it is (from prompts: the full move from "
                  "the negative prompts to the positive ones)")


def template_inputs(what: str) -> list:
    """The templates choice and the custom templates, for nodes that read prompts in context."""
    return [io.Combo.Input("templates", options=list(TEMPLATE_CHOICES), default="built-in",
                           tooltip=f"built-in: each prompt inside a set of sentence shapes (e.g. 'a {{}} picture'), "
                                   f"so the {what} captures the word in context; none: the prompts as written; "
                                   "custom: your templates below"),
            io.String.Input("custom_templates", multiline=True, default="a photo of a {} thing\na {} painting",
                            tooltip="Used when templates is custom: one template per line, {} marks where each "
                                    "prompt goes")]


def chosen_templates(templates: str, custom_templates: str) -> tuple[str, ...] | list[str] | None:
    """The templates a node's choice names: the built-in ones, none, or the custom lines (which must exist)."""
    chosen = {"built-in": directions.TEMPLATES, "none": None, "custom": prompt_lines(custom_templates)}[templates]
    if templates == "custom" and not chosen:
        raise ValueError("custom_templates is empty; expected one template per line with {} where the prompt goes")
    return chosen


def _strength_input(name="strength", default=1.0, tooltip="How far to move along the direction; negative moves the "
                                                          "other way"):
    return io.Float.Input(name, default=default, min=-100.0, max=100.0, step=0.05, tooltip=tooltip)


def _summary(direction: Direction) -> str:
    parts = [f"{direction.describe(space)}, norm {float(vector.norm()):.4g}" for space, vector in direction.vectors.items()]
    return "; ".join(parts)


def _conditioning_rows(conditioning: list, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every entry's tokens as one batch (tiled to a common length) and the pooled outputs when all entries have them."""
    if not conditioning:
        raise ValueError(f"{name} is an empty conditioning; expected at least one entry")
    widths = {tokens.shape[-1] for tokens, _ in conditioning}
    if len(widths) > 1:
        raise ValueError(f"{name} mixes token widths {sorted(widths)}; expected entries from one text encoder")
    length = common_length(*(tokens.shape[1] for tokens, _ in conditioning))
    tokens = torch.cat([tile_tokens(tokens.float(), length) for tokens, _ in conditioning])
    pooled = [extra.get("pooled_output") for _, extra in conditioning]
    pooled = torch.cat([p.float().reshape(-1, p.shape[-1]) for p in pooled]) if all(p is not None for p in pooled) else None
    return tokens, pooled


class DirectionFromCLIP(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_DirectionFromCLIP",
            display_name="Direction from CLIP (LSC)",
            category=FAMILY,
            description="A semantic direction from prompts: the mean text encoding of the positive prompts minus that "
                        "of the negative ones, each prompt in every template, all encoded in one batched pass. Works "
                        "with the CLIP of any model family ComfyUI loads.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model you will apply the direction to"),
                io.String.Input("positive", multiline=True, default="blue",
                                tooltip="What to move towards: one prompt or word per line (averaged)"),
                io.String.Input("negative", multiline=True, default="red",
                                tooltip="What to move away from: one prompt or word per line (averaged)"),
                *template_inputs("direction"),
                io.Combo.Input("space", options=list(SPACE_CHOICES), default="both", tooltip=SPACE_TIP),
                io.Combo.Input("normalise", options=["none", "unit"], default="none",
                               tooltip="none: strength 1 is the full move from the negative to the positive prompts; "
                                       "unit: scaled to length 1 (pair with Apply Direction's auto_scale)"),
            ],
            outputs=[DIRECTION.Output(display_name="direction",
                                      tooltip="The direction, with the encoder it belongs to")],
        )

    @classmethod
    def execute(cls, clip, positive, negative, templates, custom_templates, space, normalise) -> io.NodeOutput:
        if clip is None:
            raise ValueError("clip is empty (the checkpoint loaded has no text encoder); expected a CLIP")
        template_list = chosen_templates(templates, custom_templates)
        encoded = {}

        def encode(prompts):
            encoded["result"] = encode_prompts(clip, prompts)
            return encoded["result"].tokens, encoded["result"].pooled

        vectors = directions.text_direction(encode, prompt_lines(positive), prompt_lines(negative), template_list,
                                            "custom_templates")
        wanted = ("conditioning", "pooled") if space == "both" else (space,)
        if "pooled" in wanted and "pooled" not in vectors:
            if space == "pooled":
                raise ValueError("space is pooled but this text encoder gives no pooled embedding; choose conditioning")
            wanted = ("conditioning",)
        vectors = {key: vectors[key] for key in wanted}
        if normalise == "unit":
            vectors = {key: directions.normalised(vector, f"the {key} direction") for key, vector in vectors.items()}
        result = encoded["result"]
        direction = Direction(vectors, family=result.family, encoder=result.encoder,
                              content_tokens=max(result.content_tokens),
                              provenance={"method": "prompts", "positive": positive.strip(),
                                          "negative": negative.strip(), "templates": templates,
                                          "prompts_encoded": str(len(result.content_tokens)), "normalise": normalise})
        return io.NodeOutput(direction, ui=ui.PreviewText(_summary(direction)))


class LatentDirectionFromCLIP(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentDirectionFromCLIP",
            display_name="Latent Direction from CLIP (LSC)",
            category=FAMILY,
            description="A latent direction found by CLIP: one offset that, added to every latent of the batch, "
                        "moves the decoded pictures towards the positive prompts and away from the negative ones. "
                        "Found by gradient descent through the VAE's decoder and the CLIP's image tower; what the "
                        "batch's pictures have in common moves, so the direction carries over to other latents.",
            inputs=[
                io.Vae.Input("vae", tooltip="The VAE of the latents"),
                OPEN_CLIP.Input("open_clip", tooltip="The CLIP that judges the pictures (Open CLIP Loader)"),
                io.Latent.Input("latent", tooltip="A batch of latents to find the direction on (e.g. VAE Encode of "
                                                  "several pictures); more and more varied pictures generalise better"),
                io.String.Input("positive", multiline=True, default="blue",
                                tooltip="What the pictures should move towards: one prompt per line (averaged)"),
                io.String.Input("negative", multiline=True, default="red",
                                tooltip="What they should move away from: one prompt per line (averaged)"),
                io.Int.Input("steps", default=100, min=1, max=2000,
                             tooltip="Gradient steps; each decodes and scores up to 32 latents of the batch"),
                io.Float.Input("learning_rate", default=0.1, min=0.001, max=1.0, step=0.005,
                               tooltip="Adam step size, in units of the latents' own RMS"),
                io.Float.Input("max_norm", default=1.5, min=0.01, max=4.0, step=0.05,
                               tooltip="Largest RMS of the offset relative to the latents' RMS (1: as large as a "
                                       "latent itself); smaller keeps more of the pictures unchanged"),
                io.Float.Input("keep", default=1.0, min=0.0, max=10.0, step=0.1,
                               tooltip="How hard to keep the rest of each picture (what else CLIP sees, and the "
                                       "pixels), rising over the steps; 0: CLIP alone, which soon paints stray "
                                       "blobs and breaks shapes"),
            ],
            outputs=[DIRECTION.Output(display_name="direction",
                                      tooltip="A latent direction; Apply Direction at strength 1 applies it as found")],
        )

    @classmethod
    def execute(cls, vae, open_clip, latent, positive, negative, steps, learning_rate, max_norm,
                keep) -> io.NodeOutput:
        positive_prompts = directions.require_prompts(prompt_lines(positive), "positive")
        negative_prompts = directions.require_prompts(prompt_lines(negative), "negative")
        samples = latent["samples"]
        if samples.ndim != 4:
            raise ValueError(f"latent has shape {tuple(samples.shape)}; expected image latents [batch, channels, "
                             "height, width] (video latents are not supported here)")
        text = open_clip.text_encoder()(positive_prompts + negative_prompts).embedding.float()
        decode = differentiable_vae_decoder(vae)
        scorer = differentiable_clip_scorer(open_clip)
        progress = LoopProgress(steps, preview=lambda delta: decode(samples[:1].to(delta) + delta[None]))
        offset = clip_latent_direction(decode, scorer,
                                       samples.to(vae.device, torch.float32), text[:len(positive_prompts)],
                                       text[len(positive_prompts):], steps, learning_rate, max_norm, progress,
                                       keep=keep)
        direction = Direction({"latent": offset.float().cpu()},
                              provenance={"method": "CLIP-scored latent offset", "positive": positive.strip(),
                                          "negative": negative.strip(), "clip": open_clip.clip.architecture,
                                          "steps": str(steps), "keep": str(keep),
                                          "batch": str(samples.shape[0])})
        return io.NodeOutput(direction, ui=ui.PreviewText(_summary(direction)))


class DirectionFromLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_DirectionFromLatents",
            display_name="Direction from Latents (LSC)",
            category=FAMILY,
            description="The mean difference of two batches: e.g. encoded images with an attribute minus encoded "
                        "images without it (a latent direction), or two batches of conditionings (a conditioning "
                        "direction). Connect one pair.",
            inputs=[
                io.Latent.Input("latent_with", optional=True,
                                tooltip="A batch of latents that show the attribute (e.g. VAE Encode of several images)"),
                io.Latent.Input("latent_without", optional=True,
                                tooltip="A batch of latents without it; same channels and size"),
                io.Conditioning.Input("conditioning_with", optional=True,
                                      tooltip="Instead of latents: conditionings that have the attribute"),
                io.Conditioning.Input("conditioning_without", optional=True,
                                      tooltip="Conditionings without it, from the same text encoder"),
            ],
            outputs=[DIRECTION.Output(display_name="direction", tooltip="with minus without")],
        )

    @classmethod
    def execute(cls, latent_with=None, latent_without=None, conditioning_with=None,
                conditioning_without=None) -> io.NodeOutput:
        latents = latent_with is not None or latent_without is not None
        conditionings = conditioning_with is not None or conditioning_without is not None
        if latents == conditionings:
            raise ValueError("connect latent_with and latent_without, or conditioning_with and conditioning_without "
                             "(one pair, not both)")
        if latents:
            if latent_with is None or latent_without is None:
                raise ValueError(f"{'latent_without' if latent_without is None else 'latent_with'} is not connected; "
                                 "expected both latents of the pair")
            vectors = {"latent": directions.mean_difference(latent_with["samples"], latent_without["samples"],
                                                            "latent_with", "latent_without")}
        else:
            if conditioning_with is None or conditioning_without is None:
                missing = "conditioning_without" if conditioning_without is None else "conditioning_with"
                raise ValueError(f"{missing} is not connected; expected both conditionings of the pair")
            tokens_with, pooled_with = _conditioning_rows(conditioning_with, "conditioning_with")
            tokens_without, pooled_without = _conditioning_rows(conditioning_without, "conditioning_without")
            length = common_length(tokens_with.shape[1], tokens_without.shape[1])
            vectors = {"conditioning": directions.mean_difference(
                tile_tokens(tokens_with, length), tile_tokens(tokens_without, length),
                "conditioning_with", "conditioning_without")}
            if pooled_with is not None and pooled_without is not None:
                vectors["pooled"] = directions.mean_difference(pooled_with, pooled_without,
                                                               "conditioning_with pooled", "conditioning_without pooled")
        direction = Direction(vectors, provenance={"method": "mean difference"})
        return io.NodeOutput(direction, ui=ui.PreviewText(_summary(direction)))


class DirectionPCA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_DirectionPCA",
            display_name="Direction PCA (LSC)",
            category=FAMILY,
            description="A principal direction of a batch of latents or conditionings: the ways the batch varies "
                        "most, strongest first, each scaled to one standard deviation of the batch along it. The "
                        "explained variance of the top components is shown on the node.",
            inputs=[
                io.Int.Input("component", default=1, min=1, max=256,
                             tooltip="Which principal direction to output: 1 is the strongest"),
                io.Int.Input("report", default=5, min=1, max=256,
                             tooltip="How many components' explained variance to show"),
                io.Latent.Input("latent", optional=True, tooltip="A batch of latents (at least component + 1 items)"),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Instead of latents: a batch of conditionings (e.g. many prompts)"),
            ],
            outputs=[DIRECTION.Output(display_name="direction",
                                      tooltip="Strength 1 moves one standard deviation of the batch along it")],
        )

    @classmethod
    def execute(cls, component, report, latent=None, conditioning=None) -> io.NodeOutput:
        if (latent is None) == (conditioning is None):
            raise ValueError("connect latent or conditioning (one of them)")
        if latent is not None:
            space, batch, name = "latent", latent["samples"], "latent"
        else:
            space, batch, name = "conditioning", _conditioning_rows(conditioning, "conditioning")[0], "conditioning"
        count = max(component, min(report, batch.shape[0] - 1))
        if component > batch.shape[0] - 1:
            raise ValueError(f"component is {component} but {name} has a batch of {batch.shape[0]}, which has "
                             f"{batch.shape[0] - 1} principal directions; expected a larger batch or a lower component")
        found = directions.principal_directions(batch, count, name)
        vector = found.directions[component - 1] * found.deviations[component - 1]
        shares = ", ".join(f"{i + 1}: {100 * float(share):.1f}%" for i, share in enumerate(found.explained[:report]))
        direction = Direction({space: vector}, provenance={"method": f"PCA component {component}",
                                                           "explained": f"{float(found.explained[component - 1]):.4f}"})
        return io.NodeOutput(direction, ui=ui.PreviewText(f"explained variance: {shares}"))


class ApplyDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ApplyDirection",
            display_name="Apply Direction (LSC)",
            category=FAMILY,
            description="Move a conditioning or a latent along a direction: x + strength × direction. Conditioning "
                        "and pooled directions apply to CONDITIONING, latent directions to LATENT.",
            inputs=[
                DIRECTION.Input("direction", tooltip="From Direction from CLIP, from Latents, PCA, Combine or Load"),
                _strength_input(),
                io.Combo.Input("tokens", options=list(TOKEN_CHOICES), default="all_tokens", tooltip=TOKENS_TIP),
                io.Boolean.Input("auto_scale", default=False, tooltip=AUTO_SCALE_TIP),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="For conditioning and pooled directions: the prompt to change"),
                io.Latent.Input("latent", optional=True, tooltip="For latent directions: the latent to change"),
                io.Mask.Input("mask", optional=True,
                              tooltip="Latent directions only: where to apply (any resolution, resized)"),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning",
                                            tooltip="The changed conditioning (empty when none was connected)"),
                     io.Latent.Output(display_name="latent",
                                      tooltip="The changed latent (empty when none was connected)")],
        )

    @classmethod
    def execute(cls, direction, strength, tokens, auto_scale, conditioning=None, latent=None,
                mask=None) -> io.NodeOutput:
        return io.NodeOutput(*_apply(direction, [strength], tokens, auto_scale, conditioning, latent, mask))


def _apply(direction: Direction, strengths, tokens, auto_scale, conditioning, latent, mask):
    """The Apply/Sweep duty shared by both nodes: each connected input moved by the parts of the direction it takes."""
    if conditioning is None and latent is None:
        raise ValueError("connect conditioning (for a conditioning or pooled direction) or latent (for a latent "
                         "direction)")
    text_direction = any(space in direction.vectors for space in ("conditioning", "pooled"))
    out_conditioning = out_latent = None
    if conditioning is not None:
        if not text_direction:
            raise ValueError(f"conditioning is connected but the direction is a {direction.describe(direction.spaces[0])}"
                             "; expected a conditioning or pooled direction for a conditioning")
        out_conditioning = conditioning_with_direction(conditioning, direction, strengths, tokens == "prompt_tokens",
                                                       auto_scale)
    if latent is not None:
        if "latent" in direction.vectors:
            out_latent = latent_with_direction(latent, direction, strengths, mask)
        elif conditioning is None:
            raise ValueError(f"latent is connected but the direction is a {direction.describe(direction.spaces[0])}; "
                             "expected a latent direction for a latent (connect a conditioning instead)")
        else:  # one latent per strength, each with its item's noise, to sample the conditioning sweep
            samples = latent["samples"]
            out_latent = repeated_latent(latent, samples.repeat(len(strengths), *([1] * (samples.ndim - 1))),
                                         len(strengths))
    return out_conditioning, out_latent


class DirectionSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_DirectionSweep",
            display_name="Direction Sweep (LSC)",
            category=FAMILY,
            description="One input, a batch over a range of strengths (e.g. −2 to 2 in 5 steps): a slider grid or an "
                        "animation in one run. Connect the latent too: it comes back repeated once per strength with "
                        "the same noise for each, so only the direction differs between the pictures.",
            inputs=[
                DIRECTION.Input("direction", tooltip="The direction to sweep along"),
                _strength_input("start", -2.0, "Strength of the first frame"),
                _strength_input("end", 2.0, "Strength of the last frame"),
                io.Int.Input("steps", default=5, min=1, max=256, tooltip="How many strengths, evenly spaced"),
                io.Combo.Input("tokens", options=list(TOKEN_CHOICES), default="all_tokens", tooltip=TOKENS_TIP),
                io.Boolean.Input("auto_scale", default=False, tooltip=AUTO_SCALE_TIP),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="For conditioning and pooled directions: the prompt to sweep"),
                io.Latent.Input("latent", optional=True,
                                tooltip="A latent direction sweeps it; with a conditioning direction it is repeated "
                                        "to match (same noise per strength)"),
                io.Mask.Input("mask", optional=True, tooltip="Latent directions only: where to apply"),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning",
                                            tooltip="A batch: every entry at each strength, frame-major"),
                     io.Latent.Output(display_name="latent", tooltip="A batch of steps × the latent's batch")],
        )

    @classmethod
    def execute(cls, direction, start, end, steps, tokens, auto_scale, conditioning=None, latent=None,
                mask=None) -> io.NodeOutput:
        strengths = directions.strength_steps(start, end, steps)
        return io.NodeOutput(*_apply(direction, strengths, tokens, auto_scale, conditioning, latent, mask))


class DirectionCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_DirectionCombine",
            display_name="Direction Combine (LSC)",
            category=FAMILY,
            description="Direction arithmetic: add, subtract, scale, normalise, or orthogonalise (remove A's "
                        "component along B: 'older, but not more male').",
            inputs=[
                DIRECTION.Input("direction_a", tooltip="The direction to change"),
                io.Combo.Input("operation", options=list(directions.COMBINE_OPERATIONS), default="add",
                               tooltip="add: A + factor·B; subtract: A − factor·B; orthogonalise: A without its part "
                                       "along B, times factor; scale: factor·A; normalise: A at length factor"),
                io.Float.Input("factor", default=1.0, min=-100.0, max=100.0, step=0.05,
                               tooltip="The weight of B, or the scale of A (see operation)"),
                DIRECTION.Input("direction_b", optional=True,
                                tooltip="The second direction, same spaces and encoder (add, subtract, orthogonalise)"),
            ],
            outputs=[DIRECTION.Output(display_name="direction", tooltip="The combined direction")],
        )

    @classmethod
    def execute(cls, direction_a, operation, factor, direction_b=None) -> io.NodeOutput:
        direction = directions.combine(direction_a, direction_b, operation, factor)
        return io.NodeOutput(direction, ui=ui.PreviewText(_summary(direction)))


class DirectionTransfer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_DirectionTransfer",
            display_name="Direction Transfer (LSC)",
            category=FAMILY,
            description="Carry a direction from one text encoder's space into another's (e.g. an SD1.5 direction to "
                        "SDXL) by orthogonal Procrustes fitted on anchor prompts encoded by both. The fit (share of "
                        "the target's variance explained, mean cosine) is shown on the node.",
            inputs=[
                DIRECTION.Input("direction", tooltip="A conditioning and/or pooled direction of source_clip"),
                io.Clip.Input("source_clip", tooltip="The text encoder the direction was made with"),
                io.Clip.Input("target_clip", tooltip="The text encoder to carry it to"),
                io.String.Input("anchors", multiline=True, default="\n".join(directions.ANCHOR_PROMPTS),
                                tooltip="Prompts both encoders understand, one per line (at least 3; more and more "
                                        "varied gives a better fit). Avoid the direction's own words if you want "
                                        "an honest check of the fit"),
            ],
            outputs=[DIRECTION.Output(display_name="direction", tooltip="The direction in target_clip's space")],
        )

    @classmethod
    def execute(cls, direction, source_clip, target_clip, anchors) -> io.NodeOutput:
        directions.require_spaces(direction, ("conditioning", "pooled"))
        prompts = prompt_lines(anchors)
        if len(prompts) < 3:
            raise ValueError(f"anchors has {len(prompts)} prompt(s); expected at least 3, one per line")
        source, target = encode_prompts(source_clip, prompts), encode_prompts(target_clip, prompts)
        vectors, fits = directions.transfer(direction.vectors, source.tokens, source.pooled, target.tokens,
                                            target.pooled)
        carried = Direction(vectors, family=target.family, encoder=target.encoder,
                            content_tokens=direction.content_tokens,
                            provenance={**direction.provenance, "transferred_from": f"{direction.encoder} "
                                        f"({direction.family})", "fit": fits})
        return io.NodeOutput(carried, ui=ui.PreviewText(f"{_summary(carried)}; fit {fits}"))


class SaveDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_SaveDirection",
            display_name="Save Direction (LSC)",
            category=FAMILY,
            description=f"Save a direction as a safetensors file in models/{DIRECTIONS_FOLDER}, with the encoder it "
                        "belongs to and how it was made in the header (never pickle).",
            inputs=[
                DIRECTION.Input("direction", tooltip="The direction to save"),
                io.String.Input("filename_prefix", default="direction",
                                tooltip="File name; a counter is added (direction_00001.safetensors). May include a "
                                        "subfolder: styles/warm"),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, direction, filename_prefix) -> io.NodeOutput:
        path = new_direction_path(filename_prefix)
        directions.save_direction(path, direction)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name}: {_summary(direction)}"))


class LoadDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LoadDirection",
            display_name="Load Direction (LSC)",
            category=FAMILY,
            description=f"Load a direction from models/{DIRECTIONS_FOLDER} (also ConDelta files from models/ConDelta).",
            inputs=[io.Combo.Input("file", options=direction_files(),
                                   tooltip=f"A .safetensors file in models/{DIRECTIONS_FOLDER} or models/ConDelta")],
            outputs=[DIRECTION.Output(display_name="direction",
                                      tooltip="The direction, with the encoder it belongs to when the file says")],
        )

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        direction = directions.load_direction(direction_path(file))
        return io.NodeOutput(direction, ui=ui.PreviewText(_summary(direction)))


NODES = [DirectionFromCLIP, LatentDirectionFromCLIP, DirectionFromLatents, DirectionPCA, ApplyDirection, DirectionSweep, DirectionCombine,
         DirectionTransfer, SaveDirection, LoadDirection]
