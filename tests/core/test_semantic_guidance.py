"""Semantic guidance's mathematics: the per-channel quantile mask, one concept's guidance, the momentum, a whole step
against the noise-space formula written out, and the batched denoiser on the analytic Gaussian mixture."""

import math

import pytest
import torch

from latent_space_control.core.sampling import karras_sigmas, sample_euler
from latent_space_control.core.semantic_guidance import (Concept, concept_guidance, momentum_update, quantile_mask,
                                                         semantic_guidance_denoiser, semantic_guidance_step)
from latent_space_control.reference.gmm import GaussianMixture, standard_mixture


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


# The mask

@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 16, 3, 6, 5), (3, 128, 4, 4)])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9, 0.99])
def test_the_mask_keeps_what_reaches_each_channels_quantile(shape, threshold):
    values = torch.randn(shape, generator=generator(1))
    mask = quantile_mask(values, threshold)
    assert mask.shape == values.shape and mask.dtype == torch.bool
    cutoff = torch.quantile(values.abs().flatten(2), threshold, dim=-1, keepdim=True, interpolation="lower")
    assert torch.equal(mask, (values.abs().flatten(2) >= cutoff).reshape(shape))
    kept = mask.flatten(2).float().mean(-1)  # the share kept in every item's channel
    count = values[0, 0].numel()
    assert torch.allclose(kept, torch.full_like(kept, (count - math.floor(threshold * (count - 1))) / count))


def test_each_items_channel_has_its_own_cutoff():
    values = torch.randn(2, 3, 8, 8, generator=generator(2))
    louder = values.clone()
    louder[1, 2] *= 100  # one item's channel far louder: the others' masks stay as they were
    assert torch.equal(quantile_mask(louder, 0.8), quantile_mask(values, 0.8))
    assert quantile_mask(values, 0.0).all()


# One concept, the momentum

def test_concept_guidance_is_the_signed_scaled_masked_difference():
    difference = torch.randn(2, 4, 8, 8, generator=generator(3))
    mask = quantile_mask(difference, 0.7)
    added = concept_guidance(difference, Concept(scale=3.0, threshold=0.7))
    assert torch.allclose(added, torch.where(mask, 3.0 * difference, torch.zeros_like(difference)))
    removed = concept_guidance(difference, Concept(scale=3.0, threshold=0.7, sign=-1))
    assert torch.equal(removed, -added)
    assert torch.equal(concept_guidance(difference, Concept(scale=0.0)), torch.zeros_like(difference))


def test_momentum_is_an_exponential_average_from_zero():
    first, second = torch.randn(2, 4, 4, 4, generator=generator(4))
    momentum = momentum_update(None, first, 0.6)
    assert torch.allclose(momentum, 0.4 * first)
    assert torch.allclose(momentum_update(momentum, second, 0.6), 0.6 * 0.4 * first + 0.4 * second)


@pytest.mark.parametrize("settings, message", [
    (dict(scale=-1.0), r"scale is -1.0; expected 0 or more"),
    (dict(scale=1.0, threshold=1.0), r"threshold is 1.0; expected a quantile in \[0, 1\)"),
    (dict(scale=1.0, sign=0), r"sign is 0; expected 1 \(add the concept\) or -1 \(remove it\)"),
    (dict(scale=1.0, momentum_scale=-0.5), r"momentum_scale is -0.5; expected 0 or more"),
    (dict(scale=1.0, momentum_beta=1.0), r"momentum_beta is 1.0; expected a value in \[0, 1\)"),
    (dict(scale=1.0, start_sigma=1.0, end_sigma=2.0), r"end_sigma \(2.0\) is above start_sigma \(1.0\)"),
])
def test_bad_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        Concept(**settings)


# A whole step, against the noise-space formula

def predictions(seed, concepts=2, shape=(2, 4, 8, 8)):
    g = generator(seed)
    x = torch.randn(shape, generator=g) * 3
    return x, torch.randn(shape, generator=g), [torch.randn(shape, generator=g) for _ in range(concepts)]


