"""The bad-input corpus: what the real pipeline stages do with each kind of broken load.

Every case starts from a real slice of Online Retail (20,000 events, mapped onto the
raw contract and written as the user's own files), breaks it one way, and runs the
stages the DAG runs -- ``stage`` (load_raw), ``validate_raw`` (the raw gate), and for
loads the gate admits, the dbt build and the features gate. Each case asserts one of:

* **refused** -- the contract or the raw gate stops the load with a message that
  names the suite or file, the rule, the table, the column and the observed value;
  the refused rows (or the file, or the whole load for volume and drift) are in the
  ``quarantine`` table with the rule; the live raw tables are exactly as before (the
  refused load is kept as ``raw_*__rejected``); nothing reaches dbt, so nothing can be
  trained or published (the DAG-level test checks the champion pointer);
* **handled** -- a staging rule (README, "Cleaning rules") deals with the rows: they
  are listed in ``stg_raw__rejected_events`` with the reason, or transformed as
  documented, never reach the training split, and the features gate passes.

All cases load a dataset called ``shop`` so that volume and drift compare with the
last good load of the same dataset.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import warehouse
from recsys_pipeline.ingest import loader, readers
from recsys_pipeline.ingest.adapters import online_retail
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.ingest.staging import stage
from recsys_pipeline.quality import quarantine, suites
from recsys_pipeline.quality.features_gate import check_quality
from recsys_pipeline.quality.raw_gate import validate_raw
from recsys_pipeline.run import RunContext

from pipeline_steps import build_features

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from write_bad_load import CONFUSABLE_IDS, SCRIPT_IDS, SHOP_FORMATS, unicode_ids, write_format

pytestmark = pytest.mark.integration

SAMPLE_EVENTS = 20_000
SQL_TITLE = "Robert'); DROP TABLE raw_items; -- \\\" 100% _off_ `x`"


@pytest.fixture(scope="module")
def retail(online_retail_path):
    """The first Online Retail events (by source row), their items and users: the good load."""
    raw = online_retail(online_retail_path)
    events = raw.events[raw.events["source_row_id"] <= SAMPLE_EVENTS].reset_index(drop=True)
    items = raw.items[raw.items["item_id"].isin(events["item_id"].dropna())].reset_index(drop=True)
    users = raw.users[raw.users["user_id"].isin(events["user_id"].dropna())].reset_index(drop=True)
    rest = raw.events[raw.events["source_row_id"] > SAMPLE_EVENTS].reset_index(drop=True)
    return {"events": events, "items": items, "users": users, "more_events": rest, "all_items": raw.items}


def write_shop(
    root: Path, events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, events_as_csv: bool = False
) -> Path:
    folder = root / "shop"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if events_as_csv:  # text in a number column only happens in text files
        events.to_csv(folder / "events.csv", index=False)
    else:
        events.to_parquet(folder / "events.parquet", index=False)
    items.to_parquet(folder / "items.parquet", index=False)
    users.to_parquet(folder / "users.parquet", index=False)
    return folder


def raw_state(settings) -> dict:
    """What the live raw tables hold (row counts and a checksum of the rows)."""
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        state = {}
        for table in loader.RAW_TABLES.values():
            if warehouse.table_exists(conn, settings.raw_database, table):
                cur = conn.cursor()
                cur.execute(f"CHECKSUM TABLE `{settings.raw_database}`.`{table}`")
                state[table] = (
                    warehouse.scalar(conn, f"SELECT COUNT(*) FROM `{settings.raw_database}`.`{table}`"),
                    cur.fetchone()[1],
                )
        return state


def admit(settings, root: Path, frames: dict, load_id: str) -> dict:
    folder = write_shop(root / load_id.replace(":", "_"), frames["events"], frames["items"], frames["users"])
    staged = stage(settings, str(folder), load_id)
    return validate_raw(settings, RunContext("shop", f"run-{load_id.replace(':', '_')}", work_root=root), staged)


@pytest.fixture(scope="module")
def baseline(mysql_test_settings, retail, tmp_path_factory):
    """A good load of ``shop``, admitted: the live raw tables and the last good profile."""
    root = tmp_path_factory.mktemp("baseline")
    admitted = admit(mysql_test_settings, root, retail, "shop:baseline")
    return admitted


def refuse(settings, root: Path, frames: dict, load_id: str) -> tuple[suites.DataQualityError, Path]:
    """Stage a bad load; assert the raw gate refuses it and changes nothing live. The error and the run folder."""
    before = raw_state(settings)
    folder = write_shop(root / "input", frames["events"], frames["items"], frames["users"])
    staged = stage(settings, str(folder), load_id)
    run = RunContext("shop", "run", work_root=root)
    run_folder = run.folder
    with pytest.raises(suites.DataQualityError) as refused:
        validate_raw(settings, run, staged)
    assert raw_state(settings) == before, "a refused load must leave the live raw tables as they were"
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        assert warehouse.table_exists(conn, settings.raw_database, "raw_events__rejected")
        assert warehouse.scalar(conn, f"SELECT COUNT(*) FROM `{settings.raw_database}`.`raw_events__rejected`") == len(
            frames["events"]
        )
        assert not warehouse.table_exists(conn, settings.raw_database, "raw_events__new")
    docs = run_folder / "data_docs" / "raw" / "index.html"
    assert docs.exists(), "Data Docs are built for a refused load too"
    return refused.value, run_folder


def contract_refusal(settings, folder: Path, load_id: str) -> ContractError:
    before = raw_state(settings)
    with pytest.raises(ContractError) as refused:
        stage(settings, str(folder), load_id)
    assert raw_state(settings) == before
    (row,) = [r for r in quarantine.rows_for_load(settings, load_id) if r["row_key"] == quarantine.FILE_ROW_KEY]
    assert row["rule"] == "contract" and row["reason"] == str(refused.value)
    if (folder / "events.csv").exists():
        assert row["row"]["sha256"] and row["row"]["bytes"] == (folder / "events.csv").stat().st_size
    return refused.value


# --- refused by the contract (load_raw) ----------------------------------------------------


def test_missing_column_is_refused_by_the_contract(mysql_test_settings, baseline, retail, tmp_path):
    folder = write_shop(tmp_path, retail["events"].drop(columns=["event_time"]), retail["items"], retail["users"])
    error = contract_refusal(mysql_test_settings, folder, "shop:missing-column")
    assert "required column 'event_time'" in str(error) and "events.parquet" in str(error)


def test_text_in_a_number_column_is_refused_by_the_contract(mysql_test_settings, baseline, retail, tmp_path):
    events = retail["events"].astype({"quantity": "object"})
    events.loc[7, "quantity"] = "a dozen"
    folder = write_shop(tmp_path, events, retail["items"], retail["users"], events_as_csv=True)
    error = contract_refusal(mysql_test_settings, folder, "shop:wrong-type")
    assert (
        "column 'quantity' must be numeric" in str(error) and "'a dozen'" in str(error) and "data row 8" in str(error)
    )


def test_dates_that_could_be_day_or_month_first_are_refused_until_the_folder_declares_them(
    mysql_test_settings, baseline, retail, tmp_path
):
    events = retail["events"].copy()
    events["event_time"] = pd.to_datetime(events["event_time"]).dt.strftime("%m/%d/%Y")
    events = events[events["event_time"].str[3:5].astype(int) <= 12]  # no day above 12 tells the order
    folder = write_shop(tmp_path, events, retail["items"], retail["users"], events_as_csv=True)
    error = str(contract_refusal(mysql_test_settings, folder, "shop:ambiguous"))
    first, second = events["event_time"].drop_duplicates().head(2)
    assert "events.csv" in error and "column 'event_time'" in error and f"{first!r}, {second!r}" in error
    assert 'contract.json: {"event_time": {"format": "day_first"}}' in error
    (folder / "contract.json").write_text('{"event_time": {"format": "month_first"}}')
    staged = stage(mysql_test_settings, str(folder), "shop:declared")
    assert staged["rows"]["events"] == len(events)


def test_times_that_mostly_fail_to_parse_refuse_the_load_with_the_share_and_examples(
    mysql_test_settings, baseline, retail, tmp_path
):
    events = retail["events"].copy()
    events.loc[events.index[:400], "event_time"] = "2011.12.01 at 08:26"  # 2% of the rows: a format never seen
    events.loc[events.index[400:405], "event_time"] = "soon"
    folder = write_shop(tmp_path, events, retail["items"], retail["users"])
    error = str(contract_refusal(mysql_test_settings, folder, "shop:unreadable-times"))
    assert "events.parquet: column 'event_time': 2.0% of 20,000 values match no time format" in error
    assert "rule unparseable_event_time: at most 1.0%" in error
    assert "'2011.12.01 at 08:26', 'soon'" in error and "contract.json" in error


def test_an_empty_file_is_refused_by_the_contract(mysql_test_settings, baseline, tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "events.csv").write_bytes(b"")
    error = contract_refusal(mysql_test_settings, folder, "shop:empty")
    assert "events.csv: the file is empty" in str(error)


def test_text_that_is_not_utf8_is_refused_by_the_contract(mysql_test_settings, baseline, retail, tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    sample = retail["events"].head(50).copy()
    sample.loc[3, "item_id"] = "CAFÉ"
    (folder / "events.csv").write_bytes(sample.to_csv(index=False).encode("latin-1"))
    error = contract_refusal(mysql_test_settings, folder, "shop:latin1")
    assert "not valid UTF-8" in str(error) and "at byte" in str(error)


# --- refused by the raw gate (validate_raw) ------------------------------------------------


def _quarantined(settings, load_id: str) -> list[dict]:
    return quarantine.rows_for_load(settings, load_id)


def test_an_event_type_never_seen_before_is_refused_and_its_rows_quarantined(
    mysql_test_settings, baseline, retail, tmp_path
):
    events = retail["events"].copy()
    teleports = events.index[:25]
    events.loc[teleports, "event_type"] = "teleport"
    error, _ = refuse(mysql_test_settings, tmp_path, retail | {"events": events}, "shop:teleport")
    message = str(error)
    assert "suite raw_events: expect_column_values_to_be_in_set failed on table" in message
    assert "raw_events__new, column event_type" in message and "25 unexpected rows" in message and "teleport" in message
    rows = [
        r
        for r in _quarantined(mysql_test_settings, "shop:teleport")
        if r["rule"].endswith("expect_column_values_to_be_in_set(event_type)")
    ]
    assert sorted(int(r["row_key"]) for r in rows) == sorted(events.loc[teleports, "source_row_id"].astype(int))
    assert all(r["row"]["event_type"] == "teleport" and r["source_table"] == "raw_events" for r in rows)


def test_unknown_item_ids_are_refused_and_their_rows_quarantined(mysql_test_settings, baseline, retail, tmp_path):
    events = retail["events"].copy()
    events.loc[[10, 11, 12], "item_id"] = ["NOPE-1", "NOPE-2", "NOPE-1"]
    error, _ = refuse(mysql_test_settings, tmp_path, retail | {"events": events}, "shop:unknown-items")
    assert "unexpected_rows_expectation failed on table" in str(error) and "raw_events__new, column item_id" in str(
        error
    )
    assert "every event's item is in the item catalogue" in str(error) and "NOPE-1" in str(error)
    rows = [r for r in _quarantined(mysql_test_settings, "shop:unknown-items") if "unexpected_rows" in r["rule"]]
    assert {r["row"]["item_id"] for r in rows} == {"NOPE-1", "NOPE-2"} and len(rows) == 3


def test_an_impossible_quantity_is_refused_and_its_row_quarantined(mysql_test_settings, baseline, retail, tmp_path):
    events = retail["events"].copy()
    events.loc[5, "quantity"] = 1e9
    error, _ = refuse(mysql_test_settings, tmp_path, retail | {"events": events}, "shop:huge-quantity")
    assert "expect_column_values_to_be_between failed on table" in str(error) and "column quantity" in str(error)
    assert "1000000000" in str(error)
    (row,) = [r for r in _quarantined(mysql_test_settings, "shop:huge-quantity") if "(quantity)" in r["rule"]]
    assert int(row["row_key"]) == int(events.loc[5, "source_row_id"]) and row["row"]["quantity"] == 1e9


def test_an_extreme_outlier_volume_is_refused_as_a_whole(mysql_test_settings, baseline, retail, tmp_path):
    """Twelve times the last good load's events: a replayed or looping feed."""
    events = pd.concat([retail["events"], retail["more_events"].head(11 * SAMPLE_EVENTS)], ignore_index=True)
    items = retail["all_items"][retail["all_items"]["item_id"].isin(events["item_id"].dropna())]
    users = pd.DataFrame({"user_id": events["user_id"].dropna().drop_duplicates().sort_values().to_numpy()})
    error, _ = refuse(
        mysql_test_settings, tmp_path, {"events": events, "items": items, "users": users}, "shop:outlier-volume"
    )
    assert "expect_table_row_count_to_be_between failed on table" in str(error) and f"observed {len(events)}" in str(
        error
    )
    assert f"'max_value': {10 * SAMPLE_EVENTS}" in str(error)
    (row,) = [
        r for r in _quarantined(mysql_test_settings, "shop:outlier-volume") if r["row_key"] == quarantine.LOAD_ROW_KEY
    ]
    assert row["row"]["rows"]["events"] == len(events) and "raw_events__rejected" in row["row"]["kept_as"][0]


