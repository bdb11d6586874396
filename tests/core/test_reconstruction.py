"""Reconstruction error: per-picture and per-pixel errors of a round trip, chunking, cropping, the heat map, and the
reference VAE telling world pictures from off-world ones."""

import pytest
import torch

from latent_space_control.core import reconstruction


def pictures(count=5, size=8, seed=0):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_errors_are_mean_squared_and_absolute_pixel_differences():
    original = pictures()
    offset = torch.zeros_like(original)
    offset[1, :, 2, 3] = 0.3  # one pixel of one picture, all channels
    offset[3, 0] = 0.1  # the red channel of a whole picture
    round_trip = lambda x: x + offset  # noqa: E731  (one chunk: the whole batch)
    result = reconstruction.reconstruct(original, round_trip, "squared", chunk_size=len(original))
    expected = torch.tensor([0.0, 0.09 / 64, 0.0, 0.01 / 3, 0.0])
    assert torch.allclose(result.errors, expected, atol=1e-7)
    assert result.error_maps.shape == (5, 8, 8)
    assert result.error_maps[1, 2, 3] == pytest.approx(0.09) and result.error_maps[1].sum() == pytest.approx(0.09)
    absolute = reconstruction.reconstruct(original, round_trip, "absolute", chunk_size=len(original))
    assert torch.allclose(absolute.errors, torch.tensor([0.0, 0.3 / 64, 0.0, 0.1 / 3, 0.0]), atol=1e-7)
    assert torch.equal(absolute.reconstructed, original + offset)


def test_round_trip_runs_in_chunks_with_progress_and_the_input_is_left_alone():
    original = pictures(7)
    before = original.clone()
    sizes, steps = [], []

    def round_trip(x):
        sizes.append(x.shape[0])
        return (x * 0.5).clamp(0, 1)

    result = reconstruction.reconstruct(original, round_trip, chunk_size=3,
                                        progress=lambda done, total, _: steps.append((done, total)))
    assert sizes == [3, 3, 1] and steps == [(1, 3), (2, 3), (3, 3)]
    assert torch.allclose(result.errors, ((original * 0.5 - original) ** 2).mean((1, 2, 3)))
    assert torch.equal(original, before)


def test_perceptual_distance_is_one_minus_cosine_of_the_embeddings_in_one_chunked_pass():
    weights = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    sizes = []

    def score(image):
        sizes.append(image.shape[0])
        return torch.nn.functional.normalize(image.mean((-1, -2)) @ weights, dim=-1)

    original = pictures(4)
    changed = original.clone()
    changed[2] = 1 - changed[2]  # a negative: another embedding
    distances = reconstruction.perceptual_distances(score, original, changed, chunk_size=5)
    assert sizes == [5, 3]  # pictures and reconstructions embedded together
    expected = 1 - (score(original) * score(changed)).sum(1)
    assert torch.allclose(distances, expected, atol=1e-6)
    assert distances[2] > 1e-3 and torch.allclose(distances[[0, 1, 3]], torch.zeros(3), atol=1e-6)


def test_centre_crop_cuts_as_comfyui_vae_encode_does():
    image = torch.arange(11 * 14, dtype=torch.float32).reshape(1, 1, 11, 14)
    cropped = reconstruction.centre_crop(image, 4)
    assert cropped.shape == (1, 1, 8, 12)
    assert torch.equal(cropped, image[..., 1:9, 1:13])
    assert reconstruction.centre_crop(image[..., :8, :12], 4).shape == (1, 1, 8, 12)


def test_heat_map_is_one_scale_for_the_batch_from_black_to_pale_yellow():
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[1, 1, 1], maps[1, 2, 2] = 0.2, 0.1, 0.05
    colours, top = reconstruction.heat_map(maps)
    assert top == pytest.approx(0.2) and colours.shape == (2, 4, 4, 3)
    assert torch.allclose(colours[0, 0, 0], torch.tensor(reconstruction.HEAT_COLOURS[-1]))
    assert torch.allclose(colours[0, 3, 3], torch.tensor(reconstruction.HEAT_COLOURS[0]))
    assert torch.allclose(colours[1, 1, 1], torch.tensor(reconstruction.HEAT_COLOURS[2]))  # half the top
    brightness = colours.sum(-1)
    assert brightness[0, 0, 0] > brightness[1, 1, 1] > brightness[1, 2, 2] > brightness[1, 0, 0]
    fixed, _ = reconstruction.heat_map(maps, top=0.1)
    assert torch.allclose(fixed[0, 0, 0], fixed[1, 1, 1])  # clipped at the given top
    blank, zero = reconstruction.heat_map(torch.zeros(1, 2, 2))
    assert zero == 0 and torch.allclose(blank, torch.tensor(reconstruction.HEAT_COLOURS[0]).expand(1, 2, 2, 3))


@pytest.mark.parametrize("images, round_trip, error, message", [
    (torch.zeros(0, 3, 8, 8), lambda x: x, "squared", "image is an empty batch"),
    (torch.zeros(2, 4, 8, 8), lambda x: x, "squared", "expected RGB pictures [batch, 3, height, width]"),
    (pictures(), lambda x: x[..., :4, :4], "squared", "the reconstruction of image has shape (5, 3, 4, 4)"),
    (pictures(), lambda x: x, "cubic", "error is 'cubic'; expected one of squared, absolute"),
    (torch.full((1, 3, 4, 4), float("inf")), lambda x: x, "squared", "image contains 48 NaN/Inf values"),
])
def test_bad_input_is_refused_naming_it(images, round_trip, error, message):
    with pytest.raises(ValueError) as raised:
        reconstruction.reconstruct(images, round_trip, error)
    assert message in str(raised.value), str(raised.value)


def test_crop_smaller_than_the_downscale_is_refused():
    with pytest.raises(ValueError, match="image is 3×5 pixels; expected at least 4×4"):
        reconstruction.centre_crop(torch.zeros(1, 3, 5, 3), 4)


def test_reference_vae_reconstructs_world_pictures_better_than_two_shapes():
    from latent_space_control.reference import models, world

    family = models.load()
    scenes = world.scenes(8, 11)
    singles = world.render_batch(scenes)
    left = world.render_batch([world.Scene(s.shape, s.colour, "small", "left", "white") for s in scenes])
    right = world.render_batch([world.Scene(s.shape, s.colour, "small", "right", "white") for s in scenes[::-1]])
    doubles = torch.minimum(left, right)  # on white, the darker pixel is the shape's
    with torch.no_grad():
        round_trip = lambda x: family.decode(family.encode(x)).clamp(0, 1)  # noqa: E731
        world_errors = reconstruction.reconstruct(singles, round_trip).errors
        off_errors = reconstruction.reconstruct(doubles, round_trip).errors
    assert off_errors.min() > world_errors.max(), (off_errors, world_errors)
