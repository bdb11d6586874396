"""The latent analysis panel (Attribute Correlation, Latent Scan, Latent Stats): which latent dimension means what, on
the reference world. 64 pictures of every colour are sampled from their captions and scored by the CLIP text
objective "red" on their decoded pictures; Attribute Correlation's ridge fit gives the direction that predicts the
score, and the correlation of each channel and principal component with it. That direction is then scanned around
three non-red pictures (``apply_to_latent`` per strength, as Latent Scan applies it), the first picture's channels are
scanned one at a time in the model's unit spread (``channel_direction``), and Latent Stats reads the bases as sampled,
×3 and ×0.2."""

from __future__ import annotations

import html
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core import correlation, latent_stats, objectives
from ..core.directions import apply_to_latent, mean_difference, strength_steps
from ..core.noise import seeded_noise
from ..reference import models, oracle, world
from .frames import frame_row
from .page import bar_chart, figures_table, node_section, step

STEPS = 3
ATTRIBUTE = "red"
EXAMPLES, EXAMPLE_SEED = 64, 41  # the pictures the direction is found from (every colour)
COMPONENTS = 8  # principal components whose correlation is charted
BASES = (world.Scene("circle", "blue", "large", "left", "white"),
         world.Scene("square", "magenta", "large", "right", "black"),
         world.Scene("triangle", "yellow", "small", "center", "white"))
SEEDS = (21, 22, 23)
# Strength 1 is one std more score in the examples; benchmarks/_analysis_correlation_bench.py measures strength 3.
SCAN = strength_steps(-3.0, 6.0, 4)
CHANNEL_SCAN = strength_steps(-3.0, 3.0, 5)
FACTORS = {"as sampled": 1.0, "×3": 3.0, "×0.2": 0.2}


def examples(family) -> tuple[torch.Tensor, list[str]]:
    """Raw latents of EXAMPLES pictures of every colour, and their captions."""
    scenes = world.scenes(EXAMPLES, EXAMPLE_SEED, held_out=False)
    captions = [scene.caption() for scene in scenes]
    noise = torch.cat([seeded_noise(EXAMPLE_SEED + 1 + i, (1, *models.LATENT_SHAPE)) for i in range(EXAMPLES)])
    return family.sample_latents(family.encode_text(captions).hidden_states, noise), captions


def redness(family, latents: torch.Tensor) -> torch.Tensor:
    """Each latent's score as Attribute Correlation reads an objective: minus the CLIP text objective's loss."""
    embedding = family.encode_text([ATTRIBUTE]).embedding.float()[0]
    objective = objectives.clip_text(family.score_images, embedding, None, f"CLIP text '{ATTRIBUTE}'", 1)
    return correlation.objective_scores(objective, latents, lambda x: family.decode(x).clamp(0, 1))


