"""Objectives: each builder reads what it says on pictures and latents whose reading is known by hand, sums and
constraints combine as documented, evaluate decodes only when a term needs pictures, and bad inputs are refused with
a message that names them."""

import math

import pytest
import torch
import torch.nn.functional as F

from latent_space_control.core.objectives import (AT_LEAST, AT_MOST, Candidate, Constraint, Objective, Term,
                                                  along_direction, clip_image, clip_text, colour_statistic, combine,
                                                  constrain, evaluate, reference_distance, view_embedding, views)


def mean_colour_scorer(image: torch.Tensor) -> torch.Tensor:
    """A stand-in for CLIP: the unit vector of the picture's mean RGB (so cosines are known by hand)."""
    return F.normalize(image.float().mean(dim=(2, 3)), dim=-1)


def flat(rgb, size: int = 4) -> torch.Tensor:
    """One picture [1, 3, size, size] of a single colour."""
    return torch.tensor(rgb, dtype=torch.float32).reshape(1, 3, 1, 1).expand(1, 3, size, size).clone()


def picture_candidate(image: torch.Tensor, start_image: torch.Tensor | None = None) -> Candidate:
    latent = torch.zeros(image.shape[0], 4, 2, 2)
    return Candidate(latent, image, latent, start_image)


def latent_candidate(latent: torch.Tensor, start: torch.Tensor) -> Candidate:
    return Candidate(latent, None, start, None)


def only_term(objective: Objective) -> Term:
    assert len(objective.terms) == 1 and not objective.constraints
    return objective.terms[0]


# --- clip_text / clip_image -------------------------------------------------------------------------------------------

def test_clip_text_reads_the_cosine_to_the_mean_positive_and_its_loss_is_one_minus_it():
    pictures = torch.cat([flat((1.0, 0.0, 0.0)), flat((1.0, 1.0, 0.0)), flat((0.2, 0.4, 0.4))])
    positive = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])  # averaged, then normalised: (1, 1, 0) / √2
    term = only_term(clip_text(mean_colour_scorer, positive, None, "clip"))
    assert term.goal == AT_LEAST and term.needs_image and term.target is None
    reading = term.reading(picture_candidate(pictures))
    rgb = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.2, 0.4, 0.4]])
    expected = F.normalize(rgb, dim=-1) @ torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2)
    torch.testing.assert_close(reading, expected)
    assert reading[1].item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(term.loss(reading), 1 - expected)


def test_clip_text_with_a_negative_subtracts_the_cosine_to_it():
    pictures = torch.cat([flat((1.0, 0.0, 1.0)), flat((0.0, 0.0, 1.0)), flat((1.0, 0.0, 0.0))])
    term = only_term(clip_text(mean_colour_scorer, torch.tensor([2.0, 0.0, 0.0]), torch.tensor([[0.0, 0.0, 5.0]]),
                               "clip"))
    reading = term.reading(picture_candidate(pictures))
    torch.testing.assert_close(reading, torch.tensor([0.0, -1.0, 1.0]))


def test_clip_image_reads_the_cosine_to_the_references_mean_embedding():
    references = torch.cat([flat((1.0, 0.0, 0.0)), flat((0.0, 1.0, 0.0))])  # mean embedding: (1, 1, 0) / √2
    term = only_term(clip_image(mean_colour_scorer, references, "look"))
    assert term.goal == AT_LEAST and term.needs_image
    reading = term.reading(picture_candidate(torch.cat([flat((0.5, 0.5, 0.0)), flat((1.0, 0.0, 0.0)),
                                                        flat((0.0, 0.0, 1.0))])))
    torch.testing.assert_close(reading, torch.tensor([1.0, 1 / math.sqrt(2), 0.0]))


# --- along_direction --------------------------------------------------------------------------------------------------

