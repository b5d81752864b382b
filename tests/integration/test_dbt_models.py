"""dbt's cleaning rules, features and split on a small hand-made dataset, in the real MariaDB.

The dataset has what the real sources have and more: view/cart/purchase/return
events, both groceries date formats, exact duplicates, a missing user, an
unparseable time and a fee line, so each documented staging rule is checked.
"""

from __future__ import annotations

import pandas as pd
import pytest

from recsys_pipeline import transform, warehouse
from recsys_pipeline.ingest.adapters import RawDataset
from recsys_pipeline.ingest.contract import check_frame
from recsys_pipeline.ingest.loader import load_raw

pytestmark = pytest.mark.integration


def _events() -> pd.DataFrame:
    rows = []
    # u1 buys ten products on ten days, in both groceries date formats
    for day in range(1, 11):
        date = f"{day:02d}-03-2024" if day % 2 else f"{day}/3/2024"
        rows.append(("u1", f"p{day:02d}", "purchase", 2.0, 1.5, date))
    rows += [
        ("u1", "p01", "purchase", 2.0, 1.5, "01-03-2024"),  # exact duplicate of the first row
        ("u1", "p03", "purchase", 1.0, 1.5, "20-03-2024"),  # repeat purchase: collapses to the first
        ("u1", "POST", "purchase", 1.0, 18.0, "02-03-2024"),  # postage fee: not a product
        ("u2", "p01", "view", None, None, "2024-03-01 10:00:00"),
        ("u2", "p02", "cart", None, None, "2024-03-01 10:05:00"),
        ("u2", "p02", "purchase", 1.0, 1.5, "2024-03-01 10:09:00"),
        ("u2", "p03", "return", -1.0, 1.5, "2024-03-02 09:00:00"),  # returns are not positives
        (None, "p04", "purchase", 1.0, 1.5, "2024-03-02 09:00:00"),  # anonymous basket
        ("u3", "p05", "purchase", 1.0, 1.5, "31-02-2024"),  # impossible date
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "quantity", "price", "event_time"])
    frame.insert(0, "source_row_id", range(1, len(frame) + 1))
    return frame


@pytest.fixture(scope="module")
def built(mysql_test_settings):
    events = check_frame(_events(), "events", "synthetic")
    items = check_frame(pd.DataFrame({"item_id": sorted(set(events["item_id"]))}), "items", "synthetic")
    users = check_frame(pd.DataFrame({"user_id": ["u1", "u2", "u3"]}), "users", "synthetic")
    load_raw(RawDataset("synthetic", events, items, users, []), mysql_test_settings, "dbt-test")
    transform.run_dbt(mysql_test_settings, ["build"], {})
    return mysql_test_settings


def _frame(settings, sql: str) -> pd.DataFrame:
    with warehouse.connect(settings) as conn:
        return warehouse.read_frame(conn, sql)


def test_rejected_events_are_kept_with_their_reason(built):
    rejected = _frame(built, "SELECT source_row_id, reject_reason FROM stg_raw__rejected_events ORDER BY source_row_id")
    assert dict(zip(rejected["source_row_id"], rejected["reject_reason"])) == {
        11: "duplicate_event",
        18: "missing_user_id",
        19: "unparseable_event_time",
    }
    total = _frame(built, "SELECT (SELECT COUNT(*) FROM stg_raw__events) + (SELECT COUNT(*) FROM stg_raw__rejected_events) AS n")
    assert int(total["n"].iloc[0]) == len(_events())


def test_both_date_formats_parse_day_first(built):
    staged = _frame(built, "SELECT item_id, event_at FROM stg_raw__events WHERE user_id = 'u1' AND item_id IN ('p01', 'p02')")
    assert sorted(pd.to_datetime(staged["event_at"]).dt.strftime("%Y-%m-%d")) == ["2024-03-01", "2024-03-02"]


def test_fees_and_returns_are_not_interactions(built):
    interactions = _frame(built, "SELECT user_id, item_id FROM int_interactions")
    pairs = set(zip(interactions["user_id"], interactions["item_id"]))
    assert ("u1", "POST") not in pairs
    assert ("u2", "p03") not in pairs  # only a return
    assert {("u2", "p01"), ("u2", "p02")} <= pairs  # a view and a cart are positives
    flags = _frame(built, "SELECT DISTINCT item_id, is_product FROM stg_raw__events WHERE item_id IN ('POST', 'p01')")
    assert dict(zip(flags["item_id"], flags["is_product"].astype(int))) == {"POST": 0, "p01": 1}


def test_split_follows_the_protocol(built):
    split = _frame(built, "SELECT user_id, item_id, split, is_validation, item_rank FROM interactions_split ORDER BY user_id, item_rank")
    u1 = split[split["user_id"] == "u1"]
    # ten distinct items (the repeat of p03 collapses): floor(0.8 * 10) = 8 train, 2 test;
    # inside train floor(0.8 * 8) = 6 fit, 2 validation; order = first purchase time
    assert list(u1["item_id"]) == [f"p{d:02d}" for d in range(1, 11)]
    assert list(u1["split"]) == ["train"] * 8 + ["test"] * 2
    assert list(u1["is_validation"].astype(int)) == [0] * 6 + [1, 1] + [0, 0]
    u2 = split[split["user_id"] == "u2"]
    assert set(u2["split"]) == {"train"}  # fewer than five items: only trains


def test_user_features(built):
    features = _frame(built, "SELECT user_id, n_purchases, n_returns, n_views, n_carts, n_distinct_items, monetary FROM user_features").set_index("user_id")
    assert features.loc["u2", ["n_purchases", "n_returns", "n_views", "n_carts"]].astype(int).tolist() == [1, 1, 1, 1]
    assert int(features.loc["u1", "n_distinct_items"]) == 10
    assert float(features.loc["u1", "monetary"]) == pytest.approx(10 * 2 * 1.5 + 1.5)
