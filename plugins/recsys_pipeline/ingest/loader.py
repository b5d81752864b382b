"""Load a mapped dataset into the raw MySQL tables, all or nothing.

Each load fills ``raw_events__new``, ``raw_items__new`` and ``raw_users__new`` and checks
every row arrived without a warning (``stage_raw``). The raw gate then checks the staged
tables; only a load that passes is swapped into place, all three tables in one
``RENAME TABLE`` statement (``admit_staged``): dbt never reads a mix of two loads, a
refused load leaves the previous one untouched (it is kept as ``raw_*__rejected``), and
re-running a load gives the same tables (a full snapshot, never appended twice).
``load_audit`` keeps one row per admitted load id.

A row that is identical to the live table's row with the same key keeps that row's
``load_id`` and ``loaded_at``: ``loaded_at`` says when the row first arrived, so the
dbt source freshness check measures when new data last came in, and dbt's
incremental models pick up only the rows of this load. The summary says whether
the events grew append-only (every live row still there, unchanged); when not,
the incremental models must be rebuilt in full (``needs_full_refresh``).
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_pipeline import warehouse
from recsys_pipeline.ingest import online_events
from recsys_pipeline.ingest.adapters import FolderDataset, RawDataset
from recsys_pipeline.ingest.contract import (
    CONTRACT,
    PRIMARY_KEYS,
    ContractError,
    add_loaded_at_index_sql,
    create_table_sql,
)
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

RAW_TABLES = {entity: f"raw_{entity}" for entity in CONTRACT}
# a load is staged here first; only a load that passes the raw gate replaces RAW_TABLES
STAGED_TABLES = {entity: f"raw_{entity}__new" for entity in CONTRACT}

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
    # events whose content is new in this load (all of them on a first load)
    new_events: int
    # live events that this load changed or dropped: > 0 means the raw data did not just grow
    changed_or_removed_events: int

    @property
    def append_only(self) -> bool:
        return self.changed_or_removed_events == 0

    def to_dict(self) -> dict:
        return asdict(self) | {"append_only": self.append_only}


def row_hashes(frame: pd.DataFrame, entity: str) -> pd.Series:
    """A 64-bit digest of each row's contract values (the same values give the same digest).

    Numbers are hashed as floats (the key as an integer): one batch of a file may read a
    column as integers and the next as decimals, and the same value must give the same digest.
    """
    values = frame[[c.name for c in CONTRACT[entity]]].copy()
    for column in CONTRACT[entity]:
        if column.kind == "number" and column.name != PRIMARY_KEYS[entity]:
            values[column.name] = values[column.name].to_numpy(dtype="float64", na_value=np.nan)
    return pd.util.hash_pandas_object(values, index=False).astype("uint64")


class LiveStamps:
    """Which rows of a load are unchanged from the live table, batch by batch.

    A row whose key and digest match a row of the live table keeps that row's
    ``load_id`` and ``loaded_at``; the others get this load's. Each batch looks up only
    its own keys in the live table (events: a range of ``source_row_id``), so a large
    table is never read whole. Matching happens here rather than with an UPDATE in
    MySQL, which rewrote every row and was an order of magnitude slower.
    """

    IN_LIST = 20_000  # keys per lookup when a batch's keys are not one dense range

    def __init__(self, conn, database: str, entity: str, load_id: str, loaded_at: datetime):
        self.conn, self.entity, self.load_id, self.loaded_at = conn, entity, load_id, pd.Timestamp(loaded_at)
        self.key = PRIMARY_KEYS[entity]
        self.table = f"{warehouse.quote_identifier(database)}.{warehouse.quote_identifier(RAW_TABLES[entity])}"
        has_live = warehouse.table_exists(conn, database, RAW_TABLES[entity]) and warehouse.column_exists(
            conn, database, RAW_TABLES[entity], "row_hash"
        )
        self.live_rows = int(warehouse.scalar(conn, f"SELECT COUNT(*) FROM {self.table}")) if has_live else 0
        self.rows = self.unchanged = 0

    @property
    def fresh(self) -> int:
        """Rows new or changed in this load."""
        return self.rows - self.unchanged

    @property
    def gone(self) -> int:
        """Live rows this load changed or removed."""
        return self.live_rows - self.unchanged

    def stamp(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with its bookkeeping columns: row_hash, and the load stamps."""
        stamped = frame.assign(row_hash=row_hashes(frame, self.entity), load_id=self.load_id, loaded_at=self.loaded_at)
        self.rows += len(stamped)
        live = self._live(stamped[self.key])
        if live.empty:
            return stamped
        live = live.astype({"row_hash": "uint64", self.key: stamped[self.key].dtype})
        kept = stamped[[self.key, "row_hash"]].merge(live, on=[self.key, "row_hash"], how="left", validate="one_to_one")
        unchanged = kept["load_id"].notna().to_numpy()
        stamped.loc[unchanged, "load_id"] = kept.loc[unchanged, "load_id"].to_numpy()
        stamped.loc[unchanged, "loaded_at"] = pd.to_datetime(kept.loc[unchanged, "loaded_at"]).to_numpy()
        self.unchanged += int(unchanged.sum())
        return stamped

    def _live(self, keys: pd.Series) -> pd.DataFrame:
        columns = ["row_hash", "load_id", "loaded_at"]
        if not self.live_rows or keys.empty:
            return pd.DataFrame(columns=[self.key, *columns])
        select = f"SELECT `{self.key}`, {', '.join(f'`{c}`' for c in columns)} FROM {self.table} WHERE `{self.key}` "
        if pd.api.types.is_integer_dtype(keys) and int(keys.max()) - int(keys.min()) < 4 * len(keys):
            return warehouse.read_frame(self.conn, select + "BETWEEN %s AND %s", (int(keys.min()), int(keys.max())))
        values = keys.tolist()
        parts = [
            warehouse.read_frame(self.conn, select + f"IN ({', '.join(['%s'] * len(chunk))})", [*chunk])
            for chunk in (values[i : i + self.IN_LIST] for i in range(0, len(values), self.IN_LIST))
        ]
        return pd.concat(parts, ignore_index=True)


