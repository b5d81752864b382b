"""Publish a run's release to object storage: every object, verified, then its manifest, then the pointer.

Readers go pointer -> manifest -> objects, and the pointer is written last, so nobody
is ever sent to a release that is not complete and verified.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ml.names import CHALLENGER
from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.release.champion import champion_pointer, read_champion, record_history
from recsys_pipeline.reporting.model_card import write_model_card
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import S3Settings


def publish(s3_settings: S3Settings, run: RunContext, data_version: str) -> dict:
    """Upload the run's release (and, if the gate promoted it, point the champion at it)."""
    artifacts = run.artifacts
    s3 = storage.client(s3_settings)
    bucket = s3_settings.bucket
    storage.ensure_bucket(s3, bucket)
    training = artifacts.read_json(RunArtifacts.TRAINING)
    release_id = training["release_id"]
    prefix = layout.release_prefix(s3_settings, run.dataset_key, release_id)
    decision = artifacts.read_json(RunArtifacts.DECISION)
    champion = read_champion(s3, s3_settings, run.dataset_key)
    if champion and champion["release_id"] == release_id and not decision["promote"]:
        raise RuntimeError(
            f"release {release_id} is the current champion and this attempt was not promoted: refusing to rewrite it"
        )
    write_model_card(artifacts, run.dataset_key, data_version, release_id)
    objects = [
        storage.upload_file(s3, bucket, prefix + path.relative_to(artifacts.folder).as_posix(), path)
        for path in artifacts.release_files()
    ]
    manifest_key = layout.manifest_key(s3_settings, run.dataset_key, release_id)
    wanted = {o.key for o in objects} | {manifest_key}
    for stale in set(storage.list_keys(s3, bucket, prefix)) - wanted:  # left by an earlier attempt of this run
        s3.delete_object(Bucket=bucket, Key=stale)
    for obj in objects:
        size, checksum = storage.download_sha256(s3, bucket, obj.key)
        if (size, checksum) != (obj.size, obj.sha256):
            raise RuntimeError(f"object {obj.key} does not match what was uploaded (size {size} vs {obj.size})")
    metrics = artifacts.read_json(RunArtifacts.METRICS)
    manifest = {
        "release_id": release_id,
        "dataset": run.dataset_key,
        "model_version": training["model_version"],
        "data_version": data_version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gate": decision,
        "metrics": metrics["models"][CHALLENGER],
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
    }
    manifest_object = storage.put_json(s3, bucket, manifest_key, manifest)
    pointer = None
    if decision["promote"]:
        pointer = champion_pointer(manifest, manifest_object, manifest["created_at"])
        storage.put_json(s3, bucket, layout.champion_key(s3_settings, run.dataset_key), pointer)
        record_history(
            s3,
            s3_settings,
            run.dataset_key,
            {
                "event": "promote",
                "release_id": release_id,
                "from": champion.get("release_id") if champion else None,
                "at": manifest["created_at"],
            },
        )
    artifacts.write_json(
        RunArtifacts.PUBLISHED, {"release_id": release_id, "prefix": prefix, "manifest": manifest_object.key}
    )
    return {
        "bucket": bucket,
        "release_id": release_id,
        "release_prefix": prefix,
        "manifest": manifest_object.key,
        "objects": len(objects) + 1,
        "champion_pointer": layout.champion_key(s3_settings, run.dataset_key) if pointer else None,
    }
