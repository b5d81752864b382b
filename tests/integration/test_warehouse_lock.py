"""One feature build at a time: the warehouse lease on the real MariaDB.

The lease's term is shortened to seconds here (``TERM``); a holder renews it while it
works, a killed one loses it one term after its last renewal, and every time is the
database's.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
import types
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from recsys_pipeline import warehouse
from recsys_pipeline.orchestration import warehouse_lock

pytestmark = pytest.mark.integration


def test_a_second_build_waits_for_the_first_and_a_retry_of_the_holder_gets_it_back(mysql_test_settings):
    first, second = "recsys_features/scheduled__1", "recsys_training/manual__2"
    warehouse_lock.acquire(mysql_test_settings, first, wait=0)
    warehouse_lock.acquire(mysql_test_settings, first, wait=0)  # the holder's retry
    with pytest.raises(
        warehouse_lock.WarehouseBusy,
        match=r"warehouse_lock: another feature build holds the warehouse: recsys_features/scheduled__1",
    ):
        warehouse_lock.acquire(mysql_test_settings, second, wait=0.5, poll=0.1)
    assert not warehouse_lock.release(mysql_test_settings, second)  # only the holder can give it back
    got_it = threading.Event()
    waiter = threading.Thread(
        target=lambda: (warehouse_lock.acquire(mysql_test_settings, second, wait=30, poll=0.2), got_it.set())
    )
    waiter.start()
    time.sleep(1.0)
    assert not got_it.is_set()
    assert warehouse_lock.release(mysql_test_settings, first)
    waiter.join(timeout=30)
    assert got_it.is_set()
    assert warehouse_lock.release(mysql_test_settings, second)


def test_an_expired_lease_is_taken_over(mysql_test_settings):
    warehouse_lock.acquire(mysql_test_settings, "recsys_features/killed", lease=timedelta(seconds=-1), wait=0)
    warehouse_lock.acquire(mysql_test_settings, "recsys_features/next", wait=0)
    assert warehouse_lock.release(mysql_test_settings, "recsys_features/next")


def test_a_lease_left_by_a_killed_run_is_shown_and_freed_by_recsys_unlock(mysql_test_settings, monkeypatch, capsys):
    from recsys_pipeline import cli

    monkeypatch.setattr(cli, "mysql_settings", lambda: mysql_test_settings)
    warehouse_lock.acquire(mysql_test_settings, "recsys_features/killed_by_sigterm", wait=0)
    assert cli.main(["unlock"]) == 1
    assert "held by recsys_features/killed_by_sigterm" in capsys.readouterr().out
    assert cli.main(["unlock", "--force"]) == 0
    assert warehouse_lock.current(mysql_test_settings) is None
    warehouse_lock.acquire(mysql_test_settings, "recsys_training/next", wait=0)
    assert warehouse_lock.release(mysql_test_settings, "recsys_training/next")


TERM = timedelta(seconds=3)  # shortened: the default is 15 minutes


def _expires_at(settings) -> datetime:
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        sql = "SELECT expires_at FROM warehouse_lock WHERE name = %s"
        return warehouse.scalar(conn, sql, (warehouse_lock.LOCK_NAME,))


def _contender(settings, holder: str, stop: threading.Event, results: list) -> None:
    """Another run asking for the warehouse, again and again, while ``stop`` is not set."""
    while not stop.is_set():
        results.append(warehouse_lock.try_acquire(settings, holder, TERM)[0])
        time.sleep(0.2)


def test_the_lease_is_renewed_through_a_build_longer_than_its_term(mysql_test_settings):
    holder, other = "recsys_features/long_build", "recsys_training/manual__waiting"
    warehouse_lock.acquire(mysql_test_settings, holder, lease=TERM, wait=0)
    first_expiry = _expires_at(mysql_test_settings)
    stop, tries = threading.Event(), []
    contender = threading.Thread(target=_contender, args=(mysql_test_settings, other, stop, tries))
    contender.start()
    started = time.monotonic()
    try:
        with (
            warehouse_lock.renewing(mysql_test_settings, holder, TERM),
            warehouse.connect(mysql_test_settings) as conn,
        ):
            warehouse.scalar(conn, "SELECT SLEEP(%s)", (3 * TERM.total_seconds(),))  # the "build": three terms
    finally:
        stop.set()
        contender.join()
    assert time.monotonic() - started >= 3 * TERM.total_seconds()
    assert tries and not any(tries), "another run took the warehouse while its holder was still building"
    assert _expires_at(mysql_test_settings) >= first_expiry + 2 * TERM  # renewed, by the database's clock
    assert warehouse_lock.release(mysql_test_settings, holder)
    assert warehouse_lock.try_acquire(mysql_test_settings, other, TERM)[0]
    assert warehouse_lock.release(mysql_test_settings, other)


HOLDER_SCRIPT = """
import json, sys
from recsys_pipeline import warehouse
from recsys_pipeline.orchestration import warehouse_lock
from recsys_pipeline.settings import MySQLSettings
settings = MySQLSettings(**json.loads(sys.argv[1]))
warehouse_lock.acquire(settings, "recsys_features/crashing", lease=warehouse_lock.timedelta(seconds=3), wait=0)
with warehouse_lock.renewing(settings, "recsys_features/crashing", warehouse_lock.timedelta(seconds=3)):
    print("holding", flush=True)
    with warehouse.connect(settings) as conn:
        warehouse.scalar(conn, "SELECT SLEEP(600)")
