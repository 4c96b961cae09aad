"""Write-once places to publish checkpoints, so the database owner cannot rewrite history.

Every anchor is append-only: a checkpoint for a size is written once and
never replaced, and a checkpoint smaller than the newest one is refused (a
shrinking log is a rollback). Publishing the very same text again is a no-op,
so a retried publish is safe.
"""

from __future__ import annotations

import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from breakglass.audit.checkpoint import parse_checkpoint
from breakglass.domain.errors import AuditError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NAME = re.compile(r"([0-9]{20})\.txt")


def _file_name(size: int) -> str:
    # Zero-padded so that name order is size order, in a directory and in an S3 listing.
    return f"{size:020d}.txt"


def _check_labelled(checkpoint_text: str, size: int) -> None:
    if parse_checkpoint(checkpoint_text).size != size:
        raise AuditError(f"checkpoint text is not for size {size}")


class Anchor(ABC):
    """A write-once store of checkpoint notes."""

    @abstractmethod
    def publish(self, checkpoint_text: str, size: int) -> None:
        """Store the checkpoint for ``size``; refuse a size below the newest one."""

    @abstractmethod
    def latest(self) -> str | None:
        """The checkpoint with the largest size, or None when nothing is published."""

    @abstractmethod
    def checkpoints(self, since: int = 0) -> Iterator[str]:
        """Every published checkpoint of at least ``since`` entries, smallest size first."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the checkpoints go, for messages: a directory or ``s3://bucket/prefix``."""


