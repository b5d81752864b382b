"""Airflow tasks of the recsys DAGs: thin wrappers that give each stage its settings.

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

from ml.data import SplitError
from recsys_pipeline import stages, warehouse_lock
from recsys_pipeline.assets import FEATURES, announced_features
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.quality import DataQualityError
from recsys_pipeline.settings import mysql_settings_for_task, s3_settings_for_task
from recsys_pipeline.transform import DbtError
from recsys_pipeline.warehouse import LoadError

log = logging.getLogger(__name__)

PERMANENT_ERRORS = (ContractError, DataQualityError, DbtError, LoadError, SplitError)


def _fail_fast(function):
    """Turn errors that a retry cannot fix into AirflowFailException (no retries)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PERMANENT_ERRORS as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error

    return wrapper


# the trigger form's model families: the two-tower model with its user tower's sequence encoder
MODEL_FAMILIES = {"two_tower": {"sequence_encoder": "pooling"}, "two_tower_gru": {"sequence_encoder": "gru"}}


def _run():
    """(params, run folder) of the current task's DAG run.

    A run triggered by the features asset trains on the dataset its event names, whatever
    the form's default says; ``params["dataset"]`` is set to it for every task.
    """
    context = get_current_context()
    params = dict(context["params"])
    announced = announced_features(context)
    if announced:
        params["dataset"] = announced["dataset"]
    release_id = stages.release_id_for(context.get("logical_date"), context["run_id"])
    return params, stages.run_folder(params["dataset"], release_id)


@task.branch
def plan_features() -> str:
    """Build features in this run (manual or weekly run), or use the build the features asset announced."""
    context = get_current_context()
    announced = announced_features(context)
    if announced:
        log.info("triggered by the features asset: training on load %s of %s, no new load or dbt build",
                 announced["load_id"], announced["dataset"])
        return "use_built_features"
    if not context["params"].get("build_features", True):
        log.info("build_features is off: training on the warehouse's current features (checked before training)")
        return "use_built_features"
    log.info("manual or scheduled run: loading, validating and building features first")
    return "load_raw"


@task
@_fail_fast
def use_built_features() -> dict:
    """Check the warehouse still holds the announced (or current) build; bring its Data Docs and dbt docs along."""
    params, folder = _run()
    settings = mysql_settings_for_task()
    announced = announced_features(get_current_context()) or stages.current_build(settings, params["dataset"])
    return stages.use_built_features(settings, announced, folder)


@task(trigger_rule="none_failed_min_one_success")
def features_ready() -> dict:
    """Where both paths meet: the load the rest of the run trains on (from this run's gate or the asset)."""
    ti = get_current_context()["ti"]
    ready = ti.xcom_pull(task_ids="validate_raw") or ti.xcom_pull(task_ids="use_built_features")
    if not ready:
        raise AirflowFailException("neither validate_raw nor use_built_features produced a load to train on")
    return {k: ready[k] for k in ("dataset", "load_id", "data_version")}


@task(outlets=[FEATURES])
def announce_features(admitted: dict, checked: dict) -> dict:
    """Update the features asset (after the features gate passed): training runs on it."""
    params, folder = _run()
    announcement = stages.features_announcement(admitted | {"dataset": params["dataset"]}, folder)
    get_current_context()["outlet_events"][FEATURES].extra = announcement
    log.info("features asset updated: %s", announcement)
    return announcement


@task
@_fail_fast
def load_raw() -> dict:
    """Stage the dataset in ``raw_*__new``; a file that breaks the contract is quarantined and fails the task."""
    params, folder = _run()
    context = get_current_context()
    settings = mysql_settings_for_task()
    # one feature build at a time across DAGs: given back when the features gate passes (or by the failure alert)
    warehouse_lock.acquire(settings, warehouse_lock.holder_for(context["dag"].dag_id, context["run_id"]))
    staged = stages.stage(settings, params["dataset"], load_id=stages.load_id_for(params["dataset"], folder.name))
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
    context = get_current_context()
    settings = mysql_settings_for_task()
    try:
        checked = stages.check_quality(settings, folder)
    finally:
        _publish_data_docs(params["dataset"], folder, "features")
    stages.record_checked_build(settings, folder)
    warehouse_lock.release(settings, warehouse_lock.holder_for(context["dag"].dag_id, context["run_id"]))
    return checked


@task
@_fail_fast
def train_two_tower(loaded: dict) -> dict:
    params, folder = _run()
    family = params.get("model_family", "two_tower")
    if family not in MODEL_FAMILIES:
        raise AirflowFailException(f"model_family={family!r}: expected one of {sorted(MODEL_FAMILIES)}")
    overrides = {"epochs": int(params["epochs"])} | MODEL_FAMILIES[family]
    return stages.train(mysql_settings_for_task(), folder, overrides, loaded["data_version"], loaded.get("load_id"))


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
@_fail_fast
def backtest(metrics: dict) -> dict:
    """The global time-cut backtest, when the form asks for it (it refits every model)."""
    params, folder = _run()
    if not params.get("backtest"):
        raise AirflowSkipException("backtest is off (a form parameter): the per-user holdout's metrics are the run's")
    return stages.backtest(folder, int(params["epochs"]))


@task(trigger_rule="none_failed")  # a skipped backtest does not skip the gate
def promotion_gate(loaded: dict, metrics: dict) -> dict:
    params, folder = _run()
    return stages.promotion_gate(s3_settings_for_task(), folder, params["dataset"], loaded["data_version"], bool(params["force_publish"]))


@task
def publish_release(loaded: dict, decision: dict) -> dict:
    params, folder = _run()
    if params.get("dry_run"):
        raise AirflowSkipException(
            f"dry run: nothing published and the champion unchanged (gate said {'promote' if decision['promote'] else 'no'}); "
            f"the run's model, metrics and recommendations are in {folder}"
        )
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


def build_and_check_features():
    """load_raw -> validate_raw -> dbt task group -> document_features -> check_quality, in the current DAG.

    Returns (staged, admitted, checked) task outputs; both the features DAG and a manual
    training run build features this way.
    """
    from recsys_pipeline.dbt_task_group import features_task_group

    staged = load_raw()
    admitted = validate_raw(staged)
    features = features_task_group()
    documented = document_features(admitted)
    admitted >> features >> documented
    checked = check_quality(documented)
    return staged, admitted, checked
