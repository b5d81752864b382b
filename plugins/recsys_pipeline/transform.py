"""Run dbt from its own virtual environment.

dbt-mysql 1.7 pins dbt-core 1.7, whose dependencies cannot live beside Airflow 3.3
and TensorFlow 2.21, so dbt has its own environment (``requirements-dbt.txt``) and
the pipeline calls its executable, as astronomer-cosmos does with
``dbt_executable_path``. Credentials reach dbt's ``profiles.yml`` through the
environment of the subprocess only.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Sequence

from recsys_pipeline.settings import MySQLSettings, dbt_executable, dbt_project_dir

log = logging.getLogger(__name__)


class DbtError(RuntimeError):
    """A dbt command failed; the message carries dbt's own error lines."""


def dbt_env(settings: MySQLSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RECSYS_MYSQL_HOST=settings.host,
        RECSYS_MYSQL_PORT=str(settings.port),
        RECSYS_MYSQL_USER=settings.user,
        RECSYS_MYSQL_PASSWORD=settings.password,
        RECSYS_MYSQL_DATABASE=settings.database,
        RECSYS_RAW_DATABASE=settings.raw_database,
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return env


def run_dbt(settings: MySQLSettings, args: Sequence[str], dbt_vars: dict | None = None) -> str:
    """Run ``dbt <args>`` in the project with ``dbt_vars``; return its output, raise DbtError on failure."""
    project = dbt_project_dir()
    command = [str(dbt_executable()), *args, "--project-dir", str(project), "--profiles-dir", str(project)]
    variables = {"raw_schema": settings.raw_database, **(dbt_vars or {})}
    command += ["--vars", json.dumps(variables)]
    log.info("running %s", " ".join(command))
    process = subprocess.run(command, env=dbt_env(settings), cwd=project, capture_output=True, text=True)
    output = process.stdout + process.stderr
    for line in output.splitlines():
        log.info("dbt | %s", line)
    if process.returncode != 0:
        errors = [line for line in output.splitlines() if "ERROR" in line or "Error" in line or "FAIL" in line]
        raise DbtError(f"dbt {' '.join(args)} failed (exit {process.returncode}):\n" + "\n".join(errors[-20:] or output.splitlines()[-20:]))
    return output
