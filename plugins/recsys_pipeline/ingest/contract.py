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

from dataclasses import dataclass

import pandas as pd

from recsys_pipeline.ingest.event_times import AmbiguousTimes, TimeFormat, parse_event_times

ID_MAX_LENGTH = 64
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


def _first_bad(frame: pd.DataFrame, mask: pd.Series, column: str) -> str:
    position = int(mask.to_numpy().nonzero()[0][0])
    return f"{int(mask.sum())} rows, first at data row {position + 1}: {frame[column].iloc[position]!r}"


def check_frame(frame: pd.DataFrame, entity: str, source: str, times: TimeFormat | None = None) -> pd.DataFrame:
    """``frame`` checked against the contract of ``entity`` (see ``_check_frame``); errors name ``source``.

    ``times`` is what the source declares about its event times (format, time zone).
    """
    try:
        return _check_frame(frame, entity, source, times or TimeFormat())
    except ContractError as error:
        error.source = error.source or source
        error.entity = error.entity or entity
        raise


def _check_frame(frame: pd.DataFrame, entity: str, source: str, times: TimeFormat) -> pd.DataFrame:
    """Return ``frame`` restricted to and ordered like the contract's columns, typed.

    Raises ContractError naming ``source``, the column and the problem when a required
    column is missing, a numeric column holds text, an id is too long, or the primary
    key repeats. Optional columns that are absent are added as NULL.
    """
    if entity not in CONTRACT:
        raise ValueError(f"unknown entity {entity!r}")
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
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            if bad.any():
                raise ContractError(
                    f"{source}: column '{column.name}' must be numeric; {_first_bad(frame, bad, column.name)}"
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
                        f"{_first_bad(frame, too_long.fillna(False), column.name)}"
                    )
            out[column.name] = text
    key = PRIMARY_KEYS[entity]
    if out[key].isna().any():
        raise ContractError(f"{source}: column '{key}' must not be empty; {_first_bad(out, out[key].isna(), key)}")
    duplicated = out[key].duplicated()
    if duplicated.any():
        raise ContractError(f"{source}: column '{key}' must be unique; {_first_bad(out, duplicated, key)}")
    return out.reset_index(drop=True)
