"""Guided Noise Inject: gradient guidance of any sampler towards an objective (CLIP text or image, colour, direction,
sums and constraints), as a patch on a clone of the MODEL. The math is core/guidance.py's."""

from __future__ import annotations

import torch
from comfy_api.latest import io

import comfy.samplers

from ..core import guidance
from ..core.optimize import scaled_decoder
from .common import CATEGORY
from .gradients import differentiable_diffusion_model, differentiable_vae_decoder
from .optimize import OBJECTIVE, decode_scale_input
from .schedule_window import sigma_window, window_error, window_inputs

FAMILY = f"{CATEGORY}/guidance"
# Measured on the reference family (benchmarks/_guidance_bench.py, CLIP text "green", 20 Euler steps, cfg 4, the
# whole schedule): strength 0.5 turned 14 of 16 open-colour pictures green and kept 14 as the prompt says; 1 turned
# 15 but kept 10; 2 fools CLIP instead of changing the picture.
DEFAULT_STRENGTH = 0.5
# The errors autograd raises where a model's forward pass cannot be differentiated (U: in-place updates; the fork:
# comfy_kitchen kernels).
NO_BACKWARD = ("inplace operation", "no autograd formula")


def _post_cfg_guidance(objective, vae, strength: float, window: tuple[float, float], schedule: str, mode: str,
                       decode_scale: float, model):
    """The post-CFG function: the CFG result moved along the objective's gradient inside the window."""
    sampling = model.get_model_object("model_sampling")
    weight_of_sigma = guidance.windowed_weight(*window, schedule, float(sampling.sigma_min),
                                               float(sampling.sigma_max))
    process_out = model.get_model_object("latent_format").process_out
    decode = scaled_decoder(differentiable_vae_decoder(vae), decode_scale) if objective.needs_image else None
    loss = guidance.guidance_loss(objective, decode)

    def loss_of_x0(x0: torch.Tensor) -> torch.Tensor:
        return loss(process_out(x0.float()))

    def guide(args: dict) -> torch.Tensor:
        denoised, sigma = args["denoised"], args["sigma"]
        weight = weight_of_sigma(sigma)
        if not weight:
            return denoised
        if mode == "x0":
            gradient = guidance.x0_gradient(loss_of_x0, denoised)
        else:
            try:
                gradient = guidance.exact_gradient(_cfg_denoiser(args, guide), loss_of_x0, args["input"], sigma)[1]
            except RuntimeError as error:
                if not any(sign in str(error) for sign in NO_BACKWARD):
                    raise
                raise ValueError("mode is exact but no gradient runs back through this diffusion model (ComfyUI's "
                                 "Flux and other DiTs update activations in place or use kernels without a "
                                 "backward pass); expected mode x0 for this model") from error
        return guidance.guided_estimate(denoised, gradient.to(denoised.device), sigma, strength * weight)

    return guide


def _cfg_denoiser(args: dict, guide):
    """The CFG denoised estimate as ComfyUI computed it for this step (the same conditionings, cfg and model options,
    with the post-CFG functions that ran before ``guide``, not ``guide`` itself or later ones), through a private
    copy of the diffusion model so gradients reach x."""
    private, _ = differentiable_diffusion_model(args["model"].current_patcher)
    options = dict(args["model_options"])
    functions = options.get("sampler_post_cfg_function", [])
    options["sampler_post_cfg_function"] = functions[:functions.index(guide)] if guide in functions else []
    cond, uncond, cfg = args["cond"], args["uncond"], args["cond_scale"]

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return comfy.samplers.sampling_function(private, x, sigma, uncond, cond, cfg, options)

    return denoise


class GuidedNoiseInject(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_GuidedNoiseInject",
            display_name="Guided Noise Inject (LSC)",
            category=FAMILY,
            description="Guide sampling towards an objective (CLIP text or image, colour, direction; sums and "
                        "constraints): at every step inside the window the predicted noise is tilted along the "
                        "objective's gradient, so any sampler (KSampler, KSamplerAdvanced, SamplerCustomAdvanced) "
                        "draws what the objective asks. Patches a copy of the model; the input model is untouched. "
                        "The sampler's own progress bar and Cancel button cover the extra work (it runs inside "
                        "each step).",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to guide (any family: SD1.5, SDXL, SD3, Flux…)"),
                OBJECTIVE.Input("objective", tooltip="What the pictures should score well on (Objective nodes); "
                                                     "constraints push only while they are violated"),
                io.Float.Input("strength", default=DEFAULT_STRENGTH, min=0.0, max=10.0, step=0.05,
                               tooltip="How hard to push: the objective's gradient, scaled to unit size, is added "
                                       "to the predicted noise at this strength (one value suits every objective "
                                       "and model); 0 is the plain model. Too much fools CLIP instead of "
                                       "changing the picture"),
                *window_inputs("guidance"),
                io.Combo.Input("schedule", options=list(guidance.SCHEDULES), default="constant",
                               tooltip="Strength over the window (evenly in log noise level): constant; ramp_down "
                                       "strong early, fading (layout, then let the model finish); ramp_up fading in "
                                       "(details); bell strongest in the middle"),
                io.Combo.Input("mode", options=list(guidance.MODES), default="x0",
                               tooltip="x0: the gradient at the denoised estimate (one decode and objective pass "
                                       "per step); exact: through the diffusion model as well (a backward pass "
                                       "through it per step too: about 2–3× the cost of x0, more faithful early "
                                       "in the schedule)"),
                decode_scale_input(),
                io.Vae.Input("vae", optional=True,
                             tooltip="The VAE of the model: needed when the objective scores pictures (CLIP, "
                                     "colour); latent objectives (direction, latent reference) need none"),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The guided model, for any sampler")],
        )

    @classmethod
    def validate_inputs(cls, start_percent, end_percent):
        return window_error(start_percent, end_percent) or True

    @classmethod
    def execute(cls, model, objective, strength, start_percent, end_percent, schedule, mode, decode_scale,
                vae=None) -> io.NodeOutput:
        if objective.needs_image and vae is None:
            raise ValueError(f"the objective ({objective.describe()}) scores pictures but vae is not connected; "
                             "expected the model's VAE on the vae input")
        if not objective.terms and not objective.constraints:
            raise ValueError("objective is empty; expected at least one score to guide towards")
        patched = model.clone()
        if strength == 0:
            return io.NodeOutput(patched)
        window = sigma_window(model, start_percent, end_percent)
        patched.set_model_sampler_post_cfg_function(
            _post_cfg_guidance(objective, vae, strength, window, schedule, mode, decode_scale, model))
        return io.NodeOutput(patched)


NODES = [GuidedNoiseInject]
