"""The human-in-the-loop approval: who is asked, and what an answer, a rejection or the timeout leave."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from airflow.sdk.execution_time.context import set_current_context

from recsys_pipeline.orchestration.approval import (
    ALWAYS,
    OFF,
    TRIGGERED,
    PromotionApproval,
    approval_mode,
    needs_approval,
)
from recsys_pipeline.run import RunArtifacts, RunContext

pytestmark = pytest.mark.unit

TIE = {"promote": False, "outcome": "no significant difference", "reasons": ["no significant difference: ..."]}


def test_only_a_tie_is_asked_and_scheduled_runs_wait_only_when_the_setting_says_always():
    assert needs_approval(TIE, TRIGGERED, "manual")
    assert not needs_approval(TIE, TRIGGERED, "scheduled") and not needs_approval(TIE, TRIGGERED, "asset_triggered")
    assert needs_approval(TIE, ALWAYS, "scheduled")
    assert not needs_approval(TIE, OFF, "manual")
    assert not needs_approval(TIE | {"forced": True}, ALWAYS, "manual")
    for outcome in ("promote", "refused"):
        assert not needs_approval(TIE | {"outcome": outcome}, ALWAYS, "manual")


def test_the_setting_is_per_dataset_with_a_default(monkeypatch):
    monkeypatch.delenv("RECSYS_GATE_APPROVAL", raising=False)
    assert approval_mode("groceries") == OFF
    monkeypatch.setenv("RECSYS_GATE_APPROVAL", TRIGGERED)
    monkeypatch.setenv("RECSYS_GATE_APPROVAL_ONLINE_RETAIL", ALWAYS)
    assert approval_mode("groceries") == TRIGGERED and approval_mode("online-retail") == ALWAYS
    monkeypatch.setenv("RECSYS_GATE_APPROVAL", "sometimes")
    with pytest.raises(ValueError, match="expected one of off, triggered, always"):
        approval_mode("groceries")


@pytest.fixture
def run_context(tmp_path, monkeypatch):
    """An Airflow task context for a manual run of groceries, with the gate's decision in the run folder."""
    monkeypatch.setenv("RECSYS_WORK_DIR", str(tmp_path))
    logical_date = datetime(2026, 1, 5, tzinfo=UTC)
    run = RunContext.for_run("groceries", logical_date, "manual__1")
    run.prepare()
    run.artifacts.write_json(RunArtifacts.DECISION, dict(TIE, reasons=list(TIE["reasons"])))
    ti = SimpleNamespace(xcom_pull=lambda task_ids: TIE)
    context = {
        "params": {"dataset": "groceries"},
        "run_id": "manual__1",
        "logical_date": logical_date,
        "ti": ti,
        "task_instance": ti,
        "dag_run": SimpleNamespace(run_type="manual"),
    }
    with set_current_context(context):
        yield context, run


def _answer(option: str, user: dict | None) -> dict:
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": datetime.now(UTC),
        "responded_by_user": user,
    }


def test_no_approval_asked_passes_the_gates_decision_on(run_context, monkeypatch):
    context, _ = run_context
    monkeypatch.setenv("RECSYS_GATE_APPROVAL", OFF)
    assert PromotionApproval(task_id="approve_promotion").execute(context) == {
        "promote": False,
        "asked": False,
        "approval": OFF,
    }


def test_the_timeout_keeps_the_champion(run_context):
    context, run = run_context
    operator = PromotionApproval(task_id="approve_promotion")
    assert operator.defaults == ["Reject"]  # what the timeout answers
    result = operator.execute_complete(context, _answer("Reject", None))
    decision = run.artifacts.read_json(RunArtifacts.DECISION)
    assert result == {"promote": False, "asked": True} and decision["promote"] is False
    assert decision["approval"]["answer"] == "no answer within the timeout: the champion stays"
    lost = operator.execute_complete(context, {"error": "timed out", "error_type": "timeout"})
    assert lost["promote"] is False


def test_an_approval_promotes_and_a_rejection_does_not(run_context):
    context, run = run_context
    operator = PromotionApproval(task_id="approve_promotion")
    rejected = operator.execute_complete(context, _answer("Reject", {"id": "7", "name": "dana"}))
    assert rejected["promote"] is False
    assert run.artifacts.read_json(RunArtifacts.DECISION)["reasons"][-1] == "rejected by dana: the champion stays"
    approved = operator.execute_complete(context, _answer("Approve", {"id": "7", "name": "dana"}))
    decision = run.artifacts.read_json(RunArtifacts.DECISION)
    assert approved == {"promote": True, "asked": True} and decision["promote"] is True
    assert decision["approval"] == {
        "approved": True,
        "answer": "approved by dana: promoted despite no significant difference",
    }
    assert run.artifacts.exists(RunArtifacts.REPORT)
