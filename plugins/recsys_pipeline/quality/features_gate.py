"""The features gate: Great Expectations suites on dbt's models, before anything is trained.

dbt's own tests check each model's keys and relationships as it is built; this gate
checks what training relies on across models (splits in time order, every evaluated
user with train and test items, plausible feature ranges) and stops the run with the
suite, expectation, table and column when it does not hold.
"""

from __future__ import annotations

import shutil

from recsys_pipeline.quality import suites
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import MySQLSettings

GATE = "features"


def check_quality(settings: MySQLSettings, run: RunContext) -> dict:
    """Run the features gate; raise ``DataQualityError`` (stopping the run) if any expectation fails."""
    artifacts = run.artifacts
    docs_dir = artifacts.data_docs(GATE)
    shutil.rmtree(docs_dir, ignore_errors=True)
    tables = {"raw_events": (settings.raw_database, "raw_events")}
    try:
        results = suites.run_suites(settings, GATE, tables=tables, docs_dir=docs_dir, run_name=run.release_id)
    except suites.DataQualityError as error:
        artifacts.write_json(RunArtifacts.QUALITY_FEATURES, {"passed": False, "error": str(error)})
        raise
    summary = {"passed": True, "suites": {r.suite: r.to_dict() for r in results}}
    artifacts.write_json(RunArtifacts.QUALITY_FEATURES, summary)
    return summary
