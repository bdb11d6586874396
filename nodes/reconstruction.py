"""Reconstruction Score (LSC): send pictures through a VAE and back, and score what came back different, per picture
and per pixel (out-of-distribution and artefact detection)."""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io, ui

import comfy.model_management

from ..core.reconstruction import ERRORS, centre_crop, heat_map, perceptual_distances, reconstruct
from .common import CATEGORY, image_channels_first
from .open_clip import OPEN_CLIP
from .progress import LoopProgress

FAMILY = f"{CATEGORY}/analysis"
CHUNK = 16  # pictures per encode–decode: a progress step (and a chance to cancel) each
EMBED_CHUNK = 64  # pictures per CLIP pass
REPORT_LINES = 64  # pictures listed in the report; the rest are summed up in one line


def _report(errors: list[float], error: str, top: float, size: tuple[int, int], cropped: bool,
            clip_distances: list[float] | None) -> str:
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    clip = clip_distances is not None
    header = f"{len(errors)} picture{'s' if len(errors) > 1 else ''}, mean {error} error per pixel (0..1 colour units)"
    if clip:
        header += " and CLIP distance (1 − cos) from picture to reconstruction"
    lines = [header + ", highest error first:"]
    lines += [f"{rank}. picture {index}: {errors[index]:.4g}" + (f" (CLIP {clip_distances[index]:.4g})" if clip else "")
              for rank, index in enumerate(order[:REPORT_LINES], 1)]
    if len(order) > REPORT_LINES:
        lines.append(f"... {len(order) - REPORT_LINES} more, down to {errors[order[-1]]:.4g}")
    lines.append(f"heat map: black 0 to pale yellow {top:.4g} (the batch's largest pixel error)")
    if cropped:
        lines.append(f"the pictures were cut to their centre {size[1]}×{size[0]} (a multiple of the VAE's downscale)")
    return "\n".join(lines)


class ReconstructionScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_ReconstructionScore",
            display_name="Reconstruction Score (LSC)",
            category=FAMILY,
            description="Encode each picture with a VAE and decode it again, and measure how much came back "
                        "different: a VAE reconstructs what its model knows well and what it never saw (unseen "
                        "colours or objects, artefacts, off-distribution edits) worse. Gives the error per picture "
                        "(ranked in the report) and a heat map of where it is, on one scale for the whole batch.",
            inputs=[
                io.Image.Input("image", tooltip="The pictures to score (any number; a size the VAE cannot take "
                                                "exactly is cut to its centre, as VAE Encode does)"),
                io.Vae.Input("vae", tooltip="The image VAE whose reconstruction is measured (the model's own VAE)"),
                io.Combo.Input("error", options=list(ERRORS), default="squared",
                               tooltip="squared: mean squared pixel difference (weighs large misses most); "
                                       "absolute: mean absolute difference (weighs every miss alike)"),
                OPEN_CLIP.Input("open_clip", optional=True,
                                tooltip="Also measure how far CLIP's embedding of each reconstruction is from the "
                                        "picture's (1 − cos, in the report): changes of content rather than of "
                                        "pixels; costs two CLIP passes per picture"),
            ],
            outputs=[
                io.Image.Output(display_name="heat_map",
                                tooltip="The per-pixel error: black none, through purple, red and orange, to pale "
                                        "yellow at the batch's largest error"),
                io.Image.Output(display_name="reconstruction", tooltip="The pictures after encode and decode"),
                io.String.Output(display_name="report", tooltip="Each picture's error, highest first"),
                io.Float.Output(display_name="highest_error",
                                tooltip="The largest per-picture error in the batch (a single picture's own score)"),
            ],
        )

    @classmethod
    def execute(cls, image, vae, error, open_clip=None) -> io.NodeOutput:
        if getattr(vae, "latent_dim", 2) != 2:
            raise ValueError("vae makes video (or audio) latents, which read a batch of pictures as one clip; "
                             "expected an image VAE")
        pictures = image_channels_first(image, "image")
        cropped = centre_crop(pictures, vae.spacial_compression_encode(), "image")

        def round_trip(chunk: torch.Tensor) -> torch.Tensor:
            return vae.decode(vae.encode(chunk.movedim(1, -1))).movedim(-1, 1).to(chunk.device)

        progress = LoopProgress(math.ceil(cropped.shape[0] / CHUNK))
        result = reconstruct(cropped, round_trip, error, CHUNK, progress, "image")
        colours, top = heat_map(result.error_maps)
        where = comfy.model_management.intermediate_device()
        errors = result.errors.tolist()
        clip_distances = None
        if open_clip is not None:
            clip_progress = LoopProgress(math.ceil(2 * cropped.shape[0] / EMBED_CHUNK))
            clip_distances = perceptual_distances(open_clip.image_scorer(), cropped, result.reconstructed,
                                                  EMBED_CHUNK, clip_progress).tolist()
        report = _report(errors, error, top, tuple(cropped.shape[-2:]), cropped.shape != pictures.shape,
                         clip_distances)
        return io.NodeOutput(colours.to(where), result.reconstructed.movedim(1, -1).to(where), report,
                             max(errors), ui=ui.PreviewText(report))


NODES = [ReconstructionScore]
