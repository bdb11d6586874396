"""The procedural world: 32×32 RGB pictures of one shape whose every attribute is known, with an English caption.

32×32 is the smallest size at which three shapes at two sizes and three positions stay clearly apart after
anti-aliasing, and it keeps the VAE's latent (8×8 at a downscale of 4) small enough to train on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterator

import torch

SIZE = 32
SHAPES = ("circle", "square", "triangle")
COLOURS = {  # six hues 60 degrees apart on the colour wheel, at full saturation
    "red": (0.90, 0.10, 0.10), "yellow": (0.90, 0.85, 0.10), "green": (0.10, 0.80, 0.15),
    "cyan": (0.10, 0.80, 0.85), "blue": (0.15, 0.20, 0.90), "magenta": (0.85, 0.15, 0.85),
}
SIZES = {"small": 4.5, "large": 7.5}  # half the shape's extent, in pixels
POSITIONS = {"left": 9.5, "center": 16.0, "right": 22.5}  # horizontal centre, in pixels
BACKGROUNDS = {"white": (0.95, 0.95, 0.95), "black": (0.05, 0.05, 0.05)}
ATTRIBUTES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "position": tuple(POSITIONS),
              "background": tuple(BACKGROUNDS)}
OPTIONAL_IN_PROMPTS = ("size", "colour", "position", "background")  # a prompt always names the shape
# Shape-and-colour pairs that no model of the family sees in training (one per shape, one per colour), so that
# controls can show they reach pictures the model never saw; ``ref_t2i_heldout_accuracy`` measures them.
HELD_OUT = frozenset({("circle", "magenta"), ("square", "cyan"), ("triangle", "green")})
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    position: str
    background: str
    # Small variations that carry no attribute: vertical offset, horizontal jitter (pixels), brightness factor.
    dy: float = 0.0
    dx: float = 0.0
    brightness: float = 1.0

    def caption(self) -> str:
        """The full caption the family was trained on: every attribute, the background last."""
        return self.prompt(OPTIONAL_IN_PROMPTS)

    def prompt(self, named: Collection[str], background_first: bool = False) -> str:
        """A prompt as artists write them: the shape and only the ``named`` other attributes, the background clause
        last or first ("white background, a red circle")."""
        unknown = set(named) - set(OPTIONAL_IN_PROMPTS)
        if unknown:
            raise ValueError(f"named holds {sorted(unknown)}; expected some of {', '.join(OPTIONAL_IN_PROMPTS)}")
        words = ["a", *(getattr(self, name) for name in ("size", "colour") if name in named), self.shape]
        if "position" in named:
            words.append("in the middle" if self.position == "center" else f"on the {self.position}")
        subject = " ".join(words)
        if "background" not in named:
            return subject
        clause = f"{self.background} background"
        return f"{clause}, {subject}" if background_first else f"{subject}, {clause}"

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    @property
    def held_out(self) -> bool:
        return (self.shape, self.colour) in HELD_OUT


def random_scene(generator: torch.Generator) -> Scene:
    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    def uniform(low, high):
        return low + (high - low) * float(torch.rand((), generator=generator))

    return Scene(pick(SHAPES), pick(tuple(COLOURS)), pick(tuple(SIZES)), pick(tuple(POSITIONS)),
                 pick(tuple(BACKGROUNDS)), dy=uniform(-4.0, 4.0), dx=uniform(-1.0, 1.0), brightness=uniform(0.85, 1.0))


def _random_scenes(generator: torch.Generator, held_out: bool | None) -> Iterator[Scene]:
    """Random scenes: all of them (``held_out`` None), only the ``HELD_OUT`` pairs (True) or only the others (False)."""
    while True:
        scene = random_scene(generator)
        if held_out is None or scene.held_out == held_out:
            yield scene


def scenes(count: int, seed: int, held_out: bool | None = None) -> list[Scene]:
    """``count`` random scenes, the same for the same seed; ``held_out`` as ``_random_scenes``'."""
    draw = _random_scenes(torch.Generator().manual_seed(seed), held_out)
    return [next(draw) for _ in range(count)]


def partial_prompts(count: int, seed: int) -> list[tuple[Scene, str, frozenset[str]]]:
    """``count`` random scenes of the pairs seen in training, each with a prompt that names the shape and each other
    attribute with probability 1/2, the background clause first half the time: (scene, prompt, the attributes it
    names, shape included)."""
    generator = torch.Generator().manual_seed(seed)
    draw = _random_scenes(generator, held_out=False)
    prompts = []
    for _ in range(count):
        scene = next(draw)
        kept = torch.rand(len(OPTIONAL_IN_PROMPTS) + 1, generator=generator) < 0.5
        named = frozenset(name for name, keep in zip(OPTIONAL_IN_PROMPTS, kept) if keep)
        prompts.append((scene, scene.prompt(named, background_first=bool(kept[-1])), named | {"shape"}))
    return prompts


def _coverage(scene: Scene) -> torch.Tensor:
    """Fraction of each pixel the shape covers, [SIZE, SIZE], by supersampling."""
    n = SIZE * _SUPERSAMPLE
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / _SUPERSAMPLE
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    cx, cy, h = POSITIONS[scene.position] + scene.dx, SIZE / 2 + scene.dy, SIZES[scene.size]
    if scene.shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    elif scene.shape == "square":
        half = h * 0.9  # a square of the same extent looks larger than a circle: keep their areas closer
        inside = ((x - cx).abs() <= half) & ((y - cy).abs() <= half)
    else:  # an upright isosceles triangle, base and height 2h
        top, bottom = cy - h, cy + h
        half_width = (y - top) / (bottom - top) * h
        inside = (y >= top) & (y <= bottom) & ((x - cx).abs() <= half_width)
    return inside.float().reshape(SIZE, _SUPERSAMPLE, SIZE, _SUPERSAMPLE).mean(dim=(1, 3))


def render(scene: Scene) -> torch.Tensor:
    """The scene's picture: float32 [3, SIZE, SIZE] in 0..1."""
    coverage = _coverage(scene)
    colour = torch.tensor(COLOURS[scene.colour]) * scene.brightness
    background = torch.tensor(BACKGROUNDS[scene.background])
    return background[:, None, None] * (1 - coverage) + colour[:, None, None] * coverage


def render_batch(batch: list[Scene]) -> torch.Tensor:
    return torch.stack([render(scene) for scene in batch])
