"""Benchmark: the training DAG's stages, end to end, on synthetic shops of several sizes.

    .venv/bin/python bench/end_to_end.py --events 1000000 3000000 10000000

For each size it generates (or reuses) a synthetic shop (``bench/synthetic_events.py``:
ISO 8601 event times, so the loader's parsing is on the path), then runs what a weekly
``recsys_training`` run does (``dags/recsys_training.py``), stage by stage, with the
arguments its tasks pass (``orchestration/feature_tasks.py``, ``training_tasks.py``):

    load_raw              ingest.staging.stage
    validate_raw          quality.raw_gate.validate_raw (the raw gate)
    dbt build             features.dbt.run_dbt: the features task group's single build
    document_features     features.builds.document_features
    check_quality         quality.features_gate.check_quality (the features gate)
    train_two_tower       training.fit.train (two-tower model, ranking stage, the candidate ranking)
    evaluate_models       training.evaluation.evaluate (every baseline beside it)
    backtest              training.evaluation.backtest (the gate's view: the global time cut)
    score_users           training.scoring.recommend (top-K for every user)
    promotion_gate        release.gate.promotion_gate
    publish_release       release.publish.publish (to an S3 API server of its own)
    load_recommendations  release.recommendations_table.load_recommendations (MySQL)

with the DAG's defaults: model family ``two_tower``, ``--epochs`` 20, top-K 20, the
candidate ranking on (``--no-candidate-ranking`` publishes the two-tower's lists), repeat policy
from the data, dry run and force_publish off. The backtest is the gate's view and always runs in the
DAG; it is timed here too, but issue 19's whole run is the run with the backtest off, so the
"whole run" row leaves it out and the row below it ("whole run with the backtest") adds it.
The figures go to ``.work/bench/end_to_end.json``: per size each stage's wall seconds and
peak RSS, and the growth of each stage from the smallest size; stdout gets a table and the
goals of issue 19 beside the figures (met or not). Nothing is asserted.

Why the stage functions, each in a process of its own:

* The stage functions, not the tasks: Airflow's scheduling adds seconds per task that
  say nothing about the pipeline, and wrappers around the stages' insides would time a
  call graph that stops existing at the next refactoring. Timing what a task calls keeps
  the figures comparable with a DAG run and with ``feature_build.py`` (whose stage
  functions this script calls for the five feature stages). What a task does around its
  call -- the warehouse lock, uploading a gate's Data Docs -- is left out, as there.
* A process per stage, because the DAG runs each task in a process of its own, and the
  goals are about what one such process needs: a stage's peak RSS is its own
  (``VmHWM`` of its process, plus dbt's sampled while it runs), not what the stages
  before it left allocated, and training never shares a process with the BLAS threads
  evaluation starts (in one process they slow TensorFlow's steps several times:
  bench/README.md). Stages hand each other their return values as JSON, as XComs.
  ``seconds`` is the stage call; ``process_seconds`` adds starting Python and the
  imports, which every task pays too.

What differs from a DAG run: ``evaluate_models``, ``backtest`` and ``score_users`` run one
after the other (the DAG may run them side by side); the whole run is the sum of the stages.
As in the DAG, ``load_recommendations`` is skipped when the promotion gate says no (the row
says ``dag_runs_it``); ``--force-publish`` promotes regardless, so that it is timed.

Isolation, as ``feature_build.py`` (whose helpers it uses): its own databases
(``recsys_e2e``, ``recsys_e2e_raw``, recreated for each size, dropped at the end), its own
MySQL user, its own folders (``.work/bench/e2e/``: data, run folders, dbt target and
logs), and its own moto S3 API server on a free port with its own bucket, started as the
project starts one (``services.start_local_s3``) and stopped at the end; so it can run
beside ``feature_build.py`` and never touches the demo's or the tests' tables.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import feature_build as fb  # the feature build's harness: isolation, timing, dbt's figures

PROJECT_ROOT = fb.PROJECT_ROOT
DEFAULT_WORK = PROJECT_ROOT / ".work" / "bench" / "e2e"
DEFAULT_OUTPUT = PROJECT_ROOT / ".work" / "bench" / "end_to_end.json"
DAG_EPOCHS = 20  # dags/recsys_training.py: the form's defaults
DAG_TOP_K = 20
DAG_MODEL_FAMILY = "two_tower"

# issue 19's goals at 10M events
GOAL_EVENTS = 10_000_000
GOAL_WHOLE_RUN_S = 1200.0
GOAL_FEATURE_BUILD_S = 300.0
GOAL_TRAINING_S = 600.0
GOAL_PEAK_RSS_MB = 8192.0  # 8 GB; every RSS figure here is in MiB
GOAL_GROWTH_PER_SIZE = 1.1  # 11x for 10x the events

WHOLE_RUN = "whole run"
WITH_BACKTEST = "whole run with the backtest"
# timed, but outside issue 19's whole run ("backtest off"): the DAG's extra view for the gate
OUTSIDE_WHOLE_RUN = ("backtest",)
TRAIN = "train_two_tower"


# --- the stages: one function each, called in the stage's own process ------------------------------


def _load_raw(bench: fb.Bench, run, xcom: dict, args) -> dict:
    return fb.load_raw_stage(bench, run)


def _validate_raw(bench: fb.Bench, run, xcom: dict, args) -> dict:
    return fb.validate_raw_stage(bench, run, xcom["load_raw"])


def _dbt_build(bench: fb.Bench, run, xcom: dict, args) -> None:
    fb.time_dbt_build(bench, fb.DBT_BUILD, xcom["validate_raw"])


def _document_features(bench: fb.Bench, run, xcom: dict, args) -> dict:
    return fb.document_features_stage(bench, run, xcom["validate_raw"])


def _check_quality(bench: fb.Bench, run, xcom: dict, args) -> dict:
    return fb.check_quality_stage(bench, run)


def _train(bench: fb.Bench, run, xcom: dict, args) -> dict:
    from recsys_pipeline.training import fit

    ready = xcom["features_ready"]
    train = functools.partial(fit.train, top_k=args.top_k, candidate_ranking=args.candidate_ranking)  # the task's
    return _timed(
        bench, TRAIN, train, bench.app, run, xcom["train_overrides"], ready["data_version"], ready.get("load_id")
    )


def _evaluate(bench: fb.Bench, run, xcom: dict, args) -> dict:
    from recsys_pipeline.training import evaluation

    return _timed(bench, "evaluate_models", evaluation.evaluate, run.artifacts)


def _backtest(bench: fb.Bench, run, xcom: dict, args) -> dict:
    from recsys_pipeline.training import evaluation

    return _timed(bench, "backtest", evaluation.backtest, run.artifacts, args.epochs)


def _score(bench: fb.Bench, run, xcom: dict, args) -> dict:
    from recsys_pipeline.training import scoring

    return _timed(bench, "score_users", scoring.recommend, run.artifacts, args.top_k)


def _promotion_gate(bench: fb.Bench, run, xcom: dict, args) -> dict:
    from recsys_pipeline.release import gate
    from recsys_pipeline.settings import s3_settings

    data_version = xcom["features_ready"]["data_version"]
    return _timed(bench, "promotion_gate", gate.promotion_gate, s3_settings(), run, data_version, args.force_publish)


def _publish(bench: fb.Bench, run, xcom: dict, args) -> dict:
    from recsys_pipeline.release import publish
    from recsys_pipeline.settings import s3_settings

    data_version = xcom["features_ready"]["data_version"]
    published = _timed(bench, "publish_release", publish.publish, s3_settings(), run, data_version)
    return published | {"promote": xcom["promotion_gate"]["promote"]}


def _load_recommendations(bench: fb.Bench, run, xcom: dict, args) -> dict:
    from recsys_pipeline.release import recommendations_table
    from recsys_pipeline.settings import s3_settings

    name, published = "load_recommendations", xcom["publish_release"]
    if not published["promote"]:  # the DAG skips it (the champion did not move, so the load would be refused)
        skipped = _timed(bench, name, lambda: {"skipped": "the gate kept the champion (--force-publish times it)"})
        bench.stages[name]["dag_runs_it"] = False
        return skipped
    load = recommendations_table.load_recommendations
    loaded = _timed(bench, name, load, bench.app, run.artifacts, s3_settings(), published["release_id"])
    bench.stages[name]["dag_runs_it"] = True
    return loaded


def _timed(bench: fb.Bench, name: str, function: Callable, *args) -> dict:
    """One training stage's call, timed; what it returns is small and goes in its row as well."""
    value, row = fb.time_stage(bench, name, function, *args)
    row["summary"] = value
    return value