def test_a_load_that_lost_most_of_its_rows_is_refused(mysql_test_settings, baseline, retail, tmp_path):
    events = retail["events"].head(SAMPLE_EVENTS // 5)
    frames = {"events": events, "items": retail["items"], "users": retail["users"]}
    error, _ = refuse(mysql_test_settings, tmp_path, frames, "shop:row-drop")
    assert "expect_table_row_count_to_be_between" in str(error) and f"'min_value': {SAMPLE_EVENTS // 2}" in str(error)


def test_a_drifted_event_type_mix_is_refused(mysql_test_settings, baseline, retail, tmp_path):
    """A tracking change: a third of the purchases arrive as cart events. Every row is valid."""
    events = retail["events"].copy()
    purchases = events.index[events["event_type"] == "purchase"]
    events.loc[purchases[::3], "event_type"] = "cart"
    error, _ = refuse(mysql_test_settings, tmp_path, retail | {"events": events}, "shop:drift")
    message = str(error)
    assert (
        "suite raw_events_drift: expect_column_max_to_be_between failed" in message
        and "column event_type_mix_linf" in message
    )
    observed = float(message.split("column event_type_mix_linf: observed ")[1].split(";")[0])
    assert 0.25 < observed < 0.40  # about a third of the events changed type
    (row,) = [r for r in _quarantined(mysql_test_settings, "shop:drift") if r["row_key"] == quarantine.LOAD_ROW_KEY]
    assert "event_type_mix_linf" in row["rule"]


# --- handled by staging rules (dbt), the run goes on ---------------------------------------


@pytest.fixture(scope="module")
def dirty_but_usable(mysql_test_settings, baseline, retail, tmp_path_factory):
    """One load with every kind of dirt that staging rules handle, built by dbt and checked by both gates."""
    root = tmp_path_factory.mktemp("dirty")
    events = retail["events"].copy()
    marked = {
        "null_user": events.index[100:110],
        "future": events.index[200:205],
        "ancient": events.index[300:305],
        "negative_quantity": events.index[(events["event_type"] == "purchase")][400:410],
        "unparseable": events.index[600:610],  # 0.05%: kept and listed, the load goes on
    }
    events.loc[marked["null_user"], "user_id"] = pd.NA
    events.loc[marked["future"], "event_time"] = "2099-01-01 10:00:00"
    events.loc[marked["ancient"], "event_time"] = "1901-01-01 10:00:00"
    events.loc[marked["negative_quantity"], "quantity"] = -3.0
    events.loc[marked["unparseable"], "event_time"] = "the day after tomorrow"
    copies = events.loc[events.index[500:520]].copy()
    copies["source_row_id"] = range(SAMPLE_EVENTS + 1, SAMPLE_EVENTS + 1 + len(copies))
    # the same shopper, item and time as another event but another quantity: not a copy, staged
    near_copies = events.loc[events.index[700:705]].copy()
    near_copies["quantity"] = near_copies["quantity"].fillna(1.0) + 1.0
    first_near = SAMPLE_EVENTS + 1 + len(copies)
    near_copies["source_row_id"] = range(first_near, first_near + len(near_copies))
    events = pd.concat([events, copies, near_copies], ignore_index=True)
    # ids in many scripts, and ids a case- or accent-insensitive collation would merge: kept exactly, apart
    events, items, users = unicode_ids(events, retail["items"], retail["users"])
    items.loc[0, "title"] = SQL_TITLE
    admitted = admit(mysql_test_settings, root, {"events": events, "items": items, "users": users}, "shop:dirty")
    run = RunContext("shop", "run", work_root=root)
    build_features(mysql_test_settings, run, admitted["dbt_vars"], full_refresh=True)
    checked = check_quality(mysql_test_settings, run)
    ids = {name: set(events.loc[index, "source_row_id"].astype(int)) for name, index in marked.items()}
    ids["duplicate"] = set(copies["source_row_id"].astype(int))
    ids["near_copy"] = set(near_copies["source_row_id"].astype(int))
    return {"ids": ids, "checked": checked, "item": items.loc[0, "item_id"], "run": run.folder}


def _rejected(settings, reason: str) -> set[int]:
    with warehouse.connect(settings) as conn:
        frame = warehouse.read_frame(
            conn, "SELECT source_row_id FROM stg_raw__rejected_events WHERE reject_reason = %s", (reason,)
        )
    return set(frame["source_row_id"].astype(int))


def _staged(settings, ids: set[int]) -> pd.DataFrame:
    with warehouse.connect(settings) as conn:
        frame = warehouse.read_frame(conn, "SELECT source_row_id, is_return FROM stg_raw__events")
    return frame[frame["source_row_id"].astype(int).isin(ids)]


def test_dirty_but_usable_load_passes_both_gates(dirty_but_usable):
    assert dirty_but_usable["checked"]["passed"] is True
    assert (dirty_but_usable["run"] / "data_docs" / "features" / "index.html").exists()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("null_user", "missing_user_id"),
        ("future", "implausible_event_time"),
        ("ancient", "implausible_event_time"),
        ("unparseable", "unparseable_event_time"),
        ("duplicate", "duplicate_event"),
    ],
)
def test_staging_quarantines_rows_with_the_reason(mysql_test_settings, dirty_but_usable, case, reason):
    ids = dirty_but_usable["ids"][case]
    assert ids <= _rejected(mysql_test_settings, reason)
    assert _staged(mysql_test_settings, ids).empty, "a rejected row never reaches the staged events (nor the split)"


