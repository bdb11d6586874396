"""The guidance engine: the window and its schedules, the loss guidance descends (terms, hinged constraints, the
latent itself as the start, one decode), the per-item unit-RMS step added to the noise prediction, and guided
sampling on the analytic Gaussian mixture (it reaches the asked component; strength 0 and steps outside the window
are the plain denoiser)."""

import math

import pytest
import torch

from latent_space_control.core import guidance, objectives
from latent_space_control.core.sampling import karras_sigmas, sample_euler
from latent_space_control.reference import gmm


# ---- window and schedule ----------------------------------------------------------------------------------------

def test_window_position_runs_evenly_in_log_sigma_from_the_noisy_end():
    assert guidance.window_position(10.0, 10.0, 0.1) == 0.0
    assert guidance.window_position(0.1, 10.0, 0.1) == 1.0
    assert guidance.window_position(1.0, 10.0, 0.1) == pytest.approx(0.5)
    assert guidance.window_position(20.0, 10.0, 0.1) is None and guidance.window_position(0.05, 10.0, 0.1) is None
    assert guidance.window_position(2.0, 2.0, 2.0) == 0.0
    with pytest.raises(ValueError, match="expected 0 < end ≤ start"):
        guidance.window_position(1.0, 0.1, 10.0)


@pytest.mark.parametrize("shape, expected", [("constant", (1, 1, 1)), ("ramp_down", (1, 0.5, 0)),
                                             ("ramp_up", (0, 0.5, 1)), ("bell", (0, 1, 0))])
def test_schedule_shapes(shape, expected):
    weights = [guidance.schedule_weight(position, shape) for position in (0.0, 0.5, 1.0)]
    assert weights == pytest.approx(expected, abs=1e-12)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule is 'wavy'; expected one of constant, ramp_down"):
        guidance.schedule_weight(0.5, "wavy")


def test_windowed_weight_clamps_comfyuis_sentinels_to_the_models_range():
    weight = guidance.windowed_weight(999999999.9, 0.0, "ramp_down", 0.03, 14.6)
    assert weight(torch.tensor([14.6, 14.6])) == pytest.approx(1.0)
    assert weight(torch.tensor([0.03])) == pytest.approx(0.0)
    assert weight(torch.tensor([math.sqrt(0.03 * 14.6)])) == pytest.approx(0.5)
    never = guidance.windowed_weight(0.0, 0.0, "constant", 0.03, 14.6)  # start and end at 100 %
    assert never(torch.tensor([0.03])) is None


# ---- the loss ---------------------------------------------------------------------------------------------------

def _distance_to(target):
    return objectives.reference_distance("distance", "latent", target)


def test_a_constraint_pushes_only_while_it_is_violated():
    target = torch.ones(1, 4, 2, 2)
    loss = guidance.guidance_loss(objectives.constrain(_distance_to(target), 0.5), None)
    near, far = torch.full((1, 4, 2, 2), 0.9), torch.full((1, 4, 2, 2), 3.0)
    assert float(loss(near)) == 0.0
    assert float(loss(far)) == pytest.approx(4.0 - 0.5)  # relative squared distance 4, threshold 0.5
    assert guidance.x0_gradient(loss, near).abs().max() == 0


def test_terms_measure_from_the_latent_itself_and_the_picture_is_decoded_once():
    calls = []

    def decode(latent):
        calls.append(latent.shape)
        return latent[:, :3].sigmoid()

    keep = objectives.reference_distance("keep picture", "image")  # no reference: the start's own picture
    colour = objectives.colour_statistic("colour", (0.0, 1.0, 0.0), "green")
    loss = guidance.guidance_loss(objectives.combine([(keep, 1.0), (colour, 1.0)]), decode)
    latent = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    value = loss(latent)
    assert len(calls) == 1 and value.shape == (2,)
    expected = colour.terms[0].reading(objectives.Candidate(latent, decode(latent), latent, None))
    assert torch.allclose(value, expected)  # keep reads 0: the start is the estimate itself


