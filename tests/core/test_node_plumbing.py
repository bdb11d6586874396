"""The nodes' plain-Python plumbing, tested without ComfyUI: LATENT dicts, CONDITIONING lists and prompt travel over
them, the timestep style mix as CONDITIONING, seed and channel parsing and the seed-travel NOISE object."""

import pytest
import torch

from latent_space_control.core.interpolation import interpolate_embeddings
from latent_space_control.core.noise import noise_travel
from latent_space_control.core.style import crossfade_segments
from latent_space_control.nodes.common import (MAX_SEED, TravelNoise, interpolate_conditioning, latent_with_frames,
                                               new_latent, pair_entries, parse_channels, parse_seeds,
                                               timestep_mixed_conditioning)


def test_frames_repeat_per_item_keys_and_leave_the_source_alone():
    with torch.inference_mode():
        source = {"samples": torch.zeros(2, 4, 8, 8), "noise_mask": torch.rand(2, 1, 64, 64), "batch_index": [5, 9],
                  "type": "image"}
        mask_before = source["noise_mask"].clone()
        out = latent_with_frames(source, torch.ones(6, 4, 8, 8), frames=3)
    assert out["batch_index"] == [5, 9, 5, 9, 5, 9]
    assert torch.equal(out["noise_mask"], mask_before.repeat(3, 1, 1, 1))
    assert out["type"] == "image" and out["samples"].shape[0] == 6
    assert source["batch_index"] == [5, 9] and torch.equal(source["noise_mask"], mask_before)
    assert torch.equal(source["samples"], torch.zeros(2, 4, 8, 8))


def test_a_new_batch_keeps_only_keys_that_still_describe_it():
    shared_mask = torch.rand(1, 1, 64, 64)
    out = new_latent({"samples": torch.zeros(3, 4, 8, 8), "noise_mask": shared_mask, "batch_index": [0, 1, 2]},
                     torch.ones(9, 4, 8, 8))
    assert out["noise_mask"] is shared_mask and "batch_index" not in out
    per_item = new_latent({"samples": torch.zeros(3, 4, 8, 8), "noise_mask": torch.rand(3, 1, 8, 8)}, torch.ones(9, 4, 8, 8))
    assert "noise_mask" not in per_item


def test_conditioning_entries_pair_one_to_one_or_broadcast_a_single_one():
    assert pair_entries([1, 2], [3, 4], "a", "b") == [(1, 3), (2, 4)]
    assert pair_entries([1], [3, 4], "a", "b") == [(1, 3), (1, 4)]
    with pytest.raises(ValueError, match="a has 2 entries and b has 3"):
        pair_entries([1, 2], [3, 4, 5], "a", "b")
    with pytest.raises(ValueError, match="b is an empty conditioning"):
        pair_entries([1], [], "a", "b")


def test_seeds_parse_from_commas_semicolons_and_spaces():
    assert parse_seeds(" 7, 42;1234  5 ", "more_seeds") == [7, 42, 1234, 5]
    assert parse_seeds("", "more_seeds") == []
    with pytest.raises(ValueError, match=r"more_seeds is '7, x'; expected whole numbers"):
        parse_seeds("7, x", "more_seeds")
    with pytest.raises(ValueError, match=r"more_seeds is '-3'; expected seeds between 0 and 18446744073709551615"):
        parse_seeds("-3", "more_seeds")
    with pytest.raises(ValueError, match="expected seeds between"):
        parse_seeds(str(MAX_SEED + 1), "more_seeds")


def test_travel_noise_follows_the_latent_and_its_batch_index():
    noise = TravelNoise([11, 22, 33], "linear")
    assert noise.seed == 11
    with torch.inference_mode():
        latent = {"samples": torch.zeros(5, 16, 3, 8, 8, dtype=torch.float16)}
        frames = noise.generate_noise(latent)
    assert frames.shape == (5, 16, 3, 8, 8) and frames.dtype == torch.float16
    assert torch.equal(frames, noise_travel([11, 22, 33], (16, 3, 8, 8), 5, dtype=torch.float16))
    assert torch.equal(latent["samples"], torch.zeros(5, 16, 3, 8, 8, dtype=torch.float16))
    picked = noise.generate_noise({"samples": torch.zeros(2, 16, 3, 8, 8, dtype=torch.float16), "batch_index": [4, 2]})
    assert torch.equal(picked, frames[[4, 2]])


