"""The evaluation's two orders of the ranking stage: an unused stage (a diagnostic) is compared with the
retrieval order on a seeded sample of test shoppers past the tuning bound; a used one, the challenger
itself, on every shopper."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

pytestmark = pytest.mark.unit


def _shop(n_users: int = 60, n_items: int = 30):
    """A shop with more items than the protocol's K (20), a two-tower stand-in (random embeddings: the orders'
    sampling is under test, not their quality) and a real ranking stage trained on one unseen item each."""
    from ml.data import InteractionData
    from ml.reranker import Ranker, RankingFeatures

    rng = np.random.default_rng(11)
    matrix = sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    users, items = rng.standard_normal((n_users, 8)), rng.standard_normal((n_items, 8))

    def retrieval(u):
        return (users[np.asarray(u)] @ items.T).astype(np.float32)

    def one_unseen_each(seed):
        pick = np.random.default_rng(seed)
        unseen = [pick.choice(np.flatnonzero(matrix[u].toarray().ravel() == 0)) for u in range(n_users)]
        return sp.csr_matrix((np.ones(n_users, np.float32), (np.arange(n_users), unseen)), shape=matrix.shape)

    ranker = Ranker(RankingFeatures(matrix), epochs=2, n_candidates=25, held_out_share=0.6)
    ranker.fit(retrieval, matrix, one_unseen_each(1))
    assert ranker.mlp is not None, ranker.record
    histories = [np.flatnonzero(matrix[u].toarray().ravel()) for u in range(n_users)]
    data = InteractionData(
        user_ids=np.array([f"u{u:02d}" for u in range(n_users)], dtype=object),
        item_ids=np.array([f"i{i:02d}" for i in range(n_items)], dtype=object),
        train=matrix,
        test=one_unseen_each(2),
        fit=matrix,
        validation=one_unseen_each(1),
        histories=histories,
        fit_histories=histories,
        full_histories=histories,
    )
    return data, retrieval, ranker


def test_an_unused_stage_is_compared_on_a_sample_past_the_bound_and_a_used_one_on_every_shopper(monkeypatch):
    from ml.names import RERANKED, RETRIEVAL_ORDER
    from recsys_pipeline.training.evaluation import _ranking_stage_orders

    data, retrieval, ranker = _shop()
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "20")
    orders, note = _ranking_stage_orders(data, retrieval, ranker, False, None)
    assert orders[RETRIEVAL_ORDER]["evaluated_users"] == orders[RERANKED]["evaluated_users"] == 20
    assert "20 of the 60 test shoppers" in note
    again, _ = _ranking_stage_orders(data, retrieval, ranker, False, None)
    assert again == orders  # a seeded sample: the same shoppers, the same figures

    used, note = _ranking_stage_orders(data, retrieval, ranker, True, None)
    assert note is None and used[RERANKED]["evaluated_users"] == used[RETRIEVAL_ORDER]["evaluated_users"] == 60

    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "100")  # a shop under the bound: every shopper, as before
    small, note = _ranking_stage_orders(data, retrieval, ranker, False, None)
    assert note is None and small == used

    no_stage, note = _ranking_stage_orders(data, retrieval, None, False, None)
    assert note is None and list(no_stage) == [RETRIEVAL_ORDER]
