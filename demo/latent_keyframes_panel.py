"""The Latent Keyframes (LSC) panel: four pictures of the world, encoded by the VAE, as the keyframes of a smooth
slerp path (``keyframe_path``, as the node calls it), decoded frame by frame with the keyframes marked."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from ..core.interpolation import keyframe_path
from ..reference import oracle, world
from .frames import frame_row
from .page import figures_table, node_section, step

STEPS = 1
FRAMES_PER_SEGMENT = 4
# One change per segment: size, then shape twice.
KEYFRAMES = tuple(world.Scene(shape, "green", size, "center", "white")
                  for shape, size in (("square", "small"), ("square", "large"), ("circle", "large"),
                                      ("triangle", "large")))


@torch.no_grad()
def render(out: Path, progress, family) -> str:
    with step(progress, "Latent Keyframes: a smooth path through four pictures"):
        keys = family.encode(world.render_batch(list(KEYFRAMES)))
        path = keyframe_path(keys, FRAMES_PER_SEGMENT, "slerp", smooth=True)
        pictures = family.decode(path).clamp(0, 1)
        key_frames = [k * FRAMES_PER_SEGMENT for k in range(len(KEYFRAMES))]
        row = frame_row(out, "latent_keyframes", pictures, [f"frame {i}" for i in range(len(path))],
                        oracle.read_batch(pictures), {frame: f"keyframe {k + 1}" for k, frame in enumerate(key_frames)})
    largest_gap = float((path[key_frames] - keys).abs().max())
    captions = ", ".join(f"<i>{html.escape(scene.caption())}</i>" for scene in KEYFRAMES)
    return node_section("Latent Keyframes (LSC)", "LSC_LatentKeyframes", (
        f"<p>Four keyframes — the world's pictures of {captions}, encoded by the VAE — and the path through them: "
        f"slerp, {FRAMES_PER_SEGMENT} frames per segment, <code>smooth</code> on (a Catmull-Rom spline through the "
        f"keyframes), decoded. The keyframes land exactly on frames {', '.join(map(str, key_frames))} (outlined in "
        "red). Between them the square grows, its sides a little pinched on "
        "the way; its corners round off into the circle; and the circle's top rises to the triangle's point "
        "through a rounded, house-like shape. Each keyframe differs from the next in one attribute, and every frame "
        "between decodes to one green shape on its way from one to the next.</p>"
        + row
        + figures_table({"largest difference between a keyframe's frame and the keyframe latent": f"{largest_gap:g}"})
    ))