def stage_raw(
    dataset: RawDataset | FolderDataset, settings: MySQLSettings, load_id: str, online_key: str | None = None
) -> LoadSummary:
    """Load ``dataset`` into ``raw_events__new``, ``raw_items__new`` and ``raw_users__new``, batch by batch.

    ``online_key``: the dataset key whose events posted to ``recsys serve`` load after the
    files' (``online_events``), so the next model trains on them.

    The live raw tables are not touched: the raw gate checks the staged tables, then
    ``admit_staged`` swaps them in or ``reject_staged`` sets them aside. A file that breaks
    the contract in any batch raises ContractError and the staged tables are dropped; so
    does warehouse.LoadError (naming the table) if any row was lost or coerced.
    """
    database = settings.raw_database
    db = warehouse.quote_identifier(database)
    loaded_at = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    started = time.perf_counter()
    data_version = dataset.fingerprint()
    if online_key is not None:  # events posted to the real-time service for this dataset load with its files
        data_version = online_events.data_version(data_version, online_events.watermark(settings, online_key))
    rows: dict[str, int] = {}
    new_events, changed_or_removed = 0, 0
    try:
        with (
            warehouse.connect(settings, database=database, load_files=True) as conn,
            warehouse.connect(settings, database=database) as lookups,
            tempfile.TemporaryDirectory() as tmp,
            BackgroundLoads(conn, Path(tmp)) as loads,  # exits first: no load outlives its connection
        ):
            cur = conn.cursor()
            for entity in CONTRACT:
                new_table = STAGED_TABLES[entity]
                cur.execute(f"DROP TABLE IF EXISTS {db}.{warehouse.quote_identifier(new_table)}")
                cur.execute(create_table_sql(entity, f"{db}.{warehouse.quote_identifier(new_table)}"))
                # the live rows are read on a connection of their own while `conn` loads the previous batch
                stamps = LiveStamps(lookups, database, entity, load_id, loaded_at)
                source = dataset.source_of(entity)
                frames = dataset.stream(entity)
                if entity == "events" and online_key is not None:
                    frames = itertools.chain(frames, online_events.stream(settings, online_key))
                for frame in frames:
                    loads.submit(f"{database}.{new_table}", stamps.stamp(frame), source, entity)
                rows[entity] = loads.finish()
                cur.execute(add_loaded_at_index_sql(f"{db}.{warehouse.quote_identifier(new_table)}"))
                # InnoDB recounts a bulk-loaded table's rows in the background, 10 s or more later; until then its
                # statistics say it is (nearly) empty (measured: 0 of 1M rows), and the gate's and dbt's queries,
                # which start within seconds, are planned on that. ANALYZE samples a few pages per index.
                cur.execute(f"ANALYZE TABLE {db}.{warehouse.quote_identifier(new_table)}")
                cur.fetchall()
                log.info(
                    "staged %s rows in %s.%s: %s new or changed, %s live rows changed or removed",
                    rows[entity],
                    database,
                    new_table,
                    stamps.fresh,
                    stamps.gone,
                )
                if entity == "events":
                    new_events, changed_or_removed = stamps.fresh, stamps.gone
    except (ContractError, warehouse.LoadError):
        drop_staged(settings)  # nothing half-loaded waits for the gate
        raise
    seconds = time.perf_counter() - started
    total = sum(rows.values())
    return LoadSummary(
        load_id,
        dataset.name,
        data_version,
        rows,
        round(seconds, 3),
        round(total / max(seconds, 1e-9)),
        new_events=new_events,
        changed_or_removed_events=changed_or_removed,
    )


