"""The scale-out path, natively: Airflow with the CeleryExecutor and two Celery workers runs the training DAG.

What ``docker-compose.yaml`` declares, started here without Docker: PostgreSQL for Airflow's
metadata and Celery's results (a database of its own, recreated per run), this machine's
Redis as the broker, then the api-server, scheduler and dag-processor, and two ``airflow
celery worker`` processes with distinct hostnames, concurrency 1 each, on one queue (its name
is new each run, so a concurrent run on the same Redis never takes these tasks). The
training DAG, triggered through the REST API on groceries (one epoch, a dry run: it trains,
evaluates and decides, and publishes nothing), must succeed with its tasks run by both
workers, as the task instances' ``hostname`` shows.

On one machine both workers share a network name, so each reports its Celery name as its
hostname (Airflow's ``[core] hostname_callable``, set for the workers only); on machines of
their own they need nothing of the kind. Every process runs in one process group, stopped
as one when the test ends, passing or not.

Services: ``RECSYS_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432``,
trust authentication) and ``RECSYS_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from recsys_pipeline.features.builds import record_checked_build
from recsys_pipeline.quality.features_gate import check_quality
from recsys_pipeline.run import RunContext

from conftest import PROJECT_ROOT, TEST_SUFFIX, _free_port, pipeline_environment
from pipeline_steps import build_features, load

sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
from airflow_local import is_healthy, password_file, standalone_env, stop_group

pytestmark = pytest.mark.integration

POSTGRES_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("RECSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = f"recsys_celery_test{TEST_SUFFIX}"
WORKERS = ("recsys-worker-1", "recsys-worker-2")
# on features built just before by the same stage functions (in this process, while Airflow starts): the
# feature build as Airflow tasks (~40, dbt's watchers) is the standalone test's, and here it would make the
# test 4.5 minutes long instead of under 3 (it passes on Celery too, with build_features on)
# (the form's other model family: the GRU sequence encoder; a dry run decides but publishes nothing)
CONF = {
    "dataset": "groceries",
    "build_features": False,
    "epochs": 1,
    "top_k": 10,
    "model_family": "two_tower_gru",
    "dry_run": True,
    "backtest": False,
}
# each worker reports this as its hostname (what a task instance records): its Celery name
HOSTNAME_MODULE = """import os


def hostname() -> str:
    return os.environ["RECSYS_CELERY_WORKER_NAME"]
"""


def _recreate_database(drop_only: bool = False) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{POSTGRES_URL}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            if not drop_only:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()


def _forget_queue(queue: str) -> None:
    """Drop what the run left in Redis under its queue's name (its messages, kombu's binding)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{queue}*"))
    if keys:
        client.delete(*keys)


def _build_features(settings, env: dict) -> None:
    """Load groceries, build its features and pass the features gate, as ``recsys_features`` does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_DATA_DIR", env["RECSYS_DATA_DIR"])
        run = RunContext("groceries", "celery-features", work_root=Path(env["RECSYS_WORK_DIR"]))
        admitted = load(settings, "groceries", run)
        build_features(settings, run, admitted["dbt_vars"], admitted["dbt_plan"]["full_refresh"])
        check_quality(settings, run)
        record_checked_build(settings, run)


def _tail(path: Path, chars: int = 3000) -> str:
    return f"\n--- {path.name} ---\n" + (path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)")


class Cluster:
    """Airflow's components and the workers, as one process group with a log file each."""

    def __init__(self, home: Path, env: dict):
        self.home, self.env, self.pgid = home, env, None
        self.processes: dict[str, subprocess.Popen] = {}
        (home / "logs").mkdir(parents=True, exist_ok=True)

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def start(self, name: str, *args: str, **extra_env: str) -> subprocess.Popen:
        with self.log(name).open("w") as log:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("airflow")), *args],
                env={**self.env, **extra_env},
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=self.pgid or 0,  # the first one leads the group the others join
            )
        self.pgid = self.pgid or process.pid
        self.processes[name] = process
        return process

    def wait_until(self, condition, what: str, timeout: float, every: float = 3) -> None:
        """Poll ``condition`` until it holds; fail at once, with every log's tail, when a component exits."""
        deadline = time.monotonic() + timeout
        while not condition():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited with code {process.returncode} {what}{self.logs()}")
            assert time.monotonic() < deadline, f"not done after {timeout:.0f} s: {what}{self.logs()}"
            time.sleep(every)

    def logs(self) -> str:
        return "".join(_tail(self.log(name)) for name in self.processes)

    def stop(self) -> None:
        """SIGTERM the group, reap the components, then SIGKILL whatever of the group is left."""
        if self.pgid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        stop_group(self.pgid, grace=5)  # a task's own children, or a component that would not stop
        for process in self.processes.values():
            process.wait(30)


class Api:
    def __init__(self, base: str, password: str):
        self.base, self.token = base, None
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, method=method, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)


