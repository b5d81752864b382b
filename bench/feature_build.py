"""Benchmark: synthetic shop data -> the feature build the DAG runs, at several sizes.

    .venv/bin/python bench/feature_build.py --events 1000000 10000000

For each size it generates (or reuses) a synthetic dataset in the raw data contract
(``bench/synthetic_events.py``), then calls the stage functions the DAG's feature-build
tasks call (``orchestration/feature_tasks.py``), in the DAG's order and with the same
arguments, and times each call: ``load_raw`` (``ingest.staging.stage``), ``validate_raw``
(``quality.raw_gate.validate_raw``: the raw gate, admitting the load, planning the build),
the ``features`` task group's single ``dbt build`` (``features.dbt.run_dbt`` with the plan
the raw gate returned, as cosmos runs it), ``document_features`` and ``check_quality``.

Why the stage functions and nothing finer: a benchmark that wraps internals measures a
call graph that stops existing at the next refactoring, and silently times less than the
DAG does. Timing what a task calls keeps the figures comparable with what a DAG run
spends, and keeps this script working while the stages' insides change. Finer figures
come only from what the stages report themselves: the loader's own staging time, and
dbt's per-node times (``run_results.json``, or dbt's log when a build was stopped).
What the tasks do around a stage call (the warehouse lock, uploading Data Docs to object
storage) is Airflow's and object storage's time, not the build's, and is left out.

``--rerun`` runs the same stages again on unchanged data (the weekly rerun: every row
carried over, an incremental build); ``--grow 0.01`` then appends one day of new events
(1% of the rows, whole sessions: ``synthetic_events.next_day``) to the shop's file and runs
the stages again, the daily scheduled run (the load keeps the old rows' ``loaded_at``, so
the build is incremental); ``--split-run-test`` times ``dbt run`` and ``dbt test`` on their
own after the build, to see which half a slow build spends in.

Isolation: its own databases (``recsys_bench``, ``recsys_bench_raw``, dropped and
recreated before each size so every size is a first load), its own least-privileged
MySQL user (a fresh random password per run, created with ``warehouse.bootstrap`` as the
tests do), its own run folders and dbt target and log folders under ``.work/bench/``: it
never touches the demo's or the tests' tables, nor ``dbt_project/target``. It imports
the ``plugins/`` next to it, so it measures the checkout it is in.

Each size runs in a child process, so the benchmark's peak RSS is that size's own; dbt's is
sampled while it runs (``getrusage`` would count, in a forked child, the parent's memory).
Results: a table on stdout, ``.work/bench/feature_build.json``, and one
``.work/bench/result-<events>.json`` and ``.log`` (the stages' own log lines, dbt's output)
per size.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(PROJECT_ROOT / "plugins")]

from synthetic_events import Params, ensure_dataset, next_day  # noqa: E402

DEFAULT_WORK = PROJECT_ROOT / ".work" / "bench"
# the demo's and the tests' databases: the benchmark refuses to use them
PROTECTED_DATABASES = {
    "recsys",
    "recsys_raw",
    "recsys_test",
    "recsys_raw_test",
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
}
TARGET_SECONDS = 300.0  # the target: the 10M-event feature build (dbt build) in under 5 minutes
LINEAR_SLACK = 1.10  # a 10x size may take up to 11x the time and still count as linear (noise)
DBT_BUILD = "dbt build"  # the features task group's single dbt build
ALL_STAGES = "feature build (all 5 stages)"

log = logging.getLogger("bench")


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# --- dbt's run_results.json and log ------------------------------------------------------------


def read_run_results(target: Path) -> dict:
    """Per-node times of the last dbt command, from ``run_results.json`` in ``target``."""
    path = target / "run_results.json"
    if not path.exists():
        return {"nodes": [], "elapsed": None}
    data = json.loads(path.read_text())
    nodes = [_node_of_result(result) for result in data.get("results", [])]
    nodes.sort(key=lambda n: -n["seconds"])
    return {"nodes": nodes, "elapsed": data.get("elapsed_time")}


def _node_of_result(result: dict) -> dict:
    unique_id = result.get("unique_id", "")
    parts = unique_id.split(".")
    kind = parts[0]
    name = parts[2] if len(parts) > 2 else unique_id
    if kind == "test" and len(parts) > 3:
        hashed = parts[-1].isalnum() and len(parts[-1]) == 10
        name = ".".join(parts[2:-1]) if hashed else ".".join(parts[2:])
    response = result.get("adapter_response") or {}
    return {
        "kind": kind,
        "name": name,
        "status": result.get("status"),
        "seconds": round(float(result.get("execution_time") or 0.0), 3),
        "rows_affected": response.get("rows_affected"),
        "failures": result.get("failures"),
    }


def node_sums(nodes: list[dict]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for node in nodes:
        sums[node["kind"]] = round(sums.get(node["kind"], 0.0) + node["seconds"], 3)
    return sums


_LOG_DONE = re.compile(
    r"\d+ of \d+ (?P<what>OK created|OK loaded|ERROR creating|PASS|FAIL|WARN|ERROR)\s+"
    r"(?P<type>sql \w+ model |seed file )?"
    r"(?:\w+\.)?(?P<name>\w+)\s.*?\[(?:\w+ (?P<rows>\d+)|\w+)? ?in (?P<seconds>[\d.]+)s\]"
)
_LOG_START = re.compile(r"\d+ of \d+ START (?:sql \w+ (?P<kind>model) |seed file |test )?(?:\w+\.)?(?P<name>\w+)")
_LOG_CLOCK = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def nodes_from_dbt_log(log_path: Path, offset: int) -> tuple[list[dict], list[dict]]:
    """Finished nodes and nodes still running, from dbt's log after ``offset``.

    Used when a build was stopped (``--build-timeout``): dbt then writes no complete
    ``run_results.json``, but its log says which nodes finished, in how long, and which
    had started.
    """
    if not log_path.exists():
        return [], []
    with log_path.open("rb") as handle:
        handle.seek(offset)
        text = _ANSI.sub("", handle.read().decode("utf-8", "replace"))
    nodes, started = [], {}
    last_clock = None
    for line in text.splitlines():
        clock = _LOG_CLOCK.match(line)
        if clock:
            last_clock = _seconds_of_day(clock.group(1))
        if "[info ]" not in line:
            continue
        done = _LOG_DONE.search(line)
        if done:
            nodes.append(_node_of_log_line(done))
            continue
        start = _LOG_START.search(line)
        if start and last_clock is not None:
            started[start["name"]] = (start["kind"] or "test", last_clock)
    finished = {n["name"] for n in nodes}
    nodes.sort(key=lambda n: -n["seconds"])
    running = [
        {"kind": kind, "name": name, "running_for_at_least_s": round((last_clock - began) % 86400, 1)}
        for name, (kind, began) in started.items()
        if name not in finished
    ]
    return nodes, running


def _node_of_log_line(done: re.Match) -> dict:
    what = done["what"]
    kind = {"seed file ": "seed", None: "test"}.get(done["type"], "model")
    ok = what.startswith("OK") or what == "PASS"
    rows = int(done["rows"]) if done["rows"] and kind != "test" else None
    return {
        "kind": kind,
        "name": done["name"],
        "status": "success" if ok else what.lower(),
        "seconds": float(done["seconds"]),
        "rows_affected": rows,
        "failures": None,
    }


def _seconds_of_day(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class BuildWatchdog:
    """Stops a dbt build that runs past ``seconds``: SIGINT to the dbt processes this
    process started, then KILL of the benchmark user's MySQL queries (never anyone else's)."""

    def __init__(self, seconds: float | None, admin, bench_user: str) -> None:
        self.seconds, self.admin, self.bench_user = seconds, admin, bench_user
        self.fired = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> BuildWatchdog:
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        say(f"build timeout ({self.seconds:.0f} s): stopping dbt and the benchmark user's queries")
        self._stop_children()
        self._kill_queries()

    @staticmethod
    def _stop_children() -> None:
        import psutil

        children = psutil.Process(os.getpid()).children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGINT)
        _, alive = psutil.wait_procs(children, timeout=30)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def _kill_queries(self) -> None:
        from recsys_pipeline import warehouse

        with contextlib.suppress(Exception), warehouse.connect(self.admin, database="") as conn:
            cur = conn.cursor()
            cur.execute("SELECT id FROM information_schema.processlist WHERE user = %s", (self.bench_user,))
            for (connection_id,) in cur.fetchall():
                with contextlib.suppress(Exception):
                    cur.execute(f"KILL {int(connection_id)}")


# --- what was measured, and where ----------------------------------------------------------------


def code_version() -> dict:
    """The git commit, a digest of the dbt project's files as they are (the models may be edited
    between runs), and where the pipeline's code was imported from."""
    import recsys_pipeline

    project = PROJECT_ROOT / "dbt_project"
    digest = hashlib.sha256()
    for name in ("dbt_project.yml", "models", "macros", "seeds", "tests"):
        root = project / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    git = ["git", "-C", str(PROJECT_ROOT)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "dbt_project", "plugins"], capture_output=True, text=True
    ).stdout
    return {
        "git_commit": commit,
        "uncommitted_changes_in_dbt_project_or_plugins": bool(dirty.strip()),
        "dbt_project_sha256": digest.hexdigest()[:16],
        "recsys_pipeline": str(Path(recsys_pipeline.__file__).parent),
    }