def test_an_empty_objective_or_a_missing_decoder_is_refused():
    with pytest.raises(ValueError, match="objective is empty"):
        guidance.guidance_loss(objectives.Objective(), None)
    with pytest.raises(ValueError, match="scores pictures but no decoder was given"):
        guidance.guidance_loss(objectives.colour_statistic("brightness", 0.5, "bright"), None)


# ---- the step -----------------------------------------------------------------------------------------------------

def test_unit_rms_per_item_and_zero_stays_zero():
    gradient = torch.stack([torch.full((4, 2, 2), 3.0), torch.zeros(4, 2, 2), torch.randn(4, 2, 2) * 1e-6])
    unit = guidance.unit_rms(gradient)
    rms = unit.flatten(1).pow(2).mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.tensor([1.0, 0.0, 1.0]), atol=1e-5)


def test_guided_estimate_adds_strength_times_the_unit_gradient_to_the_noise_prediction():
    x, denoised = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    gradient, sigma = torch.randn(2, 4, 2, 2), torch.tensor([2.0, 0.5])
    guided = guidance.guided_estimate(denoised, gradient, sigma, 0.3)
    s = sigma.reshape(-1, 1, 1, 1)
    assert torch.allclose((x - guided) / s, (x - denoised) / s + 0.3 * guidance.unit_rms(gradient), atol=1e-5)


def test_x0_mode_takes_no_gradient_through_the_denoiser_and_exact_mode_does():
    seen = []

    def denoiser(x, sigma):
        seen.append(x.requires_grad)
        return 0.5 * x

    loss = guidance.guidance_loss(_distance_to(torch.ones(1, 4, 2, 2)), None)
    always = guidance.windowed_weight(10.0, 0.1, "constant", 0.1, 10.0)
    x, sigma = torch.full((1, 4, 2, 2), 3.0), torch.tensor([1.0])
    x0_mode = guidance.guided_denoiser(denoiser, loss, 1.0, always, "x0")(x, sigma)
    exact = guidance.guided_denoiser(denoiser, loss, 1.0, always, "exact")(x, sigma)
    assert seen == [False, True]
    # x0 = 1.5 everywhere, above the target 1: both push it down by σ · strength at unit RMS.
    assert torch.allclose(x0_mode, torch.full_like(x, 0.5)) and torch.allclose(exact, x0_mode)
    with pytest.raises(ValueError, match="mode is 'both'"):
        guidance.guided_denoiser(denoiser, loss, 1.0, always, "both")


# ---- guided sampling on the analytic world --------------------------------------------------------------------------

def _mixture_samples(strength, window=(20.0, 0.005), mode="x0", count=200):
    mixture = gmm.standard_mixture()
    sigmas = karras_sigmas(16, 0.005, 20.0)
    objective = objectives.constrain(_distance_to(mixture.means[2][None]), 1.0)
    denoiser = guidance.guided_denoiser(mixture.denoise, guidance.guidance_loss(objective, None), strength,
                                        guidance.windowed_weight(*window, "constant", 0.005, 20.0), mode)
    noise = torch.randn((count, *mixture.shape), generator=torch.Generator().manual_seed(1))
    samples = sample_euler(denoiser, noise * sigmas[0], sigmas)
    return samples, mixture.component_posterior(samples, torch.tensor(0.0)).argmax(dim=1)


@pytest.mark.parametrize("mode", ["x0", "exact"])
def test_guidance_brings_samples_to_the_asked_component_and_keeps_its_spread(mode):
    _, plain = _mixture_samples(0.0)
    samples, guided = _mixture_samples(0.5, mode=mode)
    assert float((plain == 2).float().mean()) < 0.35 and float((guided == 2).float().mean()) > 0.95
    mixture = gmm.standard_mixture()
    spread = (samples[guided == 2] - mixture.means[2]).pow(2).mean().sqrt() / mixture.stds[2]
    assert 0.8 < float(spread) < 1.1


def test_strength_0_and_steps_outside_the_window_are_the_plain_denoiser():
    plain, _ = _mixture_samples(0.0)
    assert torch.equal(_mixture_samples(0.0, mode="exact")[0], plain)
    assert torch.equal(_mixture_samples(0.5, window=(1e-3, 1e-3))[0], plain)  # a window below every step
