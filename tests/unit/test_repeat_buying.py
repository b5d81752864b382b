"""How often and how recently: the repeat history, "buy again", TIFU-KNN and the candidate ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ml.backtest import time_cut_data
from ml.data import bought_between, id_positions, index_ids, repeat_history, repeat_share
from ml.repeat_buying import TIFUKNN, BuyAgain, decayed_frequency

USERS = np.array(["a", "b"], dtype=object)
ITEMS = np.array(["i1", "i2", "i3"], dtype=object)


def _days(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_date"])


def test_ids_are_found_by_their_text_and_unknown_ones_are_minus_one():
    frame = pd.DataFrame({"user_id": ["9", "10", "9", "100"], "item_id": [3, 20, 3, 100]})
    frame["item_id"] = frame["item_id"].astype(str)
    user_ids, item_ids = index_ids(frame)
    assert user_ids.tolist() == ["10", "100", "9"] and item_ids.tolist() == ["100", "20", "3"]  # text order
    assert frame["user"].tolist() == [2, 0, 2, 1] and frame["item"].tolist() == [2, 1, 2, 0]
    values = pd.Series(["9", "nine", "10", None], dtype=object)
    assert id_positions(values, user_ids).tolist() == [2, -1, 0, -1]
    assert id_positions(pd.Series([], dtype=str), user_ids).dtype == np.int64


def test_repeat_history_counts_days_before_the_reference_only():
    days = _days(
        [
            ("a", "i1", "2024-01-01"),
            ("a", "i1", "2024-01-10"),
            ("a", "i1", "2024-02-01"),  # on the reference day: after it
            ("a", "i2", "2024-01-30"),
            ("b", "i3", "2024-01-31"),
            ("b", "zz", "2024-01-05"),  # an item outside the index: left out
        ]
    )
    history = repeat_history(days, USERS, ITEMS, pd.Timestamp("2024-02-01"))
    assert history.days.toarray().tolist() == [[2, 1, 0], [0, 0, 1]]
    assert history.days_since.toarray().tolist() == [[22, 2, 0], [0, 0, 1]]  # the latest day counts
    assert len(history.occasions[0]) == 4


def test_bought_between_and_the_share_of_repeats():
    days = _days(
        [
            ("a", "i1", "2024-01-01"),
            ("a", "i1", "2024-01-20"),  # a repeat in the period
            ("a", "i2", "2024-01-21"),  # new in the period
            ("b", "i3", "2024-01-02"),  # nothing in the period
        ]
    )
    later = repeat_history(days, USERS, ITEMS, pd.Timestamp("2024-02-01"))
    earlier = repeat_history(days, USERS, ITEMS, pd.Timestamp("2024-01-15"))
    assert bought_between(later, earlier).toarray().tolist() == [[1, 1, 0], [0, 0, 0]]
    assert repeat_share(later, earlier) == pytest.approx(0.5)


def test_buy_again_ranks_by_count_then_recency_then_popularity():
    days = _days(
        [
            ("a", "i1", "2024-01-01"),
            ("a", "i2", "2024-01-02"),
            ("a", "i2", "2024-01-03"),  # i2: two days -> first
            ("a", "i3", "2024-01-20"),  # i3: one day like i1, but later -> before i1
            ("b", "i1", "2024-01-05"),
        ]
    )
    history = repeat_history(days, USERS, ITEMS, pd.Timestamp("2024-02-01"))
    train = sp.csr_matrix(history.days > 0, dtype=np.float32)
    scores = BuyAgain(history).fit(train).score(np.array([0, 1]))
    assert list(np.argsort(-scores[0])) == [1, 2, 0]
    assert np.argmax(scores[1]) == 0 and scores[1, 0] > 1 > scores[1, 1]  # b's own item above any other


def test_decayed_frequency_weighs_days_by_group_and_place():
    # a: four days (newest first d0..d3), groups of two: d0 d1 | d2 d3
    days = _days(
        [("a", "i1", "2024-01-04"), ("a", "i2", "2024-01-03"), ("a", "i1", "2024-01-02"), ("a", "i3", "2024-01-01")]
    )
    history = repeat_history(days, USERS, ITEMS, pd.Timestamp("2024-01-05"))
    vectors = decayed_frequency(history, group_size=2, basket_decay=0.5, group_decay=0.25).toarray()
    norm = 2 * 2  # group size x number of groups
    expected_i1 = (1.0 + 0.25 * 1.0) / norm  # d0 (group 0, place 0) and d2 (group 1, place 0)
    expected_i2 = 0.5 / norm  # d1: group 0, place 1
    expected_i3 = 0.25 * 0.5 / norm  # d3: group 1, place 1
    assert vectors[0] == pytest.approx([expected_i1, expected_i2, expected_i3])
    assert vectors[1].sum() == 0


def test_tifu_knn_alpha_one_is_the_shoppers_own_vector():
    days = _days([("a", "i1", "2024-01-01"), ("b", "i2", "2024-01-01"), ("b", "i1", "2024-01-02")])
    history = repeat_history(days, USERS, ITEMS, pd.Timestamp("2024-01-05"))
    model = TIFUKNN(history, neighbours=1, alpha=1.0).fit()
    own = decayed_frequency(history, 7, 0.9, 0.7).toarray()
    assert model.score(np.array([0, 1])) == pytest.approx(own)
    blended = TIFUKNN(history, neighbours=1, alpha=0.0).fit().score(np.array([0]))
    assert blended[0] == pytest.approx(own[1])  # a's one neighbour is b


def test_the_time_cut_never_counts_a_day_at_or_after_the_cut():
    frame = pd.DataFrame(
        [
            ("a", "i1", "train", 1, "2024-01-01", "2024-02-10", "2024-02-01"),
            ("a", "i2", "test", 0, "2024-02-05", "2024-02-05", "2024-02-01"),
            ("b", "i1", "train", 0, "2023-12-20", "2023-12-20", "2024-02-01"),
        ],
        columns=["user_id", "item_id", "split", "is_repeat_after_cut", "first_event_at", "last_event_at", "cut_at"],
    )
    days = _days(
        [
            ("a", "i1", "2024-01-01"),
            ("a", "i1", "2024-01-25"),  # in the validation period (30 days before the cut)
            ("a", "i1", "2024-02-10"),  # planted late: after the cut
            ("a", "i2", "2024-02-05"),
            ("b", "i1", "2023-12-20"),
        ]
    )
    data, _ = time_cut_data(frame, days_frame=days)
    assert data.repeats.days.toarray().tolist() == [[2, 0], [1, 0]]
    assert data.fit_repeats.days.toarray().tolist() == [[1, 0], [1, 0]]
    assert bought_between(data.repeats, data.fit_repeats).toarray().tolist() == [[1, 0], [0, 0]]


def _shop(seed: int, n_users: int = 240, n_items: int = 40):
    """Shoppers who buy again the item they bought on the most days: what no co-occurrence source sees."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=6, replace=False)
        for rank, item in enumerate(items):
            for day in range(6 - rank):  # item 0 on 6 days, item 1 on 5, ...
                rows.append((f"u{u:03d}", f"i{item:02d}", pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(day) * 3)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_date"]), rng


def _favourite_shop(seed: int):
    """``_shop``'s shoppers, their history, the label (each shopper's most often bought item: ties cannot happen,
    days differ) and two sources that know nothing of counts (popularity; the shopper's own items in item order)."""
    from ml.names import BOUGHT_BEFORE, MOST_POPULAR

    days, _ = _shop(seed)
    users = np.array(sorted(days["user_id"].unique()), dtype=object)
    items = np.array(sorted(days["item_id"].unique()), dtype=object)
    history = repeat_history(days, users, items, pd.Timestamp("2024-03-01"))
    seen = sp.csr_matrix(history.days > 0, dtype=np.float32)
    favourite = np.asarray(history.days.argmax(axis=1)).ravel()
    truth = sp.csr_matrix((np.ones(len(users), np.float32), (np.arange(len(users)), favourite)), seen.shape)
    popular = np.asarray(seen.sum(axis=0)).ravel()
    sources = {
        MOST_POPULAR: lambda u: np.tile(popular, (len(u), 1)).astype(np.float32),
        BOUGHT_BEFORE: lambda u: (seen[u].toarray() * (1 + np.arange(seen.shape[1]) / 100)).astype(np.float32),
    }
    return users, seen, history, favourite, truth, sources


def test_the_candidate_ranker_learns_what_shoppers_buy_again():
    from ml.candidate_ranking import CandidateRanker, Context, candidates_and_features
    from ml.names import BOUGHT_BEFORE

    users, seen, history, favourite, truth, sources = _favourite_shop(0)
    ranker = CandidateRanker(include_own=True, epochs=40, patience=5).fit(sources, Context(seen, history), truth)
    assert ranker.record["improves"], ranker.record
    assert ranker.record["held_out_ndcg@20"]["ranker"] > 0.9
    score = ranker.score_fn(sources, Context(seen, history))(np.arange(len(users)))
    alone = sources[BOUGHT_BEFORE](np.arange(len(users)))
    assert (np.argmax(alone, axis=1) == favourite).mean() < 0.3  # item order: the favourite by chance
    assert (np.argmax(score, axis=1) == favourite).mean() > 0.7
    # where the list may not repeat, no own item is a candidate
    candidates, _ = candidates_and_features(sources, Context(seen, history), np.arange(5), False, 20)
    own = seen[np.arange(5)].toarray()[np.arange(5)[:, None], np.maximum(candidates, 0)]
    assert (candidates >= 0).any() and not own[candidates >= 0].any()


@pytest.mark.parametrize("include_own", [True, False])
def test_the_published_lists_are_the_rankers_best_candidates_as_the_dense_ranking_orders_them(include_own):
    from ml.candidate_ranking import CandidateRanker, Context
    from ml.ranking import batched_top_k

    users, seen, history, _, truth, sources = _favourite_shop(1)
    context = Context(seen, history)
    if not include_own:  # labels the candidates can hold: an item each shopper never had
        unseen = np.argmax(np.random.default_rng(1).random(seen.shape) - seen.toarray(), axis=1)
        truth = sp.csr_matrix((np.ones(len(users), np.float32), (np.arange(len(users)), unseen)), seen.shape)
    ranker = CandidateRanker(include_own=include_own, epochs=2).fit(sources, context, truth)
    assert ranker.mlp is not None
    score = ranker.score_fn(sources, context)
    everyone = np.arange(len(users))
    predict = ranker._predict
    coarse = lambda features: np.round(predict(features) * 2) / 2  # noqa: E731 -- scores that tie, often
    # a short list and the whole catalogue (past every shopper's candidates), with the ranker's scores and tied ones
    for n, ranker._predict in ((5, predict), (seen.shape[1], predict), (5, coarse), (seen.shape[1], coarse)):
        # the same batches both ways, so that the MLP sees the same inputs and gives the same bits
        want_items, want_scores = batched_top_k(score, everyone, n, None if include_own else seen, batch_size=64)
        items, scores = score.top_n(everyone, n, batch_size=64)
        np.testing.assert_array_equal(scores, want_scores)
        listed = np.isfinite(want_scores)
        np.testing.assert_array_equal(items[listed], want_items[listed])
        assert (items[~listed] == -1).all() and listed.any()
    if not include_own:  # the catalogue is longer than the candidates without each shopper's own items
        assert not listed.all()


def test_candidate_labels_are_the_truths_values_without_a_dense_copy():
    from ml.candidate_ranking import candidate_labels

    rng = np.random.default_rng(5)
    truth = sp.random(40, 300, density=0.03, format="csr", random_state=2, dtype=np.float32)
    truth.data = np.ceil(truth.data * 3)  # counts, as the repeats-counted view's labels are
    candidates = rng.integers(-1, 300, size=(40, 25))
    candidates[:, :3] = np.asarray(truth.argmax(axis=1)).reshape(-1, 1)  # hits in every row that has one
    expected = np.take_along_axis(truth.toarray(), np.maximum(candidates, 0), axis=1)
    expected[candidates < 0] = -1.0
    unsorted = sp.csr_matrix(  # the same matrix, each row's entries stored in reverse column order
        (
            np.concatenate([truth.data[a:b][::-1] for a, b in zip(truth.indptr[:-1], truth.indptr[1:], strict=True)]),
            np.concatenate(
                [truth.indices[a:b][::-1] for a, b in zip(truth.indptr[:-1], truth.indptr[1:], strict=True)]
            ),
            truth.indptr,
        ),
        shape=truth.shape,
    )
    stored = unsorted.indices.copy()
    np.testing.assert_array_equal(candidate_labels(unsorted, candidates), candidate_labels(truth, candidates))
    np.testing.assert_array_equal(unsorted.indices, stored)  # the caller's matrix is left as it was
    labels = candidate_labels(truth, candidates)
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, expected)
    assert (labels > 0).sum() >= 3 * (np.diff(truth.indptr) > 0).sum()
    empty = candidate_labels(sp.csr_matrix((2, 300), dtype=np.float32), candidates[:2])
    np.testing.assert_array_equal(empty, np.where(candidates[:2] < 0, -1.0, 0.0))