def _mysql_facts(admin) -> dict:
    from recsys_pipeline import warehouse

    names = (
        "version",
        "innodb_buffer_pool_size",
        "innodb_log_file_size",
        "innodb_flush_log_at_trx_commit",
        "tmp_table_size",
        "max_heap_table_size",
        "sort_buffer_size",
        "join_buffer_size",
        "aria_pagecache_buffer_size",
    )
    with warehouse.connect(admin, database="") as conn:
        cur = conn.cursor()
        cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ", ".join(["%s"] * len(names)) + ")", names)
        return dict(cur.fetchall())


def _table_sizes(app) -> dict:
    """Rows (exact) and on-disk MB of every base table in the benchmark's two databases."""
    from recsys_pipeline import warehouse

    q = warehouse.quote_identifier
    out: dict[str, dict] = {}
    with warehouse.connect(app, database=app.database) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT table_schema, table_name, data_length + index_length FROM information_schema.tables "
            "WHERE table_schema IN (%s, %s) AND table_type = 'BASE TABLE' ORDER BY table_schema, table_name",
            (app.raw_database, app.database),
        )
        for schema, table, size in cur.fetchall():
            rows = warehouse.scalar(conn, f"SELECT COUNT(*) FROM {q(schema)}.{q(table)}")
            out[f"{schema}.{table}"] = {"rows": int(rows), "mb": round((size or 0) / 2**20, 1)}
        if any(t.endswith(".stg_raw__rejected_events") for t in out):
            cur.execute(f"SELECT reject_reason, COUNT(*) FROM {q(app.database)}.`stg_raw__rejected_events` GROUP BY 1")
            out["rejected_by_reason"] = {reason: int(n) for reason, n in cur.fetchall()}
    return out


