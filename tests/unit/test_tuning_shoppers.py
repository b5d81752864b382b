"""Hyper-parameters are chosen on every validation shopper up to a bound, on a seeded sample past it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml import tuning_shoppers


def _truth(n_users: int = 500, n_items: int = 60, seed: int = 3) -> sp.csr_matrix:
    truth = sp.random(n_users, n_items, density=0.05, format="csr", random_state=seed, dtype=np.float32)
    truth.data[:] = 1.0
    return truth


def test_up_to_the_bound_every_shopper_is_kept_and_nothing_is_said():
    truth = _truth()
    shoppers = int((np.diff(truth.indptr) > 0).sum())
    for most in (shoppers, shoppers + 1, 0):
        kept = tuning_shoppers.sampled(truth, most)
        assert (kept != truth).nnz == 0 and kept.shape == truth.shape
        assert tuning_shoppers.note(truth, most) is None


def test_past_the_bound_a_seeded_sample_of_whole_rows():
    truth = _truth()
    kept = tuning_shoppers.sampled(truth, 100)
    assert kept.shape == truth.shape
    rows = np.flatnonzero(np.diff(kept.indptr) > 0)
    assert len(rows) == 100
    dense, kept_dense = truth.toarray(), kept.toarray()
    np.testing.assert_array_equal(kept_dense[rows], dense[rows])  # a sampled shopper keeps every item
    others = np.setdiff1d(np.arange(truth.shape[0]), rows)
    assert not kept_dense[others].any()
    again = tuning_shoppers.sampled(truth, 100)
    np.testing.assert_array_equal(np.flatnonzero(np.diff(again.indptr) > 0), rows)  # the same data, the same sample
    spread = rows / truth.shape[0]
    assert spread.min() < 0.2 and spread.max() > 0.8  # drawn across the shop, not its first rows
    assert "100 of the" in tuning_shoppers.note(truth, 100)


def test_the_bound_comes_from_the_environment(monkeypatch):
    truth = _truth()
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "50")
    assert tuning_shoppers.bound() == 50
    assert (np.diff(tuning_shoppers.sampled(truth).indptr) > 0).sum() == 50
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "0")
    assert (tuning_shoppers.sampled(truth) != truth).nnz == 0
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "20k")
    with pytest.raises(ValueError, match="RECSYS_TUNING_SHOPPERS must be a whole number.*'20k'"):
        tuning_shoppers.sampled(truth)


def test_validation_ndcg_ranks_the_sampled_shoppers_only(monkeypatch):
    from ml.metrics import ranking_metrics
    from ml.names import NDCG_20
    from ml.ranking import batched_top_k
    from ml.train import validation_ndcg

    truth = _truth()
    seen = sp.csr_matrix(truth.shape, dtype=np.float32)
    scores = np.random.default_rng(0).random(truth.shape).astype(np.float32)

    def score(users):
        return scores[users].copy()

    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "80")
    sample = tuning_shoppers.sampled(truth, 80)
    users = np.flatnonzero(np.diff(sample.indptr) > 0)
    top, _ = batched_top_k(score, users, 20, exclude=seen)
    expected = ranking_metrics(top, sample[users], truth.shape[1], ks=(20,))[NDCG_20]
    assert validation_ndcg(score, seen, truth) == pytest.approx(expected)
