"""The optimisation loop: both optimisers lower the loss, constraints end feasible at the known constrained optimum,
the best iterate per item is what comes back (also after divergence or a NaN), masks, batches, regularisers, gradient
penalty and early stop do what they say, nothing is changed in place, bad arguments are refused by name; the few-step
sampler, checkpointing and the scaled decoder match what they stand for; and on the reference family a CLIP text
objective with a picture reference term turns encoded pictures towards the text while keeping them."""

import math

import pytest
import torch
import torch.nn.functional as F

from latent_space_control.core.objectives import (AT_LEAST, AT_MOST, Objective, Term, along_direction, clip_text,
                                                  colour_statistic, combine, constrain, evaluate,
                                                  reference_distance)
from latent_space_control.core.optimize import (checkpointed, few_step_sampler, optimise, regulariser,
                                                scaled_decoder)
from latent_space_control.core.sampling import karras_sigmas, sample_euler


def seeded(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class ToyDecoder:
    """A fixed differentiable "VAE decoder": latents [B, 4, h, w] -> pictures [B, 3, 2h, 2w] in 0..1 (a seeded 3×3
    convolution, a sigmoid, nearest upsampling)."""

    def __init__(self, seed: int = 0):
        self.weight = seeded(seed, 3, 4, 3, 3) * 0.3
        self.bias = seeded(seed + 1, 3) * 0.1

    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        picture = torch.sigmoid(F.conv2d(latent, self.weight, self.bias, padding=1))
        return F.interpolate(picture, scale_factor=2, mode="nearest")


def squared_distance_to(target: torch.Tensor, name: str = "distance", offset: float = 0.0) -> Objective:
    """A latent-only term: Σ (z − target)² per item (+ ``offset``, a floor the loss cannot go below)."""
    return Objective((Term(name, lambda c: (c.latent - target).pow(2).flatten(1).sum(dim=1) + offset, AT_MOST,
                           needs_image=False),))


def loss_at(objective: Objective, latent: torch.Tensor, start: torch.Tensor, decode=None) -> torch.Tensor:
    with torch.no_grad():
        start_image = decode(start) if objective.needs_image else None
        return evaluate(objective, latent, start, start_image, decode)[1]


# --- the optimisers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("optimiser, learning_rate", [("adam", 0.1), ("sgd_nesterov", 3.0)])
def test_both_optimisers_lower_the_loss_through_a_decoder(optimiser, learning_rate):
    decode = ToyDecoder()
    start = seeded(2, 2, 4, 4, 4)
    objective = colour_statistic("colour", (0.9, 0.2, 0.1), "orange")
    result = optimise(start, objective, decode, steps=40, learning_rate=learning_rate, optimiser=optimiser)
    before, after = loss_at(objective, start, start, decode), loss_at(objective, result.latent, start, decode)
    assert (after < 0.5 * before).all(), (before, after)
    assert result.steps_taken == 40 and result.message == "ran all 40 steps"
    assert result.feasible.tolist() == [True, True]  # no constraints: every item holds them
    assert len(result.history["orange"]) == len(result.history["loss"]) == 40
    assert result.history["loss"][0] == pytest.approx(before.mean().item(), rel=1e-5)
    torch.testing.assert_close(result.latent, result.variable)  # no generator: the variable is the latent


def test_a_constraint_ends_feasible_at_the_known_constrained_optimum():
    """min ‖z − z₀‖² subject to ⟨z − z₀, d⟩ / ‖d‖² ≥ t has the answer z₀ + t·d (the projection onto the
    half-space)."""
    start = seeded(3, 1, 4, 4, 4)
    direction = seeded(4, 4, 4, 4)
    moved = Term("moved", lambda c: (c.latent - c.start).flatten(1) @ direction.flatten() / direction.pow(2).sum(),
                 AT_LEAST, needs_image=False)
    objective = combine([(reference_distance("keep", "latent"), 1.0), (constrain(Objective((moved,)), 0.2), 1.0)])
    result = optimise(start, objective, None, steps=200, learning_rate=0.05)
    answer = start + 0.2 * direction
    assert result.feasible.tolist() == [True]
    reached = ((result.variable - start).flatten() @ direction.flatten() / direction.pow(2).sum()).item()
    assert reached >= 0.2 - 1e-6
    # Adam's steps jitter about the optimum by about the learning rate: a few percent off it, the distance within 3%.
    assert ((result.variable - answer).norm() / (answer - start).norm()).item() < 0.1
    assert ((result.variable - start).norm() / (answer - start).norm()).item() < 1.03
    # The unconstrained problem's answer is the start: the constraint is what moved it.
    assert optimise(start, Objective(objective.terms), None, steps=20).variable.equal(start)


def test_an_unreachable_constraint_is_reported_infeasible():
    start = seeded(5, 1, 4, 2, 2)
    bounded = Term("bounded", lambda c: torch.tanh(c.latent.flatten(1)[:, 0]), AT_LEAST, needs_image=False)
    result = optimise(start, constrain(Objective((bounded,)), 2.0), None, steps=10)
    assert result.feasible.tolist() == [False]


# --- the best iterate -------------------------------------------------------------------------------------------------

def test_the_best_iterate_is_kept_when_the_steps_overshoot():
    start = seeded(6, 1, 4, 4, 4)
    objective = squared_distance_to(start + seeded(7, 1, 4, 4, 4))
    iterates = [start]
    result = optimise(start, objective, None, steps=15, learning_rate=0.02, optimiser="sgd_nesterov",
                      progress=lambda step, steps, z: iterates.append(z))
    losses = result.history["distance"]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert 0 < best < len(losses) - 1 and losses[-1] > 10 * losses[best]  # it passed the optimum and went on
    assert torch.equal(result.variable, iterates[best])
    assert loss_at(objective, result.variable, start).item() == pytest.approx(losses[best], rel=1e-5)


def test_a_diverging_run_returns_the_best_iterate_seen_not_the_last():
    start = seeded(8, 1, 4, 4, 4)
    objective = squared_distance_to(start + 0.1 * seeded(9, 1, 4, 4, 4))
    result = optimise(start, objective, None, steps=8, learning_rate=2.0, optimiser="sgd_nesterov")
    losses = result.history["distance"]
    assert all(math.isfinite(value) for value in losses) and losses[-1] > 1e3 * losses[0]  # it diverged
    assert torch.equal(result.variable, start)  # the start was the best it saw


def test_a_nan_loss_stops_the_run_naming_nan_and_returns_the_best_iterate():
    start = seeded(10, 1, 4, 2, 2)
    target = start + 3.0

    def reading(candidate):
        distance = (candidate.latent - target).pow(2).flatten(1).sum(dim=1)
        # Undefined once the latent's first element has moved more than 1 (a decoder blowing up, say).
        broken = (candidate.latent - candidate.start).flatten(1)[:, 0] > 1.0
        return torch.where(broken, torch.full_like(distance, math.nan), distance)

    objective = Objective((Term("fragile", reading, AT_MOST, needs_image=False),))
    result = optimise(start, objective, None, steps=100, learning_rate=0.1)
    assert "NaN" in result.message and result.message.startswith(f"stopped at step {result.steps_taken + 1}")
    assert 1 < result.steps_taken < 100
    losses = result.history["fragile"]
    assert len(losses) == result.steps_taken and all(math.isfinite(value) for value in losses)
    assert torch.isfinite(result.variable).all()
    assert loss_at(objective, result.variable, start).item() == pytest.approx(min(losses), rel=1e-5)
    assert min(losses) < losses[0]


# --- masks, batches, inputs -------------------------------------------------------------------------------------------

def test_the_mask_keeps_masked_out_elements_exactly_unchanged():
    start = seeded(11, 2, 4, 4, 4)
    mask = torch.zeros(1, 4, 4)
    mask[:, 1:3, 2:] = 1
    result = optimise(start, squared_distance_to(start + 2.0), None, steps=20, learning_rate=0.1, mask=mask)
    free = mask.bool().expand(2, 4, 4, 4)
    assert torch.equal(result.variable[~free], start[~free])
    assert (result.variable[free] - start[free]).abs().min() > 0.5


def test_a_coarser_mask_keeps_its_zero_blocks_exactly_unchanged():
    start = seeded(12, 1, 4, 4, 4)
    mask = torch.zeros(1, 8, 8)
    mask[:, :, 4:] = 1  # the right half at twice the latent's resolution
    result = optimise(start, squared_distance_to(start - 1.0), None, steps=10, learning_rate=0.1, mask=mask)
    assert torch.equal(result.variable[..., :2], start[..., :2])
    assert not torch.equal(result.variable[..., 3:], start[..., 3:])


def optimise_each_and_together(start, objective_for, **settings):
    together = optimise(start, objective_for(start), None, **settings)
    alone = [optimise(start[i:i + 1], objective_for(start[i:i + 1]), None, **settings) for i in range(len(start))]
    return together, alone


def per_item_objective(start: torch.Tensor) -> Objective:
    """Move each item along a shared direction, and towards its own target, nothing shared between items."""
    targets = start + seeded(14, 1, *start.shape[1:])
    return combine([(along_direction(seeded(13, *start.shape[1:]), 0.5, "push"), 1.0),
                    (squared_distance_to(targets, offset=1.0), 0.1)])


def test_batch_items_of_the_same_scale_are_optimised_as_if_alone():
    start = seeded(15, 2, 4, 4, 4)
    start[1] *= start[0].pow(2).mean().sqrt() / start[1].pow(2).mean().sqrt()  # the same RMS
    together, alone = optimise_each_and_together(start, per_item_objective, steps=25, learning_rate=0.05)
    for i in range(2):
        torch.testing.assert_close(together.variable[i:i + 1], alone[i].variable, rtol=1e-4, atol=1e-5)


def test_batch_items_are_optimised_as_if_alone_whatever_the_other_items():
    """An item's result must not depend on what else is in the batch: here the second item is 10× the first's scale
    (a latent and noise, say, or two VAEs' latents)."""
    start = seeded(15, 2, 4, 4, 4) * torch.tensor([1.0, 10.0]).reshape(2, 1, 1, 1)
    together, alone = optimise_each_and_together(start, per_item_objective, steps=25, learning_rate=0.05)
    for i in range(2):
        torch.testing.assert_close(together.variable[i:i + 1], alone[i].variable, rtol=1e-4, atol=1e-5)


def test_nothing_is_changed_in_place_and_inference_mode_is_fine():
    start = seeded(16, 1, 4, 4, 4)
    mask = torch.ones(1, 4, 4)
    mask[:, 0] = 0
    direction = seeded(17, 4, 4, 4)
    kept = start.clone(), mask.clone(), direction.clone()
    objective = along_direction(direction, 1.0, "push")
    result = optimise(start, objective, None, steps=5, mask=mask)
    assert torch.equal(start, kept[0]) and torch.equal(mask, kept[1]) and torch.equal(direction, kept[2])
    assert not result.variable.requires_grad and result.variable.dtype == start.dtype
    with torch.inference_mode():
        inferred = optimise(start.clone(), objective, None, steps=5, mask=mask.clone())
    torch.testing.assert_close(inferred.variable, result.variable)


def test_works_on_video_latents_with_16_channels():
    start = seeded(18, 1, 16, 3, 4, 4)  # [B, C, T, H, W]
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1
    direction = seeded(19, 16, 3, 4, 4)
    direction[..., 2:] = 0  # only where the mask lets it move

    def decode(latent):  # frames averaged into one picture, the first three channels as RGB
        return torch.sigmoid(latent[:, :3].mean(dim=2))

    objective = combine([(along_direction(direction, 0.5, "push"), 1.0),
                         (colour_statistic("brightness", 0.5, "grey"), 0.01)])
    result = optimise(start, objective, decode, steps=60, learning_rate=0.05, mask=mask)
    assert result.variable.shape == start.shape
    assert torch.equal(result.variable[..., 2:], start[..., 2:])
    reached = ((result.variable - start).flatten() @ direction.flatten() / direction.pow(2).sum()).item()
    assert reached == pytest.approx(0.5, abs=0.05)


# --- regularisers, gradient penalty, early stop -----------------------------------------------------------------------

def test_regulariser_values():
    start = seeded(20, 2, 4, 3, 3)
    z = start + seeded(21, 2, 4, 3, 3)
    rms = 2.0
    torch.testing.assert_close(regulariser("distance_to_start", z, start, rms),
                               ((z - start) / rms).pow(2).flatten(1).mean(dim=1))
    torch.testing.assert_close(regulariser("norm", z, start, rms), (z / rms).pow(2).flatten(1).mean(dim=1))
    assert torch.equal(regulariser("none", z, start, rms), torch.zeros(2))
    with pytest.raises(ValueError, match="regulariser is 'weight_decay'"):
        regulariser("weight_decay", z, start, rms)


def test_gaussian_shell_is_zero_at_the_chi_mode_and_positive_elsewhere():
    d = 4 * 3 * 3
    direction = F.normalize(seeded(22, 1, d), dim=1).reshape(1, 4, 3, 3)
    mode = math.sqrt(d - 1)
    at_mode = regulariser("gaussian_shell", direction * mode, direction, 1.0)
    assert abs(at_mode.item()) < 1e-5
    for radius in (0.5 * mode, 0.9 * mode, 1.1 * mode, 2 * mode):
        assert regulariser("gaussian_shell", direction * radius, direction, 1.0).item() > 1e-4
    # Unit Gaussian noise lies near the shell: far less than the values off it.
    noise = seeded(23, 3, 4, 3, 3)
    assert (regulariser("gaussian_shell", noise, noise, 1.0) < 0.05).all()


def test_a_distance_regulariser_keeps_the_result_nearer_the_start():
    start = seeded(24, 1, 4, 4, 4)
    objective = along_direction(seeded(25, 4, 4, 4), 1.0, "push")
    free = optimise(start, objective, None, steps=40, learning_rate=0.05)
    held = optimise(start, objective, None, steps=40, learning_rate=0.05, regulariser_weight=10.0)
    assert (held.variable - start).norm() < 0.8 * (free.variable - start).norm()
    assert "loss" in held.history and held.history["total"][-1] > held.history["loss"][-1]


def test_a_gradient_penalty_runs_and_changes_the_result():
    decode = ToyDecoder(seed=3)
    start = seeded(26, 1, 4, 4, 4)
    objective = colour_statistic("colour", (0.1, 0.8, 0.3), "green")
    plain = optimise(start, objective, decode, steps=15, learning_rate=0.1)
    penalised = optimise(start, objective, decode, steps=15, learning_rate=0.1, gradient_penalty=5.0)
    assert torch.isfinite(penalised.variable).all()
    assert (penalised.variable - plain.variable).abs().max() > 1e-2
    assert penalised.history["total"][0] > penalised.history["loss"][0]  # the penalty is in the total


def test_early_stop_ends_a_converging_run_before_its_steps_and_says_so():
    start = seeded(27, 1, 4, 4, 4)
    objective = squared_distance_to(start + seeded(28, 1, 4, 4, 4), offset=64.0)  # a floor: relative gains shrink
    result = optimise(start, objective, None, steps=400, learning_rate=0.05, tolerance=1e-3)
    assert result.steps_taken < 400 and result.message.startswith(f"converged after {result.steps_taken} steps")
    assert len(result.history["loss"]) == result.steps_taken
    assert result.history["loss"][-1] < 64.5
    unstopped = optimise(start, objective, None, steps=result.steps_taken + 20, learning_rate=0.05)
    assert unstopped.steps_taken == result.steps_taken + 20 and unstopped.message.startswith("ran all")


def test_a_progress_exception_stops_the_run():
    start = seeded(29, 1, 4, 2, 2)

    def interrupt(step, steps, z):
        if step == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        optimise(start, squared_distance_to(start + 1), None, steps=10, progress=interrupt)


# --- bad arguments ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, named", [
    (dict(steps=0), "steps is 0"),
    (dict(learning_rate=0.0), "learning_rate is 0.0"),
    (dict(learning_rate=-0.1), "learning_rate is -0.1"),
    (dict(learning_rate=math.nan), "learning_rate is nan"),
    (dict(optimiser="lbfgs"), "optimiser is 'lbfgs'"),
    (dict(regulariser_name="l1"), "regulariser is 'l1'"),
    (dict(regulariser_weight=-1.0), "regulariser_weight is -1.0"),
    (dict(gradient_penalty=math.inf), "gradient_penalty is inf"),
    (dict(tolerance=-0.01), "tolerance is -0.01"),
])
def test_bad_arguments_are_refused_naming_them(settings, named):
    start = seeded(30, 1, 4, 2, 2)
    with pytest.raises(ValueError, match=named):
        optimise(start, squared_distance_to(start), None, **settings)


