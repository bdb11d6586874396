import math

import pytest
import torch

from latent_space_control.core import interpolation as interp
from latent_space_control.core.interpolation import (EASINGS, METHODS, interpolate, interpolate_embeddings,
                                                     interpolate_latents, interpolate_path, keyframe_path,
                                                     path_positions)


def gaussian(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def reference_slerp(a, b, t):
    """Textbook slerp of the unit directions in float64, times the linearly interpolated norm."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    ra, rb = a64.norm(), b64.norm()
    ua, ub = a64 / ra, b64 / rb
    theta = torch.arccos(torch.clamp(ua @ ub, -1, 1))
    direction = (torch.sin((1 - t) * theta) * ua + torch.sin(t * theta) * ub) / torch.sin(theta)
    return (((1 - t) * ra + t * rb) * direction).reshape(a.shape)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 16, 6, 10), (1, 48, 4, 4), (1, 128, 2, 3), (2, 16, 3, 4, 5)])
def test_endpoints_are_exact_for_every_method_and_latent_kind(method, shape):
    a, b = gaussian(*shape, seed=1), gaussian(*shape, seed=2) * 3
    path = interpolate_latents(a, b, [0.0, 0.5, 1.0], method)
    assert path.shape == (3 * shape[0], *shape[1:])
    assert torch.equal(path[:shape[0]], a)
    assert torch.equal(path[2 * shape[0]:], b)
    assert torch.isfinite(path).all()


# Short vectors take the whole-tensor path, long ones (on the CPU) the vector-by-vector one.
SHORT_AND_LONG = [(3, 4, 8, 8), (2, 16, 32, 64)]


@pytest.mark.parametrize("shape", SHORT_AND_LONG)
@pytest.mark.parametrize("t", [0.1, 0.37, 0.5, 0.9])
def test_slerp_matches_the_textbook_formula_per_sample(t, shape):
    a, b = gaussian(*shape, seed=3), gaussian(*shape, seed=4) * 2
    out = interpolate(a, b, t, "slerp")
    for i in range(shape[0]):
        torch.testing.assert_close(out[i].double(), reference_slerp(a[i], b[i], t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHORT_AND_LONG)
@pytest.mark.parametrize("method", ["slerp", "nlerp"])
def test_each_sample_of_a_mixed_batch_gets_its_own_case(method, shape):
    """A batch holding an ordinary pair, an antiparallel pair, a zero start, a zero end and a parallel pair: every
    sample comes out as it does alone."""
    x, y = gaussian(1, *shape[1:], seed=40), gaussian(1, *shape[1:], seed=41)
    a = torch.cat([x, x, torch.zeros_like(x), x, x])
    b = torch.cat([y, -2 * x, y, torch.zeros_like(x), 3 * x])
    ts = [0.25, 0.5, 0.8]
    together = interpolate_path(a, b, ts, method)
    for i in range(a.shape[0]):
        alone = interpolate_path(a[i:i + 1], b[i:i + 1], ts, method)
        torch.testing.assert_close(together[:, i:i + 1], alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(together[1, 2], 0.5 * y[0])  # from zero: the straight line
    torch.testing.assert_close(together[1, 4], 2 * x[0], rtol=1e-5, atol=1e-5)  # parallel: along the line


def test_slerp_keeps_unit_gaussian_statistics_where_lerp_loses_them():
    a, b = gaussian(1, 16, 64, 64, seed=5), gaussian(1, 16, 64, 64, seed=6)
    assert interpolate(a, b, 0.5, "slerp").std().item() == pytest.approx(1.0, abs=0.02)
    assert interpolate(a, b, 0.5, "variance_preserving").std().item() == pytest.approx(1.0, abs=0.02)
    assert interpolate(a, b, 0.5, "lerp").std().item() == pytest.approx(math.sqrt(0.5), abs=0.02)


def test_slerp_moves_at_constant_speed():
    a, b = gaussian(1, 4, 32, 32, seed=7), gaussian(1, 4, 32, 32, seed=8)
    path = interpolate_path(a, b, path_positions(16, 0.0, 1.0), "slerp")
    steps = (path[1:] - path[:-1]).flatten(1).norm(dim=1)
    assert (steps.max() / steps.mean()).item() < 1.01


def test_nlerp_keeps_the_interpolated_norm():
    a, b = gaussian(2, 4, 8, 8, seed=9), gaussian(2, 4, 8, 8, seed=10) * 2
    for t in (0.25, 0.5, 0.75):
        out = interpolate(a, b, t, "nlerp")
        expected = (1 - t) * a.flatten(1).norm(dim=1) + t * b.flatten(1).norm(dim=1)
        torch.testing.assert_close(out.flatten(1).norm(dim=1), expected, rtol=1e-5, atol=1e-5)


def test_lerp_is_the_straight_line():
    a, b = gaussian(2, 4, 8, 8, seed=11), gaussian(2, 4, 8, 8, seed=12)
    torch.testing.assert_close(interpolate(a, b, 0.3, "lerp"), torch.lerp(a, b, 0.3))


@pytest.mark.parametrize("method", ["slerp", "nlerp"])
def test_antiparallel_inputs_turn_through_an_orthogonal_direction(method):
    a = gaussian(2, 4, 8, 8, seed=13)
    mid = interpolate(a, -a, 0.5, method)
    assert torch.isfinite(mid).all()
    torch.testing.assert_close(mid.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1), rtol=1e-4, atol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(mid.flatten(1), a.flatten(1), dim=1)
    assert cosine.abs().max().item() < 1e-4
    quarter = interpolate(a, -a, 0.25, method).flatten(1)
    assert torch.nn.functional.cosine_similarity(quarter, a.flatten(1), dim=1).min().item() > 0.5


def test_parallel_inputs_stay_on_their_line():
    a = gaussian(1, 4, 8, 8, seed=14)
    torch.testing.assert_close(interpolate(a, 3 * a, 0.5, "slerp"), 2 * a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(interpolate(a, a, 0.7, "slerp"), a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["slerp", "nlerp"])
def test_zero_inputs_give_the_straight_line_from_or_to_zero(method):
    b = gaussian(1, 4, 8, 8, seed=15)
    zero = torch.zeros_like(b)
    torch.testing.assert_close(interpolate(zero, b, 0.3, method), 0.3 * b)
    torch.testing.assert_close(interpolate(b, zero, 0.3, method), 0.7 * b)
    assert torch.equal(interpolate(zero, zero, 0.5, method), zero)


def test_frames_are_frame_major_and_a_batch_of_one_broadcasts():
    a, b = gaussian(1, 4, 8, 8, seed=16), gaussian(3, 4, 8, 8, seed=17)
    out = interpolate_latents(a, b, [0.0, 0.5, 1.0], "slerp")
    assert out.shape == (9, 4, 8, 8)
    for item in range(3):
        assert torch.equal(out[item], a[0])
        torch.testing.assert_close(out[3 + item], interpolate(a[0:1], b[item:item + 1], 0.5)[0])
        assert torch.equal(out[6 + item], b[item])


def test_mask_limits_the_travel_to_the_masked_region():
    a, b = gaussian(1, 4, 8, 8, seed=18), gaussian(1, 4, 8, 8, seed=19)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0  # right half, at pixel resolution
    out = interpolate_latents(a, b, [0.5], "lerp", mask=mask)
    assert torch.equal(out[..., :3], a[..., :3])
    torch.testing.assert_close(out[..., 5:], torch.lerp(a, b, 0.5)[..., 5:])


def test_mask_broadcasts_over_video_latents():
    a, b = gaussian(1, 16, 3, 8, 8, seed=20), gaussian(1, 16, 3, 8, 8, seed=21)
    out = interpolate_latents(a, b, [1.0], "slerp", mask=torch.zeros(1, 8, 8))
    assert torch.equal(out, a)


@pytest.mark.parametrize("b_shape, message", [
    ((1, 16, 8, 8), "latent_b has 16 channels but latent_a has 4"),
    ((1, 4, 8, 9), "latent_b has size (8, 9) but latent_a has (8, 8)"),
    ((1, 4, 2, 8, 8), "latent_b is 5-D"),
    ((0, 4, 8, 8), "latent_b is an empty batch"),
    ((3, 4, 8, 8), "latent_a has batch 2 and latent_b has batch 3"),
])
def test_mismatched_latents_are_refused_with_the_input_named(b_shape, message):
    a = gaussian(2, 4, 8, 8)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        interpolate_latents(a, torch.zeros(b_shape), [0.5], names=("latent_a", "latent_b", "mask"))


def test_non_finite_values_and_bad_options_are_refused():
    a = gaussian(1, 4, 8, 8)
    bad = a.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="latent_b contains 1 NaN/Inf value; expected finite numbers"):
        interpolate_latents(a, bad, [0.5], names=("latent_a", "latent_b", "mask"))
    bad[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="latent_a contains 2 NaN/Inf values"):
        interpolate_latents(bad, a, [0.5], names=("latent_a", "latent_b", "mask"))
    with pytest.raises(ValueError, match="method is 'cubic'"):
        interpolate_path(a, a, [0.5], "cubic")
    with pytest.raises(ValueError, match="easing is 'bouncy'"):
        path_positions(4, 0, 1, "bouncy")
    with pytest.raises(ValueError, match="frames is 0"):
        path_positions(0, 0, 1)
    with pytest.raises(ValueError, match="mask has batch 3"):
        interpolate_latents(a, a, [0.5], mask=torch.ones(3, 8, 8))


def test_inputs_are_never_modified_and_inference_tensors_work():
    with torch.inference_mode():
        a, b = gaussian(2, 4, 8, 8, seed=22), gaussian(2, 4, 8, 8, seed=23)
        a_copy, b_copy = a.clone(), b.clone()
        for method in METHODS:
            interpolate_latents(a, b, [0.0, 0.3, 1.0], method, mask=torch.ones(1, 8, 8))
        interpolate(a, -a, 0.5)
        keyframe_path(torch.cat([a, b]), 3, smooth=True)
    assert torch.equal(a, a_copy) and torch.equal(b, b_copy)


@pytest.mark.parametrize("easing", list(EASINGS))
def test_easings_run_from_0_to_1_monotonically(easing):
    values = [interp.ease(i / 50, easing) for i in range(51)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(1.0)
    assert all(x <= y + 1e-12 for x, y in zip(values, values[1:]))


@pytest.mark.parametrize("easing, curve", [
    ("linear", lambda u: u),
    ("ease_in", lambda u: u * u),
    ("ease_out", lambda u: 1 - (1 - u) ** 2),
    ("ease_in_out", lambda u: 2 * u * u if u < 0.5 else 1 - 2 * (1 - u) ** 2),
    ("cosine", lambda u: (1 - math.cos(math.pi * u)) / 2),
    ("cubic", lambda u: 4 * u ** 3 if u < 0.5 else 1 - 4 * (1 - u) ** 3),
])
def test_each_easing_is_its_named_curve(easing, curve):
    for u in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert interp.ease(u, easing) == pytest.approx(curve(u), abs=1e-12), u


def test_cosine_easing_starts_and_ends_at_rest():
    step = 1e-4  # (1 - cos πu) / 2 has zero slope at both ends, where linear spacing has slope 1
    assert interp.ease(step, "cosine") / step < 1e-3 and (1 - interp.ease(1 - step, "cosine")) / step < 1e-3


def test_path_positions_span_t_start_to_t_end():
    assert path_positions(1, 0.3, 0.9) == [0.3]
    positions = path_positions(5, 0.2, 0.6, "ease_in_out")
    assert positions[0] == 0.2 and positions[-1] == pytest.approx(0.6) and len(positions) == 5
    assert positions[1] == pytest.approx(0.2 + 0.4 * 0.125)


def test_frame_positions_give_t_alone_for_one_frame_and_the_eased_span_for_more():
    assert interp.frame_positions(1, 0.3, 0.0, 1.0, "cosine") == [0.3]
    assert interp.frame_positions(3, 0.3, 0.2, 0.6, "ease_in") == pytest.approx([0.2, 0.3, 0.6])


def test_positions_that_are_not_numbers_are_refused_by_name():
    with pytest.raises(ValueError, match="t is nan; expected a finite number"):
        interp.frame_positions(1, math.nan, 0.0, 1.0)
    with pytest.raises(ValueError, match="t_end is inf; expected a finite number"):
        interp.frame_positions(4, 0.5, 0.0, math.inf)
    with pytest.raises(ValueError, match="include NaN or infinity"):
        interpolate_path(gaussian(1, 4), gaussian(1, 4), [0.5, math.nan])


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_keyframes_land_exactly_on_their_frames(method, smooth):
    keys = torch.cat([gaussian(1, 4, 8, 8, seed=s) for s in range(4)])
    path = keyframe_path(keys, 5, method, smooth=smooth)
    assert path.shape == (16, 4, 8, 8)
    for k in range(4):
        assert torch.equal(path[5 * k], keys[k])


def _kink_angles(path, at):
    """Angle (degrees) between the velocity just before and just after each frame in ``at``."""
    angles = []
    for f in at:
        before, after = (path[f] - path[f - 1]).flatten(), (path[f + 1] - path[f]).flatten()
        cosine = torch.nn.functional.cosine_similarity(before, after, dim=0).clamp(-1, 1)
        angles.append(math.degrees(math.acos(cosine.item())))
    return angles


def test_smooth_keyframes_do_not_kink_where_segments_meet():
    # Keyframes on a curve through 2-D space: piecewise paths turn sharply at each keyframe, the spline does not.
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]]).reshape(4, 2, 1, 1)
    frames = 64
    sharp = _kink_angles(keyframe_path(keys, frames, "lerp", smooth=False), [frames, 2 * frames])
    smooth_path = keyframe_path(keys, frames, "lerp", smooth=True)
    at_keys = _kink_angles(smooth_path, [frames, 2 * frames])
    beside_keys = _kink_angles(smooth_path, [frames - 2, frames + 2, 2 * frames - 2, 2 * frames + 2])
    assert min(sharp) > 80
    assert max(at_keys) < 6 and max(at_keys) < 1.5 * max(beside_keys)  # turning through a keyframe like its neighbours
    noise_keys = torch.cat([gaussian(1, 4, 8, 8, seed=s) for s in range(4)])
    smooth_noise = keyframe_path(noise_keys, frames, "slerp", smooth=True)
    norms, key_norms = smooth_noise.flatten(1).norm(dim=1), noise_keys.flatten(1).norm(dim=1)
    assert norms.min() > 0.99 * key_norms.min() and norms.max() < 1.01 * key_norms.max()


def test_keyframes_need_two_keys():
    with pytest.raises(ValueError, match="keyframes has 1 item"):
        keyframe_path(gaussian(1, 4, 8, 8), 4)


def test_embeddings_are_interpolated_token_by_token():
    a, b = gaussian(1, 77, 32, seed=30), gaussian(1, 77, 32, seed=31) * 2
    out = interpolate_embeddings(a, b, [0.0, 0.4, 1.0], "slerp")
    assert torch.equal(out[0], a[0]) and torch.equal(out[2], b[0])
    for token in (0, 40, 76):
        torch.testing.assert_close(out[1, token].double(), reference_slerp(a[0, token], b[0, token], 0.4),
                                   rtol=1e-5, atol=1e-5)


def test_embeddings_of_different_lengths_are_tiled_and_can_turn_around_an_origin():
    a, b, origin = gaussian(1, 77, 32, seed=32), gaussian(1, 154, 32, seed=33), gaussian(1, 77, 32, seed=34)
    out = interpolate_embeddings(a, b, [0.0, 0.5], "slerp", origin=origin)
    assert out.shape == (2, 154, 32)
    torch.testing.assert_close(out[0], torch.cat([a, a], dim=1)[0])
    tiled_origin = torch.cat([origin, origin], dim=1)
    expected = interpolate(torch.cat([a, a], dim=1) - tiled_origin, b - tiled_origin, 0.5, start_dim=-1) + tiled_origin
    torch.testing.assert_close(out[1:], expected)
    pooled = interpolate_embeddings(gaussian(1, 32, seed=35), gaussian(1, 32, seed=36), [0.5, 1.0])
    assert pooled.shape == (2, 32)
    with pytest.raises(ValueError, match="b has width 16 but a has 32"):
        interpolate_embeddings(a, gaussian(1, 77, 16), [0.5])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_half_precision_inputs_keep_their_dtype_and_exact_endpoints(dtype, method):
    a, b = gaussian(2, 4, 8, 8, seed=40).to(dtype), gaussian(2, 4, 8, 8, seed=41).to(dtype)
    path = interpolate_latents(a, b, [0.0, 0.5, 1.0], method)
    assert path.dtype == dtype
    assert torch.equal(path[:2], a) and torch.equal(path[4:], b)
    reference = interpolate_latents(a.float(), b.float(), [0.5], method)
    torch.testing.assert_close(path[2:4].float(), reference, rtol=2e-2, atol=2e-2)
