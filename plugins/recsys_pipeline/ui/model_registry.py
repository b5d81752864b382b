"""What the bucket says about the models: per dataset, its champion, its releases and their history.

Read-only, straight from object storage (the releases are the source of truth, not
Airflow's metadata), for the model page in the Airflow UI and anything else that
wants the same view. Only complete releases (those with a manifest) are listed;
a release still being written, or one whose upload failed, has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from recsys_pipeline import releases, storage
from recsys_pipeline.settings import S3Settings

# the metrics a reader compares first (the gate's primary metric is among them)
KEY_METRICS = ("ndcg@20", "recall@20", "hit_rate@20", "map@20", "coverage@10")
CHALLENGER = "two_tower"


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
    backtest: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> model -> ndcg@20 (time-cut backtest)

    @property
    def best_baseline(self) -> tuple[str, float] | None:
        scores = {m: v.get("ndcg@20") for m, v in self.metrics.items() if m != CHALLENGER and v.get("ndcg@20") is not None}
        return max(scores.items(), key=lambda kv: kv[1]) if scores else None


@dataclass
class DatasetView:
    dataset: str
    champion: dict | None
    releases: list[ReleaseView]
    history: list[dict]
    total_releases: int


# label -> path inside a release; shown when the release holds that object
RELEASE_LINKS = {
    "report": "report.html",
    "model card": "model_card.md",
    "metrics": "metrics.json",
    "gate decision": "decision.json",
    "Data Docs (raw gate)": "data_docs/raw/index.html",
    "Data Docs (features gate)": "data_docs/features/index.html",
    "dbt docs": "dbt_docs/index.html",
}


def list_datasets(s3, s3_settings: S3Settings) -> list[str]:
    """Dataset keys that have a releases/ folder under the prefix."""
    paginator = s3.get_paginator("list_objects_v2")
    names = []
    for page in paginator.paginate(Bucket=s3_settings.bucket, Prefix=f"{s3_settings.prefix}/", Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            names.append(common["Prefix"][len(s3_settings.prefix) + 1 :].rstrip("/"))
    return sorted(names)


def read_history(s3, s3_settings: S3Settings, dataset: str) -> list[dict]:
    key = releases.dataset_prefix(s3_settings, dataset) + "champion_history.jsonl"
    try:
        body = s3.get_object(Bucket=s3_settings.bucket, Key=key)["Body"].read().decode()
    except storage.ClientError:
        return []
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def release_view(s3, s3_settings: S3Settings, dataset: str, release_id: str, champion_id: str | None) -> ReleaseView | None:
    manifest = storage.get_json(s3, s3_settings.bucket, releases.manifest_key(s3_settings, dataset, release_id))
    if manifest is None:
        return None
    prefix = releases.release_prefix(s3_settings, dataset, release_id)
    keys = {o["key"][len(prefix) :] for o in manifest.get("objects", [])}
    report = storage.get_json(s3, s3_settings.bucket, prefix + "metrics.json") if "metrics.json" in keys else None
    training = storage.get_json(s3, s3_settings.bucket, prefix + "two_tower/training.json") if "two_tower/training.json" in keys else None
    gate = manifest.get("gate", {})
    return ReleaseView(
        release_id=release_id,
        model_version=manifest.get("model_version", "?"),
        created_at=manifest.get("created_at", "?"),
        data_version=manifest.get("data_version", ""),
        promoted=bool(gate.get("promote")),
        reasons=list(gate.get("reasons", [])),
        metrics=(report or {}).get("models", {CHALLENGER: manifest.get("metrics", {})}),
        data_window=(report or {}).get("data_window", {}),
        links={label: path for label, path in RELEASE_LINKS.items() if path in keys},
        is_champion=release_id == champion_id,
        config=(training or {}).get("config", {}),
        ranking_stage=(training or {}).get("ranking_stage", {}),
        backtest={variant: {model: values.get("ndcg@20") for model, values in result.get("models", {}).items()}
                  for variant, result in ((report or {}).get("backtest") or {}).get("variants", {}).items()},
    )


def dataset_view(s3, s3_settings: S3Settings, dataset: str, limit: int = 20) -> DatasetView:
    """The champion, the ``limit`` newest complete releases (newest first) and the champion history."""
    champion = storage.get_json(s3, s3_settings.bucket, releases.champion_key(s3_settings, dataset))
    ids = releases.list_releases(s3, s3_settings, dataset)
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
