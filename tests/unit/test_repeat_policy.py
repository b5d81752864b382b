"""The repeat policy: parsing, where the setting comes from, the "buy again" order and the lists it makes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ml.data import RepeatHistory
from ml.names import NEW_ITEMS, WITH_REPEATS
from ml.ranking import batched_top_k
from ml.repeat_policy import (
    EXCLUDE,
    INCLUDE,
    SLOTS,
    RepeatPolicy,
    RepeatPolicyError,
    buy_again_order,
    buy_again_scores,
    from_record,
    gate_view,
    policy_score_fn,
    resolve,
)

pytestmark = pytest.mark.unit

# (user, item): (distinct days bought, days since the last); 3 users, 6 items
PAIRS = {
    (0, 0): (3, 10),
    (0, 1): (3, 2),  # as often as item 0, more recently: before it
    (0, 2): (1, 1),
    (0, 3): (5, 100),  # most days: first, however long ago
    (1, 4): (2, 7),
    (1, 5): (2, 7),  # a full tie with item 4: the lower index first
}


def _history(pairs: dict = PAIRS, shape=(3, 6)) -> RepeatHistory:
    rows, cols = zip(*pairs, strict=True)
    days, since = zip(*pairs.values(), strict=True)

    def matrix(values):
        return sp.csr_matrix((np.asarray(values, np.float32), (rows, cols)), shape=shape)

    return RepeatHistory(matrix(days), matrix(since), pd.Timestamp("2024-01-01"))


@pytest.fixture
def no_env(monkeypatch):
    for name in ("RECSYS_REPEAT_POLICY", "RECSYS_REPEAT_POLICY_ONLINE_RETAIL", "RECSYS_REPEAT_POLICY_GROCERIES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("exclude", RepeatPolicy(EXCLUDE)),
        (" Include ", RepeatPolicy(INCLUDE)),
        (3, RepeatPolicy(SLOTS, 3)),
        ("12", RepeatPolicy(SLOTS, 12)),
        ("500", RepeatPolicy(SLOTS, 500)),
    ],
)
def test_the_allowed_values_parse_and_print_back(value, expected):
    policy = RepeatPolicy.parse(value)
    assert policy == expected and RepeatPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize("value", ["sometimes", "", "2.5", "-1", 0, 501, True, 2.0, None])
def test_anything_else_is_refused_naming_the_setting_and_the_allowed_values(value):
    with pytest.raises(RepeatPolicyError) as error:
        RepeatPolicy.parse(value, "RECSYS_REPEAT_POLICY_GROCERIES")
    assert str(error.value).startswith(f"RECSYS_REPEAT_POLICY_GROCERIES = {value!r}: expected exclude, include or")
    assert "from 1 to 500" in str(error.value)


def test_the_gate_decides_on_new_items_only_when_lists_exclude_what_a_shopper_has():
    assert gate_view(RepeatPolicy(EXCLUDE)) == NEW_ITEMS
    assert gate_view(RepeatPolicy(INCLUDE)) == WITH_REPEATS == gate_view(RepeatPolicy(SLOTS, 2))


def test_the_parameter_wins_then_the_datasets_variable_then_the_default_one_then_the_data(no_env):
    no_env.setenv("RECSYS_REPEAT_POLICY", "include")
    no_env.setenv("RECSYS_REPEAT_POLICY_ONLINE_RETAIL", "4")
    policy, record = resolve("online-retail", "exclude", 0.4)
    assert policy.mode == EXCLUDE and record["source"] == "parameter"
    assert "repeat_policy parameter" in record["reason"] and "40.0%" in record["reason"]

    policy, record = resolve("online-retail", None, 0.4)
    assert policy == RepeatPolicy(SLOTS, 4)
    assert record == {
        "policy": "4",
        "mode": SLOTS,
        "slots": 4,
        "source": "RECSYS_REPEAT_POLICY_ONLINE_RETAIL",
        "repeat_share": 0.4,
        "threshold": 0.1,
        "gate_view": WITH_REPEATS,
        "reason": "set by RECSYS_REPEAT_POLICY_ONLINE_RETAIL = '4' (repeat purchases in the validation period: 40.0%)",
    }
    assert from_record(record) == policy

    policy, record = resolve("groceries", "", 0.4)  # another dataset: the default variable; "" is no parameter
    assert policy.mode == INCLUDE and record["source"] == "RECSYS_REPEAT_POLICY"

    no_env.delenv("RECSYS_REPEAT_POLICY")
    policy, record = resolve("groceries", None, 0.4)
    assert policy.mode == INCLUDE and record["source"] == "data" and record["gate_view"] == WITH_REPEATS
    assert "40.0% of the validation period's purchases were repeat purchases, at or above the 10%" in record["reason"]


def test_the_data_decides_at_the_threshold_and_excludes_when_the_share_is_unknown(no_env):
    assert resolve("groceries", None, 0.0999)[0].mode == EXCLUDE
    assert resolve("groceries", None, 0.1)[0].mode == INCLUDE
    assert resolve("groceries", None, 0.3, threshold=0.5)[0].mode == EXCLUDE
    policy, record = resolve("groceries", None, None)
    assert policy.mode == EXCLUDE and record["repeat_share"] is None and "could not be measured" in record["reason"]
    assert from_record(None) == RepeatPolicy(EXCLUDE)  # a run before the setting published without own items


def test_a_bad_value_names_where_it_came_from(no_env):
    no_env.setenv("RECSYS_REPEAT_POLICY_ONLINE_RETAIL", "never")
    with pytest.raises(RepeatPolicyError, match="^RECSYS_REPEAT_POLICY_ONLINE_RETAIL = 'never': expected"):
        resolve("online-retail", None, 0.4)
    with pytest.raises(RepeatPolicyError, match="^the training DAG's repeat_policy parameter = 0: expected"):
        resolve("online-retail", 0, 0.4)


def test_buy_again_ranks_by_distinct_days_then_recency_then_item():
    history = _history()
    assert buy_again_order(history, np.array([0, 1, 2]), 3).tolist() == [[3, 1, 0], [4, 5, -1], [-1, -1, -1]]
    assert buy_again_order(history, np.array([1, 0]), 5).tolist() == [[4, 5, -1, -1, -1], [3, 1, 0, 2, -1]]
    # only items also in `within`: user 0 without item 3
    within = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0]] * 3, np.float32))
    assert buy_again_order(history, np.array([0]), 2, within=within).tolist() == [[1, 0]]

    scores = buy_again_scores(history, np.array([0, 1, 2]))
    assert scores.dtype == np.float64 and np.isneginf(scores[2]).all()
    assert np.isneginf(scores[0, 4:]).all() and np.isneginf(scores[1, :4]).all()
    # the same order as sorting the pairs in Python by (-days, days since, item)
    for user in (0, 1):
        own = sorted((-d, s, i) for (u, i), (d, s) in PAIRS.items() if u == user)
        by_score = np.argsort(-scores[user], kind="stable")[: len(own)]
        assert by_score.tolist() == [i for _, _, i in own]
    assert scores[1, 4] == scores[1, 5]  # a full tie stays a tie (the ranking's tie-break: lower index)


def _model_scores(users: np.ndarray) -> np.ndarray:
    """Item 5 best, then 4, 3, ... for every user (what a model that knows nothing personal would say)."""
    return np.tile(np.arange(6, dtype=np.float32) / 10, (len(users), 1))


def test_exclude_and_include_lists():
    seen = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], np.float32))
    users = np.arange(3)
    excluded = policy_score_fn(_model_scores, RepeatPolicy(EXCLUDE), seen, _history())
    items, _ = batched_top_k(excluded, users, 2)
    assert items.tolist() == batched_top_k(_model_scores, users, 2, exclude=seen)[0].tolist()
    assert items.tolist() == [[5, 4], [3, 2], [5, 4]]
    assert policy_score_fn(_model_scores, RepeatPolicy(INCLUDE), seen, None) is _model_scores


def test_buy_again_slots_come_first_then_the_models_best_unseen_items():
    seen = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], np.float32))
    users = np.arange(3)
    score = policy_score_fn(_model_scores, RepeatPolicy(SLOTS, 2), seen, _history())
    items, values = batched_top_k(score, users, 4)
    # user 0: the two first by buy-again (3: most days, 1: as many as 0 but later), then the unseen 5 and 4;
    # never their other own items 0 and 2
    assert items[0].tolist() == [3, 1, 5, 4]
    assert items[1].tolist() == [4, 5, 3, 2]  # both own items in the slots (tied: lower index first)
    assert items[2].tolist() == [5, 4, 3, 2]  # nothing bought: the model's list
    # slots score above the row's best model score, one apart; the model's items keep their scores
    np.testing.assert_allclose(values[0], [0.5 + 2, 0.5 + 1, 0.5, 0.4], rtol=1e-6)
    np.testing.assert_allclose(values[1], [0.3 + 2, 0.3 + 1, 0.3, 0.2], rtol=1e-6)
    assert np.isneginf(score(np.array([0]))[0, [0, 2]]).all()
    # one slot: user 0's other own items are left out, so only three places can be filled
    items, values = batched_top_k(policy_score_fn(_model_scores, RepeatPolicy(SLOTS, 1), seen, _history()), users, 4)
    assert items[0, :3].tolist() == [3, 5, 4] and np.isneginf(values[0, 3])
    with pytest.raises(RepeatPolicyError, match="need the shoppers' repeat history"):
        policy_score_fn(_model_scores, RepeatPolicy(SLOTS, 2), seen, None)


def test_a_slot_is_an_item_the_shopper_is_known_to_have():
    """A day in the repeat history of an item the split does not hold for the shopper is not a slot."""
    seen = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], np.float32))
    items, _ = batched_top_k(policy_score_fn(_model_scores, RepeatPolicy(SLOTS, 2), seen, _history()), np.array([0]), 3)
    assert items[0].tolist() == [1, 0, 5]


def test_the_gate_wants_the_policys_variant_unless_recsys_gate_view_overrides_it(no_env):
    from recsys_pipeline.release.gate import policy_line, policy_variant

    no_env.delenv("RECSYS_GATE_VIEW", raising=False)
    _, included = resolve("online-retail", "include", 0.4)
    wanted, record = policy_variant({"repeat_policy": included})
    assert wanted == WITH_REPEATS and record["source"] == "parameter" and "gate_view_note" not in record
    assert policy_line(record, wanted).startswith("repeat policy: include (set by the training DAG's")
    wanted, record = policy_variant({})  # a run before the setting published without own items
    assert wanted == NEW_ITEMS and record["policy"] == EXCLUDE and "predates the setting" in record["reason"]

    no_env.setenv("RECSYS_GATE_VIEW", "new_items")
    wanted, record = policy_variant({"repeat_policy": included})
    assert wanted == NEW_ITEMS and record["gate_view"] == NEW_ITEMS
    assert record["gate_view_note"] == "RECSYS_GATE_VIEW=new_items overrides the policy's with_repeats"
    assert policy_line(record, wanted).endswith("(RECSYS_GATE_VIEW=new_items overrides the policy's with_repeats)")
    no_env.setenv("RECSYS_GATE_VIEW", "repeats")
    with pytest.raises(ValueError, match="RECSYS_GATE_VIEW = 'repeats': expected one of new_items, with_repeats"):
        policy_variant({"repeat_policy": included})
