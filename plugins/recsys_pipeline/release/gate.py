"""The promotion decision of a run: may its model replace the champion?

The rules are ``ml.gate``'s; here they meet the run's gate view (``metrics.json`` ->
``backtest``: the global time cut, or its fallback) and the champion in the bucket,
re-evaluated on the same view by refitting its recorded configuration there, and the
decision is written (``decision.json``, with every check, interval and reason) for
publishing, the report and the model card.

Which variant of the view decides follows the dataset's repeat policy (``training.json`` ->
``repeat_policy``, ``ml.repeat_policy.gate_view``): lists that never show what a shopper
has are measured on new items only, lists that may show it with repeat purchases counted.
``RECSYS_GATE_VIEW`` (``new_items`` or ``with_repeats``), when set, overrides that choice
explicitly, and ``decision.json`` says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from ml.names import BACKTEST_VIEWS, BASELINES, NEW_ITEMS, REPEAT_BASELINES
from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.release.champion import read_champion
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)


GATE_VIEW_OVERRIDE = "RECSYS_GATE_VIEW"


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


def policy_variant(training: dict) -> tuple[str, dict]:
    """The variant the gate wants and ``decision.json``'s ``repeat_policy`` record: the run's policy, how it
    was chosen, and which variant it asks for (``RECSYS_GATE_VIEW`` overriding it when set)."""
    from ml.repeat_policy import from_record, gate_view

    recorded = training.get("repeat_policy")
    policy = from_record(recorded)
    record = (
        dict(recorded)
        if recorded
        else {
            "policy": str(policy),
            "source": "none",
            "reason": "the run recorded no repeat policy (it predates the setting): exclude, as such runs published",
        }
    )
    wanted = gate_view(policy)
    override = os.environ.get(GATE_VIEW_OVERRIDE, "").strip()
    if override and override not in BACKTEST_VIEWS:
        raise ValueError(f"{GATE_VIEW_OVERRIDE} = {override!r}: expected one of {', '.join(BACKTEST_VIEWS)}")
    if override:
        record["gate_view_note"] = f"{GATE_VIEW_OVERRIDE}={override} overrides the policy's {wanted}"
        wanted = override
    return wanted, record | {"gate_view": wanted}


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
    wanted, policy = policy_variant(artifacts.read_json(RunArtifacts.TRAINING))
    config = dataclasses.replace(GateConfig.from_env(), view=wanted)
    backtest, variant, note = gate_view(artifacts.read_json(RunArtifacts.METRICS), config.view)
    measured = backtest["variants"][variant]
    per_user = {name: np.asarray(values) for name, values in measured["per_user_ndcg@20"].items()}
    challenger = measured["challenger"]
    baselines = [name for name in (*BASELINES, *REPEAT_BASELINES) if name in per_user]
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
        "repeat_policy": policy | {"gate_variant": variant},
    }
    payload["reasons"].insert(0, view_line)
    payload["reasons"].insert(1, policy_line(policy, variant))
    if force and not decision.promote:
        payload["promote"] = True
        payload["reasons"].append("forced: promoted by the force_publish parameter despite failed checks")
    artifacts.write_json(RunArtifacts.DECISION, payload)
    write_report(artifacts, run.dataset_key)
    for reason in payload["reasons"]:
        log.info("gate %s", reason)
    log.info("gate decision: %s", "PROMOTE" if payload["promote"] else "KEEP CHAMPION")
    return {"promote": payload["promote"], "outcome": payload["outcome"], "reasons": payload["reasons"]}


def policy_line(policy: dict, variant: str) -> str:
    """The reason line: the repeat policy, why, and the variant it made the gate decide on."""
    line = f"repeat policy: {policy.get('policy')} ({policy.get('reason', '')}); the gate decides on {variant}"
    return line + (f" ({policy['gate_view_note']})" if policy.get("gate_view_note") else "")
