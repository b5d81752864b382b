"""Airflow tasks of a feature build: load, the raw gate, dbt, its docs, the features gate, the asset.

Each task resolves its settings (Airflow connections first, then the environment) and
its run, then calls one stage function. Both the features DAG and a training run that
builds its own features use ``build_and_check_features``.
"""

from __future__ import annotations

import logging

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from recsys_pipeline.features import builds
from recsys_pipeline.ingest.staging import stage
from recsys_pipeline.orchestration import warehouse_lock
from recsys_pipeline.orchestration.assets import FEATURES, announced_features
from recsys_pipeline.orchestration.runtime import current_run, fail_fast, lease_holder
from recsys_pipeline.quality import data_docs, features_gate, raw_gate
from recsys_pipeline.run import RunContext
from recsys_pipeline.settings import mysql_settings_for_task, s3_settings_for_task

log = logging.getLogger(__name__)

READY_KEYS = ("dataset", "load_id", "data_version")  # what the training stages need of a feature build


@task.branch
def plan_features() -> str:
    """Build features in this run (manual or weekly run), or use the build the features asset announced."""
    context = get_current_context()
    announced = announced_features(context)
    if announced:
        log.info(
            "triggered by the features asset: training on load %s of %s, no new load or dbt build",
            announced["load_id"],
            announced["dataset"],
        )
        return "use_built_features"
    if not context["params"].get("build_features", True):
        log.info("build_features is off: training on the warehouse's current features (checked before training)")
        return "use_built_features"
    log.info("manual or scheduled run: loading, validating and building features first")
    return "load_raw"


@task
@fail_fast
def use_built_features() -> dict:
    """Check the warehouse still holds the announced (or current) build; bring its Data Docs and dbt docs along."""
    params, run = current_run()
    settings = mysql_settings_for_task()
    announced = announced_features(get_current_context()) or builds.current_build(settings, params["dataset"])
    return builds.use_built_features(settings, announced, run)


@task(trigger_rule="none_failed_min_one_success")
def features_ready() -> dict:
    """Where both paths meet: the load the rest of the run trains on (from this run's gate or the asset)."""
    ti = get_current_context()["ti"]
    ready = ti.xcom_pull(task_ids="validate_raw") or ti.xcom_pull(task_ids="use_built_features")
    if not ready:
        raise AirflowFailException("neither validate_raw nor use_built_features produced a load to train on")
    return {k: ready[k] for k in READY_KEYS}


@task
@fail_fast
def load_raw() -> dict:
    """Stage the dataset in ``raw_*__new``; a file that breaks the contract is quarantined and fails the task."""
    _, run = current_run()
    settings = mysql_settings_for_task()
    # one feature build at a time across DAGs: renewed while the build's tasks run, given back when the
    # features gate passes (or by the failure alert of a task whose failure ends the build)
    warehouse_lock.acquire(settings, lease_holder())
    with warehouse_lock.renewing(settings, lease_holder()):
        staged = stage(settings, run.dataset, load_id=run.load_id)
    log.info("staged %s for the raw gate", staged["rows"])
    return staged


@task
@fail_fast
@warehouse_lock.holding_warehouse
def validate_raw(staged: dict) -> dict:
    """The raw gate: GX suites on the staged load; only a load that passes replaces the raw tables."""
    params, run = current_run()
    try:
        admitted = raw_gate.validate_raw(
            mysql_settings_for_task(), run, staged, full_refresh=bool(params.get("full_refresh", False))
        )
    finally:
        _publish_data_docs(run, raw_gate.GATE)
    log.info(
        "admitted %s; dbt build will be %s: %s",
        admitted["rows"],
        "a full refresh" if admitted["dbt_plan"]["full_refresh"] else "incremental",
        admitted["dbt_plan"]["reason"],
    )
    return admitted


def _publish_data_docs(run: RunContext, gate: str) -> None:
    """Data Docs go to object storage for every run, passed or failed; a failure to upload them is only logged."""
    try:
        data_docs.publish_data_docs(s3_settings_for_task(), run, gate)
    except Exception:  # the gate's own outcome must not be masked by the docs upload
        log.exception("could not publish the %s gate's Data Docs (they are in %s)", gate, run.artifacts.data_docs(gate))


@task
@fail_fast
@warehouse_lock.holding_warehouse
def document_features(admitted: dict) -> dict:
    """After the dbt task group: record the build for the next incremental run, write the docs site into the run."""
    _, run = current_run()
    return builds.document_features(
        mysql_settings_for_task(), run, admitted["dbt_vars"], admitted["dbt_plan"]["fingerprint"]
    )


@task
@fail_fast
def check_quality() -> dict:
    """The features gate: GX suites on dbt's models, before anything is trained; then the warehouse is free."""
    _, run = current_run()
    settings = mysql_settings_for_task()
    with warehouse_lock.renewing(settings, lease_holder()):
        try:
            checked = features_gate.check_quality(settings, run)
        finally:
            _publish_data_docs(run, features_gate.GATE)
        builds.record_checked_build(settings, run)
    warehouse_lock.release(settings, lease_holder())
    return checked


@task(outlets=[FEATURES])
def announce_features(admitted: dict) -> dict:
    """Update the features asset (after the features gate passed): training runs on it."""
    _, run = current_run()
    announcement = builds.announcement(admitted, run)
    get_current_context()["outlet_events"][FEATURES].extra = announcement
    log.info("features asset updated: %s", announcement)
    return announcement


def build_and_check_features():
    """load_raw -> validate_raw -> dbt task group -> document_features -> check_quality, in the current DAG.

    Returns (staged, admitted, checked) task outputs.
    """
    from recsys_pipeline.features.task_group import features_task_group

    staged = load_raw()
    admitted = validate_raw(staged)
    features = features_task_group()
    documented = document_features(admitted)
    checked = check_quality()
    admitted >> features >> documented >> checked
    return staged, admitted, checked
