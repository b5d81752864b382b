"""The read-only object-storage identity the models page and serving read releases with."""

from __future__ import annotations

import pytest

from recsys_pipeline.settings import s3_readonly_settings, s3_settings, warehouse_access_settings

pytestmark = pytest.mark.unit


def test_readers_use_the_read_only_identity_when_one_is_configured(monkeypatch):
    monkeypatch.setenv("RECSYS_S3_ACCESS_KEY_ID", "recsys-pipeline")
    monkeypatch.setenv("RECSYS_S3_SECRET_ACCESS_KEY", "pipeline-secret")
    monkeypatch.setenv("RECSYS_S3_READONLY_ACCESS_KEY_ID", "recsys-reader")
    monkeypatch.setenv("RECSYS_S3_READONLY_SECRET_ACCESS_KEY", "reader-secret")
    reader = s3_readonly_settings()
    assert (reader.access_key_id, reader.secret_access_key) == ("recsys-reader", "reader-secret")
    assert (reader.endpoint_url, reader.bucket, reader.prefix) == (
        s3_settings().endpoint_url,
        s3_settings().bucket,
        s3_settings().prefix,
    )


def test_without_one_readers_use_the_pipelines_identity(monkeypatch):
    """Natively (moto enforces no policy) there is nothing to separate."""
    monkeypatch.setenv("RECSYS_S3_ACCESS_KEY_ID", "recsys-pipeline")
    monkeypatch.delenv("RECSYS_S3_READONLY_ACCESS_KEY_ID", raising=False)
    assert s3_readonly_settings().access_key_id == "recsys-pipeline"


def test_client_hosts_are_loopback_unless_configured(monkeypatch):
    monkeypatch.delenv("RECSYS_MYSQL_CLIENT_HOSTS", raising=False)
    assert warehouse_access_settings().client_hosts == ("localhost", "127.0.0.1")
    monkeypatch.setenv("RECSYS_MYSQL_CLIENT_HOSTS", "%, 10.0.0.%")
    assert warehouse_access_settings().client_hosts == ("%", "10.0.0.%")


def test_the_models_page_reads_mysql_with_the_read_only_login_when_one_is_configured(monkeypatch):
    from recsys_pipeline.settings import mysql_readonly_settings, mysql_settings

    monkeypatch.setenv("RECSYS_MYSQL_USER", "recsys")
    monkeypatch.delenv("RECSYS_MYSQL_READONLY_USER", raising=False)
    assert mysql_readonly_settings().user == "recsys"
    monkeypatch.setenv("RECSYS_MYSQL_READONLY_USER", "recsys_analyst")
    monkeypatch.setenv("RECSYS_MYSQL_READONLY_PASSWORD", "analyst-secret")
    reader = mysql_readonly_settings()
    assert (reader.user, reader.password) == ("recsys_analyst", "analyst-secret")
    assert (reader.host, reader.database) == (mysql_settings().host, mysql_settings().database)
