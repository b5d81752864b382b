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
    """Stage the dataset in ``raw_*__new``; a file that breaks the contract is quarantined and fails the task."""
    params, folder = _run()
    staged = stages.stage(mysql_settings_for_task(), params["dataset"], load_id=stages.load_id_for(params["dataset"], folder.name))
    log.info("staged %s for the raw gate", staged["rows"])
    return staged


@task
@_fail_fast
def validate_raw(staged: dict) -> dict:
    """The raw gate: GX suites on the staged load; only a load that passes replaces the raw tables."""
    params, folder = _run()
    try:
        admitted = stages.validate_raw(mysql_settings_for_task(), folder, staged, full_refresh=bool(params.get("full_refresh", False)))
    finally:
        _publish_data_docs(params["dataset"], folder, "raw")
    log.info("admitted %s; dbt build will be %s: %s", admitted["rows"],
             "a full refresh" if admitted["dbt_plan"]["full_refresh"] else "incremental", admitted["dbt_plan"]["reason"])
    return admitted


def _publish_data_docs(dataset: str, folder, stage_name: str) -> None:
    """Data Docs go to object storage for every run, passed or failed; a failure to upload them is only logged."""
    try:
        stages.publish_data_docs(s3_settings_for_task(), folder, dataset, stage_name)
    except Exception:  # noqa: BLE001 - the gate's own outcome must not be masked by the docs upload
        log.exception("could not publish the %s gate's Data Docs (they are in %s)", stage_name, folder / "data_docs" / stage_name)


@task
@_fail_fast
def document_features(admitted: dict) -> dict:
    """After the dbt task group: record the build for the next incremental run, write the docs site into the release."""
    _, folder = _run()
    return stages.document_features(mysql_settings_for_task(), folder, admitted["dbt_vars"], admitted["dbt_plan"]["fingerprint"])


@task
@_fail_fast
def check_quality(features: dict) -> dict:
    """The features gate: GX suites on dbt's models, before anything is trained."""
    params, folder = _run()
    try:
        return stages.check_quality(mysql_settings_for_task(), folder)
    finally:
        _publish_data_docs(params["dataset"], folder, "features")


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


@task
def rollback_champion() -> dict:
    """The rollback DAG's one step: check the release is complete, move the pointer, reload MySQL."""
    from recsys_pipeline.releases import ReleaseError

    params = get_current_context()["params"]
    try:
        result = stages.rollback(s3_settings_for_task(), mysql_settings_for_task(), params["dataset"], params["release_id"])
    except ReleaseError as error:
        raise AirflowFailException(f"rollback refused, nothing changed: {error}") from error
    log.info("champion of %s: %s -> %s; %s rows in %s", params["dataset"], result["rolled_back_from"], result["champion"],
             result["recommendations"]["rows"], result["recommendations"]["table"])
    return result
