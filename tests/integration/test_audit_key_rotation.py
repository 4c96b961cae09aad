"""Rotating the checkpoint signing key (both backends).

The operator starts the broker with a new key and the old verifier key in
BREAKGLASS_AUDIT_PREVIOUS_KEYS; without it the broker refuses to write. The
rotation is an audit event, alerted, and the old key signs nothing after it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from breakglass.audit import (
    LocalDirectoryAnchor,
    Verifiers,
    load_or_create_signing_key,
    sign_checkpoint,
)
from breakglass.bootstrap import build_audit
from breakglass.catalog.loader import parse_catalog
from breakglass.cli.audit import verify_export
from breakglass.domain.errors import AuditError, InvalidInput
from breakglass.domain.events import EventTag
from breakglass.notify.operations import build_operations
from breakglass.service.auditlog import AuditLog
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.settings import Settings
from breakglass.storage import tables as t
from breakglass.storage import tables_notify as tn
from breakglass.storage.uow import UnitOfWork
from tests.conftest import CATALOG
from tests.fakes import MemoryConnector

ALERTED = """
alerts:
  sinks:
    - {type: webhook, name: soc, url: "http://127.0.0.1:9/hook", secret_env: HOOK_KEY}
"""


def build(engine: Engine, tmp_path: Path, loaded, clock, key: str,
          previous: str | None = None) -> AuditLog:
    settings = Settings(catalog=CATALOG, db_url="unused", dev=True, state_dir=tmp_path,
                        secret_key=SecretBox.new_key(), audit_key_file=tmp_path / key,
                        anchor_dir=tmp_path / "anchors", audit_previous_keys=previous)
    return build_audit(settings, engine, loaded.catalog.organization, clock)


def history(engine: Engine, loaded, clock, people, audit: AuditLog, n: int = 2) -> None:
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": MemoryConnector("embeddings-db")}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    for i in range(n):
        view = broker.request_access(people["uma"], ["embeddings-read"],
                                     incident=f"SEV-{3000 + i}", reason="recovery")
        broker.revoke(people["uma"], view.request.id)
    audit.checkpoint()


def rotations(engine: Engine) -> list[tuple[int, dict]]:
    with engine.connect() as conn:
        return [(r.idx, r.payload) for r in conn.execute(
            select(t.events.c.idx, t.events.c.payload)
            .where(t.events.c.action == EventTag.AUDIT_KEY_ROTATED))]


@pytest.fixture
def rotated(engine, tmp_path, loaded, clock, people) -> tuple[AuditLog, AuditLog]:
    """A log signed by old.key, then a broker started with new.key trusting the old one."""
    old = build(engine, tmp_path, loaded, clock, "old.key")
    old.check_against_anchors()
    history(engine, loaded, clock, people, old)
    new = build(engine, tmp_path, loaded, clock, "new.key", previous=old.verifier_keys)
    new.check_against_anchors()
    return old, new


def test_a_new_key_without_the_previous_one_is_refused(engine, tmp_path, loaded, clock, people):
    old = build(engine, tmp_path, loaded, clock, "old.key")
    history(engine, loaded, clock, people, old)
    new = build(engine, tmp_path, loaded, clock, "new.key")
    with pytest.raises(AuditError, match="BREAKGLASS_AUDIT_PREVIOUS_KEYS"):
        new.check_against_anchors()
    assert rotations(engine) == []


def test_the_rotation_is_recorded_once_then_signed_by_the_new_key(rotated, engine, tmp_path,
                                                                   loaded, clock):
    old, new = rotated
    anchored = old.head()[0]
    again = build(engine, tmp_path, loaded, clock, "new.key", previous=old.verifier_keys)
    again.check_against_anchors()  # a second broker of the fleet, started alongside
    again.checkpoint()
    new.checkpoint()
    [(index, payload)] = rotations(engine)
    assert index == anchored
    assert payload == {"retired": old.verifier_keys.strip(),
                       "signing": new.verifier_keys.splitlines()[0],
                       "anchored_size": anchored, "alert": True}
    # the first checkpoint after the rotation (the newest one signs its announcement too)
    newest = next(LocalDirectoryAnchor(tmp_path / "anchors").checkpoints(anchored + 1), None)
    assert newest is not None
    assert int(newest.splitlines()[1]) == anchored + 1
    Verifiers.parse(new.verifier_keys.splitlines()[0]).signers(newest)  # the new key signed it
    with pytest.raises(AuditError):
        Verifiers.parse(old.verifier_keys).signers(newest)
    assert new.verify().ok


def test_an_export_verifies_with_both_keys_and_not_with_either_alone(rotated, engine, tmp_path,
                                                                      loaded, clock, people):
    _, new = rotated
    history(engine, loaded, clock, people, new)
    out = tmp_path / "export"
    new.export(out)
    assert (out / "key.pub").read_text() == new.verifier_keys
    assert len(new.verifier_keys.splitlines()) == 2
    report = verify_export(out, None)
    assert report.ok, report.problems
    for alone in new.verifier_keys.splitlines():
        report = verify_export(out, alone)
        assert not report.ok
        assert {p.kind for p in report.problems} == {"checkpoint_invalid"}


def test_a_checkpoint_by_the_retired_key_after_the_rotation_is_refused(rotated, engine, tmp_path,
                                                                        loaded, clock, people):
    old, new = rotated
    history(engine, loaded, clock, people, new)
    with UnitOfWork(engine) as uow:  # one more event, not yet signed
        uow.events.append(ts=clock.now(), actor="uma", action="request:created")
    size, root = new.head()
    # whoever kept the old key signs the grown log and drops it into the anchor
    stolen = load_or_create_signing_key(tmp_path / "old.key")
    LocalDirectoryAnchor(tmp_path / "anchors").publish(
        sign_checkpoint(new.origin, size, root, stolen, new.origin), size)
    [(rotation, _)] = rotations(engine)
    report = new.verify()
    assert not report.ok
    assert (report.problems[0].index, report.problems[0].kind) == (rotation, "retired_key")
    restarted = build(engine, tmp_path, loaded, clock, "new.key", previous=old.verifier_keys)
    with pytest.raises(AuditError, match="retired at audit event"):
        restarted.check_against_anchors()


def test_a_malformed_previous_key_stops_the_broker(engine, tmp_path, loaded, clock):
    with pytest.raises(InvalidInput, match="BREAKGLASS_AUDIT_PREVIOUS_KEYS") as refused:
        build(engine, tmp_path, loaded, clock, "new.key", previous="breakglass/x+00+AAAA\n")
    assert refused.value.rule == "settings.audit_previous_keys"


def test_the_rotation_raises_an_alert(engine, tmp_path, loaded, clock, people):
    old = build(engine, tmp_path, loaded, clock, "old.key")
    history(engine, loaded, clock, people, old)
    env = {"TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/x", "HOOK_KEY": "k"}
    alerting = parse_catalog(CATALOG.read_text() + ALERTED, "rotation", env)
    build_operations(alerting, engine, clock, env)
    new = build(engine, tmp_path, loaded, clock, "new.key", previous=old.verifier_keys)
    new.check_against_anchors()
    new.checkpoint()
    with engine.connect() as conn:
        alerts = conn.execute(select(tn.outbox).where(tn.outbox.c.kind == "alert")).all()
    [(index, _)] = rotations(engine)
    assert [(a.topic, a.event_idx) for a in alerts] == [("alert.audit_key_rotated", index)]
    assert alerts[0].payload["severity"] == "high"


def test_a_fleet_starting_together_records_the_rotation_once(engine, tmp_path, loaded, clock,
                                                             people):
    old = build(engine, tmp_path, loaded, clock, "old.key")
    history(engine, loaded, clock, people, old)
    fleet = [build(engine, tmp_path, loaded, clock, "new.key", previous=old.verifier_keys)
             for _ in range(6)]
    for broker in fleet:
        broker.check_against_anchors()
    start = threading.Barrier(len(fleet))

    def first_checkpoint(audit: AuditLog) -> str | None:
        start.wait()
        return audit.checkpoint()

    with ThreadPoolExecutor(len(fleet)) as pool:
        signed = list(pool.map(first_checkpoint, fleet))
    assert len(rotations(engine)) == 1
    assert all(text is not None for text in signed)
    with engine.connect() as conn:
        outages = conn.execute(select(t.events.c.idx).where(
            t.events.c.action == EventTag.ANCHOR_FAILED)).all()
    assert outages == []
    assert fleet[0].verify().ok
