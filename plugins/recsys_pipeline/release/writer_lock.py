"""One writer at a time of a dataset's champion, and of the warehouse's ``recommendations`` table.

``max_active_runs=1`` separates the runs of one DAG only: a rollback (the
``recsys_rollback`` DAG or ``recsys rollback`` in a shell) could otherwise move the
champion while a training run publishes, and both would load MySQL. In Airflow the
publish, load and rollback tasks share the one-slot pool ``recsys_release``, so they
queue instead of racing; this lock is what every process takes as well, the CLI
included, wherever it runs.

It is a MySQL named lock (``GET_LOCK``) on the warehouse every writer already reaches:
it belongs to one connection and is released when that connection closes, so a writer
that crashes, is killed or loses its machine gives it back at once -- no lease to
expire, no stale row to clean up. Two names are used, always taken in this order:
the dataset's champion (the warehouse's database, the bucket, prefix and dataset), then
the database's ``recommendations`` table. Writers that do not share the warehouse are
still kept from overwriting each other's pointer by its compare-and-swap (``champion``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator

from recsys_pipeline import warehouse
from recsys_pipeline.release.layout import ReleaseError
from recsys_pipeline.settings import MySQLSettings, S3Settings

log = logging.getLogger(__name__)

WAIT_VARIABLE = "RECSYS_RELEASE_LOCK_WAIT_S"
DEFAULT_WAIT_S = 900.0  # a release upload of a large model takes minutes
POLL_S = 10  # how often a waiting writer says who it waits for


class ReleaseBusy(ReleaseError):
    """Another publish, load or rollback held the lock for longer than this writer would wait."""


class LockLost(ReleaseError):
    """The lock's MySQL connection went away while this writer held it: it no longer excludes others."""


def lock_wait_s() -> float:
    return float(os.environ.get(WAIT_VARIABLE, DEFAULT_WAIT_S))


def _name(kind: str, *parts: str) -> str:
    """A lock name of at most 64 characters (MariaDB's limit) that names what it guards."""
    return f"recsys:{kind}:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def champion_lock_name(settings: MySQLSettings, s3_settings: S3Settings, dataset_key: str) -> str:
    """Per warehouse (its ``recommendations`` table follows this champion) and per champion in the bucket."""
    return _name("champion", settings.database, s3_settings.bucket, s3_settings.prefix, dataset_key)


def table_lock_name(settings: MySQLSettings) -> str:
    return _name("recommendations", settings.database)


class HeldLock:
    """A named lock this process holds on its own connection."""

    def __init__(self, conn, name: str, purpose: str):
        self.conn, self.name, self.purpose = conn, name, purpose

    def check(self) -> None:
        """Raise LockLost unless this connection still holds the lock (call it before each write)."""
        try:
            cur = self.conn.cursor()
            cur.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))
            held = cur.fetchone()[0]
        except Exception as error:  # the connection itself is gone: so is the lock
            raise LockLost(
                f"lost the release lock for {self.purpose} (its MySQL connection failed: {error})"
            ) from error
        if held != 1:
            raise LockLost(f"lost the release lock for {self.purpose}: another writer may hold it now")


@contextlib.contextmanager
def named_lock(settings: MySQLSettings, name: str, purpose: str, wait_s: float | None = None) -> Iterator[HeldLock]:
    """Hold the named lock for ``purpose``; wait up to ``wait_s`` seconds (default from the environment)."""
    wait_s = lock_wait_s() if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    with warehouse.connect(settings, database="") as conn:
        cur = conn.cursor()
        while True:
            chunk = max(0, min(POLL_S, int(deadline - time.monotonic())))
            cur.execute("SELECT GET_LOCK(%s, %s)", (name, chunk))
            if cur.fetchone()[0] == 1:
                break
            holder = _holder(cur, name)
            if time.monotonic() >= deadline:
                raise ReleaseBusy(
                    f"{purpose}: another publish, recommendations load or rollback of the same champion or table "
                    f"({holder}) held the release lock {name} for more than {wait_s:.0f} s; nothing was changed "
                    f"(wait longer with {WAIT_VARIABLE})"
                )
            log.warning("%s waits for the release lock %s, held by %s", purpose, name, holder)
        log.info("%s holds the release lock %s", purpose, name)
        try:
            yield HeldLock(conn, name, purpose)
        finally:
            with contextlib.suppress(Exception):  # a dead connection has released it already
                cur.execute("SELECT RELEASE_LOCK(%s)", (name,))


def _holder(cur, name: str) -> str:
    cur.execute("SELECT IS_USED_LOCK(%s)", (name,))
    connection_id = cur.fetchone()[0]
    if connection_id is None:
        return "nobody now"
    cur.execute("SELECT user, host FROM information_schema.processlist WHERE id = %s", (connection_id,))
    row = cur.fetchone()
    return f"MySQL connection {connection_id}" + (f" of {row[0]}@{row[1]}" if row else "")


def champion_lock(
    settings: MySQLSettings, s3_settings: S3Settings, dataset_key: str, purpose: str, wait_s: float | None = None
):
    """The lock every writer of ``dataset_key``'s champion pointer and history holds while it writes."""
    return named_lock(settings, champion_lock_name(settings, s3_settings, dataset_key), purpose, wait_s)


def table_lock(settings: MySQLSettings, purpose: str, wait_s: float | None = None):
    """The lock every writer of the database's ``recommendations`` table holds from staging to swap."""
    return named_lock(settings, table_lock_name(settings), purpose, wait_s)
