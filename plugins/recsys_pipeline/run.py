"""A DAG run's identity and its folder: what every stage needs to find its inputs and leave its outputs.

Stages hand each other work through files in one folder per run and dataset, so a
task can be retried, a stage can be run on its own (tests, benchmarks, the CLI), and a
release can be assembled from what the run left behind. ``RunContext`` is computed in
one place from what Airflow knows about the run (its logical date or run id, and the
dataset); ``RunArtifacts`` is the only place that names a file in that folder.

The release id comes from the run's logical date, so re-running a DAG run rewrites the
same folder and the same release, never a second copy.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.ingest.inputs import dataset_key
from recsys_pipeline.settings import work_dir

__all__ = ["RELEASE_ID_MAX_LENGTH", "RunArtifacts", "RunContext", "dataset_key", "release_id_for"]

LOAD_ID_MAX_LENGTH = 64  # raw_database.load_audit.load_id
# the model version is "two_tower-<release id>-<10-hex digest>" in recommendations.model_version, VARCHAR(128)
RELEASE_ID_MAX_LENGTH = 100


def release_id_for(logical_date: datetime | None, run_id: str) -> str:
    """A key-safe release id: the run's logical date, or its run id when it has none.

    Re-running a DAG run (clearing its tasks, or ``airflow dags test`` for the same
    logical date) gives the same id, so it rewrites the same release.
    """
    if logical_date is not None:
        return logical_date.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return re.sub(r"[^A-Za-z0-9_]+", "-", run_id).strip("-")


class RunArtifacts:
    """Every file a run leaves in its folder, by name; nothing else spells these names.

    Paths are relative to the run folder, and the same relative paths are the object
    keys inside a published release (below its prefix).
    """

    RUN = "run.json"  # the RunContext that made the folder (for readers that find a folder, not a run)
    # written by the feature build (and carried by a training run that reuses it)
    QUALITY_RAW = "quality_raw.json"
    QUALITY_FEATURES = "quality.json"
    DATA_DOCS = "data_docs"
    DBT_DOCS = "dbt_docs"
    # the training run's snapshots of the warehouse (working copies, never released)
    SPLIT = "split.parquet"
    TIME_SPLIT = "time_split.parquet"  # the backtest's global time cut
    INTERACTION_DAYS = "interaction_days.parquet"  # one row per (user, item, day): how often, how recently
    ITEM_ATTRIBUTES = "item_attributes.parquet"
    USER_SEGMENTS = "user_segments.parquet"  # each shopper's country: personal data, never released
    # the model
    MODEL_DIR = "two_tower"
    TRAINING = f"{MODEL_DIR}/training.json"
    EMBEDDINGS = f"{MODEL_DIR}/embeddings.npz"
    SAVED_MODEL = f"{MODEL_DIR}/saved_model"
    CANDIDATE_LISTS = f"{MODEL_DIR}/candidate_lists.npz"  # the candidate ranking's lists for every shopper
    RANKER = f"{MODEL_DIR}/ranking_mlp.keras"  # the ranking stage's MLP, beside the SavedModel that may carry it
    # evaluation, decision and release
    METRICS = "metrics.json"
    DECISION = "decision.json"
    REPORT = "report.html"
    MODEL_CARD = "model_card.md"
    RECOMMENDATIONS = "recommendations.parquet"
    PUBLISHED = "published.json"
    MANIFEST = "manifest.json"  # in the release only

    # the feature build's outputs a training run brings into its own release
    FEATURE_OUTPUTS = (DATA_DOCS, DBT_DOCS, QUALITY_RAW, QUALITY_FEATURES)
    # working copies that never become part of a release (the SavedModel itself holds what serving
    # needs per shopper -- embedding, items, recent history, segment -- so a release is personal data either way)
    RUN_ONLY = (
        RUN,
        EMBEDDINGS,
        CANDIDATE_LISTS,
        PUBLISHED,
        SPLIT,
        ITEM_ATTRIBUTES,
        TIME_SPLIT,
        INTERACTION_DAYS,
        USER_SEGMENTS,
    )

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / name

    def data_docs(self, gate: str) -> Path:
        """One gate's Data Docs site (``raw`` or ``features``)."""
        return self.folder / self.DATA_DOCS / gate

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def read_json(self, name: str) -> dict:
        return json.loads(self.path(name).read_text())

    def read_json_if_exists(self, name: str) -> dict | None:
        return self.read_json(name) if self.exists(name) else None

    def write_json(self, name: str, payload: dict) -> Path:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        return path

    def release_files(self) -> list[Path]:
        """The files a release of this run uploads: everything but the run-only working copies."""
        run_only = {self.path(name) for name in self.RUN_ONLY}
        return sorted(p for p in self.folder.rglob("*") if p.is_file() and p not in run_only)


