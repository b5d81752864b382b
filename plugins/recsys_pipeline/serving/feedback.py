"""The feedback loop's log: every list served and every event posted, written to MySQL in batches.

The next training run learns from these rows and ``online_metrics`` judges releases by
them, so none may be lost and none counted twice. Requests only put rows on a queue; one
writer thread inserts them in batches (``INSERT IGNORE`` on ids the service assigned, so a
batch written twice is still written once). When MySQL cannot be reached the batch goes
to an append-only spool file (fsynced), and the writer replays that file, first, once
MySQL answers again: the service keeps answering meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import MySQLdb

from recsys_pipeline.ingest.contract import ID_MAX_LENGTH
from recsys_pipeline.settings import MySQLSettings
from recsys_pipeline.warehouse import quote_identifier

log = logging.getLogger(__name__)

_ID = f"VARCHAR({ID_MAX_LENGTH}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
TABLES = {
    "served_lists": f"""
        request_id CHAR(32) NOT NULL PRIMARY KEY COMMENT 'id returned with the list; events may quote it',
        dataset VARCHAR(64) NOT NULL,
        user_id {_ID} NULL COMMENT 'NULL for an anonymous shopper in context',
        model_version VARCHAR(191) NOT NULL,
        release_id VARCHAR(160) NOT NULL,
        surface VARCHAR(32) NOT NULL,
        endpoint VARCHAR(32) NOT NULL COMMENT 'user, context or related',
        source VARCHAR(32) NOT NULL COMMENT 'published, in_context, best_sellers or related',
        served_at DATETIME(3) NOT NULL COMMENT 'UTC',
        KEY served_lists_by_day (dataset, served_at),
        KEY served_lists_by_user (user_id, served_at)""",
    "served_items": f"""
        request_id CHAR(32) NOT NULL,
        position SMALLINT UNSIGNED NOT NULL COMMENT '1 = first in the list',
        item_id {_ID} NOT NULL,
        score DOUBLE NULL,
        reason VARCHAR(255) NULL,
        PRIMARY KEY (request_id, position),
        KEY served_items_by_item (item_id)""",
    "online_events": f"""
        event_id CHAR(32) NOT NULL PRIMARY KEY COMMENT 'assigned by the service (or the idempotency key sent)',
        seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT UNIQUE COMMENT 'arrival order: the raw load numbers rows by it',
        dataset VARCHAR(64) NOT NULL,
        user_id {_ID} NOT NULL,
        item_id {_ID} NOT NULL,
        event_type VARCHAR(32) NOT NULL,
        quantity DOUBLE NULL,
        price DOUBLE NULL,
        event_at DATETIME(3) NOT NULL COMMENT 'UTC, when the shopper acted',
        request_id CHAR(32) NULL COMMENT 'the list the shopper came from, when they came from one',
        received_at DATETIME(3) NOT NULL COMMENT 'UTC, when the service received it',
        KEY online_events_by_day (dataset, received_at),
        KEY online_events_by_request (request_id),
        KEY online_events_by_user (user_id, event_at)""",
}
_COLUMNS = {
    "served_lists": (
        "request_id",
        "dataset",
        "user_id",
        "model_version",
        "release_id",
        "surface",
        "endpoint",
        "source",
        "served_at",
    ),
    "served_items": ("request_id", "position", "item_id", "score", "reason"),
    "online_events": (
        "event_id",
        "dataset",
        "user_id",
        "item_id",
        "event_type",
        "quantity",
        "price",
        "event_at",
        "request_id",
        "received_at",
    ),
}


def create_tables(conn, raw_database: str) -> None:
    """The feedback tables in the raw database (idempotent): the service writes them, dbt reads them."""
    cur = conn.cursor()
    for table, columns in TABLES.items():
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {quote_identifier(raw_database)}.{quote_identifier(table)} ({columns}) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
        )
    conn.commit()


@dataclass(frozen=True)
class Row:
    table: str
    values: tuple


def _connect(settings: MySQLSettings):
    return MySQLdb.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        database=settings.raw_database,
        charset="utf8mb4",
        connect_timeout=2,
        read_timeout=10,
        write_timeout=10,
    )


class FeedbackLog:
    """A queue, a writer thread, MySQL, and a spool file for when MySQL is away."""

    def __init__(
        self,
        settings: MySQLSettings,
        spool_path: Path,
        flush_seconds: float = 0.5,
        batch_rows: int = 2000,
        retry_seconds: float = 2.0,
    ):
        self.settings = settings
        self.spool_path = Path(spool_path)
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[Row | None] = queue.Queue()
        self._conn = None
        self._next_attempt = 0.0
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self.written = dict.fromkeys(TABLES, 0)
        self.spooled_rows = 0
        self.mysql_up = True

    def start(self) -> FeedbackLog:
        self._thread.start()
        return self

    def put(self, table: str, values: tuple) -> None:
        if len(values) != len(_COLUMNS[table]):
            raise ValueError(f"{table} takes {len(_COLUMNS[table])} values, not {len(values)}")
        self._idle.clear()
        self._queue.put(Row(table, values))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued is in MySQL (True) or the timeout passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set() and not self.spool_path.exists():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (to MySQL, or to the spool file) and stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._conn is not None:
            self._conn.close()

    # the writer thread
    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Row] = []
            deadline = time.monotonic() + self.flush_seconds
            while len(batch) < self.batch_rows:
                try:
                    row = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
                except queue.Empty:
                    break
                if row is None:
                    stopping = True
                    break
                batch.append(row)
            self._write(batch, final=stopping)
            if self._queue.empty():
                self._idle.set()

    def _write(self, batch: list[Row], final: bool = False) -> None:
        if self.spool_path.exists() and time.monotonic() >= self._next_attempt:
            self._replay()
        if not batch:
            return
        if self.spool_path.exists() or time.monotonic() < self._next_attempt:
            self._spool(batch)  # keep the order: nothing overtakes rows waiting in the spool
            return
        try:
            self._insert(batch)
        except MySQLdb.Error as error:
            self._mysql_down(error)
            self._spool(batch)

    def _insert(self, batch: list[Row]) -> None:
        if self._conn is None:
            self._conn = _connect(self.settings)
        by_table: dict[str, list[tuple]] = {}
        for row in batch:
            by_table.setdefault(row.table, []).append(row.values)
        cur = self._conn.cursor()
        for table, rows in by_table.items():
            columns = _COLUMNS[table]
            cur.executemany(
                f"INSERT IGNORE INTO {quote_identifier(table)} ({', '.join(quote_identifier(c) for c in columns)}) "
                f"VALUES ({', '.join(['%s'] * len(columns))})",
                rows,
            )
        self._conn.commit()
        for table, rows in by_table.items():
            self.written[table] += len(rows)
        if not self.mysql_up:
            log.warning("MySQL is back: feedback rows are written again")
        self.mysql_up = True

    def _mysql_down(self, error: Exception) -> None:
        if self.mysql_up:
            log.warning("MySQL unreachable (%s): feedback rows go to %s until it answers", error, self.spool_path)
        self.mysql_up = False
        self._next_attempt = time.monotonic() + self.retry_seconds
        if self._conn is not None:
            with contextlib.suppress(MySQLdb.Error):
                self._conn.close()
            self._conn = None

    def _spool(self, batch: list[Row]) -> None:
        lines = "".join(json.dumps([row.table, list(row.values)], default=str) + "\n" for row in batch)
        with self.spool_path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        self.spooled_rows += len(batch)

    def _replay(self) -> None:
        """Insert the spool file's rows (in chunks), then remove it; a crash in between replays it again."""
        rows = []
        with self.spool_path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):  # a line cut by a crash mid-write: its rows were never acknowledged
                    break
                table, values = json.loads(line)
                rows.append(Row(table, tuple(values)))
        try:
            for start in range(0, len(rows), self.batch_rows):
                self._insert(rows[start : start + self.batch_rows])
        except MySQLdb.Error as error:
            self._mysql_down(error)
            return
        self.spool_path.unlink()
        log.info("replayed %d feedback rows from %s", len(rows), self.spool_path)
