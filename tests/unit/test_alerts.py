"""The failure alert names the pipeline stage and the reason, and posts it when a webhook is set."""

from __future__ import annotations

import http.server
import json
import threading
from types import SimpleNamespace

import pytest

from recsys_pipeline.orchestration import alerts

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "task_id, stage",
    [
        ("validate_raw", "raw data gate (Great Expectations)"),
        ("features.models.marts.user_features.run", "feature build (dbt)"),
        ("check_quality", "features data gate (Great Expectations)"),
        ("train_two_tower", "training (TensorFlow)"),
        ("publish_release", "publishing (object storage)"),
        ("something_new", "something_new"),
    ],
)
def test_every_task_maps_to_its_stage(task_id, stage):
    assert alerts.stage_of(task_id) == stage


def test_the_message_says_dag_stage_task_run_and_the_first_line_of_the_reason():
    error = ValueError(
        "suite raw_events: expect_column_values_to_be_in_set failed on table recsys_raw.raw_events__new\nmore detail"
    )
    message = alerts.failure_message("recsys_features", "validate_raw", "manual__1", 3, error)
    assert message == (
        "[recsys] recsys_features: stage 'raw data gate (Great Expectations)' failed at task validate_raw "
        "(run manual__1, try 3) -- ValueError: suite raw_events: expect_column_values_to_be_in_set failed "
        "on table recsys_raw.raw_events__new"
    )
    assert "no exception was recorded" in alerts.failure_message("d", "t", "r", None, None)


def test_the_alert_is_posted_to_the_webhook_and_a_dead_webhook_is_only_logged(monkeypatch, caplog):
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # http.server calls it by this name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    monkeypatch.setattr(alerts, "_give_back_warehouse", lambda dag_id, task_id, run_id: None)
    context = {
        "task_instance": SimpleNamespace(
            dag_id="recsys_training", task_id="train_two_tower", run_id="r1", try_number=1
        ),
        "run_id": "r1",
        "exception": RuntimeError("out of memory"),
    }
    monkeypatch.setenv("RECSYS_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    alerts.notify_failure(context)
    server.server_close()
    assert received == [
        {
            "text": "[recsys] recsys_training: stage 'training (TensorFlow)' failed at task train_two_tower "
            "(run r1, try 1) -- RuntimeError: out of memory"
        }
    ]
    monkeypatch.setenv("RECSYS_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/nothing-listens")
    alerts.notify_failure(context)  # must not raise
    assert "could not post the failure alert" in caplog.text
