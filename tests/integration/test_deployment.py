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
    assert set(services) == AIRFLOW_SERVICES | BACKING_SERVICES
    for name in BACKING_SERVICES | {"airflow-apiserver"}:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    secrets = _env_values(generated_env)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW__CORE__FERNET_KEY"]
        assert env["RECSYS_MYSQL_PASSWORD"] == secrets["RECSYS_MYSQL_PASSWORD"]
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
