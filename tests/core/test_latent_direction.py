"""The CLIP-found latent offset: it raises the score it is asked to, stays within its bound, leaves every input alone,
reports progress and stops when told, runs under ComfyUI's inference mode on private copies of the modules, and on the
reference world turns red shapes bluer."""

import copy

import pytest
import torch
import torch.nn.functional as F

from latent_space_control.core.latent_direction import clip_latent_direction

WIDTH = 16


class TinyDecoder(torch.nn.Module):
    """[B, 4, 8, 8] latents -> [B, 3, 32, 32] pictures in 0..1."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, latent):
        return torch.sigmoid(self.conv(F.interpolate(latent, scale_factor=4, mode="nearest")))


class TinyScorer(torch.nn.Module):
    """Pictures -> unit embeddings [B, WIDTH]."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 4 * 4, WIDTH)

    def forward(self, image):
        return F.normalize(self.linear(F.adaptive_avg_pool2d(image, 4).flatten(1)), dim=-1)


def tiny_problem(seed: int = 0):
    torch.manual_seed(seed)
    decoder, scorer = TinyDecoder().eval(), TinyScorer().eval()
    generator = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(6, 4, 8, 8, generator=generator)
    positive = F.normalize(torch.randn(2, WIDTH, generator=generator), dim=-1)
    negative = F.normalize(torch.randn(1, WIDTH, generator=generator), dim=-1)
    return decoder, scorer, latents, positive, negative


def gain(decoder, scorer, latents, positive, negative, offset):
    """The score the search raises: mean cosine to the mean positive minus that to the mean negative."""
    with torch.no_grad():
        embeddings = scorer(decoder(latents + offset))
    return (embeddings @ (F.normalize(positive.mean(0), dim=0) - F.normalize(negative.mean(0), dim=0))).mean().item()


def test_the_offset_raises_the_score_and_is_deterministic():
    decoder, scorer, latents, positive, negative = tiny_problem()
    offset = clip_latent_direction(decoder, scorer, latents, positive, negative, steps=30, batch_size=4)
    assert offset.shape == latents.shape[1:] and offset.dtype == latents.dtype and not offset.requires_grad
    before = gain(decoder, scorer, latents, positive, negative, torch.zeros_like(offset))
    assert gain(decoder, scorer, latents, positive, negative, offset) > before + 0.2
    again = clip_latent_direction(decoder, scorer, latents, positive, negative, steps=30, batch_size=4)
    assert torch.equal(offset, again)


def test_keep_costs_score_but_changes_the_pictures_less():
    decoder, scorer, latents, positive, negative = tiny_problem()
    free = clip_latent_direction(decoder, scorer, latents, positive, negative, steps=40, keep=0.0)
    kept = clip_latent_direction(decoder, scorer, latents, positive, negative, steps=40, keep=20.0)
    with torch.no_grad():
        pictures = decoder(latents)
        change = [(decoder(latents + offset) - pictures).abs().mean().item() for offset in (free, kept)]
    assert change[1] < 0.8 * change[0]
    assert gain(decoder, scorer, latents, positive, negative, free) > gain(decoder, scorer, latents, positive,
                                                                            negative, kept)


@pytest.mark.parametrize("max_norm", [0.05, 0.3])
def test_the_offset_stays_within_max_norm_relative_to_the_latents(max_norm):
    decoder, scorer, latents, positive, negative = tiny_problem()
    latents = latents * 7  # the bound scales with the latents
    seen = []
    offset = clip_latent_direction(decoder, scorer, latents, positive, negative, steps=25, learning_rate=0.2,
                                   max_norm=max_norm, progress=lambda step, steps, delta: seen.append(delta))
    latent_rms = latents.pow(2).mean().sqrt()
    for delta in [*seen, offset]:
        assert delta.pow(2).mean().sqrt() <= max_norm * latent_rms * (1 + 1e-5)
    assert offset.pow(2).mean().sqrt() >= 0.99 * max_norm * latent_rms  # 25 steps of 0.2 reach either bound


def test_inputs_and_modules_are_left_unchanged():
    decoder, scorer, latents, positive, negative = tiny_problem()
    originals = [t.clone() for t in (latents, positive, negative)]
    weights = {name: p.detach().clone() for module in (decoder, scorer) for name, p in module.named_parameters()}
    clip_latent_direction(decoder, scorer, latents, positive, negative, steps=5, batch_size=4)
    for tensor, original in zip((latents, positive, negative), originals):
        assert torch.equal(tensor, original)
    for module in (decoder, scorer):
        assert not module.training
        for name, parameter in module.named_parameters():
            assert torch.equal(parameter, weights[name]) and parameter.grad is None