def by_hand(x, cfg, uncond, concept_predictions, sigma, concepts, momenta, active):
    """ε_cfg + Σ (γ_i + s_m ν_i) over the acting concepts, in noise space, back to a denoised prediction."""
    def epsilon(d):
        return (x - d) / sigma

    guided = epsilon(cfg)
    for concept, prediction, momentum, acts in zip(concepts, concept_predictions, momenta, active):
        psi = epsilon(prediction) - epsilon(uncond)
        mask = (psi.abs().flatten(2) >= torch.quantile(psi.abs().flatten(2), concept.threshold, dim=-1,
                                                       keepdim=True, interpolation="lower")).reshape(psi.shape)
        gamma = concept.sign * concept.scale * mask * psi
        if acts:
            guided = guided + gamma + concept.momentum_scale * momentum
    return x - sigma * guided


def test_a_step_is_the_noise_space_formula():
    x, uncond, concept_predictions = predictions(5)
    cfg = uncond + 4.0 * (torch.randn(x.shape, generator=generator(6)) - uncond)
    concepts = [Concept(scale=2.0, threshold=0.8, momentum_scale=0.5, momentum_beta=0.7),
                Concept(scale=1.5, threshold=0.5, sign=-1, momentum_scale=0.3, momentum_beta=0.4, start_sigma=2.0)]
    momenta = [torch.randn(x.shape, generator=generator(7)), torch.randn(x.shape, generator=generator(8))]
    sigma = torch.full((2,), 3.0)  # the second concept is still warming up
    guided, next_momenta = semantic_guidance_step(cfg, uncond, concept_predictions, sigma, concepts, momenta)
    assert torch.allclose(guided, by_hand(x, cfg, uncond, concept_predictions, 3.0, concepts, momenta,
                                          [True, False]), atol=1e-5)
    for concept, prediction, momentum, next_momentum in zip(concepts, concept_predictions, momenta, next_momenta):
        gamma = concept_guidance((uncond - prediction) / 3.0, concept)  # the warming-up one accumulates too
        assert torch.allclose(next_momentum, concept.momentum_beta * momentum + (1 - concept.momentum_beta) * gamma)
    acting, _ = semantic_guidance_step(cfg, uncond, concept_predictions, torch.full((2,), 1.5), concepts, momenta)
    x_low = cfg + 1.5 * ((x - cfg) / 3.0)  # any x gives the same step: only d's and sigma enter
    assert torch.allclose(acting, by_hand(x_low, cfg, uncond, concept_predictions, 1.5, concepts, momenta,
                                          [True, True]), atol=1e-5)


def test_scale_zero_and_noise_level_zero_leave_the_prediction_exactly():
    x, uncond, concept_predictions = predictions(9, concepts=1)
    cfg = torch.randn(x.shape, generator=generator(10))
    guided, _ = semantic_guidance_step(cfg, uncond, concept_predictions, torch.full((2,), 5.0),
                                       [Concept(scale=0.0)], [None])
    assert torch.equal(guided, cfg)
    momentum = torch.ones_like(cfg)
    guided, momenta = semantic_guidance_step(cfg, uncond, concept_predictions, torch.zeros(2),
                                             [Concept(scale=3.0, momentum_scale=1.0)], [momentum])
    assert torch.equal(guided, cfg) and momenta[0] is momentum


def test_concepts_outside_their_window_do_nothing_and_say_when_they_need_a_prediction():
    x, uncond, concept_predictions = predictions(11, concepts=1)
    cfg = torch.randn(x.shape, generator=generator(12))
    late = Concept(scale=3.0, start_sigma=2.0, end_sigma=1.0)
    for sigma in (5.0, 0.5):
        guided, _ = semantic_guidance_step(cfg, uncond, concept_predictions, torch.full((2,), sigma), [late], [None])
        assert torch.equal(guided, cfg)
    guided, _ = semantic_guidance_step(cfg, uncond, concept_predictions, torch.full((2,), 1.5), [late], [None])
    assert not torch.allclose(guided, cfg)
    assert [late.needs_prediction(s) for s in (5.0, 1.5, 0.5)] == [False, True, False]
    remembering = Concept(scale=3.0, momentum_scale=0.5, start_sigma=2.0, end_sigma=1.0)
    assert [remembering.needs_prediction(s) for s in (5.0, 1.5, 0.5)] == [True, True, False]


