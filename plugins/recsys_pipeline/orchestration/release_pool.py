"""The Airflow pool every writer of a champion and of ``recommendations`` runs in: one slot.

``publish_release`` and ``load_recommendations`` (training) and ``rollback_champion``
(rollback) run in it, so across DAGs they queue in Airflow instead of racing; the
writer lock (``release.writer_lock``) also covers the CLI and anything outside Airflow.

A task in a pool that does not exist is never scheduled, so the pool is created where
Airflow starts: ``scripts/airflow_local.py`` creates it after Airflow is healthy, and
the listener in ``plugins/recsys_release_pool_plugin.py`` creates it whenever a
scheduler (or any other Airflow job) starts on a metadata database without it -- the
compose deployment and any other scheduler included. ``airflow dags test`` ignores
pools, so ``make demo`` needs none.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

POOL = "recsys_release"
SLOTS = 1
DESCRIPTION = (
    "one writer at a time of a champion pointer and of the recommendations table: "
    "publish_release, load_recommendations and rollback_champion of every recsys DAG"
)


def ensure_pool() -> bool:
    """Create the pool in Airflow's metadata database if it is missing; True when it was created.

    An existing pool is left as it is (an operator may have reasons); it should keep one slot.
    """
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        if Pool.get_pool(POOL, session=session) is not None:
            return False
        Pool.create_or_update_pool(POOL, SLOTS, DESCRIPTION, include_deferred=False, session=session)
    log.info("created the Airflow pool %s (%d slot)", POOL, SLOTS)
    return True
