"""One feature build at a time in the warehouse, across DAGs and DAG runs.

The raw tables, their staging copies (``raw_*__new``) and dbt's models are shared by
every run: two loads at once (the daily ``recsys_features`` and a manual
``recsys_training`` run, say) would stage into the same tables and fail -- or worse,
build features from a mix. ``max_active_runs=1`` only separates runs of one DAG.

So ``load_raw`` takes a lease on the warehouse (one row in ``<raw db>.warehouse_lock``),
naming its holder (DAG and run). The lease is short (``RECSYS_WAREHOUSE_LEASE_S``,
default 15 minutes) and **renewed while the holder works**: every task of the build
(``load_raw``, the raw gate, the dbt build, its docs, the features gate) runs inside
``renewing``, a heartbeat thread that extends it every third of its term, and first
checks the run still holds it. So a build of any length keeps the warehouse, and a
holder that dies (``kill -9``, a lost worker) frees it one term after its last beat.
Every time is the **database's clock** (``UTC_TIMESTAMP(6)`` in the statements), never
a worker's: workers whose clocks disagree still agree on who holds the lease.

The run gives the lease back when its build ends: the features gate when it passes,
or the failure callback of a task whose failure ends the build (``ENDS_THE_BUILD``:
the load, the raw gate, the dbt build itself, its docs, the features gate). A watcher
task of a single dbt node that fails does *not* give it back: the build it reports on
may still be running. A retry of the holder's own run takes it again at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from recsys_pipeline import warehouse
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

LOCK_NAME = "feature_build"
DDL = """
CREATE TABLE IF NOT EXISTS {db}.`warehouse_lock` (
  `name` VARCHAR(64) NOT NULL PRIMARY KEY,
  `holder` VARCHAR(512) NOT NULL,
  `acquired_at` DATETIME(6) NOT NULL,
  `expires_at` DATETIME(6) NOT NULL,
  `renewed_at` DATETIME(6) NULL
) ENGINE=InnoDB
"""
# a table from before renewals (whole seconds, no renewed_at) is brought up to date
UPGRADE = (
    "ALTER TABLE {db}.`warehouse_lock` MODIFY `acquired_at` DATETIME(6) NOT NULL, "
    "MODIFY `expires_at` DATETIME(6) NOT NULL, ADD COLUMN `renewed_at` DATETIME(6) NULL"
)
# the build's own tasks: when one of them fails for good, the build is over (see module doc)
ENDS_THE_BUILD = ("load_raw", "validate_raw", "document_features", "check_quality")
DBT_BUILD_TASK_SUFFIX = "dbt_producer_watcher"


class WarehouseBusy(RuntimeError):
    """Another run held the warehouse for longer than this run was willing to wait."""


class LeaseLost(RuntimeError):
    """The run no longer holds the warehouse (its lease ran out and another run took it)."""


def lease_term() -> timedelta:
    """How long a lease lasts without renewal (``RECSYS_WAREHOUSE_LEASE_S``, default 900 s)."""
    return timedelta(seconds=float(os.environ.get("RECSYS_WAREHOUSE_LEASE_S", "900")))


def _micros(term: timedelta) -> int:
    return int(term.total_seconds() * 1_000_000)


@contextlib.contextmanager
def _lock_table(settings: MySQLSettings) -> Iterator[tuple]:
    """(connection, cursor, quoted raw database) with the lock table present and up to date."""
    db = warehouse.quote_identifier(settings.raw_database)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute(DDL.format(db=db))
        if not warehouse.column_exists(conn, settings.raw_database, "warehouse_lock", "renewed_at"):
            cur.execute(UPGRADE.format(db=db))
        yield conn, cur, db


def try_acquire(settings: MySQLSettings, holder: str, lease: timedelta | None = None) -> tuple[bool, str | None]:
    """(True, None) if ``holder`` now holds the lease, else (False, 'holder since T until U')."""
    term = lease_term() if lease is None else lease
    with _lock_table(settings) as (conn, cur, db):
        cur.execute(
            f"INSERT IGNORE INTO {db}.`warehouse_lock` (name, holder, acquired_at, expires_at) "
            "VALUES (%s, '', '1970-01-01', '1970-01-01')",
            (LOCK_NAME,),
        )
        conn.commit()
        # the row is locked until commit: two runs deciding at once decide one after the other
        cur.execute(
            "SELECT holder, acquired_at, expires_at, expires_at < UTC_TIMESTAMP(6) "
            f"FROM {db}.`warehouse_lock` WHERE name = %s FOR UPDATE",
            (LOCK_NAME,),
        )
        current, acquired_at, expires_at, expired = cur.fetchone()
        if current in (holder, "") or expired:
            keep_since = current == holder and not expired  # the holder's retry: still the same hold
            cur.execute(
                f"UPDATE {db}.`warehouse_lock` SET holder = %s, "
                f"acquired_at = {'acquired_at' if keep_since else 'UTC_TIMESTAMP(6)'}, "
                "expires_at = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND, renewed_at = UTC_TIMESTAMP(6) "
                "WHERE name = %s",
                (holder, _micros(term), LOCK_NAME),
            )
            current = holder
        conn.commit()
    if current == holder:
        return True, None
    return False, f"{current} since {_fmt(acquired_at)} UTC (lease until {_fmt(expires_at)} UTC)"


def _fmt(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat(sep=" ")


def acquire(
    settings: MySQLSettings,
    holder: str,
    lease: timedelta | None = None,
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
            "warehouse busy (%s); waiting. Its holder renews the lease while it runs; if it was killed, the lease "
            "runs out one term after its last renewal, or `recsys unlock --force` frees it now",
            other,
        )
        time.sleep(poll)


def renew(settings: MySQLSettings, holder: str, lease: timedelta | None = None) -> bool:
    """Extend ``holder``'s lease by a term from now (database clock); False when it no longer holds it."""
    term = lease_term() if lease is None else lease
    with _lock_table(settings) as (conn, cur, db):
        cur.execute(
            f"UPDATE {db}.`warehouse_lock` SET expires_at = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND, "
            "renewed_at = UTC_TIMESTAMP(6) WHERE name = %s AND holder = %s",
            (_micros(term), LOCK_NAME, holder),
        )
        conn.commit()
        return cur.rowcount > 0


