"""Where the pipeline finds its services and folders.

Every setting comes from an environment variable with a default that works on a
developer machine (MariaDB on 127.0.0.1, a local S3 API server). Inside Airflow the
MySQL and S3 settings are overridden by the Airflow connections ``recsys_mysql`` and
``recsys_s3`` when those exist, so a deployment keeps its secrets in Airflow's
connection store (or a secrets backend), never in this repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

MYSQL_CONN_ID = "recsys_mysql"
S3_CONN_ID = "recsys_s3"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


@dataclass(frozen=True)
class MySQLSettings:
    """Connection to the warehouse, and the two databases the pipeline owns."""

    host: str
    port: int
    user: str
    password: str
    database: str  # dbt models, recommendations: what analysts query
    raw_database: str  # raw tables filled by the loader

    def with_database(self, database: str) -> "MySQLSettings":
        return replace(self, database=database)


@dataclass(frozen=True)
class S3Settings:
    """Object storage reached through the S3 API (AWS S3, MinIO or a local moto server)."""

    endpoint_url: str | None
    access_key_id: str
    secret_access_key: str
    region: str
    bucket: str
    prefix: str  # every object of the project lives under this key prefix


def mysql_settings() -> MySQLSettings:
    """The pipeline user's MySQL settings (not root: see ``warehouse.bootstrap``)."""
    return MySQLSettings(
        host=_env("RECSYS_MYSQL_HOST", "127.0.0.1"),
        port=int(_env("RECSYS_MYSQL_PORT", "3306")),
        user=_env("RECSYS_MYSQL_USER", "recsys"),
        password=os.environ.get("RECSYS_MYSQL_PASSWORD", ""),
        database=_env("RECSYS_MYSQL_DATABASE", "recsys"),
        raw_database=_env("RECSYS_RAW_DATABASE", "recsys_raw"),
    )


def mysql_admin_settings() -> MySQLSettings:
    """An account allowed to create databases and users; used only by bootstrap."""
    base = mysql_settings()
    return replace(
        base,
        user=_env("RECSYS_MYSQL_ADMIN_USER", "root"),
        password=os.environ.get("RECSYS_MYSQL_ADMIN_PASSWORD", ""),
    )


def s3_settings() -> S3Settings:
    return S3Settings(
        endpoint_url=os.environ.get("RECSYS_S3_ENDPOINT_URL") or None,
        access_key_id=_env("RECSYS_S3_ACCESS_KEY_ID", "recsys-local"),
        secret_access_key=_env("RECSYS_S3_SECRET_ACCESS_KEY", "recsys-local-secret"),
        region=_env("RECSYS_S3_REGION", "us-east-1"),
        bucket=_env("RECSYS_S3_BUCKET", "recsys"),
        prefix=_env("RECSYS_S3_PREFIX", "recsys-pipeline").strip("/"),
    )


def work_dir() -> Path:
    """Folder for a run's intermediate files (model, scores) between tasks.

    On one machine a local folder; with several Celery workers it must be a shared
    volume (docker-compose.yaml mounts one).
    """
    return Path(_env("RECSYS_WORK_DIR", str(PROJECT_ROOT / ".work")))


def dbt_executable() -> Path:
    return Path(_env("RECSYS_DBT_EXECUTABLE", str(PROJECT_ROOT / ".venv-dbt" / "bin" / "dbt")))


def dbt_project_dir() -> Path:
    return Path(_env("RECSYS_DBT_PROJECT_DIR", str(PROJECT_ROOT / "dbt_project")))


def data_dir() -> Path:
    """Where the shared public datasets live (never copied into the repository)."""
    return Path(_env("RECSYS_DATA_DIR", str(PROJECT_ROOT.parent / "shared" / "data")))


def _airflow_connection(conn_id: str):
    """The Airflow connection ``conn_id``, or None outside Airflow or when it is not defined."""
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # not running under Airflow
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - an undefined connection raises a provider-specific error
        return None


def mysql_settings_for_task() -> MySQLSettings:
    """MySQL settings inside an Airflow task: the ``recsys_mysql`` connection wins over env."""
    base = mysql_settings()
    conn = _airflow_connection(MYSQL_CONN_ID)
    if conn is None:
        return base
    return replace(
        base,
        host=conn.host or base.host,
        port=int(conn.port or base.port),
        user=conn.login or base.user,
        password=conn.password if conn.password is not None else base.password,
        database=conn.schema or base.database,
    )


def s3_settings_for_task() -> S3Settings:
    """S3 settings inside an Airflow task: the ``recsys_s3`` connection (aws type) wins over env."""
    base = s3_settings()
    conn = _airflow_connection(S3_CONN_ID)
    if conn is None:
        return base
    extra = conn.extra_dejson or {}
    return replace(
        base,
        endpoint_url=extra.get("endpoint_url", base.endpoint_url),
        access_key_id=conn.login or base.access_key_id,
        secret_access_key=conn.password or base.secret_access_key,
        region=extra.get("region_name", base.region),
    )
