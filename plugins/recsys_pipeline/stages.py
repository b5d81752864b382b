"""The pipeline's stages, one function each, called by the Airflow DAG's tasks.

Each stage reads its inputs from MySQL, object storage or the run's work folder,
writes its outputs there, and returns a small JSON-able summary (what Airflow keeps
as the task's XCom). Keeping them here, not in the DAG file, lets tests and the CLI
run any stage on its own; the DAG only wires them.

A run's files live in ``<work dir>/<dataset>/<release id>/``; the release id comes
from the run's logical date, so re-running a DAG run rewrites the same folder and
the same release, never a second copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_pipeline import profiles, quality, quarantine, releases, storage, transform, warehouse
from recsys_pipeline.ingest.adapters import read_dataset
from recsys_pipeline.ingest import loader
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.settings import MySQLSettings, S3Settings, work_dir
from ml.evaluate import BASELINE_NAMES  # what the gate compares the challenger with

log = logging.getLogger(__name__)

DBT_MARTS = ("user_features", "item_features", "interactions_split")
CHALLENGER = "two_tower"


def release_id_for(logical_date: datetime | None, run_id: str) -> str:
    """A key-safe release id: the run's logical date, or its run id when it has none.

    Re-running a DAG run (clearing its tasks, or ``airflow dags test`` for the same
    logical date) gives the same id, so it rewrites the same release.
    """
    if logical_date is not None:
        return logical_date.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return re.sub(r"[^A-Za-z0-9_]+", "-", run_id).strip("-")


def release_id_with_inputs(run_release_id: str, config: dict, data_version: str, versions: dict) -> str:
    """The published release's id: the run's id plus a digest of what made the model.

    The same run with the same data, code and hyper-parameters rewrites the same
    release (idempotent); a run that differs in any of them -- a weaker rerun on the
    same day included -- gets its own prefix and can never overwrite the champion's.
    """
    inputs = json.dumps({"config": config, "data": data_version, "code": versions}, sort_keys=True)
    return f"{run_release_id}-{hashlib.sha256(inputs.encode()).hexdigest()[:10]}"


def dataset_key(dataset: str) -> str:
    """A key-safe name for a dataset given by name or path."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(dataset).name if "/" in dataset else dataset).strip("-")


def run_folder(dataset: str, release_id: str) -> Path:
    path = work_dir() / dataset_key(dataset) / release_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def code_version() -> dict:
    """The code a model was trained with: git commit (and whether the tree was dirty), library versions."""
    import subprocess

    import keras
    import tensorflow as tf

    from recsys_pipeline.settings import PROJECT_ROOT

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- 1. load ---------------------------------------------------------------------------


def load_id_for(dataset: str, release_id: str) -> str:
    """One load per dataset and run: a rerun replaces its own audit row, never another dataset's."""
    return f"{dataset_key(dataset)}:{release_id}"[:64]


def stage(settings: MySQLSettings, dataset: str, load_id: str) -> dict:
    """Map ``dataset`` onto the raw contract and stage it in ``raw_*__new`` (the live raw tables are untouched).

    A file that breaks the contract is recorded in the quarantine (name, size, sha256,
    reason) before the error goes up; nothing is written to the raw tables.
    """
    try:
        raw = read_dataset(dataset)
    except ContractError as error:
        source = Path(error.source) if error.source else None
        quarantine.quarantine_file(settings, load_id, f"raw_{error.entity or 'events'}", source, str(error))
        raise
    summary = loader.stage_raw(raw, settings, load_id=load_id)
    return summary.to_dict() | {"dbt_vars": raw.dbt_vars, "dbt_vars_json": json.dumps(raw.dbt_vars)}


def _raw_gate_inputs(settings: MySQLSettings, staged: dict) -> tuple[profiles.LoadProfile, dict, pd.DataFrame | None]:
    """This load's profile, the suites' computed parameters and the drift statistics (None on a first load)."""
    dataset = dataset_key(staged["dataset"])
    profile = profiles.profile_tables(settings, dataset, staged["load_id"], loader.STAGED_TABLES)
    before = profiles.last_good_profile(settings, dataset, exclude_load_id=staged["load_id"])
    events_suite = next(s for s in quality.load_suite_files(stage="raw") if s["name"] == "raw_events")
    defaults = quality.suite_parameters(events_suite)
    computed: dict[str, dict] = {}
    statistics = None
    if before is not None:
        previous = before.rows["events"]
        computed["raw_events"] = {
            "min_events": max(1, int(np.ceil(previous * (1 - float(defaults["max_row_drop_share"]))))),
            "max_events": int(previous * float(defaults["max_row_growth"])),
        }
        top = [item for item in before.item_shares if item != profiles.OTHER_ITEMS]
        counts = profiles.item_counts_for(settings, loader.STAGED_TABLES["events"], top)
        statistics = pd.DataFrame({
            "event_type_mix_linf": [round(profiles.event_type_mix_linf(profile, before), 6)],
            "item_popularity_jsd": [round(profiles.item_popularity_jsd(counts, profile.rows["events"], before), 6)],
            "compared_with_load": [before.load_id],
        })
        log.info("raw gate: comparing with the last good load %s (%s events): %s", before.load_id, previous,
                 statistics.drop(columns="compared_with_load").to_dict("records")[0])
    else:
        log.info("raw gate: first load of %s, no earlier load to compare volume and distributions with", dataset)
    return profile, computed, statistics


