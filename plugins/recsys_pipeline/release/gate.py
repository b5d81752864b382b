"""The promotion decision of a run: may its model replace the champion?

The rules are ``ml.gate``'s; here they meet the run's gate view (``metrics.json`` ->
``backtest``: the global time cut, or its fallback) and the champion in the bucket,
re-evaluated on the same view by refitting its recorded configuration there, and the
decision is written (``decision.json``, with every check, interval and reason) for
publishing, the report and the model card.
"""

from __future__ import annotations

import logging

import numpy as np

from ml.names import BASELINES, BOUGHT_BEFORE, NEW_ITEMS
from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.release.champion import read_champion
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)


class GateViewMissing(RuntimeError):
    """metrics.json has no gate view (the ``backtest`` task did not run): the gate cannot decide."""


def gate_view(report: dict, wanted: str) -> tuple[dict, str, str]:
    """The view's record (``backtest``), the variant that decides (``wanted`` when measured, else new items)
    and a note on the choice."""
    backtest = report.get("backtest") or {}
    variants = backtest.get("variants", {})
    if "view" not in backtest or not variants:
        raise GateViewMissing(
            "metrics.json holds no gate view (its 'backtest' with the time cut's per-user NDCG@20): "
            "run the backtest task before the gate"
        )
    variant = wanted if wanted in variants else NEW_ITEMS
    note = "" if variant == wanted else f" ({wanted} not measured on this view: {variant} decides)"
    return backtest, variant, note


def _champion_scores(s3, s3_settings: S3Settings, run: RunContext, champion: dict | None, variant: str):
    """The champion's per-user NDCG@20 on this run's view, its metrics and a note (None scores: not compared)."""
    from recsys_pipeline.training.evaluation import champion_on_gate_view

    if not champion:
        return None, {"note": "no champion yet"}
    training_key = layout.release_prefix(s3_settings, run.dataset_key, champion["release_id"]) + RunArtifacts.TRAINING
    own = run.artifacts.read_json(RunArtifacts.TRAINING).get("release_id")
    if champion["release_id"] == own:
        return None, {"note": "the champion is this run's own release (a rerun): nothing to compare"}
    training = storage.get_json(s3, s3_settings.bucket, training_key)
    if not training or not training.get("config"):
        return None, {"note": f"the champion's training record {training_key} is missing: not re-evaluated"}
    metrics, per_user = champion_on_gate_view(run.artifacts, training, variant)
    return np.asarray(per_user), {
        "note": "the champion's configuration refitted on this view's train side (retrieval order)",
        "release_id": champion["release_id"],
        "metrics": metrics,
    }


def promotion_gate(s3_settings: S3Settings, run: RunContext, data_version: str, force: bool = False) -> dict:
    """Decide whether this run's model becomes champion; write the decision and the report."""
    from ml.gate import GateConfig, decide
    from recsys_pipeline.reporting.report import write_report  # matplotlib: not when Airflow parses the DAG

    artifacts = run.artifacts
    config = GateConfig.from_env()
    backtest, variant, note = gate_view(artifacts.read_json(RunArtifacts.METRICS), config.view)
    measured = backtest["variants"][variant]
    per_user = {name: np.asarray(values) for name, values in measured["per_user_ndcg@20"].items()}
    challenger = measured["challenger"]
    baselines = [name for name in (*BASELINES, BOUGHT_BEFORE) if name in per_user]
    s3 = storage.client(s3_settings)
    storage.ensure_bucket(s3, s3_settings.bucket)
    champion = read_champion(s3, s3_settings, run.dataset_key)
    champion_scores, champion_record = _champion_scores(s3, s3_settings, run, champion, variant)
    decision = decide(challenger, per_user, measured["models"], baselines, champion_scores, config)
    view = backtest["view"]
    view_line = f"view: {view['label']}, {variant}{note}: {view['reason']}; {measured['evaluated_users']} test users"
    payload = decision.to_dict() | {
        "view": view | {"variant": variant, "test_users": measured["evaluated_users"]},
        "champion_evaluation": champion_record,
        "forced": force,
        "champion_before": champion.get("release_id") if champion else None,
    }
    payload["reasons"].insert(0, view_line)
    if force and not decision.promote:
        payload["promote"] = True
        payload["reasons"].append("forced: promoted by the force_publish parameter despite failed checks")
    artifacts.write_json(RunArtifacts.DECISION, payload)
    write_report(artifacts, run.dataset_key)
    for reason in payload["reasons"]:
        log.info("gate %s", reason)
    log.info("gate decision: %s", "PROMOTE" if payload["promote"] else "KEEP CHAMPION")
    return {"promote": payload["promote"], "outcome": payload["outcome"], "reasons": payload["reasons"]}
