"""Attribute Correlation: a latent batch and one score per item (typed, or an objective read on the decoded pictures)
-> the direction that best predicts the score, the correlations of channels and PCA components with it, and a chart."""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io, ui

import comfy.model_management

from ..core import correlation
from ..core.directions import Direction
from ..core.optimize import scaled_decoder
from .common import CATEGORY, vae_pictures
from .directions import DIRECTION
from .optimize import OBJECTIVE, decode_scale_input
from .plot import bars_image
from .progress import LoopProgress

FAMILY = f"{CATEGORY}/analysis"


class AttributeCorrelation(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LSC_AttributeCorrelation",
            display_name="Attribute Correlation (LSC)",
            category=FAMILY,
            description="Find a direction from examples: give a batch of latents and how much of an attribute each "
                        "shows (typed scores, or an objective that reads the decoded pictures). Returns the linear "
                        "direction that best predicts the score (ridge regression; for a 0/1 score about the mean "
                        "difference of the 1s and 0s), a report of how well it predicts and of how each channel and "
                        "PCA component correlates with the score, and a bar chart of those correlations. Apply the "
                        "direction with Apply Direction, Direction Sweep or Latent Scan.",
            inputs=[
                io.Latent.Input("latent", tooltip="A batch of at least 3 latents (e.g. several prompts or seeds "
                                                  "sampled together, or Latent Batch)"),
                io.String.Input("scores", multiline=True, default="",
                                tooltip="One number per latent, in batch order, separated by commas, spaces or new "
                                        "lines: how much of the attribute each shows (higher = more; 0/1 works). "
                                        "Leave empty to score with objective instead"),
                io.Int.Input("components", default=8, min=1, max=64,
                             tooltip="How many PCA components of the batch to correlate with the score (at most "
                                     "the batch size − 1)"),
                decode_scale_input(),
                OBJECTIVE.Input("objective", optional=True,
                                tooltip="Instead of typed scores: each latent's decoded picture is scored by minus "
                                        "the objective's loss (a loss is lower when the objective is met), so higher "
                                        "is more of what it asks: CLIP text 'red' gives the similarity to 'red' − 1, "
                                        "a colour statistic minus the distance to its colour. Needs vae"),
                io.Vae.Input("vae", optional=True, tooltip="The VAE of the latents, to decode them for objective"),
            ],
            outputs=[
                DIRECTION.Output(display_name="direction",
                                 tooltip="The latent direction that raises the score: strength 1 is the change that "
                                         "goes with one standard deviation more score in the batch (try 2 to 4)"),
                io.String.Output(display_name="report",
                                 tooltip="The fit (R² on the batch and leave-one-out), the score per unit of "
                                         "strength, and each channel's and PCA component's correlation"),
                io.Image.Output(display_name="chart",
                                tooltip="Bar charts: correlation with the score of each channel's mean, and of each "
                                        "PCA component's coordinate"),
            ],
        )

    @classmethod
    def validate_inputs(cls, scores):
        if scores is None:  # linked: checked when it runs
            return True
        try:
            correlation.parse_scores(scores)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, latent, scores, components, decode_scale, objective=None, vae=None) -> io.NodeOutput:
        samples = latent["samples"].float()
        correlation.require_items(samples)
        typed = scores.strip() != ""
        if typed == (objective is not None):
            raise ValueError("scores is typed and objective is connected; expected one of them" if typed else
                             "scores is empty and no objective is connected; expected one score per latent in "
                             "scores, or an objective (with its vae) to score the decoded pictures")
        if typed:
            values = correlation.require_scores(torch.tensor(correlation.parse_scores(scores)), samples.shape[0])
            source = "typed"
        else:
            if vae is None:
                raise ValueError(f"objective ({objective.describe()}) scores the decoded pictures but vae is not "
                                 "connected; expected the VAE of the latents")
            decode = scaled_decoder(lambda chunk: vae_pictures(vae, chunk), decode_scale)
            progress = LoopProgress(math.ceil(samples.shape[0] / correlation.DECODE_CHUNK))
            read = correlation.objective_scores(objective, samples, decode, progress)
            values = correlation.require_scores(read, samples.shape[0], "objective (its score of each picture)")
            source = f"minus the loss of {objective.describe()}"
        fit = correlation.ridge_fit(samples, values)
        channels = correlation.channel_correlations(samples, values)
        found = correlation.component_correlations(samples, values, components)
        report = correlation.correlation_report(fit, channels, found, values, source)
        direction = Direction({"latent": fit.direction.to(comfy.model_management.intermediate_device())},
                              provenance={"method": "attribute correlation (ridge regression on scores)",
                                          "scores": source, "fit": f"R² {fit.r2:.3f}, leave-one-out {fit.loo_r2:.3f}"})
        chart = torch.cat([
            bars_image({"channel mean": channels.tolist()}, [str(c) for c in range(len(channels))],
                       "correlation with the score (Pearson, −1..1)"),
            bars_image({"PCA component (share of variance)": found.correlations.tolist()},
                       [f"{k + 1}" for k in range(len(found.correlations))]),
        ], dim=1)
        return io.NodeOutput(direction, report, chart, ui=ui.PreviewText(report))


NODES = [AttributeCorrelation]
