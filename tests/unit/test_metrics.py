"""Tests for ml.metrics against hand-computed values and a pure-Python reference."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.metrics import (
    hits_matrix,
    intra_list_diversity,
    novelty,
    popularity_share,
    ranking_metrics,
)

pytestmark = pytest.mark.unit


# --- pure-Python reference implementation of the protocol -------------------


def reference_metrics(top_items, test_lists, n_items, ks):
    """Loops over users and ranks exactly as the protocol text says."""
    out = {}
    evaluated = [u for u, t in enumerate(test_lists) if len(set(t)) > 0]
    for k in ks:
        rec = ndcg = hr = ap = 0.0
        covered = set()
        for u in evaluated:
            truth = {int(i) for i in test_lists[u]}
            ranked = [int(i) for i in top_items[u][:k]]
            covered.update(i for i in ranked if i >= 0)
            denom = min(k, len(truth))
            hit_ranks = [r for r, i in enumerate(ranked, start=1) if i in truth]
            rec += len(hit_ranks) / denom
            dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, denom + 1))
            ndcg += dcg / idcg
            hr += 1.0 if hit_ranks else 0.0
            ap += sum(sum(1 for i in ranked[:r] if i in truth) / r for r in hit_ranks) / denom
        n = len(evaluated)
        out[f"recall@{k}"] = rec / n
        out[f"ndcg@{k}"] = ndcg / n
        out[f"hit_rate@{k}"] = hr / n
        out[f"map@{k}"] = ap / n
        out[f"coverage@{k}"] = len(covered) / n_items
    return out


def to_csr(test_lists, n_items):
    rows = [u for u, t in enumerate(test_lists) for _ in t]
    cols = [i for t in test_lists for i in t]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(test_lists), n_items))


# --- hand-written cases ------------------------------------------------------


def test_perfect_ranking_scores_one():
    top = np.array([[0, 1, 2], [3, 4, 5]])
    test = [np.array([0, 1]), np.array([3])]
    m = ranking_metrics(top, test, n_items=6, ks=(2, 3))
    for key in ("recall", "ndcg", "hit_rate", "map"):
        assert m[f"{key}@2"] == pytest.approx(1.0)
        assert m[f"{key}@3"] == pytest.approx(1.0)
    assert m["coverage@2"] == pytest.approx(4 / 6)
    assert m["coverage@3"] == pytest.approx(1.0)


def test_no_hits_scores_zero():
    top = np.array([[0, 1], [2, 3]])
    m = ranking_metrics(top, [np.array([5]), np.array([4, 5])], n_items=6, ks=(2,))
    for key in ("recall@2", "ndcg@2", "hit_rate@2", "map@2"):
        assert m[key] == 0.0


def test_single_test_item_at_rank_two():
    top = np.array([[7, 3, 1]])
    m = ranking_metrics(top, [np.array([3])], n_items=10, ks=(3,))
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(3))
    assert m["recall@3"] == 1.0
    assert m["hit_rate@3"] == 1.0
    assert m["map@3"] == pytest.approx(0.5)


def test_recall_denominator_is_min_k_n_test():
    # 5 test items, K = 2, both recommended items are hits -> recall 1, not 2/5.
    top = np.array([[0, 1, 9]])
    m = ranking_metrics(top, [np.array([0, 1, 2, 3, 4])], n_items=10, ks=(2,))
    assert m["recall@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["map@2"] == pytest.approx(1.0)


def test_map_by_hand():
    # Hits at ranks 1 and 3 of K=4, 3 test items:
    # AP = (1/min(4,3)) * (P@1 + P@3) = (1 + 2/3) / 3 = 5/9.
    top = np.array([[10, 11, 12, 13]])
    m = ranking_metrics(top, [np.array([10, 12, 99])], n_items=100, ks=(4,))
    assert m["map@4"] == pytest.approx(5 / 9)
    assert m["recall@4"] == pytest.approx(2 / 3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@4"] == pytest.approx((1 + 1 / math.log2(4)) / idcg)


def test_users_without_test_items_are_not_evaluated():
    top = np.array([[0, 1], [2, 3], [4, 5]])
    test = to_csr([[0], [], [9]], n_items=10)
    m = ranking_metrics(top, test, n_items=10, ks=(2,))
    assert m["hit_rate@2"] == pytest.approx(0.5)
    # Coverage counts only evaluated users' lists: items {0, 1, 4, 5}.
    assert m["coverage@2"] == pytest.approx(0.4)


def test_default_keys_and_errors():
    top = np.tile(np.arange(20), (2, 1))
    m = ranking_metrics(top, [np.array([0]), np.array([19])], n_items=20)
    assert set(m) == {f"{name}@{k}" for name in ("recall", "ndcg", "hit_rate", "map", "coverage") for k in (10, 20)}
    with pytest.raises(ValueError):
        ranking_metrics(top[:, :5], [np.array([0]), np.array([1])], n_items=20)
    with pytest.raises(ValueError):
        ranking_metrics(top, [np.array([], int), np.array([], int)], n_items=20)


def test_hits_matrix_ignores_padding():
    hits, n_test = hits_matrix(np.array([[-1, 2, 0]]), [np.array([0, 2, 2])], n_items=3)
    np.testing.assert_array_equal(hits, [[False, True, True]])
    np.testing.assert_array_equal(n_test, [2])


# --- random data vs brute force ---------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ranking_metrics_match_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 40, 30, 8
    top = np.array([rng.permutation(n_items)[:width] for _ in range(n_users)])
    test_lists = [rng.choice(n_items, size=rng.integers(0, 12), replace=False) for _ in range(n_users)]
    ks = (1, 3, 8)
    expected = reference_metrics(top, test_lists, n_items, ks)
    for test in (test_lists, to_csr(test_lists, n_items)):
        got = ranking_metrics(top, test, n_items, ks)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_large_input_is_fast_enough():
    rng = np.random.default_rng(0)
    n_users, n_items = 100_000, 5_000
    top = rng.integers(0, n_items, size=(n_users, 20))
    nnz = 500_000
    test = sp.csr_matrix(
        (np.ones(nnz, np.float32), (rng.integers(0, n_users, nnz), rng.integers(0, n_items, nnz))),
        shape=(n_users, n_items),
    )
    m = ranking_metrics(top, test, n_items)
    assert 0.0 <= m["recall@20"] <= 1.0


# --- novelty / diversity -----------------------------------------------------


def test_popularity_share_and_novelty_by_hand():
    # 4 train users (plus one empty row); item 0 seen by 2, item 1 by 1, item 2 by 4.
    train = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=np.float32))
    share = popularity_share(train)
    np.testing.assert_allclose(share, [0.5, 0.25, 1.0])
    top = np.array([[0, 1], [2, 0]])
    # Self-information: item0 = 1 bit, item1 = 2 bits, item2 = 0 bits.
    assert novelty(top, share, k=2) == pytest.approx((1 + 2 + 0 + 1) / 4)
    assert novelty(top, share, k=1) == pytest.approx((1 + 0) / 2)


def test_novelty_matches_reference_on_random_data():
    rng = np.random.default_rng(5)
    train = sp.random(50, 25, density=0.2, format="csr", random_state=5)
    share = popularity_share(train)
    top = np.array([rng.permutation(25)[:6] for _ in range(10)])
    floor = min(s for s in share if s > 0)
    ref = np.mean([np.mean([-math.log2(share[i] if share[i] > 0 else floor) for i in row[:4]]) for row in top])
    assert novelty(top, share, k=4) == pytest.approx(ref)


def test_intra_list_diversity_by_hand():
    category = np.array([0, 0, 1, 2])
    # List [0, 1, 2]: pairs (0,1) same, (0,2) diff, (1,2) diff -> 2/3.
    # List [0, 2, 3]: all different -> 1.  List [0, 1]: 0.
    assert intra_list_diversity(np.array([[0, 1, 2]]), category, 3) == pytest.approx(2 / 3)
    assert intra_list_diversity(np.array([[0, 2, 3], [0, 1, 2]]), category, 3) == pytest.approx(5 / 6)
    assert intra_list_diversity(np.array([[0, 1, 3]]), category, 2) == 0.0
    with pytest.raises(ValueError):
        intra_list_diversity(np.array([[0, 1]]), category, 1)


def test_intra_list_diversity_matches_reference():
    rng = np.random.default_rng(11)
    category = rng.integers(0, 4, size=30)
    top = np.array([rng.permutation(30)[:7] for _ in range(25)])
    for k in (2, 5, 7):
        ref = np.mean([np.mean([category[a] != category[b] for a, b in combinations(row[:k], 2)]) for row in top])
        assert intra_list_diversity(top, category, k) == pytest.approx(ref)