class BackgroundLoads:
    """Each batch's LOAD DATA on a thread of its own, while the next batch is read, checked and written.

    A batch's two halves need two cores: pandas reading, checking, hashing and writing its
    file in this process, and the server running LOAD DATA (mysqlclient releases the GIL while
    the statement runs). One after the other, each waited for the other half. One load at most
    is in flight, so memory and the temporary files stay at two batches, and rows reach the
    table in the files' order. A failed load raises from the next ``submit`` or ``finish``.
    """

    def __init__(self, conn, tmp: Path):
        self.conn, self.tmp = conn, tmp
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="load-data")
        self.pending: Future | None = None
        self.batches = self.rows = 0

    def __enter__(self) -> BackgroundLoads:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)  # a load in flight ends before its connection closes

    def submit(self, table: str, frame: pd.DataFrame, source: str, entity: str) -> None:
        """Write ``frame``'s file (while the previous batch loads), then queue its load and commit."""
        path = self.tmp / f"batch-{self.batches % 2}.tsv"  # the other file is the batch loading now
        self.batches += 1
        warehouse.write_load_file(frame, path)
        self._wait()
        columns = list(frame.columns)
        self.pending = self.pool.submit(_load_batch, self.conn, table, path, columns, len(frame), source, entity)

    def finish(self) -> int:
        """Wait for the last batch; the rows loaded since the previous ``finish``."""
        self._wait()
        rows, self.rows = self.rows, 0
        return rows

    def _wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            self.rows += pending.result()


def _load_batch(conn, table: str, path: Path, columns: list[str], rows: int, source: str, entity: str) -> int:
    """One batch's file into the staged table, committed; a key repeated across batches is the contract's error,
    not MySQL's."""
    try:
        loaded = warehouse.load_file(conn, table, path, columns, rows)
    except warehouse.LoadError as error:
        if "1062" not in str(error):  # ER_DUP_ENTRY: the primary key already holds a row of an earlier batch
            raise
        raise ContractError(
            f"{source}: column '{PRIMARY_KEYS[entity]}' must be unique; a value repeats: {error}", source, entity
        ) from error
    conn.commit()
    return loaded


