"""dbt's incremental models: an append-only load updates them in place, and the result
is exactly what a full rebuild gives; anything else makes the next build a full refresh.

Runs the real loader and dbt against MariaDB. The incremental path is where
dbt-mysql 1.7 goes wrong on MariaDB (its DELETE ... WHERE key IN (subquery) runs as
a dependent subquery), so the test also checks the project's join-based delete ran.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import warehouse
from recsys_pipeline.features import dbt
from recsys_pipeline.ingest.adapters import RawDataset
from recsys_pipeline.ingest.contract import check_frame
from recsys_pipeline.ingest.loader import load_raw
from recsys_pipeline.release.recommendations_table import ensure_recommendations_table

pytestmark = pytest.mark.integration

COMPARED = {
    "stg_raw__events": "source_row_id",
    "stg_raw__rejected_events": "source_row_id",
    "stg_item_kinds": "item_id",
    "int_interactions": "user_id, item_id",
    "int_interaction_days": "user_id, item_id, event_date",
    "int_user_activity": "user_id",
    "int_item_event_totals": "item_id",
    "int_item_price_lines": "item_id, price",
    "int_item_buyers": "user_id, item_id",
    "interactions_split": "user_id, item_id",
    "int_user_interaction_spans": "user_id",
    "interactions_time_split": "user_id, item_id",
    "user_top_categories": "user_id, category",
    "user_features": "user_id",
    "item_features": "item_id",
}
REBUILT_IN_FULL = {"item_features"}


def _events(n_rows: int = 400, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = np.sort(rng.integers(0, 120, n_rows))
    frame = pd.DataFrame(
        {
            "source_row_id": np.arange(1, n_rows + 1),
            "user_id": [f"u{u}" for u in rng.integers(0, 25, n_rows)],
            "item_id": [f"i{i}" for i in (rng.zipf(1.6, n_rows) % 60)],
            "event_type": rng.choice(
                ["view", "cart", "purchase", "rating", "return"], n_rows, p=[0.4, 0.2, 0.25, 0.1, 0.05]
            ),
            "quantity": rng.integers(1, 4, n_rows).astype(float),
            "price": rng.choice([1.25, 2.5, 9.99], n_rows),
            "event_time": [
                (pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(d), minutes=int(m))).strftime("%Y-%m-%d %H:%M:%S")
                for d, m in zip(days, rng.integers(0, 1440, n_rows), strict=True)
            ],
        }
    )
    # an item id outside Latin-1, which MariaDB's JSON_ARRAYAGG lost in an incremental plan
    frame["item_id"] = frame["item_id"].replace({"i5": "í5"})
    frame["event_value"] = np.where(frame["event_type"] == "rating", rng.integers(1, 6, n_rows), np.nan)
    # the rows after the first load's 300 come from ten of the 25 users: the other 15 get no new
    # interactions, so only a category, price band or user-row change can make an incremental
    # build redo their rows
    late = frame.index >= 300
    frame.loc[late, "user_id"] = [f"u{u}" for u in rng.integers(0, 10, int(late.sum()))]
    return frame


def _load(
    settings,
    events: pd.DataFrame,
    load_id: str,
    categories: dict[str, str] | None = None,
    countries: dict[str, str] | None = None,
) -> dict:
    events = check_frame(events, "events", "incremental-test")
    item_ids = sorted(set(events["item_id"]))
    items = pd.DataFrame({"item_id": item_ids, "category": [(categories or {}).get(i) for i in item_ids]})
    items = check_frame(items, "items", "incremental-test")
    user_ids = sorted(set(events["user_id"]))
    users = pd.DataFrame({"user_id": user_ids, "country": [(countries or {}).get(u) for u in user_ids]})
    users = check_frame(users, "users", "incremental-test")
    summary = load_raw(RawDataset("incremental-test", events, items, users, []), settings, load_id)
    ensure_recommendations_table(settings)
    return summary.to_dict()


def _tables(settings) -> dict[str, pd.DataFrame]:
    with warehouse.connect(settings) as conn:
        return {
            table: warehouse.read_frame(conn, f"SELECT * FROM {table} ORDER BY {order}")
            for table, order in COMPARED.items()
        }


def _last_dbt_log() -> str:
    """dbt.log of the last dbt command; dbt rotates dbt.log at 10 MB, possibly in the middle of
    that command, so the previous file is read too."""
    logs = dbt.log_dir()
    log = "".join(path.read_text() for path in (logs / "dbt.log.1", logs / "dbt.log") if path.exists())
    return log[log.rindex("Running with dbt=") :]


def _loaded_events(settings) -> pd.DataFrame:
    """The raw events as the last load left them, in the loader's input columns."""
    with warehouse.connect(settings) as conn:
        raw = warehouse.read_frame(conn, f"SELECT * FROM {settings.raw_database}.raw_events ORDER BY source_row_id")
    columns = ["source_row_id", "user_id", "item_id", "event_type", "event_value", "quantity", "price", "event_time"]
    return raw[columns]


