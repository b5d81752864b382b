"""Stages strung together outside Airflow, for tests that need a loaded or built warehouse.

The DAG runs each of these as its own task; tests that only need the result (a load
admitted, features built) call the same stage functions in the same order here.
"""

from __future__ import annotations

from recsys_pipeline.features import builds, dbt
from recsys_pipeline.ingest.staging import stage
from recsys_pipeline.quality.raw_gate import validate_raw
from recsys_pipeline.run import RunContext


def load(settings, dataset: str, run: RunContext, full_refresh: bool = False) -> dict:
    """load_raw and validate_raw: stage ``dataset`` and admit it through the raw gate."""
    return validate_raw(settings, run, stage(settings, dataset, run.load_id), full_refresh)


def build_features(settings, run: RunContext, dbt_vars: dict, full_refresh: bool = False) -> dict:
    """The dbt task group (in one ``dbt build``) and document_features."""
    plan = dbt.build(settings, dbt_vars, full_refresh)
    return builds.document_features(settings, run, dbt_vars, plan.fingerprint)