def _recreate_databases(admin, app) -> None:
    from recsys_pipeline import warehouse

    with warehouse.connect(admin, database="") as conn:
        cur = conn.cursor()
        for database in (app.database, app.raw_database):
            cur.execute(f"DROP DATABASE IF EXISTS {warehouse.quote_identifier(database)}")
        conn.commit()
    warehouse.bootstrap(admin, app, [app.database, app.raw_database])


# --- one size, in its own process ------------------------------------------------------------------


def _rss_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: KiB


class ChildRss:
    """The largest RSS of this process's descendants (dbt), sampled while a stage runs.

    ``getrusage(RUSAGE_CHILDREN)`` cannot tell it: a forked child's peak counts the memory
    it shared with this process before it ran dbt, so it reports the benchmark's own size.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ChildRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                for child in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        self.peak = max(self.peak, child.memory_info().rss)

    def peak_rss_mb(self) -> dict[str, float]:
        """This process's peak so far, and the largest child's during the stage (0: no child ran long enough)."""
        return {"bench": _rss_mb(resource.RUSAGE_SELF), "child": round(self.peak / 2**20, 1)}


class StageFailed(Exception):
    """A stage raised: it is in the result's errors, and the stages after it are not run."""


@dataclass
class Bench:
    """One size: the benchmark's settings and folders, and the result being filled in."""

    events: int
    args: argparse.Namespace
    app: object  # MySQLSettings of the benchmark's own user and databases
    admin: object
    dataset: Path
    result: dict

    @property
    def dbt_target(self) -> Path:
        return self.args.work_dir / "dbt" / "target"

    @property
    def dbt_log(self) -> Path:
        return self.args.work_dir / "dbt" / "logs" / "dbt.log"

    @property
    def stages(self) -> dict:
        return self.result["stages"]

    def run_context(self, release_id: str):
        from recsys_pipeline.run import RunContext

        return RunContext(str(self.dataset), release_id, work_root=self.args.work_dir / "runs")

    def error(self, stage: str, error: str, **extra) -> None:
        self.result["errors"].append({"stage": stage, **extra, "error": error})


def time_stage(bench: Bench, name: str, function, *args, **kwargs) -> tuple[object, dict]:
    """Call one stage function; its row (seconds, peak RSS so far) goes into the result."""
    say(f"{bench.events:,} events: {name} ...")
    gc.collect()
    started = time.perf_counter()
    with ChildRss() as children:
        try:
            value = function(*args, **kwargs)
            error = None
        except Exception as exc:  # recorded, then the sequence stops
            log.exception("%s failed", name)
            value, error = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    row = {"seconds": round(seconds, 3), "ok": error is None, "peak_rss_mb": children.peak_rss_mb()}
    bench.stages[name] = row
    say(f"{bench.events:,} events: {name} {row['seconds']:.1f} s{'' if error is None else ' FAILED: ' + error}")
    if error is not None:
        bench.error(name, error)
        raise StageFailed(name)
    return value, row