def test_progress_is_called_every_step_and_its_exception_stops_the_search():
    decoder, scorer, latents, positive, negative = tiny_problem()
    calls = []
    clip_latent_direction(decoder, scorer, latents, positive, negative, steps=4,
                          progress=lambda step, steps, delta: calls.append((step, steps, tuple(delta.shape))))
    assert calls == [(step, 4, (4, 8, 8)) for step in (1, 2, 3, 4)]

    class Interrupted(Exception):
        pass

    def interrupt(step, steps, delta):
        calls.append(step)
        if step == 2:
            raise Interrupted

    calls.clear()
    with pytest.raises(Interrupted):
        clip_latent_direction(decoder, scorer, latents, positive, negative, steps=50, progress=interrupt)
    assert calls == [1, 2]


def test_runs_inside_inference_mode_on_private_copies_of_modules_loaded_there():
    """As in a ComfyUI node: modules and inputs made under inference mode; the caller makes non-inference copies of
    the modules (comfyui-contract.md §3.5) and calls the search still inside inference mode."""
    with torch.inference_mode():
        decoder, scorer, latents, positive, negative = tiny_problem()
        assert decoder.conv.weight.is_inference() and latents.is_inference()
    private_decoder, private_scorer = copy.deepcopy(decoder), copy.deepcopy(scorer)  # outside: normal tensors
    assert not private_decoder.conv.weight.is_inference()
    with torch.inference_mode():
        offset = clip_latent_direction(private_decoder, private_scorer, latents, positive, negative, steps=10)
    before = gain(private_decoder, private_scorer, latents, positive, negative, torch.zeros_like(offset))
    assert gain(private_decoder, private_scorer, latents, positive, negative, offset) > before


@pytest.mark.parametrize("change, message", [
    (dict(latents=torch.zeros(0, 4, 8, 8)), "latents is an empty batch"),
    (dict(latents=torch.full((2, 4, 8, 8), float("nan"))), "latents contains"),
    (dict(latents=torch.zeros(2, 4, 8, 8)), "latents are all zero"),
    (dict(positive=torch.zeros(0, WIDTH)), "positive has shape"),
    (dict(negative=torch.randn(WIDTH)), "negative has shape"),
    (dict(negative=torch.randn(1, WIDTH + 1)), "expected embeddings of the same text encoder"),
    (dict(positive=torch.tensor([[1.0] * WIDTH, [-1.0] * WIDTH])), "positive averages to a zero vector"),
    (dict(positive=torch.full((1, WIDTH), float("inf"))), "positive contains"),
    (dict(steps=0), "steps is 0"),
    (dict(max_norm=0.0), "max_norm is 0.0"),
    (dict(max_norm=float("nan")), "max_norm is nan"),
    (dict(learning_rate=-1.0), "learning_rate is -1.0"),
    (dict(keep=-0.5), "keep is -0.5"),
    (dict(batch_size=0), "batch_size is 0"),
])
def test_bad_inputs_are_named(change, message):
    decoder, scorer, latents, positive, negative = tiny_problem()
    arguments = {**dict(latents=latents, positive=positive, negative=negative, steps=2), **change}
    with pytest.raises(ValueError, match=message):
        clip_latent_direction(decoder, scorer, **arguments)


def _hue_towards_blue(pictures: torch.Tensor, shape_pixels: torch.Tensor) -> torch.Tensor:
    """Per picture, how much bluer than red its shape's pixels are: mean blue minus mean red over the shape."""
    red, _, blue = (pictures.clamp(0, 1) * shape_pixels).sum(dim=(2, 3)).unbind(1)
    return (blue - red) / shape_pixels.sum(dim=(1, 2, 3))


def test_on_the_reference_world_the_direction_turns_new_red_shapes_bluer():
    """Found on 16 encoded red shapes with few steps (kept fast) and applied to 16 others: their shapes' pixels move
    from red towards blue."""
    pytest.importorskip("diffusers", reason="the reference family needs the test extras: pip install -e '.[test]'")
    pytest.importorskip("open_clip", reason="the reference family needs the test extras: pip install -e '.[test]'")
    from latent_space_control.reference import models, world

    with torch.inference_mode():
        family = models.load()
    vae, clip = copy.deepcopy(family.vae), copy.deepcopy(family.clip)
    family.vae, family.clip = vae, clip
    reds = [scene for scene in world.scenes(200, seed=515, held_out=False) if scene.colour == "red"][:32]
    with torch.no_grad():
        text = family.encode_text([f"a {colour} {shape}" for colour in ("blue", "red") for shape in world.SHAPES])
        latents = family.encode(world.render_batch(reds))
    offset = clip_latent_direction(family.decode, family.score_images, latents[:16], text.embedding[:3],
                                   text.embedding[3:], steps=30, batch_size=16)
    pictures = world.render_batch(reds[16:])
    shape_pixels = ((pictures[:, :1] > 0.6) & (pictures[:, 1:2] < 0.3)).float()  # the red shape, not its rim
    with torch.no_grad():
        before = _hue_towards_blue(family.decode(latents[16:]), shape_pixels)
        after = _hue_towards_blue(family.decode(latents[16:] + offset), shape_pixels)
    assert (before < -0.5).all()
    assert (after > before + 0.3).float().mean() >= 0.4
    assert after.mean() > before.mean() + 0.2
