"""Benchmark: synthetic shop data -> MySQL raw tables -> every dbt model, at several sizes.

    .venv/bin/python bench/feature_build.py --events 1000000 10000000

For each size it generates (or reuses) a synthetic dataset in the raw data contract
(``bench/synthetic_events.py``), then times the pipeline's own stages, exactly as the
``recsys_training`` DAG calls them:

* ``load``:  ``stages.load`` -- the ``contract_files`` adapter reads and checks the files
  (``read+check``), ``stage_raw`` writes them into ``raw_*__new`` with ``LOAD DATA LOCAL
  INFILE`` (``mysql load``; split further into writing the TSV files, LOAD DATA itself and
  the rest), the raw gate profiles the load and runs the Great Expectations suites on it
  (``profile load``, ``raw gate (GX)``), it is swapped in, then the build is planned (the
  DAG's ``load_raw`` and ``validate_raw`` tasks);
* ``build``: one ``dbt build --full-refresh`` of every seed, model and test through the
  project's ``transform`` module (``transform.build``: plan, ``run_dbt``, record; in the
  DAG, cosmos's ``features.dbt_producer_watcher`` task runs the same single ``dbt build``);
  per-node times come from
  the ``run_results.json`` dbt writes;
* optionally (``--split-run-test``) ``dbt run`` and ``dbt test`` on their own, and
  (``--rerun``) the same load and build again on unchanged data (the weekly rerun:
  every row carried over, an incremental build).

Nothing is reimplemented: sub-stage times come from thin timing wrappers around the
project's functions (``warehouse.write_load_file``, ``warehouse.load_frame``, ...),
installed only in this process.

Isolation: the benchmark uses its own databases (``recsys_bench``, ``recsys_bench_raw``,
dropped and recreated before each size so every size is a first load), its own
least-privileged MySQL user (``recsys_bench``, a fresh random password per run, created
with ``warehouse.bootstrap`` as the tests do), and its own dbt target and log folders
under ``.work/bench/dbt/``, so it never touches the demo's or the tests' tables, nor
``dbt_project/target``.

Each size runs in a child process, so the peak RSS reported is that size's own.
Results: a table on stdout, ``.work/bench/feature_build.json``, and one
``.work/bench/result-<events>.json`` and ``.log`` per size.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import json
import logging
import math
import os
import platform
import resource
import secrets
import shutil
import subprocess
import re
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from synthetic_events import Params, ensure_dataset  # noqa: E402

DEFAULT_WORK = PROJECT_ROOT / ".work" / "bench"
# the demo's and the tests' databases: the benchmark refuses to use them
PROTECTED_DATABASES = {"recsys", "recsys_raw", "recsys_test", "recsys_raw_test", "mysql", "information_schema", "performance_schema", "sys"}
TARGET_SECONDS = 300.0  # the target: the 10M-event feature build in under 5 minutes
LINEAR_SLACK = 1.10  # a 10x size may take up to 11x the time and still count as linear (noise)

log = logging.getLogger("bench")


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def say(message: str) -> None:
    print(f"[{_now()}] {message}", flush=True)


# --- timing wrappers around the project's own functions --------------------------------------


class Timers:
    """Accumulated seconds of wrapped functions, by label; wrappers are removed on exit."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._restore: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:  # the project changed: measure what is there
            log.warning("no %s.%s to time; sub-stage %r not measured", getattr(owner, "__name__", owner), name, label)
            return

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, name, timed)
        self._restore.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()

    def take(self) -> dict[str, float]:
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        self.seconds.clear()
        self.calls.clear()
        return out


def _install_timers(timers: Timers) -> None:
    from recsys_pipeline import profiles, quality, stages, transform, warehouse
    from recsys_pipeline.ingest import adapters, loader

    # stages.load calls these through its module's globals, stage_raw through warehouse.*
    timers.wrap(stages, "read_dataset", "read+check")
    timers.wrap(loader, "stage_raw", "mysql load")
    timers.wrap(profiles, "profile_tables", "profile load")
    timers.wrap(quality, "run_suites", "raw gate (GX)")
    timers.wrap(adapters.RawDataset, "fingerprint", "sha256 of files")
    timers.wrap(warehouse, "write_load_file", "write TSV")
    timers.wrap(warehouse, "load_frame", "write TSV + LOAD DATA")
    timers.wrap(loader, "stamp_rows", "match unchanged rows")
    timers.wrap(warehouse, "swap_in", "swap tables")
    timers.wrap(transform, "plan_build", "plan build")
    timers.wrap(transform, "run_dbt", "dbt")
    timers.wrap(transform, "record_build", "record build")