def time_dbt_build(bench: Bench, name: str, admitted: dict) -> None:
    """The features task group: one ``dbt build`` with the vars and the plan the raw gate returned."""
    plan = admitted["dbt_plan"]
    dbt_args = ["build", "--full-refresh"] if plan["full_refresh"] else ["build"]
    say(f"{bench.events:,} events: {name} ({' '.join(dbt_args)}: {plan['reason']}) ...")
    attempt = 0
    while True:
        attempt += 1
        outcome = _one_dbt_build(bench, dbt_args, admitted["dbt_vars"])
        if outcome["error"] is None or outcome["timed_out"] or attempt > bench.args.dbt_retries:
            break
        bench.error(name, outcome["error"], attempt=attempt)
        say(
            f"{bench.events:,} events: dbt build failed (attempt {attempt}), "
            f"retrying in {bench.args.retry_wait} s:\n{outcome['error']}"
        )
        time.sleep(bench.args.retry_wait)
    error = outcome.pop("error")
    sums = {f"sum of {kind} nodes": seconds for kind, seconds in node_sums(outcome["nodes"]).items()}
    bench.stages[name] = outcome | {
        "ok": error is None,
        "attempts": attempt,
        "dbt_args": dbt_args,
        "plan": plan,
        "sub": sums,
    }
    state = "" if error is None else " FAILED:\n" + error
    say(f"{bench.events:,} events: {name} {outcome['seconds']:.1f} s{state}")
    if error is not None:
        bench.error(name, error, attempt=attempt)
        raise StageFailed(name)


def _one_dbt_build(bench: Bench, dbt_args: list[str], dbt_vars: dict) -> dict:
    from recsys_pipeline.features import dbt

    offset = bench.dbt_log.stat().st_size if bench.dbt_log.exists() else 0
    (bench.dbt_target / "run_results.json").unlink(missing_ok=True)
    gc.collect()
    started = time.perf_counter()
    with ChildRss() as children, BuildWatchdog(bench.args.build_timeout, bench.admin, bench.app.user) as watchdog:
        try:
            dbt.run_dbt(bench.app, dbt_args, dbt_vars)
            error = None
        except dbt.DbtError as exc:
            error = str(exc)
    seconds = time.perf_counter() - started
    results = read_run_results(bench.dbt_target)
    still_running: list[dict] = []
    if watchdog.fired or not results["nodes"]:
        results["nodes"], still_running = nodes_from_dbt_log(bench.dbt_log, offset)
    if watchdog.fired:
        running = ", ".join(f"{n['name']} (for {n['running_for_at_least_s']:.0f} s)" for n in still_running)
        error = f"stopped after the build timeout of {bench.args.build_timeout:.0f} s; still running: {running or '-'}"
    return {
        "seconds": round(seconds, 3),
        "error": error,
        "timed_out": watchdog.fired,
        "still_running_at_timeout": still_running,
        "dbt_elapsed": results["elapsed"],
        "nodes": results["nodes"],
        "peak_rss_mb": children.peak_rss_mb(),
    }


def _check_quality_task(settings, run) -> dict:
    """What the DAG's check_quality task runs: the features gate, then the build is recorded as checked."""
    from recsys_pipeline.features import builds
    from recsys_pipeline.quality import features_gate

    checked = features_gate.check_quality(settings, run)
    builds.record_checked_build(settings, run)
    return checked


def feature_build(bench: Bench, release_id: str, prefix: str = "") -> None:
    """The DAG's feature-build tasks' stage calls, in its order (``build_and_check_features``)."""
    run = bench.run_context(release_id)
    staged = load_raw_stage(bench, run, prefix)
    admitted = validate_raw_stage(bench, run, staged, prefix)
    time_dbt_build(bench, prefix + DBT_BUILD, admitted)
    document_features_stage(bench, run, admitted, prefix)
    check_quality_stage(bench, run, prefix)
    stage_names = ("load_raw", "validate_raw", DBT_BUILD, "document_features", "check_quality")
    total = sum(bench.stages[prefix + s]["seconds"] for s in stage_names)
    bench.stages[prefix + ALL_STAGES] = {"seconds": round(total, 3)}


# One function per feature-build task: its stage call, timed, and what the stage reports of itself.
# ``end_to_end.py`` calls the same ones, each in a process of its own.


def load_raw_stage(bench: Bench, run, prefix: str = "") -> dict:
    """The ``load_raw`` task: ``ingest.staging.stage``; returns what it staged (its XCom)."""
    from recsys_pipeline.ingest.staging import stage

    staged, row = time_stage(bench, prefix + "load_raw", stage, bench.app, run.dataset, load_id=run.load_id)
    row |= _staging_figures(row["seconds"], staged)
    return staged


def validate_raw_stage(bench: Bench, run, staged: dict, prefix: str = "") -> dict:
    """The ``validate_raw`` task: the raw gate; returns the admitted load with its dbt plan (its XCom)."""
    from recsys_pipeline.quality import raw_gate

    # the DAG's full_refresh param is off by default: the plan decides (a first load is a full refresh)
    admitted, row = time_stage(
        bench, prefix + "validate_raw", raw_gate.validate_raw, bench.app, run, staged, full_refresh=False
    )
    row["summary"] = {"dbt_plan": admitted["dbt_plan"], "raw_gate": admitted["raw_gate"]}
    bench.result["dbt_vars"] = admitted["dbt_vars"]
    return admitted


