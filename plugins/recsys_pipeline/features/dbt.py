"""Run dbt from its own virtual environment.

dbt-mysql 1.7 pins dbt-core 1.7, whose dependencies cannot live beside Airflow 3.3
and TensorFlow 2.21, so dbt has its own environment (``requirements-dbt.txt``) and
the pipeline calls its executable, as astronomer-cosmos does with
``dbt_executable_path``. Credentials reach dbt's ``profiles.yml`` through the
environment of the subprocess only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from recsys_pipeline import warehouse
from recsys_pipeline.settings import MySQLSettings, dbt_executable, dbt_project_dir, dbt_threads

log = logging.getLogger(__name__)

PROJECT_NAME = "recsys"  # dbt_project.yml's name


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
        RECSYS_DBT_THREADS=str(dbt_threads()),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return env


# a target folder of its own (dbt's compiled SQL, state and logs): two sessions on one checkout (parallel tests)
TARGET_PATH_SETTING = "RECSYS_DBT_TARGET_PATH"


def log_dir() -> Path:
    """Where ``run_dbt``'s dbt writes dbt.log."""
    own_target = os.environ.get(TARGET_PATH_SETTING)
    return Path(own_target) / "logs" if own_target else dbt_project_dir() / "logs"


def run_dbt(settings: MySQLSettings, args: Sequence[str], dbt_vars: dict | None = None) -> str:
    """Run ``dbt <args>`` in the project with ``dbt_vars``; return its output, raise DbtError on failure."""
    project = dbt_project_dir()
    command = [str(dbt_executable()), *args, "--project-dir", str(project), "--profiles-dir", str(project)]
    own_target = os.environ.get(TARGET_PATH_SETTING)
    if own_target and "--target-path" not in args:
        command += ["--target-path", own_target, "--log-path", str(log_dir())]
    variables = {"raw_schema": settings.raw_database, **(dbt_vars or {})}
    command += ["--vars", json.dumps(variables)]
    log.info("running %s", " ".join(command))
    process = subprocess.run(command, env=dbt_env(settings), cwd=project, capture_output=True, text=True)
    output = process.stdout + process.stderr
    for line in output.splitlines():
        log.info("dbt | %s", line)
    if process.returncode != 0:
        errors = [line for line in output.splitlines() if "ERROR" in line or "Error" in line or "FAIL" in line]
        raise DbtError(
            f"dbt {' '.join(args)} failed (exit {process.returncode}):\n"
            + "\n".join(errors[-20:] or output.splitlines()[-20:])
        )
    return output


# --- incremental or full rebuild -----------------------------------------------------------

BUILD_STATE_TABLE = "dbt_build_state"
BUILD_STATE_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
  `project` VARCHAR(64) NOT NULL PRIMARY KEY,
  `fingerprint` CHAR(64) NOT NULL,
  `raw_events` BIGINT NOT NULL,
  `raw_max_loaded_at` DATETIME NULL,
  `built_at` DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""
_FINGERPRINTED = ("dbt_project.yml", "models", "macros", "seeds", "tests")


def project_fingerprint(dbt_vars: dict) -> str:
    """Digest of everything that decides what a staged row looks like: models, macros, seeds, vars.

    Incremental models only append rows built by the current rules; when any rule
    changes (a seed edited, a pattern var of another dataset) the digest changes and
    the next build is a full refresh, so old rows never keep old rules.
    """
    project = dbt_project_dir()
    digest = hashlib.sha256(json.dumps(dbt_vars or {}, sort_keys=True).encode())
    for name in _FINGERPRINTED:
        root = project / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildPlan:
    """Whether the next ``dbt build`` may update incremental models in place, and why."""

    full_refresh: bool
    reason: str
    fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)


def _raw_events_stamp(conn, settings: MySQLSettings) -> tuple[int, datetime | None]:
    table = f"{warehouse.quote_identifier(settings.raw_database)}.`raw_events`"
    return tuple(warehouse.query_one(conn, f"SELECT COUNT(*), MAX(loaded_at) FROM {table}"))