def test_an_event_sharing_shopper_item_and_time_with_another_but_not_its_values_is_staged(
    mysql_test_settings, dirty_but_usable
):
    ids = dirty_but_usable["ids"]["near_copy"]
    assert len(_staged(mysql_test_settings, ids)) == len(ids) == 5, "only exact copies are duplicates"


def test_a_negative_quantity_is_a_return_not_a_purchase(mysql_test_settings, dirty_but_usable):
    ids = dirty_but_usable["ids"]["negative_quantity"]
    staged = _staged(mysql_test_settings, ids)
    assert len(staged) == len(ids) and set(staged["is_return"].astype(int)) == {1}


def test_ids_in_any_script_are_kept_exactly_and_apart_through_the_dbt_build(mysql_test_settings, dirty_but_usable):
    """Accents (composed and decomposed), case, CJK and emoji: utf8mb4 columns with a binary collation."""
    with warehouse.connect(mysql_test_settings) as conn:
        for table in ("stg_raw__events", "int_interactions", "interactions_split", "item_features"):
            items = warehouse.read_frame(conn, f"SELECT DISTINCT item_id FROM {table}")["item_id"].tolist()
            assert set(CONFUSABLE_IDS + SCRIPT_IDS) <= set(items), table
        users = set(warehouse.read_frame(conn, "SELECT DISTINCT user_id FROM int_interactions")["user_id"])
    assert {f"u-{i}" for i in SCRIPT_IDS} <= users


