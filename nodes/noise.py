"""Noise nodes of the guidance family: fresh noise injected inside the sampling loop (any sampler, any model), and a
NOISE tilted along a latent direction."""

from __future__ import annotations

import torch
from comfy_api.latest import io

import comfy.extra_samplers.uni_pc
import comfy.model_sampling
import comfy.patcher_extension
import comfy.sample
import comfy.samplers

from ..core.directions import Direction, require_spaces
from ..core.noise import tilted_noise
from ..core.noise_injection import injection_steps, parse_steps, sample_with_injection
from .common import CATEGORY, MAX_SEED
from .directions import DIRECTION
from .schedule_window import sigma_window, window_error, window_inputs

FAMILY = f"{CATEGORY}/guidance"
WRAPPER_KEY = "lsc_noise_inject"
# ComfyUI's UniPC spends a one-step schedule on a model call without moving x: its segments need two steps or more.
MULTISTEP_ONLY = (comfy.extra_samplers.uni_pc.sample_unipc, comfy.extra_samplers.uni_pc.sample_unipc_bh2)
# benchmarks/_noise_bench.py: on the analytic mixture world amount 1 over the middle of the schedule keeps every
# mode's frequency within 0.014 of its weight; on the reference family (Euler, 20 steps, middle third) the oracle reads
# every prompt's shape and colour at amounts 0.25, 0.5 and 1 alike, while the change grows with the amount (mean pixel
# change 0.002, 0.004, 0.009). 0.5 re-draws detail at half an ancestral sampler's noise, leaving room both ways.
DEFAULT_AMOUNT = 0.5
# Reference family, red-minus-blue latent direction, prompts that leave the colour open (benchmarks/_noise_bench.py,
# dirnoise_*): red 14 % -> 26 % -> 35 % -> 20 % and blue 18 % -> 4 % -> 0 % -> 0 % at strength 0, 2, 4, 8, every other
# attribute kept up to 4 (99 % at 8): 4 leans furthest before the noise stops looking like noise.
DEFAULT_TILT = 4.0


