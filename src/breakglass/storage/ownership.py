"""What this deployment owns: its ownership key, and the records drift needs as evidence.

The deployment row holds the random key that tags every name the broker creates on
a target (:class:`breakglass.connectors.base.Ownership`). It is made once, by whichever
broker of the fleet starts first (insert-if-absent, then read back), so every broker
of one store shares it and a broker of another store has another.

:meth:`OwnershipRepository.records_for` answers the drift sweep's one question about
names it found on a target: which of them does the store know as in force, and which
as over. The sweep reads it inside :meth:`UnitOfWork.snapshot`, so all of it comes from
one consistent view of the store.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from breakglass.domain.model import GrantState, RequestState
from breakglass.storage import tables as t

_LIVE = frozenset({GrantState.ACTIVE.value, GrantState.REVOCATION_PENDING.value})
_ENDED = frozenset({GrantState.REVOKED.value, GrantState.EXPIRED.value,
                    GrantState.FAILED.value})
_CHUNK = 500  # names per IN list: well under every driver's parameter limit


@dataclass(frozen=True, slots=True)
class RecordedRefs:
    """What the store says about a set of target-side names (one snapshot)."""

    live: frozenset[str]
    """Names of grants in force or still being revoked."""
    ended: frozenset[str]
    """Names of grants whose life is over (revoked, expired, failed)."""
    activating: tuple[tuple[str, tuple[str, ...]], ...]
    """``(request ID, roles)`` of activations in flight: their names may not be stored yet."""
    failed: tuple[tuple[str, tuple[str, ...]], ...]
    """``(request ID, roles)`` of activations that failed: no grant of theirs is in force."""


class OwnershipRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def ownership_key(self, fresh: bytes, now: datetime) -> bytes:
        """The deployment's key; ``fresh`` becomes it if there is none yet (race-free)."""
        dialect = self._conn.dialect.name
        upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t.deployment)
        self._conn.execute(
            upsert.values(id=1, ownership_key=fresh, created_at=now)
            .on_conflict_do_nothing(index_elements=[t.deployment.c.id])
        )
        key = self._conn.execute(
            select(t.deployment.c.ownership_key).where(t.deployment.c.id == 1)
        ).scalar_one()
        return bytes(key)

    def records_for(self, refs: Collection[str]) -> RecordedRefs:
        """The store's evidence about ``refs`` (names found on a target, of any target)."""
        live: set[str] = set()
        ended: set[str] = set()
        for chunk in _chunks(sorted(refs)):
            rows = self._conn.execute(
                select(t.grants.c.target_ref, t.grants.c.state)
                .where(t.grants.c.target_ref.in_(chunk))
            )
            for ref, state in rows:
                if state in _LIVE:
                    live.add(ref)
                elif state in _ENDED:
                    ended.add(ref)
        return RecordedRefs(
            live=frozenset(live), ended=frozenset(ended - live),
            activating=self._requests(RequestState.ACTIVATING),
            failed=self._requests(RequestState.FAILED),
        )

    def _requests(self, state: RequestState) -> tuple[tuple[str, tuple[str, ...]], ...]:
        rows = self._conn.execute(
            select(t.requests.c.id, t.requests.c.roles).where(
                t.requests.c.state == state.value,
                t.requests.c.activated_at.is_not(None),  # it reached a target
            )
        )
        return tuple((r.id, tuple(r.roles)) for r in rows)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]
