"""Interpolation nodes: latent morphs, keyframed paths, seed travel noise and prompt travel."""

from __future__ import annotations

from comfy_api.latest import io

from ..core import interpolation
from .common import (CATEGORY, MAX_SEED, TravelNoise, interpolate_conditioning, latent_with_frames, new_latent,
                     parse_seeds)

FAMILY = f"{CATEGORY}/interpolate"

METHOD_TIPS = ("slerp: along the great circle, keeping each sample's norm (best for noise and most latents); "
               "lerp: straight line (norms sag in the middle); nlerp: straight line rescaled to the interpolated norm; "
               "variance_preserving: cos/sin weights that keep independent noises unit-Gaussian")
EASING_TIP = ("How the frames are spaced along the path: linear, ease_in, ease_out, ease_in_out (quadratic), cosine, "
              "cubic (in-out)")


def _method_input(options=interpolation.METHODS):
    return io.Combo.Input("method", options=list(options), default="slerp", tooltip=METHOD_TIPS)


def _easing_input():
    return io.Combo.Input("easing", options=list(interpolation.EASINGS), default="linear", tooltip=EASING_TIP)


def _frame_inputs():
    return [
        io.Int.Input("frames", default=1, min=1, max=4096,
                     tooltip="1: one result at t. N: a batch of N frames from t_start to t_end (frame-major: all "
                             "items of frame 1, then of frame 2, …)"),
        io.Float.Input("t", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="Position when frames is 1: 0 gives exactly the first input, 1 exactly the second"),
        io.Float.Input("t_start", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Position of the first frame when frames > 1"),
        io.Float.Input("t_end", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Position of the last frame when frames > 1"),
    ]


class LatentInterpolate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentInterpolate",
            display_name="Latent Interpolate (LSC)",
            category=FAMILY,
            description="Interpolate between two latents with true slerp (per sample, any channel count, image or video "
                        "latents), lerp, nlerp or a variance-preserving path; one result or a batch of frames.",
            inputs=[
                io.Latent.Input("latent_a", tooltip="Where the path starts (t = 0)"),
                io.Latent.Input("latent_b", tooltip="Where the path ends (t = 1); same channels and size as latent_a, "
                                                    "batch equal to latent_a's or 1"),
                *_frame_inputs(),
                _method_input(),
                _easing_input(),
                io.Mask.Input("mask", optional=True,
                              tooltip="Only the masked region travels; the rest stays latent_a. Any resolution "
                                      "(resized to the latent)"),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="latent_a's dict with the interpolated samples: frames × batch items")],
        )

    @classmethod
    def execute(cls, latent_a, latent_b, frames, t, t_start, t_end, method, easing, mask=None) -> io.NodeOutput:
        ts = interpolation.frame_positions(frames, t, t_start, t_end, easing)
        samples = interpolation.interpolate_latents(latent_a["samples"], latent_b["samples"], ts, method, mask,
                                                    names=("latent_a", "latent_b", "mask"))
        return io.NodeOutput(latent_with_frames(latent_a, samples, len(ts)))


class LatentKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentKeyframes",
            display_name="Latent Keyframes (LSC)",
            category=FAMILY,
            description="A morph animation through a batch of keyframe latents: each keyframe lands exactly on a frame, "
                        "with frames_per_segment frames between consecutive keyframes.",
            inputs=[
                io.Latent.Input("keyframes", tooltip="A batch of at least 2 latents, in the order the path visits them "
                                                     "(e.g. from Latent Batch or several encoded images)"),
                io.Int.Input("frames_per_segment", default=8, min=1, max=1024,
                             tooltip="Frames from one keyframe to the next; the output has "
                                     "(keyframes − 1) × frames_per_segment + 1 frames"),
                _method_input(),
                _easing_input(),
                io.Boolean.Input("smooth", default=False,
                                 tooltip="On: a Catmull-Rom spline through the keyframes, so motion does not kink at "
                                         "them. Off: separate segments, each a straight/great-circle path"),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The frames of the path, keyframes included")],
        )

    @classmethod
    def execute(cls, keyframes, frames_per_segment, method, easing, smooth) -> io.NodeOutput:
        samples = interpolation.keyframe_path(keyframes["samples"], frames_per_segment, method, easing, smooth,
                                              name="keyframes")
        return io.NodeOutput(new_latent(keyframes, samples))


class NoiseTravel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_NoiseTravel",
            display_name="Noise Travel (LSC)",
            category=FAMILY,
            description="Seed travel for SamplerCustomAdvanced: the latent batch's noise travels from seed_a's noise "
                        "to seed_b's (and on through more seeds) on a variance-preserving path, so every frame is "
                        "proper Gaussian noise and every seed's frame is exactly that seed's picture.",
            inputs=[
                io.Int.Input("seed_a", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="The seed of the first frame (the same noise Random Noise gives for it)"),
                io.Int.Input("seed_b", default=1, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="The seed the travel reaches next"),
                _easing_input(),
                io.String.Input("more_seeds", default="", optional=True,
                                tooltip="Further seeds to travel on through, separated by commas (e.g. 7, 42, 1234). "
                                        "Every seed gets a frame of its own, spaced as evenly as whole frames allow, "
                                        "so the batch needs at least one frame per seed"),
            ],
            outputs=[io.Noise.Output(display_name="noise",
                                     tooltip="Connect to SamplerCustomAdvanced's noise input; the batch size of its "
                                             "latent sets the number of frames")],
        )

    @classmethod
    def execute(cls, seed_a, seed_b, easing, more_seeds="") -> io.NodeOutput:
        return io.NodeOutput(TravelNoise([seed_a, seed_b, *parse_seeds(more_seeds or "", "more_seeds")], easing))


class ConditioningInterpolate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ConditioningInterpolate",
            display_name="Conditioning Interpolate (LSC)",
            category=FAMILY,
            description="Prompt travel: interpolate two conditionings token by token (and their pooled outputs), "
                        "optionally around an empty or negative prompt instead of around zero. Prompts of different "
                        "lengths are tiled to a common length, which leaves cross-attention unchanged.",
            inputs=[
                io.Conditioning.Input("conditioning_a", tooltip="Where the travel starts (t = 0)"),
                io.Conditioning.Input("conditioning_b", tooltip="Where the travel ends (t = 1), from the same text "
                                                                "encoder"),
                *_frame_inputs(),
                _method_input(("slerp", "lerp", "nlerp")),
                _easing_input(),
                io.Conditioning.Input("around", optional=True,
                                      tooltip="Optional: interpolate around this conditioning (e.g. the empty prompt "
                                              "or your negative) instead of around zero; its first entry is used"),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning",
                                            tooltip="With frames > 1, a batch of conditionings: one per latent of a "
                                                    "batch of the same size")],
        )

    @classmethod
    def execute(cls, conditioning_a, conditioning_b, frames, t, t_start, t_end, method, easing,
                around=None) -> io.NodeOutput:
        ts = interpolation.frame_positions(frames, t, t_start, t_end, easing)
        return io.NodeOutput(interpolate_conditioning(conditioning_a, conditioning_b, ts, method, around))


NODES = [LatentInterpolate, LatentKeyframes, NoiseTravel, ConditioningInterpolate]