def validate_raw(settings: MySQLSettings, folder: Path, staged: dict, full_refresh: bool = False) -> dict:
    """The raw gate: GX suites on the staged load; admit it (swap into the raw tables) only if they pass.

    On failure the offending rows are copied into the quarantine with their rule, a
    table-level failure (volume, drift) records the whole load there, the staged tables
    are kept as ``raw_*__rejected``, the live raw tables stay as they were, and
    DataQualityError names suite, expectation, table, column and observed value.
    On success the summary also says how the dbt build must run (``dbt_plan``).
    """
    state = loader.staged_state(settings, staged["load_id"], staged["data_version"])
    if state == "missing":
        raise warehouse.LoadError(
            f"load {staged['load_id']} is not staged in {settings.raw_database}.raw_*__new (refused earlier and set "
            "aside as raw_*__rejected?): run load_raw again (clear it too in the Airflow UI)"
        )
    if state == "admitted":  # a retry after the swap: the gate passed then
        log.info("load %s was already admitted by an earlier attempt", staged["load_id"])
        return _admitted(settings, folder, staged, full_refresh, gate={})
    profile, computed, statistics = _raw_gate_inputs(settings, staged)
    tables = {entity_table: (settings.raw_database, staged_table)
              for entity_table, staged_table in zip(loader.RAW_TABLES.values(), loader.STAGED_TABLES.values())}
    docs_dir = folder / "data_docs" / "raw"
    shutil.rmtree(docs_dir, ignore_errors=True)
    try:
        results = quality.run_suites(settings, "raw", tables=tables, computed_parameters=computed,
                                     statistics=statistics, docs_dir=docs_dir, run_name=folder.name)
    except quality.DataQualityError as error:
        kept = _quarantine_refused_load(settings, staged, error)
        _write_json(folder / "quality_raw.json", {"passed": False, "error": str(error), "kept_as": kept})
        raise
    summary = loader.LoadSummary(**{k: staged[k] for k in (
        "load_id", "dataset", "data_version", "rows", "seconds", "rows_per_second", "new_events", "changed_or_removed_events")})
    loader.admit_staged(settings, summary)
    profiles.record_profile(settings, profile)
    gate = {r.suite: r.to_dict() for r in results}
    _write_json(folder / "quality_raw.json", {"passed": True, "suites": gate})
    return _admitted(settings, folder, staged, full_refresh, gate)


def _admitted(settings: MySQLSettings, folder: Path, staged: dict, full_refresh: bool, gate: dict) -> dict:
    ensure_recommendations_table(settings)
    plan = transform.plan_build(settings, staged["dbt_vars"], full_refresh)
    log.info("raw load %s admitted; next dbt build: %s (%s)", staged["load_id"],
             "full refresh" if plan.full_refresh else "incremental", plan.reason)
    return staged | {"dbt_plan": plan.to_dict(), "raw_gate": {name: r["success"] for name, r in gate.items()}}


def _quarantine_refused_load(settings: MySQLSettings, staged: dict, error: quality.DataQualityError) -> list[str]:
    load_id = staged["load_id"]
    quarantine.clear_load(settings, load_id)
    for result in error.results:
        for failure in result.failures:
            entity_table = result.checks
            if failure.row_keys or failure.index_query:
                staged_table = loader.STAGED_TABLES[entity_table.removeprefix("raw_")]
                key = loader.PRIMARY_KEYS[entity_table.removeprefix("raw_")]
                keys = quarantine.keys_from_query(settings, failure.index_query, key) if failure.index_query else failure.row_keys
                copied = quarantine.quarantine_rows(settings, load_id, entity_table, staged_table, key,
                                                    keys, failure.rule_name, failure.describe())
                log.warning("quarantined %d rows of %s: %s", copied, entity_table, failure.rule_name)
            else:
                quarantine.quarantine_load(settings, load_id, entity_table, failure.rule_name, failure.describe(), staged["rows"])
    kept = loader.reject_staged(settings)
    log.warning("refused load %s kept as %s; the live raw tables are unchanged", load_id, ", ".join(kept))
    return kept


def load(settings: MySQLSettings, dataset: str, load_id: str, full_refresh: bool = False, folder: Path | None = None) -> dict:
    """Stage ``dataset``, run the raw gate and admit it (what the DAG's ``load_raw`` and ``validate_raw`` do)."""
    staged = stage(settings, dataset, load_id)
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="recsys-load-"))
    return validate_raw(settings, folder, staged, full_refresh)


# --- 2. transform ----------------------------------------------------------------------


def build_features(settings: MySQLSettings, folder: Path, dbt_vars: dict, full_refresh: bool = False) -> dict:
    """``dbt build`` in one invocation (seeds, staging, features, split, each model followed by its tests), then its docs.

    The Airflow DAG runs the same project as one task per model instead (see
    ``dbt_task_group``) and then ``document_features``.
    """
    plan = transform.build(settings, dbt_vars, full_refresh)
    return document_features(settings, folder, dbt_vars, plan.fingerprint, record=False) | {
        "full_refresh": plan.full_refresh, "reason": plan.reason,
    }


def document_features(settings: MySQLSettings, folder: Path, dbt_vars: dict, fingerprint: str, record: bool = True) -> dict:
    """After a successful build: remember it (for the next incremental plan), write the dbt docs site into the release."""
    if record:
        transform.record_build(settings, fingerprint)
    docs = transform.generate_docs(settings, dbt_vars, folder / "dbt_docs")
    return feature_counts(settings) | {"docs": [p.relative_to(folder).as_posix() for p in docs]}


def feature_counts(settings: MySQLSettings) -> dict:
    with warehouse.connect(settings) as conn:
        rows = {mart: int(warehouse.scalar(conn, f"SELECT COUNT(*) FROM {warehouse.quote_identifier(mart)}")) for mart in DBT_MARTS}
    log.info("features built: %s", rows)
    return {"rows": rows}


