"""The champion pointer and its history: which release readers are sent to, and since when.

Readers go pointer -> manifest -> objects, so moving the pointer is what promotes or
rolls back; the history keeps each move (one JSON object per line).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.release.verify import check_complete
from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)


def champion_pointer(manifest: dict, manifest_object: storage.StoredObject, promoted_at: str, **extra) -> dict:
    """The small JSON readers follow to the champion's manifest."""
    return {
        "release_id": manifest["release_id"],
        "manifest": manifest_object.key,
        "manifest_sha256": manifest_object.sha256,
        "model_version": manifest["model_version"],
        "data_version": manifest["data_version"],
        "metrics": manifest["metrics"],
        "promoted_at": promoted_at,
    } | extra


def read_champion(s3, s3_settings: S3Settings, dataset_key: str) -> dict | None:
    return storage.get_json(s3, s3_settings.bucket, layout.champion_key(s3_settings, dataset_key))


def move_champion(s3_settings: S3Settings, dataset_key: str, release_id: str) -> dict:
    """Point the champion at ``release_id`` after checking it is complete and was promoted when it ran."""
    s3 = storage.client(s3_settings)
    manifest, manifest_object = check_complete(s3, s3_settings, dataset_key, release_id)
    if not manifest.get("gate", {}).get("promote"):
        raise layout.ReleaseError(
            f"release {release_id} of {dataset_key} was not promoted by the gate when it ran; "
            "only a former champion can be rolled back to"
        )
    current = read_champion(s3, s3_settings, dataset_key)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    pointer = champion_pointer(
        manifest,
        manifest_object,
        now,
        rolled_back_from=current.get("release_id") if current else None,
        rolled_back_at=now,
    )
    storage.put_json(s3, s3_settings.bucket, layout.champion_key(s3_settings, dataset_key), pointer)
    record_history(
        s3,
        s3_settings,
        dataset_key,
        {"event": "rollback", "release_id": release_id, "from": pointer["rolled_back_from"], "at": now},
    )
    log.info("champion of %s: %s -> %s", dataset_key, pointer["rolled_back_from"], release_id)
    return pointer


def record_history(s3, s3_settings: S3Settings, dataset_key: str, entry: dict) -> None:
    """Append ``entry`` to the dataset's champion history (one JSON object per line)."""
    key = layout.history_key(s3_settings, dataset_key)
    try:
        body = s3.get_object(Bucket=s3_settings.bucket, Key=key)["Body"].read().decode()
    except storage.ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        body = ""
    s3.put_object(
        Bucket=s3_settings.bucket,
        Key=key,
        Body=(body + json.dumps(entry, sort_keys=True) + "\n").encode(),
        ContentType="application/x-ndjson",
    )


def read_history(s3, s3_settings: S3Settings, dataset_key: str) -> list[dict]:
    """Every promotion and rollback of the dataset, oldest first (empty when there is none)."""
    try:
        body = s3.get_object(Bucket=s3_settings.bucket, Key=layout.history_key(s3_settings, dataset_key))["Body"]
    except storage.ClientError:
        return []
    return [json.loads(line) for line in body.read().decode().splitlines() if line.strip()]
