"""What every recsys DAG shares: owner, retries with backoff, a timeout, a failure alert, its start date.

One place, so the DAGs cannot drift apart in how they retry or how long a task may hang.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Param

from recsys_pipeline.orchestration.alerts import notify_failure

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


def dataset_param(note: str = "") -> Param:
    """The trigger form's ``dataset``, in the same words wherever a DAG loads data."""
    return Param(
        default_dataset(),
        type="string",
        minLength=1,
        description="online-retail, groceries, or a folder with events/items/users .csv or .parquet files" + note,
    )


def full_refresh_param() -> Param:
    return Param(
        False,
        type="boolean",
        description="rebuild dbt's incremental models from all raw rows "
        "(otherwise automatic when the rules or old raw rows changed)",
    )


def cron_from_env(variable: str, default: str) -> str | None:
    """A DAG's cron schedule from ``variable`` (``none`` or ``off``: no time-based runs)."""
    value = os.environ.get(variable, default).strip()
    return None if value.lower() in ("", "none", "off") else value
