"""docker-compose.yaml is valid, asks for every secret, and agrees with the native setup.

There is no Docker engine here: docker-compose 1.29 (``.venv-compose``, built by ``make
test``) parses, interpolates and validates the file with ``docker-compose config``, the
same check ``docker compose config`` does on a machine with an engine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT_ROOT / ".venv-compose" / "bin" / "docker-compose"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
BACKING_SERVICES = {"postgres", "redis", "mariadb", "minio"}
INIT_SERVICES = {"warehouse-init", "minio-init"}  # the only holders of the MariaDB root password and MinIO root key
SERVING = "recsys-serving"  # the real-time service: read-only MinIO user, never a root secret


def compose_config(env_file: Path) -> subprocess.CompletedProcess:
    """``docker-compose config`` with only ``env_file`` as the source of variables (not this process's environment)."""
    if not COMPOSE.exists():
        pytest.skip(f"{COMPOSE} not installed (make test builds it)")
    clean = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return subprocess.run(
        [
            str(COMPOSE),
            "--project-directory",
            str(PROJECT_ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(PROJECT_ROOT / "docker-compose.yaml"),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
        env=clean,
    )


@pytest.fixture(scope="module")
def generated_env(tmp_path_factory) -> Path:
    """A fresh .env as `make` writes one (scripts/write_env.py: random secrets)."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "write_env.py"), str(path)], check=True)
    return path


def _env_values(path: Path) -> dict[str, str]:
    lines = [
        line.removeprefix("export ") for line in path.read_text().splitlines() if line and not line.startswith("#")
    ]
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_the_compose_file_validates_with_generated_secrets(generated_env):
    result = compose_config(generated_env)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == AIRFLOW_SERVICES | BACKING_SERVICES | INIT_SERVICES | {SERVING}
    for name in BACKING_SERVICES | {"airflow-apiserver", SERVING}:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    secrets = _env_values(generated_env)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW__CORE__FERNET_KEY"]
        assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{secrets['REDIS_PASSWORD']}@redis:6379/0"
        for dependency in BACKING_SERVICES:
            assert services[name]["depends_on"][dependency]["condition"] == "service_healthy"
    # every published port listens on the loopback interface only
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]  # long or short syntax
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def test_without_secrets_the_compose_file_refuses_to_start(tmp_path):
    empty = tmp_path / ".env"
    empty.write_text("# nothing set\n")
    result = compose_config(empty)
    assert result.returncode != 0
    assert re.search(r"set (POSTGRES|REDIS|MARIADB_ROOT|RECSYS_MYSQL|MINIO_ROOT)_?\w* in \.env", result.stderr), (
        result.stderr
    )


def test_no_password_is_written_into_the_compose_file():
    text = (PROJECT_ROOT / "docker-compose.yaml").read_text()
    for line in text.splitlines():
        match = re.match(r"\s*(\w*(PASSWORD|SECRET|FERNET_KEY)\w*):\s*(.+)", line)
        if match:
            assert match.group(3).startswith("${") and ":?" in match.group(3), (
                f"a secret with a value or a default: {line.strip()}"
            )


def test_the_compose_settings_are_ones_the_pipeline_reads():
    """The containers configure the pipeline through the same variables as the native setup."""
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())
    names = {n for n in compose["x-airflow-common"]["environment"] if n.startswith("RECSYS_")}
    code = "".join(
        path.read_text()
        for folder in ("plugins/recsys_pipeline", "dags")
        for path in (PROJECT_ROOT / folder).rglob("*.py")
    )
    example = (PROJECT_ROOT / ".env.example").read_text()
    assert {
        "RECSYS_DATASET",
        "RECSYS_FEATURES_SCHEDULE",
        "RECSYS_TRAINING_SCHEDULE",
        "RECSYS_ALERT_WEBHOOK_URL",
    } <= names
    for name in names:
        assert f'"{name}"' in code, f"{name} is set in docker-compose.yaml but the pipeline never reads it"
        assert re.search(rf"^#?\s*(export )?{name}=", example, re.M), f".env.example does not explain {name}"
    for name in (
        "RECSYS_MYSQL_PASSWORD",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "MARIADB_ROOT_PASSWORD",
        "MINIO_ROOT_PASSWORD",
    ):
        assert re.search(rf"^#?\s*(export )?{name}=", example, re.M), f".env.example does not explain {name}"


def _values(service: dict) -> str:
    """Everything a container is given: its environment values and command, as one text."""
    env = service.get("environment") or {}
    return "\n".join([str(v) for v in env.values()] + [str(service.get("command", ""))])


def test_the_root_secrets_reach_only_the_init_services(generated_env):
    """MariaDB's root password and MinIO's root key: never in an Airflow container's environment."""
    config = yaml.safe_load(compose_config(generated_env).stdout)
    secrets = _env_values(generated_env)
    owners = {
        "MARIADB_ROOT_PASSWORD": {"mariadb", "warehouse-init"},
        "MINIO_ROOT_PASSWORD": {"minio", "minio-init"},
    }
    for name, service in config["services"].items():
        assert "env_file" not in service, f"{name} reads the whole .env (env_file): every secret in it"
        for secret, allowed in owners.items():
            if name not in allowed:
                assert secrets[secret] not in _values(service), f"{secret} reaches {name}"


def test_each_airflow_container_gets_only_the_identities_its_role_needs(generated_env):
    config = yaml.safe_load(compose_config(generated_env).stdout)
    secrets = _env_values(generated_env)
    services = config["services"]
    worker = services["airflow-worker"]["environment"]
    assert worker["RECSYS_MYSQL_PASSWORD"] == secrets["RECSYS_MYSQL_PASSWORD"]
    assert worker["RECSYS_S3_ACCESS_KEY_ID"] == secrets["RECSYS_S3_ACCESS_KEY_ID"] != secrets["MINIO_ROOT_USER"]
    assert worker["RECSYS_S3_SECRET_ACCESS_KEY"] == secrets["RECSYS_S3_SECRET_ACCESS_KEY"]
    api = services["airflow-apiserver"]["environment"]  # the models page: read-only
    assert api["RECSYS_S3_READONLY_ACCESS_KEY_ID"] == secrets["RECSYS_S3_READONLY_ACCESS_KEY_ID"]
    assert api["RECSYS_S3_READONLY_SECRET_ACCESS_KEY"] == secrets["RECSYS_S3_READONLY_SECRET_ACCESS_KEY"]
    pipeline_secrets = [secrets[n] for n in ("RECSYS_MYSQL_PASSWORD", "RECSYS_S3_SECRET_ACCESS_KEY")]
    for name in AIRFLOW_SERVICES - {"airflow-worker"}:
        assert not any(s in _values(services[name]) for s in pipeline_secrets), f"{name} gets the pipeline's secrets"
    assert api["RECSYS_MYSQL_READONLY_USER"] == "recsys_analyst"  # online metrics: SELECT on the marts only
    analysts = secrets["RECSYS_MYSQL_ANALYST_PASSWORD"]
    assert {n for n, service in services.items() if analysts in _values(service)} == {
        "warehouse-init",
        "airflow-apiserver",
    }
    # the users are created before Airflow starts; MariaDB allows LOAD DATA LOCAL by default, nothing widens it
    init = services["airflow-init"]["depends_on"]
    done = "service_completed_successfully"
    assert {n: init[n]["condition"] for n in INIT_SERVICES} == dict.fromkeys(INIT_SERVICES, done)
    assert "local-infile" not in _values(services["mariadb"])
    cnf = (PROJECT_ROOT / "deploy" / "mariadb" / "recsys-warehouse.cnf").read_text()
    assert not re.search(r"^\s*local[_-]infile", cnf, re.M)


def test_the_minio_policies_are_scoped_to_the_bucket():
    """The pipeline may read and write objects of its bucket; the read-only user may list and read them."""
    import json

    folder = PROJECT_ROOT / "deploy" / "minio"
    script = (folder / "init.sh").read_text()
    allowed = {
        "pipeline-policy.json": {
            "s3:GetBucketLocation",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
        },
        "readonly-policy.json": {"s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"},
    }
    for file, actions in allowed.items():
        assert file in script
        statements = json.loads((folder / file).read_text())["Statement"]
        assert all(s["Effect"] == "Allow" for s in statements)
        assert {a for s in statements for a in s["Action"]} == actions
        assert {r for s in statements for r in s["Resource"]} == {"arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"}
    result = subprocess.run(["sh", "-n", str(folder / "init.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_serving_container_reads_releases_read_only_and_answers_on_loopback(generated_env):
    config = yaml.safe_load(compose_config(generated_env).stdout)
    secrets = _env_values(generated_env)
    serving = config["services"][SERVING]
    env = serving["environment"]
    assert "recsys serve" in " ".join(serving["command"]) and "/healthz" in " ".join(serving["healthcheck"]["test"])
    assert env["RECSYS_S3_READONLY_ACCESS_KEY_ID"] == secrets["RECSYS_S3_READONLY_ACCESS_KEY_ID"]
    assert secrets["RECSYS_S3_SECRET_ACCESS_KEY"] not in _values(serving)  # never the pipeline's write key
    assert env["RECSYS_SERVING_DATASET"] == "online-retail"