# Files of a features run that a release carries: both gates' Data Docs and results, the dbt docs site.
FEATURE_ARTIFACTS = ("data_docs", "dbt_docs", "quality_raw.json", "quality.json")


def features_announcement(admitted: dict, folder: Path) -> dict:
    """What the features asset's event says: enough for a training run to find and check the build."""
    return {"dataset": admitted["dataset"], "load_id": admitted["load_id"], "data_version": admitted["data_version"],
            "features_run_folder": str(folder)}


CHECKED_BUILDS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.`checked_feature_builds` (
  `load_id` VARCHAR(64) NOT NULL PRIMARY KEY,
  `data_version` CHAR(64) NOT NULL,
  `run_folder` VARCHAR(1024) NOT NULL,
  `checked_at` DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""


def record_checked_build(settings: MySQLSettings, folder: Path) -> None:
    """After the features gate passed: the live load's features are good to train on (and its docs are in ``folder``)."""
    live = loader.live_load(settings)
    if live is None:
        return
    db = warehouse.quote_identifier(settings.raw_database)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute(CHECKED_BUILDS_DDL.format(db=db))
        cur.execute(f"REPLACE INTO {db}.`checked_feature_builds` VALUES (%s, %s, %s, %s)",
                    (live[0], live[1], str(folder), datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)))
        conn.commit()


def current_build(settings: MySQLSettings, dataset: str) -> dict:
    """The warehouse's current features as an announcement, if they passed the features gate and are ``dataset``'s."""
    live = loader.live_load(settings)
    db = warehouse.quote_identifier(settings.raw_database)
    row = None
    if live is not None:
        with warehouse.connect(settings, database=settings.raw_database) as conn:
            if warehouse.table_exists(conn, settings.raw_database, "checked_feature_builds"):
                row = warehouse.query_one(conn, f"SELECT run_folder FROM {db}.`checked_feature_builds` WHERE load_id = %s AND data_version = %s", live)
    if row is None:
        raise warehouse.LoadError(
            f"{settings.raw_database}: the warehouse holds no feature build that passed the features gate"
            f"{'' if live is None else f' (live load {live[0]})'}: run with build_features on, or run recsys_features first"
        )
    if not live[0].startswith(dataset_key(dataset) + ":"):
        raise warehouse.LoadError(
            f"the warehouse holds load {live[0]}, not a load of {dataset_key(dataset)}: run with build_features on to load it"
        )
    return {"dataset": dataset, "load_id": live[0], "data_version": live[1], "features_run_folder": row[0]}


