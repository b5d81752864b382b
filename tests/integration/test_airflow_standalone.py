"""A real local Airflow (`scripts/airflow_local.py`, what `make airflow` runs), driven like a user would.

Starts api-server, scheduler, dag-processor and triggerer with the project's DAGs and
plugin, logs in with the generated admin password (authentication stays on), then
through the REST API: triggers the feature refresh and waits for the training run that
its asset update starts by itself; and renders the "Recsys
models" page in headless Chromium, checking what it shows. Set RECSYS_SCREENSHOT_DIR to keep the screenshots
(they are never written into the repository).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from browser import CHROMIUM, Browser
from conftest import pipeline_environment

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Api:
    """The Airflow REST API (v2) as the logged-in admin."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(5)
        raise AssertionError(f"{dag_id} run {run_id} did not finish in {timeout:.0f} s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        rows = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")["task_instances"]
        return {row["task_id"]: row["state"] for row in rows}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, mysql_test_settings, s3_test_settings, groceries_path):
    home = tmp_path_factory.mktemp("airflow-standalone")
    port = _free_port()
    env = pipeline_environment(
        mysql_test_settings,
        replace(s3_test_settings, prefix=s3_test_settings.prefix + "-standalone"),
        tmp_path_factory.mktemp("standalone-work"),
        groceries_path.parents[1],
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(64),
        RECSYS_DATASET="groceries",
        # no time-based runs while the test drives it: only what it triggers (and the asset) runs
        RECSYS_FEATURES_SCHEDULE="none",
        RECSYS_TRAINING_SCHEDULE="none",
    )
    script = [
        sys.executable,
        str(PROJECT_ROOT / "scripts" / "airflow_local.py"),
        "--home",
        str(home),
        "--port",
        str(port),
    ]
    started = subprocess.run(script + ["--background"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr + (home / "standalone.log").read_text()[-5000:]
        assert f"http://localhost:{port}" in started.stdout and "log in as admin" in started.stdout
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        assert password != "admin"
        yield {"base": f"http://localhost:{port}", "home": home, "password": password, "env": env}
    finally:
        subprocess.run(script + ["--stop"], env=env, timeout=120)


@pytest.fixture(scope="module")
def api(airflow) -> Api:
    request = urllib.request.Request(
        airflow["base"] + "/auth/token",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": airflow["password"]}).encode(),
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token = json.load(response)["access_token"]
    return Api(airflow["base"], token)


def test_authentication_is_on(airflow):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(airflow["base"] + "/api/v2/dags", timeout=30)
    assert refused.value.code == 401
    bad = urllib.request.Request(
        airflow["base"] + "/auth/token",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": "admin"}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(bad, timeout=30)
    assert wrong.value.code in (401, 403)
    with pytest.raises(urllib.error.HTTPError) as page:
        urllib.request.urlopen(airflow["base"] + "/recsys/api/releases", timeout=30)
    assert page.value.code == 401


def test_the_dags_are_there_with_their_docs_and_no_import_errors(api):
    assert api.call("GET", "/api/v2/importErrors")["total_entries"] == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dag_ids = {d["dag_id"] for d in api.call("GET", "/api/v2/dags")["dags"]}
        if {"recsys_features", "recsys_training", "recsys_rollback"} <= dag_ids:
            break
        time.sleep(3)
    for dag_id in ("recsys_features", "recsys_training", "recsys_rollback"):
        details = api.call("GET", f"/api/v2/dags/{dag_id}/details")
        assert details["doc_md"] and len(details["doc_md"]) > 200, dag_id
        assert details["owners"] == ["recsys"] and "recsys" in {t["name"] for t in details["tags"]}
    plugins = {p["name"]: p for p in api.call("GET", "/api/v2/plugins")["plugins"]}
    assert plugins["recsys_models"]["external_views"][0]["url_route"] == "recsys-models"


def test_a_feature_refresh_retrains_by_itself(api, airflow):
    for dag_id in ("recsys_features", "recsys_training"):
        api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    # a feature refresh updates the asset; the scheduler starts a training run on that build by itself
    features = api.call(
        "POST", "/api/v2/dags/recsys_features/dagRuns", {"logical_date": None, "conf": {"dataset": "groceries"}}
    )
    refreshed = api.wait_for_run("recsys_features", features["dag_run_id"], timeout=600)
    assert refreshed["state"] == "success", api.task_states("recsys_features", features["dag_run_id"])
    deadline = time.monotonic() + 120
    triggered = []
    while not triggered and time.monotonic() < deadline:
        triggered = [
            r
            for r in api.call("GET", "/api/v2/dags/recsys_training/dagRuns")["dag_runs"]
            if r["run_type"] == "asset_triggered"
        ]
        time.sleep(3)
    assert triggered, "the features asset update did not start a training run"
    retrained = api.wait_for_run("recsys_training", triggered[0]["dag_run_id"], timeout=600)
    states = api.task_states("recsys_training", triggered[0]["dag_run_id"])
    assert retrained["state"] == "success", states
    # it trained on the announced build: no second load or dbt build; it published a release
    assert states["use_built_features"] == "success" and states["load_raw"] == "skipped"
    assert states["features.dbt_producer_watcher"] == "skipped" and states["train_two_tower"] == "success"
    assert states["publish_release"] == "success"
    # read only now: Airflow 3.3's events endpoint answers 500 while a run it created has not started
    events = api.call("GET", "/api/v2/assets/events?source_dag_id=recsys_features")["asset_events"]
    assert (
        events
        and events[-1]["extra"]["dataset"] == "groceries"
        and events[-1]["extra"]["load_id"].startswith("groceries:")
    )
    # the training DAG from its form's parameters (another model family, a dry run on the current features)
    # is test_celery_scale_out's: one run of it serves both, on the executor users scale out with


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_the_models_page_renders_in_a_browser(api, airflow):
    base = airflow["base"]
    releases = api.call("GET", "/recsys/api/releases")
    groceries = next(d for d in releases if d["dataset"] == "groceries")
    assert len(groceries["releases"]) == 1  # the asset-triggered run's, the only run of this test that publishes
    release = groceries["releases"][0]
    decision = "PROMOTED" if release["promoted"] else "not promoted"
    shots = Path(os.environ.get("RECSYS_SCREENSHOT_DIR") or airflow["home"] / "screenshots")
    with Browser() as browser:
        browser.goto(base + "/recsys/models")
        assert "/auth/login" in browser.evaluate("location.href")  # not logged in: Airflow's login page
        browser.set_cookie(base + "/", "_token", api.token)
        browser.goto(base + "/recsys/models")
        text = browser.evaluate("document.body.innerText")
        assert "Recsys models" in text and "groceries" in text
        assert release["release_id"] in text and release["model_version"] in text and decision in text
        assert "ndcg@20" in text and "best baseline" in text and "Champion history" in text
        assert "used" in release["ranking_stage"]  # the run's decision on its ranking stage, shown when it was trained
        if release["ranking_stage"].get("held_out_ndcg@20"):
            assert f"ranking stage {'used' if release['ranking_stage']['used'] else 'not used'}" in text
        if groceries["champion"]:
            assert groceries["champion"]["release_id"] in text and "promote" in text
        else:
            assert "no champion yet" in text
        # the reasons are in the page (inside the decision's <details>)
        assert browser.evaluate("document.body.innerHTML").count("<li class=") >= len(release["reasons"]) > 0
        links = browser.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.textContent)")
        assert {
            "report",
            "model card",
            "metrics",
            "Data Docs (raw gate)",
            "Data Docs (features gate)",
            "dbt docs",
        } <= set(links)
        report, card = (
            browser.evaluate(f"Array.from(document.querySelectorAll('a')).find(a => a.textContent == '{label}').href")
            for label in ("report", "model card")
        )
        browser.goto(report)
        assert browser.evaluate("document.querySelectorAll('svg').length") >= 4
        assert "Promotion gate" in browser.evaluate("document.body.innerText")
        browser.goto(card)
        assert "# Model card" in browser.evaluate("document.body.innerText")
        browser.goto(base + "/recsys/models")
        browser.screenshot(shots / "recsys-models-page.png")
        # inside the Airflow UI: the menu entry opens the same page in the UI's frame
        browser.goto(base + "/plugin/recsys-models", settle=2)
        assert browser.wait_for(
            "document.querySelector('iframe') && document.querySelector('iframe').contentDocument"
            " && document.querySelector('iframe').contentDocument.body.innerText.includes('Recsys models')"
        )
        browser.screenshot(shots / "recsys-models-in-airflow.png")
        browser.goto(base + "/dags/recsys_training", settle=3)
        assert browser.wait_for("document.body.innerText.includes('recsys_training')")
        browser.screenshot(shots / "recsys-training-dag.png")
