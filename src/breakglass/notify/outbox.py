"""The durable outbox: one row per message and sink, written with the event it follows.

Rows are written inside the transaction of the audit event that caused them,
so a message exists exactly when its event does. Delivery claims due rows by
pushing ``next_attempt_at`` one lease ahead (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so brokers sharing a database claim disjoint rows); a broker that
dies mid-delivery leaves the row to be claimed again when the lease runs out.
Delivery is therefore at least once; receivers deduplicate on the delivery ID.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from breakglass.notify.config import Sink
from breakglass.storage import tables_notify as tn

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"


@dataclass(frozen=True, slots=True)
class Message:
    """A notification or an alert, composed from its event before the event has its index.

    :meth:`at` gives the message for the index: ``event_idx``, the dedupe key of a
    message sent once per event (``per_event``: the key is followed by the
    index) and the index in ``data["event"]`` when the message carries the event.
    """

    kind: str  # notification | alert
    topic: str
    dedupe_key: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    grant_id: str | None = None
    incident: str | None = None
    event_idx: int | None = None
    per_event: bool = False

    def at(self, index: int) -> Message:
        data = self.data
        event = data.get("event")
        if isinstance(event, dict):
            data = {**data, "event": {**event, "index": index}}
        key = f"{self.dedupe_key}:{index}" if self.per_event else self.dedupe_key
        return replace(self, dedupe_key=key, data=data, event_idx=index, per_event=False)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    created_at: datetime
    kind: str
    topic: str
    sink: str
    attempts: int
    payload: dict[str, Any]


def enqueue(conn: Connection, message: Message, sinks: tuple[Sink, ...], now: datetime,
            organization: str) -> int:
    """Write one row per sink that takes this kind of message; return how many."""
    rows = [
        {
            "created_at": now,
            "kind": message.kind,
            "topic": message.topic,
            "sink": sink.name,
            "dedupe_key": message.dedupe_key,
            "request_id": message.request_id,
            "grant_id": message.grant_id,
            "incident": message.incident,
            "event_idx": message.event_idx,
            "payload": {"kind": message.kind, "topic": message.topic,
                        "organization": organization, "summary": message.summary,
                        "ts": now.isoformat(), **message.data},
            "state": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for sink in sinks
        if sink.wants(message.kind)
    ]
    if rows:
        conn.execute(insert(tn.outbox), rows)
    return len(rows)


def seen(conn: Connection, dedupe_key: str) -> bool:
    """Whether a message with this key was already written (alerts that fire once)."""
    found = conn.execute(
        select(tn.outbox.c.id).where(tn.outbox.c.dedupe_key == dedupe_key).limit(1)
    ).first()
    return found is not None


def claim(conn: Connection, now: datetime, lease: timedelta, *, locking: bool,
          limit: int = 50) -> list[OutboxRow]:
    """Take the due rows for one lease and count the attempt."""
    o = tn.outbox.c
    query = (select(tn.outbox)
             .where(o.state == PENDING, o.next_attempt_at <= now)
             .order_by(o.id)
             .limit(limit))
    if locking:
        query = query.with_for_update(skip_locked=True)
    found = conn.execute(query).all()
    if not found:
        return []
    ids = [r.id for r in found]
    conn.execute(update(tn.outbox).where(o.id.in_(ids))
                 .values(next_attempt_at=now + lease, attempts=o.attempts + 1))
    return [OutboxRow(id=int(r.id), created_at=r.created_at, kind=r.kind, topic=r.topic,
                      sink=r.sink, attempts=int(r.attempts) + 1, payload=dict(r.payload))
            for r in found]


def mark_delivered(conn: Connection, row_id: int, now: datetime) -> None:
    conn.execute(update(tn.outbox).where(tn.outbox.c.id == row_id)
                 .values(state=DELIVERED, delivered_at=now, last_error=None))


def mark_failed(conn: Connection, row_id: int, error: str, retry_at: datetime | None) -> None:
    """Schedule the retry, or give up (``retry_at`` None) after the last attempt."""
    values: dict[str, Any] = {"last_error": error[:2000]}
    if retry_at is None:
        values["state"] = DEAD
    else:
        values["next_attempt_at"] = retry_at
    conn.execute(update(tn.outbox).where(tn.outbox.c.id == row_id).values(**values))


def backlog(conn: Connection) -> dict[str, int]:
    """Rows by state, for the ``/metrics`` gauges."""
    rows = conn.execute(
        select(tn.outbox.c.state, func.count()).group_by(tn.outbox.c.state)
    ).all()
    return {str(state): int(count) for state, count in rows}


def prune_delivered(conn: Connection, before: datetime) -> int:
    result = conn.execute(delete(tn.outbox).where(tn.outbox.c.state == DELIVERED,
                                                  tn.outbox.c.delivered_at < before))
    return int(result.rowcount or 0)

