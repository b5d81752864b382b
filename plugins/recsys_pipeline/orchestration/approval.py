"""A data engineer's word when the gate cannot tell the challenger from the best baseline.

The gate promotes only on evidence (``ml.gate``): a challenger whose NDCG@20 interval
against the best baseline holds zero is "no significant difference" and the champion
stays. Where a dataset's owners want a person to look at such a run, the
``approve_promotion`` task (Airflow's human-in-the-loop ``ApprovalOperator``) asks a
data engineer to promote or not, with the run's report; no answer within the timeout
keeps the champion. Every other outcome passes through at once.

Setting, per dataset: ``RECSYS_GATE_APPROVAL_<DATASET KEY>`` (upper case, ``-`` as
``_``), else ``RECSYS_GATE_APPROVAL``: ``off`` (default: never ask), ``triggered``
(ask in runs a person triggered; scheduled and asset-triggered runs never wait) or
``always`` (scheduled runs wait too). ``RECSYS_GATE_APPROVAL_TIMEOUT_HOURS`` (24) bounds
the wait.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

from ml.gate import NO_SIGNIFICANT_DIFFERENCE
from recsys_pipeline.run import RunArtifacts

log = logging.getLogger(__name__)

OFF, TRIGGERED, ALWAYS = "off", "triggered", "always"
MODES = (OFF, TRIGGERED, ALWAYS)
TIMEOUT_HOURS = 24.0
MANUAL_RUN = "manual"


def approval_mode(dataset_key: str) -> str:
    """The dataset's approval setting (its own variable first, then the default one)."""
    own = f"RECSYS_GATE_APPROVAL_{dataset_key.upper().replace('-', '_')}"
    mode = os.environ.get(own) or os.environ.get("RECSYS_GATE_APPROVAL") or OFF
    if mode not in MODES:
        raise ValueError(f"{own} / RECSYS_GATE_APPROVAL = {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def approval_timeout() -> timedelta:
    return timedelta(hours=float(os.environ.get("RECSYS_GATE_APPROVAL_TIMEOUT_HOURS", TIMEOUT_HOURS)))


def needs_approval(decision: dict, mode: str, run_type: str) -> bool:
    """Ask only on "no significant difference", never for a forced run, and in scheduled runs only with ``always``."""
    if decision.get("outcome") != NO_SIGNIFICANT_DIFFERENCE or decision.get("forced"):
        return False
    return mode == ALWAYS or (mode == TRIGGERED and run_type == MANUAL_RUN)


def record_answer(artifacts: RunArtifacts, dataset_key: str, approved: bool, answer: str) -> dict:
    """Write the answer into ``decision.json`` (what publishing reads; promoted only when approved) and the
    report."""
    from recsys_pipeline.reporting.report import write_report  # matplotlib: not when Airflow parses the DAG

    decision = artifacts.read_json(RunArtifacts.DECISION)
    decision["promote"] = bool(decision.get("promote")) or approved
    decision["approval"] = {"approved": approved, "answer": answer}
    decision["reasons"].append(answer)
    artifacts.write_json(RunArtifacts.DECISION, decision)
    write_report(artifacts, dataset_key)
    log.info("gate approval: %s", answer)
    return decision


class PromotionApproval(ApprovalOperator):
    """``ApprovalOperator`` that asks only when ``needs_approval`` says so and never skips publishing: a
    "Reject" or a timeout keeps the champion (the release is still published for inspection)."""

    def __init__(self, *, gate_task_id: str = "promotion_gate", **kwargs):
        kwargs.setdefault("subject", "Promote the challenger? The gate found no significant difference")
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)  # taken when the timeout passes: champion stays
        kwargs.setdefault("response_timeout", approval_timeout())
        super().__init__(**kwargs)
        self.gate_task_id = gate_task_id

    def execute(self, context):
        from recsys_pipeline.orchestration.runtime import current_run

        decision = context["ti"].xcom_pull(task_ids=self.gate_task_id)
        params, run = current_run()
        mode = approval_mode(run.dataset_key)
        run_type = getattr(context["dag_run"], "run_type", "")
        run_type = str(getattr(run_type, "value", run_type))
        if not needs_approval(decision, mode, run_type):
            return {"promote": decision["promote"], "asked": False, "approval": mode}
        self.body = (
            f"The challenger of **{run.dataset_key}** is within the noise of the best baseline: "
            f"{decision['reasons'][-1]}.\n\nReport: file://{run.artifacts.path(RunArtifacts.REPORT)} "
            f"(published with the release {run.release_id}).\n\nApprove promotes it; Reject, or no answer "
            f"within {self.response_timeout}, keeps the champion."
        )
        log.info("asking for approval (%s, run type %s): %s", mode, run_type, self.body)
        return super().execute(context)

    def execute_complete(self, context, event):
        from recsys_pipeline.orchestration.runtime import current_run

        _, run = current_run()
        if "error" in event:  # the timeout without a default, or the request lost: the champion stays
            answer = f"no answer ({event.get('error_type', 'error')}): the champion stays"
            return {"promote": record_answer(run.artifacts, run.dataset_key, False, answer)["promote"], "asked": True}
        result = HITLOperator.execute_complete(self, context, event)  # no skipping of publish_release
        approved = result["chosen_options"] == [self.APPROVE]
        who = result.get("responded_by_user") or {}
        by = (who.get("name") or who.get("id")) if isinstance(who, dict) else who
        answer = (
            f"approved by {by}: promoted despite no significant difference"
            if approved
            else (f"rejected by {by}" if by else "no answer within the timeout") + ": the champion stays"
        )
        return {"promote": record_answer(run.artifacts, run.dataset_key, approved, answer)["promote"], "asked": True}
