"""The champion as the service holds it: downloaded, checked object by object, loaded, warmed up.

A release is served only when every object the manifest lists matches its sha256 and the
manifest matches the pointer's checksum, so a half-uploaded or tampered release is never
answered from. Everything a request needs is built here once per release (the published
lists by shopper, item vectors for related items and reasons, each shopper's known items),
so answering is a dictionary lookup or one call of the SavedModel.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys_pipeline import storage
from recsys_pipeline.release.layout import ReleaseError, champion_key, release_prefix
from recsys_pipeline.release.verify import check_complete, download_release
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)


class NoChampion(ReleaseError):
    """The dataset has no complete champion the service could answer from."""


@dataclass(frozen=True)
class PointerState:
    """What ``champion.json`` said when it was read, and its ETag (what the watcher compares)."""

    etag: str
    release_id: str
    manifest_key: str
    manifest_sha256: str


@dataclass
class LoadedChampion:
    """One release, ready to answer; never changed once built (a new release is a new object)."""

    dataset_key: str
    release_id: str
    model_version: str
    pointer: PointerState
    folder: Path  # where its objects were downloaded
    model: object  # the restored SavedModel (``ml.serving.RecommenderModule``'s signatures)
    item_ids: np.ndarray  # [n_items] str
    item_index: dict[str, int]
    unit_item_vectors: np.ndarray  # [n_items, dim] float32, L2-normalised: related items and reasons
    popular_items: np.ndarray  # item indices, everyone's best-sellers first
    published: dict[str, tuple[np.ndarray, np.ndarray]]  # user -> (item indices by rank, scores)
    published_k: int
    known_items: dict[str, np.ndarray]  # user -> item indices the release knows they have
    answer_cache: dict = field(default_factory=dict)  # (user, k, segment) -> its published answer, built once
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0


def read_pointer(s3, s3_settings: S3Settings, dataset_key: str) -> PointerState | None:
    """The champion pointer with its ETag, or None when the dataset has none."""
    key = champion_key(s3_settings, dataset_key)
    try:
        response = s3.get_object(Bucket=s3_settings.bucket, Key=key)
    except storage.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    pointer = json.loads(response["Body"].read())
    return PointerState(
        etag=response["ETag"].strip('"'),
        release_id=pointer["release_id"],
        manifest_key=pointer["manifest"],
        manifest_sha256=pointer["manifest_sha256"],
    )


def pointer_etag(s3, s3_settings: S3Settings, dataset_key: str) -> str | None:
    """The pointer's ETag alone (a HEAD request): cheap enough to ask every few seconds."""
    try:
        head = s3.head_object(Bucket=s3_settings.bucket, Key=champion_key(s3_settings, dataset_key))
    except storage.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return head["ETag"].strip('"')


def load_champion(s3_settings: S3Settings, dataset_key: str, cache_dir: Path) -> LoadedChampion:
    """Download, check and load the dataset's current champion; refuse with the reason when there is none."""
    started = time.perf_counter()
    s3 = storage.client(s3_settings)
    pointer = read_pointer(s3, s3_settings, dataset_key)
    if pointer is None:
        raise NoChampion(
            f"{dataset_key} has no champion to serve (no s3://{s3_settings.bucket}/"
            f"{champion_key(s3_settings, dataset_key)}): no release was promoted yet. Run the training DAG "
            "(make demo); if its gate found no significant win over the best baseline (the summary and the "
            "report say why), make demo FORCE_PUBLISH=true promotes its release by hand"
        )
    _, manifest_checksum = storage.download_sha256(s3, s3_settings.bucket, pointer.manifest_key)
    if manifest_checksum != pointer.manifest_sha256:
        raise NoChampion(
            f"the champion's manifest {pointer.manifest_key} changed since it was promoted "
            f"(sha256 {manifest_checksum[:12]}, pointer: {pointer.manifest_sha256[:12]}): refusing to serve it"
        )
    try:
        manifest, _ = check_complete(s3, s3_settings, dataset_key, pointer.release_id)  # every object's sha256
    except ReleaseError as error:
        raise NoChampion(f"refusing to serve {dataset_key}'s champion: {error}") from error
    target = Path(cache_dir) / dataset_key / f"{pointer.release_id}-{pointer.etag[:12]}"
    if target.exists():
        shutil.rmtree(target)
    model_dir = download_release(s3, s3_settings, manifest, target, RunArtifacts.SAVED_MODEL + "/")
    recommendations = download_release(s3, s3_settings, manifest, target, RunArtifacts.RECOMMENDATIONS)
    _check_downloaded(manifest, target, s3_settings)
    champion = _build(dataset_key, pointer, target, model_dir, recommendations)
    champion.load_seconds = time.perf_counter() - started
    log.info(
        "loaded champion %s of %s (%d items, %d shoppers) in %.1f s",
        champion.release_id,
        dataset_key,
        len(champion.item_ids),
        len(champion.known_items),
        champion.load_seconds,
    )
    return champion


