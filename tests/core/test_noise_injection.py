"""Noise injection during sampling (the ancestral split, exact renoising, the segmenting driver) and noise tilted
along a latent direction, checked against exact answers: Gaussian marginals, the Euler-ancestral sampler, and the
analytic Gaussian-mixture world."""

import math

import pytest
import torch

from latent_space_control.core.noise import seeded_noise, tilted_noise
from latent_space_control.core.noise_injection import (ancestral_sigma_down, injection_steps, parse_steps, renoise,
                                                       sample_with_injection, spaced_steps)
from latent_space_control.core.sampling import karras_sigmas, sample_euler
from latent_space_control.reference.gmm import mode_frequency_error, standard_mixture

EVERYWHERE = (float("inf"), 0.0)


def euler_segments(denoiser, calls=None):
    """The engine's Euler sampler as a segment sampler, recording each call's sigmas and first step."""
    def sample_segment(x, sigmas, first):
        if calls is not None:
            calls.append((sigmas.tolist(), first))
        last = {}
        x = sample_euler(denoiser, x, sigmas, lambda step: last.update(denoised=step["denoised"]))
        return x, last.get("denoised")
    return sample_segment


def euler_ancestral(denoiser, x, sigmas, generator):
    """k-diffusion's Euler ancestral at eta 1, written from its definition, drawing noise from ``generator``."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigmas[i].expand(x.shape[0]))
        sigma_up = min(sigma_next, math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
        sigma_down = math.sqrt(sigma_next ** 2 - sigma_up ** 2)
        x = x + (x - denoised) / sigma * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + sigma_up * torch.randn(x.shape, generator=generator)
    return x


def test_sigma_down_is_sigma_next_at_amount_0_and_the_ancestral_split_at_1():
    for flow, (sigma, sigma_next) in ((False, (10.0, 4.0)), (True, (0.8, 0.6))):
        assert ancestral_sigma_down(sigma, sigma_next, 0.0, flow) == pytest.approx(sigma_next)
    down = ancestral_sigma_down(10.0, 4.0, 1.0, flow=False)
    up = math.sqrt(4.0 ** 2 * (10.0 ** 2 - 4.0 ** 2) / 10.0 ** 2)
    assert down == pytest.approx(math.sqrt(16.0 - up ** 2)) and 0 < down < 4.0
    assert ancestral_sigma_down(0.8, 0.6, 1.0, flow=True) == pytest.approx(0.6 * 0.6 / 0.8)
    halves = [ancestral_sigma_down(10.0, 4.0, amount, False) for amount in (0.25, 0.5, 0.75)]
    assert halves == sorted(halves, reverse=True) and all(down < h < 4.0 for h in halves)


@pytest.mark.parametrize("flow, sigma_from, sigma_to", [(False, 0.7, 2.5), (True, 0.3, 0.65)])
def test_renoise_gives_exactly_the_marginal_of_the_higher_noise_level(flow, sigma_from, sigma_to):
    """x0 fixed, x at sigma_from: after renoising, x0's share and the noise's spread are those of sigma_to."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 1.5)
    alpha = (lambda sigma: 1 - sigma) if flow else (lambda sigma: 1.0)
    x = alpha(sigma_from) * x0 + sigma_from * torch.randn(x0.shape, generator=generator)
    out = renoise(x, sigma_from, sigma_to, torch.randn(x0.shape, generator=generator), flow)
    assert float(out.mean()) == pytest.approx(alpha(sigma_to) * 1.5, abs=5 * sigma_to / math.sqrt(len(x0)))
    assert float(out.std()) == pytest.approx(sigma_to, rel=0.01)


def test_injection_steps_follow_window_and_step_numbers_and_skip_the_last_step():
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.0])
    assert injection_steps(sigmas, EVERYWHERE, None) == [0, 1, 2, 3]  # step 4 ends at 0
    assert injection_steps(sigmas, (5.0, 1.0), None) == [1, 2, 3]
    assert injection_steps(sigmas, EVERYWHERE, {0, 2, 4, 9}) == [0, 2]


