"""One feature build at a time in the warehouse, across DAGs and DAG runs.

The raw tables, their staging copies (``raw_*__new``) and dbt's models are shared by
every run: two loads at once (the daily ``recsys_features`` and a manual
``recsys_training`` run, say) would stage into the same tables and fail -- or worse,
build features from a mix. ``max_active_runs=1`` only separates runs of one DAG.

So ``load_raw`` takes a lease on the warehouse (one row in ``<raw db>.warehouse_lock``)
and the features gate gives it back when it passes; a failure anywhere in between
gives it back from the failure callback. The lease names its holder (DAG and run)
and expires, so a run killed without callbacks blocks others only until then. A
retry of the holder's own run takes it again at once.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

from recsys_pipeline import warehouse
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

LOCK_NAME = "feature_build"
DDL = """
CREATE TABLE IF NOT EXISTS {db}.`warehouse_lock` (
  `name` VARCHAR(64) NOT NULL PRIMARY KEY,
  `holder` VARCHAR(512) NOT NULL,
  `acquired_at` DATETIME NOT NULL,
  `expires_at` DATETIME NOT NULL
) ENGINE=InnoDB
"""


class WarehouseBusy(RuntimeError):
    """Another run held the warehouse for longer than this run was willing to wait."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def try_acquire(settings: MySQLSettings, holder: str, lease: timedelta) -> tuple[bool, str | None]:
    """(True, None) if ``holder`` now holds the lease, else (False, 'holder since T until U')."""
    db = warehouse.quote_identifier(settings.raw_database)
    now = _now()
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute(DDL.format(db=db))
        cur.execute(
            f"INSERT IGNORE INTO {db}.`warehouse_lock` VALUES (%s, '', '1970-01-01', '1970-01-01')", (LOCK_NAME,)
        )
        conn.commit()
        # the row is locked until commit: two runs deciding at once decide one after the other
        cur.execute(
            f"SELECT holder, acquired_at, expires_at FROM {db}.`warehouse_lock` WHERE name = %s FOR UPDATE",
            (LOCK_NAME,),
        )
        current, acquired_at, expires_at = cur.fetchone()
        if current in (holder, "") or expires_at < now:
            cur.execute(
                f"UPDATE {db}.`warehouse_lock` SET holder = %s, acquired_at = %s, expires_at = %s WHERE name = %s",
                (holder, now, now + lease, LOCK_NAME),
            )
            current = holder
        conn.commit()
    if current == holder:
        return True, None
    return False, f"{current} since {acquired_at} UTC (lease until {expires_at} UTC)"


def acquire(
    settings: MySQLSettings,
    holder: str,
    lease: timedelta = timedelta(hours=2),
    wait: float | None = None,
    poll: float = 15.0,
) -> None:
    """Wait up to ``wait`` seconds (RECSYS_WAREHOUSE_LOCK_WAIT_S, default 3600) for the lease."""
    wait = float(os.environ.get("RECSYS_WAREHOUSE_LOCK_WAIT_S", "3600")) if wait is None else wait
    deadline = time.monotonic() + wait
    while True:
        acquired, other = try_acquire(settings, holder, lease)
        if acquired:
            log.info("warehouse lease taken by %s", holder)
            return
        if time.monotonic() >= deadline:
            raise WarehouseBusy(
                f"{settings.raw_database}.warehouse_lock: another feature build holds the warehouse: {other}; "
                f"waited {wait:.0f} s (RECSYS_WAREHOUSE_LOCK_WAIT_S)"
            )
        log.info(
            "warehouse busy (%s); waiting. If that run is gone (killed before its failure callback ran), "
            "`recsys unlock --force` frees the warehouse",
            other,
        )
        time.sleep(poll)


def release(settings: MySQLSettings, holder: str) -> bool:
    """Give the lease back if ``holder`` has it; True if it did."""
    db = warehouse.quote_identifier(settings.raw_database)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute(DDL.format(db=db))
        cur.execute(
            f"UPDATE {db}.`warehouse_lock` SET holder = '', expires_at = '1970-01-01' WHERE name = %s AND holder = %s",
            (LOCK_NAME, holder),
        )
        conn.commit()
        released = cur.rowcount > 0
    if released:
        log.info("warehouse lease given back by %s", holder)
    return released


def holder_for(dag_id: str, run_id: str) -> str:
    return f"{dag_id}/{run_id}"


def current(settings: MySQLSettings) -> tuple[str, datetime, datetime] | None:
    """(holder, acquired_at, expires_at) of a live lease, or None when the warehouse is free."""
    db = warehouse.quote_identifier(settings.raw_database)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        if not warehouse.table_exists(conn, settings.raw_database, "warehouse_lock"):
            return None
        row = warehouse.query_one(
            conn, f"SELECT holder, acquired_at, expires_at FROM {db}.`warehouse_lock` WHERE name = %s", (LOCK_NAME,)
        )
    if row is None or not row[0] or row[2] < _now():
        return None
    return tuple(row)


def break_lease(settings: MySQLSettings) -> str | None:
    """Free the warehouse whoever holds it (for a holder that died without giving it back); returns that holder."""
    held = current(settings)
    if held is not None:
        release(settings, held[0])
    return held[0] if held else None