@dataclass(frozen=True)
class RunContext:
    """Who a task works for: the dataset (name or folder, as given) and the run's release id.

    ``work_root`` is where run folders live (``RECSYS_WORK_DIR`` unless given: tests and
    benchmarks give their own).
    """

    dataset: str
    release_id: str
    work_root: Path | None = None

    def __post_init__(self):
        """Names too long for the tables and keys they end up in are refused before anything is written."""
        dataset_key(self.dataset)  # raises ContractError for a name too long or without a key
        if not self.release_id or len(self.release_id) > RELEASE_ID_MAX_LENGTH:
            raise ContractError(
                f"run id {self.release_id!r} gives a release id of {len(self.release_id)} characters; it must have "
                f"1 to {RELEASE_ID_MAX_LENGTH} (the model version two_tower-<release id>-<digest> is VARCHAR(128)): "
                "trigger the run with a shorter run id"
            )

    @classmethod
    def for_run(cls, dataset: str, logical_date: datetime | None, run_id: str) -> RunContext:
        return cls(dataset, release_id_for(logical_date, run_id))

    @classmethod
    def from_folder(cls, folder: Path, dataset: str | None = None) -> RunContext:
        """The run that made ``folder``: its ``run.json``, or, for a folder without one (made before
        runs recorded it), ``dataset`` and the folder's own name."""
        folder = Path(folder).resolve()
        recorded = RunArtifacts(folder).read_json_if_exists(RunArtifacts.RUN)
        if recorded is None:
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} is not a run folder")
            recorded = {"dataset": dataset or folder.parent.name, "release_id": folder.name}
        run = cls(recorded["dataset"], recorded["release_id"], folder.parent.parent)
        if run.folder != folder:
            raise ValueError(f"{folder} is not where run {run.release_id} of {run.dataset_key} lives ({run.folder})")
        return run

    @property
    def dataset_key(self) -> str:
        return dataset_key(self.dataset)

    @property
    def load_id(self) -> str:
        """One load per dataset and run: a rerun replaces its own audit row, never another dataset's.

        A release id too long for ``load_audit.load_id`` keeps its start and a digest of the
        whole, so two runs never share a load id (which would skip the volume and drift gates).
        """
        load_id = f"{self.dataset_key}:{self.release_id}"
        if len(load_id) <= LOAD_ID_MAX_LENGTH:
            return load_id
        digest = hashlib.sha256(self.release_id.encode()).hexdigest()[:10]
        head = LOAD_ID_MAX_LENGTH - len(self.dataset_key) - 2 - len(digest)
        return f"{self.dataset_key}:{self.release_id[:head]}~{digest}"

    @property
    def folder(self) -> Path:
        return (self.work_root or work_dir()) / self.dataset_key / self.release_id

    @property
    def artifacts(self) -> RunArtifacts:
        """The run's files; the folder (and its ``run.json``) is created on first use."""
        return self.prepare()

    def prepare(self) -> RunArtifacts:
        """Create the run's folder with its ``run.json`` (once); its files."""
        artifacts = RunArtifacts(self.folder)
        if not artifacts.exists(RunArtifacts.RUN):
            artifacts.write_json(RunArtifacts.RUN, {"dataset": self.dataset, "release_id": self.release_id})
        return artifacts

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "dataset_key": self.dataset_key,
            "release_id": self.release_id,
            "load_id": self.load_id,
            "folder": str(self.folder),
        }