class _Heartbeat(threading.Thread):
    """Renews a lease every third of its term until stopped, or until the lease is found lost."""

    def __init__(self, settings: MySQLSettings, holder: str, term: timedelta):
        super().__init__(name=f"warehouse-lease-{holder}", daemon=True)
        self.settings, self.holder, self.term = settings, holder, term
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.term.total_seconds() / 3):
            try:
                if not renew(self.settings, self.holder, self.term):
                    self.lost = True
                    log.error("warehouse lease of %s lost: another run may now use the warehouse", self.holder)
                    return
            except Exception as error:  # MySQL briefly away: the next beat tries again within the term
                log.warning("could not renew the warehouse lease of %s (trying again): %s", self.holder, error)


_beating: dict[str, list[_Heartbeat]] = {}  # holder -> heartbeats running in this process
_beating_lock = threading.Lock()


@contextlib.contextmanager
def renewing(settings: MySQLSettings, holder: str, lease: timedelta | None = None) -> Iterator[None]:
    """Hold the warehouse for the duration of the block, renewing the lease in a heartbeat thread.

    Raises LeaseLost before the block if ``holder`` does not hold the lease (it ran out
    and another run took it), and after it if the lease was lost meanwhile: the block's
    work may then have been mixed with another build's.
    """
    term = lease_term() if lease is None else lease
    if not renew(settings, holder, term):
        raise LeaseLost(f"{holder} does not hold the warehouse lease: {_who_holds(settings)}")
    every = term.total_seconds() / 3
    log.info("%s holds the warehouse lease (renewed every %.1f s while this task runs)", holder, every)
    beat = _Heartbeat(settings, holder, term)
    with _beating_lock:
        _beating.setdefault(holder, []).append(beat)
    beat.start()
    try:
        yield
    finally:
        _stop_heartbeats(holder, beat)
    if beat.lost:
        raise LeaseLost(
            f"{holder} lost the warehouse lease while it worked ({_who_holds(settings)}): another feature build "
            "may have changed the warehouse meanwhile; run again"
        )


def _stop_heartbeats(holder: str, only: _Heartbeat | None = None) -> None:
    """Stop (and wait for) this process's heartbeats of ``holder`` (all, or ``only``).

    Before the holder gives the lease back, or at the end of a ``renewing`` block.
    """
    with _beating_lock:
        beats = _beating.get(holder, [])
        stopping = [b for b in beats if only is None or b is only]
        _beating[holder] = [b for b in beats if b not in stopping]
    for beat in stopping:
        beat.stopped.set()
        beat.join()


def _who_holds(settings: MySQLSettings) -> str:
    held = current(settings)
    return "nobody holds it now" if held is None else f"now held by {held[0]} until {_fmt(held[2])} UTC"


def holding_warehouse(function):
    """Decorator for a task of the feature build: its body runs inside ``renewing`` for the current run."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from recsys_pipeline.orchestration.runtime import lease_holder
        from recsys_pipeline.settings import mysql_settings_for_task

        with renewing(mysql_settings_for_task(), lease_holder()):
            return function(*args, **kwargs)

    wrapper.holds_warehouse = True
    return wrapper


def execute_holding_warehouse(context, **kwargs):
    """An operator's ``execute`` that runs its class's own ``execute`` inside ``renewing`` (for dbt's build).

    Set as the instance's ``execute`` (an operator not written here, cosmos's dbt build);
    it takes the task from the context, so it runs the copy of the operator that Airflow
    prepared and rendered for this try, never the parsed original.
    """
    task = context["task"]
    return holding_warehouse(type(task).execute)(task, context, **kwargs)


def failure_ends_the_build(task_id: str) -> bool:
    """Whether a task that failed for good means its run's feature build is over (so it may give the lease back)."""
    return task_id.split(".")[-1] in ENDS_THE_BUILD or task_id.endswith(DBT_BUILD_TASK_SUFFIX)


def release(settings: MySQLSettings, holder: str) -> bool:
    """Give the lease back if ``holder`` has it; True if it did."""
    _stop_heartbeats(holder)  # a beat after this would find the lease gone and call it lost
    with _lock_table(settings) as (conn, cur, db):
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
    """(holder, acquired_at, expires_at) of a live lease (database clock), or None when the warehouse is free."""
    db = warehouse.quote_identifier(settings.raw_database)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        if not warehouse.table_exists(conn, settings.raw_database, "warehouse_lock"):
            return None
        row = warehouse.query_one(
            conn,
            f"SELECT holder, acquired_at, expires_at FROM {db}.`warehouse_lock` "
            "WHERE name = %s AND holder <> '' AND expires_at >= UTC_TIMESTAMP(6)",
            (LOCK_NAME,),
        )
    return None if row is None else tuple(row)


def break_lease(settings: MySQLSettings) -> str | None:
    """Free the warehouse whoever holds it (for a holder that died without giving it back); returns that holder."""
    held = current(settings)
    if held is not None:
        release(settings, held[0])
    return held[0] if held else None