def test_along_direction_reads_the_move_in_units_of_the_direction_and_scores_the_squared_gap_to_amount():
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(4, 3, 3, generator=generator) * 0.7
    start = torch.randn(2, 4, 3, 3, generator=generator)
    sideways = torch.randn(2, 4, 3, 3, generator=generator)
    sideways = sideways - (sideways.flatten(1) @ direction.flatten() / direction.pow(2).sum()).reshape(2, 1, 1, 1) \
        * direction  # orthogonal to the direction: not scored
    latent = start + torch.tensor([2.5, -1.0]).reshape(2, 1, 1, 1) * direction + sideways
    term = only_term(along_direction(direction, 1.5, "push"))
    assert term.target == 1.5 and not term.needs_image
    reading = term.reading(latent_candidate(latent, start))
    torch.testing.assert_close(reading, torch.tensor([2.5, -1.0]))
    torch.testing.assert_close(term.loss(reading), torch.tensor([1.0, 6.25]))



def test_along_direction_fits_a_direction_found_at_another_size_and_refuses_other_channels():
    direction = torch.ones(4, 2, 2)
    start = torch.zeros(1, 4, 6, 6)
    term = only_term(along_direction(direction, 1.0, "push"))
    # Resized to 6×6 it is all ones: a latent moved by the whole (resized) direction reads 1.
    torch.testing.assert_close(term.reading(latent_candidate(start + 1.0, start)), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="direction has 4 channels but the latent the objective scores has 16"):
        term.reading(latent_candidate(torch.zeros(1, 16, 6, 6), torch.zeros(1, 16, 6, 6)))

# --- reference_distance -----------------------------------------------------------------------------------------------

def test_reference_distance_in_latent_space_is_the_mean_squared_difference_relative_to_the_start():
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(1, 4, 3, 3, generator=generator) * 3
    latent = start + torch.randn(1, 4, 3, 3, generator=generator)
    term = only_term(reference_distance("keep", "latent"))
    assert term.goal == AT_MOST and not term.needs_image
    expected = (latent - start).pow(2).mean() / start.pow(2).mean()
    torch.testing.assert_close(term.reading(latent_candidate(latent, start)), expected.reshape(1))
    assert term.reading(latent_candidate(start, start)).item() == 0.0
    torch.testing.assert_close(term.loss(expected.reshape(1)), expected.reshape(1))


def test_reference_distance_to_a_given_reference_ignores_the_start():
    generator = torch.Generator().manual_seed(2)
    reference = torch.randn(1, 4, 3, 3, generator=generator)
    latent = torch.randn(2, 4, 3, 3, generator=generator)
    start = torch.randn(2, 4, 3, 3, generator=generator)
    term = only_term(reference_distance("keep", "latent", reference=reference))
    expected = (latent - reference).pow(2).flatten(1).mean(dim=1) / reference.pow(2).mean()
    torch.testing.assert_close(term.reading(latent_candidate(latent, start)), expected)
    torch.testing.assert_close(term.reading(latent_candidate(latent, start * 10)), expected)


def test_reference_distance_in_latent_space_reads_each_item_as_it_would_alone():
    """The reading of an item must not depend on the other items of the batch (each item is its own problem)."""
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(2, 4, 3, 3, generator=generator) * torch.tensor([1.0, 10.0]).reshape(2, 1, 1, 1)
    latent = start + torch.randn(2, 4, 3, 3, generator=generator)
    term = only_term(reference_distance("keep", "latent"))
    together = term.reading(latent_candidate(latent, start))
    alone = torch.cat([term.reading(latent_candidate(latent[i:i + 1], start[i:i + 1])) for i in range(2)])
    torch.testing.assert_close(together, alone)


def test_reference_distance_in_image_space_is_the_mean_absolute_pixel_difference():
    start_image = flat((0.2, 0.4, 0.6))
    image = start_image.clone()
    image[:, 0, 0, 0] += 0.8  # one pixel of one channel moves a lot: 0.8 / 48 on average
    term = only_term(reference_distance("keep", "image"))
    assert term.needs_image
    assert term.reading(picture_candidate(image, start_image)).item() == pytest.approx(0.8 / 48, abs=1e-7)
    given = only_term(reference_distance("keep", "image", reference=flat((0.0, 0.0, 0.0))))
    assert given.reading(picture_candidate(start_image, start_image)).item() == pytest.approx(0.4, abs=1e-7)


