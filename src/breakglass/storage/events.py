"""The append-only event log: gapless indices, each row a Merkle leaf."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from breakglass.audit.canonical import canonical_split
from breakglass.audit.merkle import leaf_hash
from breakglass.domain.events import SOURCE, caller_address
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


def before_index(observer: EventObserver) -> EventObserver:
    """Mark ``observer`` as not needing the event's index: it then runs before the log
    head is taken (``event.index`` is -1), which keeps its queries out of the time the
    head is held."""
    setattr(observer, _BEFORE_INDEX, True)
    return observer


def runs_before_index(observer: EventObserver) -> bool:
    return bool(getattr(observer, _BEFORE_INDEX, False))


_BEFORE_INDEX = "breakglass_before_index"


Step = Callable[[Appended], None]


class Composing:
    """An observer in two steps (see :func:`composing`)."""

    def __init__(self, compose: Callable[[Appended], Step | None]) -> None:
        self.compose = compose

    def __call__(self, a: Appended) -> None:  # both steps at once, outside an event log
        step = self.compose(a)
        if step is not None:
            step(a)


def composing(compose: Callable[[Appended], Step | None]) -> Composing:
    """An observer that needs the event's index, without holding the log head for its reads.

    ``compose`` sees each event inside its transaction but before it has its
    index (``event.index`` is -1), like a :func:`before_index` observer: what it
    reads and writes there does not hold the head. It returns the step to run
    once the event has its index (shown the indexed event, after the leaves are
    written and before the commit: keep it to writes) or None to pass the event
    over. A transaction none of whose events has such a step commits with its
    leaves, in the same message, instead of holding the head.
    """
    return Composing(compose)


def observers_for(engine: Engine) -> tuple[EventObserver, ...]:
    with _observers_lock:
        return tuple(_observers.get(engine, ()))


def _drop(callback: Callable[[], None]) -> None:
    del callback


@dataclass(frozen=True, slots=True)
class _Pending:
    """An appended event before its index is known, with its leaf bytes around the index,
    and what composing observers will do once it has one."""

    event: Event
    before: bytes
    after: bytes
    steps: list[Step] = field(default_factory=list)


PendingEvents = list[_Pending]

# Takes the next indices and writes the leaves in one statement. The leaf hash is
# SHA-256(0x00 || canonical JSON); the JSON is the client's bytes with the index,
# known only here, spliced in where it sorts, so the log-head row is locked for
# this statement and the commit pipelined after it, never across a round trip. The
# rows travel as one JSON array: one parameter to bind, whatever the batch.
_PG_FLUSH = """
WITH head AS (
    UPDATE log_head SET size = size + %(n)s WHERE id = 1 RETURNING size - %(n)s AS base
)
INSERT INTO events (idx, ts, actor, action, outcome, request_id, grant_id, incident, zone,
                    rule, reason, payload, leaf_hash)
SELECT head.base + v.pos, v.ts, v.actor, v.action, v.outcome, v.request_id, v.grant_id,
       v.incident, v.zone, v.rule, v.reason, v.payload,
       sha256('\\x00'::bytea || decode(v.before, 'hex')
              || convert_to((head.base + v.pos)::text, 'UTF8') || decode(v.after, 'hex'))
FROM head, json_to_recordset(%(rows)s::json) AS v(
    pos bigint, ts timestamptz, actor text, action text, outcome text, request_id text,
    grant_id text, incident text, zone text, rule text, reason text, payload json,
    before text, after text)