def document_features_stage(bench: Bench, run, admitted: dict, prefix: str = "") -> dict:
    """The ``document_features`` task: ``builds.document_features`` (dbt docs, row counts)."""
    from recsys_pipeline.features import builds

    documented, row = time_stage(
        bench,
        prefix + "document_features",
        builds.document_features,
        bench.app,
        run,
        admitted["dbt_vars"],
        admitted["dbt_plan"]["fingerprint"],
    )
    row["summary"] = documented
    return documented


def check_quality_stage(bench: Bench, run, prefix: str = "") -> dict:
    """The ``check_quality`` task: the features gate, then the build recorded as checked."""
    checked, row = time_stage(bench, prefix + "check_quality", _check_quality_task, bench.app, run)
    row["summary"] = {suite: outcome["success"] for suite, outcome in checked["suites"].items()}
    return checked


def _staging_figures(seconds: float, staged: dict) -> dict:
    """The loader times its own work: it streams the files batch by batch, reading and checking one batch
    while the previous one's LOAD DATA runs (``ingest.loader.BackgroundLoads``), so the two cannot be told
    apart by the clock; the rest of ``stage`` is finding the dataset and the summary."""
    return {
        "sub": {
            "loader: read, check, write and LOAD DATA, overlapped": staged["seconds"],
            "outside the loader": round(seconds - staged["seconds"], 3),
        },
        "summary": {k: v for k, v in staged.items() if k not in ("dbt_vars", "dbt_vars_json")},
    }


def grown_build(bench: Bench, share: float) -> None:
    """The daily run: the same shop's files with one more day of events (``share`` of the rows, new), loaded
    and built again on top of the first build -- the incremental path a scheduled run takes."""
    folder = bench.dataset.with_name(f"{bench.dataset.name}-next-day-{share:g}")
    manifest = next_day(bench.dataset, folder, share)
    bench.result["grown_dataset"] = {"folder": str(folder), **manifest}
    say(f"{bench.events:,} events: {manifest['new_events']:,} new events of the next day in {folder}")
    bench.dataset = folder
    feature_build(bench, f"bench-{bench.events}-next-day", prefix="next day ")


def split_run_test(bench: Bench) -> None:
    """``dbt run`` and ``dbt test`` on their own, after the build: which half a slow build spends in."""
    from recsys_pipeline.features import dbt

    dbt_vars = bench.result["dbt_vars"]
    for name, dbt_args in (("dbt run", ["run", "--full-refresh"]), ("dbt test", ["test"])):
        (bench.dbt_target / "run_results.json").unlink(missing_ok=True)
        with contextlib.suppress(StageFailed):  # recorded; the other half still says something
            time_stage(bench, name, dbt.run_dbt, bench.app, dbt_args, dbt_vars)
        row = bench.stages[name]
        row["nodes"] = read_run_results(bench.dbt_target)["nodes"]
        row["sub"] = {f"sum of {k} nodes": v for k, v in node_sums(row["nodes"]).items()}


def _prepare(args: argparse.Namespace) -> Bench:
    """The dataset (generated or reused: not a pipeline stage), and the benchmark's own databases and user."""
    from recsys_pipeline import services
    from recsys_pipeline.settings import mysql_admin_settings, mysql_settings

    events = args.one
    result: dict = {
        "events": events,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code_version(),
        "stages": {},
        "errors": [],
    }
    folder = args.work_dir / "data" / f"synthetic-{events}-seed{args.seed}"
    # the pipeline reads dataset folders only inside RECSYS_DATA_DIR or a folder RECSYS_DATASET_DIRS lists
    listed = os.environ.get("RECSYS_DATASET_DIRS", "")
    os.environ["RECSYS_DATASET_DIRS"] = os.pathsep.join(p for p in (listed, str(folder.parent)) if p)
    started = time.perf_counter()
    manifest = ensure_dataset(Params(events=events, seed=args.seed), folder, regenerate=args.regenerate)
    reused = bool(manifest.get("reused"))
    seconds = time.perf_counter() - started
    if reused:  # what generating it took when it was made
        seconds = manifest["seconds"]["generate"] + manifest["seconds"]["write"]
    result["dataset"] = {"folder": str(folder), **manifest}
    result["stages"]["generate"] = {"seconds": round(seconds, 3), "reused": reused}
    counts = manifest["counts"]
    say(
        f"{events:,} events: dataset {'reused' if reused else 'generated'} in {folder} "
        f"({counts['users']:,} users, {counts['items']:,} items)"
    )
    app = replace(
        mysql_settings(),
        user=args.mysql_user,
        password=secrets.token_hex(16),
        database=args.database,
        raw_database=args.raw_database,
    )
    admin = mysql_admin_settings()
    services.ensure_mariadb(app)
    _recreate_databases(admin, app)
    result["mysql"] = _mysql_facts(admin)
    bench = Bench(events, args, app, admin, folder, result)
    shutil.rmtree(bench.dbt_target, ignore_errors=True)
    shutil.rmtree(args.work_dir / "runs", ignore_errors=True)
    return bench


