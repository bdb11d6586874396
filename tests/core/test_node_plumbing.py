"""The ComfyUI-free helpers the nodes share for building LATENT dicts and pairing CONDITIONING entries."""

import pytest
import torch

from latent_space_control.nodes.common import latent_with_frames, new_latent, pair_entries


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
