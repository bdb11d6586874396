"""The direction engine: the value, its maths, its file format."""

import json

import pytest
import torch
from safetensors.torch import save_file

from latent_space_control.core import directions
from latent_space_control.core.directions import Direction, DirectionFileError


def fake_encoder(calls):
    """A deterministic 'text encoder': each prompt's vectors come from its own seed, so batched and one-by-one
    encodings agree and averages can be checked by hand."""

    def encode(prompts):
        calls.append(list(prompts))
        tokens, pooled = [], []
        for prompt in prompts:
            generator = torch.Generator().manual_seed(sum(map(ord, prompt)) * 7919 + len(prompt))
            tokens.append(torch.randn(6, 4, generator=generator))
            pooled.append(torch.randn(3, generator=generator))
        return torch.stack(tokens), torch.stack(pooled)

    return encode


def test_text_direction_is_one_batched_call_of_every_prompt_in_every_template():
    calls = []
    encode = fake_encoder(calls)
    vectors = directions.text_direction(encode, ["blue", "navy"], ["red"], ["a {} thing", "{} paint"])
    assert calls == [["a blue thing", "a navy thing", "blue paint", "navy paint", "a red thing", "red paint"]]
    tokens, pooled = encode(calls[0])
    assert torch.allclose(vectors["conditioning"], tokens[:4].mean(0) - tokens[4:].mean(0))
    assert torch.allclose(vectors["pooled"], pooled[:4].mean(0) - pooled[4:].mean(0))


def test_text_direction_without_pooled_and_bad_prompts():
    lengths = lambda ps: torch.tensor([float(len(p)) for p in ps]).reshape(-1, 1, 1).expand(-1, 2, 3)  # noqa: E731
    vectors = directions.text_direction(lambda ps: (lengths(ps), None), ["ab"], ["a"])
    assert set(vectors) == {"conditioning"} and torch.equal(vectors["conditioning"], torch.ones(2, 3))
    with pytest.raises(ValueError, match="positive is empty"):
        directions.text_direction(fake_encoder([]), ["  ", ""], ["red"])
    with pytest.raises(ValueError, match="negative is empty"):
        directions.text_direction(fake_encoder([]), ["blue"], [])
    with pytest.raises(ValueError, match="templates has the template 'a thing' with 0"):
        directions.text_direction(fake_encoder([]), ["blue"], ["red"], ["a thing"])


def test_every_builtin_template_marks_the_concept_once():
    assert all(template.count("{}") == 1 for template in directions.TEMPLATES)
    assert len(set(directions.ANCHOR_PROMPTS)) == len(directions.ANCHOR_PROMPTS) >= 20


def test_mean_difference_and_its_errors():
    a, b = torch.randn(5, 4, 8, 8), torch.randn(3, 4, 8, 8)
    assert torch.allclose(directions.mean_difference(a, b), a.mean(0) - b.mean(0))
    with pytest.raises(ValueError, match="latent_with has items of shape .* but latent_without has"):
        directions.mean_difference(a, torch.randn(3, 4, 4, 4), "latent_with", "latent_without")
    with pytest.raises(ValueError, match="NaN"):
        directions.mean_difference(a, torch.full((2, 4, 8, 8), float("nan")))


def test_principal_directions_find_the_axis_the_batch_varies_along():
    generator = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(4, 3, 3, generator=generator).flatten(), dim=0).reshape(4, 3, 3)
    coefficients = 5 * torch.randn(64, generator=generator)
    batch = coefficients[:, None, None, None] * axis + 0.1 * torch.randn(64, 4, 3, 3, generator=generator)
    found = directions.principal_directions(batch, 3)
    assert found.directions.shape == (3, 4, 3, 3)
    assert abs(float((found.directions[0] * axis).sum())) > 0.99
    assert found.explained[0] > 0.9 and torch.all(found.explained[:-1] >= found.explained[1:])
    assert found.deviations[0] == pytest.approx(float(coefficients.std()), rel=0.05)
    again = directions.principal_directions(batch.clone(), 3)
    assert torch.equal(again.directions, found.directions)  # signs fixed
    with pytest.raises(ValueError, match="at most 63"):
        directions.principal_directions(batch, 64)
    with pytest.raises(ValueError, match="every item of x is the same"):
        directions.principal_directions(torch.ones(4, 5), 1)


