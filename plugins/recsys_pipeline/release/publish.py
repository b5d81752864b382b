"""Publish a run's release to object storage: every object, verified, then its manifest, then the pointer.

Readers go pointer -> manifest -> objects, and the pointer is written last, so nobody
is ever sent to a release that is not complete and verified.

A release is immutable once its manifest is written: nothing a complete manifest lists
is ever overwritten or deleted. A rerun of the same release id (a retried task, a
cleared DAG run) first compares its files with that manifest: byte-identical (every
sha256) means the release is already there and nothing is uploaded again; any
difference (a retrained model is never bit-identical) goes to the next attempt,
``releases/<release id>-attempt<n>/``, which gets its own manifest. A prefix without a
manifest holds only what a crashed attempt left, which no reader is sent to, so it is
written over.

The whole publish holds the dataset's writer lock (``writer_lock``), and the pointer is
moved by compare-and-swap against the ETag read when publishing began (``champion``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

from ml.names import CHALLENGER
from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.release.champion import champion_pointer, read_champion_tagged, record_history, write_champion
from recsys_pipeline.release.verify import check_complete
from recsys_pipeline.release.writer_lock import HeldLock, champion_lock
from recsys_pipeline.reporting.model_card import write_model_card
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import MySQLSettings, S3Settings, mysql_settings

log = logging.getLogger(__name__)


def publish(s3_settings: S3Settings, run: RunContext, data_version: str, mysql: MySQLSettings | None = None) -> dict:
    """Upload the run's release (and, if the gate promoted it, point the champion at it).

    ``mysql`` is the warehouse whose named lock serialises the writers (default: the
    pipeline's settings from the environment).
    """
    artifacts = run.artifacts
    s3 = storage.client(s3_settings)
    storage.ensure_bucket(s3, s3_settings.bucket)
    training = artifacts.read_json(RunArtifacts.TRAINING)
    release_id = training["release_id"]
    decision = artifacts.read_json(RunArtifacts.DECISION)
    write_model_card(artifacts, run.dataset_key, data_version, release_id)
    local = {
        path.relative_to(artifacts.folder).as_posix(): (path, path.stat().st_size, storage.sha256_file(path))
        for path in artifacts.release_files()
    }
    purpose = f"publish of {run.dataset_key} release {release_id}"
    with champion_lock(mysql or mysql_settings(), s3_settings, run.dataset_key, purpose) as lock:
        read = read_champion_tagged(s3, s3_settings, run.dataset_key)  # the ETag the pointer is compared with
        manifest, manifest_object, reused = _write_release(
            s3, s3_settings, run, training, decision, data_version, local, lock
        )
        published_id = manifest["release_id"]
        pointer = (
            _promote(s3, s3_settings, run.dataset_key, manifest, manifest_object, read, lock)
            if decision["promote"]
            else None
        )
    prefix = layout.release_prefix(s3_settings, run.dataset_key, published_id)
    artifacts.write_json(
        RunArtifacts.PUBLISHED, {"release_id": published_id, "prefix": prefix, "manifest": manifest_object.key}
    )
    return {
        "bucket": s3_settings.bucket,
        "release_id": published_id,
        "run_release_id": release_id,
        "attempt": manifest.get("attempt", 1),
        "reused": reused,
        "release_prefix": prefix,
        "manifest": manifest_object.key,
        "objects": len(manifest["objects"]) + 1,
        "champion_pointer": layout.champion_key(s3_settings, run.dataset_key) if pointer else None,
    }


def _write_release(
    s3,
    s3_settings: S3Settings,
    run: RunContext,
    training: dict,
    decision: dict,
    data_version: str,
    local: dict[str, tuple[Path, int, str]],
    lock: HeldLock,
) -> tuple[dict, storage.StoredObject, bool]:
    """(manifest, its stored object, whether an identical complete release was already there)."""
    bucket, release_id = s3_settings.bucket, training["release_id"]
    wanted = {relative: (size, checksum) for relative, (_, size, checksum) in local.items()}
    for attempt in count(1):
        candidate = layout.attempt_id(release_id, attempt)
        prefix = layout.release_prefix(s3_settings, run.dataset_key, candidate)
        existing = storage.get_json(s3, bucket, layout.manifest_key(s3_settings, run.dataset_key, candidate))
        if existing is None:
            break
        stored = {o["key"][len(prefix) :]: (o["size"], o["sha256"]) for o in existing["objects"]}
        if stored == wanted:
            manifest, manifest_object = check_complete(s3, s3_settings, run.dataset_key, candidate)
            log.info("release %s is already published with these exact bytes: nothing rewritten", candidate)
            return manifest, manifest_object, True
        log.info("release %s is published with other bytes and stays as it is; trying the next attempt", candidate)
    objects = [storage.upload_file(s3, bucket, prefix + relative, path) for relative, (path, _, _) in local.items()]
    for obj in objects:
        size, checksum = storage.download_sha256(s3, bucket, obj.key)
        if (size, checksum) != (obj.size, obj.sha256):
            raise RuntimeError(f"object {obj.key} does not match what was uploaded (size {size} vs {obj.size})")
    metrics = run.artifacts.read_json(RunArtifacts.METRICS)
    manifest = {
        "release_id": candidate,
        "run_release_id": release_id,
        "attempt": attempt,
        "dataset": run.dataset_key,
        "model_version": training["model_version"],
        "data_version": data_version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gate": decision,
        "metrics": metrics["models"][CHALLENGER],
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
    }
    lock.check()  # nobody else may have started on this attempt while the upload ran
    manifest_key = layout.manifest_key(s3_settings, run.dataset_key, candidate)
    try:
        manifest_object = storage.put_json(s3, bucket, manifest_key, manifest, if_absent=True)
    except storage.PreconditionFailed as error:
        raise layout.ReleaseError(
            f"release {candidate} of {run.dataset_key} got a complete manifest from another writer while this one "
            "uploaded; it was left as it is (a retry compares against it)"
        ) from error
    return manifest, manifest_object, False


def _promote(
    s3,
    s3_settings: S3Settings,
    dataset_key: str,
    manifest: dict,
    manifest_object: storage.StoredObject,
    read: tuple[dict | None, str | None],
    lock: HeldLock,
) -> dict:
    """Move the pointer to the release, unless it already names exactly this manifest."""
    before = read[0]
    if (
        before
        and before["release_id"] == manifest["release_id"]
        and before["manifest_sha256"] == manifest_object.sha256
    ):
        log.info("release %s is already the champion of %s", manifest["release_id"], dataset_key)
        return before
    now = datetime.now(UTC).isoformat(timespec="seconds")
    pointer = champion_pointer(manifest, manifest_object, now)
    write_champion(s3, s3_settings, dataset_key, pointer, read, lock, f"promotion of {manifest['release_id']}")
    record_history(
        s3,
        s3_settings,
        dataset_key,
        {
            "event": "promote",
            "release_id": manifest["release_id"],
            "from": before.get("release_id") if before else None,
            "at": now,
        },
    )
    return pointer
