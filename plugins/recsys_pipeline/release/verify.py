"""Is a release whole, and does its model answer as its tables say?

A release is complete when its manifest exists and every object it lists is in the
bucket with the recorded size and sha256. ``verify`` goes further: it downloads the
champion (or a named release), loads the SavedModel and compares its answer for a
shopper with the published recommendations of the same shopper, and asks it about an
unknown shopper and a newcomer with recent items.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from recsys_pipeline import storage
from recsys_pipeline.release.layout import ReleaseError, champion_key, manifest_key, release_prefix, releases_prefix
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.settings import S3Settings


def list_releases(s3, s3_settings: S3Settings, dataset_key: str) -> list[str]:
    prefix = releases_prefix(s3_settings, dataset_key)
    return sorted({key[len(prefix) :].split("/")[0] for key in storage.list_keys(s3, s3_settings.bucket, prefix)})


def check_complete(s3, s3_settings: S3Settings, dataset_key: str, release_id: str) -> tuple[dict, storage.StoredObject]:
    """The release's manifest (and its own stored object) after checking every object it lists."""
    bucket = s3_settings.bucket
    key = manifest_key(s3_settings, dataset_key, release_id)
    manifest = storage.get_json(s3, bucket, key)
    if manifest is None:
        known = ", ".join(list_releases(s3, s3_settings, dataset_key)[-5:]) or "none"
        raise ReleaseError(
            f"release {release_id} of {dataset_key} has no manifest at s3://{bucket}/{key} "
            f"(incomplete or unknown; latest releases: {known})"
        )
    problems = []
    for obj in manifest["objects"]:
        try:
            size, checksum = storage.download_sha256(s3, bucket, obj["key"])
        except storage.ClientError as error:
            problems.append(f"{obj['key']}: {error.response.get('Error', {}).get('Code', error)}")
            continue
        if (size, checksum) != (obj["size"], obj["sha256"]):
            problems.append(
                f"{obj['key']}: size {size} sha256 {checksum[:12]} (manifest: {obj['size']}, {obj['sha256'][:12]})"
            )
    if problems:
        raise ReleaseError(f"release {release_id} of {dataset_key} is not complete: " + "; ".join(problems[:10]))
    size, checksum = storage.download_sha256(s3, bucket, key)
    return manifest, storage.StoredObject(key=key, size=size, sha256=checksum)


def download_release(s3, s3_settings: S3Settings, manifest: dict, target: Path, under: str = "") -> Path:
    """Download the release's objects (those below ``under``) into ``target``, keeping their layout."""
    prefix = release_prefix(s3_settings, manifest["dataset"], manifest["release_id"])
    for obj in manifest["objects"]:
        relative = obj["key"][len(prefix) :]
        if relative.startswith(under):
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(s3_settings.bucket, obj["key"], str(path))
    return target / under


def verify(
    s3_settings: S3Settings, dataset_key: str, release_id: str | None = None, user_id: str | None = None, k: int = 10
) -> dict:
    """Check the champion (or ``release_id``) end to end and recommend for a user with its SavedModel.

    Compares the SavedModel's answer with the published recommendations of the same
    user, and asks it about an unknown user (who must get the popularity fallback).
    """
    import pandas as pd
    import tensorflow as tf

    from ml.serving import load_saved_model

    s3 = storage.client(s3_settings)
    if release_id is None:
        pointer = storage.get_json(s3, s3_settings.bucket, champion_key(s3_settings, dataset_key))
        if pointer is None:
            raise ReleaseError(
                f"{dataset_key} has no champion yet "
                f"(no s3://{s3_settings.bucket}/{champion_key(s3_settings, dataset_key)})"
            )
        release_id = pointer["release_id"]
        size, checksum = storage.download_sha256(s3, s3_settings.bucket, pointer["manifest"])
        if checksum != pointer["manifest_sha256"]:
            raise ReleaseError(f"the champion's manifest {pointer['manifest']} changed since it was promoted")
    manifest, _ = check_complete(s3, s3_settings, dataset_key, release_id)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = download_release(s3, s3_settings, manifest, Path(tmp), RunArtifacts.SAVED_MODEL + "/")
        recommendations_dir = download_release(s3, s3_settings, manifest, Path(tmp), RunArtifacts.RECOMMENDATIONS)
        published = pd.read_parquet(recommendations_dir)
        model = load_saved_model(model_dir)
        user_id = user_id or str(published["user_id"].iloc[0])
        answer = model.recommend(user_id=tf.constant([user_id]), k=tf.constant(k, tf.int32))
        items = [i.decode() for i in answer["item_ids"].numpy()[0]]
        scores = [float(s) for s in answer["scores"].numpy()[0]]
        stranger = model.recommend(user_id=tf.constant(["__nobody__"]), k=tf.constant(k, tf.int32))
        fallback = [i.decode() for i in stranger["item_ids"].numpy()[0]]
        in_context = None
        if hasattr(model, "recommend_in_context"):  # releases before the context signature lack it
            recent = items[:3]  # a new shopper who just bought what this user is recommended
            answer = model.recommend_in_context(
                user_id=tf.constant(["__newcomer__"]),
                k=tf.constant(k, tf.int32),
                recent_item_ids=tf.constant([recent]),
                segment=tf.constant([""]),
            )
            in_context = {"recent_items": recent, "items": [i.decode() for i in answer["item_ids"].numpy()[0]]}
    expected = published[published["user_id"] == user_id].sort_values("rank")["item_id"].head(k).tolist()
    if not items or not fallback:
        raise ReleaseError(f"the SavedModel of release {release_id} returned no recommendations")
    return {
        "release_id": release_id,
        "objects": len(manifest["objects"]),
        "bytes": sum(o["size"] for o in manifest["objects"]),
        "user_id": user_id,
        "items": items,
        "scores": scores,
        "matches_published": items == expected,
        "published_items": expected,
        "unknown_user_items": fallback,
        "new_shopper_in_context": in_context,
    }