@pytest.fixture
def celery_airflow(tmp_path, mysql_test_settings, s3_test_settings, groceries_path):
    home = tmp_path / "airflow"
    home.mkdir()
    (tmp_path / "pythonpath").mkdir()
    (tmp_path / "pythonpath" / "recsys_celery_hostname.py").write_text(HOSTNAME_MODULE)
    port = _free_port()
    queue = f"recsys_celery_test{TEST_SUFFIX}_{secrets.token_hex(4)}"
    pipeline_env = pipeline_environment(
        mysql_test_settings,
        replace(s3_test_settings, prefix=s3_test_settings.prefix + "-celery"),
        tmp_path / "work",
        groceries_path.parents[1],
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(64),
        RECSYS_DATASET="groceries",
        RECSYS_FEATURES_SCHEDULE="none",  # only the run the test triggers
        RECSYS_TRAINING_SCHEDULE="none",
    )
    with pytest.MonkeyPatch.context() as patch:  # standalone_env starts from this process's environment
        for name, value in pipeline_env.items():
            patch.setenv(name, value)
        env = standalone_env(home, port)
    database = f"{POSTGRES_URL.split('://', 1)[1]}/{DATABASE}"
    env.update(
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://{database}",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+postgresql+psycopg2://{database}",
        AIRFLOW__CELERY__BROKER_URL=REDIS_URL,
        AIRFLOW__OPERATORS__DEFAULT_QUEUE=queue,
        AIRFLOW__CELERY__WORKER_CONCURRENCY="1",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
        AIRFLOW__API__WORKERS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    _recreate_database()
    cluster = Cluster(home, env)
    try:
        migrated = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        cluster.start("api-server", "api-server")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        for name in WORKERS:
            cluster.start(
                name,
                "celery",
                "worker",
                "--celery-hostname",
                name,
                "--concurrency",
                "1",
                "--queues",
                queue,
                "--skip-serve-logs",  # the task logs are on this disk; two servers would want one port
                "--without-mingle",
                "--without-gossip",
                RECSYS_CELERY_WORKER_NAME=name,
                AIRFLOW__CORE__HOSTNAME_CALLABLE="recsys_celery_hostname.hostname",
                PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path / "pythonpath"), env.get("PYTHONPATH")])),
            )
        _build_features(mysql_test_settings, env)  # while Airflow starts
        cluster.wait_until(lambda: is_healthy(f"http://localhost:{port}"), "waiting for a healthy Airflow", 240)
        cluster.wait_until(
            lambda: all(f"@{name} ready" in cluster.log(name).read_text() for name in WORKERS),
            "waiting for both Celery workers",
            120,
        )
        yield cluster, Api(f"http://localhost:{port}", json.loads(password_file(home).read_text())["admin"])
    finally:
        cluster.stop()
        _forget_queue(queue)
        _recreate_database(drop_only=True)


def test_the_training_dag_runs_on_two_celery_workers(celery_airflow):
    cluster, api = celery_airflow
    cluster.wait_until(
        lambda: "recsys_training" in {d["dag_id"] for d in api.call("GET", "/api/v2/dags")["dags"]},
        "waiting for the dag-processor to parse recsys_training",
        180,
    )
    assert api.call("GET", "/api/v2/importErrors")["total_entries"] == 0
    api.call("PATCH", "/api/v2/dags/recsys_training", {"is_paused": False})
    run_id = api.call("POST", "/api/v2/dags/recsys_training/dagRuns", {"logical_date": None, "conf": CONF})[
        "dag_run_id"
    ]

    run_url = f"/api/v2/dags/recsys_training/dagRuns/{run_id}"
    cluster.wait_until(lambda: api.call("GET", run_url)["state"] in ("success", "failed"), "running the DAG", 900, 5)
    run = api.call("GET", run_url)
    instances = api.call("GET", f"{run_url}/taskInstances?limit=500")["task_instances"]
    states = {ti["task_id"]: ti["state"] for ti in instances}
    assert run["state"] == "success", f"{states}{cluster.logs()}"
    assert states["use_built_features"] == states["train_two_tower"] == states["evaluate_models"] == "success"
    assert states["score_users"] == states["promotion_gate"] == "success"
    assert states["publish_release"] == "skipped"  # a dry run publishes nothing
    assert states["load_raw"] == "skipped"  # on the warehouse's current features, no reload
    folder = next(
        p
        for p in Path(cluster.env["RECSYS_WORK_DIR"], "groceries").glob("*/two_tower/training.json")
        if json.loads(p.read_text())["config"]["sequence_encoder"] == "gru"
    ).parents[1]
    assert (folder / "report.html").exists() and (folder / "decision.json").exists()

    # every task that ran went to one of the two workers, and each worker ran some (the scheduler itself
    # marks an EmptyOperator, like cosmos's producer_watcher_done, done: no hostname)
    ran = {ti["task_id"]: ti["hostname"] for ti in instances if ti["hostname"]}
    print(f"tasks per worker: { {name: sorted(t for t, host in ran.items() if host == name) for name in WORKERS} }")
    assert set(ran.values()) <= set(WORKERS), ran
    assert {"train_two_tower", "evaluate_models", "score_users", "promotion_gate"} <= set(ran), ran
    assert set(ran.values()) == set(WORKERS), ran
