"""The quarantine: rows and files the pipeline refused, each with the rule and the reason.

Nothing refused is thrown away. Three places keep it, by where it was refused:

* a **file** that breaks the raw data contract (missing column, text in a numeric
  column, not UTF-8, empty) never reaches a table: one row here names the file, its
  size and sha256 and the reason; the file itself is left where it was;
* **rows** that fail the raw gate (Great Expectations on the staged load) are copied
  here whole, as JSON, with the suite and expectation that refused them; the staged
  tables stay as ``raw_*__rejected`` and the live raw tables are untouched;
* rows that a dbt **staging rule** drops (anonymous baskets, duplicates, implausible
  times) are listed with their reason in the dbt model ``stg_raw__rejected_events``.

One row per (load, table, row key, rule): re-running a load replaces its own rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from recsys_pipeline import warehouse
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

QUARANTINE_TABLE = "quarantine"
# at most this many rows are copied per failed rule (the count is always recorded)
MAX_ROWS_PER_RULE = 10_000
FILE_ROW_KEY = "(file)"
LOAD_ROW_KEY = "(load)"

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
  `load_id` VARCHAR(64) NOT NULL,
  `source_table` VARCHAR(64) NOT NULL,
  `row_key` VARCHAR(255) NOT NULL,
  `rule` VARCHAR(255) NOT NULL,
  `reason` TEXT NOT NULL,
  `row_data` LONGTEXT NULL,
  `quarantined_at` DATETIME NOT NULL,
  PRIMARY KEY (`load_id`, `source_table`, `row_key`, `rule`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


def _table(settings: MySQLSettings) -> str:
    return f"{warehouse.quote_identifier(settings.raw_database)}.`{QUARANTINE_TABLE}`"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def ensure_table(conn, settings: MySQLSettings) -> None:
    conn.cursor().execute(QUARANTINE_DDL.format(table=_table(settings)))


def quarantine_file(settings: MySQLSettings, load_id: str, source_table: str, path: Path | None, reason: str) -> None:
    """Record a file refused by the contract (by name, size and sha256; the file stays where it is)."""
    facts: dict = {"file": str(path) if path else None}
    if path is not None and path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        facts |= {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        ensure_table(conn, settings)
        conn.cursor().execute(
            f"REPLACE INTO {_table(settings)} VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (load_id, source_table, FILE_ROW_KEY, "contract", reason, json.dumps(facts), _now()),
        )
        conn.commit()
    log.warning("quarantined file %s for load %s: %s", path, load_id, reason)


def quarantine_rows(
    settings: MySQLSettings,
    load_id: str,
    source_table: str,
    staged_table: str,
    key_column: str,
    keys: list,
    rule: str,
    reason: str,
) -> int:
    """Copy the rows of ``staged_table`` (raw database) whose ``key_column`` is in ``keys`` into the quarantine.

    Each row is kept whole (every column, as a JSON object), so nothing of it is lost.
    Returns how many rows were copied.
    """
    keys = list(dict.fromkeys(keys))[:MAX_ROWS_PER_RULE]
    if not keys:
        return 0
    db = warehouse.quote_identifier(settings.raw_database)
    staged = f"{db}.{warehouse.quote_identifier(staged_table)}"
    key = warehouse.quote_identifier(key_column)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        ensure_table(conn, settings)
        cur = conn.cursor()
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (settings.raw_database, staged_table),
        )
        columns = [row[0] for row in cur.fetchall()]
        row_json = "JSON_OBJECT(" + ", ".join(f"'{c}', {warehouse.quote_identifier(c)}" for c in columns) + ")"
        copied = 0
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            cur.execute(
                f"INSERT IGNORE INTO {_table(settings)} "
                f"SELECT %s, %s, CAST({key} AS CHAR), %s, %s, {row_json}, %s FROM {staged} "
                f"WHERE {key} IN ({', '.join(['%s'] * len(chunk))})",
                [load_id, source_table, rule[:255], reason, _now(), *chunk],
            )
            copied += cur.rowcount
        conn.commit()
    return copied


def keys_from_query(settings: MySQLSettings, query: str, key_column: str) -> list:
    """The ``key_column`` values of the rows GX's ``unexpected_index_query`` selects (raw database)."""
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        frame = warehouse.read_frame(
            conn, f"SELECT `{key_column}` FROM ({query.rstrip().rstrip(';')}) AS unexpected LIMIT {MAX_ROWS_PER_RULE}"
        )
    return frame[key_column].tolist()


def quarantine_load(
    settings: MySQLSettings, load_id: str, source_table: str, rule: str, reason: str, rows: dict
) -> None:
    """Record a refusal of the whole load (volume, drift): the load itself is kept as ``raw_*__rejected``."""
    facts = {"kept_as": [f"{settings.raw_database}.raw_{entity}__rejected" for entity in rows], "rows": rows}
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        ensure_table(conn, settings)
        conn.cursor().execute(
            f"REPLACE INTO {_table(settings)} VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (load_id, source_table, LOAD_ROW_KEY, rule[:255], reason, json.dumps(facts), _now()),
        )
        conn.commit()


def clear_load(settings: MySQLSettings, load_id: str) -> None:
    """Forget what an earlier attempt of this load quarantined (a rerun records its own findings)."""
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        if warehouse.table_exists(conn, settings.raw_database, QUARANTINE_TABLE):
            conn.cursor().execute(f"DELETE FROM {_table(settings)} WHERE load_id = %s", (load_id,))
            conn.commit()


def rows_for_load(settings: MySQLSettings, load_id: str) -> list[dict]:
    """The quarantine's rows of one load (for the tests, the CLI and the README's examples)."""
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        if not warehouse.table_exists(conn, settings.raw_database, QUARANTINE_TABLE):
            return []
        cur = conn.cursor()
        cur.execute(
            f"SELECT source_table, row_key, rule, reason, row_data FROM {_table(settings)} "
            "WHERE load_id = %s ORDER BY source_table, rule, row_key",
            (load_id,),
        )
        return [
            {"source_table": t, "row_key": k, "rule": r, "reason": reason, "row": json.loads(d) if d else None}
            for t, k, r, reason, d in cur.fetchall()
        ]
