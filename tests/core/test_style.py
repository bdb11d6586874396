"""Style mixing's mathematics: the cross-fade schedule and where a noise level lies in it, AdaIN's statistics, the
frequency split, channel mixing and StyleAligned's shared attention."""

import math

import pytest
import torch
import torch.nn.functional as F

from latent_space_control.core.adapters import sigmas_from_alphas_cumprod
from latent_space_control.core.style import (adain, channel_mix, crossfade_segments, crossfade_weight,
                                             crossfaded_denoiser, frequency_mix, low_frequencies, schedule_position,
                                             schedule_sigma,
                                             shared_attention)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def population_statistics(x, dims):
    return x.mean(dims), x.std(dims, correction=0)


# The cross-fade schedule

@pytest.mark.parametrize("cutoff", [0.0, 0.3, 1.0])
def test_without_a_window_the_weight_switches_at_the_cutoff(cutoff):
    for position in torch.linspace(0, 1, 101).tolist():
        assert crossfade_weight(position, cutoff) == (0.0 if position < cutoff or cutoff == 1.0 else 1.0)


def test_a_cutoff_of_1_keeps_the_structure_to_the_very_end_as_comfyui_does():
    assert crossfade_weight(1.0, 1.0) == 0.0 and crossfade_weight(1.0, 0.999) == 1.0


def test_within_a_window_the_weight_rises_smoothly_and_monotonically_from_0_to_1():
    cutoff, window = 0.4, 0.2
    low, high = cutoff - window / 2, cutoff + window / 2
    assert crossfade_weight(low - 0.01, cutoff, window) == 0.0 and crossfade_weight(high + 0.01, cutoff, window) == 1.0
    assert crossfade_weight(low, cutoff, window) == pytest.approx(0.0, abs=1e-12)
    assert crossfade_weight(high, cutoff, window) == pytest.approx(1.0, abs=1e-12)
    assert crossfade_weight(cutoff, cutoff, window) == pytest.approx(0.5)
    weights = [crossfade_weight(p, cutoff, window) for p in torch.linspace(low, high, 201).tolist()]
    assert all(b >= a for a, b in zip(weights, weights[1:])) and weights[-1] > weights[0]
    for d in (0.01, 0.03, 0.07):  # symmetric about the cutoff
        assert crossfade_weight(cutoff + d, cutoff, window) + crossfade_weight(cutoff - d, cutoff, window) == \
            pytest.approx(1.0)
    # Smooth at both ends of the window: the slope there is 0, so the weight grows as the square of the distance.
    step = window * 1e-3
    assert crossfade_weight(low + step, cutoff, window) < 1e-5
    assert 1 - crossfade_weight(high - step, cutoff, window) < 1e-5


@pytest.mark.parametrize("cutoff, window", [(0.3, 0.0), (0.5, 0.2), (0.05, 0.4), (0.98, 0.3), (0.0, 0.0), (1.0, 0.0),
                                            (0.5, 1.0)])
def test_segments_tile_the_schedule_with_the_weight_at_their_middle(cutoff, window):
    pieces = 8
    segments = crossfade_segments(cutoff, window, pieces)
    assert segments[0][0] == 0.0 and segments[-1][1] == 1.0
    assert all(end > start for start, end, _ in segments)
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))  # no gaps, no overlaps
    for start, end, weight in segments:
        assert weight == crossfade_weight((start + end) / 2, cutoff, window)
    weights = [weight for _, _, weight in segments]
    assert all(b >= a for a, b in zip(weights, weights[1:]))
    # Constant pieces follow the smooth weight closely: the smoothstep's slope is at most 1.5 / window.
    for position in torch.linspace(0, 1, 501).tolist():
        piece = next(w for start, end, w in segments if start <= position <= end)
        bound = 1e-9 if window == 0 else 1.5 / (2 * pieces)
        if window == 0 and position == cutoff:
            continue  # the switch itself belongs to both neighbours
        assert abs(piece - crossfade_weight(position, cutoff, window)) <= bound + 1e-9


def test_segments_of_a_hard_switch_and_of_the_ends():
    assert crossfade_segments(0.3) == [(0.0, 0.3, 0.0), (0.3, 1.0, 1.0)]
    assert crossfade_segments(0.0) == [(0.0, 1.0, 1.0)]
    assert crossfade_segments(1.0) == [(0.0, 1.0, 0.0)]
    assert len(crossfade_segments(0.5, 0.2, pieces=8)) == 10  # before, eight across the window, after