def test_a_title_with_sql_metacharacters_is_kept_verbatim(mysql_test_settings, dirty_but_usable):
    with warehouse.connect(mysql_test_settings) as conn:
        title = warehouse.query_one(
            conn, "SELECT title FROM stg_raw__items WHERE item_id = %s", (dirty_but_usable["item"],)
        )[0]
        assert warehouse.table_exists(conn, mysql_test_settings.raw_database, "raw_items")
    assert title == SQL_TITLE


# --- retries of the gate task ---------------------------------------------------------------


def test_a_retried_gate_after_the_swap_goes_on_and_a_cleared_gate_after_a_refusal_asks_for_a_new_load(
    mysql_test_settings, baseline, retail, tmp_path
):
    folder = write_shop(tmp_path / "good", retail["events"], retail["items"], retail["users"])
    staged = stage(mysql_test_settings, str(folder), "shop:retry")
    run = RunContext("shop", "run", work_root=tmp_path)
    first = validate_raw(mysql_test_settings, run, staged)
    again = validate_raw(mysql_test_settings, run, staged)  # the task retried after the swap
    assert again["dbt_plan"] == first["dbt_plan"] and again["rows"] == first["rows"]

    events = retail["events"].copy()
    events.loc[:2, "event_type"] = "teleport"
    refused = stage(
        mysql_test_settings,
        str(write_shop(tmp_path / "bad", events, retail["items"], retail["users"])),
        "shop:retry-bad",
    )
    bad_run = RunContext("shop", "run-bad", work_root=tmp_path)
    with pytest.raises(suites.DataQualityError):
        validate_raw(mysql_test_settings, bad_run, refused)
    with pytest.raises(warehouse.LoadError, match="run load_raw again"):
        validate_raw(mysql_test_settings, bad_run, refused)