def test_the_candidate_ranker_trains_on_a_sample_of_a_large_validation_period(monkeypatch):
    from ml.candidate_ranking import CandidateRanker, Context, candidates_and_features

    users, seen, history, _, truth, sources = _favourite_shop(1)
    context = Context(seen, history)
    # the features of many batches, written by several threads, are each batch's own
    ranker = CandidateRanker(include_own=True)
    ranker.width = ranker._width(len(sources), seen.shape[1])
    everyone = np.arange(len(users))[::-1].copy()
    candidates, features = ranker._batches(sources, context, everyone, batch_size=32)
    alone = candidates_and_features(sources, context, everyone, True, ranker.width)
    np.testing.assert_array_equal(candidates, alone[0])
    np.testing.assert_array_equal(features, alone[1])
    # past the bound, the ranker learns, tunes and checks on that many validation shoppers and says so
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", "120")
    record = CandidateRanker(include_own=True, epochs=3).fit(sources, context, truth).record
    assert record["tuning_users"] + record["held_out_users"] < 90 and record["trained_users"] > 0  # ~60, not ~120
    assert "120 of the 240 validation shoppers" in record["validation_shoppers"]


def test_tifu_knn_tuning_ranks_every_blend_from_one_neighbour_pass(monkeypatch):
    from ml.repeat_buying import TIFU_ALPHAS, TIFU_GRID, tuned_tifu_knn
    from ml.train import validation_ndcg

    days, _ = _shop(2, n_users=300)
    users = np.array(sorted(days["user_id"].unique()), dtype=object)
    items = np.array(sorted(days["item_id"].unique()), dtype=object)
    fit = repeat_history(days, users, items, pd.Timestamp("2024-01-10"))
    later = repeat_history(days, users, items, pd.Timestamp("2024-03-01"))
    truth = bought_between(later, fit)
    nothing_seen = sp.csr_matrix(truth.shape, dtype=np.float32)
    calls = []
    original = TIFUKNN._neighbours
    monkeypatch.setattr(TIFUKNN, "_neighbours", lambda self, u: calls.append(len(u)) or original(self, u))
    model, record = tuned_tifu_knn(fit, later, truth)
    shoppers = int((np.diff(truth.indptr) > 0).sum())
    assert shoppers > 100 and sum(calls) == len(TIFU_GRID) * shoppers  # once per decay setting, not per blend too
    for basket_decay, group_decay in TIFU_GRID:  # the same figures as ranking each blend on its own
        alone = TIFUKNN(fit, basket_decay=basket_decay, group_decay=group_decay).fit()
        for alpha in TIFU_ALPHAS:
            key = f"rb={basket_decay},rg={group_decay},alpha={alpha}"
            alone.alpha = alpha
            expected = validation_ndcg(alone.score, nothing_seen, truth)
            assert record["validation_ndcg@20"][key] == round(expected, 5)
    assert (model.basket_decay, model.group_decay, model.alpha) == (
        record["basket_decay"],
        record["group_decay"],
        record["alpha"],
    )
    assert "validation_shoppers" not in record