def _derive(sub: dict[str, float]) -> dict[str, float]:
    """LOAD DATA on its own = load_frame's time minus writing its TSV files."""
    out = dict(sub)
    if "write TSV + LOAD DATA" in out:
        out["LOAD DATA"] = round(out.pop("write TSV + LOAD DATA") - out.get("write TSV", 0.0), 3)
    return out


# --- dbt's run_results.json -----------------------------------------------------------------


def read_run_results(target: Path) -> dict:
    """Per-node times of the last dbt command, from ``run_results.json`` in ``target``."""
    path = target / "run_results.json"
    if not path.exists():
        return {"nodes": [], "elapsed": None}
    data = json.loads(path.read_text())
    nodes = []
    for result in data.get("results", []):
        unique_id = result.get("unique_id", "")
        parts = unique_id.split(".")
        kind = parts[0]
        name = parts[2] if len(parts) > 2 else unique_id
        if kind == "test" and len(parts) > 3:
            name = ".".join(parts[2:-1]) if parts[-1].isalnum() and len(parts[-1]) == 10 else ".".join(parts[2:])
        response = result.get("adapter_response") or {}
        nodes.append(
            {
                "kind": kind,
                "name": name,
                "status": result.get("status"),
                "seconds": round(float(result.get("execution_time") or 0.0), 3),
                "rows_affected": response.get("rows_affected"),
                "failures": result.get("failures"),
            }
        )
    nodes.sort(key=lambda n: -n["seconds"])
    return {"nodes": nodes, "elapsed": data.get("elapsed_time")}


def node_sums(nodes: list[dict]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for node in nodes:
        sums[node["kind"]] = round(sums.get(node["kind"], 0.0) + node["seconds"], 3)
    return sums


_LOG_DONE = re.compile(
    r"\d+ of \d+ (?P<what>OK created|OK loaded|ERROR creating|PASS|FAIL|WARN|ERROR)\s+(?P<type>sql \w+ model |seed file )?"
    r"(?:\w+\.)?(?P<name>\w+)\s.*?\[(?:\w+ (?P<rows>\d+)|\w+)? ?in (?P<seconds>[\d.]+)s\]"
)
_LOG_START = re.compile(r"\d+ of \d+ START (?:sql \w+ (?P<kind>model) |seed file |test )?(?:\w+\.)?(?P<name>\w+)")
_LOG_CLOCK = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def nodes_from_dbt_log(log_path: Path, offset: int) -> tuple[list[dict], list[str]]:
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
            what = done["what"]
            kind = {"seed file ": "seed", None: "test"}.get(done["type"], "model")
            nodes.append(
                {
                    "kind": kind, "name": done["name"], "status": "success" if what.startswith("OK") or what == "PASS" else what.lower(),
                    "seconds": float(done["seconds"]), "rows_affected": int(done["rows"]) if done["rows"] and kind != "test" else None, "failures": None,
                }
            )
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

    def __enter__(self) -> "BuildWatchdog":
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        import psutil

        from recsys_pipeline import warehouse

        self.fired = True
        say(f"build timeout ({self.seconds:.0f} s): stopping dbt and the benchmark user's queries")
        children = psutil.Process(os.getpid()).children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGINT)
        _, alive = psutil.wait_procs(children, timeout=30)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(Exception), warehouse.connect(self.admin, database="") as conn:
            cur = conn.cursor()
            cur.execute("SELECT id FROM information_schema.processlist WHERE user = %s", (self.bench_user,))
            for (connection_id,) in cur.fetchall():
                with contextlib.suppress(Exception):
                    cur.execute(f"KILL {int(connection_id)}")