def test_segments_reject_a_cutoff_outside_the_schedule_and_a_negative_window():
    with pytest.raises(ValueError, match="cutoff is 1.5; expected a fraction of the schedule in 0..1"):
        crossfade_segments(1.5)
    with pytest.raises(ValueError, match="window is -0.1; expected 0"):
        crossfade_segments(0.5, -0.1)


# Where a noise level lies in the schedule

def sd15_sigmas():
    """SD1.5's training noise levels: the scaled-linear betas."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return sigmas_from_alphas_cumprod(torch.cumprod(1 - betas, 0))


def comfy_percent_to_sigma(percent, sigmas):
    """ComfyUI's ModelSamplingDiscrete.percent_to_sigma, written out: the timestep (1 - percent) * 999, its sigma
    interpolated in log sigma between the two training steps around it."""
    timestep = (1 - percent) * (len(sigmas) - 1)
    low = math.floor(timestep)
    high = min(low + 1, len(sigmas) - 1)
    weight = timestep - low
    return math.exp((1 - weight) * math.log(sigmas[low]) + weight * math.log(sigmas[high]))


def test_schedule_position_counts_as_comfyui_does():
    sigmas = sd15_sigmas()
    assert schedule_position(float(sigmas[-1]), sigmas) == pytest.approx(0.0, abs=1e-9)  # the noisiest step
    assert schedule_position(float(sigmas[0]), sigmas) == pytest.approx(1.0, abs=1e-9)
    assert schedule_position(1.616, sigmas) == pytest.approx(0.5, abs=2e-4)
    for percent in (0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 0.999):
        assert schedule_position(comfy_percent_to_sigma(percent, sigmas), sigmas) == pytest.approx(percent, abs=1e-6)
    positions = [schedule_position(sigma, sigmas) for sigma in (14.0, 5.0, 1.616, 0.5, 0.1)]
    assert all(b > a for a, b in zip(positions, positions[1:]))  # less noise, later in the schedule


def test_schedule_sigma_is_comfyuis_percent_to_sigma():
    sigmas = sd15_sigmas()
    assert schedule_sigma(0.0, sigmas) == float("inf") and schedule_sigma(1.0, sigmas) == 0.0
    assert schedule_sigma(0.5, sigmas) == pytest.approx(1.616, abs=1e-3)
    for percent in (0.001, 0.1, 0.25, 0.5, 0.7, 0.9, 0.999):
        assert schedule_sigma(percent, sigmas) == pytest.approx(comfy_percent_to_sigma(percent, sigmas), rel=1e-6)
        assert schedule_position(schedule_sigma(percent, sigmas), sigmas) == pytest.approx(percent, abs=1e-6)


# Cross-faded denoising

class Recorder:
    """A denoiser that returns a constant and counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return torch.full_like(x, self.value)


def test_crossfaded_denoiser_calls_only_the_denoiser_it_needs_and_blends_in_the_window():
    structure, style = Recorder(1.0), Recorder(5.0)
    position = lambda sigma: 1 - sigma / 10  # sigma 10: the start, sigma 0: the end
    denoise = crossfaded_denoiser(structure, style, position, cutoff=0.5, window=0.2)
    x = torch.zeros(2, 4, 8, 8)
    assert torch.equal(denoise(x, torch.tensor([8.0, 8.0])), torch.full_like(x, 1.0))  # position 0.2
    assert (structure.calls, style.calls) == (1, 0)
    assert torch.equal(denoise(x, torch.tensor([2.0, 2.0])), torch.full_like(x, 5.0))  # position 0.8
    assert (structure.calls, style.calls) == (1, 1)
    weight = crossfade_weight(0.55, 0.5, 0.2)
    torch.testing.assert_close(denoise(x, torch.tensor([4.5, 4.5])), torch.full_like(x, 1.0 + 4.0 * weight))
    assert (structure.calls, style.calls) == (2, 2)
    hard = crossfaded_denoiser(structure, style, position, cutoff=0.5)
    assert torch.equal(hard(x, torch.tensor([5.0, 5.0])), torch.full_like(x, 5.0))  # at the cutoff: style


# AdaIN

