"""No credential in a task log, and the models page hands out only what a person reads, safely.

The models page is exercised through Airflow's own API server application (``create_app``:
the plugin mounted at ``/recsys`` as in production, Airflow's auth manager checking a JWT
it signed), against a release in the real S3 API server (moto) with every kind of file a
release holds: the HTML report (rendered by the pipeline), the model card, the records,
Data Docs, dbt's docs site (dbt's own page template), the SavedModel and the
recommendations table.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from recsys_pipeline import storage
from recsys_pipeline.features import dbt
from recsys_pipeline.quality import data_docs
from recsys_pipeline.release import layout
from recsys_pipeline.reporting.report import render
from recsys_pipeline.reporting.summary import RunSummary
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import mysql_settings
from recsys_pipeline.ui import release_files

from browser import CHROMIUM, Browser

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PAGE = PROJECT_ROOT / ".venv-dbt" / "lib" / "python3.11" / "site-packages" / "dbt" / "include" / "index.html"
DATASET, RELEASE = "page-shop", "20260105T000000Z"
SIGNATURES = ("X-Amz-Signature", "Signature=", "X-Amz-Credential", "AWSAccessKeyId")

TRAINING = {
    "release_id": RELEASE,
    "model": "two_tower",
    "model_version": f"two_tower-{RELEASE}",
    "best_epoch": 2,
    "loss_per_epoch": [900.0, 700.0, 650.0],
    "validation_ndcg@20_per_epoch": [0.10, 0.14, 0.15],
}
METRICS = {
    "primary_metric": "ndcg@20",
    "protocol": "per-user temporal holdout",
    "models": {
        "two_tower": {"ndcg@20": 0.152, "recall@20": 0.19, "cold_start_ndcg@20": 0.08},
        "ease": {"ndcg@20": 0.129, "recall@20": 0.167, "cold_start_ndcg@20": 0.07},
    },
}
DECISION = {"promote": True, "reasons": ["PASS: ndcg@20 0.1520 >= 0.0100"]}
# a model description as an analyst might write it: it must not end dbt's <script> early
DBT_NODE = "model.recsys.user_features"
INJECTED = "never </script><script>window.injected = 1</script> here"
COOKIE = "(() => { try { return document.cookie } catch (error) { return error.name } })()"


def dbt_manifest(target: Path) -> dict:
    """The project's real manifest (``dbt parse``), with a description that tries to end the page's script."""
    dbt.run_dbt(mysql_settings(), ["parse", "--target-path", str(target)], {})
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["nodes"][DBT_NODE]["description"] += " " + INJECTED
    return manifest


def write_release_files(folder: Path, manifest: dict) -> None:
    """What a training run leaves in its folder, one file of each kind a release holds."""
    artifacts = RunArtifacts(folder)
    artifacts.write_json(RunArtifacts.TRAINING, TRAINING)
    artifacts.write_json(RunArtifacts.METRICS, METRICS)
    artifacts.write_json(RunArtifacts.DECISION, DECISION)
    artifacts.path(RunArtifacts.REPORT).write_text(render(RunSummary(TRAINING, METRICS, DECISION), "Evaluation report"))
    artifacts.path(RunArtifacts.MODEL_CARD).write_text("# Model card\n\n<script>alert(1)</script> stays text\n")
    saved_model = artifacts.path(RunArtifacts.SAVED_MODEL)
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"\x08\x01" * 512)
    (saved_model / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(4096))
    pd.DataFrame({"user_id": ["u1"], "rank": [1], "item_id": ["a"], "score": [0.9]}).to_parquet(
        artifacts.path(RunArtifacts.RECOMMENDATIONS), index=False
    )
    docs = artifacts.data_docs("raw")
    (docs / "validations").mkdir(parents=True)
    (docs / "index.html").write_text("<!doctype html><title>Data Docs</title><a href=validations/v.html>v</a>")
    (docs / "validations" / "v.html").write_text("<!doctype html><p>raw_events: 12 expectations passed")
    dbt_docs = artifacts.path(RunArtifacts.DBT_DOCS)
    dbt_docs.mkdir()
    (dbt_docs / "index.html").write_bytes(DBT_PAGE.read_bytes())
    (dbt_docs / "manifest.json").write_text(json.dumps(manifest))
    (dbt_docs / "catalog.json").write_text(json.dumps({"nodes": {}, "sources": {}}))


@pytest.fixture(scope="module")
def page_s3(s3_test_settings):
    return replace(s3_test_settings, prefix=s3_test_settings.prefix + "-models-page")


@pytest.fixture(scope="module")
def release(page_s3, tmp_path_factory):
    """A complete release in the bucket: every file uploaded, then its manifest listing them."""
    if not DBT_PAGE.exists():
        pytest.skip(f"{DBT_PAGE} not installed (make setup builds .venv-dbt)")
    folder = tmp_path_factory.mktemp("release")
    dbt_docs_manifest = dbt_manifest(tmp_path_factory.mktemp("dbt-target"))
    write_release_files(folder, dbt_docs_manifest)
    s3 = storage.client(page_s3)
    prefix = layout.release_prefix(page_s3, DATASET, RELEASE)
    objects = [
        storage.upload_file(s3, page_s3.bucket, prefix + path.relative_to(folder).as_posix(), path)
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
    ]
    manifest = {
        "release_id": RELEASE,
        "dataset": DATASET,
        "model_version": TRAINING["model_version"],
        "gate": DECISION,
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
    }
    storage.put_json(s3, page_s3.bucket, layout.manifest_key(page_s3, DATASET, RELEASE), manifest)
    return {"folder": folder, "keys": {o.key[len(prefix) :] for o in objects}, "dbt_manifest": dbt_docs_manifest}


@pytest.fixture(scope="module")
def airflow_app(airflow_home, page_s3):
    """Airflow's API server app in this process, pointed at the test bucket, and a JWT it signed for admin."""
    env = {
        "RECSYS_S3_ENDPOINT_URL": page_s3.endpoint_url,
        "RECSYS_S3_ACCESS_KEY_ID": page_s3.access_key_id,
        "RECSYS_S3_SECRET_ACCESS_KEY": page_s3.secret_access_key,
        "RECSYS_S3_BUCKET": page_s3.bucket,
        "RECSYS_S3_PREFIX": page_s3.prefix,
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        from airflow.api_fastapi.app import create_app, get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        app = create_app()
        yield app, get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def client(airflow_app):
    from fastapi.testclient import TestClient

    app, token = airflow_app
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def served(airflow_app):
    """The same app on a loopback port (uvicorn, as Airflow's API server runs it), for a browser."""
    import uvicorn

    app, token = airflow_app
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", token
    server.should_exit = True
    thread.join(30)


def file_url(path: str) -> str:
    return f"/recsys/files/{DATASET}/{RELEASE}/{path}"


# --- secrets in logs ---------------------------------------------------------------------


def test_publishing_data_docs_logs_the_s3_key_and_the_page_not_a_presigned_url(page_s3, tmp_path, caplog):
    run = RunContext(DATASET, "20260106T000000Z", work_root=tmp_path)
    docs = run.artifacts.data_docs("raw")
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<!doctype html><title>Data Docs</title>")
    with caplog.at_level(logging.INFO):  # what a task log records (Airflow's logging_level)
        address = data_docs.publish_data_docs(page_s3, run, "raw")
    key = f"{page_s3.prefix}/{DATASET}/data-docs/{run.release_id}/raw/index.html"
    assert address == f"s3://{page_s3.bucket}/{key}"
    assert storage.etag(storage.client(page_s3), page_s3.bucket, key)  # uploaded
    logged = caplog.text
    assert address in logged and f"/recsys/models#dataset-{DATASET}" in logged
    leaked = [s for s in (*SIGNATURES, page_s3.secret_access_key) if s in logged]
    assert not leaked, f"the Data Docs log carries a credential ({leaked}):\n{logged}"


def test_no_pipeline_code_makes_presigned_urls():
    """A presigned URL is a bearer credential: the pipeline names objects by key and the page links to them."""
    makers = [
        path.relative_to(PROJECT_ROOT).as_posix()
        for folder in ("plugins", "dags", "ml", "scripts")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if "generate_presigned" in path.read_text()
    ]
    assert not makers, f"these create presigned URLs (logged or shown, they are credentials): {makers}"


# --- the models page ---------------------------------------------------------------------


def test_the_page_itself_has_a_csp_and_nosniff(client, release):
    page = client.get("/recsys/models")
    assert page.status_code == 200 and RELEASE in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert f'href="/recsys/files/{DATASET}/{RELEASE}/report.html"' in page.text


def test_the_page_shows_what_shoppers_did_with_each_models_lists(client, release, mysql_test_settings, monkeypatch):
    """Beside the offline metrics: dbt's online_metrics for the release's model version (here built by hand)."""
    from recsys_pipeline import warehouse

    with warehouse.connect(mysql_test_settings) as conn:
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS online_metrics")
        cur.execute(
            "CREATE TABLE online_metrics (dataset VARCHAR(64), model_version VARCHAR(191), served_on DATE, "
            "lists_served BIGINT, items_shown BIGINT, items_clicked BIGINT, items_carted BIGINT, "
            "items_purchased BIGINT, click_rate DOUBLE, cart_rate DOUBLE, purchase_rate DOUBLE)"
        )
        cur.executemany(
            "INSERT INTO online_metrics VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, 0, 0)",
            [
                (DATASET, TRAINING["model_version"], "2026-01-06", 30, 300, 30, 6, 3),
                (DATASET, TRAINING["model_version"], "2026-01-07", 10, 100, 10, 2, 1),
            ],
        )
        conn.commit()
    for name, value in (
        ("RECSYS_MYSQL_USER", mysql_test_settings.user),
        ("RECSYS_MYSQL_PASSWORD", mysql_test_settings.password),
        ("RECSYS_MYSQL_DATABASE", mysql_test_settings.database),
    ):
        monkeypatch.setenv(name, value)
    page = client.get("/recsys/models").text
    assert "40 lists, 400 items shown" in page and "purchase 0.0100" in page and "2026-01-06 – 2026-01-07" in page
    with warehouse.connect(mysql_test_settings) as conn:
        conn.cursor().execute("DROP TABLE online_metrics")
    assert "not served" in client.get("/recsys/models").text  # no table (never built): the page still renders


@pytest.mark.parametrize(
    ("path", "media_type", "csp_needs"),
    [
        ("report.html", "text/html", ["sandbox;", "style-src 'unsafe-inline'", "img-src data:"]),
        ("model_card.md", "text/plain", ["sandbox;"]),
        ("metrics.json", "application/json", ["sandbox;"]),
        ("decision.json", "application/json", ["sandbox;"]),
        ("data_docs/raw/index.html", "text/html", ["sandbox allow-scripts;", "connect-src"]),
        ("data_docs/raw/validations/v.html", "text/html", ["sandbox allow-scripts;"]),
    ],
)
def test_reading_files_are_served_sandboxed_with_nosniff(client, release, path, media_type, csp_needs):
    served = client.get(file_url(path))
    assert served.status_code == 200, served.text
    assert served.content == (release["folder"] / path).read_bytes()
    assert served.headers["content-type"].startswith(media_type)
    assert served.headers["x-content-type-options"] == "nosniff"
    csp = served.headers["content-security-policy"]
    assert csp.startswith("sandbox") and "default-src 'none'" in csp and "allow-same-origin" not in csp
    for needed in (n for n in csp_needs if n != "connect-src"):
        assert needed in csp, (needed, csp)
    assert "connect-src" not in csp  # nothing a served page runs may call back to any server
    assert served.headers["cache-control"] == "private, no-store"


def test_the_report_needs_nothing_its_csp_blocks(release):
    """Everything the report shows is inline: its <style>, SVG charts; no script, no fetched resource."""
    page = (release["folder"] / RunArtifacts.REPORT).read_text()
    assert page.count("<svg") >= 3 and "<style>" in page
    assert "<script" not in page and "<link" not in page and "<img" not in page and "@import" not in page
    external = [ref for ref in ("src=", "href=http", "url(http", 'xlink:href="http') if ref in page]
    assert not external, external


def test_dbt_docs_are_one_page_with_their_json_inlined_and_script_safe(client, release):
    served = client.get(file_url("dbt_docs/index.html"))
    assert served.status_code == 200
    assert served.headers["content-security-policy"] == release_files.DBT_DOCS_CSP
    assert served.headers["x-content-type-options"] == "nosniff"
    text = served.text
    assert "MANIFEST.JSON INLINE DATA" not in text and "CATALOG.JSON INLINE DATA" not in text
    assert "</script><script>window.injected" not in text and "<\\/script><script>window.injected" in text
    start = DBT_PAGE.read_bytes().index(b'"MANIFEST.JSON INLINE DATA"')  # the page before it is served unchanged
    inlined, _ = json.JSONDecoder().raw_decode(served.content[start:].decode())
    assert inlined == release["dbt_manifest"]  # the same JSON, escaped for the page only


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("two_tower/saved_model/saved_model.pb", "part of the model"),
        ("two_tower/saved_model/variables/variables.data-00000-of-00001", "part of the model"),
        ("two_tower/training.json", "part of the model"),
        ("recommendations.parquet", "recommendation table"),
        ("dbt_docs/manifest.json", "not one of the files"),
        ("data_docs/raw/../../recommendations.parquet", "recommendation table"),
    ],
)
def test_model_files_and_recommendation_tables_are_refused(client, release, path, says):
    if not path.startswith("data_docs"):
        assert path in release["keys"]  # listed in the manifest: refused for what it is, not for being absent
    refused = client.get(file_url(path))
    assert refused.status_code == 403, refused.text
    assert says in refused.json()["detail"]
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert b"\x08\x01" not in refused.content


