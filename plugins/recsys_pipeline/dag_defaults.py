"""What every recsys DAG shares: owner, retries with backoff, a timeout, and its start date.

One place, so the DAGs cannot drift apart in how they retry or how long a task may hang.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def default_args(execution_timeout: timedelta) -> dict:
    return {
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": execution_timeout,
    }