def test_amount_0_or_no_chosen_step_is_one_call_of_the_plain_sampler():
    mixture = standard_mixture()
    sigmas = karras_sigmas(12, 0.002, 80.0)
    x = seeded_noise(1, (4, *mixture.shape)) * sigmas[0]
    plain = sample_euler(mixture.denoise, x, sigmas)
    for amount, chosen in ((0.0, [2, 3]), (1.0, [])):
        calls = []
        out = sample_with_injection(euler_segments(mixture.denoise, calls), x, sigmas, chosen, amount,
                                    torch.Generator().manual_seed(5), flow=False)
        assert torch.equal(out, plain) and calls == [(sigmas.tolist(), 0)]


def test_segments_end_at_sigma_down_and_restart_at_sigma_next():
    mixture = standard_mixture()
    sigmas = karras_sigmas(6, 0.002, 80.0)
    calls = []
    sample_with_injection(euler_segments(mixture.denoise, calls), seeded_noise(1, (2, *mixture.shape)) * sigmas[0],
                          sigmas, [1, 2], 0.5, torch.Generator().manual_seed(5), flow=False)
    s = sigmas.tolist()
    assert [first for _, first in calls] == [0, 2, 3]
    assert calls[0][0][:2] == s[:2] and calls[0][0][2] == pytest.approx(ancestral_sigma_down(s[1], s[2], 0.5, False))
    assert calls[1][0][0] == s[2] and calls[1][0][1] == pytest.approx(ancestral_sigma_down(s[2], s[3], 0.5, False))
    assert calls[2][0] == s[3:]


def test_injection_on_every_step_of_euler_is_euler_ancestral():
    mixture = standard_mixture()
    sigmas = karras_sigmas(10, 0.002, 80.0)
    x = seeded_noise(3, (6, *mixture.shape)) * sigmas[0]
    chosen = injection_steps(sigmas, EVERYWHERE, None)
    ours = sample_with_injection(euler_segments(mixture.denoise), x, sigmas, chosen, 1.0,
                                 torch.Generator().manual_seed(9), flow=False)
    reference = euler_ancestral(mixture.denoise, x, sigmas, torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, sample_euler(mixture.denoise, x, sigmas), atol=1e-2)


def test_a_zero_mask_keeps_the_deterministic_path_and_a_half_mask_splits_the_picture():
    mixture = standard_mixture()
    sigmas = karras_sigmas(10, 0.002, 80.0)
    x = seeded_noise(4, (3, *mixture.shape)) * sigmas[0]
    chosen = injection_steps(sigmas, EVERYWHERE, None)
    plain = sample_euler(mixture.denoise, x, sigmas)

    def inject(mask):
        return sample_with_injection(euler_segments(mixture.denoise), x, sigmas, chosen, 1.0,
                                     torch.Generator().manual_seed(2), flow=False, mask=mask)
    torch.testing.assert_close(inject(torch.zeros(1, 16, 16)), plain, rtol=1e-4, atol=1e-4)
    left = torch.zeros(1, 8, 8)
    left[..., :4] = 1.0
    halves = inject(left)
    assert (halves[..., :4] - plain[..., :4]).abs().max() > 0.1  # fresh noise where the mask is 1


def test_gmm_mode_frequencies_and_spread_survive_injection_over_the_middle_of_the_schedule():
    """The exact denoiser of a three-component mixture: Euler with full-strength fresh noise on the middle steps
    still finds each component as often as its weight, and each sample's spread around its component's mean tends to
    the component's own as the steps get finer (Euler is first order: the gap to 1 halves with twice the steps)."""
    mixture = standard_mixture()

    def injected(steps):
        sigmas = karras_sigmas(steps, 0.002, 80.0)
        x = torch.randn((2000, *mixture.shape), generator=torch.Generator().manual_seed(11)) * sigmas[0]
        chosen = injection_steps(sigmas, (10.0, 0.1), None)
        assert len(chosen) >= steps // 4
        out = sample_with_injection(euler_segments(mixture.denoise), x, sigmas, chosen, 1.0,
                                    torch.Generator().manual_seed(12), flow=False)
        components = mixture.component_posterior(out, torch.tensor(0.0)).argmax(dim=1)
        spread = (out - mixture.means[components]).flatten(1).std(dim=1) / mixture.stds[components]
        return mode_frequency_error(mixture, out), float(spread.mean())

    (error_64, spread_64), (error_128, spread_128) = injected(64), injected(128)
    assert error_64 < 0.04 and error_128 < 0.04
    assert 0.93 < spread_128 < 1.0 and 1 - spread_128 < 0.7 * (1 - spread_64)


