"""One feature build at a time: the warehouse lease on the real MariaDB."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

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