def test_travel_noise_needs_a_frame_per_seed():
    with pytest.raises(ValueError, match="visits 3 seeds but the latent batch has 2 frames; expected a batch of at "
                                         "least 3"):
        TravelNoise([1, 2, 3], "linear").generate_noise({"samples": torch.zeros(2, 4, 8, 8)})


def conditioning(tokens, **extra):
    return [[tokens, extra]]


def test_conditioning_travel_interpolates_tokens_and_pooled_outputs_around_an_origin():
    generator = torch.Generator().manual_seed(0)
    a_tokens, b_tokens, n_tokens = (torch.randn(1, length, 8, generator=generator) for length in (4, 8, 4))
    a_pooled, b_pooled, n_pooled = (torch.randn(1, 8, generator=generator) for _ in range(3))
    a = conditioning(a_tokens, pooled_output=a_pooled, guidance=3.5)
    b = conditioning(b_tokens, pooled_output=b_pooled)
    around = conditioning(n_tokens, pooled_output=n_pooled)
    ts = [0.0, 0.3, 1.0]
    (tokens, extra), = interpolate_conditioning(a, b, ts, "slerp", around)
    torch.testing.assert_close(tokens, interpolate_embeddings(a_tokens, b_tokens, ts, "slerp", n_tokens))
    torch.testing.assert_close(extra["pooled_output"], interpolate_embeddings(a_pooled, b_pooled, ts, "slerp", n_pooled))
    assert tokens.shape == (3, 8, 8) and extra["guidance"] == 3.5
    assert torch.equal(tokens[0], a_tokens[0].repeat(2, 1)) and torch.equal(tokens[2], b_tokens[0])
    assert a[0][1].keys() == {"pooled_output", "guidance"} and a[0][0] is a_tokens  # the inputs are left alone


def test_conditioning_travel_without_both_pooled_outputs_keeps_conditioning_as_pooled_output():
    a = conditioning(torch.ones(1, 4, 8), pooled_output=torch.ones(1, 8))
    (tokens, extra), = interpolate_conditioning(a, conditioning(torch.ones(1, 4, 8)), [0.5], "lerp")
    assert extra["pooled_output"] is a[0][1]["pooled_output"]


def test_attention_mask_follows_the_tiled_tokens_for_every_frame():
    mask = torch.tensor([[1, 1, 1, 0]])
    a = conditioning(torch.randn(1, 4, 8), attention_mask=mask)
    (tokens, extra), = interpolate_conditioning(a, conditioning(torch.randn(1, 8, 8)), [0.0, 0.5, 1.0], "nlerp")
    assert tokens.shape == (3, 8, 8)
    assert torch.equal(extra["attention_mask"], torch.tensor([[1, 1, 1, 0, 1, 1, 1, 0]]).repeat(3, 1))
    assert torch.equal(a[0][1]["attention_mask"], mask)


def test_conditioning_travel_names_the_inputs_in_its_errors():
    with pytest.raises(ValueError, match="conditioning_b has width 6 but conditioning_a has 8"):
        interpolate_conditioning(conditioning(torch.ones(1, 4, 8)), conditioning(torch.ones(1, 4, 6)), [0.5], "slerp")
    with pytest.raises(ValueError, match="conditioning_b pooled_output has width 5 but conditioning_a pooled_output has 8"):
        interpolate_conditioning(conditioning(torch.ones(1, 4, 8), pooled_output=torch.ones(1, 8)),
                                 conditioning(torch.ones(1, 4, 8), pooled_output=torch.ones(1, 5)), [0.5], "slerp")


def entries(conditioning):
    """Each entry as (tokens, start, end, strength)."""
    return [(tokens, extra["start_percent"], extra["end_percent"], extra["strength"]) for tokens, extra in conditioning]


def test_timestep_mix_is_structure_before_the_cutoff_and_style_after():
    structure_tokens, style_tokens = torch.zeros(1, 4, 8), torch.ones(1, 4, 8)
    structure = conditioning(structure_tokens, pooled_output=torch.zeros(1, 8))
    style = conditioning(style_tokens, pooled_output=torch.ones(1, 8))
    mixed = timestep_mixed_conditioning(structure, style, cutoff=0.3, window=0.0)
    assert entries(mixed) == [(structure_tokens, 0.0, 0.3, 1.0), (style_tokens, 0.3, 1.0, 1.0)]
    assert mixed[0][1]["pooled_output"] is structure[0][1]["pooled_output"]
    assert mixed[1][1]["pooled_output"] is style[0][1]["pooled_output"]
    assert structure[0][1].keys() == style[0][1].keys() == {"pooled_output"}  # the inputs are left alone
    assert entries(timestep_mixed_conditioning(structure, style, 0.0, 0.0)) == [(style_tokens, 0.0, 1.0, 1.0)]
    assert entries(timestep_mixed_conditioning(structure, style, 1.0, 0.0)) == [(structure_tokens, 0.0, 1.0, 1.0)]


