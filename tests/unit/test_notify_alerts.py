"""High-risk alert rules: each alert names the grant, the incident and the principal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from breakglass.domain.errors import PolicyRefused
from breakglass.domain.events import EventTag
from breakglass.storage.uow import UnitOfWork
from tests.fakes import FakeClock
from tests.ops_harness import Harness, make_harness


@pytest.fixture
def h(sqlite: Engine, tmp_path: Path) -> Iterator[Harness]:
    logs = tmp_path / "pglog"
    logs.mkdir()
    harness = make_harness(sqlite, FakeClock(), logs)
    yield harness
    harness.ops.close()


def alerts(h: Harness, rule: str) -> list[dict]:
    return [row.payload for row in h.outbox(topic=f"alert.{rule}", sink="hooks")]


def zone_c(h: Harness, incident: str = "SEV-3001") -> str:
    rid = h.broker.request_access(h.who("uma"), ["embeddings-repair"], incident=incident,
                                  reason="data_integrity").request.id
    h.broker.approve(h.who("vera"), rid)
    h.broker.approve(h.who("wim"), rid)
    return rid


def test_zone_c_activation_alerts_to_every_sink(h):
    rid = zone_c(h)
    [alert] = alerts(h, "zone_c_activation")
    assert (alert["request_id"], alert["grant_id"], alert["incident"], alert["principal"]) == (
        rid, f"{rid}-g0", "SEV-3001", "uma")
    assert alert["severity"] == "high"
    assert alert["grants"][0]["role"] == "embeddings-repair"
    assert {r.sink for r in h.outbox(topic="alert.zone_c_activation")} == {"hooks", "chat"}
    assert h.outbox(topic="alert.identity_change") == []


def test_an_identity_change_in_the_statement_log_alerts_with_the_grant(h):
    rid = zone_c(h, "SEV-3002")
    role = h.broker.view(rid).grants[0].target_ref
    h.write_statement_log(role, "SELECT 1", "CREATE ROLE x PASSWORD 'secret'")
    h.write_statement_log("postgres", "CREATE ROLE admin_made_this")  # not an emergency role
    assert h.ops.watcher.poll() == 1
    [alert] = alerts(h, "identity_change")
    assert (alert["grant_id"], alert["request_id"], alert["incident"], alert["principal"]) == (
        f"{rid}-g0", rid, "SEV-3002", "uma")
    assert alert["severity"] == "critical"
    assert alert["details"]["statement"] == "CREATE ROLE x PASSWORD '***'"
    assert "secret" not in json.dumps(alert)
    [event] = [e for e in h.broker.timeline("SEV-3002") if e.action == EventTag.HIGH_RISK_ACTION]
    assert (event.actor, event.grant_id, event.payload["kind"]) == ("uma", f"{rid}-g0",
                                                                   "identity_change")


def test_a_burst_of_refusals_by_one_principal_alerts_once_per_burst(h):
    def refused(name: str) -> None:
        with pytest.raises(PolicyRefused):
            h.broker.request_access(h.who(name), ["embeddings-requeue"], incident="SEV-3003",
                                    reason="recovery")

    refused("xia")
    h.clock.advance(minutes=6)  # outside the 5-minute window: forgotten
    refused("xia")
    refused("yuri")
    h.clock.advance(minutes=1)
    refused("xia")
    assert alerts(h, "violation_burst") == []
    refused("xia")  # three within five minutes
    [alert] = alerts(h, "violation_burst")
    assert alert["principal"] == "xia"
    assert alert["details"] == {"refusals": 3, "within": "5m", "rules": ["identity.mfa_required"]}
    refused("xia")
    assert len(alerts(h, "violation_burst")) == 1  # the count starts again


def test_failed_and_late_revocations_alert(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-3004",
                                  reason="recovery").request.id
    h.clock.advance(minutes=20, seconds=1)
    h.target.fail_revoke = True
    h.broker.expire_due()
    h.clock.advance(seconds=5)
    h.broker.expire_due()  # the retry fails too: alerted once, not again
    [failed] = alerts(h, "revocation_failed")
    assert (failed["request_id"], failed["grant_id"], failed["principal"]) == (
        rid, f"{rid}-g0", "uma")
    assert "is down" in failed["summary"]
    h.target.fail_revoke = False
    h.clock.advance(minutes=2)
    h.broker.expire_due()
    [late] = alerts(h, "late_revocation")
    assert late["grant_id"] == f"{rid}-g0"
    assert late["details"]["lag_seconds"] > 60


def test_an_on_time_expiry_does_not_alert(h):
    h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-3005",
                            reason="recovery")
    h.clock.advance(minutes=20, seconds=1)
    h.broker.expire_due()
    assert h.outbox(kind="alert") == []


def test_a_revocation_carries_the_expiry_it_is_judged_by(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-3006",
                                  reason="recovery").request.id
    h.clock.advance(minutes=20, seconds=1)
    h.broker.expire_due()
    with UnitOfWork(h.engine) as uow:
        [grant] = uow.grants.for_request(rid)
        [event] = [e for e in uow.events_since(0) if e.action == EventTag.GRANT_EXPIRED]
    assert event.payload["expires_at"] == grant.expires_at.isoformat()


def test_a_revocation_written_without_the_expiry_is_judged_by_the_stored_grant(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-3007",
                                  reason="recovery").request.id
    h.clock.advance(hours=2)
    with UnitOfWork(h.engine) as uow:  # as a broker of an earlier release wrote it
        uow.events.append(ts=h.clock.now(), actor="broker", action=EventTag.GRANT_REVOKED,
                          request_id=rid, grant_id=f"{rid}-g0", incident="SEV-3007",
                          payload={"target": "embeddings-db"})
    [late] = alerts(h, "late_revocation")
    assert late["details"]["lag_seconds"] > 3600


def test_flagged_and_pattern_events_alert(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-3006",
                                  reason="recovery").request.id
    ref = h.broker.view(rid).grants[0].target_ref
    with UnitOfWork(h.engine) as uow:
        uow.events.append(ts=h.clock.now(), actor="broker", action=EventTag.DRIFT_MISSING,
                          outcome="alert", reason=f"credential {ref} is gone",
                          payload={"target": "embeddings-db", "target_ref": ref, "alert": True})
        uow.events.append(ts=h.clock.now(), actor="auditor", action="audit:chain:tampered",
                          outcome="error", reason="leaf 17 does not match")
    [drift] = alerts(h, "drift_missing")
    assert (drift["grant_id"], drift["request_id"], drift["principal"], drift["incident"]) == (
        f"{rid}-g0", rid, "uma", "SEV-3006")
    [tamper] = alerts(h, "audit_tamper")
    assert tamper["details"]["reason"] == "leaf 17 does not match"

