"""Every writer of a champion and of ``recommendations`` runs in the one-slot pool, which Airflow creates."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
WRITERS = [
    ("recsys_training", "publish_release"),
    ("recsys_training", "load_recommendations"),
    ("recsys_rollback", "rollback_champion"),
]


def test_publish_load_and_rollback_tasks_run_in_the_release_pool(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    from recsys_pipeline.orchestration.release_pool import POOL

    dag_bag = DagBag(dag_folder=str(DAGS_FOLDER))
    for dag_id, task_id in WRITERS:
        assert dag_bag.dags[dag_id].get_task(task_id).pool == POOL, f"{dag_id}.{task_id}"


def test_an_airflow_job_starting_creates_the_one_slot_pool(airflow_home):
    """A scheduler (any Airflow job) that starts on a metadata database without the pool creates it."""
    from airflow.exceptions import PoolNotFound
    from airflow.jobs.job import Job
    from airflow.models.pool import Pool

    from recsys_pipeline.orchestration.release_pool import POOL

    with contextlib.suppress(PoolNotFound):
        Pool.delete_pool(POOL)
    assert Pool.get_pool(POOL) is None
    Job()  # calls the plugins' on_starting listeners, as the scheduler's job does
    pool = Pool.get_pool(POOL)
    assert pool is not None and pool.slots == 1