def scan_row(out: Path, family, name: str, base: torch.Tensor, direction: torch.Tensor, strengths: list[float],
             label: str) -> tuple[str, list[dict[str, str]]]:
    latents = torch.cat([apply_to_latent(base, direction, strength) for strength in strengths])
    pictures = family.decode(latents).clamp(0, 1)
    readings = oracle.read_batch(pictures)
    labels = [f"{label} {strength:+g}" for strength in strengths]
    return frame_row(out, name, pictures, labels, readings, {strengths.index(0.0): "base"}), readings


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    process_in = lambda x: x * family.scaling_factor  # noqa: E731 (the reference latent format)
    with step(progress, "Attribute Correlation: sampling and scoring the examples"):
        latents, _ = examples(family)
        scores = redness(family, latents)
        red = torch.tensor([reading["colour"] == ATTRIBUTE
                            for reading in oracle.read_batch(family.decode(latents).clamp(0, 1))])
        fit = correlation.ridge_fit(latents, scores)
        channels = correlation.channel_correlations(latents, scores)
        components = correlation.component_correlations(latents, scores, COMPONENTS)
        cosine = float(F.cosine_similarity(fit.direction.flatten().double(),
                                           mean_difference(latents[red], latents[~red]).flatten().double(), dim=0))
    with step(progress, "Latent Scan: the found direction and the channels"):
        noise = torch.cat([seeded_noise(seed, (1, *models.LATENT_SHAPE)) for seed in SEEDS])
        bases = family.sample_latents(family.encode_text([scene.caption() for scene in BASES]).hidden_states, noise)
        rows, red_at_end = [], 0
        for index, scene in enumerate(BASES):
            row, readings = scan_row(out, family, f"latent_scan_red_{index}", bases[index:index + 1], fit.direction,
                                     SCAN, ATTRIBUTE)
            rows.append(f"<p><i>{html.escape(scene.caption())}</i></p>{row}")
            red_at_end += readings[-1]["colour"] == ATTRIBUTE
        channel_rows = []
        for channel in range(bases.shape[1]):
            vector = latent_stats.channel_direction(bases[:1], channel, process_in)
            row, _ = scan_row(out, family, f"latent_scan_channel_{channel}", bases[:1], vector, CHANNEL_SCAN,
                              f"channel {channel}")
            channel_rows.append(f"<p><i>channel {channel}</i></p>{row}")
    with step(progress, "Latent Stats: sampled, burnt, washed out"):
        stats = latent_stats.latent_statistics(torch.cat([bases * factor for factor in FACTORS.values()]), process_in)
        rms = stats.model_rms.reshape(len(FACTORS), len(BASES))
    flags = [stats.flags[i * len(BASES):(i + 1) * len(BASES)] for i in range(len(FACTORS))]
    figures = {
        "examples the oracle reads red": f"{int(red.sum())} of {EXAMPLES}",
        "cosine of the found direction with the red − not-red mean difference": f"{cosine:.3f}",
        "fit R² (leave-one-out)": f"{fit.loo_r2:.3f}",
        f"bases the oracle reads red at strength {SCAN[-1]:+g} (none at 0)": f"{red_at_end} of {len(BASES)}",
        **{f"Latent Stats flags, latents {name}": ", ".join(flag) for name, flag in zip(FACTORS, flags)},
        "healthy RMS in model space (Latent Stats)": f"{latent_stats.WASHED_OUT_BELOW:g} to "
                                                     f"{latent_stats.BURNT_ABOVE:g}",
    }
    return node_section("Attribute Correlation, Latent Scan, Latent Stats (LSC)", "LSC_AttributeCorrelation", (
        f"<p><b>Which latent dimension means what?</b> {EXAMPLES} pictures of every colour are sampled from their "
        f"captions and each is scored by the CLIP text objective “{ATTRIBUTE}” on its decoded picture. Attribute "
        "Correlation (LSC) correlates every channel's mean and every principal component's coordinate with the "
        "score, and fits the direction that predicts it (ridge regression; strength 1 is one standard deviation more "
        "score): a direction found from examples, with no prompt pair.</p>"
        + bar_chart({"channel mean": channels.tolist()}, [f"channel {c}" for c in range(len(channels))],
                    "correlation with the score")
        + bar_chart({"principal component": components.correlations.tolist()},
                    [f"PC {k + 1}" for k in range(len(components.correlations))], "correlation with the score")
        + "<h3>Latent Scan (LSC)</h3>"
        "<p>The found direction added to three non-red pictures at strengths "
        f"{', '.join(f'{s:g}' for s in SCAN)} (strength 0, outlined, is the base picture). One offset for the whole "
        "latent pushes hues towards red where the shape is, and past the far end shapes break. Below, the first "
        "picture's four channels are scanned one at a time, ±3 in the model's unit spread (the latent format's "
        "scale, so the same range means the same on every model family).</p>"
        f"<div class='blocks'><div><p><b>the found “{ATTRIBUTE}” direction</b></p>{''.join(rows)}</div>"
        f"<div><p><b>one channel at a time</b></p>{''.join(channel_rows)}</div></div>"
        "<h3>Latent Stats (LSC)</h3><p>The three base latents as sampled, ×3 and ×0.2, measured in the model's "
        "space: a healthy latent's RMS lies between the thresholds; larger is flagged burnt, smaller washed out, "
        "the cause of harsh or flat pictures after latent arithmetic.</p>"
        + bar_chart({scene.caption().split(",")[0]: rms[:, i].tolist() for i, scene in enumerate(BASES)},
                    list(FACTORS), "RMS in model space")
        + figures_table(figures)
    ))
