"""Attribute correlation: parsing and checking scores, Pearson correlations of channels and PCA components, the dual
ridge fit (against the primal solution and brute-force leave-one-out), and objective scores read in chunks."""

import pytest
import torch

from latent_space_control.core import correlation, objectives
from latent_space_control.core.directions import mean_difference


def test_parse_scores_reads_every_separator_and_names_a_bad_token():
    assert correlation.parse_scores("1, 2.5;3\n-4  5e-1") == [1.0, 2.5, 3.0, -4.0, 0.5]
    assert correlation.parse_scores("  ") == []
    with pytest.raises(ValueError, match="scores holds 'red', which is not a number"):
        correlation.parse_scores("1, red, 3")


def test_require_scores_checks_count_finiteness_and_variation():
    assert correlation.require_scores(torch.tensor([1.0, 2.0, 3.0]), 3).dtype == torch.float64
    with pytest.raises(ValueError, match="scores has 2 scores but latent has a batch of 3"):
        correlation.require_scores(torch.tensor([1.0, 2.0]), 3)
    with pytest.raises(ValueError, match="scores contains 1 NaN/Inf"):
        correlation.require_scores(torch.tensor([1.0, float("nan"), 3.0]), 3)
    with pytest.raises(ValueError, match=r"scores: every score is the same \(2\)"):
        correlation.require_scores(torch.tensor([2.0, 2.0, 2.0]), 3)


def test_pearson_matches_the_textbook_formula_and_gives_zero_for_a_constant_column():
    generator = torch.Generator().manual_seed(0)
    values, scores = torch.randn(20, 3, generator=generator), torch.randn(20, generator=generator)
    values[:, 2] = 1.5
    expected = [float(torch.corrcoef(torch.stack([values[:, k], scores]))[0, 1]) for k in range(2)]
    found = correlation.pearson(values, scores)
    assert found[:2].tolist() == pytest.approx(expected, abs=1e-6)
    assert found[2] == 0


@pytest.mark.parametrize("shape", [(4, 6, 6), (3, 2, 5, 4)])  # image and video latents, any channel count
def test_channel_and_component_correlations_find_the_channel_that_carries_the_score(shape):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(40, *shape, generator=generator)
    scores = torch.randn(40, generator=generator)
    latents[:, 1] += 3 * scores.reshape(-1, *[1] * (len(shape) - 1))  # channel 1 moves with the score everywhere
    before = latents.clone()
    channels = correlation.channel_correlations(latents, scores)
    assert channels.shape == (shape[0],)
    assert channels[1] > 0.99 and channels.abs().argmax() == 1
    components = correlation.component_correlations(latents, scores, 5)
    assert components.correlations.shape == (5,) and components.explained.shape == (5,)
    assert components.correlations[0].abs() > 0.95  # the score's channel dominates the batch's variance
    assert torch.equal(latents, before)


def test_component_count_is_capped_at_what_the_batch_has():
    latents = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    components = correlation.component_correlations(latents, torch.tensor([0.0, 1.0, 2.0, 3.0]), 8)
    assert components.correlations.shape == (3,)


def test_ridge_fit_equals_the_primal_ridge_solution_and_its_leave_one_out():
    """The dual fit against the primal solve (D×D) with an explicit intercept, and against refitting without each
    item in turn."""
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(12, 2, 3, 3, generator=generator)
    scores = latents[:, 0, 1, 1] * 2 + 0.3 * torch.randn(12, generator=generator)
    fit = correlation.ridge_fit(latents, scores, ridge=0.5)

    def primal(x_rows, y, lam):
        mean_x, mean_y = x_rows.mean(0), y.mean()
        x = x_rows - mean_x
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype), x.T @ (y - mean_y))
        return w, mean_y - mean_x @ w

    rows, y = latents.double().flatten(1), scores.double()
    weights, _ = primal(rows, y, fit.ridge)
    centred = rows - rows.mean(0)
    assert fit.ridge == pytest.approx(0.5 * float(centred.pow(2).sum()) / 12)
    unit = weights / weights.norm()
    step = float(torch.cov(torch.stack([centred @ unit, y]))[0, 1] / y.std())  # slope of x·u on y, times std(y)
    assert torch.allclose(fit.direction.double().flatten(), unit * step, atol=1e-5)
    assert fit.score_per_strength == pytest.approx(float(weights.norm()) * step, rel=1e-6)
    fitted = centred @ weights + y.mean()
    assert fit.r2 == pytest.approx(1 - float((y - fitted).pow(2).sum() / (y - y.mean()).pow(2).sum()), rel=1e-6)
    left_out = []
    for i in range(12):
        keep = torch.arange(12) != i
        w, b = primal(rows[keep], y[keep], fit.ridge)  # the same λ: leave-one-out of this fit
        left_out.append(float(y[i] - (rows[i] @ w + b)))
    expected = 1 - sum(r * r for r in left_out) / float((y - y.mean()).pow(2).sum())
    assert fit.loo_r2 == pytest.approx(expected, rel=1e-6)
    assert fit.correlation == pytest.approx(float(torch.corrcoef(torch.stack([centred @ unit, y]))[0, 1]), rel=1e-6)
    assert 0 < fit.loo_r2 < fit.r2 < 1


