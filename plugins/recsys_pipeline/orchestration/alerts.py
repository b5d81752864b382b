"""Failure callbacks: when a task gives up, say which stage of the pipeline broke and why.

A data engineer woken by a failed scheduled run wants "the raw data gate refused the
load: <rule>" before opening a single log. The callback runs once a task has failed
for good (after its retries), writes that one line to the task log at ERROR level and,
when ``RECSYS_ALERT_WEBHOOK_URL`` is set, posts it as JSON (``{"text": ...}``, which
Slack, Mattermost and Teams incoming webhooks accept). A broken webhook is logged and
never masks the task's own failure. When the failed task is one whose failure ends the
feature build (``warehouse_lock.failure_ends_the_build``: not a watcher of one dbt node,
while the build it reports on may still run), the callback also gives back the warehouse
lease if this run holds it, so a failed build does not block the next.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request

log = logging.getLogger(__name__)

# task id (or task-group prefix) -> the pipeline stage a reader knows it by
STAGES = {
    "plan_features": "feature planning",
    "load_raw": "raw load (file contract)",
    "validate_raw": "raw data gate (Great Expectations)",
    "features.": "feature build (dbt)",
    "document_features": "feature build (dbt docs)",
    "check_quality": "features data gate (Great Expectations)",
    "announce_features": "feature handoff",
    "use_built_features": "feature handoff",
    "features_ready": "feature handoff",
    "train_two_tower": "training (TensorFlow)",
    "evaluate_models": "evaluation",
    "backtest": "evaluation (time-cut backtest)",
    "score_users": "batch scoring",
    "promotion_gate": "promotion gate",
    "approve_promotion": "promotion approval (human in the loop)",
    "publish_release": "publishing (object storage)",
    "load_recommendations": "publishing (MySQL recommendations)",
    "rollback_champion": "rollback",
}


def stage_of(task_id: str) -> str:
    """The stage a task belongs to (its own id when it is not a known stage)."""
    for key, stage in STAGES.items():
        if task_id == key or (key.endswith(".") and task_id.startswith(key)):
            return stage
    return task_id


def failure_message(
    dag_id: str, task_id: str, run_id: str, try_number: int | None, error: BaseException | str | None
) -> str:
    if isinstance(error, BaseException):
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    else:
        reason = (error or "no exception was recorded (timeout, kill or upstream failure)").strip().splitlines()[0]
    tries = f", try {try_number}" if try_number else ""
    return f"[recsys] {dag_id}: stage '{stage_of(task_id)}' failed at task {task_id} (run {run_id}{tries}) -- {reason}"


def notify_failure(context) -> None:
    """``on_failure_callback`` of every recsys task."""
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    message = failure_message(
        dag_id,
        getattr(ti, "task_id", "?"),
        context.get("run_id") or getattr(ti, "run_id", "?"),
        getattr(ti, "try_number", None),
        context.get("exception"),
    )
    log.error(message)
    _give_back_warehouse(dag_id, getattr(ti, "task_id", "?"), context.get("run_id") or getattr(ti, "run_id", "?"))
    url = os.environ.get("RECSYS_ALERT_WEBHOOK_URL")
    if url:
        try:
            request = urllib.request.Request(
                url,
                data=json.dumps({"text": message}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # the operator's own URL
                response.read()
        except Exception as error:  # an alert must never hide the failure it reports
            log.warning("could not post the failure alert to RECSYS_ALERT_WEBHOOK_URL: %s", error)


def _give_back_warehouse(dag_id: str, task_id: str, run_id: str) -> None:
    """A run whose feature build failed must not keep others out of the warehouse."""
    from recsys_pipeline.orchestration import warehouse_lock
    from recsys_pipeline.settings import mysql_settings_for_task

    if not warehouse_lock.failure_ends_the_build(task_id):
        return
    try:
        warehouse_lock.release(mysql_settings_for_task(), warehouse_lock.holder_for(dag_id, run_id))
    except Exception as error:  # the lease expires on its own
        log.warning("could not give the warehouse lease back (it expires on its own): %s", error)
