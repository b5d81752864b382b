"""The champion pointer and its history: which release readers are sent to, and since when.

Readers go pointer -> manifest -> objects, so moving the pointer is what promotes or
rolls back. Every move is a compare-and-swap: the writer reads the pointer and its ETag
first, and the new pointer is written only if the stored one still has that ETag --
checked under the writer lock (``writer_lock``) and again by the server itself
(``If-Match``, or ``If-None-Match: *`` for a dataset's first champion), so a writer that
does not take the lock (another deployment, an older version, a lost lock connection)
is refused too. A writer that lost says which release moved the pointer and leaves it.

The history is one object per event under ``history/``, written only where nothing is,
so concurrent writers never lose each other's lines; buckets from before keep their
``champion_history.jsonl``, which is still read first.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.release.verify import check_complete
from recsys_pipeline.release.writer_lock import HeldLock
from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)


class ChampionMoved(layout.ReleaseError):
    """The pointer changed since this writer read it; this writer left it as the other one set it."""


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


def read_champion_tagged(s3, s3_settings: S3Settings, dataset_key: str) -> tuple[dict | None, str | None]:
    """The pointer and its ETag: what a writer reads first and compares when it writes."""
    return storage.get_json_tagged(s3, s3_settings.bucket, layout.champion_key(s3_settings, dataset_key))


def write_champion(
    s3,
    s3_settings: S3Settings,
    dataset_key: str,
    pointer: dict,
    read: tuple[dict | None, str | None],
    lock: HeldLock,
    purpose: str,
) -> storage.StoredObject:
    """Write ``pointer`` only if the stored one is still the one ``read`` (pointer, ETag) saw."""
    bucket, key = s3_settings.bucket, layout.champion_key(s3_settings, dataset_key)
    before, tag = read
    lock.check()
    # checked here under the lock as well, for servers that ignore If-Match (older MinIO): among lock
    # holders this alone is a correct compare-and-swap; the server's condition guards against the rest
    if storage.etag(s3, bucket, key) != tag:
        raise _moved(s3, s3_settings, dataset_key, before, purpose)
    try:
        return storage.put_json(s3, bucket, key, pointer, if_match=tag, if_absent=tag is None)
    except storage.PreconditionFailed as error:
        raise _moved(s3, s3_settings, dataset_key, before, purpose) from error


def _moved(s3, s3_settings: S3Settings, dataset_key: str, before: dict | None, purpose: str) -> ChampionMoved:
    now = read_champion(s3, s3_settings, dataset_key)
    history = read_history(s3, s3_settings, dataset_key)
    last = (
        f"; last event: {history[-1]['event']} to {history[-1]['release_id']} at {history[-1]['at']}" if history else ""
    )
    return ChampionMoved(
        f"{purpose} refused: the champion of {dataset_key} moved from "
        f"{before['release_id'] if before else 'none'} to {now['release_id'] if now else 'none'} since this writer "
        f"read it{last}; the pointer was left as the other writer set it"
    )


def move_champion(s3_settings: S3Settings, dataset_key: str, release_id: str, lock: HeldLock) -> dict:
    """Point the champion at ``release_id`` after checking it is complete and was promoted when it ran.

    The caller holds ``lock`` (the dataset's champion lock). A release that is already the
    champion stays so, untouched: a retried rollback only reloads MySQL.
    """
    s3 = storage.client(s3_settings)
    read = read_champion_tagged(s3, s3_settings, dataset_key)
    current = read[0]
    manifest, manifest_object = check_complete(s3, s3_settings, dataset_key, release_id)
    if not manifest.get("gate", {}).get("promote"):
        raise layout.ReleaseError(
            f"release {release_id} of {dataset_key} was not promoted by the gate when it ran; "
            "only a former champion can be rolled back to"
        )
    if current and current["release_id"] == release_id and current["manifest_sha256"] == manifest_object.sha256:
        log.info("champion of %s is already %s: the pointer stays", dataset_key, release_id)
        return current
    now = datetime.now(UTC).isoformat(timespec="seconds")
    pointer = champion_pointer(
        manifest,
        manifest_object,
        now,
        rolled_back_from=current.get("release_id") if current else None,
        rolled_back_at=now,
    )
    write_champion(s3, s3_settings, dataset_key, pointer, read, lock, f"rollback of {dataset_key} to {release_id}")
    record_history(
        s3,
        s3_settings,
        dataset_key,
        {"event": "rollback", "release_id": release_id, "from": pointer["rolled_back_from"], "at": now},
    )
    log.info("champion of %s: %s -> %s", dataset_key, pointer["rolled_back_from"], release_id)
    return pointer


def record_history(s3, s3_settings: S3Settings, dataset_key: str, entry: dict) -> storage.StoredObject:
    """Add ``entry`` to the dataset's champion history: an object of its own, never a rewrite."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")  # keys sort in time order
    name = f"{stamp}-{entry['event']}-{entry['release_id']}-{uuid.uuid4().hex[:12]}.json"
    key = layout.history_prefix(s3_settings, dataset_key) + name
    return storage.put_json(s3, s3_settings.bucket, key, entry, if_absent=True)


def read_history(s3, s3_settings: S3Settings, dataset_key: str) -> list[dict]:
    """Every promotion and rollback of the dataset, oldest first (empty when there is none)."""
    bucket = s3_settings.bucket
    try:
        body = s3.get_object(Bucket=bucket, Key=layout.history_key(s3_settings, dataset_key))["Body"]
        legacy = [json.loads(line) for line in body.read().decode().splitlines() if line.strip()]
    except storage.ClientError:
        legacy = []
    keys = sorted(storage.list_keys(s3, bucket, layout.history_prefix(s3_settings, dataset_key)))
    return legacy + [entry for entry in (storage.get_json(s3, bucket, key) for key in keys) if entry is not None]
