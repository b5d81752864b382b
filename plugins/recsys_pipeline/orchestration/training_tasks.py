"""Airflow tasks of a training run after its features are ready: train, measure, decide, publish.

The gate's "no" skips the MySQL load with its reasons in the log, which is an outcome,
not a crash; a dry run stops before publishing.
"""

from __future__ import annotations

import logging

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from recsys_pipeline.orchestration.release_pool import POOL as RELEASE_POOL
from recsys_pipeline.orchestration.runtime import current_run, fail_fast
from recsys_pipeline.release import gate, publish, recommendations_table, rollback
from recsys_pipeline.release.champion import ChampionMoved
from recsys_pipeline.release.layout import ReleaseError
from recsys_pipeline.run import dataset_key
from recsys_pipeline.settings import mysql_settings_for_task, s3_settings_for_task
from recsys_pipeline.training import evaluation, fit, scoring

log = logging.getLogger(__name__)

# the trigger form's model families: the two-tower model with its user tower's sequence encoder
MODEL_FAMILIES = {
    "two_tower": {"sequence_encoder": "pooling"},
    "two_tower_gru": {"sequence_encoder": "gru"},
    "two_tower_attention": {"sequence_encoder": "attention"},
}


@task
@fail_fast
def train_two_tower(ready: dict) -> dict:
    params, run = current_run()
    family = params.get("model_family", "two_tower")
    if family not in MODEL_FAMILIES:
        raise AirflowFailException(f"model_family={family!r}: expected one of {sorted(MODEL_FAMILIES)}")
    overrides = {"epochs": int(params["epochs"])} | MODEL_FAMILIES[family]
    return fit.train(
        mysql_settings_for_task(),
        run,
        overrides,
        ready["data_version"],
        ready.get("load_id"),
        repeat_policy=params.get("repeat_policy"),
        candidate_ranking=bool(params.get("candidate_ranking", True)),
        top_k=int(params["top_k"]),
    )


@task
@fail_fast
def evaluate_models() -> dict:
    _, run = current_run()
    return evaluation.evaluate(run.artifacts)


@task
@fail_fast
def score_users() -> dict:
    params, run = current_run()
    return scoring.recommend(run.artifacts, int(params["top_k"]))


@task
@fail_fast
def backtest() -> dict:
    """The gate's view: every model refitted before the global time cut and measured after it (always run)."""
    params, run = current_run()
    return evaluation.backtest(run.artifacts, int(params["epochs"]))


@task(trigger_rule="none_failed")  # a skipped backtest does not skip the gate
def promotion_gate(ready: dict) -> dict:
    params, run = current_run()
    return gate.promotion_gate(s3_settings_for_task(), run, ready["data_version"], bool(params["force_publish"]))


@task(pool=RELEASE_POOL)  # one writer of a champion at a time, across DAGs
def publish_release(ready: dict, decision: dict) -> dict:
    params, run = current_run()
    if params.get("dry_run"):
        raise AirflowSkipException(
            f"dry run: nothing published and the champion unchanged (gate said "
            f"{'promote' if decision['promote'] else 'no'}); the run's model, metrics and recommendations are in "
            f"{run.folder}"
        )
    try:
        published = publish.publish(s3_settings_for_task(), run, ready["data_version"], mysql_settings_for_task())
    except ChampionMoved as error:  # another writer (a rollback) moved the pointer: a retry must not undo it
        raise AirflowFailException(f"{error}; the release is published, only the pointer was not moved") from error
    return published | {"promote": decision["promote"]}


@task(pool=RELEASE_POOL)
def load_recommendations(published: dict) -> dict:
    _, run = current_run()
    if not published["promote"]:
        raise AirflowSkipException(
            "the promotion gate kept the current champion; the recommendations table is unchanged"
        )
    try:
        return recommendations_table.load_recommendations(
            mysql_settings_for_task(), run.artifacts, s3_settings_for_task(), published["release_id"]
        )
    except ChampionMoved as error:  # a rollback since the publish wins; loading would undo it in MySQL
        raise AirflowFailException(str(error)) from error


@task(pool=RELEASE_POOL)
def rollback_champion() -> dict:
    """The rollback DAG's one step: check the release is complete, move the pointer, reload MySQL."""
    params = get_current_context()["params"]
    key = dataset_key(params["dataset"])
    try:
        result = rollback.rollback(s3_settings_for_task(), mysql_settings_for_task(), key, params["release_id"])
    except ReleaseError as error:
        raise AirflowFailException(f"rollback refused, nothing changed: {error}") from error
    log.info(
        "champion of %s: %s -> %s; %s rows in %s",
        key,
        result["rolled_back_from"],
        result["champion"],
        result["recommendations"]["rows"],
        result["recommendations"]["table"],
    )
    return result