def use_built_features(settings: MySQLSettings, announced: dict, folder: Path) -> dict:
    """Train on features another run built (the asset event ``announced``): check the warehouse
    still holds that load, and bring its Data Docs and dbt docs into this run's release."""
    live = loader.live_load(settings)
    wanted = (announced["load_id"], announced["data_version"])
    if live != wanted:
        raise warehouse.LoadError(
            f"the features asset announced load {wanted[0]} (data version {wanted[1][:12]}), but "
            f"{settings.raw_database}.load_audit says the warehouse now holds "
            f"{'nothing' if live is None else f'load {live[0]} (data version {live[1][:12]})'}: "
            "a later load replaced it, and its own asset event triggers its own training run"
        )
    source = Path(announced["features_run_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in FEATURE_ARTIFACTS if source.resolve() != folder.resolve() else ():  # a rerun of the building run has them
        if not (source / name).exists():
            continue
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        if (source / name).is_dir():
            shutil.copytree(source / name, target)
        elif (source / name).is_file():
            shutil.copy2(source / name, target)
        else:
            continue
        copied.append(name)
    log.info("training on load %s of %s (built by the features run in %s); brought along: %s",
             announced["load_id"], announced["dataset"], source, ", ".join(copied) or "nothing (folder not found)")
    return {"dataset": announced["dataset"], "load_id": announced["load_id"], "data_version": announced["data_version"],
            "features_from": str(source)}


# --- 3. data quality gate --------------------------------------------------------------


def check_quality(settings: MySQLSettings, folder: Path) -> dict:
    """The features gate: GX suites on dbt's models; raise (stopping the run) if any expectation fails."""
    docs_dir = folder / "data_docs" / "features"
    shutil.rmtree(docs_dir, ignore_errors=True)
    tables = {"raw_events": (settings.raw_database, "raw_events")}
    try:
        results = quality.run_suites(settings, "features", tables=tables, docs_dir=docs_dir, run_name=folder.name)
    except quality.DataQualityError as error:
        _write_json(folder / "quality.json", {"passed": False, "error": str(error)})
        raise
    summary = {"passed": True, "suites": {r.suite: r.to_dict() for r in results}}
    _write_json(folder / "quality.json", summary)
    return summary


def publish_data_docs(s3_settings: S3Settings, folder: Path, dataset: str, stage_name: str) -> str | None:
    """Upload one gate's Data Docs (passed or failed) under ``<prefix>/<dataset>/data-docs/<run>/<stage>/``.

    Outside ``releases/``: a refused run publishes its Data Docs, never a release.
    Returns a link to the index (presigned, 7 days) or None when nothing was built.
    """
    docs_dir = folder / "data_docs" / stage_name
    if not (docs_dir / "index.html").exists():
        return None
    s3 = storage.client(s3_settings)
    storage.ensure_bucket(s3, s3_settings.bucket)
    prefix = f"{s3_settings.prefix}/{dataset_key(dataset)}/data-docs/{folder.name}/{stage_name}/"
    for path in sorted(p for p in docs_dir.rglob("*") if p.is_file()):
        storage.upload_file(s3, s3_settings.bucket, prefix + path.relative_to(docs_dir).as_posix(), path)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": s3_settings.bucket, "Key": prefix + "index.html"}, ExpiresIn=7 * 24 * 3600)
    log.info("Data Docs (%s gate): s3://%s/%sindex.html\n  open: %s\n  local copy: file://%s",
             stage_name, s3_settings.bucket, prefix, url, (docs_dir / "index.html").resolve())
    return f"s3://{s3_settings.bucket}/{prefix}index.html"


# --- 4. train --------------------------------------------------------------------------


SPLIT_SNAPSHOT = "split.parquet"
ATTRIBUTE_SNAPSHOT = "item_attributes.parquet"
TIME_SPLIT_SNAPSHOT = "time_split.parquet"  # the backtest's global time cut
SEGMENT_SNAPSHOT = "user_segments.parquet"  # each shopper's country, for the user tower and the segment fallback
# the run's working copies: never part of a release (the SavedModel itself holds what serving needs
# per shopper -- embedding, items, recent history, segment -- so a release is personal data either way)
RUN_ONLY_FILES = ("embeddings.npz", "published.json", SPLIT_SNAPSHOT, ATTRIBUTE_SNAPSHOT, TIME_SPLIT_SNAPSHOT, SEGMENT_SNAPSHOT)


def snapshot_split(settings: MySQLSettings, folder: Path, expected_load: tuple[str, str] | None = None):
    """Read ``interactions_split`` (and the backtest's ``interactions_time_split``) once into the run
    folder; every later stage of the run reads that copy.

    A feature build of another run may replace the table while this run trains and
    evaluates; with one snapshot, training, evaluation and scoring see the same rows.
    ``expected_load`` (load id, data version) is checked *after* the read: if the
    warehouse moved on to another load meanwhile, the run stops instead of training
    on a build it was not asked to.
    """
    from ml.data import SPLIT_COLUMNS

    from ml.backtest import TIME_SPLIT_COLUMNS

    with warehouse.connect(settings) as conn:
        frame = warehouse.read_frame(conn, f"SELECT {', '.join(SPLIT_COLUMNS)}, first_event_at FROM `interactions_split`")
        time_split = warehouse.read_frame(conn, f"SELECT {', '.join(TIME_SPLIT_COLUMNS)} FROM `interactions_time_split`")
    if frame.empty:
        raise quality.DataQualityError("table interactions_split is empty: no interactions to train on")
    if expected_load is not None:
        live = loader.live_load(settings)
        if live != tuple(expected_load):
            raise warehouse.LoadError(
                f"interactions_split was read while the warehouse held load {live[0] if live else None}, not "
                f"{expected_load[0]} that this run was asked to train on: another feature build replaced it"
            )
    frame.to_parquet(folder / SPLIT_SNAPSHOT, index=False)
    time_split.to_parquet(folder / TIME_SPLIT_SNAPSHOT, index=False)
    with warehouse.connect(settings) as conn:  # for the item tower and the diversity metric
        attributes = warehouse.read_frame(conn, "SELECT item_id, category, price_band, title FROM `item_features`") \
            if warehouse.table_exists(conn, settings.database, "item_features") \
            else pd.DataFrame(columns=["item_id", "category", "price_band", "title"])
    attributes.to_parquet(folder / ATTRIBUTE_SNAPSHOT, index=False)
    with warehouse.connect(settings) as conn:
        segments = warehouse.read_frame(conn, "SELECT user_id, country FROM `user_features`") \
            if warehouse.table_exists(conn, settings.database, "user_features") \
            else pd.DataFrame(columns=["user_id", "country"])
    segments.to_parquet(folder / SEGMENT_SNAPSHOT, index=False)
    return frame


def read_user_segments(folder: Path, user_ids: np.ndarray):
    """The run's shopper segments aligned with ``user_ids`` (none known when the snapshot predates them)."""
    from ml.user_segments import encode

    path = folder / SEGMENT_SNAPSHOT
    return encode(user_ids, pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["user_id", "country"]))


def read_split(settings: MySQLSettings, folder: Path | None = None):
    """The run's split as ``InteractionData``: its snapshot when there is one, else the live table."""
    from ml.data import from_split_frame

    if folder is not None and (folder / SPLIT_SNAPSHOT).exists():
        return from_split_frame(pd.read_parquet(folder / SPLIT_SNAPSHOT))
    return from_split_frame(snapshot_split(settings, folder) if folder is not None else _live_split(settings))


def _live_split(settings: MySQLSettings) -> pd.DataFrame:
    from ml.data import SPLIT_COLUMNS

    with warehouse.connect(settings) as conn:
        frame = warehouse.read_frame(conn, f"SELECT {', '.join(SPLIT_COLUMNS)} FROM `interactions_split`")
    if frame.empty:
        raise quality.DataQualityError("table interactions_split is empty: no interactions to train on")
    return frame


def train(settings: MySQLSettings, folder: Path, config_overrides: dict, data_version: str, load_id: str | None = None) -> dict:
    """Fit the two-tower model on the train split; save embeddings and the SavedModel."""
    from ml.data import from_split_frame
    from ml.item_attributes import encode as encode_item_attributes
    from ml.serving import RecommenderModule, export_saved_model
    from ml.evaluate import category_ids
    from ml.reranker import fit_on_validation
    from ml.train import tune_on_validation
    from ml.two_tower import TwoTowerConfig, pad_histories
    from ml.user_segments import segment_popularity

    data = from_split_frame(snapshot_split(settings, folder, (load_id, data_version) if load_id else None))
    attributes = encode_item_attributes(data.item_ids, pd.read_parquet(folder / ATTRIBUTE_SNAPSHOT))
    segments = read_user_segments(folder, data.user_ids)
    config = TwoTowerConfig(**config_overrides)
    # Whether the user tower reads the profile, and the number of epochs, are chosen on the
    # validation split carved from train (never on test); the model is then refitted on all
    # of train (Online Retail: validation NDCG@20 0.1493 without the profile, 0.1472 with it;
    # the choice is made again on every run's own data).
    model, config, tuned, tuning = tune_on_validation(
        data, config, {"user_profile": (config.user_profile, not config.user_profile)}, attributes, segments)
    # The ranking stage learns to re-order the candidates of the model fitted on `fit` against the
    # validation items; it is used only if it beats the retrieval order on validation users it never saw.
    catalogue = pd.read_parquet(folder / ATTRIBUTE_SNAPSHOT)
    ranker = fit_on_validation(data, tuned, category_ids(data.item_ids, catalogue), attributes.price_band)
    use_ranker = ranker.record["improves"]
    out = folder / "two_tower"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if ranker.mlp is not None:
        ranker.save(out / RANKER_FILE)
    evaluation_user_embeddings = model.use_histories(data.histories).user_embeddings  # inputs: train items
    serving_user_embeddings = model.embed_users(data.full_histories)  # inputs: everything known
    np.savez(
        out / "embeddings.npz",
        user_embeddings=evaluation_user_embeddings,
        serving_user_embeddings=serving_user_embeddings,
        item_embeddings=model.item_embeddings,
        item_bias=model.item_bias,
    )
    versions = code_version()
    release_id = release_id_with_inputs(folder.name, {"requested": config_overrides, "trained": config.to_dict()}, data_version, versions)
    model_version = f"{CHALLENGER}-{release_id}"
    module = RecommenderModule(
        data.user_ids, data.item_ids, serving_user_embeddings, model.item_embeddings, data.all_interactions,
        segment_popularity(data.all_interactions, segments), model_version, item_bias=model.item_bias,
        user_tower=model.model.user_tower, history_length=config.history_length, segment_names=segments.names,
        ranker=ranker.using(ranking_features(folder, data.item_ids, data.all_interactions)) if use_ranker else None,
        histories=pad_histories(data.full_histories, config.history_length),
    )
    export_saved_model(module, out / "saved_model")
    training = {
        "model": CHALLENGER,
        "model_version": model_version,
        "release_id": release_id,
        "config": config.to_dict(),
        "data_version": data_version,
        "code_version": versions,
        "loss_per_epoch": model.loss_history,
        "validation_ndcg@20_per_epoch": tuned.validation_history,
        "best_epoch": tuned.best_epoch,
        "tuning": tuning,
        "ranking_stage": ranker.record | {"used": use_ranker},
        "examples": int(data.train.nnz),
        "examples_per_second": round(model.examples_per_second, 1),
        "users": data.n_users,
        "items": data.n_items,
        "segments": len(segments.names),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(out / "training.json", training)
    return {k: training[k] for k in ("model_version", "examples", "examples_per_second", "best_epoch")}


RANKER_FILE = "ranking_mlp.keras"  # the ranking stage's MLP, beside the SavedModel that may carry it


def retrieval_scores(folder: Path, users_key: str):
    """Score function (user indices -> [b, n_items]) of the run's saved two-tower embeddings, as the
    SavedModel scores: dot product plus the item bias (the popularity prior; absent before it existed)."""
    saved = np.load(folder / "two_tower" / "embeddings.npz")
    users, items = saved[users_key], saved["item_embeddings"]
    bias = saved["item_bias"] if "item_bias" in saved.files else None

    def score(u: np.ndarray) -> np.ndarray:
        scores = users[u] @ items.T
        if bias is not None:
            scores += bias
        return scores

    return score


def ranking_features(folder: Path, item_ids: np.ndarray, interactions):
    """The ranking stage's features (``ml.reranker.RankingFeatures``) learned from ``interactions``, with the
    run's catalogue snapshot for categories and price bands."""
    from ml.evaluate import category_ids
    from ml.item_attributes import encode
    from ml.reranker import RankingFeatures

    frame = pd.read_parquet(folder / ATTRIBUTE_SNAPSHOT)
    return RankingFeatures(interactions, category_ids(item_ids, frame), encode(item_ids, frame).price_band)


def ranking_stage(folder: Path, item_ids: np.ndarray, interactions, used_only: bool = True):
    """The run's trained ranking stage over features from ``interactions``; None when there is none
    (or, with ``used_only``, when the run chose not to use it)."""
    from ml.reranker import Ranker

    path = folder / "two_tower" / RANKER_FILE
    if not path.exists() or (used_only and not _read_json(folder / "two_tower" / "training.json").get("ranking_stage", {}).get("used")):
        return None
    return Ranker.load(path, ranking_features(folder, item_ids, interactions))


# --- 5. evaluate -----------------------------------------------------------------------


def evaluate(settings: MySQLSettings, folder: Path) -> dict:
    """Test metrics of the two-tower model and every baseline, on the same split."""
    from ml.evaluate import KS, PRIMARY_METRIC, category_ids, evaluate_baselines, evaluate_scores

    data = read_split(settings, folder)
    item_category = None
    if (folder / ATTRIBUTE_SNAPSHOT).exists():
        frame = pd.read_parquet(folder / ATTRIBUTE_SNAPSHOT)
        item_category = category_ids(data.item_ids, frame)
    metrics, tuning = evaluate_baselines(data, item_category)
    retrieval = retrieval_scores(folder, "user_embeddings")
    # both orders are measured (the report shows them); the challenger is the one the run chose on validation
    ranking = _read_json(folder / "two_tower" / "training.json").get("ranking_stage", {})
    ranker = ranking_stage(folder, data.item_ids, data.train, used_only=False)
    orders = {"retrieval_order": evaluate_scores(retrieval, data, item_category=item_category)}
    if ranker is not None:
        orders["reranked"] = evaluate_scores(ranker.score_fn(retrieval, data.train, max(KS)), data, item_category=item_category)
    metrics[CHALLENGER] = orders["reranked" if ranking.get("used") and ranker is not None else "retrieval_order"]
    report = {
        "primary_metric": PRIMARY_METRIC,
        "models": metrics,
        "tuning": tuning,
        "ranking_stage": ranking | {"test": orders},
        "protocol": "per-user temporal holdout, full ranking; hyper-parameters chosen on validation",
        "data_window": data_window(pd.read_parquet(folder / SPLIT_SNAPSHOT)),
    }
    _write_json(folder / "metrics.json", report)
    for name, values in metrics.items():
        log.info("%-14s recall@20=%.4f ndcg@20=%.4f", name, values["recall@20"], values["ndcg@20"])
    return {name: {m: round(values[m], 4) for m in ("recall@20", "ndcg@20")} for name, values in metrics.items()}


def backtest(folder: Path, max_epochs: int) -> dict:
    """The protocol's global time-cut backtest (``ml.backtest``) of every baseline and the run's two-tower
    configuration, added to ``metrics.json`` under ``backtest``: beside the gate's metrics, not in them."""
    from ml.backtest import run_backtest
    from ml.two_tower import TwoTowerConfig

    frame = pd.read_parquet(folder / TIME_SPLIT_SNAPSHOT)
    config = TwoTowerConfig(**(_read_json(folder / "two_tower" / "training.json")["config"] | {"epochs": max_epochs}))
    result = run_backtest(
        frame, config, catalogue=pd.read_parquet(folder / ATTRIBUTE_SNAPSHOT),
        user_segments=pd.read_parquet(folder / SEGMENT_SNAPSHOT) if (folder / SEGMENT_SNAPSHOT).exists() else None,
    )
    report = _read_json(folder / "metrics.json")
    _write_json(folder / "metrics.json", report | {"backtest": result})
    for variant, values in result["variants"].items():
        for name, metrics in sorted(values["models"].items(), key=lambda kv: -kv[1]["ndcg@20"]):
            log.info("backtest %-12s %-14s recall@20=%.4f ndcg@20=%.4f", variant, name, metrics["recall@20"], metrics["ndcg@20"])
    return {variant: {name: round(m["ndcg@20"], 4) for name, m in values["models"].items()}
            for variant, values in result["variants"].items()} | {"cut_at": result["window"]["cut_at"]}


def data_window(split: pd.DataFrame) -> dict:
    """First and last interaction time, users and items of each split: the model card's data window."""
    window = {}
    for name, rows in split.groupby("split"):
        window[str(name)] = {"first_event_at": str(rows["first_event_at"].min()), "last_event_at": str(rows["first_event_at"].max()),
                             "interactions": int(len(rows)), "users": int(rows["user_id"].nunique()), "items": int(rows["item_id"].nunique())}
    return window


USER_TOWER_ENCODERS = {"pooling": "pooled with learned position weights", "gru": "read in time order by a GRU"}


def _ranking_stage_line(stage: dict) -> str:
    if not stage:
        return "none"
    if stage.get("skipped"):
        return f"not trained ({stage['skipped']})"
    held = stage.get("held_out_ndcg@20", {})
    return (f"{'used' if stage.get('used') else 'not used'} -- an MLP re-ordering the {stage.get('candidates')} best candidates; "
            f"held-out validation NDCG@20 {held.get('retrieval_order')} in retrieval order, {held.get('reranked')} re-ordered")


def _prior_phrase(weight: float) -> str:
    if not weight:
        return ""
    direction = "demoting" if weight < 0 else "favouring"
    return f"; ranked with a popularity prior of weight {weight:g} ({direction} best-sellers, chosen on validation)"


def write_model_card(folder: Path, dataset: str, data_version: str, release_id: str) -> Path:
    """``model_card.md``: what a reader of the release needs before trusting its model."""
    training = _read_json(folder / "two_tower" / "training.json")
    report = _read_json(folder / "metrics.json")
    decision = _read_json(folder / "decision.json")
    names = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "hit_rate@20", "map@20", "coverage@10"]
    lines = [
        f"# Model card: {training['model_version']}",
        "",
        f"- **Release**: `{release_id}` of dataset `{dataset_key(dataset)}` (data version `{data_version[:16]}`)",
        f"- **Trained**: {training.get('trained_at')} on {training.get('examples', '?')} examples, best epoch {training.get('best_epoch', '?')}",
        f"- **Model**: two-tower retrieval (user tower: the user's recent items, "
        f"{USER_TOWER_ENCODERS.get(training.get('config', {}).get('sequence_encoder', 'pooling'), '?')}"
        f"{', and a profile of them (activity, price level, categories) with the segment' if training.get('config', {}).get('user_profile') else ''}; "
        f"item tower: item id{' with category, price band and title words' if training.get('config', {}).get('item_attributes') else ''}), "
        "in-batch softmax with log-frequency correction"
        f"{_prior_phrase(training.get('config', {}).get('popularity_prior', 0.0))}",
        f"- **Ranking stage**: {_ranking_stage_line(training.get('ranking_stage', {}))}",
        f"- **Hyper-parameters**: `{json.dumps(training.get('config', {}), sort_keys=True)}`",
        f"- **Code**: `{json.dumps(training.get('code_version', {}), sort_keys=True)}`",
        "",
        "## Data window",
        "",
        "| split | first interaction | last interaction | interactions | users | items |",
        "|---|---|---|---|---|---|",
    ]
    for split, window in sorted(report.get("data_window", {}).items()):
        lines.append(f"| {split} | {window['first_event_at']} | {window['last_event_at']} | {window['interactions']:,} | {window['users']:,} | {window['items']:,} |")
    lines += ["", f"## Offline metrics ({report.get('protocol', '')})", "", "| model | " + " | ".join(names) + " |",
              "|---" * (len(names) + 1) + "|"]
    for model, values in report["models"].items():
        lines.append(f"| {model} | " + " | ".join(f"{values.get(n, float('nan')):.4f}" for n in names) + " |")
    lines += ["", f"## Promotion gate: {'PROMOTED' if decision['promote'] else 'not promoted'}", ""]
    lines += [f"- {reason}" for reason in decision["reasons"]]
    lines += [
        "",
        "## Known limits",
        "",
        "- Users with fewer than 5 distinct items are not evaluated; their recommendations lean on popularity.",
        "- Users unseen in training get recommendations from the recent items the caller passes "
        "(`recommend_in_context`); with none, their segment's best-sellers, or everyone's.",
        "- Offline metrics on a temporal holdout of one shop's history; no online test has measured this model.",
        "- Recommendations exclude every item the user already interacted with, including repeat-purchase staples.",
    ]
    path = folder / "model_card.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def recommend(settings: MySQLSettings, folder: Path, top_k: int) -> dict:
    """Batch-score every user with the two-tower model: top-K unseen items each, as Parquet."""
    from ml.ranking import batched_top_k

    data = read_split(settings, folder)
    all_users = np.arange(data.n_users)
    score = retrieval_scores(folder, "serving_user_embeddings")
    ranker = ranking_stage(folder, data.item_ids, data.all_interactions)  # as the SavedModel ranks, when the run uses it
    if ranker is not None:
        score = ranker.score_fn(score, data.all_interactions, top_k)
    top_items, top_scores = batched_top_k(score, all_users, top_k, exclude=data.all_interactions)
    training = _read_json(folder / "two_tower" / "training.json")
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(data.user_ids.astype(str), top_k),
            "rank": np.tile(np.arange(1, top_k + 1, dtype=np.int16), data.n_users),
            "item_id": data.item_ids.astype(str)[top_items.ravel()],
            "score": top_scores.ravel().astype(np.float32),
        }
    )
    frame = frame[np.isfinite(frame["score"])]
    frame["model_version"] = training["model_version"]
    frame["generated_at"] = pd.Timestamp(training["trained_at"]).tz_convert(None).floor("s")
    frame.to_parquet(folder / "recommendations.parquet", index=False)
    return {"users": int(data.n_users), "rows": int(len(frame)), "top_k": top_k}