def drop_staged(settings: MySQLSettings) -> None:
    """Drop whatever a failed load left in ``raw_*__new``."""
    database = settings.raw_database
    with warehouse.connect(settings, database=database) as conn:
        for table in STAGED_TABLES.values():
            conn.cursor().execute(
                f"DROP TABLE IF EXISTS {warehouse.quote_identifier(database)}.{warehouse.quote_identifier(table)}"
            )
        conn.commit()


def staged_state(settings: MySQLSettings, load_id: str, data_version: str) -> str:
    """'staged' (the load waits in ``raw_*__new``), 'admitted' (already swapped in: a retried
    task) or 'missing' (refused and set aside, or never staged: run ``load_raw`` again)."""
    database = settings.raw_database
    with warehouse.connect(settings, database=database) as conn:
        if all(warehouse.table_exists(conn, database, t) for t in STAGED_TABLES.values()):
            return "staged"
    if live_load(settings) == (load_id, data_version):  # the live tables are this load
        return "admitted"
    return "missing"


def live_load(settings: MySQLSettings) -> tuple[str, str] | None:
    """(load_id, data_version) of the load the live raw tables hold, or None before the first."""
    database = settings.raw_database
    with warehouse.connect(settings, database=database) as conn:
        if not warehouse.table_exists(conn, database, "load_audit"):
            return None
        latest = warehouse.query_one(
            conn,
            f"SELECT load_id, data_version FROM {warehouse.quote_identifier(database)}.`load_audit` "
            "ORDER BY loaded_at DESC, load_id DESC LIMIT 1",
        )
    return tuple(latest) if latest is not None else None


def admit_staged(settings: MySQLSettings, summary: LoadSummary) -> None:
    """Swap the staged tables in as the live raw tables (one RENAME) and record the load."""
    database = settings.raw_database
    db = warehouse.quote_identifier(database)
    loaded_at = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    with warehouse.connect(settings, database=database) as conn:
        missing = [t for t in STAGED_TABLES.values() if not warehouse.table_exists(conn, database, t)]
        if missing:
            raise warehouse.LoadError(
                f"nothing staged to admit: {', '.join(f'{database}.{t}' for t in missing)} not found"
            )
        warehouse.swap_in(conn, database, list(RAW_TABLES.values()), keep_previous=False)
        cur = conn.cursor()
        cur.execute(AUDIT_DDL.format(db=db))
        cur.execute(
            f"REPLACE INTO {db}.`load_audit` VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                summary.load_id,
                summary.dataset,
                summary.data_version,
                summary.rows["events"],
                summary.rows["items"],
                summary.rows["users"],
                summary.seconds,
                loaded_at,
            ),
        )
        conn.commit()


def reject_staged(settings: MySQLSettings) -> list[str]:
    """Set a refused load aside as ``raw_*__rejected`` (replacing an older one); the live tables stay."""
    database = settings.raw_database
    db = warehouse.quote_identifier(database)
    kept = []
    with warehouse.connect(settings, database=database) as conn:
        cur = conn.cursor()
        renames = []
        for entity, staged in STAGED_TABLES.items():
            if warehouse.table_exists(conn, database, staged):
                rejected = f"{RAW_TABLES[entity]}__rejected"
                cur.execute(f"DROP TABLE IF EXISTS {db}.{warehouse.quote_identifier(rejected)}")
                renames.append(
                    f"{db}.{warehouse.quote_identifier(staged)} TO {db}.{warehouse.quote_identifier(rejected)}"
                )
                kept.append(f"{database}.{rejected}")
        if renames:
            cur.execute("RENAME TABLE " + ", ".join(renames))
        conn.commit()
    return kept


def load_raw(dataset: RawDataset, settings: MySQLSettings, load_id: str) -> LoadSummary:
    """Stage ``dataset`` and admit it at once, without a gate (benchmarks, tools)."""
    summary = stage_raw(dataset, settings, load_id)
    admit_staged(settings, summary)
    return summary
