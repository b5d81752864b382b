"""Load a mapped dataset into the raw MySQL tables, all or nothing.

Each load fills ``raw_events__new``, ``raw_items__new`` and ``raw_users__new``, checks
every row arrived without a warning, and only then swaps all three into place in one
``RENAME TABLE`` statement: dbt never reads a mix of two loads, a refused load leaves
the previous one untouched, and re-running a load gives the same tables (a full
snapshot, never appended twice). ``load_audit`` keeps one row per load id.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from recsys_pipeline import warehouse
from recsys_pipeline.ingest.adapters import RawDataset
from recsys_pipeline.ingest.contract import CONTRACT, create_table_sql
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

RAW_TABLES = {entity: f"raw_{entity}" for entity in CONTRACT}

AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS {db}.`load_audit` (
  `load_id` VARCHAR(64) NOT NULL PRIMARY KEY,
  `dataset` VARCHAR(255) NOT NULL,
  `data_version` CHAR(64) NOT NULL,
  `events` BIGINT NOT NULL,
  `items` BIGINT NOT NULL,
  `users` BIGINT NOT NULL,
  `seconds` DOUBLE NOT NULL,
  `loaded_at` DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""


@dataclass(frozen=True)
class LoadSummary:
    load_id: str
    dataset: str
    data_version: str
    rows: dict[str, int]
    seconds: float
    rows_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


def load_raw(dataset: RawDataset, settings: MySQLSettings, load_id: str) -> LoadSummary:
    """Replace the raw tables in ``settings.raw_database`` with ``dataset``.

    Raises warehouse.LoadError (naming the table) if any row was lost or coerced; the
    live raw tables are then exactly as before.
    """
    database = settings.raw_database
    db = warehouse.quote_identifier(database)
    loaded_at = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)
    started = time.perf_counter()
    data_version = dataset.fingerprint()
    frames = {"events": dataset.events, "items": dataset.items, "users": dataset.users}
    rows: dict[str, int] = {}
    with warehouse.connect(settings, database=database) as conn, tempfile.TemporaryDirectory() as tmp:
        cur = conn.cursor()
        for entity, frame in frames.items():
            new_table = f"{RAW_TABLES[entity]}__new"
            cur.execute(f"DROP TABLE IF EXISTS {db}.{warehouse.quote_identifier(new_table)}")
            cur.execute(create_table_sql(entity, f"{db}.{warehouse.quote_identifier(new_table)}"))
            stamped = frame.assign(load_id=load_id, loaded_at=loaded_at)
            rows[entity] = warehouse.load_frame(conn, f"{database}.{new_table}", stamped, Path(tmp))
            conn.commit()
            log.info("loaded %s rows into %s.%s", rows[entity], database, new_table)
        warehouse.swap_in(conn, database, list(RAW_TABLES.values()), keep_previous=False)
        seconds = time.perf_counter() - started
        cur.execute(AUDIT_DDL.format(db=db))
        cur.execute(
            f"REPLACE INTO {db}.`load_audit` VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (load_id, dataset.name, data_version, rows["events"], rows["items"], rows["users"], seconds, loaded_at),
        )
        conn.commit()
    total = sum(rows.values())
    return LoadSummary(load_id, dataset.name, data_version, rows, round(seconds, 3), round(total / max(seconds, 1e-9)))