# --- event times in every format shops export: typed at load ----------------------------------


def test_iso_8601_epoch_and_utc_suffixed_times_load_with_none_unparseable(mysql_test_settings, retail, tmp_path):
    """A shop exporting ISO 8601 (Z, offsets, fractions), epoch seconds and milliseconds, and '... UTC'."""
    events = retail["events"].copy()
    times = pd.to_datetime(events["event_time"]).dt.tz_localize("UTC")
    n = len(events)
    thirds = [events.index[: n // 3], events.index[n // 3 : 2 * n // 3], events.index[2 * n // 3 :]]
    written = pd.Series(index=events.index, dtype="string")
    written[thirds[0]] = times[thirds[0]].dt.tz_convert("Asia/Kolkata").map(lambda t: t.isoformat())  # +05:30
    written[thirds[0][::2]] = times[thirds[0][::2]].dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    seconds = (times[thirds[1]] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    written[thirds[1]] = seconds.astype(str)
    written[thirds[1][::2]] = (seconds[thirds[1][::2]] * 1000).astype(str)  # milliseconds
    written[thirds[2]] = times[thirds[2]].dt.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    events["event_time"] = written
    folder = write_shop(tmp_path, events.drop(columns=["event_at"]), retail["items"], retail["users"])
    admitted = admit(
        mysql_test_settings,
        tmp_path,
        {"events": events.drop(columns=["event_at"]), "items": retail["items"], "users": retail["users"]},
        "shop:iso-epoch-utc",
    )
    assert folder.exists() and admitted["rows"]["events"] == n
    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        raw = warehouse.read_frame(conn, "SELECT source_row_id, event_time, event_at FROM raw_events")
    raw = raw.set_index("source_row_id").sort_index()
    expected = times.dt.tz_convert(None).set_axis(events["source_row_id"]).sort_index()
    assert raw["event_at"].notna().all()
    assert (pd.to_datetime(raw["event_at"]).to_numpy() == expected.to_numpy()).all()
    assert raw["event_time"].str.endswith(" UTC").sum() == len(thirds[2])  # the text as written is kept
    run = RunContext("shop", "iso-epoch-utc", work_root=tmp_path)
    build_features(mysql_test_settings, run, admitted["dbt_vars"], full_refresh=True)
    assert _rejected(mysql_test_settings, "unparseable_event_time") == set()


# --- what a real shop sends: loaded exactly, in batches, or refused naming file, column and rule ---


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of a few thousand rows: the 20,000-event slice is read, checked and loaded in several."""
    monkeypatch.setattr(readers, "BATCH_ROWS", 1_500)
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1 << 17)


def _raw_table(settings, table: str, order: str) -> pd.DataFrame:
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        return warehouse.read_frame(conn, f"SELECT * FROM `{table}` ORDER BY `{order}`")


def _same(loaded: pd.Series, expected: pd.Series) -> bool:
    loaded, expected = loaded.reset_index(drop=True), expected.reset_index(drop=True)
    both_null = loaded.isna() & expected.isna()
    if pd.api.types.is_numeric_dtype(expected):
        close = np.isclose(loaded.astype(float), expected.astype(float), rtol=0, atol=1e-9)
        return bool((both_null | close).all())
    return bool((both_null | (loaded.astype(object) == expected.astype(object))).all())


LOADED_FORMATS = [kind for kind, (outcome, _) in SHOP_FORMATS.items() if outcome == "loaded"]


@pytest.mark.parametrize("kind", LOADED_FORMATS)
def test_a_real_shops_format_is_loaded_exactly_in_batches(
    mysql_test_settings, baseline, retail, tmp_path, small_batches, kind
):
    written = write_format(kind, retail["events"], retail["items"], retail["users"], tmp_path / "shop")
    staged = stage(mysql_test_settings, str(tmp_path / "shop"), f"shop:format-{kind}")
    expected = written["events"].sort_values("source_row_id").reset_index(drop=True)
    assert staged["rows"]["events"] == len(expected) == SAMPLE_EVENTS, "no row lost"
    events = _raw_table(mysql_test_settings, "raw_events__new", "source_row_id")
    columns = ["source_row_id", "user_id", "item_id", "event_type", "quantity", "price", "basket_id"]
    columns += [] if kind == "typed-parquet" else ["event_time"]  # a Parquet timestamp has no text as written
    for column in columns:
        assert _same(events[column], expected[column]), f"{kind}: column {column} changed on the way in"
    reference = retail["events"].sort_values("source_row_id")["event_at"]
    assert _same(pd.to_datetime(events["event_at"]), reference), f"{kind}: event times read differently"
    items = _raw_table(mysql_test_settings, "raw_items__new", "item_id").set_index("item_id")
    written_items = written["items"].set_index("item_id")
    assert len(items) == len(written_items) and _same(items.loc[written_items.index, "title"], written_items["title"])
    users = _raw_table(mysql_test_settings, "raw_users__new", "user_id")
    assert set(users["user_id"]) == set(written["users"]["user_id"])


REFUSALS = {
    "semicolon-undeclared": ["events.csv: the header 'source_row_id;user_id;", "seems separated by ';', not ','"],
    "long-ids": ["events.csv: column 'item_id' holds ids longer than 64 characters", "first at data row 8"],
    "ragged-row": ["events.csv: a row does not fit the header", "Expected 9 columns, got 10", "is quoted"],
    "duplicate-rows-ids": ["events.csv: column 'source_row_id' must be unique", "Duplicate entry '1'"],
    "gzip-bomb": ["events.csv.gz: expands to more than RECSYS_MAX_INPUT_DECOMPRESSED_BYTES (5,000,000 bytes)"],
}


def test_every_refused_format_of_the_corpus_is_tested():
    assert set(REFUSALS) == {kind for kind, (outcome, _) in SHOP_FORMATS.items() if outcome == "refused"}


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_real_shops_format_the_contract_cannot_read_is_refused_naming_file_column_and_rule(
    mysql_test_settings, baseline, retail, tmp_path, small_batches, monkeypatch, kind
):
    monkeypatch.setenv("RECSYS_MAX_INPUT_DECOMPRESSED_BYTES", "5000000")
    folder = tmp_path / "shop"
    write_format(kind, retail["events"], retail["items"], retail["users"], folder)
    error = str(contract_refusal(mysql_test_settings, folder, f"shop:refused-{kind}"))
    for part in REFUSALS[kind]:
        assert part in error, f"{part!r} not in {error!r}"
    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        assert not warehouse.table_exists(conn, mysql_test_settings.raw_database, "raw_events__new"), (
            "a load refused half-way leaves nothing staged"
        )


def test_a_folder_outside_the_allowed_folders_or_behind_a_link_is_refused(
    mysql_test_settings, baseline, retail, tmp_path, monkeypatch
):
    monkeypatch.setenv("RECSYS_DATASET_DIRS", str(tmp_path / "uploads"))
    (tmp_path / "uploads").mkdir()
    outside = write_shop(tmp_path / "elsewhere", retail["events"], retail["items"], retail["users"])
    error = str(contract_refusal(mysql_test_settings, outside, "shop:outside"))
    assert str(outside) in error and "RECSYS_DATASET_DIRS" in error and "RECSYS_DATA_DIR" in error
    (tmp_path / "uploads" / "shop").symlink_to(outside, target_is_directory=True)
    error = str(contract_refusal(mysql_test_settings, tmp_path / "uploads" / "shop", "shop:linked"))
    assert "is a symbolic link; links are refused" in error


def test_an_unchanged_reload_in_batches_keeps_every_rows_stamp(mysql_test_settings, retail, tmp_path, small_batches):
    """Rows that did not change keep load_id and loaded_at, batch after batch (the incremental build's input)."""
    events = retail["events"].copy()
    events.loc[events.index[-10:], "quantity"] = 99.0  # ten rows differ from any earlier load
    folder = write_shop(tmp_path, events, retail["items"], retail["users"], events_as_csv=True)
    first = admit_folder(mysql_test_settings, folder, "shop:stamps-1", tmp_path)
    assert first["new_events"] >= 10
    stamps = ["source_row_id", "load_id", "loaded_at"]
    live = _raw_table(mysql_test_settings, "raw_events", "source_row_id")[stamps]
    assert "shop:stamps-1" in set(live["load_id"])
    again = stage(mysql_test_settings, str(folder), "shop:stamps-2")
    assert again["new_events"] == 0 and again["changed_or_removed_events"] == 0 and again["append_only"]
    staged = _raw_table(mysql_test_settings, "raw_events__new", "source_row_id")[
        ["source_row_id", "load_id", "loaded_at"]
    ]
    pd.testing.assert_frame_equal(staged, live)


def admit_folder(settings, folder: Path, load_id: str, root: Path) -> dict:
    staged = stage(settings, str(folder), load_id)
    return validate_raw(settings, RunContext("shop", f"run-{load_id.replace(':', '_')}", work_root=root), staged)