def test_reference_distance_with_a_mask_leaves_the_masked_part_free():
    start_image = flat((0.5, 0.5, 0.5))
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1  # the left half is free
    image = start_image.clone()
    image[:, :, :, :2] = 1.0  # a large change where it is free
    term = only_term(reference_distance("keep", "image", mask=mask))
    assert term.reading(picture_candidate(image, start_image)).item() == 0.0
    image[:, 1, 0, 3] += 0.3  # one element of the 24 kept ones
    assert term.reading(picture_candidate(image, start_image)).item() == pytest.approx(0.3 / 24, abs=1e-7)

    start = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    latent = start.clone()
    latent[..., :2] += 5.0
    latent_term = only_term(reference_distance("keep", "latent", mask=mask))
    assert latent_term.reading(latent_candidate(latent, start)).item() == 0.0
    latent[:, 2, 1, 2] += 2.0
    expected = 4.0 / start.pow(2).mean() / (4 * 4 * 2)
    assert latent_term.reading(latent_candidate(latent, start)).item() == pytest.approx(expected.item(), rel=1e-5)


# --- colour_statistic -------------------------------------------------------------------------------------------------

def test_colour_reads_the_distance_of_the_mean_rgb_from_the_target():
    image = torch.cat([flat((1.0, 0.0, 0.0)), flat((0.0, 0.0, 1.0))])
    term = only_term(colour_statistic("colour", (1.0, 0.0, 0.0), "red"))
    assert term.goal == AT_MOST and term.needs_image
    torch.testing.assert_close(term.reading(picture_candidate(image)), torch.tensor([0.0, math.sqrt(2)]))


def test_brightness_and_saturation_read_the_gap_to_the_target():
    image = flat((0.8, 0.4, 0.2))
    luma = 0.299 * 0.8 + 0.587 * 0.4 + 0.114 * 0.2
    brightness = only_term(colour_statistic("brightness", 0.5, "bright"))
    assert brightness.reading(picture_candidate(image)).item() == pytest.approx(abs(luma - 0.5), abs=1e-6)
    saturation = only_term(colour_statistic("saturation", 0.1, "saturated"))
    assert saturation.reading(picture_candidate(image)).item() == pytest.approx(0.5, abs=1e-6)


def test_colour_statistics_with_a_mask_read_only_the_region():
    image = flat((0.0, 0.0, 1.0))
    image[:, :, :, :2] = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)  # left half red, right half blue
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1
    inside = only_term(colour_statistic("colour", (1.0, 0.0, 0.0), "red", mask=mask))
    assert inside.reading(picture_candidate(image)).item() == pytest.approx(0.0, abs=1e-7)
    everywhere = only_term(colour_statistic("colour", (1.0, 0.0, 0.0), "red"))
    assert everywhere.reading(picture_candidate(image)).item() == pytest.approx(math.sqrt(0.5), abs=1e-6)
    brightness = only_term(colour_statistic("brightness", 0.0, "dark", mask=1 - mask))  # the blue half
    assert brightness.reading(picture_candidate(image)).item() == pytest.approx(0.114, abs=1e-6)
    image[:, :, :, 2:] = 0.5  # the right half grey: no saturation there
    saturation = only_term(colour_statistic("saturation", 0.0, "grey", mask=1 - mask))
    assert saturation.reading(picture_candidate(image)).item() == pytest.approx(0.0, abs=1e-7)


# --- combine, constrain, Constraint -----------------------------------------------------------------------------------

def reading_term(name: str, goal: str = AT_MOST, target: float | None = None, weight: float = 1.0) -> Term:
    """A latent-only term whose reading is the latent's first element."""
    return Term(name, lambda candidate: candidate.latent.flatten(1)[:, 0], goal, needs_image=False, weight=weight,
                target=target)