def test_samplers_that_need_two_steps_get_segments_of_two_or_more():
    assert spaced_steps([0, 1, 2, 3, 4, 5], 8, 1) == [0, 1, 2, 3, 4, 5]
    assert spaced_steps([0, 1, 2, 3, 4, 5], 8, 2) == [1, 3, 5]
    assert spaced_steps([0, 1, 2, 3, 4, 5, 6], 8, 2) == [1, 3, 5]  # step 6 would leave one step after it
    assert spaced_steps([2, 3, 4], 6, 2) == [2]  # step 4 would leave one step after it, step 3 one before it
    assert spaced_steps([4, 5], 6, 2) == [5]  # the schedule ends there (a partial KSamplerAdvanced run)
    mixture = standard_mixture()
    sigmas = karras_sigmas(8, 0.002, 80.0)
    calls = []
    sample_with_injection(euler_segments(mixture.denoise, calls), seeded_noise(1, (1, *mixture.shape)) * sigmas[0],
                          sigmas, list(range(7)), 1.0, torch.Generator().manual_seed(1), flow=False, min_segment=2)
    assert [len(segment) - 1 for segment, _ in calls] == [2, 2, 2, 2]


def test_the_generator_draws_one_noise_of_the_latents_shape_per_injected_step():
    sigmas = karras_sigmas(5, 0.1, 10.0)
    shape = (2, 16, 3, 4, 4)  # a 16-channel video latent
    generator = torch.Generator().manual_seed(7)
    sample_with_injection(lambda x, s, first: (x, x), torch.zeros(shape), sigmas, [0, 2], 1.0, generator, flow=True)
    replay = torch.Generator().manual_seed(7)
    for _ in range(2):
        torch.randn(shape, generator=replay)
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=replay))


@pytest.mark.parametrize("text, expected", [("", None), ("  ", None), ("3", {3}), ("3,5-7", {3, 5, 6, 7}),
                                            ("0 2; 4-4", {0, 2, 4})])
def test_step_numbers_parse(text, expected):
    assert parse_steps(text) == expected


@pytest.mark.parametrize("text, message", [("3,x", r"steps is '3,x'; 'x' is not a step number; expected"),
                                           ("-2", r"'-2' is not a step number"), ("1.5", r"'1.5' is not a step"),
                                           ("7-5", r"steps: the range '7-5' runs backwards; expected")])
def test_bad_step_numbers_are_refused_by_name(text, message):
    with pytest.raises(ValueError, match=message):
        parse_steps(text)


def test_tilted_noise_moves_along_the_direction_and_stays_on_the_shell():
    noise = seeded_noise(5, (3, 4, 8, 8))
    direction = torch.zeros(4, 4, 4)
    direction[0] = 1.0  # found at half the size: resized to 8x8
    assert torch.equal(tilted_noise(noise, direction, 0.0), noise)
    tilted = tilted_noise(noise, direction, 3.0)
    torch.testing.assert_close(tilted.flatten(1).norm(dim=1), noise.flatten(1).norm(dim=1))
    unit = torch.zeros(4, 8, 8)
    unit[0] = 1.0 / 8.0
    along = (tilted * unit).flatten(1).sum(1) - (noise * unit).flatten(1).sum(1)
    assert ((along > 2.5) & (along < 3.5)).all()
    assert torch.allclose(tilted_noise(noise, direction, -3.0) @ torch.ones(8), tilted_noise(noise, -direction, 3.0)
                          @ torch.ones(8))


def test_tilted_noise_on_video_latents_and_its_errors():
    noise = seeded_noise(6, (2, 16, 3, 4, 4))
    tilted = tilted_noise(noise, torch.randn(16, 3, 4, 4), 2.0)
    assert tilted.shape == noise.shape and not torch.equal(tilted, noise)
    with pytest.raises(ValueError, match=r"direction has 4 channels but the latent has 16; expected"):
        tilted_noise(noise, torch.randn(4, 3, 4, 4), 1.0)
    with pytest.raises(ValueError, match=r"direction is zero at the latent's size; expected"):
        tilted_noise(noise, torch.zeros(16, 3, 4, 4), 1.0)