def _check_downloaded(manifest: dict, target: Path, s3_settings: S3Settings) -> None:
    """The files on disk are the bytes the manifest lists (the object could change between check and download)."""
    prefix = release_prefix(s3_settings, manifest["dataset"], manifest["release_id"])
    for obj in manifest["objects"]:
        path = target / obj["key"][len(prefix) :]
        if path.exists() and storage.sha256_file(path) != obj["sha256"]:
            raise NoChampion(f"{obj['key']} changed while it was downloaded (sha256 differs from the manifest)")


def _build(dataset_key: str, pointer: PointerState, folder: Path, model_dir: Path, recommendations: Path):
    import pandas as pd
    import tensorflow as tf

    from ml.serving import load_saved_model

    model = load_saved_model(model_dir)
    item_ids = np.array([i.decode() for i in model.item_ids.numpy()], dtype=object)
    item_index = {item: i for i, item in enumerate(item_ids)}
    vectors = model.item_embeddings.numpy().astype(np.float32)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    popularity = model.popularity.numpy()
    popular_items = np.argsort(-popularity[0], kind="stable")

    frame = pd.read_parquet(recommendations, columns=["user_id", "rank", "item_id", "score"])
    frame = frame.sort_values(["user_id", "rank"], kind="stable")
    users = frame["user_id"].astype(str).to_numpy()
    items = frame["item_id"].astype(str).map(item_index).to_numpy()
    if np.isnan(items.astype(float)).any():
        raise NoChampion(f"release {pointer.release_id}'s recommendations name items its SavedModel does not know")
    items = items.astype(np.int32)
    scores = frame["score"].to_numpy(np.float32)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    published = {users[s]: (items[s:e], scores[s:e]) for s, e in zip(starts, ends, strict=True)}
    published_k = int((ends - starts).max()) if len(starts) else 0

    known_items = _known_items(model, list(published))
    champion = LoadedChampion(
        dataset_key=dataset_key,
        release_id=pointer.release_id,
        model_version=model.model_version.numpy().decode(),
        pointer=pointer,
        folder=folder,
        model=model,
        item_ids=item_ids,
        item_index=item_index,
        unit_item_vectors=unit,
        popular_items=popular_items,
        published=published,
        published_k=published_k,
        known_items=known_items,
    )
    # the first call of each signature traces it (~100 ms): pay that here, not in a shopper's request
    model.recommend(user_id=tf.constant(["__warm_up__"]), k=tf.constant(10, tf.int32))
    model.recommend_in_context(
        user_id=tf.constant(["__warm_up__"]),
        k=tf.constant(10, tf.int32),
        recent_item_ids=tf.constant([[item_ids[0]]]),
        segment=tf.constant([""]),
    )
    return champion


def _known_items(model, user_ids: list[str]) -> dict[str, np.ndarray]:
    """Each published shopper's items as the release knows them (what it never recommends back)."""
    import tensorflow as tf

    if not user_ids:
        return {}
    rows = tf.raw_ops.LookupTableFindV2(
        table_handle=model.user_table.resource_handle,
        keys=tf.constant(user_ids),
        default_value=tf.constant(-1, tf.int64),
    ).numpy()
    values, splits = model.seen_values.numpy(), model.seen_splits.numpy()
    return {
        user: values[splits[row] : splits[row + 1]].astype(np.int32)
        for user, row in zip(user_ids, rows, strict=True)
        if row >= 0
    }