def test_normalise_and_orthogonalise():
    a, b = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(directions.normalised(a), torch.tensor([0.6, 0.8, 0.0]))
    assert torch.allclose(directions.orthogonalised(a, b), torch.tensor([0.0, 4.0, 0.0]))
    with pytest.raises(ValueError, match="zero norm"):
        directions.normalised(torch.zeros(3), "direction_a")
    with pytest.raises(ValueError, match="zero norm"):
        directions.orthogonalised(a, torch.zeros(3), "direction_b")


def test_combine_space_by_space_and_refuses_mismatches():
    a = Direction({"conditioning": torch.ones(4, 3), "pooled": torch.tensor([1.0, 1.0])}, encoder="clip_l")
    b = Direction({"conditioning": torch.ones(2, 3), "pooled": torch.tensor([1.0, 0.0])})
    added = directions.combine(a, b, "add", 2.0)
    assert torch.equal(added.vectors["conditioning"], torch.full((4, 3), 3.0))  # b tiled to a's length
    assert torch.equal(directions.combine(a, b, "orthogonalise").vectors["pooled"], torch.tensor([0.0, 1.0]))
    assert directions.combine(a, None, "normalise", 2.0).vectors["pooled"].norm() == pytest.approx(2.0)
    assert added.encoder == "clip_l" and "add" in added.provenance["method"]
    with pytest.raises(ValueError, match="needs direction_b"):
        directions.combine(a, None, "subtract")
    with pytest.raises(ValueError, match="same spaces"):
        directions.combine(a, Direction({"latent": torch.ones(4, 2, 2)}), "add")
    with pytest.raises(ValueError, match="same encoder"):
        directions.combine(a, Direction({"conditioning": torch.ones(4, 5), "pooled": torch.ones(2)}), "add")
    with pytest.raises(ValueError, match="operation is 'mix'"):
        directions.combine(a, b, "mix")


def test_procrustes_recovers_a_scaled_rotation_between_widths():
    generator = torch.Generator().manual_seed(1)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))
    source = torch.randn(40, 5, generator=generator)
    target = 3 * source @ rotation[:, :5].T + 2
    alignment = directions.procrustes(source, target)
    assert alignment.r2 == pytest.approx(1.0, abs=1e-5) and alignment.scale == pytest.approx(3.0, rel=1e-4)
    v = torch.randn(5, generator=generator)
    assert torch.allclose(alignment.carry(v), 3 * rotation[:, :5] @ v, atol=1e-4)
    unrelated = directions.procrustes(source, torch.randn(40, 8, generator=generator))
    assert unrelated.r2 < 0.5
    with pytest.raises(ValueError, match="expected pairs"):
        directions.procrustes(source, target[:10])


def test_transfer_carries_tokens_and_pooled_and_names_width_mismatch():
    generator = torch.Generator().manual_seed(2)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator))
    source_tokens, source_pooled = torch.randn(12, 5, 4, generator=generator), torch.randn(12, 3, generator=generator)
    target_tokens = source_tokens @ rotation[:, :4].T
    turn, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
    target_pooled = source_pooled @ turn.T
    vectors = {"conditioning": torch.randn(5, 4, generator=generator), "pooled": torch.randn(3, generator=generator)}
    carried, fits = directions.transfer(vectors, source_tokens, source_pooled, target_tokens, target_pooled)
    assert torch.allclose(carried["conditioning"], vectors["conditioning"] @ rotation[:, :4].T, atol=1e-4)
    assert torch.allclose(carried["pooled"], turn @ vectors["pooled"], atol=1e-4)
    assert "R² 1.000" in fits
    with pytest.raises(ValueError, match="the direction is 7-wide but source_clip encodes 4-wide"):
        directions.transfer({"conditioning": torch.ones(5, 7)}, source_tokens, None, target_tokens, None)
    with pytest.raises(ValueError, match="target_clip gives no pooled"):
        directions.transfer({"pooled": torch.ones(3)}, source_tokens, source_pooled, target_tokens, None)


def test_apply_to_tokens_tiles_masks_scales_and_leaves_inputs_alone():
    tokens = torch.randn(2, 8, 3)
    before = tokens.clone()
    direction = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    moved = directions.apply_to_tokens(tokens, direction, 0.5)
    assert torch.allclose(moved - tokens, 0.5 * torch.cat([direction, direction]).expand(2, 8, 3))
    only_prompt = directions.apply_to_tokens(tokens, direction, 1.0, content_tokens=2)
    assert torch.equal(only_prompt[:, 2:], tokens[:, 2:]) and not torch.equal(only_prompt[:, :2], tokens[:, :2])
    scaled = directions.apply_to_tokens(tokens, direction, 1.0, auto_scale=True) - tokens
    rms = lambda x: x.pow(2).sum(-1).mean(-1).sqrt()  # noqa: E731
    assert torch.allclose(rms(scaled), rms(tokens), rtol=1e-5)
    assert torch.equal(tokens, before)
    with pytest.raises(ValueError, match="the direction is 768-wide .*clip_l.* but conditioning is 2048-wide .*SDXL"):
        directions.apply_to_tokens(torch.zeros(1, 77, 2048), torch.zeros(77, 768), 1.0)


