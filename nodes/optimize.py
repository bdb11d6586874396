"""Latent optimisation nodes: objectives (CLIP text and image, direction, reference, colour statistics; sums and
constraints) and the gradient descent that serves them on a latent or on a few-step sampler's initial noise."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

import comfy.model_management
import comfy.sample
import comfy.samplers

from ..core import objectives
from ..core.directions import Direction
from ..core.optimize import OPTIMISERS, REGULARISERS, checkpointed, few_step_sampler, optimise, scaled_decoder
from .common import CATEGORY, image_channels_first, new_latent, prompt_lines
from .directions import DIRECTION
from .gradients import (differentiable_clip_scorer, differentiable_denoiser, differentiable_vae_decoder,
                        ordinary)
from .open_clip import OPEN_CLIP
from .plot import curves_image
from .progress import LoopProgress

FAMILY = f"{CATEGORY}/optimize"
OBJECTIVE = io.Custom("LSC_OBJECTIVE")
READINGS_TIP = ("The objective's terms read: CLIP similarity (−1..1, higher is better; with a negative text, the "
                "similarity to the positive minus that to the negative), reference distance (0 is identical: mean "
                "absolute pixel change in 0..1, or latent squared change relative to the latent's own size), "
                "colour statistics (distance in 0..1 RGB units), direction (how far along it, 1: the whole "
                "direction)")


def _views_input():
    return io.Int.Input("views", default=8, min=1, max=64,
                        tooltip="Score the mean of this many shifted, mirrored, faintly noisy views of each picture: "
                                "CLIP's gradient on a single view chases pixel detail that fools it, on several it "
                                "follows what the picture shows. Costs that many CLIP passes")


def _objective_output(make) -> io.NodeOutput:
    """The objective ``make()`` builds, built outside inference mode: what it computes up front (unit embeddings,
    norms) takes part in backward passes later."""
    with torch.inference_mode(False):
        objective = make()
    return io.NodeOutput(objective, ui=ui.PreviewText(objective.describe()))


class ObjectiveCLIPText(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ObjectiveCLIPText",
            display_name="Objective: CLIP Text (LSC)",
            category=FAMILY,
            description="Score pictures by how well CLIP thinks they match a text (and not a negative text): the "
                        "objective is 1 − similarity. Feeds Latent Optimize, Noise Optimize, Objective Combine and "
                        "Objective Constraint.",
            inputs=[
                OPEN_CLIP.Input("open_clip", tooltip="The CLIP that judges the pictures (Open CLIP Loader)"),
                io.String.Input("positive", multiline=True, default="green",
                                tooltip="What the picture should show; several lines are averaged"),
                io.String.Input("negative", multiline=True, default="",
                                tooltip="What it should not show (optional); several lines are averaged"),
                _views_input(),
            ],
            outputs=[OBJECTIVE.Output(display_name="objective", tooltip="CLIP similarity to the text, to raise")],
        )

    @classmethod
    def execute(cls, open_clip, positive, negative, views) -> io.NodeOutput:
        positive_lines, negative_lines = prompt_lines(positive), prompt_lines(negative)
        if not positive_lines:
            raise ValueError("positive is empty; expected a text to steer towards (e.g. 'green')")
        encode = open_clip.text_encoder()
        positive_embedding = ordinary(encode(positive_lines).embedding.float())
        negative_embedding = ordinary(encode(negative_lines).embedding.float()) if negative_lines else None
        name = f"CLIP text '{' / '.join(positive_lines)[:40]}'" + (
            f" not '{' / '.join(negative_lines)[:30]}'" if negative_lines else "")
        score = differentiable_clip_scorer(open_clip)
        return _objective_output(lambda: objectives.clip_text(score, positive_embedding, negative_embedding, name,
                                                              views))


class ObjectiveCLIPImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ObjectiveCLIPImage",
            display_name="Objective: CLIP Image (LSC)",
            category=FAMILY,
            description="Score pictures by how alike CLIP finds them to reference pictures (their mean embedding): "
                        "the objective is 1 − similarity.",
            inputs=[
                OPEN_CLIP.Input("open_clip", tooltip="The CLIP that judges the pictures (Open CLIP Loader)"),
                io.Image.Input("image", tooltip="One or more reference pictures; their CLIP embeddings are averaged"),
                _views_input(),
            ],
            outputs=[OBJECTIVE.Output(display_name="objective", tooltip="CLIP similarity to the pictures, to raise")],
        )

    @classmethod
    def execute(cls, open_clip, image, views) -> io.NodeOutput:
        score = differentiable_clip_scorer(open_clip)
        pictures = ordinary(image_channels_first(image, "image"))
        name = f"CLIP image ({pictures.shape[0]} picture{'s' if pictures.shape[0] > 1 else ''})"
        return _objective_output(lambda: objectives.clip_image(score, pictures, name, views))


class ObjectiveDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ObjectiveDirection",
            display_name="Objective: Direction (LSC)",
            category=FAMILY,
            description="Move the latent a given amount along a latent direction (from Latent Direction from CLIP, "
                        "Direction from Latents, PCA or a file), leaving its other components to the other "
                        "objectives. Latent space only: no VAE needed.",
            inputs=[
                DIRECTION.Input("direction", tooltip="A direction with a latent part"),
                io.Float.Input("amount", default=1.0, min=-100.0, max=100.0, step=0.05,
                               tooltip="How far to move along the direction (1: the whole direction, as Apply "
                                       "Direction at strength 1 adds it; negative: the other way)"),
            ],
            outputs=[OBJECTIVE.Output(display_name="objective", tooltip="The squared gap to the wanted amount")],
        )

    @classmethod
    def execute(cls, direction: Direction, amount) -> io.NodeOutput:
        vector = direction.vectors.get("latent")
        if vector is None:
            raise ValueError(f"direction holds {', '.join(direction.vectors)} parts but no latent part; expected a "
                             "latent direction (Latent Direction from CLIP, Direction from Latents, Direction PCA "
                             "of latents)")
        vector = ordinary(vector.float())
        return _objective_output(lambda: objectives.along_direction(vector, amount, f"direction × {amount:g}"))


class ObjectiveReference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ObjectiveReference",
            display_name="Objective: Keep Reference (LSC)",
            category=FAMILY,
            description="Stay close to a reference: the latent or picture the optimisation starts from (nothing "
                        "wired), or a given latent or picture; optionally only outside a mask, so the masked part "
                        "is free to change. Combine it with a CLIP objective to edit one thing and keep the rest.",
            inputs=[
                io.Combo.Input("space", options=["image", "latent"], default="image",
                               tooltip="image: mean absolute change of the pixels, which lets a few pixels change "
                                       "a lot rather than many a little, so edits stay local (needs the VAE, as "
                                       "Latent Optimize has); latent: mean squared change of the latent"),
                io.Latent.Input("latent", optional=True,
                                tooltip="A reference latent (space latent); nothing: the start of the optimisation"),
                io.Image.Input("image", optional=True,
                               tooltip="A reference picture (space image); nothing: the start's own picture"),
                io.Mask.Input("mask", optional=True,
                              tooltip="Where change is free (1): only the rest has to stay as it was"),
            ],
            outputs=[OBJECTIVE.Output(display_name="objective", tooltip="Distance to the reference, to lower")],
        )

    @classmethod
    def execute(cls, space, latent=None, image=None, mask=None) -> io.NodeOutput:
        if space == "latent" and image is not None:
            raise ValueError("image is wired but space is 'latent'; expected a latent reference, or space 'image'")
        if space == "image" and latent is not None:
            raise ValueError("latent is wired but space is 'image'; expected a picture reference, or space 'latent'")
        reference = None
        if latent is not None:
            reference = ordinary(latent["samples"].float())
        elif image is not None:
            reference = ordinary(image_channels_first(image, "image"))
        where = "start" if reference is None else "given " + space
        name = f"reference ({space}, {where}{', outside mask' if mask is not None else ''})"
        mask = None if mask is None else ordinary(mask.float())
        return _objective_output(lambda: objectives.reference_distance(name, space, reference, mask))


def parse_colour(text: str, name: str) -> tuple[float, float, float]:
    """'#RRGGBB' or 'r, g, b' (0..255 or 0..1) as RGB in 0..1."""
    value = text.strip()
    try:
        if value.startswith("#") and len(value) == 7:
            return tuple(int(value[i:i + 2], 16) / 255 for i in (1, 3, 5))
        parts = [float(part) for part in value.replace(";", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(not 0 <= part <= 255 for part in parts):
        raise ValueError(f"{name} is {text!r}; expected a colour as '#RRGGBB' or 'r, g, b' (0..255, or 0..1)")
    scale = 1.0 if max(parts) <= 1 else 255.0
    return tuple(part / scale for part in parts)


class ObjectiveColor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ObjectiveColor",
            display_name="Objective: Color Statistics (LSC)",
            category=FAMILY,
            description="Model-free picture statistics in a region: its mean colour, brightness or saturation "
                        "towards a target. No CLIP needed.",
            inputs=[
                io.Combo.Input("statistic", options=list(objectives.STATISTICS), default="colour",
                               tooltip="colour: the region's mean RGB towards color; brightness: its mean luma "
                                       "towards value; saturation: its mean (max − min of RGB) towards value"),
                io.String.Input("color", default="#20c020",
                                tooltip="The target colour for 'colour': '#RRGGBB' or 'r, g, b'"),
                io.Float.Input("value", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="The target for brightness or saturation (0..1)"),
                io.Mask.Input("mask", optional=True, tooltip="The region to measure (1 inside); nothing: the whole "
                                                             "picture"),
            ],
            outputs=[OBJECTIVE.Output(display_name="objective", tooltip="Distance of the statistic from the target")],
        )

    @classmethod
    def execute(cls, statistic, color, value, mask=None) -> io.NodeOutput:
        target = parse_colour(color, "color") if statistic == "colour" else value
        shown = color.strip() if statistic == "colour" else f"{value:g}"
        name = f"{statistic} → {shown}{' in mask' if mask is not None else ''}"
        mask = None if mask is None else ordinary(mask.float())
        return _objective_output(lambda: objectives.colour_statistic(statistic, target, name, mask))


class ObjectiveCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ObjectiveCombine",
            display_name="Objective Combine (LSC)",
            category=FAMILY,
            description="The weighted sum of two objectives (chain the node for more); constraints of either are "
                        "kept.",
            inputs=[
                OBJECTIVE.Input("objective_a", tooltip="An objective"),
                io.Float.Input("weight_a", default=1.0, min=0.0, max=1000.0, step=0.05, tooltip="Its weight"),
                OBJECTIVE.Input("objective_b", tooltip="Another objective"),
                io.Float.Input("weight_b", default=1.0, min=0.0, max=1000.0, step=0.05, tooltip="Its weight"),
            ],
            outputs=[OBJECTIVE.Output(display_name="objective", tooltip="weight_a · a + weight_b · b")],
        )

    @classmethod
    def execute(cls, objective_a, weight_a, objective_b, weight_b) -> io.NodeOutput:
        return _objective_output(lambda: objectives.combine([(objective_a, weight_a), (objective_b, weight_b)]))


class ObjectiveConstraint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ObjectiveConstraint",
            display_name="Objective Constraint (LSC)",
            category=FAMILY,
            description="Turn an objective into a condition that must hold — 'CLIP similarity at least 0.3', "
                        "'pixel change at most 0.02' — instead of a weight to tune. Combine it with what to "
                        "minimise otherwise (e.g. Keep Reference); Latent Optimize meets it with an augmented "
                        "Lagrangian.",
            inputs=[
                OBJECTIVE.Input("objective", tooltip="One objective: its own reading is held to the threshold "
                                                     "(similarities at least, distances at most); a combined one: "
                                                     "its weighted loss at most the threshold"),
                io.Float.Input("threshold", default=0.3, min=-10.0, max=10.0, step=0.01, tooltip=READINGS_TIP),
            ],
            outputs=[OBJECTIVE.Output(display_name="objective", tooltip="The constraint (no loss of its own)")],
        )

    @classmethod
    def execute(cls, objective, threshold) -> io.NodeOutput:
        return _objective_output(lambda: objectives.constrain(objective, threshold))


def _require_latent_for_vae(samples: torch.Tensor, vae, name: str = "latent") -> None:
    if samples.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(samples.shape)}; expected image latents [batch, channels, height, "
                         "width] (video latents are not supported here)")
    channels = getattr(vae, "latent_channels", None)
    if channels is not None and samples.shape[1] != channels:
        raise ValueError(f"{name} has {samples.shape[1]} channels but vae decodes {channels}-channel latents; "
                         "expected the VAE of the model that made the latent")


def _report(result, objective) -> str:
    lines = [objective.describe(), result.message, "at the kept iterate (batch mean):",
             *(f"{name}: {float(value.float().mean()):.4g}" for name, value in result.readings.items())]
    if objective.constraints:
        lines.append(f"constraints hold for {int(result.feasible.sum())} of {len(result.feasible)} items")
    return "\n".join(lines)


def _optimiser_inputs(steps_name: str, steps_default: int, learning_rate: float):
    return [
        io.Int.Input(steps_name, default=steps_default, min=1, max=1000,
                     tooltip="Gradient steps; each decodes and scores the whole batch once (and runs the sampler, "
                             "for noise)"),
        io.Float.Input("learning_rate", default=learning_rate, min=0.0001, max=10.0, step=0.005,
                       tooltip="Step size in units of the start's own RMS (so one value suits every VAE)"),
        io.Combo.Input("optimiser", options=list(OPTIMISERS), default="adam",
                       tooltip="adam: robust default; sgd_nesterov: plain momentum steps (ReNO's choice; wants a "
                               "larger learning_rate)"),
    ]



def decode_scale_input():
    return io.Float.Input("decode_scale", default=1.0, min=0.125, max=1.0, step=0.125,
                          tooltip="Decode a latent shrunk by this factor to score its picture: about scale² the "
                                  "decoding cost (CLIP looks at 224 pixels anyway); the latent keeps its size")

class LatentOptimize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentOptimize",
            display_name="Latent Optimize (LSC)",
            category=FAMILY,
            description="Gradient descent on a latent against an objective (CLIP text or image, keep a reference, "
                        "colour, direction; sums and constraints), through the VAE's decoder: edit what the "
                        "objective asks and, with Keep Reference, nothing else. Every item of the batch is "
                        "optimised at once; the best step per item is kept.",
            inputs=[
                io.Latent.Input("latent", tooltip="The latent(s) to optimise (e.g. VAE Encode of a picture, or a "
                                                  "sampler's output)"),
                io.Vae.Input("vae", tooltip="The VAE of the latent: pictures are decoded through it to be scored"),
                OBJECTIVE.Input("objective", tooltip="What to optimise (Objective nodes)"),
                *_optimiser_inputs("steps", 40, 0.2),
                io.Combo.Input("regulariser", options=list(REGULARISERS), default="distance_to_start",
                               tooltip="λ·R(z): distance_to_start ‖z − z₀‖² keeps the latent near where it began; "
                                       "norm ‖z‖²; gaussian_shell keeps noise at the norm Gaussian noise has; none"),
                io.Float.Input("regulariser_weight", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="λ, per latent element in units of the start's RMS"),
                io.Float.Input("gradient_penalty", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="β·‖∇z L‖²: prefers edits the objective is not fragile around; costs a second "
                                       "backward pass (about 2–3× the time per step)"),
                decode_scale_input(),
                io.Float.Input("early_stop", default=0.0, min=0.0, max=0.5, step=0.001,
                               tooltip="Stop an item once its best loss improved by less than this fraction over "
                                       "10 steps with its constraints holding (0: run every step)"),
                io.Float.Input("smoothing", default=4.0, min=0.0, max=64.0, step=0.5,
                               tooltip="Smooth the change over this many latent cells (the period at which detail "
                                       "is halved): regions recolour and reshape as a whole instead of breaking into "
                                       "blotches. 0: no smoothing (pixel-exact objectives, tiny latents)"),
                io.Mask.Input("mask", optional=True, tooltip="Where the latent may change (1); nothing: everywhere"),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The best latent found per item"),
                io.Image.Output(display_name="curves", tooltip="Each term of the objective per step (batch mean)"),
            ],
        )

    @classmethod
    def execute(cls, latent, vae, objective, steps, learning_rate, optimiser, regulariser, regulariser_weight,
                gradient_penalty, decode_scale, early_stop, smoothing, mask=None) -> io.NodeOutput:
        samples = latent["samples"]
        _require_latent_for_vae(samples, vae)
        decode = differentiable_vae_decoder(vae)
        progress = LoopProgress(steps, preview=lambda z: decode(z[:1]))
        result = optimise(samples.to(vae.device, torch.float32), objective, scaled_decoder(decode, decode_scale),
                          steps, learning_rate, optimiser, regulariser, regulariser_weight, gradient_penalty, mask,
                          early_stop, smoothing=smoothing, progress=progress)
        optimised = result.variable.to(comfy.model_management.intermediate_device(), torch.float32)
        return io.NodeOutput(new_latent(latent, optimised), curves_image(result.history),
                             ui=ui.PreviewText(_report(result, objective)))


class OptimisedNoise:
    """A NOISE for SamplerCustomAdvanced: the noise Noise Optimize found, for latents of the shape it was found for."""

    def __init__(self, noise: torch.Tensor, seed: int):
        self.noise = noise
        self.seed = seed  # ancestral and SDE samplers seed their fresh noise from this

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        shape = tuple(input_latent["samples"].shape)
        if shape != tuple(self.noise.shape):
            raise ValueError(f"the optimised noise has shape {tuple(self.noise.shape)} but the sampler's latent has "
                             f"{shape}; expected the same latent (size and batch) that Noise Optimize was given")
        return self.noise.clone()


class NoiseOptimize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_NoiseOptimize",
            display_name="Noise Optimize (LSC)",
            category=FAMILY,
            description="ReNO-style: optimise the initial noise of a few-step sampler (Euler, 1–4 steps: turbo, "
                        "lightning and other distilled models) so that the picture it samples scores better on an "
                        "objective. Gradients run back through the sampler and the VAE's decoder. Feed the NOISE to "
                        "SamplerCustomAdvanced with sampler euler and the same scheduler, steps, cfg and "
                        "conditioning to get the same picture at full quality.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model"),
                io.Conditioning.Input("positive", tooltip="The prompt's conditioning"),
                io.Conditioning.Input("negative", tooltip="The negative prompt's conditioning (unused at cfg 1)"),
                io.Vae.Input("vae", tooltip="The VAE that decodes the model's latents"),
                OBJECTIVE.Input("objective", tooltip="What the sampled pictures should score well on"),
                io.Latent.Input("latent", tooltip="An empty latent: size and batch of the pictures"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The starting noise, as RandomNoise draws it for this seed"),
                io.Int.Input("sampler_steps", default=1, min=1, max=10,
                             tooltip="Euler steps of the sampler the noise is optimised through; every step is "
                                     "back-propagated, so few (1–4, as distilled models use)"),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="simple",
                               tooltip="The scheduler of those steps (use the same in SamplerCustomAdvanced)"),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Classifier-free guidance scale (1: no negative pass, as turbo models use)"),
                *_optimiser_inputs("iterations", 50, 0.1),
                io.Float.Input("shell_weight", default=1.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Weight of the Gaussian-shell prior that keeps the noise at the norm Gaussian "
                                       "noise has; 0 lets it drift off the distribution the model knows"),
                io.Boolean.Input("checkpointing", default=True,
                                 tooltip="Recompute the denoiser's and the decoder's activations in the backward "
                                         "pass instead of keeping them: much less memory, about a third more time"),
            ],
            outputs=[
                io.Noise.Output(display_name="noise", tooltip="The optimised noise, for SamplerCustomAdvanced"),
                io.Latent.Output(display_name="latent", tooltip="What the few-step sampler makes of it"),
                io.Image.Output(display_name="curves", tooltip="Each term of the objective per iteration"),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, objective, latent, seed, sampler_steps, scheduler, cfg,
                iterations, learning_rate, optimiser, shell_weight, checkpointing) -> io.NodeOutput:
        samples = latent["samples"]
        _require_latent_for_vae(samples, vae)
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
        denoise, start, device = differentiable_denoiser(model, positive, negative, cfg, samples, seed)
        sampling = model.get_model_object("model_sampling")
        process_out = model.get_model_object("latent_format").process_out
        sigmas = ordinary(comfy.samplers.calculate_sigmas(sampling, scheduler, sampler_steps).float().to(device))
        from_noise = bool(sigmas[0] >= sampling.sigma_max * (1 - 1e-5))  # as ComfyUI's samplers decide max_denoise
        decode = differentiable_vae_decoder(vae)
        if checkpointing:
            denoise, decode = checkpointed(denoise), checkpointed(decode)
        generate = few_step_sampler(
            denoise, sigmas, lambda n: sampling.noise_scaling(sigmas[0], n, start[:len(n)], from_noise),
            lambda x: process_out(sampling.inverse_noise_scaling(sigmas[-1], x)).to(vae.device))
        preview_decode = differentiable_vae_decoder(vae)
        progress = LoopProgress(iterations, preview=lambda n: preview_decode(generate(n[:1])))
        result = optimise(noise.to(device, torch.float32), objective, decode, iterations, learning_rate, optimiser,
                          "gaussian_shell", shell_weight, generate=generate, progress=progress)
        where = comfy.model_management.intermediate_device()
        return io.NodeOutput(OptimisedNoise(result.variable.to(where, torch.float32).cpu(), seed),
                             new_latent(latent, result.latent.to(where, torch.float32)),
                             curves_image(result.history, "iteration"), ui=ui.PreviewText(_report(result, objective)))


NODES = [ObjectiveCLIPText, ObjectiveCLIPImage, ObjectiveDirection, ObjectiveReference, ObjectiveColor,
         ObjectiveCombine, ObjectiveConstraint, LatentOptimize, NoiseOptimize]
