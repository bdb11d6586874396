"""Reads a picture's attributes back from its pixels alone, independent of every model.

Background: the corners. Coverage: each pixel's distance from the background colour. Colour: the nearest of the six
hues to the fully covered pixels' mean. Size: the shape's extent. Position: its centroid. Shape: a triangle's centroid
sits low (1/6 of its height) and it fills half its bounding box. A square and a circle differ in where they reach: a
square's corners stick out along its diagonals, a circle reaches equally far every way. So the oracle weighs each pixel
by coverage·r⁴ about the centroid (the outline counts most) and takes the share of that weight along the diagonals,
sin²(2θ): a disc's is 1/2, a square's 5/7. Unlike how much of its bounding box a shape fills (square 1, circle π/4),
this holds for squares whose sides pinch in and whose corners round off, as a generative model draws them: their
corners still reach out.
"""

from __future__ import annotations

import torch

from .world import BACKGROUNDS, COLOURS, POSITIONS, SIZE, SIZES


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue angle in degrees of colours [..., 3]."""
    r, g, b = rgb.unbind(-1)
    return torch.rad2deg(torch.atan2(3 ** 0.5 * (g - b), 2 * r - g - b)) % 360


_HUES = _hue(torch.tensor(list(COLOURS.values())))
_BACKGROUND_LEVELS = torch.tensor([sum(v) / 3 for v in BACKGROUNDS.values()])
_SIZE_THRESHOLD = sum(2 * h for h in SIZES.values()) / 2
_LEFT_EDGE = (POSITIONS["left"] + POSITIONS["center"]) / 2
_RIGHT_EDGE = (POSITIONS["center"] + POSITIONS["right"]) / 2
_EDGE_GAIN = 2.5


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0


def _component(mask: torch.Tensor, start: int) -> torch.Tensor:
    """The 8-connected region of ``mask`` that holds the flat pixel index ``start``."""
    region = torch.zeros_like(mask)
    region.view(-1)[start] = True
    while True:
        grown = _dilate(region) & mask
        if torch.equal(grown, region):
            return region
        region = grown


def _diagonal_share(coverage: torch.Tensor, centre_x: float, centre_y: float) -> float:
    """Share of the shape's coverage·r⁴ about its centre that lies along the diagonals: the weighted mean of
    sin²(2θ) = (2·dx·dy)² / r⁴, 1 on the diagonals and 0 on the axes."""
    y, x = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    dx, dy = x - centre_x, y - centre_y
    return float((coverage * (2 * dx * dy) ** 2).sum() / (coverage * (dx * dx + dy * dy) ** 2).sum())


def read(image: torch.Tensor) -> dict[str, str]:
    """Attributes of one picture [3, SIZE, SIZE] in 0..1 (values outside are clamped)."""
    image = image.float().clamp(0, 1)
    corners = torch.stack([image[:, 0, 0], image[:, 0, -1], image[:, -1, 0], image[:, -1, -1]])
    background = corners.median(dim=0).values
    background_name = list(BACKGROUNDS)[int((_BACKGROUND_LEVELS - background.mean()).abs().argmin())]

    distance = (image - background[:, None, None]).norm(dim=0)
    if distance.max() < 0.2:
        return {"shape": "none", "colour": "none", "size": "none", "position": "none", "background": background_name}
    # Soft coverage: how much of each pixel the shape covers, from its distance to the background colour relative to
    # a fully covered pixel's; measuring with it keeps anti-aliased edges from tipping small shapes' readings.
    coverage = (distance / distance.max()).clamp(0, 1)
    shape_pixels = _component(coverage > 0.5, int(coverage.argmax()))
    coverage = coverage * _dilate(shape_pixels)  # stray pixels away from the shape are noise, not shape
    # A symmetric blur (a VAE's, a sampler's) leaves straight edges' half-coverage level in place but widens their
    # ramps; steepening the ramp around 0.5 undoes most of it while keeping sub-pixel edges of sharp pictures.
    coverage = ((coverage - 0.5) * _EDGE_GAIN + 0.5).clamp(0, 1)

    core = shape_pixels & (coverage > 0.8)  # fully covered pixels carry the pure colour
    colour_mean = image[:, core].mean(dim=1)
    hue_gap = ((_hue(colour_mean) - _HUES + 180) % 360 - 180).abs()
    colour = list(COLOURS)[int(hue_gap.argmin())]

    area = float(coverage.sum())
    width, height = float(coverage.amax(dim=0).sum()), float(coverage.amax(dim=1).sum())
    size = "large" if max(height, width) > _SIZE_THRESHOLD else "small"
    centre_x = float((coverage.sum(dim=0) * (torch.arange(SIZE) + 0.5)).sum()) / area
    position = "left" if centre_x < _LEFT_EDGE else "right" if centre_x > _RIGHT_EDGE else "center"
    fill = area / (height * width)
    rows = torch.nonzero(coverage.amax(dim=1) > 0.5).flatten()
    middle_y = float(rows.min() + rows.max() + 1) / 2
    centre_y = float((coverage.sum(dim=1) * (torch.arange(SIZE) + 0.5)).sum()) / area
    sag = (centre_y - middle_y) / height  # an upright triangle's mass sits 1/6 of its height low; blur keeps that
    if sag > 0.08 or fill < 0.64:
        shape = "triangle"
    else:  # 0.6 lies between a disc's 1/2 and a square's 5/7; blur, noise and pinched sides leave each on its side
        shape = "square" if _diagonal_share(coverage, centre_x, centre_y) > 0.6 else "circle"
    return {"shape": shape, "colour": colour, "size": size, "position": position, "background": background_name}


def read_batch(images: torch.Tensor) -> list[dict[str, str]]:
    return [read(image) for image in images]


def accuracy(readings: list[dict[str, str]], truths: list[dict[str, str]]) -> dict[str, float]:
    """Per-attribute fraction of readings that match the truth."""
    return {name: sum(r[name] == t[name] for r, t in zip(readings, truths)) / len(truths) for name in truths[0]}


assert SIZE == 32, "the oracle's thresholds are set for 32×32 pictures"
