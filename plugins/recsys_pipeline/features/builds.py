"""Feature builds as the rest of the pipeline sees them: planned, recorded, checked, announced.

The dbt project does the transformation (``features.dbt`` runs it, ``features.task_group``
renders it as Airflow tasks). Around it: each build is planned (incremental or full) after
the raw gate, recorded when it succeeded, remembered as *checked* once the features gate
passed, and announced through the features Asset. A training run that did not build its
own features trains on a checked build and brings that build's Data Docs and dbt docs
into its release.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from recsys_pipeline import warehouse
from recsys_pipeline.features import dbt
from recsys_pipeline.ingest import loader
from recsys_pipeline.release.recommendations_table import ensure_recommendations_table
from recsys_pipeline.run import RunArtifacts, RunContext, dataset_key
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

MARTS = ("user_features", "item_features", "interactions_split")  # what training reads, counted in summaries
CHECKED_BUILDS_TABLE = "checked_feature_builds"
CHECKED_BUILDS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.`checked_feature_builds` (
  `load_id` VARCHAR(64) NOT NULL PRIMARY KEY,
  `data_version` CHAR(64) NOT NULL,
  `run_folder` VARCHAR(1024) NOT NULL,
  `checked_at` DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""


def prepare_build(settings: MySQLSettings, dbt_vars: dict, full_refresh: bool = False) -> dbt.BuildPlan:
    """What the next dbt build must be (incremental or full, and why), with what it reads in place.

    dbt's ``recommendations_explained`` view reads the recommendations table, so it must
    exist (empty) from the first build on, before any release was loaded.
    """
    ensure_recommendations_table(settings)
    return dbt.plan_build(settings, dbt_vars, full_refresh)


def document_features(settings: MySQLSettings, run: RunContext, dbt_vars: dict, fingerprint: str) -> dict:
    """After a successful build: remember it (for the next incremental plan), write the dbt docs site into the run."""
    dbt.record_build(settings, fingerprint)
    artifacts = run.artifacts
    docs = dbt.generate_docs(settings, dbt_vars, artifacts.path(RunArtifacts.DBT_DOCS))
    return feature_counts(settings) | {"docs": [p.relative_to(artifacts.folder).as_posix() for p in docs]}


def feature_counts(settings: MySQLSettings) -> dict:
    with warehouse.connect(settings) as conn:
        rows = {
            mart: int(warehouse.scalar(conn, f"SELECT COUNT(*) FROM {warehouse.quote_identifier(mart)}"))
            for mart in MARTS
        }
    log.info("features built: %s", rows)
    return {"rows": rows}


def announcement(admitted: dict, run: RunContext) -> dict:
    """What the features asset's event says: enough for a training run to find and check the build."""
    return {
        "dataset": run.dataset,
        "load_id": admitted["load_id"],
        "data_version": admitted["data_version"],
        "features_run_folder": str(run.folder),
    }


def record_checked_build(settings: MySQLSettings, run: RunContext) -> None:
    """After the features gate passed: the live load's features are good to train on (its docs are in the run)."""
    live = loader.live_load(settings)
    if live is None:
        return
    db = warehouse.quote_identifier(settings.raw_database)
    checked_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute(CHECKED_BUILDS_DDL.format(db=db))
        cur.execute(
            f"REPLACE INTO {db}.`{CHECKED_BUILDS_TABLE}` VALUES (%s, %s, %s, %s)",
            (live[0], live[1], str(run.folder), checked_at),
        )
        conn.commit()


def current_build(settings: MySQLSettings, dataset: str) -> dict:
    """The warehouse's current features as an announcement, if they passed the features gate and are ``dataset``'s."""
    live = loader.live_load(settings)
    folder = None if live is None else _recorded_run_folder(settings, live)
    if folder is None:
        raise warehouse.LoadError(
            f"{settings.raw_database}: the warehouse holds no feature build that passed the features gate"
            f"{'' if live is None else f' (live load {live[0]})'}: "
            "run with build_features on, or run recsys_features first"
        )
    if not live[0].startswith(dataset_key(dataset) + ":"):
        raise warehouse.LoadError(
            f"the warehouse holds load {live[0]}, not a load of {dataset_key(dataset)}: "
            "run with build_features on to load it"
        )
    return {"dataset": dataset, "load_id": live[0], "data_version": live[1], "features_run_folder": str(folder)}


def use_built_features(settings: MySQLSettings, announced: dict, run: RunContext) -> dict:
    """Train on features another run built (``announced``): check the warehouse still holds that load,
    and bring its Data Docs and dbt docs into this run's release."""
    live = loader.live_load(settings)
    wanted = (announced["load_id"], announced["data_version"])
    if live != wanted:
        raise warehouse.LoadError(
            f"the features asset announced load {wanted[0]} (data version {wanted[1][:12]}), but "
            f"{settings.raw_database}.load_audit says the warehouse now holds "
            f"{'nothing' if live is None else f'load {live[0]} (data version {live[1][:12]})'}: "
            "a later load replaced it, and its own asset event triggers its own training run"
        )
    source = checked_run_folder(settings, wanted)
    if str(source) != str(announced.get("features_run_folder", source)):
        log.warning(
            "the features asset's event names run folder %s; using %s, which the warehouse recorded for load %s",
            announced.get("features_run_folder"),
            source,
            wanted[0],
        )
    folder = run.artifacts.folder
    copied = []
    if source.resolve() != folder.resolve():  # a rerun of the building run has them already
        for name in RunArtifacts.FEATURE_OUTPUTS:
            if _copy(source / name, folder / name):
                copied.append(name)
    log.info(
        "training on load %s of %s (built by the features run in %s); brought along: %s",
        announced["load_id"],
        announced["dataset"],
        source,
        ", ".join(copied) or "nothing (folder not found)",
    )
    return {
        "dataset": announced["dataset"],
        "load_id": announced["load_id"],
        "data_version": announced["data_version"],
        "features_from": str(source),
    }


def checked_run_folder(settings: MySQLSettings, load: tuple[str, str]) -> Path:
    """The run folder the features gate recorded for ``load`` (load id, data version).

    A training run copies the build's Data Docs and dbt docs from there into its release,
    never from a path an asset event carries: anyone who can post an event could name any
    folder on the worker. A load the gate never passed has no folder: LoadError.
    """
    folder = _recorded_run_folder(settings, load)
    if folder is None:
        raise warehouse.LoadError(
            f"load {load[0]} has no feature build that passed the features gate "
            f"({settings.raw_database}.{CHECKED_BUILDS_TABLE}): run with build_features on"
        )
    return folder


def _recorded_run_folder(settings: MySQLSettings, load: tuple[str, str]) -> Path | None:
    db = warehouse.quote_identifier(settings.raw_database)
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        if not warehouse.table_exists(conn, settings.raw_database, CHECKED_BUILDS_TABLE):
            return None
        row = warehouse.query_one(
            conn,
            f"SELECT run_folder FROM {db}.`{CHECKED_BUILDS_TABLE}` WHERE load_id = %s AND data_version = %s",
            tuple(load),
        )
    return None if row is None else Path(row[0])


def _copy(source: Path, target: Path) -> bool:
    if not source.exists():
        return False
    if target.is_dir():
        shutil.rmtree(target)
    if source.is_dir():
        shutil.copytree(source, target)
    elif source.is_file():
        shutil.copy2(source, target)
    else:
        return False
    return True
