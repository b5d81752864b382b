"""Publish a gate's Data Docs to object storage, whether the gate passed or not.

They go outside ``releases/`` (under ``<prefix>/<dataset>/data-docs/<run>/<gate>/``):
a refused run has Data Docs to read but never a release. The log names them by their
``s3://`` key and the models page's link (a training run's release carries them there),
never by a presigned URL: that would be a days-long credential in every task log.
"""

from __future__ import annotations

import logging

from recsys_pipeline import storage
from recsys_pipeline.run import RunContext
from recsys_pipeline.settings import S3Settings
from recsys_pipeline.ui import links

log = logging.getLogger(__name__)


def data_docs_prefix(s3_settings: S3Settings, run: RunContext, gate: str) -> str:
    return f"{s3_settings.prefix}/{run.dataset_key}/data-docs/{run.release_id}/{gate}/"


def publish_data_docs(s3_settings: S3Settings, run: RunContext, gate: str) -> str | None:
    """Upload one gate's Data Docs; the ``s3://`` address of their index, or None when none were built."""
    docs_dir = run.artifacts.data_docs(gate)
    if not (docs_dir / "index.html").exists():
        return None
    s3 = storage.client(s3_settings)
    storage.ensure_bucket(s3, s3_settings.bucket)
    prefix = data_docs_prefix(s3_settings, run, gate)
    for path in sorted(p for p in docs_dir.rglob("*") if p.is_file()):
        storage.upload_file(s3, s3_settings.bucket, prefix + path.relative_to(docs_dir).as_posix(), path)
    address = f"s3://{s3_settings.bucket}/{prefix}index.html"
    log.info(
        "Data Docs (%s gate): %s\n  open: %s (the release's copy, once the run publishes)\n  local copy: file://%s",
        gate,
        address,
        links.models_page_url(run.dataset_key),
        (docs_dir / "index.html").resolve(),
    )
    return address