def test_combine_multiplies_weights_adds_them_for_one_term_wired_twice_and_keeps_constraints():
    a = Objective((reading_term("a", weight=2.0),))
    b = Objective((reading_term("b"),))
    bound = constrain(Objective((reading_term("c", AT_LEAST),)), 0.3)
    total = combine([(a, 0.5), (b, 3.0), (a, 1.0), (bound, 7.0), (bound, 1.0)])
    assert {term.name: term.weight for term in total.terms} == {"a": 3.0, "b": 3.0}
    assert total.constraints == bound.constraints
    latent = torch.tensor([[0.25, 0.0]]).reshape(1, 2, 1, 1)
    readings, loss = evaluate(total, latent, latent, None, None)
    assert set(readings) == {"a", "b", "c"}
    assert loss.item() == pytest.approx(3.0 * 0.25 + 3.0 * 0.25)  # constraints add nothing to the loss


def test_constrain_moves_the_terms_into_one_constraint_and_keeps_earlier_ones():
    first = constrain(Objective((reading_term("a", AT_LEAST),)), 0.3)
    both = constrain(combine([(first, 1.0), (Objective((reading_term("b"),)), 1.0)]), 0.1)
    assert both.terms == ()
    assert len(both.constraints) == 2 and both.constraints[0] == first.constraints[0]
    assert [term.name for term in both.constraints[1].terms] == ["b"]
    with pytest.raises(ValueError, match="no terms"):
        constrain(first, 0.5)


def test_a_single_constraint_at_least_or_at_most_holds_on_its_own_reading():
    readings = {"a": torch.tensor([0.1, 0.3, 0.5])}
    at_least = Constraint((reading_term("a", AT_LEAST),), 0.3)
    assert at_least.single and at_least.goal == AT_LEAST and at_least.name == "a at least 0.3"
    torch.testing.assert_close(at_least.violation(readings), torch.tensor([0.2, 0.0, -0.2]))
    at_most = Constraint((reading_term("a", AT_MOST),), 0.3)
    assert at_most.goal == AT_MOST
    torch.testing.assert_close(at_most.violation(readings), torch.tensor([-0.2, 0.0, 0.2]))


def test_a_constraint_on_several_terms_bounds_their_weighted_loss_sum():
    clip = reading_term("clip", AT_LEAST, weight=2.0)  # loss 1 − reading
    keep = reading_term("keep", AT_MOST, weight=0.5)  # loss = reading
    push = reading_term("push", target=1.0)  # loss (reading − 1)²
    constraint = Constraint((clip, keep, push), 1.0)
    assert not constraint.single and constraint.goal == AT_MOST
    readings = {"clip": torch.tensor([0.75, 0.5]), "keep": torch.tensor([0.25, 1.0]), "push": torch.tensor([1.5, 0.0])}
    expected = 2.0 * torch.tensor([0.25, 0.5]) + 0.5 * torch.tensor([0.25, 1.0]) + torch.tensor([0.25, 1.0])
    torch.testing.assert_close(constraint.reading(readings), expected)
    torch.testing.assert_close(constraint.violation(readings), expected - 1.0)
    # One term with a target is bounded on its loss (the squared gap), not on its reading.
    only_push = Constraint((push,), 0.2)
    assert not only_push.single
    torch.testing.assert_close(only_push.violation(readings), torch.tensor([0.05, 0.8]))


# --- evaluate ---------------------------------------------------------------------------------------------------------

