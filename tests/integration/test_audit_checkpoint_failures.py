"""A checkpoint that cannot be signed or anchored never fails the change it follows.

An activation or a revocation has committed (the credential exists) before its
checkpoint is signed; the responder gets the result, and the failure becomes an
alerted audit event: ``audit:anchor:failed`` once an outage, publishing retried
until the anchor takes it, or ``audit:log:tampered`` when the log no longer
extends what was signed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from sqlalchemy import Engine, select

from breakglass.audit import Anchor, LocalDirectoryAnchor, S3ObjectLockAnchor, parse_checkpoint
from breakglass.audit.checkpoint import load_or_create_signing_key
from breakglass.catalog.loader import parse_catalog
from breakglass.domain.errors import AuditError
from breakglass.domain.events import EventTag
from breakglass.domain.model import RequestState
from breakglass.notify.operations import build_operations
from breakglass.service.auditlog import AuditLog
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage import tables as t
from breakglass.storage import tables_notify as tn
from breakglass.storage.uow import UnitOfWork
from tests.conftest import CATALOG
from tests.fakes import MemoryConnector
from tests.integration.test_audit_tamper import rewrite_everything
from tests.services import require

ALERTED = """
alerts:
  sinks:
    - {type: webhook, name: soc, url: "http://127.0.0.1:9/hook", secret_env: HOOK_KEY}
"""


def build(engine: Engine, tmp_path: Path, loaded, clock,
          *anchors: Anchor) -> tuple[Broker, AuditLog]:
    """The broker and the audit log wired as ``serve`` wires them."""
    audit = AuditLog(engine, key=load_or_create_signing_key(tmp_path / "audit.key"),
                     origin=f"breakglass/{loaded.catalog.organization}", anchors=anchors,
                     clock=clock)
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": MemoryConnector("embeddings-db")}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    broker.on_activated.append(audit.checkpoint_after_change)
    broker.revoker.on_ended.append(audit.checkpoint_after_change)
    return broker, audit


def activate(broker: Broker, people, incident: str) -> str:
    view = broker.request_access(people["uma"], ["embeddings-read"], incident=incident,
                                 reason="recovery")
    assert view.request.state == RequestState.ACTIVE
    return view.request.id


def events(engine: Engine, action: EventTag) -> list:
    with engine.connect() as conn:
        return conn.execute(select(t.events).where(t.events.c.action == action)
                            .order_by(t.events.c.idx)).all()


def size_of(text: str | None) -> int:
    assert text is not None
    return parse_checkpoint(text).size


def test_an_unreachable_s3_anchor_fails_no_change_and_gets_the_checkpoint_later(
        engine, tmp_path, loaded, clock, people):
    endpoint = require("BG_TEST_AWS_ENDPOINT")
    creds = {"region_name": "us-east-1", "aws_access_key_id": "testing",
             "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", endpoint_url=endpoint, **creds)
    bucket = f"bg-outage-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    remote = S3ObjectLockAnchor(bucket, "prod", s3)
    local = LocalDirectoryAnchor(tmp_path / "anchor")
    broker, audit = build(engine, tmp_path, loaded, clock, local, remote)
    activate(broker, people, "SEV-6000")
    # the bucket becomes unreachable
    remote.client = boto3.client("s3", endpoint_url="http://127.0.0.1:1", **creds,
                                 config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    first = activate(broker, people, "SEV-6001")
    broker.revoke(people["uma"], first)
    activate(broker, people, "SEV-6002")
    [failed] = events(engine, EventTag.ANCHOR_FAILED)
    assert failed.outcome == "failed"
    assert failed.payload["anchor"] == f"s3://{bucket}/prod/checkpoints/"
    assert failed.payload["alert"] is True
    signed = audit.checkpoint()
    assert size_of(local.latest()) == size_of(signed)  # the other anchor kept up
    remote.client = s3  # back
    audit.checkpoint()  # the next tick of the checkpoint loop, with nothing new to sign
    assert remote.latest() == signed
    [recovered] = events(engine, EventTag.ANCHOR_RECOVERED)
    assert recovered.payload == {"anchor": f"s3://{bucket}/prod/checkpoints/",
                                 "size": size_of(signed)}
    assert audit.verify().ok


def test_a_log_that_no_longer_extends_its_checkpoint_fails_no_change_and_is_alerted(
        engine, tmp_path, loaded, clock, people):
    env = {"TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/x", "HOOK_KEY": "k"}
    ops = build_operations(parse_catalog(CATALOG.read_text() + ALERTED, "tamper", env), engine,
                           clock, env)
    broker, audit = build(engine, tmp_path, loaded, clock, LocalDirectoryAnchor(tmp_path / "a"))
    activate(broker, people, "SEV-6100")
    activate(broker, people, "SEV-6101")
    rewrite_everything(engine, 1)
    activate(broker, people, "SEV-6102")  # the credential is issued; the checkpoint refused
    activate(broker, people, "SEV-6103")
    with pytest.raises(AuditError, match="refusing to sign"):
        audit.checkpoint()
    [finding] = events(engine, EventTag.AUDIT_TAMPERED)
    assert finding.outcome == "failed"
    assert finding.reason.startswith("refusing to sign")
    with engine.connect() as conn:
        alerts = conn.execute(select(tn.outbox.c.topic, tn.outbox.c.payload)
                              .where(tn.outbox.c.kind == "alert")).all()
    assert [(a.topic, a.payload["severity"]) for a in alerts] == [
        ("alert.audit_tampered", "critical")]
    assert 'breakglass_audit_findings_total{kind="log_tampered"} 1.0' in \
        ops.metrics.exposition().decode()


def test_brokers_of_a_fleet_anchoring_the_same_head_is_no_outage(engine, tmp_path, loaded,
                                                                  clock, people):
    endpoint = require("BG_TEST_AWS_ENDPOINT")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"bg-fleet-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    first, first_log = build(engine, tmp_path, loaded, clock,
                             S3ObjectLockAnchor(bucket, "prod", s3))
    _, second_log = build(engine, tmp_path, loaded, clock, S3ObjectLockAnchor(bucket, "prod", s3))
    activate(first, people, "SEV-6200")
    with UnitOfWork(engine) as uow:  # an event the other broker's checkpoint anchors first
        uow.events.append(ts=clock.now(), actor="uma", action="request:created")
    anchored = second_log.checkpoint()
    assert first_log.checkpoint() == anchored  # the same head, the same signed note
    activate(first, people, "SEV-6201")
    assert events(engine, EventTag.ANCHOR_FAILED) == []
    assert size_of(S3ObjectLockAnchor(bucket, "prod", s3).latest()) > size_of(anchored)