def test_a_file_not_in_the_release_is_404(client, release):
    missing = client.get(file_url("data_docs/raw/validations/absent.html"))
    assert missing.status_code == 404 and "not part of release" in missing.json()["detail"]


def test_files_over_the_size_cap_are_refused_with_413(client, release, monkeypatch):
    report_size = (release["folder"] / RunArtifacts.REPORT).stat().st_size
    monkeypatch.setenv("RECSYS_MODELS_PAGE_MAX_FILE_BYTES", str(report_size - 1))
    too_big = client.get(file_url("report.html"))
    assert too_big.status_code == 413
    detail = too_big.json()["detail"]
    assert f"{report_size:,} bytes" in detail and "RECSYS_MODELS_PAGE_MAX_FILE_BYTES" in detail
    assert client.get(file_url("dbt_docs/index.html")).status_code == 413  # the page and its JSON together
    small = client.get(file_url("metrics.json"))
    assert small.status_code == 200 and small.json() == METRICS
    monkeypatch.setenv("RECSYS_MODELS_PAGE_MAX_FILE_BYTES", str(report_size))
    assert client.get(file_url("report.html")).status_code == 200


def test_without_a_login_nothing_is_served(client, release):
    anonymous = client.get(file_url("report.html"), headers={"Authorization": ""})
    assert anonymous.status_code == 401 and "Evaluation report" not in anonymous.text


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_in_a_browser_the_pages_render_sandboxed_away_from_airflows_login(served, release):
    """What the CSP allows is what the pages need; what they run has an opaque origin (no cookie, no API)."""
    base, token = served
    with Browser() as browser:
        browser.set_cookie(base + "/", "_token", token)
        browser.goto(base + file_url("report.html"))
        assert "Evaluation report" in browser.evaluate("document.body.innerText")
        assert browser.evaluate("document.querySelectorAll('svg').length") >= 3
        assert "system-ui" in browser.evaluate("getComputedStyle(document.body).fontFamily")  # its <style> applies
        assert browser.evaluate("window.origin") == "null" and browser.evaluate(COOKIE) == "SecurityError"
        # Data Docs: their relative links still lead from page to page (a sandboxed page may navigate itself)
        browser.goto(base + file_url("data_docs/raw/index.html"))
        browser.evaluate("document.querySelector('a').click()")
        assert browser.wait_for("document.body.innerText.includes('12 expectations passed')")
        assert browser.evaluate("location.pathname").endswith("/data_docs/raw/validations/v.html")
        browser.goto(base + file_url("dbt_docs/index.html") + f"#!/model/{DBT_NODE}", settle=2)
        assert browser.wait_for("document.body.innerText.includes('Referenced By')"), "dbt docs did not render"
        assert DBT_NODE.split(".")[-1] in browser.evaluate("document.body.innerText")
        assert browser.evaluate("window.injected") is None  # the description did not end dbt's script
        assert browser.evaluate("window.origin") == "null" and browser.evaluate(COOKIE) == "SecurityError"