# --- 6. promotion gate -----------------------------------------------------------------


def champion_key(s3: S3Settings, dataset: str) -> str:
    return releases.champion_key(s3, dataset_key(dataset))


def release_prefix(s3: S3Settings, dataset: str, release_id: str) -> str:
    return releases.release_prefix(s3, dataset_key(dataset), release_id)


def write_report(folder: Path, dataset: str) -> Path:
    """``report.html``: training curves, every model's metrics as charts and a table, the gate's reasons."""
    from ml.report import render

    decision_path = folder / "decision.json"
    training = _read_json(folder / "two_tower" / "training.json")
    page = render(training, _read_json(folder / "metrics.json"), _read_json(decision_path) if decision_path.exists() else None,
                  f"Evaluation report: {dataset_key(dataset)}, release {training.get('release_id', '?')}")
    path = folder / "report.html"
    path.write_text(page)
    log.info("evaluation report: file://%s", path.resolve())
    return path


def promotion_gate(s3_settings: S3Settings, folder: Path, dataset: str, data_version: str, force: bool = False) -> dict:
    """Decide whether this run's model becomes champion; the decision is written for publishing."""
    from ml.gate import GateConfig, decide

    report = _read_json(folder / "metrics.json")
    s3 = storage.client(s3_settings)
    storage.ensure_bucket(s3, s3_settings.bucket)
    champion = storage.get_json(s3, s3_settings.bucket, champion_key(s3_settings, dataset))
    champion_metrics = champion.get("metrics") if champion else None
    comparable = bool(champion) and champion.get("data_version") == data_version
    baselines = [name for name in BASELINE_NAMES if name in report["models"]]
    decision = decide(CHALLENGER, report["models"], baselines, champion_metrics, comparable, GateConfig.from_env())
    payload = decision.to_dict() | {"forced": force, "champion_before": champion.get("release_id") if champion else None}
    if force and not decision.promote:
        payload["promote"] = True
        payload["reasons"].append("forced: promoted by the force_publish parameter despite failed checks")
    _write_json(folder / "decision.json", payload)
    write_report(folder, dataset)
    for reason in payload["reasons"]:
        log.info("gate %s", reason)
    log.info("gate decision: %s", "PROMOTE" if payload["promote"] else "KEEP CHAMPION")
    return {"promote": payload["promote"], "reasons": payload["reasons"]}