class CountingDecoder:
    """Latents [B, 4, h, w] -> pictures [B, 3, 2h, 2w]: the first three channels, upsampled; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, latent):
        self.calls += 1
        return F.interpolate(latent[:, :3], scale_factor=2, mode="nearest")


def test_evaluate_decodes_once_only_when_a_term_needs_pictures():
    latent = torch.rand(2, 4, 3, 3, generator=torch.Generator().manual_seed(5))
    start = torch.zeros_like(latent)
    decoder = CountingDecoder()
    latent_only = combine([(along_direction(torch.ones(4, 3, 3), 1.0, "push"), 1.0),
                           (reference_distance("keep", "latent", reference=torch.ones(1, 4, 3, 3)), 2.0)])
    readings, loss = evaluate(latent_only, latent, start, None, decoder)
    assert decoder.calls == 0
    expected = (readings["push"] - 1) ** 2 + 2 * readings["keep"]
    torch.testing.assert_close(loss, expected)
    evaluate(latent_only, latent, start, None, None)  # no decoder needed

    pictures = combine([(colour_statistic("colour", (0.0, 0.0, 0.0), "dark"), 1.0),
                        (colour_statistic("brightness", 0.0, "dim"), 1.0)])
    readings, loss = evaluate(pictures, latent, start, None, decoder)
    assert decoder.calls == 1
    torch.testing.assert_close(readings["dark"], latent[:, :3].mean(dim=(2, 3)).norm(dim=1))
    torch.testing.assert_close(loss, readings["dark"] + readings["dim"])
    with pytest.raises(ValueError, match="no decoder"):
        evaluate(pictures, latent, start, None, None)


# --- bad inputs -------------------------------------------------------------------------------------------------------

def test_bad_inputs_are_refused_naming_them():
    with pytest.raises(ValueError, match="direction is a zero vector"):
        along_direction(torch.zeros(4, 2, 2), 1.0, "push")
    with pytest.raises(ValueError, match="direction contains"):
        along_direction(torch.full((4, 2, 2), math.nan), 1.0, "push")
    with pytest.raises(ValueError, match="positive is a zero vector"):
        clip_text(mean_colour_scorer, torch.zeros(3), None, "clip")
    with pytest.raises(ValueError, match="negative is a zero vector"):
        clip_text(mean_colour_scorer, torch.ones(3), torch.zeros(1, 3), "clip")
    with pytest.raises(ValueError, match="target for colour has 1 numbers; expected three"):
        colour_statistic("colour", 0.5, "red")
    with pytest.raises(ValueError, match="target for brightness has 3 numbers; expected one"):
        colour_statistic("brightness", (0.5, 0.5, 0.5), "bright")
    with pytest.raises(ValueError, match="statistic is 'hue'"):
        colour_statistic("hue", 0.5, "hue")
    with pytest.raises(ValueError, match="space is 'pixel'"):
        reference_distance("keep", "pixel")
    term = only_term(reference_distance("keep", "latent", reference=torch.ones(1, 4, 2, 2)))
    with pytest.raises(ValueError, match="reference latent has shape"):
        term.reading(latent_candidate(torch.ones(1, 4, 3, 3), torch.ones(1, 4, 3, 3)))


# --- views ------------------------------------------------------------------------------------------------------------

def test_the_first_view_is_the_picture_and_the_others_are_shifted_mirrored_noisy_copies():
    image = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    stacked = views(image, 5)
    assert stacked.shape == (5, 2, 3, 20, 20)
    assert torch.equal(stacked[0], image)
    for view in stacked[1:]:
        assert not torch.equal(view, image)
        assert (view - image).abs().mean() < 0.5  # a copy of the picture, not another picture
    assert torch.equal(views(image, 5), stacked)  # the same views at every call: one smooth objective


def test_an_items_views_do_not_depend_on_the_batch_it_is_in():
    image = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    in_batch = views(image, 6)
    for index in range(3):
        assert torch.equal(views(image[index:index + 1], 6)[:, 0], in_batch[:, index])


def test_view_embedding_is_the_unit_mean_of_the_views_embeddings_and_one_view_is_the_plain_score():
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(view_embedding(mean_colour_scorer, image, 1), mean_colour_scorer(image))
    expected = F.normalize(torch.stack([mean_colour_scorer(view) for view in views(image, 4)]).mean(dim=0), dim=-1)
    assert torch.allclose(view_embedding(mean_colour_scorer, image, 4), expected, atol=1e-6)


def test_clip_objectives_read_the_mean_of_their_views_and_refuse_no_views():
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    text = torch.tensor([[0.2, 0.9, 0.1]])
    many = only_term(clip_text(mean_colour_scorer, text, None, "clip", 8)).reading(picture_candidate(image))
    expected = view_embedding(mean_colour_scorer, image, 8) @ F.normalize(text[0], dim=0)
    assert torch.allclose(many, expected, atol=1e-6)
    with pytest.raises(ValueError, match="views is 0; expected at least 1"):
        clip_text(mean_colour_scorer, text, None, "clip", 0)
    with pytest.raises(ValueError, match="views is 0; expected at least 1"):
        clip_image(mean_colour_scorer, image, "clip", 0)
