"""The unit of work: one database transaction holding repositories and the event log.

Every state change and its audit event are written in the same transaction
(STYLE 5). On SQLite the transaction starts with ``BEGIN IMMEDIATE`` so the
log head is taken before anything is read; on PostgreSQL the log-head row is
locked with ``SELECT ... FOR UPDATE``, which keeps event indices gapless.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

from breakglass.storage.events import Event, EventLog, iter_events, observers_for
from breakglass.storage.repository import GrantRepository, RequestRepository


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
    """``with uow:`` opens a transaction; leaving the block commits, an exception rolls back."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self._after_commit: list[Callable[[], object]] = []

    def __enter__(self) -> UnitOfWork:
        self._conn = self._engine.connect()
        self._conn.begin()
        self.connection = self._conn
        locking = self._engine.dialect.name == "postgresql"
        self.requests = RequestRepository(self._conn, locking=locking)
        self.grants = GrantRepository(self._conn, locking=locking)
        self.events = EventLog(self._conn, locking=locking,
                               observers=observers_for(self._engine), after_commit=self.on_commit)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is None:
            return
        try:
            if exc_type is None:
                self._conn.commit()
            else:
                self._conn.rollback()
        finally:
            self._conn.close()
            self._conn = None
        if exc_type is None:
            for callback in self._after_commit:
                callback()
        self._after_commit.clear()

    def events_since(self, start: int) -> list[Event]:
        return list(iter_events(self.connection, start=start))

    def on_commit(self, callback: Callable[[], object]) -> None:
        self._after_commit.append(callback)


UnitOfWorkFactory = Callable[[], UnitOfWork]
