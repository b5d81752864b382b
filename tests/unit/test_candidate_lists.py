"""The candidate ranking's lists: mapped onto a run's ids, and answered alike by the tables and the SavedModel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ml.data import RepeatHistory
from ml.ranking import batched_top_k
from ml.repeat_policy import policy_score_fn, policy_top_k_of_lists, resolve
from recsys_pipeline.training.candidates import list_score_fn, lists_for

LISTS = {  # as fit_for_publishing saves them: indices into its own sorted ids, -inf past a short list
    "user_ids": np.array(["u1", "u2", "u3"]),
    "item_ids": np.array(["a", "b", "c", "d"]),
    "items": np.array([[2, 0, 1], [3, 1, 0], [1, 0, 2]], np.int32),
    "scores": np.array([[0.9, 0.5, 0.1], [0.7, 0.6, -np.inf], [0.3, 0.2, 0.1]], np.float32),
}


def test_lists_are_mapped_onto_other_ids_and_keep_their_order():
    users = np.array(["u2", "u1", "new"], dtype=object)  # another order, and a user the lists never saw
    items = np.array(["d", "c", "b", "a"], dtype=object)
    ranked = lists_for(LISTS, users, items)
    assert ranked.tolist() == [[0, 2, -1], [1, 3, 2], [-1, -1, -1]]
    top, scores = batched_top_k(list_score_fn(ranked, len(items)), np.arange(3), 2)
    assert items[top[0]].tolist() == ["d", "b"] and items[top[1]].tolist() == ["c", "a"]
    assert np.isinf(scores[2]).all()  # no list: nothing personal


def test_the_saved_model_answers_a_known_shopper_with_their_list():
    from ml.serving import RecommenderModule

    users, items = LISTS["user_ids"].astype(object), LISTS["item_ids"].astype(object)
    ranked = lists_for(LISTS, users, items)
    seen = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [3, 2, 3])), shape=(3, 4))
    rng = np.random.default_rng(0)
    module = RecommenderModule(
        users,
        items,
        rng.normal(size=(3, 4)).astype(np.float32),  # embeddings that would rank otherwise
        rng.normal(size=(4, 4)).astype(np.float32),
        seen,
        np.array([1.0, 2.0, 3.0, 4.0]),
        "m1",
        ranked_lists=ranked,
    )
    answer = module.recommend(np.array(["u1", "u3", "stranger"]), 2)
    got = answer["item_ids"].numpy().astype(str).tolist()
    table, _ = batched_top_k(list_score_fn(ranked, 4), np.arange(3), 2, exclude=seen)
    assert got[:2] == items[table[[0, 2]]].tolist() == [["c", "a"], ["b", "a"]]
    assert got[2] == ["d", "c"]  # a stranger gets the best-sellers


@pytest.mark.parametrize("policy", ["exclude", "include", "3"])
@pytest.mark.parametrize("k", [5, 12])
def test_the_tables_take_each_policys_list_from_the_lists_as_the_dense_ranking_does(policy, k):
    """``policy_top_k_of_lists`` (what ``scoring.recommend`` publishes) against the dense path it replaces:
    every item scored, the policy applied, the plain top-K; random lists with gaps, short and missing rows."""
    rng = np.random.default_rng(7)
    n_users, n_items, length = 300, 40, 10
    ranked = np.stack([rng.permutation(n_items)[:length] for _ in range(n_users)]).astype(np.int64)
    ranked[rng.random(ranked.shape) < 0.1] = -1  # items unknown to the run's ids
    ranked[:20, 4:] = -1  # short lists
    ranked[20:30] = -1  # shoppers without a list
    seen = sp.random(n_users, n_items, density=0.15, format="csr", random_state=3, dtype=np.float32)
    seen.data[:] = 1.0
    had_something = np.ones(n_users, np.float32)
    had_something[40:45] = 0.0  # shoppers who had nothing
    seen = sp.csr_matrix(sp.diags(had_something) @ seen)
    seen.eliminate_zeros()
    days, since = seen.copy(), seen.copy()
    days.data = rng.integers(1, 6, len(days.data)).astype(np.float32)
    since.data = rng.integers(1, 90, len(since.data)).astype(np.float32)
    repeats = RepeatHistory(days, since, pd.Timestamp("2024-01-01"))
    chosen = resolve("shop", policy, None)[0]

    dense = policy_score_fn(list_score_fn(ranked, n_items), chosen, seen, repeats)
    want_items, want_scores = batched_top_k(dense, np.arange(n_users), k)
    got_items, got_scores = policy_top_k_of_lists(ranked, k, chosen, seen, repeats, batch_size=64)

    np.testing.assert_array_equal(got_scores, want_scores)
    finite = np.isfinite(want_scores)
    np.testing.assert_array_equal(got_items[finite], want_items[finite])
    assert finite.sum() > n_users  # the comparison has lists to compare
    if chosen.mode == "slots":
        assert (got_scores[:, 0] > length).any()  # buy-again slots lead some lists
