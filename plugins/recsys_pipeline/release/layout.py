"""Where a dataset's releases live in the bucket: one function per kind of key.

``<prefix>/<dataset>/champion.json`` points at the champion's manifest;
``<prefix>/<dataset>/releases/<release id>/`` holds one release (its manifest last);
``<prefix>/<dataset>/history/<time>-<event>-<release id>-<uuid>.json`` is one promotion or
rollback each (one object per event, so two writers never rewrite one shared file);
``<prefix>/<dataset>/champion_history.jsonl`` is where buckets written before that kept them.
A release is written once: a rerun of the same release id whose bytes differ goes to
``releases/<release id>-attempt<n>/`` instead. Readers (verify, rollback, the models page)
and the writer (publish) share these.
"""

from __future__ import annotations

from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.settings import S3Settings


class ReleaseError(RuntimeError):
    """A release is missing, incomplete or corrupt; nothing was changed."""


def dataset_prefix(s3_settings: S3Settings, dataset_key: str) -> str:
    return f"{s3_settings.prefix}/{dataset_key}/"


def champion_key(s3_settings: S3Settings, dataset_key: str) -> str:
    return dataset_prefix(s3_settings, dataset_key) + "champion.json"


def history_key(s3_settings: S3Settings, dataset_key: str) -> str:
    """The shared history file of buckets written before history became one object per event (read only)."""
    return dataset_prefix(s3_settings, dataset_key) + "champion_history.jsonl"


def history_prefix(s3_settings: S3Settings, dataset_key: str) -> str:
    return dataset_prefix(s3_settings, dataset_key) + "history/"


def attempt_id(release_id: str, attempt: int) -> str:
    """The id a rerun's release is published under when the first attempt's bytes differ."""
    return release_id if attempt == 1 else f"{release_id}-attempt{attempt}"


def releases_prefix(s3_settings: S3Settings, dataset_key: str) -> str:
    return dataset_prefix(s3_settings, dataset_key) + "releases/"


def release_prefix(s3_settings: S3Settings, dataset_key: str, release_id: str) -> str:
    return releases_prefix(s3_settings, dataset_key) + f"{release_id}/"


def manifest_key(s3_settings: S3Settings, dataset_key: str, release_id: str) -> str:
    return release_prefix(s3_settings, dataset_key, release_id) + RunArtifacts.MANIFEST