# --- 7. publish ------------------------------------------------------------------------


def publish(s3_settings: S3Settings, folder: Path, dataset: str, data_version: str) -> dict:
    """Upload the release, verify every object, write its manifest, then (if promoted) the champion pointer.

    Readers go pointer -> manifest -> objects, and the pointer is written last, so
    nobody is ever sent to a release that is not complete and verified.
    """
    s3 = storage.client(s3_settings)
    bucket = s3_settings.bucket
    storage.ensure_bucket(s3, bucket)
    training = _read_json(folder / "two_tower" / "training.json")
    release_id = training["release_id"]
    prefix = release_prefix(s3_settings, dataset, release_id)
    decision = _read_json(folder / "decision.json")
    champion = storage.get_json(s3, bucket, champion_key(s3_settings, dataset))
    if champion and champion["release_id"] == release_id and not decision["promote"]:
        raise RuntimeError(
            f"release {release_id} is the current champion and this attempt was not promoted: refusing to rewrite it"
        )
    write_model_card(folder, dataset, data_version, release_id)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in RUN_ONLY_FILES)
    objects = [storage.upload_file(s3, bucket, prefix + p.relative_to(folder).as_posix(), p) for p in files]
    wanted = {o.key for o in objects} | {prefix + "manifest.json"}
    for stale in set(storage.list_keys(s3, bucket, prefix)) - wanted:  # left by an earlier attempt of this run
        s3.delete_object(Bucket=bucket, Key=stale)
    for obj in objects:
        size, checksum = storage.download_sha256(s3, bucket, obj.key)
        if (size, checksum) != (obj.size, obj.sha256):
            raise RuntimeError(f"object {obj.key} does not match what was uploaded (size {size} vs {obj.size})")
    metrics = _read_json(folder / "metrics.json")
    manifest = {
        "release_id": release_id,
        "dataset": dataset_key(dataset),
        "model_version": training["model_version"],
        "data_version": data_version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gate": decision,
        "metrics": metrics["models"][CHALLENGER],
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
    }
    manifest_object = storage.put_json(s3, bucket, prefix + "manifest.json", manifest)
    pointer = None
    if decision["promote"]:
        pointer = releases.champion_pointer(manifest, manifest_object, manifest["created_at"])
        storage.put_json(s3, bucket, champion_key(s3_settings, dataset), pointer)
        releases.record_history(s3, s3_settings, dataset_key(dataset), {
            "event": "promote", "release_id": release_id, "from": champion.get("release_id") if champion else None,
            "at": manifest["created_at"],
        })
    _write_json(folder / "published.json", {"release_id": release_id, "prefix": prefix, "manifest": manifest_object.key})
    return {
        "bucket": bucket,
        "release_id": release_id,
        "release_prefix": prefix,
        "manifest": manifest_object.key,
        "objects": len(objects) + 1,
        "champion_pointer": champion_key(s3_settings, dataset) if pointer else None,
    }