def plan_build(settings: MySQLSettings, dbt_vars: dict, requested_full_refresh: bool = False) -> BuildPlan:
    """Incremental only when it gives the same tables as a full rebuild.

    That is when the last successful build used the same rules and the raw events
    have only grown since: every row it saw is still there with the same
    ``loaded_at`` (the loader re-stamps a row whose content changed).
    """
    fingerprint = project_fingerprint(dbt_vars)
    if requested_full_refresh:
        return BuildPlan(True, "full refresh requested", fingerprint)
    with warehouse.connect(settings) as conn:
        state_table = f"{warehouse.quote_identifier(settings.database)}.`{BUILD_STATE_TABLE}`"
        if not warehouse.table_exists(conn, settings.database, BUILD_STATE_TABLE):
            return BuildPlan(True, "no earlier build recorded", fingerprint)
        state = warehouse.query_one(
            conn,
            f"SELECT fingerprint, raw_events, raw_max_loaded_at FROM {state_table} WHERE project = %s",
            (PROJECT_NAME,),
        )
        if state is None:
            return BuildPlan(True, "no earlier build recorded", fingerprint)
        built_fingerprint, built_rows, built_max_loaded_at = state
        if built_fingerprint != fingerprint:
            return BuildPlan(True, "models, macros, seeds or vars changed since the last build", fingerprint)
        raw_table = f"{warehouse.quote_identifier(settings.raw_database)}.`raw_events`"
        still_there = warehouse.query_one(
            conn, f"SELECT COUNT(*) FROM {raw_table} WHERE loaded_at <= %s", (built_max_loaded_at,)
        )[0]
    if still_there != built_rows:
        return BuildPlan(
            True,
            f"raw events changed or were removed since the last build "
            f"({built_rows} rows then, {still_there} of them now)",
            fingerprint,
        )
    return BuildPlan(False, "raw events only grew since the last build with the same rules", fingerprint)


def record_build(settings: MySQLSettings, fingerprint: str) -> None:
    """Remember what the successful build saw, for the next ``plan_build``."""
    with warehouse.connect(settings) as conn:
        table = f"{warehouse.quote_identifier(settings.database)}.`{BUILD_STATE_TABLE}`"
        cur = conn.cursor()
        cur.execute(BUILD_STATE_DDL.format(table=table))
        rows, max_loaded_at = _raw_events_stamp(conn, settings)
        cur.execute(
            f"REPLACE INTO {table} VALUES (%s, %s, %s, %s, UTC_TIMESTAMP())",
            (PROJECT_NAME, fingerprint, rows, max_loaded_at),
        )
        conn.commit()


def build(settings: MySQLSettings, dbt_vars: dict, full_refresh: bool = False) -> BuildPlan:
    """``dbt build`` in one invocation: incremental when ``plan_build`` allows it, else full refresh."""
    plan = plan_build(settings, dbt_vars, full_refresh)
    log.info("dbt build, %s: %s", "full refresh" if plan.full_refresh else "incremental", plan.reason)
    run_dbt(settings, ["build", *(["--full-refresh"] if plan.full_refresh else [])], dbt_vars)
    record_build(settings, plan.fingerprint)
    return plan


DOCS_FILES = ("index.html", "manifest.json", "catalog.json")


def generate_docs(settings: MySQLSettings, dbt_vars: dict, destination: Path) -> list[Path]:
    """``dbt docs generate`` into ``destination``: the static site analysts browse (index.html + its JSON)."""
    with tempfile.TemporaryDirectory() as build_dir:
        run_dbt(settings, ["docs", "generate", "--target-path", build_dir], dbt_vars)
        destination.mkdir(parents=True, exist_ok=True)
        written = []
        for name in DOCS_FILES:
            shutil.copyfile(Path(build_dir) / name, destination / name)
            written.append(destination / name)
    return written
