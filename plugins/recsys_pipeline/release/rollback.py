"""Roll the champion back: the pointer to an earlier complete release, and MySQL to its recommendations.

The same step for the ``recsys_rollback`` DAG and ``recsys rollback``. The release is
checked complete (and once promoted) before anything moves, so a refused rollback
changes nothing. The pointer move and the MySQL load happen under the dataset's writer
lock, so a training run's publish or load cannot come between them; the pointer is
moved by compare-and-swap, so a writer without the lock cannot be overwritten either.
A retried rollback finds the pointer already moved and only reloads MySQL.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from recsys_pipeline import storage
from recsys_pipeline.release.champion import move_champion
from recsys_pipeline.release.recommendations_table import replace_recommendations
from recsys_pipeline.release.verify import download_release
from recsys_pipeline.release.writer_lock import champion_lock
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.settings import MySQLSettings, S3Settings


def rollback(s3_settings: S3Settings, settings: MySQLSettings, dataset_key: str, release_id: str) -> dict:
    """Point the champion back to ``release_id`` and reload its recommendations into MySQL."""
    with champion_lock(settings, s3_settings, dataset_key, f"rollback of {dataset_key} to {release_id}") as lock:
        pointer = move_champion(s3_settings, dataset_key, release_id, lock)
        s3 = storage.client(s3_settings)
        manifest = storage.get_json(s3, s3_settings.bucket, pointer["manifest"])
        with tempfile.TemporaryDirectory() as tmp:
            path = download_release(s3, s3_settings, manifest, Path(tmp), RunArtifacts.RECOMMENDATIONS)
            loaded = replace_recommendations(settings, pd.read_parquet(path), release_id)
    return {
        "champion": pointer["release_id"],
        "rolled_back_from": pointer.get("rolled_back_from"),
        "recommendations": loaded,
    }