STAGES: dict[str, Callable] = {
    "load_raw": _load_raw,
    "validate_raw": _validate_raw,
    fb.DBT_BUILD: _dbt_build,
    "document_features": _document_features,
    "check_quality": _check_quality,
    TRAIN: _train,
    "evaluate_models": _evaluate,
    "backtest": _backtest,
    "score_users": _score,
    "promotion_gate": _promotion_gate,
    "publish_release": _publish,
    "load_recommendations": _load_recommendations,
}


def own_peak_rss_mb() -> float:
    """This process's peak RSS since it started its program (``VmHWM``).

    ``getrusage`` would also count the memory of the process it was forked from.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return fb._rss_mb(resource.RUSAGE_SELF)


def run_stage(args: argparse.Namespace) -> int:
    """In a stage's own process: call it with the XComs of the stages before it; write its row and value."""
    from recsys_pipeline.settings import mysql_admin_settings, mysql_settings

    logging.basicConfig(
        filename=args.work_dir / f"result-{args.one}.log",
        filemode="a",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    state = json.loads(_xcom_path(args, args.one).read_text())
    # the parent put the benchmark's user, databases and S3 server in the environment
    bench = fb.Bench(
        args.one, args, mysql_settings(), mysql_admin_settings(), Path(state["dataset"]), {"stages": {}, "errors": []}
    )
    run = bench.run_context(state["release_id"])
    value = None
    with contextlib.suppress(fb.StageFailed):  # in the row and the errors
        value = STAGES[args.stage](bench, run, state["xcom"], args)
    row = bench.stages[args.stage]
    row["peak_rss_mb"] = {"stage": own_peak_rss_mb(), "dbt": row["peak_rss_mb"]["child"]}
    out = {"row": row, "errors": bench.result["errors"], "value": value}
    _stage_path(args, args.one, args.stage).write_text(json.dumps(out, indent=2, default=str))
    return 0 if row["ok"] else 2


# --- one size: the stages in order, each in a child process --------------------------------------


def _xcom_path(args: argparse.Namespace, events: int) -> Path:
    return args.work_dir / f"xcom-{events}.json"


def _stderr_path(args: argparse.Namespace, events: int) -> Path:
    return args.work_dir / f"result-{events}.stderr"


def _stage_path(args: argparse.Namespace, events: int, stage: str) -> Path:
    return args.work_dir / f"stage-{events}-{stage.replace(' ', '_')}.json"


def _stage_command(args: argparse.Namespace, events: int, stage: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(events), "--stage", stage]
    command += ["--work-dir", str(args.work_dir), "--top-k", str(args.top_k), "--epochs", str(args.epochs)]
    if not args.candidate_ranking:
        command.append("--no-candidate-ranking")
    if args.force_publish:
        command.append("--force-publish")
    command += ["--dbt-retries", str(args.dbt_retries), "--retry-wait", str(args.retry_wait)]
    if args.build_timeout:
        command += ["--build-timeout", str(args.build_timeout)]
    return command


def _stage_env(bench: fb.Bench, s3) -> dict[str, str]:
    """What a task would get from its connections: the benchmark's MySQL user and databases, its S3 server."""
    app = bench.app
    return dict(os.environ) | {
        "RECSYS_MYSQL_HOST": app.host,
        "RECSYS_MYSQL_PORT": str(app.port),
        "RECSYS_MYSQL_USER": app.user,
        "RECSYS_MYSQL_PASSWORD": app.password,
        "RECSYS_MYSQL_DATABASE": app.database,
        "RECSYS_RAW_DATABASE": app.raw_database,
        "RECSYS_S3_ENDPOINT_URL": s3.endpoint_url,
        "RECSYS_S3_ACCESS_KEY_ID": s3.access_key_id,
        "RECSYS_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
        "RECSYS_S3_REGION": s3.region,
        "RECSYS_S3_BUCKET": s3.bucket,
        "RECSYS_S3_PREFIX": s3.prefix,
        # dbt writes its target and logs here, never into dbt_project/ (other runs use it)
        "DBT_TARGET_PATH": str(bench.dbt_target),
        "DBT_LOG_PATH": str(bench.dbt_log.parent),
    }


def _run_stage_process(args, bench: fb.Bench, s3, stage: str, state: dict) -> tuple[dict, object]:
    events = bench.events
    _xcom_path(args, events).write_text(json.dumps(state, indent=2, default=str))
    out = _stage_path(args, events, stage)
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    # TensorFlow's and the libraries' own chatter goes to a file; the stage's progress and errors to stdout
    with _stderr_path(args, events).open("ab") as stderr:
        command, env = _stage_command(args, events, stage), _stage_env(bench, s3)
        child = subprocess.run(command, cwd=PROJECT_ROOT, env=env, stderr=stderr)
    process_seconds = round(time.perf_counter() - started, 3)
    if not out.exists():  # killed (out of memory?) or crashed outside the stage call
        error = f"the stage's process died (exit {child.returncode}); see {_stderr_path(args, events)}"
        fb.say(f"{events:,} events: {stage}: {error}")
        bench.error(stage, error)
        return {"seconds": process_seconds, "ok": False, "process_seconds": process_seconds}, None
    done = json.loads(out.read_text())
    bench.result["errors"] += done["errors"]
    return done["row"] | {"process_seconds": process_seconds}, done["value"]


def run_size(args: argparse.Namespace, events: int, s3) -> dict:
    """The dataset and databases (``feature_build``'s), then every stage in the DAG's order."""
    from recsys_pipeline.orchestration.feature_tasks import READY_KEYS
    from recsys_pipeline.orchestration.training_tasks import MODEL_FAMILIES

    for path in (args.work_dir / f"result-{events}.log", _stderr_path(args, events)):
        path.write_text("")
    bench = fb._prepare(argparse.Namespace(**(vars(args) | {"one": events})))
    overrides = {"epochs": args.epochs} | MODEL_FAMILIES[DAG_MODEL_FAMILY]  # as train_two_tower builds them
    bench.result["settings"] = {
        "model_family": DAG_MODEL_FAMILY,
        "config_overrides": overrides,
        "top_k": args.top_k,
        "backtest": True,
        "candidate_ranking": args.candidate_ranking,
        "force_publish": args.force_publish,
        "dry_run": False,
    }
    state: dict = {"dataset": str(bench.dataset), "release_id": f"e2e-{events}", "xcom": {}}
    xcom = state["xcom"]
    for stage in STAGES:
        row, value = _run_stage_process(args, bench, s3, stage, state)
        bench.stages[stage] = row
        if not row["ok"]:
            break  # the stages after it need what it did not produce
        xcom[stage] = value
        if stage == "validate_raw":  # features_ready: what the training stages are given of the load
            xcom["features_ready"] = {key: value[key] for key in READY_KEYS}
            xcom["train_overrides"] = overrides
    with contextlib.suppress(Exception):
        bench.result["tables"] = fb._table_sizes(bench.app)
    bench.result["whole_run"] = whole_run(bench.result)
    bench.result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    (args.work_dir / f"result-{events}.json").write_text(json.dumps(bench.result, indent=2, default=str))
    return bench.result


def whole_run(run: dict) -> dict:
    """The sum of the stages of issue 19's whole run (backtest off), and with the backtest added."""
    rows = {stage: row for stage, row in run["stages"].items() if stage in STAGES}
    total = _sum_rows(rows, [stage for stage in STAGES if stage not in OUTSIDE_WHOLE_RUN])
    return total | {"with_backtest": _sum_rows(rows, list(STAGES))}


def _sum_rows(rows: dict, stages: list[str]) -> dict:
    present = [rows[stage] for stage in stages if stage in rows]
    return {
        "stages_run": len(present),
        "ok": len(present) == len(stages) and all(row["ok"] for row in present),  # every stage ran and succeeded
        "seconds": round(sum(row["seconds"] for row in present), 3),
        "process_seconds": round(sum(row.get("process_seconds", row["seconds"]) for row in present), 3),
        "peak_rss_mb": max((_peak(row) for row in present), default=0.0),
    }


def _peak(row: dict) -> float:
    """A stage's memory: its process's peak plus dbt's (an upper bound: the two peaks need not coincide)."""
    return round(sum((row.get("peak_rss_mb") or {}).values()), 1)


# --- the S3 API server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def s3_server(args: argparse.Namespace) -> Iterator[object]:
    """A moto S3 API server of the benchmark's own (``services.start_local_s3``), with its own bucket."""
    from recsys_pipeline import services, storage
    from recsys_pipeline.settings import S3Settings

    os.environ["RECSYS_RUN_DIR"] = str(args.work_dir / "s3")  # its pid and log, not the project's .run/
    name = f"moto-e2e-{os.getpid()}"
    endpoint = f"http://127.0.0.1:{_free_port()}"
    services.start_local_s3(endpoint, name)
    try:
        settings = S3Settings(endpoint, "bench-e2e", "bench-e2e-secret", "us-east-1", args.bucket, "recsys-pipeline")
        storage.ensure_bucket(storage.client(settings), settings.bucket)
        yield settings
    finally:
        services.stop_local_s3(name)


# --- report ----------------------------------------------------------------------------------------


def growth(runs: list[dict]) -> dict:
    """Each stage's seconds and peak RSS at each size over the smallest size's (``runs`` sorted by size)."""
    smallest = runs[0]
    out: dict = {}
    for stage in [*STAGES, WHOLE_RUN, WITH_BACKTEST]:
        base = _figures(smallest, stage)
        if base is None:
            continue
        for run in runs:
            figures = _figures(run, stage)
            if figures is None:
                continue
            out.setdefault(stage, {})[str(run["events"])] = {
                key: round(figures[key] / base[key], 2) if base[key] > 0 else None for key in figures
            }
    return out


def _figures(run: dict, stage: str) -> dict | None:
    if stage in (WHOLE_RUN, WITH_BACKTEST):
        total = run["whole_run"] if stage == WHOLE_RUN else run["whole_run"].get("with_backtest", {"ok": False})
        return {"seconds": total["seconds"], "peak_rss_mb": total["peak_rss_mb"]} if total["ok"] else None
    row = run["stages"].get(stage)
    return {"seconds": row["seconds"], "peak_rss_mb": _peak(row)} if row and row["ok"] else None


def _table_lines(runs: list[dict], ratios: dict) -> list[str]:
    header = (
        f"{'events':>12}  {'stage':<30} {'seconds':>9} {'process s':>10} {'growth':>7} {'peak RSS MiB stage / dbt':>25}"
    )
    lines = [
        "Seconds per stage (the stage call; process s: with its process's start and imports), "
        "growth of seconds from the smallest size, peak RSS of the stage's process / of dbt while it ran",
        header,
        "-" * len(header),
    ]
    for run in runs:
        n = run["events"]
        generate = run["stages"]["generate"]
        label = "generate (not a stage" + (", reused)" if generate.get("reused") else ")")
        lines.append(f"{n:>12,}  {label:<30} {generate['seconds']:>9.1f}")
        for stage in STAGES:
            row = run["stages"].get(stage)
            if row is None:
                lines.append(f"{n:>12,}  {stage:<30} {'not run':>9}")
                continue
            rss = row.get("peak_rss_mb") or {}
            rss_cell = f"{rss.get('stage', 0):,.0f} / {rss.get('dbt', 0):,.0f}" if rss else ""
            note = "" if row["ok"] else ("  STOPPED at the build timeout" if row.get("timed_out") else "  FAILED")
            if row.get("dag_runs_it") is False:
                note += "  (the gate said no: skipped, as the DAG does)"
            lines.append(
                f"{n:>12,}  {stage:<30} {row['seconds']:>9.1f} {row.get('process_seconds', 0):>10.1f} "
                f"{_growth_cell(ratios, stage, n):>7} {rss_cell:>25}{note}"
            )
        for name, total in ((WHOLE_RUN, run["whole_run"]), (WITH_BACKTEST, run["whole_run"].get("with_backtest"))):
            if total is None:
                continue
            label = name + ("" if total["ok"] else " (incomplete)")
            lines.append(
                f"{n:>12,}  {label:<30} {total['seconds']:>9.1f} {total['process_seconds']:>10.1f} "
                f"{_growth_cell(ratios, name, n):>7} {total['peak_rss_mb']:>25,.0f}"
            )
        lines += [f"{'':>12}  ERROR in {e['stage']}: {(e['error'] or '').splitlines()[0]}" for e in run["errors"]]
        lines.append("")
    return lines


def _growth_cell(ratios: dict, stage: str, events: int) -> str:
    ratio = ratios.get(stage, {}).get(str(events), {}).get("seconds")
    return "-" if ratio is None else f"x{ratio:.1f}"


def goals(runs: list[dict]) -> tuple[list[str], dict]:
    """Issue 19's goals beside the figures of the largest size (and its growth from 1M, or the smallest)."""
    big = runs[-1]
    n, whole = big["events"], big["whole_run"]
    build, train = big["stages"].get(fb.DBT_BUILD), big["stages"].get(TRAIN)
    where = f"at {n:,} events" + ("" if n == GOAL_EVENTS else f" (the goals are for {GOAL_EVENTS:,}: indicative)")
    lines, checks = [f"Goals of issue 19, {where}:"], {}
    for key, label, row, field, limit, unit in (
        ("whole_run", f"whole run, backtest off, under {GOAL_WHOLE_RUN_S:,.0f} s (processes)", whole,
         "process_seconds", GOAL_WHOLE_RUN_S, "s"),
        ("feature_build", f"feature build (dbt build) under {GOAL_FEATURE_BUILD_S:,.0f} s", build, "seconds",
         GOAL_FEATURE_BUILD_S, "s"),
        ("training", f"training ({TRAIN}) under {GOAL_TRAINING_S:,.0f} s", train, "seconds", GOAL_TRAINING_S, "s"),
        ("peak_rss", f"peak RSS under 8 GB ({GOAL_PEAK_RSS_MB:,.0f} MiB; a stage's process + dbt)", whole,
         "peak_rss_mb", GOAL_PEAK_RSS_MB, "MiB"),
    ):  # fmt: skip
        value, ok = (row[field], row["ok"]) if row else (None, False)
        met = ok and value <= limit
        checks[key] = {"value": value, "limit": limit, "met": met}
        shown = "-" if value is None else f"{value:,.1f} {unit}" + ("" if ok else " (incomplete)")
        lines.append(f"  {label:<58} {shown:>24}  {'MET' if met else 'NOT MET'}")
    growth_check = _growth_goal(runs)
    if growth_check:
        lines += growth_check.pop("lines")
        checks["growth"] = growth_check
    return lines, checks


def _growth_goal(runs: list[dict]) -> dict | None:
    """Every stage's growth <= 1.1x the size's: 1M -> 10M when both ran, else the smallest -> the largest."""
    by_size = {run["events"]: run for run in runs}
    small, large = (
        (by_size[1_000_000], by_size[GOAL_EVENTS]) if {1_000_000, GOAL_EVENTS} <= set(by_size) else (runs[0], runs[-1])
    )
    if small is large:
        return None
    limit = GOAL_GROWTH_PER_SIZE * large["events"] / small["events"]
    ratios, over = {}, []
    for stage in STAGES:
        a, b = _figures(small, stage), _figures(large, stage)
        if a is None or b is None or a["seconds"] <= 0:
            over.append(f"{stage} (not measured)")
            continue
        ratios[stage] = round(b["seconds"] / a["seconds"], 2)
        if ratios[stage] > limit:
            noise = f" ({a['seconds']:.1f} s at {small['events']:,}: timer noise?)" if a["seconds"] < 2 else ""
            over.append(f"{stage} x{ratios[stage]:.1f}{noise}")
    met = not over
    label = f"every stage's growth <= x{limit:g} from {small['events']:,} to {large['events']:,} events"
    lines = [f"  {label:<84}  {'MET' if met else 'NOT MET'}"]
    if over:
        lines.append(f"    over the limit: {', '.join(over)}")
    return {
        "from": small["events"],
        "to": large["events"],
        "limit": limit,
        "ratios": ratios,
        "met": met,
        "lines": lines,
    }


def report(runs: list[dict]) -> tuple[str, dict]:
    runs = sorted(runs, key=lambda r: r["events"])
    ratios = growth(runs)
    for run in runs:  # each row carries its growth from the smallest size too
        for stage, row in run["stages"].items():
            if stage in ratios and str(run["events"]) in ratios[stage]:
                row["growth_from_smallest"] = ratios[stage][str(run["events"])]
    settings = runs[0].get("settings", {})
    lines = [
        "End to end: the training DAG's stages, each in its own process "
        f"({json.dumps(settings.get('config_overrides'))}, top-K {settings.get('top_k')}, "
        f"candidate ranking {'on' if settings.get('candidate_ranking', True) else 'off'}; the backtest is timed, "
        "and left out of the whole run as issue 19 asks)",
        "",
        *_table_lines(runs, ratios),
    ]
    goal_lines, checks = goals(runs)
    lines += goal_lines
    return "\n".join(line.rstrip() for line in lines), {"growth_from_smallest": ratios, "goals": checks}


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the training DAG's stages, end to end, on synthetic shops of several sizes."
    )
    add = parser.add_argument
    add(
        "--events",
        type=int,
        nargs="+",
        default=[1_000_000, 3_000_000, 10_000_000],
        help="sizes in events (default: 1000000 3000000 10000000)",
    )
    add("--epochs", type=int, default=DAG_EPOCHS, help=f"most training epochs (the DAG's default: {DAG_EPOCHS})")
    add("--top-k", type=int, default=DAG_TOP_K, help=f"recommendations per user (the DAG's default: {DAG_TOP_K})")
    add(
        "--no-candidate-ranking",
        dest="candidate_ranking",
        action="store_false",
        help="publish the two-tower model's lists (the DAG's candidate_ranking=false)",
    )
    add(
        "--force-publish",
        action="store_true",
        help="promote whatever the gate says, so that the MySQL load is timed too (the DAG's force_publish)",
    )
    add(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK,
        help="data, run folders, dbt target/logs, per-size results (default .work/bench/e2e)",
    )
    add("--output", type=Path, default=DEFAULT_OUTPUT, help="the figures (default .work/bench/end_to_end.json)")
    add("--bucket", default="recsys-e2e", help="bucket on the benchmark's own S3 API server (default recsys-e2e)")
    fb.add_isolation_arguments(parser, "recsys_e2e")
    add("--one", type=int, help=argparse.SUPPRESS)  # internal, with --stage: one stage of one size
    add("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fb.check_isolation_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.stage is not None:
        return run_stage(args)
    runs = []
    try:
        with s3_server(args) as s3:
            runs = [run_size(args, events, s3) for events in sorted(set(args.events))]
    finally:
        if not args.keep_databases:
            with contextlib.suppress(Exception):
                fb._drop_databases(args)
    text, summary = report(runs)
    print()
    print(text)
    output = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "bench/end_to_end.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": fb.machine_facts() | {"mysql": runs[0].get("mysql")},
        "runs": runs,
        **summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2, default=str))
    print(f"\nfigures: {args.output}")
    return 0 if all(not run["errors"] for run in runs) else 2


if __name__ == "__main__":
    raise SystemExit(main())
