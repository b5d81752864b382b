"""The ranking stage's features mean what they say, and its MLP learns an order retrieval missed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.ranking import batched_top_k
from ml.reranker import FEATURES, Ranker, RankingFeatures

pytestmark = pytest.mark.unit


def test_features_describe_the_candidate_against_the_shoppers_own_items():
    # user 0 had items 0 and 1 (category 0, bands 1 and 3); user 1 had items 1 and 2
    seen = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=np.float32))
    features = RankingFeatures(seen, np.array([0, 0, 1, 1]), np.array([1, 3, 5, 2]))
    values = np.asarray(features(seen[[0]].toarray(), np.array([[2, 3]]), np.array([[0.9, -np.inf]], np.float32)))
    values = dict(zip(FEATURES, np.moveaxis(values[0], -1, 0), strict=True))
    np.testing.assert_allclose(values["retrieval_score"], [0.9, -1.0])  # -inf (an excluded filler) becomes -1
    np.testing.assert_allclose(values["retrieval_rank"], [0.0, np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(values["item_log_popularity"], [np.log(2), 0.0], rtol=1e-6)
    # item 2 co-occurs with item 1 (user 1): cos = 1 / (sqrt(2) * 1); item 3 with nothing
    np.testing.assert_allclose(values["item_knn_score"], [1 / np.sqrt(2), 0.0], rtol=1e-5)
    np.testing.assert_allclose(values["category_share"], [0.0, 0.0])  # both of user 0's items are category 0
    np.testing.assert_allclose(values["price_band_distance"], [3.0, 0.0])  # user 0's average band is 2
    np.testing.assert_allclose(values["user_log_activity"], [np.log(3)] * 2, rtol=1e-6)


@pytest.mark.parametrize("neighbours", [3, 1000])
def test_the_co_occurrence_score_is_the_shoppers_items_times_the_pruned_similarities(monkeypatch, neighbours):
    from ml import reranker
    from ml.baselines import ItemKNN

    monkeypatch.setattr(reranker, "NEIGHBOURS", neighbours)  # 3: rows pruned, padded to different lengths
    rng = np.random.default_rng(5)
    interactions = sp.csr_matrix((rng.random((60, 25)) < 0.2).astype(np.float32))
    features = RankingFeatures(interactions)
    seen = (rng.random((7, 25)) < 0.3) * rng.integers(1, 4, (7, 25)).astype(np.float32)  # weighted, an empty row
    seen[3] = 0
    candidates = rng.integers(0, 25, (7, 9))
    values = np.asarray(features(seen, candidates, np.zeros((7, 9), np.float32)))
    expected = seen @ ItemKNN(min(neighbours, 25)).fit(interactions).similarity_.toarray()
    np.testing.assert_allclose(
        values[..., FEATURES.index("item_knn_score")], np.take_along_axis(expected, candidates, 1), rtol=1e-6
    )


def _popularity_task(n_users=400, n_items=200, seed=1):
    """Random retrieval scores; each user's held-out item is the most popular of their candidates."""
    rng = np.random.default_rng(seed)
    popular = rng.zipf(1.5, size=n_users * 3) % n_items
    seen = sp.csr_matrix(
        (np.ones(n_users * 3, np.float32), (np.repeat(np.arange(n_users), 3), popular)), shape=(n_users, n_items)
    )
    seen.sum_duplicates()
    seen.data[:] = 1.0
    noise = rng.random((n_users, n_items)).astype(np.float32)

    def retrieval(users):
        return noise[users].copy()

    users = np.arange(n_users)
    candidates, _ = batched_top_k(retrieval, users, min(100, n_items), exclude=seen)
    counts = np.asarray(seen.sum(axis=0)).ravel()
    positive = candidates[users, np.argmax(counts[candidates], axis=1)]
    truth = sp.csr_matrix((np.ones(n_users, np.float32), (users, positive)), shape=(n_users, n_items))
    return seen, retrieval, truth


def test_the_mlp_learns_an_order_that_retrieval_missed_and_says_it_improves():
    seen, retrieval, truth = _popularity_task()
    ranker = Ranker(RankingFeatures(seen), epochs=15).fit(retrieval, seen, truth)
    record = ranker.record
    assert record["improves"], record
    assert record["held_out_ndcg@20"]["reranked"] > record["held_out_ndcg@20"]["retrieval_order"] + 0.2
    # the stage's score function ranks the unseen candidates by the MLP, everything else last
    top, scores = batched_top_k(ranker.score_fn(retrieval, seen, 10), np.arange(400), 10, exclude=seen)
    assert np.all(np.isfinite(scores)) and np.all(np.diff(scores, axis=1) <= 0)
    assert not any(seen[u, top[u]].sum() for u in range(400))
    hits = np.asarray(truth[np.arange(400)[:, None], top[:, :1]].todense()).ravel()
    assert hits.mean() > 0.5  # the held-out item comes first for most users


def test_small_catalogues_and_empty_validations_skip_the_stage_instead_of_failing():
    seen, retrieval, truth = _popularity_task(n_users=400, n_items=60)  # fewer items than the 100 candidates
    ranker = Ranker(RankingFeatures(seen), epochs=2).fit(retrieval, seen, truth)
    assert ranker.mlp is not None and ranker.record["candidates"] == 60
    nobody = sp.csr_matrix(truth.shape, dtype=np.float32)
    skipped = Ranker(RankingFeatures(seen)).fit(retrieval, seen, nobody)
    assert skipped.mlp is None and not skipped.record["improves"] and "fewer than" in skipped.record["skipped"]


def test_noise_labels_rarely_pass_the_check_that_decides():
    """Labels that no feature explains: the users that decide are not those that chose the epoch."""
    rng = np.random.default_rng(5)
    seen, retrieval, _ = _popularity_task(n_users=600, n_items=200, seed=5)
    candidates, _ = batched_top_k(retrieval, np.arange(600), 100, exclude=seen)
    noise = sp.csr_matrix(
        (np.ones(600, np.float32), (np.arange(600), candidates[np.arange(600), rng.integers(0, 100, 600)])),
        shape=seen.shape,
    )
    decisions = [Ranker(RankingFeatures(seen), epochs=5, seed=s).fit(retrieval, seen, noise).record for s in range(4)]
    margins = [d["held_out_ndcg@20"]["reranked"] - d["held_out_ndcg@20"]["retrieval_order"] for d in decisions]
    assert np.mean(margins) < 0.02, margins


def test_the_stage_learns_on_a_sample_of_a_large_validation_period(monkeypatch):
    seen, retrieval, truth = _popularity_task(n_users=400)
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "200")
    record = Ranker(RankingFeatures(seen), epochs=2).fit(retrieval, seen, truth).record
    assert record["trained_users"] + record["tuning_users"] + record["held_out_users"] <= 200
    assert "200 of the 400 validation shoppers" in record["validation_shoppers"]
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "400")
    record = Ranker(RankingFeatures(seen), epochs=2).fit(retrieval, seen, truth).record
    assert record["trained_users"] + record["tuning_users"] + record["held_out_users"] > 300
    assert "validation_shoppers" not in record