def test_mismatched_lists_are_refused():
    x, uncond, concept_predictions = predictions(13, concepts=2)
    with pytest.raises(ValueError, match=r"1 concepts, 2 concept predictions and 1 momenta"):
        semantic_guidance_step(x, uncond, concept_predictions, torch.ones(2), [Concept(scale=1.0)], [None])


# The batched denoiser on the analytic mixture

def focused(mixture: GaussianMixture, component: int) -> GaussianMixture:
    """The mixture as a prompt naming ``component`` sees it: nearly all weight on it."""
    weights = torch.full_like(mixture.weights, 0.01)
    weights[component] = 1.0
    return GaussianMixture(weights / weights.sum(), mixture.means, mixture.stds)


def counted_batch(parts):
    """A batched denoiser: each of ``parts``' exact denoisers on its share of the batch, with a count of calls."""
    calls = []

    def batched(x, sigma):
        calls.append(x.shape[0])
        chunks = zip(parts, x.chunk(len(parts)), sigma.chunk(len(parts)))
        return torch.cat([part.denoise(chunk, s) for part, chunk, s in chunks])

    return batched, calls


def component_shares(mixture, samples):
    components = mixture.component_posterior(samples, torch.tensor(0.0)).argmax(dim=1)
    return torch.bincount(components, minlength=3).double() / len(samples)


def test_the_denoiser_makes_one_call_a_step_and_adding_a_concept_draws_samples_to_it():
    mixture = standard_mixture()
    sigmas = karras_sigmas(20, 0.02, 40.0)
    noise = torch.randn((256, *mixture.shape), generator=generator(14)) * sigmas[0]
    plain = sample_euler(lambda x, s: mixture.denoise(x, s), noise, sigmas)
    batched, calls = counted_batch([mixture, mixture, focused(mixture, 2)])
    added = sample_euler(semantic_guidance_denoiser(batched, 1.0, [Concept(scale=3.0, threshold=0.5)]), noise, sigmas)
    assert calls == [3 * 256] * 20
    before, after = component_shares(mixture, plain)[2], component_shares(mixture, added)[2]
    assert before < 0.35 and after > 0.8, (before, after)
    batched, _ = counted_batch([mixture, mixture, focused(mixture, 0)])
    removed = sample_euler(semantic_guidance_denoiser(batched, 1.0, [Concept(scale=3.0, threshold=0.5, sign=-1)]),
                           noise, sigmas)
    assert component_shares(mixture, removed)[0] < 0.5 * component_shares(mixture, plain)[0]
    assert torch.isfinite(added).all() and torch.isfinite(removed).all()


def test_the_denoiser_at_scale_zero_is_plain_cfg():
    mixture = standard_mixture(shape=(4, 4, 4))
    conditioned = focused(mixture, 1)
    sigmas = karras_sigmas(8, 0.02, 40.0)
    noise = torch.randn((16, *mixture.shape), generator=generator(15)) * sigmas[0]
    batched, calls = counted_batch([mixture, conditioned, focused(mixture, 2), focused(mixture, 0)])
    guided = sample_euler(semantic_guidance_denoiser(batched, 3.0, [Concept(scale=0.0), Concept(scale=0.0)]),
                          noise, sigmas)

    def cfg(x, s):
        uncond = mixture.denoise(x, s)
        return uncond + 3.0 * (conditioned.denoise(x, s) - uncond)

    assert calls == [4 * 16] * 8
    assert torch.allclose(guided, sample_euler(cfg, noise, sigmas), atol=1e-5)