@pytest.fixture(scope="module")
def grown(mysql_test_settings):
    """First load: 300 events, full build. Second load: the same 300 plus 100 more and a copy of
    an old event, with the catalogue's categories changed for two old items (one moves to
    another category, one loses its category)."""
    settings = mysql_test_settings
    events = _events()
    _load(settings, events.iloc[:300], "incremental-test:1", {"i1": "toys", "i2": "garden", "i3": "jardín"})
    dbt.build(settings, {}, full_refresh=True)
    copy_of_old = events.iloc[[5]].assign(source_row_id=len(events) + 1)  # an exact duplicate arriving late
    second = _load(
        settings,
        pd.concat([events, copy_of_old], ignore_index=True),
        "incremental-test:2",
        {"i1": "garden", "i3": "jardín"},
    )
    # a first try that stopped after staging and the models that add the new events' totals to
    # their own: the retry must not count those events twice
    dbt.run_dbt(settings, ["run", "--select", "+int_item_event_totals", "+int_item_price_lines"])
    plan = dbt.build(settings, {})
    return settings, second, plan


def test_an_append_only_load_builds_incrementally(grown):
    _, second, plan = grown
    assert second["append_only"] and second["new_events"] == 101 and second["changed_or_removed_events"] == 0
    assert not plan.full_refresh, plan.reason
    last_build = _last_dbt_log()
    # the project's join-based delete replaced dbt-mysql's `where key in (select ...)`
    assert "delete `" in last_build and re.search(r"stg_raw__events__dbt_tmp`\s+on `", last_build)
    # models keyed by their clustered primary key are updated in place; the per-user split
    # recomputed only the users with new interactions
    for model in ("int_interactions", "int_interaction_days", "int_user_activity", "interactions_split"):
        assert re.search(rf"{model}__dbt_tmp` as changed\s+on duplicate key update", last_build), model
    assert "interactions_split__touched_users" in last_build and "int_user_activity__touched_users" in last_build
    # the touched pairs and users come from the list of events staged since the last build
    assert re.search(r"from `\w+`\.`stg_raw__events__since_last_build`\s+where loaded_at", last_build)
    assert not re.search(r"in \(\s*select source_row_id", last_build)


def test_incremental_tables_equal_a_full_rebuild(grown):
    settings, _, _ = grown
    incremental = _tables(settings)
    rejected = incremental["stg_raw__rejected_events"]
    assert dict(zip(rejected["source_row_id"], rejected["reject_reason"], strict=True)) == {401: "duplicate_event"}
    dbt.build(settings, {}, full_refresh=True)
    rebuilt = _tables(settings)
    for table in COMPARED:
        # the incremental models to the bit (their sums are exact, in any row order); the marts
        # rebuilt in full by both builds add doubles in whatever order MariaDB's plan reads them
        exact = table not in REBUILT_IN_FULL
        pd.testing.assert_frame_equal(
            incremental[table], rebuilt[table], check_dtype=False, check_exact=exact, obj=table
        )


def test_a_rerun_with_no_new_rows_changes_nothing(grown):
    settings, _, _ = grown
    before = _tables(settings)
    plan = dbt.build(settings, {})
    assert not plan.full_refresh
    after = _tables(settings)
    for table in COMPARED:
        pd.testing.assert_frame_equal(before[table], after[table], check_dtype=False, obj=table)


def test_changed_rows_or_rules_force_a_full_refresh(grown):
    settings, _, _ = grown
    events = _events()
    assert not dbt.plan_build(settings, {}).full_refresh
    changed = events.copy()
    changed.loc[3, "quantity"] = 99.0  # an old row edited upstream
    summary = _load(settings, changed, "incremental-test:3")
    assert (
        not summary["append_only"] and summary["changed_or_removed_events"] == 2
    )  # the edit and the dropped late copy
    plan = dbt.plan_build(settings, {})
    assert plan.full_refresh and "changed or were removed" in plan.reason
    dbt.build(settings, {})
    staged = _tables(settings)["stg_raw__events"]
    assert float(staged.loc[staged["source_row_id"] == 4, "quantity"].iloc[0]) == 99.0
    other_rules = dbt.plan_build(settings, {"product_id_pattern": "^i[0-9]+$"})
    assert other_rules.full_refresh and "vars changed" in other_rules.reason


