"""Checkpoints under S3 Object Lock, against the AWS emulator."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from breakglass.audit.anchor import S3ObjectLockAnchor
from breakglass.audit.checkpoint import sign_checkpoint
from breakglass.audit.merkle import leaf_hash, root
from breakglass.domain.errors import AuditError
from tests.services import require

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

ORIGIN = "breakglass.example/audit"
KEY = Ed25519PrivateKey.generate()
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(100)]
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def checkpoint(size: int, leaves: list[bytes] = LEAVES) -> str:
    return sign_checkpoint(ORIGIN, size, root(leaves[:size]), KEY, ORIGIN)


@pytest.fixture
def s3() -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=require("BG_TEST_AWS_ENDPOINT"),
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def make_bucket(s3: S3Client) -> Callable[[bool], str]:
    def make(locked: bool) -> str:
        name = f"bg-anchor-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
        return name

    return make


@pytest.fixture
def anchor(s3: S3Client, make_bucket: Callable[[bool], str]) -> S3ObjectLockAnchor:
    return S3ObjectLockAnchor(make_bucket(True), "prod", s3, retention_days=30, clock=lambda: NOW)


def test_publish_and_latest(anchor: S3ObjectLockAnchor, s3: S3Client) -> None:
    assert anchor.latest() is None
    anchor.publish(checkpoint(10), 10)
    anchor.publish(checkpoint(25), 25)
    anchor.publish(checkpoint(25), 25)  # a retried publish is a no-op
    assert anchor.latest() == checkpoint(25)
    assert list(anchor.checkpoints()) == [checkpoint(10), checkpoint(25)]
    assert list(anchor.checkpoints(since=10)) == [checkpoint(10), checkpoint(25)]
    assert list(anchor.checkpoints(since=11)) == [checkpoint(25)]
    assert list(anchor.checkpoints(since=26)) == []
    head = s3.head_object(Bucket=anchor.bucket, Key=f"prod/checkpoints/{25:020d}.txt")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == datetime(2030, 1, 31, tzinfo=UTC)


def test_a_smaller_or_different_checkpoint_is_refused(anchor: S3ObjectLockAnchor) -> None:
    anchor.publish(checkpoint(20), 20)
    with pytest.raises(AuditError, match="larger one"):
        anchor.publish(checkpoint(10), 10)
    rewritten = checkpoint(20, [leaf_hash(b"forged"), *LEAVES[1:]])
    with pytest.raises(AuditError, match="already published"):
        anchor.publish(rewritten, 20)
    assert anchor.latest() == checkpoint(20)


def test_a_fresh_anchor_sees_what_another_published(
    anchor: S3ObjectLockAnchor, s3: S3Client
) -> None:
    anchor.publish(checkpoint(30), 30)
    other = S3ObjectLockAnchor(anchor.bucket, "prod", s3)
    assert other.latest() == checkpoint(30)
    with pytest.raises(AuditError, match="larger one"):
        other.publish(checkpoint(29), 29)


def test_a_locked_version_cannot_be_deleted(anchor: S3ObjectLockAnchor, s3: S3Client) -> None:
    anchor.publish(checkpoint(40), 40)
    key = f"prod/checkpoints/{40:020d}.txt"
    version = s3.head_object(Bucket=anchor.bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=anchor.bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # A delete marker hides the key from plain listings, not from the anchor.
    s3.delete_object(Bucket=anchor.bucket, Key=key)
    assert anchor.latest() == checkpoint(40)


def test_an_overwrite_of_a_locked_checkpoint_is_refused(
    anchor: S3ObjectLockAnchor, s3: S3Client
) -> None:
    anchor.publish(checkpoint(50), 50)
    key = f"prod/checkpoints/{50:020d}.txt"
    forged = checkpoint(50, [leaf_hash(b"forged"), *LEAVES[1:]])
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=anchor.bucket, Key=key, Body=forged.encode(), IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    # Without the precondition S3 stacks a new version on the locked one: the
    # original survives, and the anchor refuses the key rather than trust either.
    s3.put_object(Bucket=anchor.bucket, Key=key, Body=forged.encode())
    with pytest.raises(AuditError, match="rewritten"):
        anchor.latest()


def test_a_bucket_without_object_lock_is_refused(
    s3: S3Client, make_bucket: Callable[[bool], str]
) -> None:
    with pytest.raises(AuditError, match="no Object Lock"):
        S3ObjectLockAnchor(make_bucket(False), "prod", s3)


def test_a_missing_bucket_is_refused(s3: S3Client) -> None:
    with pytest.raises(AuditError, match="cannot check Object Lock"):
        S3ObjectLockAnchor(f"bg-missing-{uuid.uuid4().hex[:12]}", "", s3)
