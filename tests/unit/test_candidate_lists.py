"""The candidate ranking's lists: mapped onto a run's ids, and answered alike by the tables and the SavedModel."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ml.ranking import batched_top_k
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
