"""The gate's view: where the time cut falls, that nothing at or after it is learned from, and the fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.backtest import run_backtest
from ml.time_cut import BASKET_HOLDOUT, TIME_CUT, basket_holdout, choose_cut, view_data

pytestmark = pytest.mark.unit

NEWEST = pd.Timestamp("2024-06-30 15:00")


def _pairs(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "first_event_at", "last_event_at"])
    for column in ("first_event_at", "last_event_at"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def _returning_shoppers(n_recent: int, n_earlier: int) -> pd.DataFrame:
    """Shoppers known since January: ``n_recent`` come back in the last 30 days, ``n_earlier`` 30-60 days before."""
    rows = [("anchor", "i0", "2024-01-01", NEWEST)]
    for n in range(n_recent):
        rows.append((f"r{n}", "i1", "2024-01-02", "2024-06-20"))
    for n in range(n_earlier):
        rows.append((f"e{n}", "i1", "2024-01-02", "2024-05-20"))
    return _pairs(rows)


def test_the_cut_is_the_newest_day_minus_30_days_when_enough_known_users_return():
    choice = choose_cut(_returning_shoppers(5, 0), min_test_users=5, fallback_below=2)
    assert choice.view == TIME_CUT and choice.cut_at == "2024-05-31 00:00:00" and choice.test_days == 30
    assert choice.known_test_users == 6  # the anchor bought again on the newest day


def test_the_cut_moves_back_in_30_day_steps_until_enough_users_return():
    choice = choose_cut(_returning_shoppers(2, 4), min_test_users=6, fallback_below=2)
    assert choice.view == TIME_CUT and choice.cut_at == "2024-05-01 00:00:00" and choice.test_days == 60
    assert [t["known_test_users"] for t in choice.tried] == [3, 7]
    assert "moving the cut back 1 x 30 days" in choice.reason


def test_the_cut_never_leaves_less_than_half_of_the_data_before_it():
    recent = _pairs([(f"u{n}", f"i{n}", "2024-05-20", "2024-05-20") for n in range(4)])
    frame = pd.concat([_returning_shoppers(2, 0), recent])  # 4 of 7 pairs are first seen in May
    choice = choose_cut(frame, min_test_users=100, fallback_below=2)
    # a cut at 2024-05-01 would leave 3 of 7 pairs before it: the search stops at the first cut
    assert choice.view == TIME_CUT and choice.cut_at == "2024-05-31 00:00:00"
    assert [t["share_before"] for t in choice.tried] == [1.0]
    assert choice.known_test_users == 3 and "under half the data" in choice.reason


def test_few_returning_users_fall_back_to_the_per_user_holdout_and_say_how_many():
    choice = choose_cut(_returning_shoppers(3, 0), min_test_users=1000, fallback_below=200)
    assert choice.view == BASKET_HOLDOUT and choice.cut_at is None
    assert choice.known_test_users == 4 and "only 4 returning users" in choice.reason


def _mart(pairs: pd.DataFrame, mart_cut: str) -> pd.DataFrame:
    """The interactions_time_split mart's columns, labelled at the mart's own cut."""
    frame = pairs.copy()
    cut = pd.Timestamp(mart_cut)
    frame["split"] = np.where(frame["first_event_at"] < cut, "train", "test")
    frame["is_repeat_after_cut"] = ((frame["first_event_at"] < cut) & (frame["last_event_at"] >= cut)).astype(int)
    frame["cut_at"] = cut
    return frame


def test_a_planted_event_at_or_after_the_cut_never_reaches_training():
    """`late` is bought by every shopper exactly at the cut and after it: if it leaked into train, the
    popularity baseline would rank it first; it must be a test item only, in no train, fit or history."""
    rows = []
    for n in range(30):
        user = f"u{n:02d}"
        rows += [
            (user, "old", "2024-01-05", "2024-05-10"),  # bought before the cut and again after it
            (user, f"own{n}", "2024-04-10", "2024-04-10"),  # in the validation period before the cut
            (user, "late", "2024-05-01" if n < 15 else "2024-05-20", "2024-05-25"),  # planted: at/after the cut
        ]
        rows += [(user, f"x{k}", "2024-02-01", "2024-02-01") for k in range(n % 3 + 20)]
    rows.append(("newcomer", "x0", "2024-06-30", "2024-06-30"))  # the newest event: the first cut is 2024-05-31
    pairs = _pairs(rows)
    # nobody known comes back after 2024-05-31 (the mart's cut): the gate's rule moves the cut back to
    # 2024-05-01, where the mart labelled `late` train for half of the shoppers: it must not be used as such
    frame = _mart(pairs, "2024-05-31")
    choice = choose_cut(frame, min_test_users=30, fallback_below=5)
    assert choice.cut_at == "2024-05-01 00:00:00" and choice.test_days == 60
    data, repeats = view_data(frame, choice)
    late = list(data.item_ids).index("late")
    for matrix in (data.train, data.fit, data.validation):
        assert matrix[:, late].nnz == 0
    assert all(late not in history for history in (*data.histories, *data.fit_histories))
    assert data.test[:, late].nnz == 30  # every known shopper's test item
    old = list(data.item_ids).index("old")
    assert repeats[:, old].nnz == 30 and data.test[:, old].nnz == 0  # a repeat purchase counts in one view only
    # the validation period is the test period's length before the cut: April's items
    own = [list(data.item_ids).index(f"own{n}") for n in range(30)]
    assert data.validation[:, own].nnz == 30 and data.fit[:, own].nnz == 0
    result = run_backtest(frame, choice=choice)
    assert result["window"]["cut_at"] == "2024-05-01 00:00:00"
    new_items = result["variants"]["new_items"]
    assert new_items["models"]["most_popular"]["ndcg@20"] < 0.5  # `late` is unknown to it before the cut
    assert len(new_items["per_user_ndcg@20"]["most_popular"]) == new_items["evaluated_users"] == 30


def test_the_fallback_holdout_keeps_a_basket_on_one_side():
    t = pd.Timestamp("2024-01-01")
    day = pd.Timedelta(days=1)
    rows = [("a", f"a{k}", t + k * day, t + k * day) for k in range(3)]
    rows += [("a", f"b{k}", t + 3 * day, t + 3 * day) for k in range(3)]  # items 4-6: one basket
    rows += [("c", f"c{k}", t, t) for k in range(6)]  # one basket only: nothing to hold out
    rows += [("d", f"d{k}", t + k * day, t + k * day) for k in range(4)]  # four items: only trains
    data = basket_holdout(_pairs(rows))
    items = list(data.item_ids)
    a, c, d = (list(data.user_ids).index(u) for u in "acd")
    # floor(0.8 x 6) = 4 would keep b0 in train and hold out b1, b2: the basket moves to test whole
    assert sorted(items[i] for i in data.test[a].indices) == ["b0", "b1", "b2"]
    assert sorted(items[i] for i in data.train[a].indices) == ["a0", "a1", "a2"]
    assert data.test[c].nnz == 0 and data.train[c].nnz == 6
    assert data.test[d].nnz == 0 and data.train[d].nnz == 4
    assert list(data.evaluated_users()) == [a]
