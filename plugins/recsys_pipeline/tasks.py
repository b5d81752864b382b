"""Airflow tasks of the training DAG: thin wrappers that give each stage its settings.

Each task resolves the MySQL and S3 settings (Airflow connections first, then the
environment), the run's folder (from the run id) and its parameters, then calls one
function of ``recsys_pipeline.stages``. Errors that retrying cannot fix -- a file that
breaks the contract, a failed data check, a dbt test failure -- fail the task at once
(``AirflowFailException``) instead of burning retries; the gate's "no" skips the
MySQL load with its reasons in the log, which is an outcome, not a crash.
"""

from __future__ import annotations

import functools
import logging

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.sdk import get_current_context, task

from recsys_pipeline import stages
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.quality import DataQualityError
from recsys_pipeline.settings import mysql_settings_for_task, s3_settings_for_task
from recsys_pipeline.transform import DbtError
from recsys_pipeline.warehouse import LoadError

log = logging.getLogger(__name__)

PERMANENT_ERRORS = (ContractError, DataQualityError, DbtError, LoadError)


def _fail_fast(function):
    """Turn errors that a retry cannot fix into AirflowFailException (no retries)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PERMANENT_ERRORS as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error

    return wrapper


def _run():
    """(params, run folder) of the current task's DAG run."""
    context = get_current_context()
    params = context["params"]
    release_id = stages.release_id_for(context.get("logical_date"), context["run_id"])
    return params, stages.run_folder(params["dataset"], release_id)


@task
@_fail_fast
def load_raw() -> dict:
    params, folder = _run()
    summary = stages.load(
        mysql_settings_for_task(), params["dataset"], load_id=stages.load_id_for(params["dataset"], folder.name),
        full_refresh=bool(params.get("full_refresh", False)),
    )
    log.info("loaded %s; dbt build will be %s: %s", summary["rows"],
             "a full refresh" if summary["dbt_plan"]["full_refresh"] else "incremental", summary["dbt_plan"]["reason"])
    return summary


@task
@_fail_fast
def document_features(loaded: dict) -> dict:
    """After the dbt task group: record the build for the next incremental run, write the docs site into the release."""
    _, folder = _run()
    return stages.document_features(mysql_settings_for_task(), folder, loaded["dbt_vars"], loaded["dbt_plan"]["fingerprint"])


@task
@_fail_fast
def check_quality(features: dict) -> dict:
    _, folder = _run()
    return stages.check_quality(mysql_settings_for_task(), folder)


@task
@_fail_fast
def train_two_tower(loaded: dict) -> dict:
    params, folder = _run()
    return stages.train(mysql_settings_for_task(), folder, {"epochs": int(params["epochs"])}, loaded["data_version"])


@task
@_fail_fast
def evaluate_models(trained: dict) -> dict:
    _, folder = _run()
    return stages.evaluate(mysql_settings_for_task(), folder)


@task
@_fail_fast
def score_users(trained: dict) -> dict:
    params, folder = _run()
    return stages.recommend(mysql_settings_for_task(), folder, int(params["top_k"]))


@task
def promotion_gate(loaded: dict, metrics: dict) -> dict:
    params, folder = _run()
    return stages.promotion_gate(s3_settings_for_task(), folder, params["dataset"], loaded["data_version"], bool(params["force_publish"]))


@task
def publish_release(loaded: dict, decision: dict) -> dict:
    params, folder = _run()
    published = stages.publish(s3_settings_for_task(), folder, params["dataset"], loaded["data_version"])
    return published | {"promote": decision["promote"]}


@task
def load_recommendations(published: dict) -> dict:
    _, folder = _run()
    if not published["promote"]:
        raise AirflowSkipException("the promotion gate kept the current champion; the recommendations table is unchanged")
    return stages.load_recommendations(mysql_settings_for_task(), folder)
