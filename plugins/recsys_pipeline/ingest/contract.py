"""The raw data contract: what every dataset is mapped onto before it enters MySQL.

Adapters (``adapters.py``) turn a source (Online Retail, groceries, a user's own
CSV/Parquet files) into three frames -- events, items, users -- with exactly these
columns. ``check_frame`` refuses a frame that does not fit, naming the file, column
and problem, before anything is written. Values are kept as close to the source as
possible (fees and anonymous baskets included; event times as their original text,
beside the UTC time parsed from it, ``event_times``): the cleaning rules live in dbt's
staging models, where analysts can read them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from recsys_pipeline.ingest.event_times import AmbiguousTimes, TimeFormat, parse_event_times

ID_MAX_LENGTH = 64
# what spreadsheets, R and pandas write for a missing number (text columns keep them: an id 'NA' is an id)
NUMBER_NULLS = ("NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "#N/A", "<NA>")
# Ids compare byte for byte: with the default case-insensitive collation 'A1' and 'a1'
# would silently become one item (and collide in primary keys).
_ID_SQL = f"VARCHAR({ID_MAX_LENGTH}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"


class ContractError(ValueError):
    """A source file does not fit the raw data contract.

    ``source`` is the file (or source name) and ``entity`` the contract table it was
    meant for, when known: the quarantine records the refused file under them.
    """

    def __init__(self, message: str, source: str | None = None, entity: str | None = None):
        super().__init__(message)
        self.source = source
        self.entity = entity


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "id", "text", "number", "time_text" (as written), "time" (parsed from the time_text column)
    required: bool
    sql_type: str
    description: str


EVENTS = (
    Column("source_row_id", "number", True, "BIGINT NOT NULL", "row number in the source file (1-based), for tracing"),
    Column("user_id", "id", True, _ID_SQL + " NULL", "who acted; NULL for anonymous baskets"),
    Column("item_id", "id", True, _ID_SQL + " NULL", "what the event is about"),
    Column("event_type", "text", True, "VARCHAR(32) NULL", "view, cart, purchase, return, rating, ..."),
    Column("event_value", "number", False, "DOUBLE NULL", "optional value, e.g. a rating"),
    Column("quantity", "number", False, "DOUBLE NULL", "units; negative for returns in some sources"),
    Column("price", "number", False, "DOUBLE NULL", "unit price in the shop's currency"),
    Column("event_time", "time_text", True, "VARCHAR(64) NULL", "event time as written in the source"),
    Column("event_at", "time", False, "DATETIME(3) NULL", "event time in UTC, parsed at load (NULL: unparseable)"),
    Column("basket_id", "id", False, _ID_SQL + " NULL", "invoice, order or session the event belongs to"),
)
ITEMS = (
    Column("item_id", "id", True, _ID_SQL + " NOT NULL", "item identifier"),
    Column("title", "text", False, "VARCHAR(512) NULL", "title or description"),
    Column("category", "text", False, "VARCHAR(255) NULL", "category or genres, '|'-separated"),
    Column("price", "number", False, "DOUBLE NULL", "list price"),
)
USERS = (
    Column("user_id", "id", True, _ID_SQL + " NOT NULL", "user identifier"),
    Column("country", "text", False, "VARCHAR(64) NULL", "country or region"),
    Column("attributes", "text", False, "TEXT NULL", "other attributes as a JSON object"),
)

CONTRACT = {"events": EVENTS, "items": ITEMS, "users": USERS}
PRIMARY_KEYS = {"events": "source_row_id", "items": "item_id", "users": "user_id"}


def create_table_sql(entity: str, qualified_table: str) -> str:
    """DDL of the raw table for ``entity`` (with load bookkeeping columns)."""
    columns = [f"`{c.name}` {c.sql_type}" for c in CONTRACT[entity]]
    columns += [
        "`row_hash` BIGINT UNSIGNED NOT NULL",  # digest of the contract values: finds unchanged rows
        "`load_id` VARCHAR(64) NOT NULL",
        "`loaded_at` DATETIME NOT NULL",
    ]
    columns.append(f"PRIMARY KEY (`{PRIMARY_KEYS[entity]}`)")
    return (
        f"CREATE TABLE {qualified_table} (\n  " + ",\n  ".join(columns) + "\n) "
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )


def add_loaded_at_index_sql(qualified_table: str) -> str:
    """DDL of the raw table's index on ``loaded_at``, added once the table is loaded.

    What arrived since a time: the incremental dbt models' new rows, ``plan_build``'s count of
    the rows a build saw, dbt's source freshness (a max). Without it each was a scan of the
    whole table (10M events: 3-8 s each, several per daily build). Built after the load, in
    one sorted pass: kept up row by row during ``LOAD DATA`` it cost the 10.5M-event load
    72.3 s against 52.8 s without it; added afterwards, 8 s.
    """
    return f"ALTER TABLE {qualified_table} ADD INDEX `loaded_at` (`loaded_at`)"


def _first_bad(frame: pd.DataFrame, mask: pd.Series, column: str, first_row: int = 0) -> str:
    position = int(mask.to_numpy().nonzero()[0][0])
    value = frame[column].iloc[position]
    value = value.item() if hasattr(value, "item") else value  # 1, not np.int64(1)
    return f"{int(mask.sum())} rows, first at data row {first_row + position + 1}: {value!r}"


def check_frame(
    frame: pd.DataFrame, entity: str, source: str, times: TimeFormat | None = None, first_row: int = 0
) -> pd.DataFrame:
    """``frame`` checked against the contract of ``entity`` (see ``_check_frame``); errors name ``source``.

    ``times`` is what the source declares about its event times (format, time zone);
    ``first_row`` is how many data rows of the file came before ``frame`` (a batch), so
    errors name the row in the file.
    """
    try:
        return _check_frame(frame, entity, source, times or TimeFormat(), first_row)
    except ContractError as error:
        error.source = error.source or source
        error.entity = error.entity or entity
        raise


def _check_frame(frame: pd.DataFrame, entity: str, source: str, times: TimeFormat, first_row: int) -> pd.DataFrame:
    """Return ``frame`` restricted to and ordered like the contract's columns, typed.

    Raises ContractError naming ``source``, the column and the problem when a required
    column is missing, a numeric column holds text, an id is too long, or the primary
    key repeats. Optional columns that are absent are added as NULL.
    """
    if entity not in CONTRACT:
        raise ValueError(f"unknown entity {entity!r}")
    key = PRIMARY_KEYS[entity]
    out = pd.DataFrame(index=frame.index)
    parsed_times = None
    for column in CONTRACT[entity]:
        if column.kind == "time":  # parsed from the time_text column before it
            out[column.name] = parsed_times
            continue
        if column.name not in frame.columns:
            if column.required:
                raise ContractError(
                    f"{source}: required column '{column.name}' ({column.description}) is missing; "
                    f"found columns {list(frame.columns)}"
                )
            out[column.name] = pd.Series(
                pd.NA, index=frame.index, dtype="Float64" if column.kind == "number" else "string"
            )
            continue
        values = frame[column.name]
        if column.kind == "number":
            if not pd.api.types.is_numeric_dtype(values):  # text: the empty markers exports write for a number
                values = values.mask(values.astype("string").str.strip().isin(NUMBER_NULLS))
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            if bad.any():
                raise ContractError(
                    f"{source}: column '{column.name}' must be numeric; "
                    f"{_first_bad(frame, bad, column.name, first_row)}"
                )
            out[column.name] = numbers
        elif column.kind == "time_text":
            try:
                out[column.name], parsed_times = parse_event_times(values, times)
            except AmbiguousTimes as error:
                raise ContractError(f"{source}: column '{column.name}': {error}") from error
        else:
            text = values.astype("string").str.strip()
            text = text.mask(text == "")
            if column.kind == "id":
                too_long = text.str.len() > ID_MAX_LENGTH
                if too_long.any():
                    raise ContractError(
                        f"{source}: column '{column.name}' holds ids longer than {ID_MAX_LENGTH} characters; "
                        f"{_first_bad(frame, too_long.fillna(False), column.name, first_row)}"
                    )
            out[column.name] = text
    if out[key].isna().any():
        raise ContractError(
            f"{source}: column '{key}' must not be empty; {_first_bad(out, out[key].isna(), key, first_row)}"
        )
    if entity == "events":
        fraction = out[key] % 1 != 0
        if fraction.any():
            raise ContractError(
                f"{source}: column '{key}' must hold whole numbers; {_first_bad(out, fraction, key, first_row)}"
            )
        out[key] = out[key].astype("int64")
    duplicated = out[key].duplicated()
    if duplicated.any():
        raise ContractError(f"{source}: column '{key}' must be unique; {_first_bad(out, duplicated, key, first_row)}")
    return out.reset_index(drop=True)


def max_unparseable_share() -> float:
    """The share of event times no format may read before a load is refused (the rest are quarantined)."""
    return float(os.environ.get("RECSYS_MAX_UNPARSEABLE_EVENT_TIME_SHARE", "0.01"))


class EventTimeTally:
    """Event times no format reads, counted over a file's batches: too many refuse the whole load.

    Below the share the rows are kept, and dbt's staging lists them as
    ``unparseable_event_time`` in ``stg_raw__rejected_events``; above it the format is
    wrong or undeclared, not a few rows.
    """

    def __init__(self, source: str):
        self.source, self.written, self.failed, self.examples = source, 0, 0, []

    def add(self, events: pd.DataFrame) -> None:
        written = events["event_time"].notna()
        failed = written & events["event_at"].isna()
        self.written += int(written.sum())
        self.failed += int(failed.sum())
        if len(self.examples) < 3 and failed.any():
            new = [v for v in pd.unique(events.loc[failed, "event_time"]) if v not in self.examples]
            self.examples += new[: 3 - len(self.examples)]

    def check(self) -> None:
        limit = max_unparseable_share()
        share = self.failed / max(self.written, 1)
        if share <= limit:
            return
        examples = ", ".join(repr(v) for v in self.examples)
        raise ContractError(
            f"{self.source}: column 'event_time': {share:.1%} of {self.written:,} values match no time format "
            f"(rule unparseable_event_time: at most {limit:.1%}, RECSYS_MAX_UNPARSEABLE_EVENT_TIME_SHARE), "
            f"e.g. {examples}; "
            'declare the format in the folder\'s contract.json, e.g. {"event_time": {"format": "%d.%m.%Y %H:%M"}}',
            self.source,
            "events",
        )
