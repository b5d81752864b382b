"""Bulk loads into the real MariaDB: exact round trips, refused lossy loads, atomic swaps."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys_pipeline import warehouse
from recsys_pipeline.ingest.adapters import RawDataset
from recsys_pipeline.ingest.contract import check_frame
from recsys_pipeline.ingest.loader import load_raw

pytestmark = pytest.mark.integration

TRICKY_TITLES = [
    "tab\there",
    "new\nline and \r return",
    "back\\slash \\N not null",
    "quotes ' \" ; DROP TABLE raw_items; --",
    "unicode: café ☕ 日本",
    None,
]


def _dataset(n_events: int = 6, name: str = "tiny") -> RawDataset:
    events = pd.DataFrame(
        {
            "source_row_id": range(1, n_events + 1),
            "user_id": [f"u{i % 3}" for i in range(n_events)],
            "item_id": [f"i{i}" for i in range(n_events)],
            "event_type": "purchase",
            "quantity": 1.5,
            "price": 0.1,
            "event_time": "2024-01-02 03:04:05",
        }
    )
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(len(TRICKY_TITLES))], "title": TRICKY_TITLES})
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2"], "country": ["DE", None, "FR"]})
    return RawDataset(
        name, check_frame(events, "events", "t"), check_frame(items, "items", "t"), check_frame(users, "users", "t"), []
    )


def _titles(settings):
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        frame = warehouse.read_frame(conn, "SELECT item_id, title FROM raw_items ORDER BY item_id")
    titles = zip(frame["item_id"], frame["title"], strict=True)
    return {item: (None if pd.isna(title) else title) for item, title in titles}


def test_load_round_trips_text_exactly_and_is_idempotent(mysql_test_settings, tmp_path):
    dataset = _dataset()
    first = load_raw(dataset, mysql_test_settings, "load-1")
    second = load_raw(dataset, mysql_test_settings, "load-1")
    assert first.rows == second.rows == {"events": 6, "items": 6, "users": 3}
    titles = _titles(mysql_test_settings)
    assert [titles[f"i{i}"] for i in range(6)] == TRICKY_TITLES
    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        assert warehouse.scalar(conn, "SELECT COUNT(*) FROM raw_events") == 6
        assert warehouse.scalar(conn, "SELECT COUNT(*) FROM load_audit WHERE load_id = 'load-1'") == 1
        assert warehouse.scalar(conn, "SELECT SUM(quantity * price) FROM raw_events") == pytest.approx(0.9)


def test_ids_are_case_sensitive(mysql_test_settings):
    dataset = _dataset()
    dataset.items = check_frame(pd.DataFrame({"item_id": ["a1", "A1"], "title": ["lower", "upper"]}), "items", "t")
    load_raw(dataset, mysql_test_settings, "load-case")
    assert _titles(mysql_test_settings) == {"A1": "upper", "a1": "lower"}


def test_a_load_that_loses_rows_is_refused_and_the_live_tables_stay(mysql_test_settings):
    good = _dataset()
    load_raw(good, mysql_test_settings, "load-good")
    bad = _dataset(name="bad")
    # a value too long for the column: LOAD DATA would truncate it with a warning
    bad.users = pd.DataFrame({"user_id": ["u0"], "country": ["x" * 200], "attributes": [None]})
    with pytest.raises(warehouse.LoadError, match=r"raw_users__new produced warnings.*country"):
        load_raw(bad, mysql_test_settings, "load-bad")
    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        assert warehouse.scalar(conn, "SELECT COUNT(*) FROM raw_users") == 3
        assert warehouse.scalar(conn, "SELECT COUNT(*) FROM load_audit WHERE load_id = 'load-bad'") == 0


def test_swap_in_keeps_the_previous_table_for_rollback(mysql_test_settings):
    db = mysql_test_settings.database
    with warehouse.connect(mysql_test_settings) as conn:
        cur = conn.cursor()
        for version in (1, 2):
            cur.execute("DROP TABLE IF EXISTS swap_demo__new")
            cur.execute("CREATE TABLE swap_demo__new (v INT)")
            cur.execute("INSERT INTO swap_demo__new VALUES (%s)", (version,))
            conn.commit()
            warehouse.swap_in(conn, db, ["swap_demo"])
        assert warehouse.scalar(conn, "SELECT v FROM swap_demo") == 2
        assert warehouse.scalar(conn, "SELECT v FROM swap_demo__previous") == 1
        assert not warehouse.table_exists(conn, db, "swap_demo__new")


def test_identifiers_are_checked():
    with pytest.raises(ValueError, match="unsafe SQL identifier"):
        warehouse.quote_identifier("x`; DROP TABLE y")


def test_training_on_current_features_needs_a_checked_build_of_that_dataset(mysql_test_settings, tmp_path):
    """build_features off: only a load whose features passed the gate, and only for its own dataset."""
    from recsys_pipeline.features.builds import current_build, record_checked_build
    from recsys_pipeline.run import RunContext

    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        conn.cursor().execute("DROP TABLE IF EXISTS `checked_feature_builds`")
        conn.commit()
    load_raw(_dataset(), mysql_test_settings, "tiny:checked-build")
    with pytest.raises(
        warehouse.LoadError, match="no feature build that passed the features gate .live load tiny:checked-build"
    ):
        current_build(mysql_test_settings, "tiny")

    run = RunContext("tiny", "checked-build", work_root=tmp_path)
    record_checked_build(mysql_test_settings, run)
    assert current_build(mysql_test_settings, "tiny")["features_run_folder"] == str(run.folder)
    with pytest.raises(warehouse.LoadError, match="holds load tiny:checked-build, not a load of groceries"):
        current_build(mysql_test_settings, "groceries")

    load_raw(_dataset(4), mysql_test_settings, "tiny:unchecked")  # a newer load whose features were never checked
    with pytest.raises(warehouse.LoadError, match="live load tiny:unchecked"):
        current_build(mysql_test_settings, "tiny")


def test_read_frame_parses_times_as_mysqldb_would_and_leaves_the_connection_as_it_was(mysql_test_settings):
    import datetime as dt

    with warehouse.connect(mysql_test_settings) as conn:
        cur = conn.cursor()
        cur.execute("SET SESSION sql_mode = ''")  # lets the zero dates in, as an old table may hold them
        cur.execute("DROP TABLE IF EXISTS read_frame_times")
        cur.execute(
            "CREATE TABLE read_frame_times (at DATETIME, at_ms DATETIME(3), day DATE, stamp TIMESTAMP NULL, "
            "never DATETIME, label VARCHAR(10))"
        )
        cur.execute(
            "INSERT INTO read_frame_times VALUES "
            "('2024-03-01 09:15:00', '2024-03-01 09:15:00.123', '2024-03-01', '2024-03-01 09:15:00', NULL, 'a'), "
            "(NULL, NULL, NULL, NULL, NULL, NULL), "
            "('0000-00-00 00:00:00', '1999-12-31 23:59:59.999', '0000-00-00', NULL, NULL, 'c')"
        )
        sql = "SELECT at, at_ms, day, stamp, never, label, day AS day_again FROM read_frame_times ORDER BY label"
        cur.execute(sql)
        expected = pd.DataFrame(list(cur.fetchall()), columns=[d[0] for d in cur.description])  # MySQLdb's objects
        frame = warehouse.read_frame(conn, sql)
        pd.testing.assert_frame_equal(frame, expected)
        assert str(frame["at"].dtype).startswith("datetime64") and frame["at"].isna().sum() == 2
        assert frame["day"].tolist() == [None, dt.date(2024, 3, 1), None]  # NULL and the zero date
        assert frame["never"].tolist() == [None, None, None]
        cur.execute("SELECT at FROM read_frame_times WHERE label = 'a'")
        assert cur.fetchall() == ((dt.datetime(2024, 3, 1, 9, 15),),)  # the connection converts as before
        cur.execute("DROP TABLE read_frame_times")


def test_the_loaded_tables_have_fresh_statistics(mysql_test_settings):
    # InnoDB recounts a table's rows in the background 10 s or more after a bulk load; until then the
    # optimizer plans the gate's and dbt's queries on a stale count (here 32 of 40 rows). The loader recounts.
    load_raw(_dataset(40), mysql_test_settings, "load-stats")
    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        estimated = warehouse.scalar(
            conn,
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'raw_events'",
            (mysql_test_settings.raw_database,),
        )
    assert estimated == 40
