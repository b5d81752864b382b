"""What the bucket says about the models: per dataset, its champion, its releases and their history.

Read-only, straight from object storage (the releases are the source of truth, not
Airflow's metadata), for the model page in the Airflow UI and anything else that
wants the same view. Only complete releases (those with a manifest) are listed;
a release still being written, or one whose upload failed, has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ml.names import CHALLENGER, KEY_METRICS, NDCG_20
from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.release.champion import read_champion, read_history
from recsys_pipeline.release.verify import list_releases
from recsys_pipeline.reporting.summary import RunSummary
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.settings import S3Settings

__all__ = ["CHALLENGER", "KEY_METRICS", "DatasetView", "ReleaseView", "registry"]


@dataclass
class ReleaseView:
    release_id: str
    model_version: str
    created_at: str
    data_version: str
    promoted: bool
    reasons: list[str]
    metrics: dict[str, dict[str, float]]  # model -> metric -> value (challenger and baselines)
    data_window: dict[str, dict]  # split -> first/last interaction, counts
    links: dict[str, str]  # label -> object key inside the release
    is_champion: bool = False
    config: dict = field(default_factory=dict)
    ranking_stage: dict = field(default_factory=dict)  # training.json's ranking_stage: used or not, and why
    backtest: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # variant -> model -> ndcg@20 (time-cut backtest)

    best_baseline: tuple[str, float] | None = None  # on the primary metric


@dataclass
class DatasetView:
    dataset: str
    champion: dict | None
    releases: list[ReleaseView]
    history: list[dict]
    total_releases: int


# label -> path inside a release; shown when the release holds that object
RELEASE_LINKS = {
    "report": RunArtifacts.REPORT,
    "model card": RunArtifacts.MODEL_CARD,
    "metrics": RunArtifacts.METRICS,
    "gate decision": RunArtifacts.DECISION,
    "Data Docs (raw gate)": f"{RunArtifacts.DATA_DOCS}/raw/index.html",
    "Data Docs (features gate)": f"{RunArtifacts.DATA_DOCS}/features/index.html",
    "dbt docs": f"{RunArtifacts.DBT_DOCS}/index.html",
}


def list_datasets(s3, s3_settings: S3Settings) -> list[str]:
    """Dataset keys that have a releases/ folder under the prefix."""
    paginator = s3.get_paginator("list_objects_v2")
    names = []
    for page in paginator.paginate(Bucket=s3_settings.bucket, Prefix=f"{s3_settings.prefix}/", Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            names.append(common["Prefix"][len(s3_settings.prefix) + 1 :].rstrip("/"))
    return sorted(names)


def release_view(
    s3, s3_settings: S3Settings, dataset: str, release_id: str, champion_id: str | None
) -> ReleaseView | None:
    manifest = storage.get_json(s3, s3_settings.bucket, layout.manifest_key(s3_settings, dataset, release_id))
    if manifest is None:
        return None
    prefix = layout.release_prefix(s3_settings, dataset, release_id)
    keys = {o["key"][len(prefix) :] for o in manifest.get("objects", [])}

    def read(name: str) -> dict | None:  # the run's records as the release carries them
        return storage.get_json(s3, s3_settings.bucket, prefix + name) if name in keys else None

    summary = RunSummary(
        training=read(RunArtifacts.TRAINING) or {},
        metrics=read(RunArtifacts.METRICS) or {},
        decision=manifest.get("gate", {}),
    )
    return ReleaseView(
        release_id=release_id,
        model_version=manifest.get("model_version", "?"),
        created_at=manifest.get("created_at", "?"),
        data_version=manifest.get("data_version", ""),
        promoted=bool(summary.promoted),
        reasons=summary.reasons,
        metrics=summary.models or {CHALLENGER: manifest.get("metrics", {})},
        data_window=summary.data_window,
        links={label: path for label, path in RELEASE_LINKS.items() if path in keys},
        is_champion=release_id == champion_id,
        config=summary.config,
        ranking_stage=summary.training.get("ranking_stage", {}),
        backtest=summary.backtest_scores(NDCG_20),
        best_baseline=summary.best_baseline(NDCG_20),
    )


def dataset_view(s3, s3_settings: S3Settings, dataset: str, limit: int = 20) -> DatasetView:
    """The champion, the ``limit`` newest complete releases (newest first) and the champion history."""
    champion = read_champion(s3, s3_settings, dataset)
    ids = list_releases(s3, s3_settings, dataset)
    views = []
    for release_id in sorted(ids, reverse=True):
        view = release_view(s3, s3_settings, dataset, release_id, champion["release_id"] if champion else None)
        if view is not None:
            views.append(view)
        if len(views) >= limit:
            break
    return DatasetView(dataset, champion, views, list(reversed(read_history(s3, s3_settings, dataset))), len(ids))


def registry(s3_settings: S3Settings, limit: int = 20) -> list[DatasetView]:
    s3 = storage.client(s3_settings)
    try:
        s3.head_bucket(Bucket=s3_settings.bucket)
    except storage.ClientError:
        return []
    return [dataset_view(s3, s3_settings, name, limit) for name in list_datasets(s3, s3_settings)]