"""


def test_a_crashed_holders_lease_runs_out_one_term_after_its_last_renewal(mysql_test_settings):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, json.dumps(dataclasses.asdict(mysql_test_settings))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        time.sleep(2 * TERM.total_seconds())  # alive and renewing: still its lease after two terms
        assert warehouse_lock.current(mysql_test_settings)[0] == "recsys_features/crashing"
        assert not warehouse_lock.try_acquire(mysql_test_settings, "recsys_features/next", TERM)[0]
    finally:
        holder.send_signal(signal.SIGKILL)  # no callback, no release: like a lost worker
        holder.wait(30)
    deadline = time.monotonic() + 60
    while warehouse_lock.current(mysql_test_settings) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert warehouse_lock.current(mysql_test_settings) is None, "a dead holder's lease never ran out"
    warehouse_lock.acquire(mysql_test_settings, "recsys_features/next", lease=TERM, wait=0)
    assert warehouse_lock.release(mysql_test_settings, "recsys_features/next")


class _WorkerClock(datetime):
    """A worker whose clock is off by ``offset`` (what the lease must not depend on)."""

    offset = timedelta(0)

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + cls.offset


@pytest.mark.parametrize("offset_hours", [3, -3])
def test_the_lease_is_judged_by_the_database_clock_not_the_workers(mysql_test_settings, monkeypatch, offset_hours):
    monkeypatch.setattr(_WorkerClock, "offset", timedelta(hours=offset_hours))
    monkeypatch.setattr(warehouse_lock, "datetime", _WorkerClock)
    # a fresh lease stays its holder's, whatever the asking worker's clock says
    warehouse_lock.acquire(mysql_test_settings, "recsys_features/fresh", lease=timedelta(minutes=30), wait=0)
    assert not warehouse_lock.try_acquire(mysql_test_settings, "recsys_training/clock_ahead", TERM)[0]
    assert warehouse_lock.current(mysql_test_settings)[0] == "recsys_features/fresh"
    assert warehouse_lock.release(mysql_test_settings, "recsys_features/fresh")
    # and an expired one is free, even to a worker whose clock is behind
    warehouse_lock.acquire(mysql_test_settings, "recsys_features/expired", lease=timedelta(seconds=-1), wait=0)
    assert warehouse_lock.current(mysql_test_settings) is None
    assert warehouse_lock.try_acquire(mysql_test_settings, "recsys_training/clock_behind", TERM)[0]
    assert warehouse_lock.release(mysql_test_settings, "recsys_training/clock_behind")


def test_a_run_that_lost_the_lease_cannot_go_on_building(mysql_test_settings):
    warehouse_lock.acquire(mysql_test_settings, "recsys_features/slow", lease=timedelta(seconds=-1), wait=0)
    warehouse_lock.acquire(mysql_test_settings, "recsys_training/next", lease=TERM, wait=0)  # it ran out: taken
    with (
        pytest.raises(warehouse_lock.LeaseLost, match="recsys_features/slow does not hold.*recsys_training/next"),
        warehouse_lock.renewing(mysql_test_settings, "recsys_features/slow", TERM),
    ):
        pytest.fail("the block ran without the lease")
    assert warehouse_lock.release(mysql_test_settings, "recsys_training/next")


@pytest.mark.parametrize(
    ("task_id", "gives_back"),
    [
        ("load_raw", True),
        ("validate_raw", True),
        ("features.dbt_producer_watcher", True),  # the dbt build itself failed: it has ended
        ("features.models.marts.user_features.run", False),  # one node's watcher: the build may still run
        ("features.models.marts.user_features.test", False),
        ("document_features", True),
        ("check_quality", True),
        ("train_two_tower", False),
    ],
)
def test_only_a_failure_that_ends_the_build_gives_the_lease_back(mysql_test_settings, monkeypatch, task_id, gives_back):
    from recsys_pipeline import settings as settings_module
    from recsys_pipeline.orchestration import alerts

    monkeypatch.setattr(settings_module, "mysql_settings_for_task", lambda: mysql_test_settings)
    monkeypatch.delenv("RECSYS_ALERT_WEBHOOK_URL", raising=False)
    holder = warehouse_lock.holder_for("recsys_features", "manual__failing")
    warehouse_lock.acquire(mysql_test_settings, holder, lease=TERM, wait=0)
    task = types.SimpleNamespace(dag_id="recsys_features", task_id=task_id, run_id="manual__failing", try_number=2)
    alerts.notify_failure({"ti": task, "run_id": "manual__failing", "exception": RuntimeError("boom")})
    held = warehouse_lock.current(mysql_test_settings)
    assert (held is None) == gives_back
    warehouse_lock.release(mysql_test_settings, holder)


def _holds_warehouse(function) -> bool:
    while function is not None:
        if getattr(function, "holds_warehouse", False):
            return True
        function = getattr(function, "__wrapped__", None)
    return False


def test_the_build_tasks_hold_the_warehouse_while_they_run(airflow_home):
    """Each task of a feature build renews the lease as it runs: the raw gate, dbt's build, its docs."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    for dag_id in ("recsys_features", "recsys_training"):
        dag = bag.get_dag(dag_id)
        producer = next(t for t in dag.tasks if t.task_id.endswith(warehouse_lock.DBT_BUILD_TASK_SUFFIX))
        assert producer.execute is warehouse_lock.execute_holding_warehouse
        for task_id in ("validate_raw", "document_features"):
            assert _holds_warehouse(dag.get_task(task_id).python_callable), f"{dag_id}.{task_id}"
