"""Verifying against the write-once anchor itself, not only the checkpoints a copy carries.

Whoever holds the database and the signing key can rewrite the log, sign fresh
checkpoints for it and hand those over; the checkpoints already anchored stay
where they are, and ``audit verify --anchor`` reads them from there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Engine

from breakglass.audit import (
    Anchor,
    LocalDirectoryAnchor,
    S3ObjectLockAnchor,
    TreeState,
    parse_checkpoint,
    sign_checkpoint,
)
from breakglass.audit.canonical import event_leaf_hash
from breakglass.audit.checkpoint import load_or_create_signing_key
from breakglass.cli.audit import verify_export
from breakglass.domain.events import EventTag
from breakglass.service.auditlog import AuditLog
from tests.integration.test_audit_key_rotation import history as one_checkpoint
from tests.integration.test_audit_tamper import rewrite_everything
from tests.services import require

BIN = Path(sys.executable).parent / "breakglass"


def audit_log(engine: Engine, tmp_path: Path, loaded, clock, *anchors: Anchor) -> AuditLog:
    key = load_or_create_signing_key(tmp_path / "audit.key")  # the operator's one key
    return AuditLog(engine, key=key, origin=f"breakglass/{loaded.catalog.organization}",
                    anchors=anchors, clock=clock)


def history(engine: Engine, loaded, clock, people, audit: AuditLog, n: int) -> None:
    """``n`` activations and revocations, a checkpoint anchored after each."""
    for _ in range(n):
        one_checkpoint(engine, loaded, clock, people, audit, 1)


def forge(engine: Engine, tmp_path: Path, loaded, clock) -> Path:
    """Rewrite row 3 with every hash, sign the result to a fresh anchor, export it."""
    rewrite_everything(engine, 3)
    forger = audit_log(engine, tmp_path, loaded, clock,
                       LocalDirectoryAnchor(tmp_path / "fresh-anchor"))
    forger.checkpoint()
    return forger.export(tmp_path / "forged").parent


def resign_every_size(forged: Path, sizes: set[int], origin: str, tmp_path: Path) -> None:
    """The thorough forger: a checkpoint of the forged log for every size the anchor holds,
    and the log's announcements of those checkpoints rewritten to the forged roots."""
    state, key = TreeState(), load_or_create_signing_key(tmp_path / "audit.key")
    roots: dict[int, str] = {}
    lines = []
    for line in (forged / "events.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["action"] == EventTag.CHECKPOINT_PUBLISHED:
            row["payload"]["root"] = roots[row["payload"]["size"]]
            row["leaf_hash"] = event_leaf_hash(row).hex()
        lines.append(json.dumps(row, sort_keys=True) + "\n")
        state.append(bytes.fromhex(row["leaf_hash"]))
        roots[state.size] = state.root().hex()
        if state.size in sizes:
            (forged / "checkpoints" / f"{state.size:020d}.txt").write_text(
                sign_checkpoint(origin, state.size, state.root(), key, origin))
    (forged / "events.jsonl").write_text("".join(lines))


@pytest.mark.parametrize("every_size", [False, True], ids=["newest", "every anchored size"])
def test_a_re_signed_rewrite_passes_alone_and_fails_against_the_anchor(engine, tmp_path, loaded,
                                                                       clock, people,
                                                                       every_size):
    anchor = LocalDirectoryAnchor(tmp_path / "anchor")
    audit = audit_log(engine, tmp_path, loaded, clock, anchor)
    history(engine, loaded, clock, people, audit, 3)
    honest = audit.export(tmp_path / "honest").parent
    anchored = list(anchor.checkpoints())
    report = verify_export(honest, None, anchored)
    assert report.ok, report.problems
    assert f"checked against {len(anchored)} checkpoint(s) read from the anchor" in report.notes
    assert any("own key.pub, not trusted keys" in note for note in report.notes)
    trusted = verify_export(honest, audit.verifier_keys, anchored)
    assert trusted.ok
    assert not any("not trusted" in note for note in trusted.notes)

    forged = forge(engine, tmp_path, loaded, clock)
    if every_size:
        resign_every_size(forged, {parse_checkpoint(c).size for c in anchored}, audit.origin,
                          tmp_path)
    assert verify_export(forged, None).ok  # the copy alone cannot tell
    report = verify_export(forged, None, anchored)
    assert not report.ok
    assert report.problems[0].kind == "checkpoint"
    assert report.problems[0].index is not None
    assert report.problems[0].index <= 3


def test_a_copy_older_than_the_anchor_verifies_with_a_note(engine, tmp_path, loaded, clock,
                                                          people):
    anchor = LocalDirectoryAnchor(tmp_path / "anchor")
    audit = audit_log(engine, tmp_path, loaded, clock, anchor)
    history(engine, loaded, clock, people, audit, 2)
    older = audit.export(tmp_path / "older").parent
    history(engine, loaded, clock, people, audit, 2)  # the log and the anchor move on
    report = verify_export(older, None, list(anchor.checkpoints()))
    assert report.ok, report.problems
    assert any("this copy predates them, or its tail was cut" in n for n in report.notes)


def test_the_cli_reads_the_s3_object_lock_anchor(engine, tmp_path, loaded, clock, people):
    endpoint = require("BG_TEST_AWS_ENDPOINT")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "BREAKGLASS_ANCHOR_S3_ENDPOINT": endpoint}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"bg-verify-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    audit = audit_log(engine, tmp_path, loaded, clock, S3ObjectLockAnchor(bucket, "prod", s3))
    history(engine, loaded, clock, people, audit, 2)
    honest = audit.export(tmp_path / "honest").parent
    forged = forge(engine, tmp_path, loaded, clock)

    def verify(directory: Path, url: str, *more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), "audit", "verify", "--export", str(directory),
                               "--anchor", url, *more], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    ok = verify(honest, f"s3://{bucket}/prod")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # two rounds, each a checkpoint and the one that signs its announcement
    assert "checked against 4 checkpoint(s) read from the anchor" in ok.stdout
    newest = audit.head()[0]
    window = verify(honest, f"s3://{bucket}/prod", "--anchor-since", str(newest))
    assert window.returncode == 0, window.stdout + window.stderr
    assert "checked against 1 checkpoint(s) read from the anchor" in window.stdout
    caught = verify(forged, f"s3://{bucket}/prod")
    assert caught.returncode == 1
    assert "FAIL index" in caught.stdout
    assert ": checkpoint:" in caught.stdout
    s3.create_bucket(Bucket=bucket + "-open")  # no Object Lock: not a write-once anchor
    unlocked = verify(honest, f"s3://{bucket}-open/prod")
    assert unlocked.returncode != 0
    assert "Object Lock" in unlocked.stdout + unlocked.stderr


@pytest.mark.parametrize("url", ["s3:///prod", "/no/such/anchor/dir"])
def test_an_unusable_anchor_is_a_usage_error(tmp_path, url):
    result = subprocess.run([str(BIN), "audit", "verify", "--export", str(tmp_path),
                             "--anchor", url], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert "--anchor" in result.stderr


def test_verifying_the_database_reads_the_given_anchor_too(engine, tmp_path, loaded, clock,
                                                           people):
    anchor = LocalDirectoryAnchor(tmp_path / "anchor")
    history(engine, loaded, clock, people, audit_log(engine, tmp_path, loaded, clock, anchor), 3)
    forge(engine, tmp_path, loaded, clock)
    # the broker now points at the fresh anchor only, as whoever rewrote the log set it up
    broker_view = audit_log(engine, tmp_path, loaded, clock,
                            LocalDirectoryAnchor(tmp_path / "fresh-anchor"))
    assert broker_view.verify().ok
    report = broker_view.verify(list(anchor.checkpoints()))
    assert not report.ok
    assert report.problems[0].kind == "checkpoint"
