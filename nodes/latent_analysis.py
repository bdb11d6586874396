"""Latent analysis nodes: scan one channel or direction around a base latent; statistics of a latent batch."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..core import directions, latent_stats
from ..core.checks import require_finite
from ..core.directions import Direction
from .common import CATEGORY, latent_with_direction
from .directions import DIRECTION
from .plot import bars_image

FAMILY = f"{CATEGORY}/analysis"
SCAN_MODES = ("channel", "direction")


def _process_in(model, latent_samples: torch.Tensor, name: str = "model"):
    """The model's raw → model-space map, after checking its latent format fits the latent; None without a model."""
    if model is None:
        return None
    latent_format = model.get_model_object("latent_format")
    channels = latent_format.latent_channels
    if channels != latent_samples.shape[1]:
        raise ValueError(f"{name}'s latent format has {channels} channels but latent has {latent_samples.shape[1]}; "
                         "expected the model the latent belongs to")
    return latent_format.process_in


class LatentScan(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentScan",
            display_name="Latent Scan (LSC)",
            category=FAMILY,
            description="Which latent dimension means what? Sweep one channel, or one latent direction (e.g. a PCA "
                        "component from Direction PCA), over a range around a base latent: a batch to decode as a "
                        "grid, with a label per picture.",
            inputs=[
                io.Latent.Input("latent", tooltip="The base latent (any channel count; image or video latents)"),
                io.Combo.Input("mode", options=list(SCAN_MODES), default="channel",
                               tooltip="channel: move one latent channel everywhere; direction: move along the "
                                       "connected latent direction"),
                io.Int.Input("channel", default=0, min=0, max=255,
                             tooltip="channel mode: which channel (0-based; SD1.5/SDXL have 4, SD3/Flux 16)"),
                io.Float.Input("start", default=-3.0, min=-100.0, max=100.0, step=0.1,
                               tooltip="Offset of the first picture. channel mode: in units of the channel's spread "
                                       "(the model's latent format unit when a model is connected, else the base "
                                       "batch's std of that channel); direction mode: strength (a Direction PCA "
                                       "component is one std of its batch, so 1 = one std)"),
                io.Float.Input("end", default=3.0, min=-100.0, max=100.0, step=0.1,
                               tooltip="Offset of the last picture, same units as start"),
                io.Int.Input("steps", default=7, min=2, max=256,
                             tooltip="Pictures per base item, evenly spaced from start to end (odd counts include 0 "
                                     "when the range is symmetric)"),
                DIRECTION.Input("direction", optional=True,
                                tooltip="direction mode: a latent direction (Direction PCA, Direction from Latents, "
                                        "Latent Direction from CLIP, Load Direction); channel mode ignores it"),
                io.Model.Input("model", optional=True,
                               tooltip="channel mode: the model the latent belongs to, so offsets are in its latent "
                                       "format's unit spread (the same range means the same on SD1.5, SDXL, Flux); "
                                       "without it, the base batch's own spread"),
                io.Mask.Input("mask", optional=True, tooltip="Where to move the latent (any resolution, resized)"),
            ],
            outputs=[
                io.Latent.Output(display_name="latent",
                                 tooltip="steps × the base batch, offset-major: every base item at the first offset, "
                                         "then every item at the next, ...; one base latent gives a row left to "
                                         "right. Each picture keeps its item's batch index (same noise if sampled)"),
                io.String.Output(display_name="labels",
                                 tooltip="One label per output picture, one per line, e.g. 'channel 2 -3.00σ'"),
            ],
        )

    @classmethod
    def validate_inputs(cls, start, end):
        if start == end:
            return f"start and end are both {start}; expected a range to scan"
        return True

    @classmethod
    def execute(cls, latent, mode, channel, start, end, steps, direction=None, model=None,
                mask=None) -> io.NodeOutput:
        samples = latent["samples"]
        strengths = directions.strength_steps(start, end, steps)
        if mode == "channel":
            vector = latent_stats.channel_direction(samples, channel, _process_in(model, samples))
            scanned = Direction({"latent": vector}, provenance={"method": f"channel {channel} scan"})
            what, unit = f"channel {channel}", "σ"
        else:
            if direction is None:
                raise ValueError("mode is direction but direction is not connected; connect a latent direction "
                                 "(e.g. Direction PCA) or choose mode channel")
            directions.require_spaces(direction, ("latent",))
            require_finite(samples, "latent")
            scanned = direction
            what, unit = direction.provenance.get("method", "direction"), ""
        out = latent_with_direction(latent, scanned, strengths, mask)
        labels = "\n".join(latent_stats.scan_labels(what, strengths, samples.shape[0], unit))
        return io.NodeOutput(out, labels, ui=ui.PreviewText(labels))


class LatentStats(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_LatentStats",
            display_name="Latent Stats (LSC)",
            category=FAMILY,
            description="Statistics of a latent batch: per-channel mean/std/min/max, each item's norm and RMS, and "
                        "the PCA spectrum. With the model connected, flags items outside its latent format's usual "
                        "range: 'burnt' (too large, e.g. after strong directions or latent arithmetic) or 'washed "
                        "out' (too small, e.g. an averaged latent or zeros).",
            inputs=[
                io.Latent.Input("latent", tooltip="The latents to describe (any channel count; image or video)"),
                io.Model.Input("model", optional=True,
                               tooltip="The model the latents belong to: its latent format gives the usual range, "
                                       "so items can be flagged; without it, only the batch's own statistics"),
            ],
            outputs=[
                io.String.Output(display_name="report", tooltip="The statistics as text"),
                io.Image.Output(display_name="plot",
                                tooltip="Bar charts: per-channel mean and std, per-item RMS, the PCA spectrum"),
                io.String.Output(display_name="flags",
                                 tooltip="One line per item: ok, burnt or washed out (empty without a model)"),
            ],
        )

    @classmethod
    def execute(cls, latent, model=None) -> io.NodeOutput:
        samples = latent["samples"]
        stats = latent_stats.latent_statistics(samples, _process_in(model, samples))
        report = latent_stats.describe(stats, tuple(samples.shape))
        channels = [f"ch{index}" for index in range(samples.shape[1])]
        items = [str(index + 1) for index in range(samples.shape[0])]
        item_rms = (("RMS in model space", stats.model_rms) if stats.model_rms is not None
                    else ("raw RMS (no model)", stats.item_rms))
        panels = [bars_image({"mean": stats.channel_mean.tolist(), "std": stats.channel_std.tolist()}, channels,
                             "per channel"),
                  bars_image({item_rms[0]: item_rms[1].tolist()}, items, "per item")]
        if stats.explained is not None:
            panels.append(bars_image({"explained variance %": (100 * stats.explained).tolist()},
                                     [f"PC{index + 1}" for index in range(len(stats.explained))], "PCA spectrum"))
        flags = "\n".join(stats.flags) if stats.flags is not None else ""
        return io.NodeOutput(report, torch.cat(panels, dim=1), flags, ui=ui.PreviewText(report))


NODES = [LatentScan, LatentStats]