def test_apply_to_latent_resizes_masks_and_checks_channels():
    latent = torch.randn(2, 4, 8, 8)
    direction = torch.ones(4, 4, 4)
    moved = directions.apply_to_latent(latent, direction, 2.0)
    assert torch.allclose(moved - latent, torch.full_like(latent, 2.0))
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1
    masked = directions.apply_to_latent(latent, direction, 1.0, mask) - latent
    assert masked[..., :3].min() > 0.99 and masked[..., 5:].abs().max() < 1e-6
    with pytest.raises(ValueError, match="has 16 channels but latent has 4"):
        directions.apply_to_latent(latent, torch.ones(16, 8, 8), 1.0)
    with pytest.raises(ValueError, match="latent is 5-D"):
        directions.apply_to_latent(torch.zeros(1, 4, 2, 8, 8), direction, 1.0)


def test_strength_steps():
    assert directions.strength_steps(-2, 2, 5) == [-2, -1, 0, 1, 2]
    assert directions.strength_steps(1.5, 3, 1) == [1.5]
    with pytest.raises(ValueError, match="steps is 0"):
        directions.strength_steps(0, 1, 0)


def test_direction_value_checks_its_vectors():
    with pytest.raises(ValueError, match="at least one vector"):
        Direction({})
    with pytest.raises(ValueError, match="space is 'style'"):
        Direction({"style": torch.ones(3)})
    with pytest.raises(ValueError, match=r"expected \[tokens, width\]"):
        Direction({"conditioning": torch.ones(3)})
    assert Direction({"conditioning": torch.ones(77, 768)}, family="sd1", encoder="clip_l").describe(
        "conditioning") == "768-wide clip_l (sd1) conditioning direction"


def test_file_round_trip_keeps_vectors_and_where_they_belong(tmp_path):
    direction = Direction({"conditioning": torch.randn(77, 8), "pooled": torch.randn(8)}, family="sdxl",
                          encoder="clip_l+clip_g", content_tokens=5,
                          provenance={"method": "prompts", "positive": "blue\nnavy"})
    path = tmp_path / "blue.safetensors"
    directions.save_direction(path, direction)
    loaded = directions.load_direction(path)
    assert (loaded.family, loaded.encoder, loaded.content_tokens) == ("sdxl", "clip_l+clip_g", 5)
    assert loaded.provenance == direction.provenance
    assert all(torch.equal(loaded.vectors[space], direction.vectors[space]) for space in direction.spaces)
    assert path.read_bytes()[:8] and b"pickle" not in path.read_bytes()


def test_condelta_files_load_as_directions(tmp_path):
    path = tmp_path / "condelta.safetensors"
    save_file({"conditioning_delta": torch.ones(1, 77, 16), "pooled_output": torch.ones(1, 16)}, str(path))
    loaded = directions.load_direction(path)
    assert loaded.vectors["conditioning"].shape == (77, 16) and loaded.vectors["pooled"].shape == (16,)
    assert loaded.provenance["method"] == "ConDelta file" and loaded.family == ""


def test_bad_direction_files_say_what_is_wrong(tmp_path):
    with pytest.raises(DirectionFileError, match="does not exist"):
        directions.load_direction(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(DirectionFileError, match="could not be read as safetensors"):
        directions.load_direction(garbage)
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_up.weight": torch.ones(2, 2)}, str(lora))
    with pytest.raises(DirectionFileError, match="holds tensors lora_up.weight and no direction header"):
        directions.load_direction(lora)
    broken = tmp_path / "broken.safetensors"
    save_file({"conditioning": torch.full((3, 4), float("nan"))}, str(broken),
              metadata={"format": directions.FORMAT, "provenance": json.dumps({})})
    with pytest.raises(DirectionFileError, match="NaN"):
        directions.load_direction(broken)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conditioning": torch.ones(3)}, str(wrong), metadata={"format": directions.FORMAT})
    with pytest.raises(DirectionFileError, match="damaged"):
        directions.load_direction(wrong)


def test_identical_prompts_give_no_direction():
    with pytest.raises(ValueError, match="encode exactly alike"):
        directions.text_direction(fake_encoder([]), ["red"], ["red"])