class LocalDirectoryAnchor(Anchor):
    """Checkpoints as read-only files ``<size, 20 digits>.txt`` in one directory.

    A file is written under a temporary name opened with ``O_EXCL``, synced,
    made 0444, and then hard-linked to its final name: ``link(2)`` never
    replaces an existing file, and a crash never leaves a half-written
    checkpoint under a final name.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def location(self) -> str:
        return str(self.path)

    def _sizes(self) -> list[int]:
        return sorted(int(m[1]) for p in self.path.iterdir() if (m := _NAME.fullmatch(p.name)))

    def publish(self, checkpoint_text: str, size: int) -> None:
        _check_labelled(checkpoint_text, size)
        final = self.path / _file_name(size)
        sizes = self._sizes()
        if sizes and size < sizes[-1]:
            raise AuditError(f"refusing checkpoint of size {size}: {sizes[-1]} is published")
        if final.exists():
            self._same_or_refuse(final, checkpoint_text, size)
            return
        temp = self.path / f".{final.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(checkpoint_text.encode())
                out.flush()
                os.fsync(out.fileno())
            temp.chmod(0o444)
            try:
                os.link(temp, final)
            except FileExistsError:
                self._same_or_refuse(final, checkpoint_text, size)
        finally:
            temp.unlink(missing_ok=True)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _same_or_refuse(final: Path, checkpoint_text: str, size: int) -> None:
        if final.read_text() != checkpoint_text:
            raise AuditError(f"a different checkpoint of size {size} is already published")

    def latest(self) -> str | None:
        sizes = self._sizes()
        return (self.path / _file_name(sizes[-1])).read_text() if sizes else None

    def checkpoints(self, since: int = 0) -> Iterator[str]:
        for size in self._sizes():
            if size >= since:
                yield (self.path / _file_name(size)).read_text()


class S3ObjectLockAnchor(Anchor):
    """Checkpoints as ``<prefix>checkpoints/<size, 20 digits>.txt`` under S3 Object Lock.

    Each object is put with ``If-None-Match: *`` and COMPLIANCE retention, so
    no one, the bucket owner and the root account included, can delete or
    shorten it before ``retention_days`` pass. A versioned bucket still lets a
    writer stack a newer version on a key or hide it behind a delete marker;
    reads therefore go through the version listing, take the first version
    written, and refuse a key whose versions disagree.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: S3Client,
        *,
        retention_days: int = 3650,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if retention_days < 1:
            raise AuditError("checkpoint retention must be at least one day")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/checkpoints/" if prefix.strip("/") else "checkpoints/"
        self.client = client
        self.retention = timedelta(days=retention_days)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._last_key: str | None = None
        self._require_object_lock()

    def _require_object_lock(self) -> None:
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                raise AuditError(
                    f"bucket {self.bucket} has no Object Lock: checkpoints there could be deleted"
                ) from exc
            raise AuditError(f"cannot check Object Lock of bucket {self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise AuditError(f"cannot reach bucket {self.bucket}: {exc}") from exc
        enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise AuditError(f"bucket {self.bucket} does not have Object Lock enabled")

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, size: int) -> str:
        return self.prefix + _file_name(size)

    def _keys_after(self, key_marker: str | None) -> Iterator[str]:
        """Checkpoint keys after ``key_marker`` in order, delete-marked ones included."""
        marker = key_marker or ""
        seen: str | None = None
        try:
            while True:
                page = (
                    self.client.list_object_versions(
                        Bucket=self.bucket, Prefix=self.prefix, KeyMarker=marker
                    )
                    if marker  # an empty KeyMarker is not "from the start" everywhere
                    else self.client.list_object_versions(Bucket=self.bucket, Prefix=self.prefix)
                )
                entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                for key in sorted({e["Key"] for e in entries if "Key" in e}):
                    if key != seen and _NAME.fullmatch(key[len(self.prefix) :]):
                        seen = key
                        yield key
                if not page.get("IsTruncated"):
                    return
                marker = page.get("NextKeyMarker", "")
                if not marker:
                    return
        except (ClientError, BotoCoreError) as exc:
            raise AuditError(f"cannot list checkpoints in {self.bucket}: {exc}") from exc

    def _latest_key(self) -> str | None:
        for key in self._keys_after(self._last_key):
            self._last_key = key
        return self._last_key

    def _read(self, key: str) -> str:
        try:
            listing = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
            versions = [v for v in listing.get("Versions", []) if v.get("Key") == key]
            if not versions:
                raise AuditError(f"checkpoint {key} has no stored version")
            versions.sort(key=lambda v: v["LastModified"])
            texts = {
                self.client.get_object(Bucket=self.bucket, Key=key, VersionId=v["VersionId"])[
                    "Body"
                ]
                .read()
                .decode()
                for v in versions
            }
        except (ClientError, BotoCoreError) as exc:
            raise AuditError(f"cannot read checkpoint {key}: {exc}") from exc
        if len(texts) != 1:
            raise AuditError(f"checkpoint {key} was rewritten: its versions differ")
        return texts.pop()

    def publish(self, checkpoint_text: str, size: int) -> None:
        _check_labelled(checkpoint_text, size)
        key = self._key(size)
        latest = self._latest_key()
        if latest is not None and key < latest:
            raise AuditError(f"refusing checkpoint of size {size}: a larger one is published")
        if key == latest:
            self._same_or_refuse(key, checkpoint_text, size)
            return
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=checkpoint_text.encode(),
                ContentType="text/plain; charset=utf-8",
                IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=self._clock() + self.retention,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                self._same_or_refuse(key, checkpoint_text, size)
                return
            raise AuditError(f"cannot publish checkpoint {size} to {self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise AuditError(f"cannot publish checkpoint {size} to {self.bucket}: {exc}") from exc
        self._last_key = key

    def _same_or_refuse(self, key: str, checkpoint_text: str, size: int) -> None:
        if self._read(key) != checkpoint_text:
            raise AuditError(f"a different checkpoint of size {size} is already published")

    def latest(self) -> str | None:
        key = self._latest_key()
        return self._read(key) if key is not None else None

    def checkpoints(self, since: int = 0) -> Iterator[str]:
        # the listing is cheap (a thousand keys a request); reading is two requests a key
        first = self._key(since)  # names sort by size
        for key in self._keys_after(None):
            if key >= first:
                yield self._read(key)