RETURNING idx
"""


_LAST_OF_REQUEST = (select(func.max(t.events.c.idx))
                    .where(t.events.c.request_id == bindparam("request_id")))


class EventLog:
    """Events of one transaction, written as leaves when it commits.

    ``append`` checks and keeps an event; :meth:`flush` gives the kept events
    the next indices, writes them and shows them to the observers (whose own
    events are written in turn). Indices are taken last so the log head is
    held only for the end of the transaction: on PostgreSQL, a transaction
    with no observers writes its leaves and commits in one statement.
    """

    def __init__(
        self,
        conn: Callable[[], Connection],
        *,
        locking: bool,
        observers: tuple[EventObserver, ...] = (),
        after_commit: Callable[[Callable[[], None]], None] = _drop,
    ) -> None:
        self._connect = conn
        self._postgres = locking
        self._pending: list[_Pending] = []
        self._shown = 0  # how many of _pending the early observers have seen
        early = [o for o in observers if runs_before_index(o) or isinstance(o, Composing)]
        self._early = tuple(early)
        self._observers = tuple(o for o in observers if o not in early)
        self._after_commit = after_commit

    def last_index_of(self, request_id: str) -> int | None:
        """The newest event of a request: where it sits in the audit log."""
        value = self._connect().execute(_LAST_OF_REQUEST, {"request_id": request_id}).scalar()
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
    ) -> None:
        """Keep an event for this transaction; ``AuditError`` now if it cannot be hashed.

        Written while a client's call is served, the event carries the client's address
        as ``payload.source`` (unless the payload names one itself).
        """
        event = Event(
            index=-1,
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
        source = caller_address.get()
        if source is not None:
            event.payload.setdefault(SOURCE, source)
        before, after = canonical_split(event.record(), "index")
        self._pending.append(_Pending(event, before, after))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self) -> PendingEvents:
        """Hand the kept events over (to be written by another unit)."""
        taken, self._pending, self._shown = self._pending, [], 0
        return taken

    def extend(self, pending: PendingEvents) -> None:
        self._pending.extend(pending)

    def flush(self, *, commit: bool = False) -> bool:
        """Write the kept events; with ``commit``, commit too when nothing else must run first.

        Observers marked :func:`before_index` and :func:`composing` see each event
        first (and may add events); composing observers' steps and the other
        observers see the events once they have their indices, before the commit.
        Returns whether nothing was left to run before the commit: on PostgreSQL the
        commit then went with the leaves; on SQLite the caller's commit follows.
        """
        while True:
            while self._shown < len(self._pending):
                pending = self._pending[self._shown]
                self._shown += 1
                for observer in self._early:
                    if isinstance(observer, Composing):
                        step = observer.compose(self._shown_to(pending.event))
                        if step is not None:
                            pending.steps.append(step)
                    else:
                        observer(self._shown_to(pending.event))
            if not self._pending:
                return False
            batch, self._pending, self._shown = self._pending, [], 0
            last = commit and not self._observers and not any(p.steps for p in batch)
            written = (self._write_postgres(batch, commit=last) if self._postgres
                       else self._write_sqlite(batch))
            for event, p in zip(written, batch, strict=True):
                for step in (*p.steps, *self._observers):
                    step(self._shown_to(event))
            if last:
                return True

    def _shown_to(self, event: Event) -> Appended:
        return Appended(event, self._connect(), self, self._after_commit)

    def _write_sqlite(self, batch: list[_Pending]) -> list[Event]:
        # BEGIN IMMEDIATE already holds the database's write lock
        conn = self._connect()
        size = conn.execute(
            select(t.log_head.c.size).where(t.log_head.c.id == 1)).scalar_one()
        events = [replace(p.event, index=size + i) for i, p in enumerate(batch)]
        rows = []
        for p, event in zip(batch, events, strict=True):
            data = p.before + str(event.index).encode() + p.after
            rows.append({**_columns(event), "leaf_hash": leaf_hash(data)})
        conn.execute(insert(t.events), rows)
        conn.execute(
            update(t.log_head).where(t.log_head.c.id == 1).values(size=size + len(batch)))
        return events

    def _write_postgres(self, batch: list[_Pending], *, commit: bool) -> list[Event]:
        raw = self._connect().connection.driver_connection
        if not isinstance(raw, psycopg.Connection):
            raise TypeError("the PostgreSQL event log needs a psycopg 3 connection")
        rows = [
            {**_columns(p.event), "pos": i, "ts": p.event.ts.isoformat(),
             "before": p.before.hex(), "after": p.after.hex()}
            for i, p in enumerate(batch)
        ]
        params = {"n": len(batch), "rows": json.dumps(rows)}
        autocommit = raw.autocommit
        # BEGIN (if nothing else ran), the leaves and COMMIT go out together in pipeline mode:
        # one round trip, and the statement is prepared once per connection, so the server
        # neither parses nor plans it again
        begin = commit and raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            if begin:
                raw.autocommit = True
            with raw.pipeline():
                if begin:
                    raw.execute("BEGIN")
                cur = raw.cursor()
                cur.execute(_PG_FLUSH, params, prepare=True)
                if commit:
                    raw.execute("COMMIT")
            indices = sorted(int(row[0]) for row in cur.fetchall())
        except psycopg.Error as exc:  # raised as SQLAlchemy would, for the callers' handlers
            raise DBAPIError.instance(_PG_FLUSH, None, exc, psycopg.Error) from exc
        finally:
            if raw.autocommit != autocommit:
                if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    raw.rollback()  # the statement failed inside the BEGIN it sent
                raw.autocommit = autocommit
        return [replace(p.event, index=i) for p, i in zip(batch, indices, strict=True)]


def _columns(event: Event) -> dict[str, Any]:
    return {
        "idx": event.index, "ts": event.ts, "actor": event.actor, "action": event.action,
        "outcome": event.outcome, "request_id": event.request_id, "grant_id": event.grant_id,
        "incident": event.incident, "zone": event.zone, "rule": event.rule,
        "reason": event.reason, "payload": event.payload,
    }


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
