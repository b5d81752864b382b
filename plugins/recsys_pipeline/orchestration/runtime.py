"""What every recsys task does first: find its run, and fail fast on errors a retry cannot fix.

Errors that retrying cannot fix -- a file that breaks the contract, a failed data check,
a dbt test failure, a split the models cannot use, a repeat policy outside the allowed
values -- fail the task at once (``AirflowFailException``) instead of burning retries.
"""

from __future__ import annotations

import functools

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from ml.data import SplitError
from ml.repeat_policy import RepeatPolicyError
from recsys_pipeline.features.dbt import DbtError
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.orchestration.assets import announced_features
from recsys_pipeline.quality.suites import DataQualityError
from recsys_pipeline.run import RunContext
from recsys_pipeline.warehouse import LoadError

PERMANENT_ERRORS = (ContractError, DataQualityError, DbtError, LoadError, RepeatPolicyError, SplitError)


def fail_fast(function):
    """Turn errors that a retry cannot fix into AirflowFailException (no retries)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PERMANENT_ERRORS as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error

    return wrapper


def current_run() -> tuple[dict, RunContext]:
    """The current task's parameters and ``RunContext``.

    A run triggered by the features asset works on the dataset its event names, whatever
    the form's default says; ``params["dataset"]`` is set to it for every task.
    """
    context = get_current_context()
    params = dict(context["params"])
    announced = announced_features(context)
    if announced:
        params["dataset"] = announced["dataset"]
    run = RunContext.for_run(params["dataset"], context.get("logical_date"), context["run_id"])
    run.prepare()  # the folder (and its run.json) exists from the first task on, failed runs included
    return params, run


def lease_holder() -> str:
    """Who holds the warehouse lease for the current DAG run."""
    from recsys_pipeline.orchestration.warehouse_lock import holder_for

    context = get_current_context()
    return holder_for(context["dag"].dag_id, context["run_id"])
