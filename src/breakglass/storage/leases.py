"""Leases on requests: who holds the work of ending one, and when it may be retried.

The revocation work of a request is held by one caller at a time, recorded in
the request's row (``lease_owner``, ``lease_until``) in the transaction that
row-locks it, so brokers sharing a store, and callers inside one broker,
never end one request twice; a holder that dies leaves work another takes
over when the lease runs out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, or_, select, update

from breakglass.domain.model import RequestState
from breakglass.storage import tables as t


class RequestLeases:
    """The lease queries of :class:`~breakglass.storage.repository.RequestRepository`."""

    _conn: Connection
    _locking: bool

    def claim_due(
        self, now: datetime, owner: str, lease: timedelta, limit: int = 100,
        *, run: str | None = None,
    ) -> list[str]:
        """Claim access that has run out (or whose revocation is due for a retry).

        On PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED`` so that
        brokers sharing a database claim disjoint batches; the lease lets another
        broker take over when the owner dies mid-claim."""
        r = t.requests.c
        free = or_(r.lease_until.is_(None), r.lease_until <= now, r.lease_owner == owner)
        if run is not None:  # callers of this broker before it restarted (not of ``run``)
            free = or_(free, and_(r.lease_owner.startswith(owner + "/", autoescape=True),
                                  ~r.lease_owner.startswith(run, autoescape=True)))
        due = or_(
            and_(r.state == RequestState.ACTIVE.value, r.expires_at <= now),
            and_(
                r.state == RequestState.REVOKING.value,
                or_(r.next_attempt_at.is_(None), r.next_attempt_at <= now),
            ),
        )
        query = select(r.id).where(due, free).order_by(r.expires_at).limit(limit)
        if self._locking:
            query = query.with_for_update(skip_locked=True)
        ids = [row.id for row in self._conn.execute(query)]
        if ids:
            self._conn.execute(
                update(t.requests)
                .where(r.id.in_(ids))
                .values(lease_owner=owner, lease_until=now + lease)
            )
        return ids

    def take_lease(self, request_id: str, holder: str, now: datetime, lease: timedelta,
                   *, reclaimable: Callable[[str], bool] = lambda _owner: False) -> bool:
        """Hold the revocation work of one (row-locked) request, unless another holder does.

        ``holder`` names one caller, not one broker: two callers in one process (an explicit
        revoke and the expiry loop) exclude each other like two brokers do. A lease that
        ran out, or one ``reclaimable`` says is the caller's own (a claim of its broker, a
        holder of a previous run of it), is taken over."""
        row = self._conn.execute(
            select(t.requests.c.lease_owner, t.requests.c.lease_until).where(
                t.requests.c.id == request_id
            )
        ).one()
        until = t.UTCDateTime().process_result_value(row.lease_until, self._conn.dialect)
        free = row.lease_owner is None or until is None or until <= now
        if not free and row.lease_owner != holder and not reclaimable(row.lease_owner):
            return False
        self._conn.execute(
            update(t.requests)
            .where(t.requests.c.id == request_id)
            .values(lease_owner=holder, lease_until=now + lease)
        )
        return True

    def holds_lease(self, request_id: str, holder: str) -> bool:
        owner = self._conn.execute(
            select(t.requests.c.lease_owner).where(t.requests.c.id == request_id)).scalar()
        return owner == holder

    def release(self, request_id: str) -> None:
        """Give the work back after it succeeded."""
        self._conn.execute(
            update(t.requests)
            .where(t.requests.c.id == request_id)
            .values(lease_owner=None, lease_until=None, next_attempt_at=None, last_error=None)
        )

    def release_failed(self, request_id: str, error: str, now: datetime,
                       backoff: Callable[[int], timedelta]) -> int:
        """Give the work back after a failure: count it and schedule the retry."""
        r = t.requests.c
        attempts = int(self._conn.execute(
            select(r.attempts).where(r.id == request_id)).scalar() or 0) + 1
        self._conn.execute(
            update(t.requests)
            .where(r.id == request_id)
            .values(lease_owner=None, lease_until=None, attempts=attempts,
                    next_attempt_at=now + backoff(attempts), last_error=error)
        )
        return attempts

    def last_error(self, request_id: str) -> str | None:
        value = self._conn.execute(
            select(t.requests.c.last_error).where(t.requests.c.id == request_id)
        ).scalar()
        return None if value is None else str(value)