def test_bad_latents_and_empty_objectives_are_refused():
    start = seeded(31, 1, 4, 2, 2)
    broken = start.clone()
    broken[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="latent contains 1 NaN"):
        optimise(broken, squared_distance_to(start), None)
    with pytest.raises(ValueError, match="latent has shape"):
        optimise(start[0, 0], squared_distance_to(start), None)
    with pytest.raises(ValueError, match="objective is empty"):
        optimise(start, Objective(), None)


def test_a_picture_objective_without_a_decoder_is_refused_clearly():
    start = seeded(31, 1, 4, 2, 2)
    with pytest.raises(ValueError, match="no decoder"):
        optimise(start, colour_statistic("brightness", 0.5, "grey"), None)


# --- the sampler, checkpointing, the scaled decoder -------------------------------------------------------------------

def toy_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0(x, σ) for data N(μ, 1): shrink towards μ by 1 / (1 + σ²) — nonlinear in σ, batch-wise σ."""
    sigma = sigma.reshape(-1, *[1] * (x.ndim - 1))
    return 0.3 + (x - 0.3) / (1 + sigma ** 2) + 0.05 * torch.tanh(x)


def test_the_few_step_sampler_is_the_euler_sampler():
    sigmas = karras_sigmas(4, 0.1, 10.0)
    noise = seeded(32, 2, 4, 3, 3)
    generate = few_step_sampler(toy_denoiser, sigmas, lambda n: n * sigmas[0])
    torch.testing.assert_close(generate(noise), sample_euler(toy_denoiser, noise * sigmas[0], sigmas),
                               rtol=1e-6, atol=1e-6)
    finished = few_step_sampler(toy_denoiser, sigmas, lambda n: n * sigmas[0], finish=lambda x: x / 2)
    torch.testing.assert_close(finished(noise), generate(noise) / 2)
    with pytest.raises(ValueError, match="sigmas has 1 levels"):
        few_step_sampler(toy_denoiser, sigmas[:1], lambda n: n)


def test_noise_optimised_through_the_sampler_lowers_the_loss_of_what_it_generates():
    sigmas = karras_sigmas(2, 0.1, 5.0)
    generate = few_step_sampler(toy_denoiser, sigmas, lambda n: n * sigmas[0])
    noise = seeded(33, 1, 4, 3, 3)
    objective = squared_distance_to(torch.full((1, 4, 3, 3), 0.8))
    result = optimise(noise, objective, None, steps=30, learning_rate=0.1, generate=generate,
                      regulariser_name="gaussian_shell")
    torch.testing.assert_close(result.latent, generate(result.variable))
    assert loss_at(objective, result.latent, noise).item() < 0.5 * loss_at(objective, generate(noise), noise).item()


def test_checkpointed_gives_the_same_value_and_gradient():
    weight = seeded(34, 5, 5)

    def function(x, y):
        return torch.tanh(x @ weight) * y.sin()

    x1, y1 = seeded(35, 3, 5).requires_grad_(), seeded(36, 3, 5).requires_grad_()
    x2, y2 = x1.detach().clone().requires_grad_(), y1.detach().clone().requires_grad_()
    plain, recomputed = function(x1, y1), checkpointed(function)(x2, y2)
    torch.testing.assert_close(recomputed, plain, rtol=0, atol=0)
    plain.pow(2).sum().backward()
    recomputed.pow(2).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=0, atol=0)
    torch.testing.assert_close(y2.grad, y1.grad, rtol=0, atol=0)


def test_scaled_decoder_decodes_a_smaller_latent_and_refuses_bad_scales():
    seen = []

    def decode(latent):
        seen.append(tuple(latent.shape))
        return latent[:, :3]

    constant = torch.full((2, 4, 8, 6), 0.7)
    picture = scaled_decoder(decode, 0.5)(constant)
    assert seen == [(2, 4, 4, 3)]
    torch.testing.assert_close(picture, torch.full((2, 3, 4, 3), 0.7))
    assert scaled_decoder(decode, 1.0) is decode
    for scale in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=f"decode_scale is {scale}"):
            scaled_decoder(decode, scale)


def test_scaled_decoder_shrinks_video_latents_frame_by_frame():
    """Video latents [B, C, T, H, W] shrink in height and width; their frames stay."""
    seen = []

    def decode(latent):
        seen.append(tuple(latent.shape))
        return latent[:, :3, 0]

    scaled_decoder(decode, 0.5)(torch.zeros(1, 16, 3, 8, 8))
    assert seen == [(1, 16, 3, 4, 4)]


# --- the reference family ---------------------------------------------------------------------------------------------

def test_on_the_reference_family_clip_text_with_a_picture_reference_turns_pictures_green_and_keeps_them():
    pytest.importorskip("diffusers", reason="the reference family needs the test extras: pip install -e '.[test]'")
    pytest.importorskip("open_clip", reason="the reference family needs the test extras: pip install -e '.[test]'")
    from latent_space_control.reference import models, world

    family = models.load()
    scenes = [scene for scene in world.scenes(40, seed=9, held_out=False) if scene.colour != "green"][:4]
    with torch.no_grad():
        latents = family.encode(world.render_batch(scenes))
        green = family.encode_text(["green"]).embedding
    objective = combine([(clip_text(family.score_images, green, None, "green"), 1.0),
                         (reference_distance("keep", "image"), 1.0)])
    kept = latents.clone()
    result = optimise(latents, objective, family.decode, steps=30, learning_rate=0.1)
    assert torch.equal(latents, kept)
    with torch.no_grad():
        readings, _ = evaluate(objective, result.latent, latents, family.decode(latents), family.decode)
        before, _ = evaluate(objective, latents, latents, family.decode(latents), family.decode)
    rise = readings["green"] - before["green"]
    assert rise.mean() > 0.2 and (rise > 0.08).all(), (before["green"], readings["green"])
    # Mean absolute pixel change (0..1): about 0.04 here, about 0.09 when the reference term is left out.
    assert readings["keep"].mean() < 0.05 and (readings["keep"] < 0.08).all(), readings["keep"]
