"""Retrieval: distances to a query (L2 and cosine, one query or several), ranking, chunked embedding, bad input."""

import pytest
import torch
import torch.nn.functional as F

from latent_space_control.core import retrieval


def seeded(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(4, 8, 8), (16, 3, 4, 4), (128, 2, 2)])
def test_l2_distances_are_euclidean_over_every_entry(shape):
    batch, query = seeded(5, *shape), seeded(1, *shape, seed=1)
    distances = retrieval.query_distances(query, batch, "l2")
    expected = torch.stack([torch.sqrt(((item - query[0]) ** 2).sum()) for item in batch])
    assert torch.allclose(distances, expected, rtol=1e-5)


def test_cosine_distance_ignores_scale_and_reads_zero_one_two():
    query = seeded(1, 4, 3, 3)
    batch = torch.cat([3 * query, -query, seeded(1, 4, 3, 3, seed=5)])
    orthogonal = batch[2] - (batch[2] * query[0]).sum() / (query[0] ** 2).sum() * query[0]
    batch[2] = orthogonal
    distances = retrieval.query_distances(query, batch, "cosine")
    assert torch.allclose(distances, torch.tensor([0.0, 2.0, 1.0]), atol=1e-5)


def test_several_query_items_stand_for_their_mean():
    batch, query = seeded(6, 4, 4, 4), seeded(3, 4, 4, 4, seed=2)
    l2 = retrieval.query_distances(query, batch, "l2")
    assert torch.allclose(l2, retrieval.query_distances(query.mean(0, keepdim=True), batch, "l2"), rtol=1e-5)
    units = F.normalize(query.flatten(1), dim=1).mean(0)
    expected = 1 - F.cosine_similarity(batch.flatten(1), units[None], dim=1)
    assert torch.allclose(retrieval.query_distances(query, batch, "cosine"), expected, atol=1e-6)


def test_nearest_ranks_the_batch_and_keeps_ties_in_batch_order():
    query = torch.zeros(1, 2, 1, 1)
    batch = torch.tensor([3.0, 1.0, 2.0, 1.0, 0.5]).reshape(5, 1, 1, 1).expand(5, 2, 1, 1)
    ranking = retrieval.nearest(query, batch, "l2")
    assert ranking.order.tolist() == [4, 1, 3, 2, 0]
    assert torch.allclose(ranking.distances, torch.tensor([0.5, 1.0, 1.0, 2.0, 3.0]) * 2 ** 0.5)
    top = retrieval.nearest(query, batch, "l2", top_k=2)
    assert top.order.tolist() == [4, 1] and top.distances.shape == (2,)


def test_inputs_are_left_alone():
    batch, query = seeded(4, 4, 2, 2), seeded(2, 4, 2, 2, seed=3)
    before = (batch.clone(), query.clone())
    retrieval.nearest(query, batch, "cosine", 2)
    assert torch.equal(batch, before[0]) and torch.equal(query, before[1])


def test_item_embeddings_embed_in_chunks_with_progress_and_average_video_frames():
    weights = seeded(3, 5, seed=4)

    def score(image):
        calls.append(image.shape[0])
        return F.normalize(image.mean((-1, -2)) @ weights, dim=-1)

    calls, steps = [], []
    pictures = torch.rand(7, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    embeddings = retrieval.item_embeddings(score, pictures, 3, lambda done, total, _: steps.append((done, total)))
    assert calls == [3, 3, 1] and steps == [(1, 3), (2, 3), (3, 3)]
    assert torch.allclose(embeddings, score(pictures), atol=1e-6)
    videos = pictures[:6].reshape(2, 3, 3, 4, 4)
    clip_embeddings = retrieval.item_embeddings(score, videos, 4)
    expected = F.normalize(score(pictures[:6]).reshape(2, 3, -1).mean(1), dim=-1)
    assert torch.allclose(clip_embeddings, expected, atol=1e-6)


@pytest.mark.parametrize("query, batch, metric, top_k, message", [
    (seeded(1, 4, 8, 8), seeded(3, 4, 4, 4), "l2", 0,
     "query has items of shape (4, 8, 8) but batch has (4, 4, 4); expected items of the same shape"),
    (seeded(1, 4, 8, 8), torch.zeros(0, 4, 8, 8), "l2", 0, "batch is an empty batch"),
    (seeded(1, 4, 8, 8), seeded(3, 4, 8, 8), "l2", 4, "top_k is 4 but batch has 3 items; expected 0 (all) to 3"),
    (seeded(1, 4, 8, 8), seeded(3, 4, 8, 8), "manhattan", 0, "metric is 'manhattan'; expected one of l2, cosine"),
    (seeded(1, 4, 8, 8), torch.zeros(2, 4, 8, 8), "cosine", 0, "batch item 0 is all zeros"),
    (torch.stack([torch.ones(4, 2, 2), -torch.ones(4, 2, 2)]), seeded(2, 4, 2, 2), "cosine", 0,
     "query's items cancel out"),
    (seeded(1, 4, 8, 8), torch.full((2, 4, 8, 8), float("nan")), "l2", 0, "batch contains 512 NaN/Inf values"),
])
def test_bad_input_is_refused_naming_it(query, batch, metric, top_k, message):
    with pytest.raises(ValueError, match=None) as error:
        retrieval.nearest(query, batch, metric, top_k)
    assert message in str(error.value), str(error.value)