class InjectionWrapper:
    """The SAMPLER_SAMPLE wrapper: while the sampler runs, its k-diffusion function is swapped for one that samples
    in segments with fresh noise between them (core.noise_injection), and swapped back afterwards."""

    def __init__(self, amount: float, seed: int, window: tuple[float, float], steps: set[int] | None,
                 mask: torch.Tensor | None, flow: bool):
        self.amount, self.seed, self.window, self.steps, self.mask, self.flow = amount, seed, window, steps, mask, flow

    def __call__(self, executor, *args, **kwargs):
        sampler = executor.class_obj
        if not isinstance(sampler, comfy.samplers.KSAMPLER):
            raise ValueError(f"Noise Inject cannot split the steps of a {type(sampler).__name__} sampler; expected one "
                             "of ComfyUI's k-diffusion samplers (KSampler, KSamplerAdvanced, or KSamplerSelect into "
                             "SamplerCustomAdvanced)")
        original = sampler.sampler_function
        sampler.sampler_function = self._segmented(original)
        try:
            return executor(*args, **kwargs)
        finally:
            sampler.sampler_function = original

    def _segmented(self, sampler_function):
        def segmented(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
            extra_args = extra_args or {}
            segments = []

            def sample_segment(x, segment_sigmas, first_step):
                last = {}

                def step_callback(step):
                    last["denoised"] = step["denoised"]
                    if callback is not None:  # previews and the progress bar count the whole schedule's steps
                        callback({**step, "i": step["i"] + first_step})

                seed = extra_args.get("seed")
                # SDE and ancestral samplers seed their own noise: each segment draws afresh, not a replay.
                segment_args = {**extra_args, "seed": None if seed is None else seed + len(segments)}
                segments.append(first_step)
                x = sampler_function(model, x, segment_sigmas, extra_args=segment_args, callback=step_callback,
                                     disable=disable, **options)
                return x, last.get("denoised")

            chosen = injection_steps(sigmas, self.window, self.steps)
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            return sample_with_injection(sample_segment, x, sigmas, chosen, self.amount, generator, self.flow,
                                         self.mask, 2 if sampler_function in MULTISTEP_ONLY else 1)
        return segmented


class NoiseInject(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_NoiseInject",
            display_name="Noise Inject (LSC)",
            category=FAMILY,
            description="Fresh noise inside the sampling loop, variance-correct: on the chosen steps the sampler's "
                        "own step stops short (as an ancestral sampler's does) and seeded new noise brings the "
                        "latent back to the step's noise level, so detail and variation are re-drawn without "
                        "over-noising. Works with every sampler (KSampler, KSamplerAdvanced, SamplerCustomAdvanced) "
                        "and model family (SD1.5, SDXL, SD3, Flux, video).",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (a patched copy is returned; the input is left "
                                                "as it is)"),
                io.Float.Input("amount", default=DEFAULT_AMOUNT, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of an ancestral sampler's fresh noise each chosen step gets (0: the "
                                       "plain sampler exactly; 1: as much as Euler ancestral adds)"),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="Seed of the injected noise (the sampler's own seed is unchanged)"),
                *window_inputs("noise injection"),
                io.String.Input("steps", default="",
                                tooltip="Which of the sampler's steps get noise, 0-based, as in '3, 5-7' (steps "
                                        "outside the window are skipped); empty: every step in the window. UniPC "
                                        "runs at least two steps between injections and skips the others"),
                io.Mask.Input("mask", optional=True,
                              tooltip="Inject only where the mask is 1 (elsewhere the step continues "
                                      "deterministically); any resolution"),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The model with noise injection; sample it with "
                                                                   "any sampler")],
        )

    @classmethod
    def validate_inputs(cls, start_percent, end_percent):
        return window_error(start_percent, end_percent) or True

    @classmethod
    def execute(cls, model, amount, seed, start_percent, end_percent, steps, mask=None) -> io.NodeOutput:
        chosen = parse_steps(steps, "steps")
        window = sigma_window(model, start_percent, end_percent)
        flow = isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)
        patched = model.clone()
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY,
                                     InjectionWrapper(amount, seed, window, chosen, mask, flow))
        return io.NodeOutput(patched)


class TiltedNoise:
    """A NOISE: RandomNoise's noise for the seed, tilted along a latent direction and kept on the Gaussian shell."""

    def __init__(self, seed: int, direction: torch.Tensor, strength: float):
        self.seed = seed  # ancestral and SDE samplers seed their fresh noise from this
        self.direction = direction
        self.strength = strength

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        noise = comfy.sample.prepare_noise(samples, self.seed, input_latent.get("batch_index"))
        return tilted_noise(noise, self.direction, self.strength, "direction")


class DirectionalNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_DirectionalNoise",
            display_name="Directional Noise (LSC)",
            category=FAMILY,
            description="The starting noise of a seed (exactly RandomNoise's), tilted along a latent direction and "
                        "scaled back to its own length, so it stays noise a sampler expects: what is drawn leans "
                        "the direction's way from the first step. Feed it to SamplerCustomAdvanced.",
            inputs=[
                DIRECTION.Input("direction", tooltip="A latent direction (Latent Direction from CLIP, Direction "
                                                     "from Latents, or a loaded one) of this model's latents; "
                                                     "resized to the latent if found at another size"),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="The noise seed, as RandomNoise takes it"),
                io.Float.Input("strength", default=DEFAULT_TILT, min=-20.0, max=20.0, step=0.1,
                               tooltip="How far the noise moves along the direction, in standard deviations of the "
                                       "noise (0: RandomNoise's noise exactly; negative: the opposite way). On the "
                                       "reference model 4 leans furthest; at 8 the lean weakens and pictures start "
                                       "to break"),
            ],
            outputs=[io.Noise.Output(display_name="noise", tooltip="Use as SamplerCustomAdvanced's noise")],
        )

    @classmethod
    def execute(cls, direction: Direction, seed, strength) -> io.NodeOutput:
        require_spaces(direction, ["latent"], "direction")
        return io.NodeOutput(TiltedNoise(seed, direction.vectors["latent"], strength))


NODES = [NoiseInject, DirectionalNoise]
