import pytest
import torch

from latent_space_control.core import latent_stats
from latent_space_control.core.directions import apply_to_latent, principal_directions


def batch(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def sd_like(x):  # SD1.5's format: raw × 0.18215
    return x * 0.18215


def wan_like(x):  # per-channel mean and std, as Wan's format (5-D)
    mean = torch.tensor([0.5, -1.0, 0.0]).view(1, 3, 1, 1, 1)
    std = torch.tensor([2.0, 0.5, 1.0]).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def test_channel_direction_is_one_hot_in_the_batchs_own_spread_without_a_format():
    samples = batch(0, 3, 4, 8, 8) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    before = samples.clone()
    direction = latent_stats.channel_direction(samples, 2)
    assert direction.shape == (4, 8, 8)
    assert torch.equal(direction[[0, 1, 3]], torch.zeros(3, 8, 8))
    expected = samples[:, 2].flatten().std()
    assert torch.allclose(direction[2], expected.expand(8, 8))
    assert 2.7 < float(expected) < 3.3
    assert torch.equal(samples, before)


def test_channel_spread_follows_the_latent_format_so_units_match_across_families():
    samples = batch(1, 2, 4, 8, 8)
    assert torch.allclose(latent_stats.channel_spread(samples, sd_like), torch.full((4,), 1 / 0.18215))
    video = batch(2, 2, 3, 5, 4, 4)
    assert torch.allclose(latent_stats.channel_spread(video, wan_like), torch.tensor([2.0, 0.5, 1.0]))
    direction = latent_stats.channel_direction(video, 1, wan_like)
    moved = apply_to_latent(video, direction, 3.0)
    # three units in model space on channel 1, nothing elsewhere
    assert torch.allclose(wan_like(moved) - wan_like(video),
                          torch.tensor([0.0, 3.0, 0.0]).view(1, 3, 1, 1, 1).expand_as(video), atol=1e-5)


def test_channel_direction_errors_name_the_input():
    samples = batch(3, 1, 16, 4, 4)
    with pytest.raises(ValueError, match="channel is 16 but latent has 16 channels; expected 0 to 15"):
        latent_stats.channel_direction(samples, 16)
    empty = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="channel 0 of latent is constant.*connect a model"):
        latent_stats.channel_direction(empty, 0)
    direction = latent_stats.channel_direction(empty, 0, sd_like)  # with a format an empty latent scans fine
    assert float(direction[0, 0, 0]) == pytest.approx(1 / 0.18215)
    with pytest.raises(ValueError, match="does not scale every channel up"):
        latent_stats.channel_spread(samples, lambda x: -x)


def test_scan_labels_are_strength_major_with_items_named_only_for_a_batch():
    assert latent_stats.scan_labels("channel 2", [-1.0, 0.0, 1.5], 1, "σ") == [
        "channel 2 -1.00σ", "channel 2 +0.00σ", "channel 2 +1.50σ"]
    assert latent_stats.scan_labels("direction", [-1.0, 1.0], 2) == [
        "item 1, direction -1.00", "item 2, direction -1.00", "item 1, direction +1.00", "item 2, direction +1.00"]


def test_statistics_match_direct_computation():
    samples = batch(4, 5, 4, 6, 6) + torch.tensor([0.0, 1.0, -2.0, 0.5]).view(1, 4, 1, 1)
    before = samples.clone()
    stats = latent_stats.latent_statistics(samples)
    for c in range(4):
        values = samples[:, c].flatten()
        assert float(stats.channel_mean[c]) == pytest.approx(float(values.mean()), abs=1e-5)
        assert float(stats.channel_std[c]) == pytest.approx(float(values.std()), abs=1e-5)
        assert float(stats.channel_min[c]) == float(values.min())
        assert float(stats.channel_max[c]) == float(values.max())
    assert torch.allclose(stats.item_norm, samples.flatten(1).norm(dim=1))
    assert torch.allclose(stats.item_rms, samples.flatten(1).pow(2).mean(1).sqrt())
    assert stats.model_rms is None and stats.flags is None
    assert torch.allclose(stats.explained, principal_directions(samples, 4).explained)
    assert torch.equal(samples, before)
    report = latent_stats.describe(stats, samples.shape)
    assert "no model connected" in report and "PCA explained variance: 1:" in report


def test_flags_separate_healthy_burnt_and_washed_out_latents_in_model_space():
    healthy = batch(5, 4, 4, 8, 8) / 0.18215  # unit spread once SD's format is applied
    latents = torch.cat([healthy, healthy * 3, healthy * 0.2, torch.zeros(1, 4, 8, 8)])
    stats = latent_stats.latent_statistics(latents, sd_like)
    assert stats.flags == ["ok"] * 4 + ["burnt"] * 4 + ["washed out"] * 5
    assert torch.allclose(stats.model_rms, (latents * 0.18215).flatten(1).pow(2).mean(1).sqrt())
    report = latent_stats.describe(stats, latents.shape)
    assert "flagged: 5: burnt" in report and "13: washed out" in report
    assert "flagged: none" in latent_stats.describe(latent_stats.latent_statistics(healthy, sd_like), healthy.shape)


def test_statistics_of_video_latents_single_items_and_identical_items():
    video = batch(6, 2, 16, 3, 4, 4)
    stats = latent_stats.latent_statistics(video, lambda x: x)
    assert stats.channel_mean.shape == (16,) and stats.item_norm.shape == (2,) and len(stats.flags) == 2
    assert stats.explained.shape == (1,) and float(stats.explained[0]) == pytest.approx(1.0)
    single = latent_stats.latent_statistics(video[:1])
    assert single.explained is None
    assert "needs at least 2 items that differ" in latent_stats.describe(single, video[:1].shape)
    assert latent_stats.latent_statistics(video[:1].repeat(3, 1, 1, 1, 1)).explained is None
    with pytest.raises(ValueError, match="latent contains 1 NaN/Inf value"):
        latent_stats.latent_statistics(torch.cat([video[:1], video[:1] * float("nan")])[:, :1, :1, :1, :1])