def test_a_category_shown_under_a_new_spelling_redoes_every_user(grown):
    """'jardin' and 'jardín' are one category in the column's collation; every user sees it
    under its lowest spelling in binary order, so a new item spelled 'jardin' changes the
    rows of users who never touched it (staging lower-cases, so 'Garden' cannot do this)."""
    settings, _, _ = grown
    events = _events()
    changed = events.copy()
    changed.loc[3, "quantity"] = 99.0  # as the previous test left the raw events
    later = events.iloc[[10, 20]].assign(source_row_id=[len(events) + 1, len(events) + 2])
    first = _load(
        settings, pd.concat([changed, later.iloc[:1]], ignore_index=True), "incremental-test:4", {"i3": "jardín"}
    )
    assert first["append_only"] and not dbt.build(settings, {}).full_refresh
    before = _tables(settings)["user_top_categories"]
    assert "jardín" in set(before["category"]) and "jardin" not in set(before["category"])
    categories = {"i3": "jardín", "i4": "jardin"}
    summary = _load(settings, pd.concat([changed, later], ignore_index=True), "incremental-test:5", categories)
    assert summary["append_only"]
    plan = dbt.build(settings, {})
    assert not plan.full_refresh, plan.reason
    incremental = _tables(settings)
    assert "jardín" not in set(incremental["user_top_categories"]["category"])
    dbt.build(settings, {}, full_refresh=True)
    rebuilt = _tables(settings)
    for table in ("user_top_categories", "stg_raw__rejected_events", "interactions_split"):
        pd.testing.assert_frame_equal(incremental[table], rebuilt[table], check_dtype=False, obj=table)


def test_a_shoppers_changed_row_reaches_their_profile(grown):
    """No new events, only a shopper's country spelled anew: 'uk' -> 'UK' are equal in the
    column's collation, and the profile must still show the new spelling."""
    settings, _, _ = grown
    events = _loaded_events(settings)
    categories = {"i3": "jardín", "i4": "jardin"}  # as the previous test left the catalogue
    for load_id, country in (("incremental-test:6", "uk"), ("incremental-test:7", "UK")):
        summary = _load(settings, events, load_id, categories, {"u11": country})
        assert summary["append_only"] and summary["new_events"] == 0
        assert not dbt.build(settings, {}).full_refresh
        profiles = _tables(settings)["user_features"].set_index("user_id")
        assert profiles.loc["u11", "country"] == country


def test_an_incremental_builds_tests_read_the_shoppers_it_changed(grown):
    """The row-local tests of the appended-to tables read the rows of shoppers with events
    since the last recorded build (macros/tests_on_changed_rows.sql): a bad row of such a
    shopper stops the build, even in a pair no new event touched; another shopper's rows are
    left to the build that tested them, by the generic tests and by the split's per-shopper
    singular tests alike. A full rebuild then tests every row."""
    settings, _, _ = grown
    events = _loaded_events(settings)
    categories = {"i3": "jardín", "i4": "jardin"}  # as the earlier tests left the catalogue
    untouched_pair = ("u20", sorted(events.loc[events["user_id"] == "u20", "item_id"])[0])
    changed_pair = ("u1", sorted(events.loc[events["user_id"] == "u1", "item_id"])[0])

    def corrupt(pair):
        with warehouse.connect(settings) as conn:
            cur = conn.cursor()
            cur.execute("UPDATE int_interactions SET last_loaded_at = NULL WHERE user_id = %s AND item_id = %s", pair)
            assert cur.rowcount == 1
            conn.commit()

    def one_more_event_of_u1(load_id, at):
        nonlocal events
        new_id = int(events["source_row_id"].max()) + 1
        new = events.iloc[[0]].assign(
            source_row_id=new_id, user_id="u1", item_id="i-new", event_type="view", event_time=at
        )
        events = pd.concat([events, new], ignore_index=True)
        assert _load(settings, events, load_id, categories)["new_events"] == 1

    corrupt(untouched_pair)
    with warehouse.connect(settings) as conn:  # and u20's split: test rows only (a per-shopper singular test)
        conn.cursor().execute("UPDATE interactions_split SET split = 'test' WHERE user_id = 'u20'")
        conn.commit()
    one_more_event_of_u1("incremental-test:8", "2024-06-01 10:00:00")
    assert not dbt.build(settings, {}).full_refresh  # u20 has no new event: the narrowed tests pass
    last_build = _last_dbt_log()
    assert re.search(r"not_null_int_interactions_last_loaded_at.*?stg_raw__events__since_last_build", last_build, re.S)
    assert re.search(r"assert_split_test_users_have_train.*?stg_raw__events__since_last_build", last_build, re.S)
    with pytest.raises(dbt.DbtError, match="not_null_int_interactions_last_loaded_at"):
        dbt.run_dbt(settings, ["test", "--select", "int_interactions"])  # a test run of its own reads every row
    with pytest.raises(dbt.DbtError, match="assert_split_test_users_have_train"):
        dbt.run_dbt(settings, ["test", "--select", "assert_split_test_users_have_train"])

    corrupt(changed_pair)  # u1's pair with the first item, which the next event does not touch
    one_more_event_of_u1("incremental-test:9", "2024-06-02 10:00:00")
    with pytest.raises(dbt.DbtError, match="not_null_int_interactions_last_loaded_at"):
        dbt.build(settings, {})
    dbt.build(settings, {}, full_refresh=True)  # rebuilt from the staged events: both rows whole again
    with warehouse.connect(settings) as conn:
        assert warehouse.query_one(conn, "SELECT COUNT(*) FROM int_interactions WHERE last_loaded_at IS NULL")[0] == 0
