"""Object storage through the S3 API (boto3): AWS S3, MinIO, or the local moto server.

Uploads return the size and sha256 of what was sent so the release manifest can be
verified later; transient errors are retried by botocore with backoff, and large
files go up in multipart chunks. Small JSON objects can be written conditionally
(``If-Match`` an ETag read before, or ``If-None-Match: *`` for "only if absent"), which
AWS S3, MinIO and the local moto server enforce: a writer that lost a race is refused
with ``PreconditionFailed`` instead of silently overwriting the winner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from recsys_pipeline.settings import S3Settings

log = logging.getLogger(__name__)

MULTIPART = TransferConfig(multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def client(settings: S3Settings):
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


def ensure_bucket(s3, bucket: str) -> None:
    """Create ``bucket`` if it does not exist, and block every form of public access."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=bucket)
        log.info("created bucket %s", bucket)
    try:
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    except ClientError as error:  # a least-privileged role, or a server without the API (some MinIO)
        code = error.response.get("Error", {}).get("Code")
        if code not in ("AccessDenied", "NotImplemented", "MethodNotAllowed"):
            raise
        log.warning("could not set the public access block on bucket %s (%s); make sure it is private", bucket, code)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_file(s3, bucket: str, key: str, path: Path) -> StoredObject:
    """Upload ``path`` (multipart when large) and return what the manifest records of it."""
    checksum = sha256_file(path)
    extra = {"Metadata": {"sha256": checksum}}
    content_type, _ = mimetypes.guess_type(path.name)
    if content_type:  # so a browser shows the Data Docs and dbt docs pages instead of downloading them
        extra["ContentType"] = content_type
    s3.upload_file(str(path), bucket, key, Config=MULTIPART, ExtraArgs=extra)
    return StoredObject(key=key, size=path.stat().st_size, sha256=checksum)


class PreconditionFailed(RuntimeError):
    """A conditional write was refused: the object changed (or appeared) since it was read."""


# 412 on every server; AWS answers 409 ConditionalRequestConflict when two conditional writes overlap
_CONDITION_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def put_json(
    s3, bucket: str, key: str, payload: dict, if_match: str | None = None, if_absent: bool = False
) -> StoredObject:
    """Write ``payload`` as JSON; only over the ETag ``if_match``, or only where nothing is (``if_absent``)."""
    body = json.dumps(payload, indent=2, sort_keys=True, default=str).encode()
    checksum = hashlib.sha256(body).hexdigest()
    condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if if_absent else {}
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            Metadata={"sha256": checksum},
            **condition,
        )
    except ClientError as error:
        if condition and error.response.get("Error", {}).get("Code") in _CONDITION_CODES:
            raise PreconditionFailed(f"s3://{bucket}/{key} changed since it was read ({condition})") from error
        raise
    return StoredObject(key=key, size=len(body), sha256=checksum)


def get_json_tagged(s3, bucket: str, key: str) -> tuple[dict | None, str | None]:
    """The JSON object at ``key`` and its ETag (what a conditional write compares), or (None, None)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None, None
        raise
    return json.loads(response["Body"].read()), response["ETag"]


def get_json(s3, bucket: str, key: str) -> dict | None:
    """The JSON object at ``key``, or None when there is none."""
    return get_json_tagged(s3, bucket, key)[0]


def etag(s3, bucket: str, key: str) -> str | None:
    """The object's current ETag, or None when there is none."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)["ETag"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def download_sha256(s3, bucket: str, key: str) -> tuple[int, str]:
    """Size and sha256 of the object's bytes as stored (streamed, not held in memory)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: body.read(1 << 20), b""):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys
