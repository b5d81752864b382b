"""Airflow plugin: create the one-slot ``recsys_release`` pool when an Airflow job starts.

Tasks in a missing pool are never scheduled; this makes every scheduler that loads the
project's plugins create it (see ``recsys_pipeline.orchestration.release_pool``).
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


class _CreatePoolOnStart:
    """A lifecycle listener: ``on_starting`` runs in each Airflow job (scheduler, triggerer, ...)."""

    @hookimpl
    def on_starting(self, component) -> None:
        # Airflow jobs only: a task runner (no metadata database in Airflow 3) calls this hook too
        if type(component).__name__ != "Job":
            return
        try:
            from recsys_pipeline.orchestration.release_pool import ensure_pool

            ensure_pool()
        except Exception:  # never stop a scheduler from starting; the DAG warning names the missing pool
            log.exception("could not create the recsys_release pool")


class RecsysReleasePoolPlugin(AirflowPlugin):
    name = "recsys_release_pool"
    listeners = [_CreatePoolOnStart()]