# --- 8. recommendations into MySQL -----------------------------------------------------

RECOMMENDATIONS_DDL = """
CREATE TABLE {table} (
  `user_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `rank` SMALLINT NOT NULL,
  `item_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `score` FLOAT NOT NULL,
  `model_version` VARCHAR(128) NOT NULL,
  `generated_at` DATETIME NOT NULL,
  PRIMARY KEY (`user_id`, `rank`),
  KEY `item_id` (`item_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


def ensure_recommendations_table(settings: MySQLSettings) -> None:
    """Create the (empty) recommendations table if no release has been loaded yet.

    dbt's recommendations_explained view reads it, so it must exist from the first build on.
    """
    table = f"{warehouse.quote_identifier(settings.database)}.`recommendations`"
    with warehouse.connect(settings) as conn:
        conn.cursor().execute(RECOMMENDATIONS_DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1).format(table=table))
        conn.commit()


def load_recommendations(settings: MySQLSettings, folder: Path) -> dict:
    """Replace the ``recommendations`` table analysts query, atomically (load new, then RENAME)."""
    return replace_recommendations(settings, pd.read_parquet(folder / "recommendations.parquet"))


def replace_recommendations(settings: MySQLSettings, frame: pd.DataFrame) -> dict:
    """Load ``frame`` into ``recommendations__new``, then swap it in with one RENAME.

    Readers see the old table until the swap, and the old one stays as
    ``recommendations__previous`` for one release. If the connection dies during the
    load, the live table was never touched and a retry starts over.
    """
    database = settings.database
    new_table = f"{warehouse.quote_identifier(database)}.`recommendations__new`"
    with warehouse.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(f"DROP TABLE IF EXISTS {new_table}")
        cur.execute(RECOMMENDATIONS_DDL.format(table=new_table))
        with tempfile.TemporaryDirectory() as tmp:
            rows = warehouse.load_frame(conn, f"{database}.recommendations__new", frame, Path(tmp))
        conn.commit()
        warehouse.swap_in(conn, database, ["recommendations"], keep_previous=True)
    versions = sorted(frame["model_version"].unique().tolist()) if "model_version" in frame else []
    log.info("%s.recommendations now holds %s rows of model %s", database, rows, ", ".join(versions))
    return {"table": f"{database}.recommendations", "rows": rows, "users": int(frame["user_id"].nunique()), "model_versions": versions}


def rollback(s3_settings: S3Settings, settings: MySQLSettings, dataset: str, release_id: str) -> dict:
    """Point the champion back to ``release_id`` (complete and once promoted) and reload its recommendations into MySQL."""
    pointer = releases.rollback(s3_settings, dataset_key(dataset), release_id)
    s3 = storage.client(s3_settings)
    manifest = storage.get_json(s3, s3_settings.bucket, pointer["manifest"])
    with tempfile.TemporaryDirectory() as tmp:
        path = releases.download_release(s3, s3_settings, manifest, Path(tmp), "recommendations.parquet")
        loaded = replace_recommendations(settings, pd.read_parquet(path))
    return {"champion": pointer["release_id"], "rolled_back_from": pointer["rolled_back_from"], "recommendations": loaded}
