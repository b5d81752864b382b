"""What every recsys DAG shares: owner, retries with backoff, a timeout, a failure alert, its start date.

One place, so the DAGs cannot drift apart in how they retry or how long a task may hang.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

from recsys_pipeline.alerts import notify_failure

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def default_args(execution_timeout: timedelta) -> dict:
    return {
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": execution_timeout,
        "on_failure_callback": notify_failure,
    }


def default_dataset() -> str:
    """What scheduled runs load, and the trigger form's default: RECSYS_DATASET (name or folder)."""
    return os.environ.get("RECSYS_DATASET", "online-retail")


def cron_from_env(variable: str, default: str) -> str | None:
    """A DAG's cron schedule from ``variable`` (``none`` or ``off``: no time-based runs)."""
    value = os.environ.get(variable, default).strip()
    return None if value.lower() in ("", "none", "off") else value
