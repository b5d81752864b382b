"""The global time-cut backtest: who is scored on what, with repeats counted and excluded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.backtest import run_backtest, time_cut_data

CUT = "2024-02-01 00:00:00"


def _frame() -> pd.DataFrame:
    rows = [
        # user, item, split, repeat after the cut, first seen
        ("a", "i1", "train", 1, "2024-01-01"),  # a buys i1 again after the cut
        ("a", "i2", "train", 0, "2024-01-20"),  # within the 30 days before the cut: validation
        ("a", "i3", "test", 0, "2024-02-05"),
        ("b", "i2", "train", 0, "2023-12-01"),
        ("b", "i1", "test", 0, "2024-02-02"),
        ("c", "i4", "test", 0, "2024-02-03"),  # nothing before the cut: not scored
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "split", "is_repeat_after_cut", "first_event_at"])
    frame["first_event_at"] = pd.to_datetime(frame["first_event_at"])
    frame["cut_at"] = pd.Timestamp(CUT)
    return frame


def test_only_users_known_before_the_cut_are_scored_and_repeats_are_test_items():
    data, with_repeats = time_cut_data(_frame())
    assert list(data.user_ids) == ["a", "b"]
    assert list(data.item_ids) == ["i1", "i2", "i3"]
    assert data.train.toarray().tolist() == [[1, 1, 0], [0, 1, 0]]
    assert data.test.toarray().tolist() == [[0, 0, 1], [1, 0, 0]]
    assert with_repeats.toarray().tolist() == [[1, 0, 1], [1, 0, 0]]
    # validation: what was first had in the 30 days before the cut; fit: the rest of train
    assert data.validation.toarray().tolist() == [[0, 1, 0], [0, 0, 0]]
    assert data.fit.toarray().tolist() == [[1, 0, 0], [0, 1, 0]]
    assert [h.tolist() for h in data.histories] == [[0, 1], [1]]  # oldest first


def _with_shopper_z(frame: pd.DataFrame) -> pd.DataFrame:
    """z bought i2, i3 and 20 other items before the cut (top-20 lists need 20 items), nothing after."""
    items = ["i2", "i3", *(f"x{n:02d}" for n in range(20))]
    rows = pd.DataFrame(
        {
            "user_id": "z",
            "item_id": items,
            "split": "train",
            "is_repeat_after_cut": 0,
            "first_event_at": pd.Timestamp("2023-11-01"),
            "cut_at": pd.Timestamp(CUT),
        }
    )
    return pd.concat([frame, rows], ignore_index=True)


def test_bought_before_ranks_own_items_first_where_repeats_count():
    result = run_backtest(_with_shopper_z(_frame()))
    assert result["window"]["cut_at"] == CUT and result["users"] == 3 and result["train_interactions"] == 25
    repeats = result["variants"]["with_repeats"]["models"]
    new = result["variants"]["new_items"]["models"]
    assert "bought_before" in repeats and "bought_before" not in new
    # popularity: i2 3, i1 / i3 / x.. 1 (ties: lower id first)
    # a: i2 (own, popular), i1 (own), i3 -> hits at ranks 2 and 3 of two test items; b: i2 (own), i1 -> hit at 2
    a = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    b = 1 / np.log2(3)
    assert repeats["bought_before"]["ndcg@10"] == pytest.approx((a + b) / 2)
    assert repeats["bought_before"]["recall@10"] == pytest.approx(1.0)
    # with bought items excluded, most popular ranks the rest: a gets i3 first (only unseen item), b gets i1 first
    assert new["most_popular"]["ndcg@10"] == pytest.approx(1.0)
    assert result["variants"]["new_items"]["evaluated_users"] == 2


def test_a_time_split_without_train_rows_is_refused():
    frame = _frame()
    frame["split"] = "test"
    with pytest.raises(ValueError, match="no interaction before the cut"):
        time_cut_data(frame)


def test_an_unusable_split_fails_the_task_at_once_instead_of_retrying():
    from airflow.sdk.exceptions import AirflowFailException

    from ml.data import SplitError
    from recsys_pipeline.orchestration.runtime import fail_fast

    frame = _frame()
    frame["split"] = "test"
    with pytest.raises(SplitError):
        time_cut_data(frame)
    with pytest.raises(AirflowFailException, match="SplitError: interactions_time_split: columns .* are missing"):
        fail_fast(time_cut_data)(frame.drop(columns=["cut_at"]))
