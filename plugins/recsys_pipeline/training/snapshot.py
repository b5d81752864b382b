"""The warehouse as one training run sees it: a snapshot of the split, taken once.

A feature build of another run may replace ``interactions_split`` while this run
trains and evaluates. Reading it once into the run folder means training, evaluation,
scoring and the backtest all see the same rows, and the run stops instead of training
on a build it was not asked to.
"""

from __future__ import annotations

import pandas as pd

from recsys_pipeline import warehouse
from recsys_pipeline.ingest import loader
from recsys_pipeline.quality.suites import DataQualityError
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.settings import MySQLSettings

ATTRIBUTE_COLUMNS = ["item_id", "category", "price_band", "title"]
SEGMENT_COLUMNS = ["user_id", "country"]


def snapshot_split(settings: MySQLSettings, artifacts: RunArtifacts, expected_load: tuple[str, str] | None = None):
    """Copy the split, the backtest's time split, the days each pair was had, the catalogue's attributes and
    the shoppers' segments into the run folder; the split as a frame.

    ``expected_load`` (load id, data version) is checked *after* the read: if the warehouse
    moved on to another load meanwhile, the run stops.
    """
    from ml.backtest import TIME_SPLIT_COLUMNS
    from ml.data import DAYS_COLUMNS, SPLIT_COLUMNS

    with warehouse.connect(settings) as conn:
        frame = warehouse.read_frame(
            conn, f"SELECT {', '.join(SPLIT_COLUMNS)}, first_event_at FROM `interactions_split`"
        )
        time_split = warehouse.read_frame(
            conn, f"SELECT {', '.join(TIME_SPLIT_COLUMNS)} FROM `interactions_time_split`"
        )
        days = warehouse.read_frame(conn, f"SELECT {', '.join(DAYS_COLUMNS)} FROM `int_interaction_days`")
    if frame.empty:
        raise DataQualityError("table interactions_split is empty: no interactions to train on")
    if expected_load is not None:
        live = loader.live_load(settings)
        if live != tuple(expected_load):
            raise warehouse.LoadError(
                f"interactions_split was read while the warehouse held load {live[0] if live else None}, not "
                f"{expected_load[0]} that this run was asked to train on: another feature build replaced it"
            )
    frame.to_parquet(artifacts.path(RunArtifacts.SPLIT), index=False)
    time_split.to_parquet(artifacts.path(RunArtifacts.TIME_SPLIT), index=False)
    days.to_parquet(artifacts.path(RunArtifacts.INTERACTION_DAYS), index=False)
    # for the item tower, the ranking stage and the diversity metric
    _mart_snapshot(settings, "item_features", ATTRIBUTE_COLUMNS).to_parquet(
        artifacts.path(RunArtifacts.ITEM_ATTRIBUTES), index=False
    )
    # for the user tower's segment and the segment's best-sellers
    _mart_snapshot(settings, "user_features", SEGMENT_COLUMNS).to_parquet(
        artifacts.path(RunArtifacts.USER_SEGMENTS), index=False
    )
    return frame


def _mart_snapshot(settings: MySQLSettings, table: str, columns: list[str]) -> pd.DataFrame:
    with warehouse.connect(settings) as conn:
        if not warehouse.table_exists(conn, settings.database, table):
            return pd.DataFrame(columns=columns)
        return warehouse.read_frame(conn, f"SELECT {', '.join(columns)} FROM {warehouse.quote_identifier(table)}")


def read_split(artifacts: RunArtifacts, repeats: bool = True):
    """The run's split snapshot as ``ml.data.InteractionData`` (``with_repeat_history`` unless ``repeats`` is
    false: building it took 3.7 s of ``score_users``' 10 s at 10M events, for a policy that may not read it)."""
    from ml.data import from_split_frame

    data = from_split_frame(pd.read_parquet(artifacts.path(RunArtifacts.SPLIT)))
    return with_repeat_history(artifacts, data) if repeats else data


def with_repeat_history(artifacts: RunArtifacts, data):
    """``data`` with ``all_repeats``: how often and how recently each shopper had each item, as of midnight
    after the newest event (what the tables' and the SavedModel's "buy again" read); unchanged for a run
    without the per-day snapshot."""
    import dataclasses

    from ml.data import repeat_history

    days = read_days(artifacts)
    if days is None or days.empty:
        return data
    end = pd.to_datetime(days["event_date"]).max() + pd.Timedelta(days=1)
    return dataclasses.replace(data, all_repeats=repeat_history(days, data.user_ids, data.item_ids, end))


def read_days(artifacts: RunArtifacts) -> pd.DataFrame | None:
    """The run's snapshot of ``int_interaction_days`` (None for a run that predates it)."""
    path = artifacts.path(RunArtifacts.INTERACTION_DAYS)
    return pd.read_parquet(path) if path.exists() else None


def read_catalogue(artifacts: RunArtifacts) -> pd.DataFrame:
    """The run's snapshot of the items' attributes (empty for a run that predates it)."""
    path = artifacts.path(RunArtifacts.ITEM_ATTRIBUTES)
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=ATTRIBUTE_COLUMNS)


def read_segments(artifacts: RunArtifacts) -> pd.DataFrame | None:
    """The run's snapshot of the shoppers' segments (None for a run that predates it)."""
    path = artifacts.path(RunArtifacts.USER_SEGMENTS)
    return pd.read_parquet(path) if path.exists() else None


def read_user_segments(artifacts: RunArtifacts, user_ids):
    """The run's shopper segments aligned with ``user_ids`` (``ml.user_segments.encode``)."""
    from ml.user_segments import encode

    segments = read_segments(artifacts)
    return encode(user_ids, segments if segments is not None else pd.DataFrame(columns=SEGMENT_COLUMNS))


def data_window(split: pd.DataFrame) -> dict:
    """First and last interaction time, users and items of each split: the model card's data window."""
    window = {}
    for name, rows in split.groupby("split"):
        window[str(name)] = {
            "first_event_at": str(rows["first_event_at"].min()),
            "last_event_at": str(rows["first_event_at"].max()),
            "interactions": int(len(rows)),
            "users": int(rows["user_id"].nunique()),
            "items": int(rows["item_id"].nunique()),
        }
    return window
