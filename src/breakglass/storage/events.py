"""The append-only event log: gapless indices, each row a Merkle leaf."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, func, insert, select, update

from breakglass.audit.canonical import canonical_json
from breakglass.audit.merkle import TreeState, leaf_hash
from breakglass.storage import tables as t


@dataclass(frozen=True, slots=True)
class Event:
    """One audit event, as stored and as exported."""

    index: int
    ts: datetime
    actor: str
    action: str
    outcome: str
    request_id: str | None
    grant_id: str | None
    incident: str | None
    zone: str | None
    rule: str | None
    reason: str | None
    payload: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The canonical form that is hashed into the log."""
        return {
            "index": self.index,
            "ts": self.ts.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "grant_id": self.grant_id,
            "incident": self.incident,
            "zone": self.zone,
            "rule": self.rule,
            "reason": self.reason,
            "payload": self.payload,
        }


@dataclass(frozen=True, slots=True)
class Appended:
    """What an event observer is shown: the event, inside the transaction that wrote it.

    Rows the observer writes through ``connection`` commit or roll back with the
    event; work that must wait for the commit goes to ``after_commit``.
    """

    event: Event
    connection: Connection
    log: EventLog
    after_commit: Callable[[Callable[[], None]], None]


EventObserver = Callable[[Appended], None]
_observers: WeakKeyDictionary[Engine, list[EventObserver]] = WeakKeyDictionary()
_observers_lock = threading.Lock()


def observe(engine: Engine, observer: EventObserver) -> Callable[[], None]:
    """Show ``observer`` every event appended through a unit of work on ``engine``.

    Returns the function that removes it again.
    """
    with _observers_lock:
        _observers.setdefault(engine, []).append(observer)

    def remove() -> None:
        with _observers_lock:
            found = _observers.get(engine, [])
            if observer in found:
                found.remove(observer)

    return remove


def observers_for(engine: Engine) -> tuple[EventObserver, ...]:
    with _observers_lock:
        return tuple(_observers.get(engine, ()))


def _drop(callback: Callable[[], None]) -> None:
    del callback


class EventLog:
    def __init__(
        self,
        conn: Connection,
        *,
        locking: bool,
        observers: tuple[EventObserver, ...] = (),
        after_commit: Callable[[Callable[[], None]], None] = _drop,
    ) -> None:
        self._conn = conn
        self._locking = locking
        self._head: tuple[int, TreeState] | None = None
        self._observers = observers
        self._after_commit = after_commit

    def _load_head(self) -> tuple[int, TreeState]:
        if self._head is None:
            query = select(t.log_head.c.size, t.log_head.c.state).where(t.log_head.c.id == 1)
            if self._locking:
                query = query.with_for_update()
            row = self._conn.execute(query).first()
            if row is None:
                self._conn.execute(insert(t.log_head).values(id=1, size=0, state={}))
                self._head = (0, TreeState())
            else:
                state = TreeState.from_json(row.state) if row.state else TreeState()
                self._head = (int(row.size), state)
        return self._head

    def last_index_of(self, request_id: str) -> int | None:
        """The newest event of a request: where it sits in the audit log."""
        value = self._conn.execute(
            select(func.max(t.events.c.idx)).where(t.events.c.request_id == request_id)
        ).scalar()
        return None if value is None else int(value)

    def append(
        self,
        *,
        ts: datetime,
        actor: str,
        action: str,
        outcome: str = "ok",
        request_id: str | None = None,
        grant_id: str | None = None,
        incident: str | None = None,
        zone: str | None = None,
        rule: str | None = None,
        reason: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Event:
        size, frontier = self._load_head()
        event = Event(
            index=size,
            ts=ts,
            actor=actor,
            action=str(action),
            outcome=outcome,
            request_id=request_id,
            grant_id=grant_id,
            incident=incident,
            zone=zone,
            rule=rule,
            reason=reason,
            payload=dict(payload or {}),
        )
        digest = leaf_hash(canonical_json(event.record()))
        frontier.append(digest)
        self._conn.execute(
            insert(t.events).values(
                idx=event.index,
                ts=ts,
                actor=actor,
                action=event.action,
                outcome=outcome,
                request_id=request_id,
                grant_id=grant_id,
                incident=incident,
                zone=zone,
                rule=rule,
                reason=reason,
                payload=event.payload,
                leaf_hash=digest,
            )
        )
        self._conn.execute(
            update(t.log_head).where(t.log_head.c.id == 1).values(
                size=size + 1, state=frontier.to_json()
            )
        )
        self._head = (size + 1, frontier)
        for observer in self._observers:
            observer(Appended(event, self._conn, self, self._after_commit))
        return event


def row_to_event(row: Any) -> Event:
    return Event(
        index=int(row.idx),
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        outcome=row.outcome,
        request_id=row.request_id,
        grant_id=row.grant_id,
        incident=row.incident,
        zone=row.zone,
        rule=row.rule,
        reason=row.reason,
        payload=dict(row.payload or {}),
    )


def iter_events(conn: Connection, *, incident: str | None = None, start: int = 0,
                end: int | None = None, batch: int = 5000) -> Iterator[Event]:
    """Stream events in index order without loading the whole log."""
    position = start
    while True:
        query = select(t.events).where(t.events.c.idx >= position).order_by(t.events.c.idx)
        if incident is not None:
            query = query.where(t.events.c.incident == incident)
        if end is not None:
            query = query.where(t.events.c.idx < end)
        rows = conn.execute(query.limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield row_to_event(row)
        position = int(rows[-1].idx) + 1
