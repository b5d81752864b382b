"""Object storage through the real S3 API (a moto server over HTTP)."""

from __future__ import annotations

import os

import pytest

from recsys_pipeline import storage

pytestmark = pytest.mark.integration


def test_upload_verify_and_multipart(s3_test_settings, tmp_path):
    s3 = storage.client(s3_test_settings)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))  # above the multipart threshold
    stored = storage.upload_file(s3, s3_test_settings.bucket, "t/big.bin", big)
    assert (stored.size, stored.sha256) == (big.stat().st_size, storage.sha256_file(big))
    assert storage.download_sha256(s3, s3_test_settings.bucket, "t/big.bin") == (stored.size, stored.sha256)
    head = s3.head_object(Bucket=s3_test_settings.bucket, Key="t/big.bin")
    assert "-" in head["ETag"]  # a multipart upload's ETag
    assert head["Metadata"]["sha256"] == stored.sha256


def test_json_round_trip_and_missing_key(s3_test_settings):
    s3 = storage.client(s3_test_settings)
    storage.put_json(s3, s3_test_settings.bucket, "t/pointer.json", {"release_id": "r1"})
    assert storage.get_json(s3, s3_test_settings.bucket, "t/pointer.json") == {"release_id": "r1"}
    assert storage.get_json(s3, s3_test_settings.bucket, "t/none.json") is None
    assert "t/pointer.json" in storage.list_keys(s3, s3_test_settings.bucket, "t/")


def test_bucket_is_private_and_creation_idempotent(s3_test_settings):
    s3 = storage.client(s3_test_settings)
    storage.ensure_bucket(s3, s3_test_settings.bucket)
    block = s3.get_public_access_block(Bucket=s3_test_settings.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