def dbt_project_version() -> dict:
    """What was measured: the git commit, and a digest of the dbt project's files as they are
    (the models may be edited between runs)."""
    project = PROJECT_ROOT / "dbt_project"
    digest = hashlib.sha256()
    for name in ("dbt_project.yml", "models", "macros", "seeds", "tests"):
        root = project / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--", "dbt_project", "plugins"], capture_output=True, text=True).stdout
    return {"git_commit": commit, "uncommitted_changes_in_dbt_project_or_plugins": bool(dirty.strip()), "dbt_project_sha256": digest.hexdigest()[:16]}


# --- MySQL facts ------------------------------------------------------------------------------


def _mysql_facts(admin) -> dict:
    from recsys_pipeline import warehouse

    names = (
        "version", "innodb_buffer_pool_size", "innodb_log_file_size", "innodb_flush_log_at_trx_commit",
        "tmp_table_size", "max_heap_table_size", "sort_buffer_size", "join_buffer_size", "aria_pagecache_buffer_size",
    )
    with warehouse.connect(admin, database="") as conn:
        cur = conn.cursor()
        cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ", ".join(["%s"] * len(names)) + ")", names)
        return {name: value for name, value in cur.fetchall()}


def _table_sizes(app) -> dict:
    """Rows (exact) and on-disk MB of every base table in the benchmark's two databases."""
    from recsys_pipeline import warehouse

    out: dict[str, dict] = {}
    with warehouse.connect(app, database=app.database) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT table_schema, table_name, data_length + index_length FROM information_schema.tables "
            "WHERE table_schema IN (%s, %s) AND table_type = 'BASE TABLE' ORDER BY table_schema, table_name",
            (app.raw_database, app.database),
        )
        for schema, table, size in cur.fetchall():
            rows = warehouse.scalar(conn, f"SELECT COUNT(*) FROM {warehouse.quote_identifier(schema)}.{warehouse.quote_identifier(table)}")
            out[f"{schema}.{table}"] = {"rows": int(rows), "mb": round((size or 0) / 2**20, 1)}
        if any(t.endswith(".stg_raw__rejected_events") for t in out):
            cur.execute(f"SELECT reject_reason, COUNT(*) FROM {warehouse.quote_identifier(app.database)}.`stg_raw__rejected_events` GROUP BY 1")
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


# --- one size, in its own process --------------------------------------------------------------


def _rss_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: KiB


def run_one(args: argparse.Namespace) -> dict:
    events = args.one
    work: Path = args.work_dir
    dbt_target, dbt_logs = work / "dbt" / "target", work / "dbt" / "logs"
    # dbt reads these (transform.dbt_env passes the environment through): the benchmark
    # never writes dbt_project/target, which the pipeline and other runs use.
    os.environ["DBT_TARGET_PATH"] = str(dbt_target)
    os.environ["DBT_LOG_PATH"] = str(dbt_logs)
    logging.basicConfig(
        filename=work / f"result-{events}.log", filemode="w", level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    from recsys_pipeline import services, stages, transform
    from recsys_pipeline.settings import mysql_admin_settings, mysql_settings

    result: dict = {
        "events": events, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": dbt_project_version(), "stages": {}, "errors": [],
    }
    stage_rows = result["stages"]

    # 1. data (not a pipeline stage; reused when already generated with the same parameters)
    params = Params(events=events, seed=args.seed)
    folder = work / "data" / f"synthetic-{events}-seed{args.seed}"
    started = time.perf_counter()
    manifest = ensure_dataset(params, folder, regenerate=args.regenerate)
    result["dataset"] = {"folder": str(folder), **manifest}
    stage_rows["generate"] = {
        "seconds": round(time.perf_counter() - started, 3) if not manifest.get("reused") else manifest["seconds"]["generate"] + manifest["seconds"]["write"],
        "reused": bool(manifest.get("reused")),
    }
    say(f"{events:,} events: dataset {'reused' if manifest.get('reused') else 'generated'} in {folder} ({manifest['counts']['users']:,} users, {manifest['counts']['items']:,} items)")
    gc.collect()

    # 2. databases and user of the benchmark only
    app = replace(
        mysql_settings(), user=args.mysql_user, password=secrets.token_hex(16), database=args.database, raw_database=args.raw_database
    )
    admin = mysql_admin_settings()
    services.ensure_mariadb(app)
    _recreate_databases(admin, app)
    result["mysql"] = _mysql_facts(admin)
    shutil.rmtree(dbt_target, ignore_errors=True)

    timers = Timers()
    _install_timers(timers)
    try:
        # 3. load: the DAG's load_raw task
        say(f"{events:,} events: load (stages.load) ...")
        started = time.perf_counter()
        loaded = stages.load(app, str(folder), load_id=f"bench-{events}")
        seconds = time.perf_counter() - started
        stage_rows["load"] = {"seconds": round(seconds, 3), "sub": _derive(timers.take()), "summary": {k: v for k, v in loaded.items() if k != "dbt_plan"}}
        dbt_vars = loaded.get("dbt_vars", {})
        say(f"{events:,} events: load {seconds:.1f} s  {_fmt_sub(stage_rows['load']['sub'])}")
        gc.collect()

        # 4. build: what the DAG's features task group runs, full refresh (one dbt build)
        say(f"{events:,} events: build (dbt build --full-refresh) ...")
        attempt = 0
        while True:
            attempt += 1
            log_path = dbt_logs / "dbt.log"
            log_offset = log_path.stat().st_size if log_path.exists() else 0
            (dbt_target / "run_results.json").unlink(missing_ok=True)
            started = time.perf_counter()
            with BuildWatchdog(args.build_timeout, admin, app.user) as watchdog:
                try:
                    built = _dbt_build(app, dbt_vars, full_refresh=True)
                    error = None
                except transform.DbtError as exc:
                    built, error = None, str(exc)
            seconds = time.perf_counter() - started
            run_results = read_run_results(dbt_target)
            still_running: list[dict] = []
            if watchdog.fired or not run_results["nodes"]:
                run_results["nodes"], still_running = nodes_from_dbt_log(log_path, log_offset)
            sub = timers.take()
            if watchdog.fired:
                error = f"stopped after the build timeout of {args.build_timeout:.0f} s; still running: " + (
                    ", ".join(f"{n['name']} (for {n['running_for_at_least_s']:.0f} s)" for n in still_running) or "-"
                )
                break
            if error is None or attempt > args.dbt_retries:
                break
            result["errors"].append({"stage": "build", "attempt": attempt, "error": error})
            say(f"{events:,} events: dbt build failed (attempt {attempt}), retrying in {args.retry_wait} s:\n{error}")
            time.sleep(args.retry_wait)
        stage_rows["build"] = {
            "seconds": round(seconds, 3),
            "ok": error is None,
            "timed_out": watchdog.fired,
            "still_running_at_timeout": still_running,
            "attempts": attempt,
            "sub": sub | {f"sum of {k} nodes": v for k, v in node_sums(run_results["nodes"]).items()},
            "dbt_elapsed": run_results["elapsed"],
            "nodes": run_results["nodes"],
            "summary": built,
        }
        if error is not None:
            result["errors"].append({"stage": "build", "attempt": attempt, "error": error})
            say(f"{events:,} events: dbt build FAILED after {seconds:.1f} s:\n{error}")
        else:
            say(f"{events:,} events: build {seconds:.1f} s  {_fmt_sub(stage_rows['build']['sub'])}")

        # 5. optional: dbt run and dbt test on their own
        if args.split_run_test and error is None:
            for name, dbt_args in (("dbt run", ["run", "--full-refresh"]), ("dbt test", ["test"])):
                say(f"{events:,} events: {name} ...")
                started = time.perf_counter()
                try:
                    transform.run_dbt(app, dbt_args, dbt_vars)
                    failed = None
                except transform.DbtError as exc:
                    failed = str(exc)
                    result["errors"].append({"stage": name, "error": failed})
                seconds = time.perf_counter() - started
                timers.take()
                nodes = read_run_results(dbt_target)["nodes"]
                stage_rows[name] = {"seconds": round(seconds, 3), "ok": failed is None, "nodes": nodes, "sub": {f"sum of {k} nodes": v for k, v in node_sums(nodes).items()}}
                say(f"{events:,} events: {name} {seconds:.1f} s{' FAILED' if failed else ''}")

        # 6. optional: the weekly rerun on unchanged data (everything carried over, incremental build)
        if args.rerun and error is None:
            say(f"{events:,} events: rerun on unchanged data: load ...")
            started = time.perf_counter()
            loaded = stages.load(app, str(folder), load_id=f"bench-{events}-rerun")
            seconds = time.perf_counter() - started
            plan = loaded.get("dbt_plan") or {}
            stage_rows["rerun load"] = {"seconds": round(seconds, 3), "sub": _derive(timers.take()), "plan": plan}
            say(f"{events:,} events: rerun load {seconds:.1f} s (next build: {plan.get('reason', '?')})")
            started = time.perf_counter()
            try:
                _dbt_build(app, dbt_vars, full_refresh=False)
                failed = None
            except transform.DbtError as exc:
                failed = str(exc)
                result["errors"].append({"stage": "rerun build", "error": failed})
            seconds = time.perf_counter() - started
            nodes = read_run_results(dbt_target)["nodes"]
            stage_rows["rerun build"] = {
                "seconds": round(seconds, 3), "ok": failed is None, "sub": timers.take(), "nodes": nodes,
            }
            say(f"{events:,} events: rerun build {seconds:.1f} s{' FAILED' if failed else ''}")
    finally:
        timers.restore()

    if "load" in stage_rows and "build" in stage_rows:
        stage_rows["load + build"] = {"seconds": round(stage_rows["load"]["seconds"] + stage_rows["build"]["seconds"], 3)}
    with contextlib.suppress(Exception):
        result["tables"] = _table_sizes(app)
    result["peak_rss_mb"] = {"python (this size's process)": _rss_mb(resource.RUSAGE_SELF), "largest child (dbt)": _rss_mb(resource.RUSAGE_CHILDREN)}
    result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return result


def _dbt_build(app, dbt_vars: dict, full_refresh: bool) -> dict:
    """One ``dbt build`` of every seed, model and test, through the project's transform module.

    ``transform.build`` (plan: full or incremental, ``dbt build``, record the build) when
    the project has it, else ``transform.run_dbt(["build"])``. The DAG's
    ``document_features`` task adds documentation and row counts after it; those are
    not part of the feature build measured here.
    """
    from recsys_pipeline import transform

    if hasattr(transform, "build"):
        plan = transform.build(app, dbt_vars, full_refresh)
        return {"full_refresh": plan.full_refresh, "reason": plan.reason}
    transform.run_dbt(app, ["build", *(["--full-refresh"] if full_refresh else [])], dbt_vars)
    return {"full_refresh": full_refresh, "reason": "transform.run_dbt"}


def _fmt_sub(sub: dict) -> str:
    return "(" + ", ".join(f"{k} {v:.1f}" for k, v in sub.items()) + ")" if sub else ""


# --- report ------------------------------------------------------------------------------------

MAIN_STAGES = ("load", "build", "load + build", "dbt run", "dbt test", "rerun load", "rerun build")


def _rate(events: int, seconds: float | None) -> str:
    return f"{events / seconds:,.0f}" if seconds else "-"


def report(runs: list[dict]) -> tuple[str, dict]:
    runs = sorted(runs, key=lambda r: r["events"])
    lines = []
    header = f"{'events':>12}  {'stage':<34} {'seconds':>9} {'events/s':>11}"
    lines += ["Seconds per stage (events/s = source events / stage seconds)", header, "-" * len(header)]
    for run in runs:
        n = run["events"]
        for stage, row in run["stages"].items():
            note = " (reused)" if row.get("reused") else ""
            if stage == "generate":
                lines.append(f"{n:>12,}  {'generate (not a pipeline stage)' + note:<34} {row['seconds']:>9.1f} {_rate(n, row['seconds']):>11}")
                continue
            failed = "" if row.get("ok", True) else ("  STOPPED at the build timeout" if row.get("timed_out") else "  FAILED")
            lines.append(f"{n:>12,}  {stage:<34} {row['seconds']:>9.1f} {_rate(n, row['seconds']):>11}{failed}")
            for sub, seconds in (row.get("sub") or {}).items():
                if sub.startswith("sum of"):
                    continue
                lines.append(f"{'':>12}    {'- ' + sub:<32} {seconds:>9.1f} {_rate(n, seconds):>11}")
            sums = {k: v for k, v in (row.get("sub") or {}).items() if k.startswith("sum of")}
            if sums:
                lines.append(f"{'':>12}    (dbt runs 2 nodes at a time; " + ", ".join(f"{k} {v:.1f} s" for k, v in sums.items()) + ")")
        rss = run.get("peak_rss_mb", {})
        lines.append(f"{'':>12}  peak RSS: " + ", ".join(f"{k} {v:,.0f} MB" for k, v in rss.items()))
        for error in run.get("errors", []):
            lines.append(f"{'':>12}  ERROR in {error['stage']}: {error['error'].splitlines()[0] if error['error'] else ''}")
        lines.append("")

    ratios: dict = {}
    for small, large in zip(runs, runs[1:]):
        size_ratio = large["events"] / small["events"]
        key = f"{small['events']}->{large['events']}"
        ratios[key] = {}
        lines.append(
            f"Scaling {small['events']:,} -> {large['events']:,} events (size x{size_ratio:g}): "
            f"linear means a time ratio <= x{size_ratio * LINEAR_SLACK:g}"
        )
        lines.append(f"  {'stage':<44} {'ratio':>8} {'exponent':>9}  verdict")
        for stage in _stage_and_sub_names(small, large):
            (a, a_bound), (b, b_bound) = _seconds(small, stage), _seconds(large, stage)
            if a is None or b is None or a < 0.05 or a_bound:
                continue
            ratio = b / a
            exponent = math.log(ratio) / math.log(size_ratio) if ratio > 0 else float("nan")
            verdict = "linear" if ratio <= size_ratio * LINEAR_SLACK else ("slightly superlinear" if ratio <= size_ratio * 1.5 else "SUPERLINEAR")
            if b_bound:  # the large run was stopped: only a lower bound
                verdict = ("at least " + verdict) if verdict != "linear" else "unknown (stopped before it finished)"
            ratios[key][stage] = {"ratio": round(ratio, 2), "exponent": round(exponent, 3), "verdict": verdict, "lower_bound": b_bound}
            lines.append(f"  {stage:<44} {('>=' if b_bound else '') + f'{ratio:.1f}x':>8} {exponent:>9.2f}  {verdict}")
        lines.append("")

    big = runs[-1]
    build = big["stages"].get("build")
    target = None
    if build is not None:
        met = bool(build.get("ok")) and build["seconds"] <= TARGET_SECONDS
        target = {"events": big["events"], "build_seconds": build["seconds"], "stopped": bool(build.get("timed_out")), "target_seconds": TARGET_SECONDS, "met": met}
        lines.append(
            f"Target: feature build (dbt build) of {big['events']:,} events in under {TARGET_SECONDS:.0f} s: "
            f"{'>= ' if build.get('timed_out') else ''}{build['seconds']:.1f} s -> {'MET' if met else 'NOT MET'}"
        )
        nodes = build.get("nodes") or []
        running = build.get("still_running_at_timeout") or []
        for kind, title in (("model", "models"), ("test", "tests"), ("seed", "seeds")):
            top = [n for n in nodes if n["kind"] == kind][: 12 if kind != "seed" else 3]
            unfinished = [n for n in running if n["kind"] == kind]
            if top or unfinished:
                lines.append(f"Slowest dbt {title} at {big['events']:,} events:")
                for node in unfinished:
                    lines.append(f"  >={node['running_for_at_least_s']:>7.1f} s  {node['name']}  [still running when the build was stopped]")
                for node in top:
                    rows = f"  rows {node['rows_affected']:,}" if kind != "test" and isinstance(node.get("rows_affected"), int) and node["rows_affected"] >= 0 else ""
                    lines.append(f"  {node['seconds']:>9.1f} s  {node['name']}{'' if node['status'] in ('success', 'pass') else '  [' + str(node['status']) + ']'}{rows}")
    ok_runs = [r["events"] for r in runs if r["stages"].get("build", {}).get("ok")]
    summary = {"ratios": ratios, "target": target, "sizes_with_successful_build": ok_runs}
    return "\n".join(lines), summary


def _stage_and_sub_names(small: dict, large: dict) -> list[str]:
    names = []
    for stage in [s for s in large["stages"] if s != "generate"] + ["generate"]:
        if stage not in small["stages"]:
            continue
        names.append(stage)
        for sub in large["stages"][stage].get("sub") or {}:
            if sub in (small["stages"][stage].get("sub") or {}):
                names.append(f"{stage} / {sub}")
    # every model, slowest first
    build = large["stages"].get("build", {})
    models = [n["name"] for n in build.get("still_running_at_timeout", []) if n["kind"] == "model"]
    models += [n["name"] for n in build.get("nodes", []) if n["kind"] == "model"]
    small_models = {n["name"] for n in small["stages"].get("build", {}).get("nodes", []) if n["kind"] == "model"}
    names += [f"model {name}" for name in models if name in small_models]
    return names


def _seconds(run: dict, name: str) -> tuple[float | None, bool]:
    """Seconds of a stage, sub-stage or model in ``run``, and whether that is only a lower bound."""
    build = run["stages"].get("build", {})
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
    bound = bool(row.get("timed_out")) or (stage == "load + build" and bool(build.get("timed_out")))
    if sub:
        return (row.get("sub") or {}).get(sub), bound
    return row.get("seconds"), bound


def machine_facts() -> dict:
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    return {"cpus": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(), "platform": platform.platform()}


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time the load and the dbt feature build on synthetic data of several sizes.")
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000], help="sizes in events (default: 1000000 10000000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="data, dbt target/logs and results (default .work/bench)")
    parser.add_argument("--database", default="recsys_bench", help="database for dbt's models (default recsys_bench)")
    parser.add_argument("--raw-database", default="recsys_bench_raw", help="database for the raw tables (default recsys_bench_raw)")
    parser.add_argument("--mysql-user", default="recsys_bench", help="the benchmark's own MySQL user (created, random password)")
    parser.add_argument("--split-run-test", action="store_true", help="also time `dbt run` and `dbt test` on their own")
    parser.add_argument("--rerun", action="store_true", help="also time a second load + build of the same data (carry-over, incremental)")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the synthetic data even when it is there")
    parser.add_argument("--dbt-retries", type=int, default=0, help="retry a failed dbt build this many times (models being edited)")
    parser.add_argument("--retry-wait", type=int, default=180, help="seconds between dbt retries")
    parser.add_argument(
        "--build-timeout", type=float, default=None,
        help="stop a dbt build after this many seconds and report the nodes that finished (default: no limit)",
    )
    parser.add_argument("--keep-databases", action="store_true", help="keep the benchmark databases after the run (default: drop them)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = parser.parse_args(argv)
    for name in (args.database, args.raw_database):
        if name in PROTECTED_DATABASES:
            parser.error(f"refusing to use database {name!r}: it belongs to the demo, the tests or MySQL")
    if args.database == args.raw_database:
        parser.error("--database and --raw-database must differ")
    args.work_dir = args.work_dir.resolve()
    return args


def _child_command(args: argparse.Namespace, events: int) -> list[str]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--one", str(events), "--seed", str(args.seed),
        "--work-dir", str(args.work_dir), "--database", args.database, "--raw-database", args.raw_database,
        "--mysql-user", args.mysql_user, "--dbt-retries", str(args.dbt_retries), "--retry-wait", str(args.retry_wait),
    ]
    if args.build_timeout:
        command += ["--build-timeout", str(args.build_timeout)]
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        result = run_one(args)
        (args.work_dir / f"result-{args.one}.json").write_text(json.dumps(result, indent=2, default=str))
        return 0 if not result["errors"] else 2

    runs = []
    for events in sorted(args.events):
        result_path = args.work_dir / f"result-{events}.json"
        result_path.unlink(missing_ok=True)
        started = time.perf_counter()
        child = subprocess.run(_child_command(args, events), cwd=PROJECT_ROOT)
        if not result_path.exists():
            say(f"{events:,} events: the run died (exit {child.returncode}) after {time.perf_counter() - started:.0f} s; see {args.work_dir}/result-{events}.log")
            continue
        runs.append(json.loads(result_path.read_text()))
    if not args.keep_databases:
        with contextlib.suppress(Exception):
            _drop_databases(args)
    if not runs:
        return 1
    text, summary = report(runs)
    print()
    print(text)
    output = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "bench/feature_build.py", *(argv if argv is not None else sys.argv[1:])]),
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