def test_timestep_mix_cross_fades_by_strength_inside_the_window():
    structure, style = conditioning(torch.zeros(1, 4, 8)), conditioning(torch.ones(1, 4, 8))
    mixed = entries(timestep_mixed_conditioning(structure, style, cutoff=0.5, window=0.2))
    for start, end, style_weight in crossfade_segments(0.5, 0.2):
        active = [(tokens, strength) for tokens, s, e, strength in mixed if (s, e) == (start, end)]
        # ComfyUI averages the entries active together, weighted by strength: the style's share is its weight.
        assert sum(strength for _, strength in active) == pytest.approx(1.0)
        style_share = sum(strength for tokens, strength in active if tokens is style[0][0])
        assert style_share == pytest.approx(style_weight)
    assert {(s, e) for _, s, e, _ in mixed} == {(s, e) for s, e, _ in crossfade_segments(0.5, 0.2)}
    assert all(strength > 0 for *_, strength in mixed)


def test_timestep_mix_keeps_each_entrys_own_range_and_strength_within_its_part():
    early = conditioning(torch.zeros(1, 4, 8), start_percent=0.1, end_percent=0.2, strength=0.5)[0]
    late = conditioning(torch.full((1, 4, 8), 2.0), start_percent=0.6, end_percent=0.9)[0]
    style = conditioning(torch.ones(1, 4, 8), start_percent=0.2, end_percent=0.8, strength=2.0)
    mixed = entries(timestep_mixed_conditioning([early, late], style, cutoff=0.4, window=0.0))
    # late lies wholly after the cutoff, where only the style acts: it is dropped; the style starts at the cutoff.
    assert mixed == [(early[0], 0.1, 0.2, 0.5), (style[0][0], 0.4, 0.8, 2.0)]
    assert early[1] == {"start_percent": 0.1, "end_percent": 0.2, "strength": 0.5}


def test_timestep_mix_needs_both_conditionings():
    with pytest.raises(ValueError, match="structure is an empty conditioning"):
        timestep_mixed_conditioning([], conditioning(torch.ones(1, 4, 8)), 0.3, 0.0)
    with pytest.raises(ValueError, match="style is an empty conditioning"):
        timestep_mixed_conditioning(conditioning(torch.ones(1, 4, 8)), [], 0.3, 0.0)


def test_channels_parse_from_numbers_and_ranges():
    assert parse_channels("0, 2", "channels") == [0, 2]
    assert parse_channels("4-7", "channels") == [4, 5, 6, 7]
    assert parse_channels(" 3 1;1, 0-1 ", "channels") == [0, 1, 3]  # sorted, each once
    assert parse_channels("", "channels") == []
    with pytest.raises(ValueError, match="channels is '0, x'; expected channel numbers or ranges, as in '0, 2' or "
                                         "'4-7'"):
        parse_channels("0, x", "channels")
    with pytest.raises(ValueError, match="channels is '-1'; expected channel numbers"):
        parse_channels("-1", "channels")
    with pytest.raises(ValueError, match="channels: the range '5-3' runs backwards"):
        parse_channels("1, 5-3", "channels")


def test_bar_charts_draw_each_bar_up_or_down_from_zero_and_refuse_ragged_series():
    from latent_space_control.nodes.plot import BAR_PANEL_HEIGHT, WIDTH, bars_image
    image = bars_image({"correlation": [1.0, -1.0]}, ["a", "b"], "title")
    assert image.shape == (1, 20 + BAR_PANEL_HEIGHT, WIDTH, 3) and 0 <= image.min() and image.max() <= 1
    panel = image[0, 20:]
    # Columns through the middle of each bar: the first is coloured above the middle, the second below it.
    first, second = panel[:, WIDTH // 4], panel[:, 3 * WIDTH // 4]
    coloured = lambda column: (column.std(-1) > 0.1).nonzero().flatten()
    middle = BAR_PANEL_HEIGHT // 2
    assert coloured(first).numel() and coloured(second).numel()
    assert coloured(first).float().mean() < middle < coloured(second).float().mean()
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        bars_image({"correlation": [1.0, -1.0]}, ["a", "b", "c"])
