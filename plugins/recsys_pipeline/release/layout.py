"""Where a dataset's releases live in the bucket: one function per kind of key.

``<prefix>/<dataset>/champion.json`` points at the champion's manifest;
``<prefix>/<dataset>/releases/<release id>/`` holds one release (its manifest last);
``<prefix>/<dataset>/champion_history.jsonl`` lists every promotion and rollback.
Readers (verify, rollback, the models page) and the writer (publish) share these.
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
    return dataset_prefix(s3_settings, dataset_key) + "champion_history.jsonl"


def releases_prefix(s3_settings: S3Settings, dataset_key: str) -> str:
    return dataset_prefix(s3_settings, dataset_key) + "releases/"


def release_prefix(s3_settings: S3Settings, dataset_key: str, release_id: str) -> str:
    return releases_prefix(s3_settings, dataset_key) + f"{release_id}/"


def manifest_key(s3_settings: S3Settings, dataset_key: str, release_id: str) -> str:
    return release_prefix(s3_settings, dataset_key, release_id) + RunArtifacts.MANIFEST
