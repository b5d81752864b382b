"""The promotion decision of a run: may its model replace the champion?

The rules are ``ml.gate``'s; here they meet the run's metrics and the champion in the
bucket, and the decision is written (``decision.json``, with every check and reason)
for publishing, the report and the model card.
"""

from __future__ import annotations

import logging

from ml.names import BASELINES, CHALLENGER
from recsys_pipeline import storage
from recsys_pipeline.release.champion import read_champion
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)


def promotion_gate(s3_settings: S3Settings, run: RunContext, data_version: str, force: bool = False) -> dict:
    """Decide whether this run's model becomes champion; write the decision and the report."""
    from ml.gate import GateConfig, decide
    from recsys_pipeline.reporting.report import write_report  # matplotlib: not when Airflow parses the DAG

    artifacts = run.artifacts
    report = artifacts.read_json(RunArtifacts.METRICS)
    s3 = storage.client(s3_settings)
    storage.ensure_bucket(s3, s3_settings.bucket)
    champion = read_champion(s3, s3_settings, run.dataset_key)
    champion_metrics = champion.get("metrics") if champion else None
    comparable = bool(champion) and champion.get("data_version") == data_version
    baselines = [name for name in BASELINES if name in report["models"]]
    decision = decide(CHALLENGER, report["models"], baselines, champion_metrics, comparable, GateConfig.from_env())
    payload = decision.to_dict() | {
        "forced": force,
        "champion_before": champion.get("release_id") if champion else None,
    }
    if force and not decision.promote:
        payload["promote"] = True
        payload["reasons"].append("forced: promoted by the force_publish parameter despite failed checks")
    artifacts.write_json(RunArtifacts.DECISION, payload)
    write_report(artifacts, run.dataset_key)
    for reason in payload["reasons"]:
        log.info("gate %s", reason)
    log.info("gate decision: %s", "PROMOTE" if payload["promote"] else "KEEP CHAMPION")
    return {"promote": payload["promote"], "reasons": payload["reasons"]}
