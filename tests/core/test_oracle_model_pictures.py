"""The oracle reads squares as a generative model draws them: sides pinched in by about a pixel, corners rounded off.

Measured from its anti-aliased pixels, such a small square fills only 0.8-0.89 of its bounding box (a ruled square all
of it, a circle π/4): reading shape by that fill, the oracle once took half of the reference family's small squares for
circles although they look square to a person. The pinched squares here are synthesised, anti-aliased as world.py
renders, so the check is exact and needs no model; read by their fill they are circles, every one.
"""

import torch

from latent_space_control.reference import oracle, world

SUPERSAMPLE = 4  # as world.py: each pixel's coverage from 4×4 samples
PINCH, ROUNDING = 1.0, 1.0  # pixels: as the model's misread small squares, by the oracle's fill and corners
SCENES = [world.Scene("square", colour, "small", position, background, dy=dy, dx=dx)
          for colour in world.COLOURS for position in world.POSITIONS for background in world.BACKGROUNDS
          for dy, dx in ((0.0, 0.0), (-2.3, 0.4))]


def pinched_square_coverage(scene: world.Scene) -> torch.Tensor:
    """Coverage [SIZE, SIZE] of the scene's square with each side bowed inwards by PINCH pixels at its middle and each
    corner rounded to a radius of ROUNDING pixels."""
    coords = (torch.arange(world.SIZE * SUPERSAMPLE, dtype=torch.float32) + 0.5) / SUPERSAMPLE
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    across = (x - world.POSITIONS[scene.position] - scene.dx).abs()
    down = (y - world.SIZE / 2 - scene.dy).abs()
    half = world.SIZES[scene.size] * 0.9  # world.py's square of this size
    inside = (across <= half - PINCH * (1 - (down / half) ** 2)) & (down <= half - PINCH * (1 - (across / half) ** 2))
    arc_centre = half - ROUNDING
    inside &= (across - arc_centre).clamp(min=0) ** 2 + (down - arc_centre).clamp(min=0) ** 2 <= ROUNDING ** 2
    return inside.float().reshape(world.SIZE, SUPERSAMPLE, world.SIZE, SUPERSAMPLE).mean(dim=(1, 3))


def pinched_square(scene: world.Scene) -> torch.Tensor:
    """The scene's picture [3, SIZE, SIZE] with a pinched square in place of world.py's ruled one."""
    coverage = pinched_square_coverage(scene)
    colour = torch.tensor(world.COLOURS[scene.colour]) * scene.brightness
    background = torch.tensor(world.BACKGROUNDS[scene.background])
    return background[:, None, None] * (1 - coverage) + colour[:, None, None] * coverage


def test_oracle_reads_pinched_squares_as_squares():
    readings = oracle.read_batch(torch.stack([pinched_square(scene) for scene in SCENES]))
    assert readings == [scene.attributes() for scene in SCENES]


def test_circles_of_the_same_size_still_read_as_circles():
    circles = [world.Scene("circle", s.colour, s.size, s.position, s.background, s.dy, s.dx) for s in SCENES]
    readings = oracle.read_batch(world.render_batch(circles))
    assert readings == [scene.attributes() for scene in circles]