def content_and_style():
    g = generator()
    content = torch.randn(2, 4, 8, 8, generator=g) * 0.7 + torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 4, 1, 1)
    style = torch.randn(2, 4, 8, 8, generator=g) * torch.tensor([2.0, 0.3, 1.5, 0.8]).reshape(1, 4, 1, 1) - 1.0
    return content, style


def test_adain_gives_each_channel_the_styles_mean_and_spread():
    content, style = content_and_style()
    out = adain(content, style)
    mean, std = population_statistics(out, (2, 3))
    style_mean, style_std = population_statistics(style, (2, 3))
    torch.testing.assert_close(mean, style_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(std, style_std, atol=1e-4, rtol=0)
    # Only the statistics move: each channel is the content's, rescaled.
    correlation = F.cosine_similarity((out - out.mean((2, 3), keepdim=True)).flatten(2),
                                      (content - content.mean((2, 3), keepdim=True)).flatten(2), dim=2)
    torch.testing.assert_close(correlation, torch.ones_like(correlation))


def test_adain_strength_blends_from_the_content():
    content, style = content_and_style()
    assert torch.equal(adain(content, style, strength=0.0), content)
    torch.testing.assert_close(adain(content, style, strength=0.5), (content + adain(content, style)) / 2)


def test_adain_takes_any_size_of_style_and_broadcasts_a_single_one():
    content, _ = content_and_style()
    content = content.repeat(2, 1, 1, 1)[:3]
    style = torch.randn(1, 4, 5, 7, generator=generator(1)) * 2 + 3
    out = adain(content, style)
    mean, std = population_statistics(out, (2, 3))
    style_mean, style_std = population_statistics(style, (2, 3))
    torch.testing.assert_close(mean, style_mean.expand(3, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, style_std.expand(3, -1), atol=1e-4, rtol=0)


def test_adain_with_a_mask_restyles_only_the_masked_region():
    content, style = content_and_style()
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0  # the left half, at four times the latent's resolution
    out = adain(content, style, mask=mask)
    assert torch.equal(out[..., 4:], content[..., 4:])
    mean, std = population_statistics(out[..., :4], (2, 3))
    style_mean, style_std = population_statistics(style, (2, 3))
    torch.testing.assert_close(mean, style_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(std, style_std, atol=1e-4, rtol=0)


def test_adain_per_frame_keeps_each_frames_own_statistics():
    g = generator(2)
    frame_means = torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 3, 1, 1)
    content = torch.randn(1, 4, 3, 8, 8, generator=g) + frame_means
    style = torch.randn(1, 4, 3, 6, 6, generator=g) * 2 - frame_means
    per_frame = adain(content, style, per_frame=True)
    mean, std = population_statistics(per_frame, (3, 4))
    style_mean, style_std = population_statistics(style, (3, 4))
    torch.testing.assert_close(mean, style_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(std, style_std, atol=1e-4, rtol=0)
    # Over the whole clip the statistics match and the content's change from frame to frame is kept.
    whole = adain(content, style)
    mean, std = population_statistics(whole, (2, 3, 4))
    style_mean, style_std = population_statistics(style, (2, 3, 4))
    torch.testing.assert_close(mean, style_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(std, style_std, atol=1e-4, rtol=0)
    frames = whole.mean((3, 4))
    assert (frames[:, :, 0] < frames[:, :, 1]).all() and (frames[:, :, 1] < frames[:, :, 2]).all()


def test_adain_names_the_latents_in_its_errors():
    content, style = content_and_style()
    with pytest.raises(ValueError, match="latent_b has 3 channels but latent_a has 4"):
        adain(content, style[:, :3])
    with pytest.raises(ValueError, match="latent_b has batch 2 and latent_a 3; expected the same batch, or 1 in "
                                         "latent_b"):
        adain(torch.cat([content, content[:1]]), style)
    with pytest.raises(ValueError, match="latent_b has 2 frames and latent_a 3"):
        adain(torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 2, 8, 8), per_frame=True)


# The frequency split

def test_low_frequencies_keep_a_constant_and_remove_a_checkerboard():
    constant = torch.full((2, 4, 8, 8), 0.7)
    torch.testing.assert_close(low_frequencies(constant, 4.0), constant)
    rows, columns = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checkerboard = ((rows + columns) % 2).float().expand(1, 4, 8, 8)  # a period of 2 cells, mean 0.5
    torch.testing.assert_close(low_frequencies(checkerboard, 8.0), torch.full_like(checkerboard, 0.5), atol=1e-3,
                               rtol=0)


def test_low_frequencies_do_not_wrap_round_the_edges():
    ramp = torch.linspace(0, 1, 16).expand(1, 1, 16, 16)  # dark on the left, bright on the right
    smoothed = low_frequencies(ramp, 4.0)
    assert float(smoothed[..., 0].max()) < 0.1 and float(smoothed[..., -1].min()) > 0.9


@pytest.mark.parametrize("period", [4, 8])
def test_low_frequencies_pass_half_of_a_wave_whose_period_is_the_cutoff(period):
    columns = torch.arange(64, dtype=torch.float32)
    wave = torch.cos(2 * math.pi * columns / period).expand(1, 1, 64, 64)
    middle = (..., 32, slice(16, 48))  # away from the edges
    passed = (low_frequencies(wave, period)[middle] * wave[middle]).sum() / wave[middle].square().sum()
    assert float(passed) == pytest.approx(0.5, abs=1e-3)
    assert float(low_frequencies(wave, period * 2)[middle].abs().max()) < 0.1  # a finer wave than the cutoff


def test_frequency_mix_limits():
    g = generator(3)
    a, b = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    torch.testing.assert_close(frequency_mix(a, a, 3.0), a)  # a latent mixed with itself is itself
    torch.testing.assert_close(frequency_mix(a, b, 1e-3), a)  # every detail counts as coarse: all of low_source
    # A huge cutoff keeps nothing of low_source but a constant per channel: all of high_source's pattern.
    offset = frequency_mix(a, b, 1e4) - b
    assert float(offset.std((2, 3)).max()) < 1e-5
    assert float((offset - (a.mean((2, 3)) - b.mean((2, 3)))[..., None, None]).abs().max()) < 0.5
    assert torch.equal(frequency_mix(a, b, 3.0, strength=0.0), a)


def test_frequency_mix_with_a_mask_and_its_errors():
    g = generator(4)
    a, b = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    mask = torch.zeros(8, 8)
    mask[4:] = 1.0
    out = frequency_mix(a, b, 2.0, mask=mask)
    assert torch.equal(out[..., :4, :], a[..., :4, :])
    torch.testing.assert_close(out[..., 4:, :], frequency_mix(a, b, 2.0)[..., 4:, :])
    with pytest.raises(ValueError, match="cutoff is 0; expected a period in latent cells above 0"):
        frequency_mix(a, b, 0)
    with pytest.raises(ValueError, match=r"latent_b has size \(8, 6\) but latent_a has \(8, 8\)"):
        frequency_mix(a, b[..., :6], 2.0)


# Channel mixing

def test_channel_mix_takes_exactly_the_listed_channels():
    g = generator(5)
    base, source = torch.randn(3, 6, 4, 4, generator=g), torch.randn(1, 6, 4, 4, generator=g)
    out = channel_mix(base, source, [1, 4])
    for channel in range(6):
        if channel in (1, 4):
            torch.testing.assert_close(out[:, channel], source[:, channel].expand(3, -1, -1), atol=1e-6, rtol=0)
        else:
            assert torch.equal(out[:, channel], base[:, channel])
    half = channel_mix(base, source, [1, 4], strength=0.5)
    torch.testing.assert_close(half[:, 1], (base[:, 1] + source[:, 1]) / 2)
    assert torch.equal(half[:, 0], base[:, 0])


def test_channel_mix_rejects_channels_that_do_not_exist():
    base = torch.zeros(1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"channels \[4\] do not exist; expected channel numbers 0..3"):
        channel_mix(base, base, [0, 4])
    with pytest.raises(ValueError, match=r"channels \[-1\] do not exist"):
        channel_mix(base, base, [-1])
    with pytest.raises(ValueError, match="channels is empty"):
        channel_mix(base, base, [])


# Shared attention

def attend(q, k, v, heads, bias=None):
    """torch's attention over [N, T, D] inputs split into heads, as an attention block calls it."""
    def split(x):
        return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def qkv(items=3, tokens=6, width=8, seed=6):
    g = generator(seed)
    return tuple(torch.randn(items, tokens, width, generator=g) * scale + shift
                 for scale, shift in ((1.0, 0.0), (2.0, 0.5), (1.0, -1.0)))


def test_shared_attention_shapes_and_the_reference_is_left_as_it_was():
    q, k, v = qkv()
    for normalise, strength in ((False, 1.0), (True, 1.0), (True, 3.0)):
        shared_q, shared_k, shared_v, bias = shared_attention(q, k, v, chunks=1, normalise=normalise,
                                                              strength=strength)
        assert shared_q.shape == (3, 6, 8) and shared_k.shape == shared_v.shape == (3, 12, 8)
        assert (bias is None) == (strength == 1.0)
        out = attend(shared_q, shared_k, shared_v, heads=2, bias=bias)
        torch.testing.assert_close(out[:1], attend(q[:1], k[:1], v[:1], heads=2))
        assert not torch.allclose(out[1:], attend(q[1:], k[1:], v[1:], heads=2))


def test_strength_is_a_log_bias_on_the_reference_keys_of_the_other_items():
    q, k, v = qkv()
    _, _, _, bias = shared_attention(q, k, v, chunks=1, normalise=False, strength=2.0)
    assert bias.shape == (3, 1, 1, 12)
    assert torch.equal(bias[0], torch.zeros(1, 1, 12))
    assert torch.equal(bias[1:, ..., :6], torch.zeros(2, 1, 1, 6))
    torch.testing.assert_close(bias[1:, ..., 6:], torch.full((2, 1, 1, 6), math.log(2.0)))
    # Strength 2 is as if the reference's tokens were there twice.
    shared = attend(*shared_attention(q, k, v, chunks=1, normalise=False, strength=2.0)[:3], heads=2, bias=bias)
    twice = attend(q[1:], torch.cat([k[1:], k[:1].expand(2, -1, -1), k[:1].expand(2, -1, -1)], dim=1),
                   torch.cat([v[1:], v[:1].expand(2, -1, -1), v[:1].expand(2, -1, -1)], dim=1), heads=2)
    torch.testing.assert_close(shared[1:], twice)


def test_each_chunk_shares_its_own_first_item():
    q, k, v = qkv(items=4)
    _, shared_k, shared_v, _ = shared_attention(q, k, v, chunks=2, normalise=False)
    for item, reference in ((0, 0), (1, 0), (2, 2), (3, 2)):
        assert torch.equal(shared_k[item, :6], k[item]) and torch.equal(shared_k[item, 6:], k[reference])
        assert torch.equal(shared_v[item, :6], v[item]) and torch.equal(shared_v[item, 6:], v[reference])
    with pytest.raises(ValueError, match="a batch of 4 does not split into 3 equal parts"):
        shared_attention(q, k, v, chunks=3)
    with pytest.raises(ValueError, match="strength is 0; expected a weight above 0"):
        shared_attention(q, k, v, chunks=1, strength=0)


def test_normalise_gives_the_other_items_the_references_token_statistics():
    q, k, v = qkv(items=4)
    shared_q, shared_k, shared_v, _ = shared_attention(q, k, v, chunks=2, normalise=True)
    for inputs, shared in ((q, shared_q), (k, shared_k[:, :6])):
        for item, reference in ((1, 0), (3, 2)):
            mean, std = population_statistics(shared[item], 0)
            reference_mean, reference_std = population_statistics(inputs[reference], 0)
            torch.testing.assert_close(mean, reference_mean, atol=1e-4, rtol=0)
            torch.testing.assert_close(std, reference_std, atol=1e-4, rtol=0)
        assert torch.equal(shared[0], inputs[0]) and torch.equal(shared[2], inputs[2])
    assert torch.equal(shared_v[:, :6], v)  # values are the items' own


# Inputs stay as they were

def test_nothing_changes_its_inputs():
    g = generator(7)
    a, b = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.rand(1, 8, 8, generator=g)
    q, k, v = qkv()
    inputs = [a, b, mask, q, k, v]
    before = [x.clone() for x in inputs]
    adain(a, b, 0.7, mask)
    adain(a.unsqueeze(2), b.unsqueeze(2), per_frame=True)
    frequency_mix(a, b, 2.0, 0.5, mask)
    channel_mix(a, b, [0, 2], 0.5, mask)
    low_frequencies(a, 3.0)
    shared_attention(q, k, v, chunks=1, normalise=True, strength=2.0)
    assert all(torch.equal(x, y) for x, y in zip(inputs, before))
