"""Seeded noise and seed travel: every seed's frame is exactly that seed's noise, and every frame is unit Gaussian."""

import pytest
import torch

from latent_space_control.core.noise import noise_travel, seed_frames, seeded_noise


def test_seeded_noise_is_comfyuis_seeded_noise():
    torch.manual_seed(1234)  # the recipe ComfyUI uses for a seed's initial noise
    expected = torch.randn((1, 4, 8, 8))
    assert torch.equal(seeded_noise(1234, (1, 4, 8, 8)), expected)


def test_noise_travel_visits_every_seed_and_stays_gaussian():
    seeds = [3, 99, 7]
    travel = noise_travel(seeds, (16, 32, 32), frames=9)
    assert travel.shape == (9, 16, 32, 32)
    for frame, seed in zip((0, 4, 8), seeds):
        assert torch.equal(travel[frame], seeded_noise(seed, (1, 16, 32, 32))[0])
    stds = travel.flatten(1).std(dim=1)
    assert ((stds - 1).abs() < 0.03).all()
    picked = noise_travel(seeds, (16, 32, 32), frames=9, indices=[6, 2])
    assert torch.equal(picked, travel[[6, 2]])


@pytest.mark.parametrize("seeds, frames, expected", [
    (2, 2, [0, 1]), (3, 3, [0, 1, 2]), (3, 4, [0, 2, 3]), (3, 9, [0, 4, 8]), (4, 6, [0, 2, 3, 5]),
    (5, 7, [0, 2, 3, 5, 6]),
])
def test_seeds_sit_on_distinct_frames_spread_as_evenly_as_whole_frames_allow(seeds, frames, expected):
    assert seed_frames(seeds, frames) == expected


def test_every_seed_has_its_own_exact_frame_when_frames_do_not_divide_evenly():
    """Seeds [1, 2, 3] over 4 frames: the middle seed falls between frames 1 and 2 on an even spacing, yet must still
    be reproduced exactly on a frame."""
    seeds = [1, 2, 3]
    for frames in range(3, 12):
        travel = noise_travel(seeds, (4, 8, 8), frames)
        placed = seed_frames(len(seeds), frames)
        for seed, frame in zip(seeds, placed):
            assert torch.equal(travel[frame], seeded_noise(seed, (1, 4, 8, 8))[0]), (frames, seed)
        others = [travel[i] for i in range(frames) if i not in placed]
        seed_noises = [seeded_noise(seed, (1, 4, 8, 8))[0] for seed in seeds]
        assert not any(torch.equal(frame, noise) for frame in others for noise in seed_noises)


def test_frames_between_two_seeds_follow_the_variance_preserving_path():
    travel = noise_travel([5, 6], (4, 8, 8), frames=5)
    a, b = seeded_noise(5, (1, 4, 8, 8))[0], seeded_noise(6, (1, 4, 8, 8))[0]
    angle = torch.tensor(0.25 * torch.pi / 2)
    torch.testing.assert_close(travel[1], torch.cos(angle) * a + torch.sin(angle) * b)


def test_noise_travel_refuses_bad_requests():
    with pytest.raises(ValueError, match="expected at least 2 seeds"):
        noise_travel([1], (4, 8, 8), 4)
    with pytest.raises(ValueError, match="3 frames for 4 seeds; expected at least one frame per seed"):
        noise_travel([1, 2, 3, 4], (4, 8, 8), 3)
    with pytest.raises(ValueError, match="outside 0..3"):
        noise_travel([1, 2], (4, 8, 8), 4, indices=[4])
