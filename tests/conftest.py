"""Shared fixtures: the real MariaDB (test databases), a real S3 API server, Airflow's home.

Tests never touch the demo's databases, bucket or Airflow home: they use their own
``recsys_test``/``recsys_raw_test`` databases (recreated each session, owned by the
same least-privileged user), a moto S3 server on a free port, and ``.airflow-test``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# RECSYS_TEST_SUFFIX lets two test sessions share one MariaDB (their own databases and user)
# and one checkout (their own Airflow home, so two SQLite metadata databases never lock each other,
# and their own dbt target folder). Each pytest-xdist worker (`make test` runs two) is such a session.
TEST_SUFFIX = os.environ.get("RECSYS_TEST_SUFFIX") or (
    f"_{os.environ['PYTEST_XDIST_WORKER']}" if os.environ.get("PYTEST_XDIST_WORKER") else ""
)
TEST_AIRFLOW_HOME = PROJECT_ROOT / f".airflow-test{TEST_SUFFIX}"
if TEST_SUFFIX:
    os.environ.setdefault("RECSYS_DBT_TARGET_PATH", str(PROJECT_ROOT / "dbt_project" / f"target{TEST_SUFFIX}"))

# Airflow reads its configuration when first imported: point it at the test home first.
os.environ["AIRFLOW_HOME"] = str(TEST_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(PROJECT_ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the tests write datasets as a user's own folders under pytest's temporary folders: allow them there
os.environ.setdefault("RECSYS_DATASET_DIRS", tempfile.gettempdir())

from recsys_pipeline import services, storage, warehouse  # noqa: E402 - after Airflow's configuration
from recsys_pipeline.settings import MySQLSettings, S3Settings, mysql_admin_settings, mysql_settings  # noqa: E402

TEST_DATABASE = f"recsys_test{TEST_SUFFIX}"
TEST_RAW_DATABASE = f"recsys_raw_test{TEST_SUFFIX}"
TEST_USER = f"recsys_test{TEST_SUFFIX}"
DATA_DIR = Path(os.environ.get("RECSYS_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


def require_dataset(path: Path) -> Path:
    """A shared dataset the end-to-end tests run on: skipped where it is absent, but never in CI."""
    if not path.exists():
        message = f"{path} not found (set RECSYS_DATA_DIR to the folder with the shared datasets)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {message}; the end-to-end tests must not be skipped in CI", pytrace=False)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mysql_test_settings():
    """A least-privileged test user (fresh random password) on freshly recreated test databases."""
    app = replace(
        mysql_settings(),
        user=TEST_USER,
        password=secrets.token_hex(16),
        database=TEST_DATABASE,
        raw_database=TEST_RAW_DATABASE,
    )
    services.ensure_mariadb(app)
    admin = mysql_admin_settings()
    with warehouse.connect(admin, database="") as conn:
        cur = conn.cursor()
        for database in (TEST_DATABASE, TEST_RAW_DATABASE):
            cur.execute(f"DROP DATABASE IF EXISTS {warehouse.quote_identifier(database)}")
        conn.commit()
    warehouse.bootstrap(admin, app, [TEST_DATABASE, TEST_RAW_DATABASE])
    return app


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 API server in its own process, on a free loopback port."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert services.wait_for_port("127.0.0.1", port, 30), "moto_server did not start"
    yield endpoint
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def s3_test_settings(s3_server) -> S3Settings:
    settings = S3Settings(
        endpoint_url=s3_server,
        access_key_id="test-key",
        secret_access_key="test-secret",
        region="us-east-1",
        bucket="recsys-test",
        prefix="recsys-pipeline",
    )
    storage.ensure_bucket(storage.client(settings), settings.bucket)
    return settings


def pipeline_environment(mysql: MySQLSettings, s3: S3Settings, work_dir: Path, data_dir: Path, **extra: str) -> dict:
    """The process environment that points a pipeline run (Airflow or not) at the test services."""
    env = dict(os.environ)
    env.update(
        RECSYS_MYSQL_USER=mysql.user,
        RECSYS_MYSQL_PASSWORD=mysql.password,
        RECSYS_MYSQL_DATABASE=mysql.database,
        RECSYS_RAW_DATABASE=mysql.raw_database,
        RECSYS_S3_ENDPOINT_URL=s3.endpoint_url,
        RECSYS_S3_ACCESS_KEY_ID=s3.access_key_id,
        RECSYS_S3_SECRET_ACCESS_KEY=s3.secret_access_key,
        RECSYS_S3_BUCKET=s3.bucket,
        RECSYS_S3_PREFIX=s3.prefix,
        RECSYS_WORK_DIR=str(work_dir),
        RECSYS_DATA_DIR=str(data_dir),
        **extra,
    )
    return env


@pytest.fixture(scope="session")
def airflow_home():
    """A migrated Airflow metadata database for the tests (SQLite in .airflow-test)."""
    from importlib.metadata import version

    TEST_AIRFLOW_HOME.mkdir(exist_ok=True)
    stamp = TEST_AIRFLOW_HOME / ".migrated"
    airflow_version = version("apache-airflow")
    if not stamp.exists() or stamp.read_text() != airflow_version:  # migrate again after an upgrade
        subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"], check=True, capture_output=True
        )
        stamp.write_text(airflow_version)
    return TEST_AIRFLOW_HOME


@pytest.fixture(scope="session")
def online_retail_path() -> Path:
    return require_dataset(DATA_DIR / "online-retail" / "online_retail.parquet")


@pytest.fixture(scope="session")
def groceries_path() -> Path:
    return require_dataset(DATA_DIR / "groceries" / "Groceries_dataset.csv")


# the longest files start first, so two sessions (`make test`: -n 2 --dist loadfile) finish together
SLOW_FILES_FIRST = ("test_training_dag.py", "test_airflow_standalone.py", "test_celery_scale_out.py")


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES_FIRST)))  # stable: a file keeps its order
