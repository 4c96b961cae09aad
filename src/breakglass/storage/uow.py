"""The unit of work: one database transaction holding repositories and the event log.

Every state change and its audit events are written in the same transaction.
On SQLite the transaction starts with ``BEGIN IMMEDIATE`` so the database is
held before anything is read; on PostgreSQL the events take their indices
from the log-head row at commit (``UPDATE ... RETURNING``), whose row lock
keeps indices gapless and lasts only until the commit right after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, create_engine, event

from breakglass.storage.events import Event, EventLog, PendingEvents, iter_events, observers_for
from breakglass.storage.ownership import OwnershipRepository
from breakglass.storage.repository import (
    GrantRepository,
    RequestRepository,
    SessionRepository,
)


def make_engine(url: str) -> Engine:
    """An engine with the pragmas and isolation breakglass relies on."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8, max_overflow=16,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # no pre-ping: it costs a round trip per transaction; a dropped connection fails the
    # transaction it was used in and the pool replaces it
    return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800)


class UnitOfWork:
    """``with uow:`` opens a transaction; leaving the block commits, an exception rolls back.

    The connection is taken at first use. A unit that only appends events (a
    refusal, a login, a finding) has nothing to hold the log for: its events go
    to the engine's :class:`GroupCommit` and share a transaction with the other
    writers' events arriving at the same time; ``with`` still returns only once
    they are committed.
    """

    def __init__(self, engine: Engine, *, group: bool = True) -> None:
        self._engine = engine
        self._group = group
        self._conn: Connection | None = None
        self._locking = engine.dialect.name == "postgresql"
        self._requests: RequestRepository | None = None
        self._grants: GrantRepository | None = None
        self._after_commit: list[Callable[[], object]] = []
        self._isolation: str | None = None
        self.events = EventLog(self._connection, locking=self._locking,
                               observers=observers_for(engine), after_commit=self.on_commit)

    def __enter__(self) -> UnitOfWork:
        return self

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            if self._isolation is not None:
                self._conn.execution_options(isolation_level=self._isolation)
            self._conn.begin()
        return self._conn

    def snapshot(self) -> UnitOfWork:
        """Make every read of this unit one consistent view of the store; call it first.

        PostgreSQL: a ``REPEATABLE READ`` transaction (one snapshot for all its
        statements). SQLite: ``BEGIN IMMEDIATE`` already holds the database throughout."""
        if self._conn is not None:
            raise RuntimeError("snapshot() must come before the unit's first read")
        if self._locking:
            self._isolation = "REPEATABLE READ"
        return self

    @property
    def connection(self) -> Connection:
        return self._connection()

    @property
    def requests(self) -> RequestRepository:
        if self._requests is None:
            self._requests = RequestRepository(self._connection(), locking=self._locking)
        return self._requests

    @property
    def grants(self) -> GrantRepository:
        if self._grants is None:
            self._grants = GrantRepository(self._connection(), locking=self._locking)
        return self._grants

    @property
    def ownership(self) -> OwnershipRepository:
        return OwnershipRepository(self._connection())

    @property
    def sessions(self) -> SessionRepository:
        return SessionRepository(self._connection())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._commit()
            elif self._conn is not None:
                self._conn.rollback()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if exc_type is None:
            for callback in self._after_commit:
                callback()
        self._after_commit.clear()

    def _commit(self) -> None:
        if self._conn is None and self._group and self.events.pending:
            group_commit(self._engine).write(self.events.take())
            return
        if self._conn is None and not self.events.pending:
            return  # nothing was read or written
        conn = self._connection()
        self.events.flush(commit=True)
        conn.commit()  # a no-op on the server when the flush committed

    def events_since(self, start: int) -> list[Event]:
        """Events stored from ``start`` on, this transaction's kept events written first."""
        self.events.flush()
        return list(iter_events(self.connection, start=start))

    def on_commit(self, callback: Callable[[], object]) -> None:
        self._after_commit.append(callback)


class GroupCommit:
    """Commits the events of concurrent event-only units together.

    The first writer to arrive leads: it takes every batch queued so far and
    writes them in one transaction (one log-head update, one fsync on SQLite);
    writers arriving meanwhile queue for the next leader. A failed shared
    transaction is retried one batch per transaction, so a bad event fails
    only its own writer.
    """

    def __init__(self, engine: Engine, limit: int = 500) -> None:
        self._engine = engine
        self._limit = limit
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._leading = False

    def write(self, pending: PendingEvents) -> None:
        ticket = _Ticket(pending)
        with self._cond:
            self._queue.append(ticket)
        while not ticket.done:
            with self._cond:
                while not ticket.done and self._leading:
                    self._cond.wait()
                if ticket.done:
                    break
                self._leading = True
                tickets, self._queue = self._queue[: self._limit], self._queue[self._limit :]
            try:
                self._write_all(tickets)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error

    def _write_all(self, tickets: list[_Ticket]) -> None:
        finished = False
        try:
            try:
                self._write_one(tickets)
            except Exception as exc:  # noqa: BLE001 - each error goes back to its own writer
                if len(tickets) == 1:
                    tickets[0].error = exc
                else:
                    for ticket in tickets:
                        try:
                            self._write_one([ticket])
                        except Exception as alone:  # noqa: BLE001 - as above
                            ticket.error = alone
            finished = True
        finally:
            for ticket in tickets:
                if not finished and ticket.error is None:
                    ticket.error = RuntimeError("the shared audit commit was interrupted")
                ticket.done = True

    def _write_one(self, tickets: list[_Ticket]) -> None:
        with UnitOfWork(self._engine, group=False) as uow:
            for ticket in tickets:
                uow.events.extend(ticket.pending)


class _Ticket:
    __slots__ = ("done", "error", "pending")

    def __init__(self, pending: PendingEvents) -> None:
        self.pending = pending
        self.done = False
        self.error: Exception | None = None


_committers: WeakKeyDictionary[Engine, GroupCommit] = WeakKeyDictionary()
_committers_lock = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit:
    with _committers_lock:
        found = _committers.get(engine)
        if found is None:
            found = _committers[engine] = GroupCommit(engine)
        return found


UnitOfWorkFactory = Callable[[], UnitOfWork]
