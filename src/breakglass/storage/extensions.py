"""Extensions and expiry warnings: load and save, nothing else."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from breakglass.domain.errors import Conflict, NotFound
from breakglass.domain.extensions import Extension, ExtensionState
from breakglass.domain.model import Approval, GrantState
from breakglass.storage import tables as t


def _values(ext: Extension) -> dict[str, Any]:
    return {
        "request_id": ext.request_id,
        "requester": ext.requester,
        "requester_subject": ext.requester_id,
        "ttl_seconds": int(ext.ttl.total_seconds()),
        "justification": ext.justification,
        "created_at": ext.created_at,
        "required": ext.required,
        "state": ext.state.value,
        "expires_before": ext.expires_before,
        "expires_after": ext.expires_after,
        "decided_at": ext.decided_at,
        "end_reason": ext.end_reason,
    }


class ExtensionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._locking = conn.dialect.name == "postgresql"

    def add(self, ext: Extension) -> None:
        self._conn.execute(insert(t.extensions).values(id=ext.id, version=0, **_values(ext)))

    def get(self, request_id: str, extension_id: str, *, for_update: bool = False) -> Extension:
        e = t.extensions.c
        query = select(t.extensions).where(e.id == extension_id, e.request_id == request_id)
        if for_update and self._locking:
            query = query.with_for_update()
        row = self._conn.execute(query).first()
        if row is None:
            raise NotFound(f"no extension {extension_id} of request {request_id}",
                           rule="extension.not_found")
        return self._load(row)

    def for_request(self, request_id: str) -> list[Extension]:
        e = t.extensions.c
        rows = self._conn.execute(
            select(t.extensions).where(e.request_id == request_id).order_by(e.created_at, e.id)
        ).all()
        return [self._load(r) for r in rows]

    def open_for(self, request_id: str) -> list[Extension]:
        return [x for x in self.for_request(request_id) if x.state.is_open]

    def save(self, ext: Extension) -> None:
        result = self._conn.execute(
            update(t.extensions)
            .where(t.extensions.c.id == ext.id, t.extensions.c.version == ext.version)
            .values(version=ext.version + 1, **_values(ext))
        )
        if result.rowcount != 1:
            raise Conflict(f"extension {ext.id} changed concurrently; retry", rule="concurrency")
        ext.version += 1

    def add_approval(self, extension_id: str, approval: Approval) -> None:
        self._conn.execute(insert(t.extension_approvals).values(
            extension_id=extension_id, approver=approval.approver,
            approver_subject=approval.approver_id, teams=sorted(approval.teams),
            mfa=approval.mfa, at=approval.at, comment=approval.comment))

    def _load(self, row: Any) -> Extension:
        a = t.extension_approvals.c
        approvals = [
            Approval(approver=r.approver, teams=frozenset(r.teams), mfa=r.mfa, at=r.at,
                     comment=r.comment, approver_subject=r.approver_subject)
            for r in self._conn.execute(
                select(t.extension_approvals).where(a.extension_id == row.id).order_by(a.id))
        ]
        return Extension(
            id=row.id, request_id=row.request_id, requester=row.requester,
            ttl=timedelta(seconds=row.ttl_seconds), justification=row.justification,
            created_at=row.created_at, required=row.required,
            expires_before=row.expires_before, state=ExtensionState(row.state),
            approvals=approvals, expires_after=row.expires_after, decided_at=row.decided_at,
            end_reason=row.end_reason, version=row.version,
            requester_subject=row.requester_subject,
        )


def move_grant_expiry(conn: Connection, grant_id: str, expires_at: datetime) -> None:
    """A grant's new expiry; its warning is due again before the new one."""
    conn.execute(update(t.grants).where(t.grants.c.id == grant_id)
                 .values(expires_at=expires_at, warned_at=None))


def grants_to_warn(conn: Connection, now: datetime, ahead: timedelta,
                   limit: int = 500) -> list[tuple[str, str, datetime]]:
    """Active grants expiring within ``ahead`` that were not warned yet: (grant, request, at)."""
    g = t.grants.c
    rows = conn.execute(
        select(g.id, g.request_id, g.expires_at)
        .where(g.state == GrantState.ACTIVE.value, g.warned_at.is_(None),
               g.expires_at > now, g.expires_at <= now + ahead)
        .order_by(g.expires_at).limit(limit)
    ).all()
    return [(r.id, r.request_id, r.expires_at) for r in rows]


def mark_warned(conn: Connection, grant_id: str, now: datetime) -> bool:
    """Take the warning of one grant; False when another broker already took it."""
    g = t.grants.c
    result = conn.execute(update(t.grants).where(g.id == grant_id, g.warned_at.is_(None))
                          .values(warned_at=now))
    return result.rowcount == 1