def test_with_heavy_ridge_a_binary_score_gives_the_mean_difference():
    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(10, 4, 5, 5, generator=generator)
    labels = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 0, 0, 0])
    fit = correlation.ridge_fit(latents, labels, ridge=1e6)
    difference = mean_difference(latents[labels == 1], latents[labels == 0])
    cosine = torch.nn.functional.cosine_similarity(fit.direction.flatten(), difference.flatten(), dim=0)
    assert cosine > 0.9999
    # strength 1 / std(score): from one group's mean to the other's, along the direction
    unit = fit.direction.flatten() / fit.direction.norm()
    assert float(fit.direction.norm() / labels.std()) == pytest.approx(float(difference.flatten() @ unit), rel=1e-5)


def test_ridge_fit_direction_points_up_the_score_and_errors_name_the_input():
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(16, 4, 4, 4, generator=generator)
    scores = -latents[:, 2].mean(dim=(1, 2))
    fit = correlation.ridge_fit(latents, scores)
    moved = latents + fit.direction
    assert ((-moved[:, 2].mean(dim=(1, 2))) > scores).float().mean() > 0.9
    with pytest.raises(ValueError, match="latent has a batch of 2; expected at least 3"):
        correlation.ridge_fit(latents[:2], scores[:2])
    with pytest.raises(ValueError, match="every item of latent is the same"):
        correlation.ridge_fit(latents[:1].repeat(4, 1, 1, 1), torch.arange(4.0))
    with pytest.raises(ValueError, match="latent contains"):
        bad = latents.clone()
        bad[0, 0, 0, 0] = float("inf")
        correlation.ridge_fit(bad, scores)


def test_objective_scores_are_minus_the_loss_read_chunk_by_chunk_with_progress():
    generator = torch.Generator().manual_seed(6)
    latents = torch.randn(5, 3, 2, 2, generator=generator)
    decoded = []

    def decode(latent):  # "pictures" whose mean colour is the latent's first three channel means
        decoded.append(latent.shape[0])
        return latent.mean(dim=(2, 3))[:, :3, None, None].expand(-1, 3, 4, 4)

    objective = objectives.colour_statistic("colour", (1.0, 0.0, 0.0), "red")
    calls = []
    found = correlation.objective_scores(objective, latents, decode, lambda *args: calls.append(args[:2]), chunk=2)
    expected = -(latents.mean(dim=(2, 3)) - torch.tensor([1.0, 0.0, 0.0])).norm(dim=1)
    assert torch.allclose(found, expected.double(), atol=1e-6)
    assert decoded == [2, 2, 1] and calls == [(1, 3), (2, 3), (3, 3)]


def test_objective_scores_average_the_frames_of_video_pictures():
    latents = torch.zeros(2, 3, 2, 1, 1)

    def decode(latent):  # two frames per item: first all 0, then all 1
        frames = torch.stack([torch.zeros(latent.shape[0], 3, 4, 4), torch.ones(latent.shape[0], 3, 4, 4)], dim=1)
        return frames

    objective = objectives.colour_statistic("brightness", 0.0, "dark")
    found = correlation.objective_scores(objective, latents, decode)
    assert torch.allclose(found, torch.tensor([-0.5, -0.5], dtype=torch.float64), atol=1e-5)


def test_objective_scores_refuse_an_objective_with_only_constraints():
    objective = objectives.constrain(objectives.colour_statistic("brightness", 0.5, "grey"), 0.1)
    with pytest.raises(ValueError, match="holds only constraints"):
        correlation.objective_scores(objective, torch.zeros(3, 4, 2, 2), lambda z: z[:, :3])


def test_report_names_the_source_the_fit_and_every_correlation():
    generator = torch.Generator().manual_seed(7)
    latents = torch.randn(8, 4, 3, 3, generator=generator)
    scores = latents[:, 0].mean(dim=(1, 2))
    fit = correlation.ridge_fit(latents, scores)
    report = correlation.correlation_report(fit, correlation.channel_correlations(latents, scores),
                                            correlation.component_correlations(latents, scores, 3), scores, "typed")
    assert report.startswith("scores: typed; 8 items")
    assert f"(λ = 30 × the batch's variance per item); fit R² {fit.r2:.3f} on the batch, {fit.loo_r2:.3f} leave-one-out" in report
    assert f"along the direction correlates {fit.correlation:+.3f} with the score" in report
    assert "0: +" in report and "3: " in report and "3 (" in report
