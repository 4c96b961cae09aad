"""Messages are composed before their event has its index, and carry the right one.

On both backends: the notification observer reads what it needs before the
log head is taken; only events that cause a message hold the head, for the
step that stamps the index in and writes the outbox rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from breakglass.domain.events import EventTag
from breakglass.notify.observer import NotifyObserver
from breakglass.storage import tables as t
from breakglass.storage.events import Appended, EventLog, observers_for
from tests.fakes import FakeClock
from tests.ops_harness import Harness, make_harness


@pytest.fixture
def composed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """(action, index when composed, whether a step came back) for every event composed."""
    seen: list[tuple[str, int, bool]] = []
    original = NotifyObserver.compose

    def spy(self: NotifyObserver, a: Appended) -> Any:
        step = original(self, a)
        seen.append((a.event.action, a.event.index, step is not None))
        return step

    monkeypatch.setattr(NotifyObserver, "compose", spy)
    return seen


@pytest.fixture
def h(engine: Engine, tmp_path: Path, composed: list[tuple[str, int, bool]]) -> Iterator[Harness]:
    logs = tmp_path / "pglog"
    logs.mkdir()
    harness = make_harness(engine, FakeClock(), logs)
    yield harness
    harness.ops.close()


def actions(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.events.c.idx, t.events.c.action))
        return {int(r.idx): r.action for r in rows}


def test_each_message_carries_the_index_of_the_event_that_caused_it(h: Harness) -> None:
    rid = h.broker.request_access(h.who("uma"), ["embeddings-repair"], incident="SEV-3101",
                                  reason="data_integrity").request.id
    h.broker.approve(h.who("vera"), rid)
    h.broker.approve(h.who("wim"), rid)
    at = actions(h.engine)
    rows = h.outbox()
    assert {r.topic for r in rows} >= {"approval.requested", "approval.added",
                                       "alert.zone_c_activation"}
    for row in rows:
        assert row.dedupe_key == f"{row.topic}:{row.event_idx}"
        expected = {"approval.requested": EventTag.REQUEST_CREATED,
                    "approval.added": EventTag.APPROVAL_ADDED,
                    "alert.zone_c_activation": EventTag.REQUEST_ACTIVE}[row.topic]
        assert at[row.event_idx] == expected, row.topic
    [alert] = [r for r in rows if r.topic == "alert.zone_c_activation" and r.sink == "hooks"]
    assert alert.payload["event"]["index"] == alert.event_idx
    assert alert.payload["event"]["action"] == EventTag.REQUEST_ACTIVE
    added = sorted({r.event_idx for r in rows if r.topic == "approval.added"})
    assert len(added) == 2  # one message per approval, each with its own event


def test_only_events_that_cause_a_message_hold_the_log_head(
        h: Harness, composed: list[tuple[str, int, bool]]) -> None:
    on_time = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-3102",
                                      reason="recovery").request.id
    h.broker.revoke(h.who("uma"), on_time)
    h.clock.advance(minutes=20, seconds=1)
    late = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-3103",
                                   reason="recovery").request.id
    h.clock.advance(minutes=22)
    h.broker.expire_due()
    assert all(index == -1 for _, index, _ in composed)  # composed before the index
    ended = [(action, step) for action, _, step in composed
             if action in (EventTag.GRANT_REVOKED, EventTag.GRANT_EXPIRED)]
    assert ended == [(EventTag.GRANT_REVOKED, False), (EventTag.GRANT_EXPIRED, True)]
    [alert] = h.outbox(topic="alert.late_revocation", sink="hooks")
    assert alert.request_id == late
    assert actions(h.engine)[alert.event_idx] == EventTag.GRANT_EXPIRED

    # the event log commits a passed-over event with its leaves, and holds one with a message
    with h.engine.connect() as conn:
        conn.begin()
        log = EventLog(lambda: conn, locking=h.engine.dialect.name == "postgresql",
                       observers=observers_for(h.engine))
        log.append(ts=h.clock.now(), actor="broker", action="test:event:passed")
        assert log.flush(commit=True) is True
        conn.commit()
        conn.begin()
        log.append(ts=h.clock.now(), actor="broker", action="audit:log:tampered", outcome="error")
        assert log.flush(commit=True) is False
        conn.commit()
    [tamper] = h.outbox(topic="alert.audit_tamper", sink="hooks")
    assert actions(h.engine)[tamper.event_idx] == "audit:log:tampered"