def run_one(args: argparse.Namespace) -> dict:
    work: Path = args.work_dir
    # dbt reads these (features.dbt.dbt_env passes the environment through): the benchmark
    # never writes dbt_project/target, which the pipeline and other runs use.
    os.environ["DBT_TARGET_PATH"] = str(work / "dbt" / "target")
    os.environ["DBT_LOG_PATH"] = str(work / "dbt" / "logs")
    logging.basicConfig(
        filename=work / f"result-{args.one}.log",
        filemode="w",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    bench = _prepare(args)
    try:
        feature_build(bench, f"bench-{bench.events}")
        if args.split_run_test:
            split_run_test(bench)
        if args.rerun:
            feature_build(bench, f"bench-{bench.events}-rerun", prefix="rerun ")
        if args.grow:
            grown_build(bench, args.grow)
    except StageFailed:
        pass  # in the result's errors; the stages after it were not run
    with contextlib.suppress(Exception):
        bench.result["tables"] = _table_sizes(bench.app)
    children = [row["peak_rss_mb"]["child"] for row in bench.stages.values() if "peak_rss_mb" in row]
    bench.result["peak_rss_mb"] = {
        "python (this size's process)": _rss_mb(resource.RUSAGE_SELF),
        "largest child (dbt, sampled)": max(children, default=0.0),
    }
    bench.result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return bench.result


# --- report ----------------------------------------------------------------------------------------


def _rate(events: int, seconds: float | None) -> str:
    return f"{events / seconds:,.0f}" if seconds else "-"


def _rss_cell(row: dict) -> str:
    rss = row.get("peak_rss_mb")
    return f"{rss['bench']:,.0f} / {rss['child']:,.0f}" if rss else ""


def _stage_lines(run: dict) -> list[str]:
    n, lines = run["events"], []
    for stage, row in run["stages"].items():
        if stage == "generate":
            label = "generate (not a stage" + (", reused)" if row.get("reused") else ")")
            lines.append(f"{n:>12,}  {label:<36} {row['seconds']:>9.1f} {_rate(n, row['seconds']):>11}")
            continue
        failed = ""
        if not row.get("ok", True):
            failed = "  STOPPED at the build timeout" if row.get("timed_out") else "  FAILED"
        lines.append(
            f"{n:>12,}  {stage:<36} {row['seconds']:>9.1f} {_rate(n, row['seconds']):>11} {_rss_cell(row):>15}{failed}"
        )
        subs = row.get("sub") or {}
        for sub, seconds in subs.items():
            if not sub.startswith("sum of"):
                lines.append(f"{'':>12}    {'- ' + sub:<34} {seconds:>9.1f} {_rate(n, seconds):>11}")
        sums = {k: v for k, v in subs.items() if k.startswith("sum of")}
        if sums:
            lines.append(
                f"{'':>12}    (dbt runs 2 nodes at a time; "
                + ", ".join(f"{k} {v:.1f} s" for k, v in sums.items())
                + ")"
            )
    rss = run.get("peak_rss_mb", {})
    lines.append(f"{'':>12}  peak RSS: " + ", ".join(f"{k} {v:,.0f} MB" for k, v in rss.items()))
    for error in run.get("errors", []):
        first = error["error"].splitlines()[0] if error["error"] else ""
        lines.append(f"{'':>12}  ERROR in {error['stage']}: {first}")
    return [line.rstrip() for line in lines] + [""]


def _verdict(ratio: float, size_ratio: float, lower_bound: bool) -> str:
    if ratio <= size_ratio * LINEAR_SLACK:
        verdict = "linear"
    else:
        verdict = "slightly superlinear" if ratio <= size_ratio * 1.5 else "SUPERLINEAR"
    if lower_bound:  # the large run was stopped: only a lower bound
        return "unknown (stopped before it finished)" if verdict == "linear" else "at least " + verdict
    return verdict


def _scaling(small: dict, large: dict) -> tuple[list[str], dict]:
    size_ratio = large["events"] / small["events"]
    lines = [
        f"Scaling {small['events']:,} -> {large['events']:,} events (size x{size_ratio:g}): "
        f"linear means a time ratio <= x{size_ratio * LINEAR_SLACK:g}",
        f"  {'stage':<44} {'ratio':>8} {'exponent':>9}  verdict",
    ]
    ratios = {}
    for stage in _stage_and_sub_names(small, large):
        (a, a_bound), (b, b_bound) = _seconds(small, stage), _seconds(large, stage)
        if a is None or b is None or a < 0.05 or a_bound:
            continue
        ratio = b / a
        exponent = math.log(ratio) / math.log(size_ratio) if ratio > 0 else float("nan")
        verdict = _verdict(ratio, size_ratio, b_bound)
        ratios[stage] = {
            "ratio": round(ratio, 2),
            "exponent": round(exponent, 3),
            "verdict": verdict,
            "lower_bound": b_bound,
        }
        lines.append(f"  {stage:<44} {('>=' if b_bound else '') + f'{ratio:.1f}x':>8} {exponent:>9.2f}  {verdict}")
    return lines + [""], ratios


def _target_lines(big: dict) -> tuple[list[str], dict | None]:
    build = big["stages"].get(DBT_BUILD)
    if build is None:
        return [], None
    n = big["events"]
    met = bool(build.get("ok")) and build["seconds"] <= TARGET_SECONDS
    target = {
        "events": n,
        "build_seconds": build["seconds"],
        "stopped": bool(build.get("timed_out")),
        "target_seconds": TARGET_SECONDS,
        "met": met,
    }
    lines = [
        f"Target: feature build (dbt build) of {n:,} events in under {TARGET_SECONDS:.0f} s: "
        f"{'>= ' if build.get('timed_out') else ''}{build['seconds']:.1f} s -> {'MET' if met else 'NOT MET'}"
    ]
    nodes = build.get("nodes") or []
    running = build.get("still_running_at_timeout") or []
    for kind, title in (("model", "models"), ("test", "tests"), ("seed", "seeds")):
        top = [node for node in nodes if node["kind"] == kind][: 12 if kind != "seed" else 3]
        unfinished = [node for node in running if node["kind"] == kind]
        if top or unfinished:
            lines.append(f"Slowest dbt {title} at {n:,} events:")
            lines += [
                f"  >={node['running_for_at_least_s']:>7.1f} s  {node['name']}  [still running when stopped]"
                for node in unfinished
            ]
            lines += [_node_line(node) for node in top]
    return lines, target


def _node_line(node: dict) -> str:
    rows = node.get("rows_affected")
    rows = f"  rows {rows:,}" if node["kind"] != "test" and isinstance(rows, int) and rows >= 0 else ""
    status = "" if node["status"] in ("success", "pass") else f"  [{node['status']}]"
    return f"  {node['seconds']:>9.1f} s  {node['name']}{status}{rows}"


def report(runs: list[dict]) -> tuple[str, dict]:
    runs = sorted(runs, key=lambda r: r["events"])
    header = f"{'events':>12}  {'stage':<36} {'seconds':>9} {'events/s':>11} {'peak RSS MB':>15}"
    lines = [
        "Seconds per stage (events/s = source events / stage seconds)",
        "peak RSS: the benchmark process's so far / the largest child's (dbt's) during the stage",
        header,
        "-" * len(header),
    ]
    for run in runs:
        lines += _stage_lines(run)
    ratios: dict = {}
    for small, large in zip(runs, runs[1:], strict=False):
        scaling_lines, ratios[f"{small['events']}->{large['events']}"] = _scaling(small, large)
        lines += scaling_lines
    target_lines, target = _target_lines(runs[-1])
    lines += target_lines
    ok_runs = [r["events"] for r in runs if r["stages"].get(DBT_BUILD, {}).get("ok")]
    summary = {"ratios": ratios, "target": target, "sizes_with_successful_build": ok_runs}
    return "\n".join(lines), summary


def _stage_and_sub_names(small: dict, large: dict) -> list[str]:
    names = []
    for stage in [s for s in large["stages"] if s != "generate"] + ["generate"]:
        if stage not in small["stages"]:
            continue
        names.append(stage)
        small_subs = small["stages"][stage].get("sub") or {}
        names += [f"{stage} / {sub}" for sub in large["stages"][stage].get("sub") or {} if sub in small_subs]
    # every model, slowest first
    build = large["stages"].get(DBT_BUILD, {})
    models = [n["name"] for n in build.get("still_running_at_timeout", []) if n["kind"] == "model"]
    models += [n["name"] for n in build.get("nodes", []) if n["kind"] == "model"]
    small_models = {n["name"] for n in small["stages"].get(DBT_BUILD, {}).get("nodes", []) if n["kind"] == "model"}
    return names + [f"model {name}" for name in models if name in small_models]


def _seconds(run: dict, name: str) -> tuple[float | None, bool]:
    """Seconds of a stage, sub-stage or model in ``run``, and whether that is only a lower bound."""
    build = run["stages"].get(DBT_BUILD, {})
    if name.startswith("model "):
        for node in build.get("nodes", []):
            if node["kind"] == "model" and node["name"] == name[6:]:
                return node["seconds"], False
        for node in build.get("still_running_at_timeout", []):
            if node["name"] == name[6:]:
                return node["running_for_at_least_s"], True
        return None, False
    stage, _, sub = name.partition(" / ")
    row = run["stages"].get(stage, {})
    bound = bool(row.get("timed_out")) or (stage == ALL_STAGES and bool(build.get("timed_out")))
    if sub:
        return (row.get("sub") or {}).get(sub), bound
    return row.get("seconds"), bound


def machine_facts() -> dict:
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    return {
        "cpus": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the DAG's feature-build stages on synthetic data of several sizes."
    )
    add = parser.add_argument
    add(
        "--events",
        type=int,
        nargs="+",
        default=[1_000_000, 10_000_000],
        help="sizes in events (default: 1000000 10000000)",
    )
    add(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK,
        help="data, run folders, dbt target/logs and results (default .work/bench)",
    )
    add_isolation_arguments(parser, "recsys_bench")
    add("--split-run-test", action="store_true", help="also time `dbt run` and `dbt test` on their own")
    add(
        "--rerun",
        action="store_true",
        help="also time every stage again on the same data (rows carried over, an incremental build)",
    )
    add(
        "--grow",
        type=float,
        metavar="SHARE",
        help="then append one day of new events (SHARE of the rows, e.g. 0.01) and time the incremental build",
    )
    add("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = parser.parse_args(argv)
    check_isolation_arguments(parser, args)
    return args


def add_isolation_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options of a benchmark that builds features in its own databases (named after ``name``)."""
    add = parser.add_argument
    add("--seed", type=int, default=42)
    add("--database", default=name, help=f"database for dbt's models (default {name})")
    add("--raw-database", default=f"{name}_raw", help=f"database for the raw tables (default {name}_raw)")
    add("--mysql-user", default=name, help="the benchmark's own MySQL user (created, random password)")
    add("--regenerate", action="store_true", help="regenerate the synthetic data even when it is there")
    add("--dbt-retries", type=int, default=0, help="retry a failed dbt build this many times (models being edited)")
    add("--retry-wait", type=int, default=180, help="seconds between dbt retries")
    add(
        "--build-timeout",
        type=float,
        default=None,
        help="stop a dbt build after this many seconds and report the nodes that finished (default: no limit)",
    )
    add("--keep-databases", action="store_true", help="keep the benchmark databases after the run (default: drop them)")


def check_isolation_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in (args.database, args.raw_database):
        if name in PROTECTED_DATABASES:
            parser.error(f"refusing to use database {name!r}: it belongs to the demo, the tests or MySQL")
    if args.database == args.raw_database:
        parser.error("--database and --raw-database must differ")
    args.work_dir = args.work_dir.resolve()


def _child_command(args: argparse.Namespace, events: int) -> list[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        str(events),
        "--seed",
        str(args.seed),
        "--work-dir",
        str(args.work_dir),
        "--database",
        args.database,
        "--raw-database",
        args.raw_database,
        "--mysql-user",
        args.mysql_user,
        "--dbt-retries",
        str(args.dbt_retries),
        "--retry-wait",
        str(args.retry_wait),
    ]
    if args.build_timeout:
        command += ["--build-timeout", str(args.build_timeout)]
    if args.grow:
        command += ["--grow", str(args.grow)]
    for flag in ("split_run_test", "rerun", "regenerate"):
        if getattr(args, flag):
            command.append("--" + flag.replace("_", "-"))
    return command


def _drop_databases(args: argparse.Namespace) -> None:
    from recsys_pipeline import warehouse
    from recsys_pipeline.settings import mysql_admin_settings

    with warehouse.connect(mysql_admin_settings(), database="") as conn:
        cur = conn.cursor()
        for database in (args.database, args.raw_database):
            cur.execute(f"DROP DATABASE IF EXISTS {warehouse.quote_identifier(database)}")
        for host in ("localhost", "127.0.0.1"):
            cur.execute("DROP USER IF EXISTS %s@%s", (args.mysql_user, host))
        conn.commit()


def _run_sizes(args: argparse.Namespace) -> list[dict]:
    """Each size in a child process of its own; the results it wrote."""
    runs = []
    for events in sorted(args.events):
        result_path = args.work_dir / f"result-{events}.json"
        result_path.unlink(missing_ok=True)
        started = time.perf_counter()
        child = subprocess.run(_child_command(args, events), cwd=PROJECT_ROOT)
        if not result_path.exists():
            say(
                f"{events:,} events: the run died (exit {child.returncode}) after "
                f"{time.perf_counter() - started:.0f} s; see {args.work_dir}/result-{events}.log"
            )
            continue
        runs.append(json.loads(result_path.read_text()))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        result = run_one(args)
        (args.work_dir / f"result-{args.one}.json").write_text(json.dumps(result, indent=2, default=str))
        return 0 if not result["errors"] else 2

    runs = _run_sizes(args)
    if not args.keep_databases:
        with contextlib.suppress(Exception):
            _drop_databases(args)
    if not runs:
        return 1
    text, summary = report(runs)
    print()
    print(text)
    output = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "bench/feature_build.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine_facts() | {"mysql": runs[0].get("mysql")},
        "runs": runs,
        **summary,
    }
    out = args.work_dir / "feature_build.json"
    out.write_text(json.dumps(output, indent=2, default=str))
    print(f"\nfigures: {out}")
    return 0 if all(not r["errors"] for r in runs) and len(runs) == len(args.events) else 2


if __name__ == "__main__":
    raise SystemExit(main())
