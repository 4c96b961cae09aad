"""Repositories: load and save domain objects, nothing else."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from breakglass.domain.errors import Conflict, NotFound
from breakglass.domain.model import (
    AccessRequest,
    Approval,
    Grant,
    GrantState,
    PrincipalKind,
    RequestState,
    Zone,
)
from breakglass.storage import tables as t
from breakglass.storage.leases import RequestLeases


def _request_from_row(row: Any, approvals: list[Approval]) -> AccessRequest:
    return AccessRequest(
        id=row.id,
        requester=row.requester,
        requester_kind=PrincipalKind(row.requester_kind),
        requester_teams=frozenset(row.requester_teams),
        roles=tuple(row.roles),
        zone=Zone(row.zone),
        environment=row.environment,
        incident=row.incident,
        reason=row.reason,
        justification=row.justification,
        ttl=timedelta(seconds=row.ttl_seconds),
        created_at=row.created_at,
        pending_until=row.pending_until,
        state=RequestState(row.state),
        approvals=approvals,
        runbook=row.runbook,
        workload=row.workload,
        public_key=row.public_key,
        activated_at=row.activated_at,
        expires_at=row.expires_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        end_state=RequestState(row.end_state) if row.end_state else None,
        version=row.version,
        requester_subject=row.requester_subject,
    )


def _request_values(req: AccessRequest) -> dict[str, Any]:
    return {
        "requester": req.requester,
        "requester_subject": req.requester_id,
        "requester_kind": req.requester_kind.value,
        "requester_teams": sorted(req.requester_teams),
        "roles": list(req.roles),
        "zone": req.zone.value,
        "environment": req.environment,
        "incident": req.incident,
        "reason": req.reason,
        "justification": req.justification,
        "ttl_seconds": int(req.ttl.total_seconds()),
        "created_at": req.created_at,
        "pending_until": req.pending_until,
        "state": req.state.value,
        "runbook": req.runbook,
        "workload": req.workload,
        "public_key": req.public_key,
        "activated_at": req.activated_at,
        "expires_at": req.expires_at,
        "ended_at": req.ended_at,
        "end_reason": req.end_reason,
        "end_state": req.end_state.value if req.end_state else None,
    }


# The statements of every state change, built once: building and cache-keying a statement
# per call costs more client time than sending it. Values travel as parameters.
_ADD_REQUEST = insert(t.requests)
_REQUEST = select(t.requests).where(t.requests.c.id == bindparam("request_id"))
_REQUEST_FOR_UPDATE = _REQUEST.with_for_update()
_APPROVALS = (select(t.approvals).where(t.approvals.c.request_id == bindparam("request_id"))
              .order_by(t.approvals.c.id))
_SAVE_REQUEST = update(t.requests).where(t.requests.c.id == bindparam("match_id"),
                                         t.requests.c.version == bindparam("match_version"))
_ADD_APPROVAL = insert(t.approvals)
_ADD_GRANT = insert(t.grants)
_GRANTS_OF = (select(t.grants).where(t.grants.c.request_id == bindparam("request_id"))
              .order_by(t.grants.c.id))
_UPDATE_GRANT = update(t.grants).where(t.grants.c.id == bindparam("match_id"))
_TAKE_SECRET = (delete(t.credentials).where(t.credentials.c.grant_id == bindparam("match_id"))
                .returning(t.credentials.c.ciphertext))
_IN_FORCE = (GrantState.ACTIVE.value, GrantState.REVOCATION_PENDING.value)


class RequestRepository(RequestLeases):
    def __init__(self, conn: Connection, *, locking: bool) -> None:
        self._conn = conn
        self._locking = locking

    def add(self, req: AccessRequest) -> None:
        self._conn.execute(_ADD_REQUEST, {"id": req.id, "version": 0, **_request_values(req)})

    def get(self, request_id: str, *, for_update: bool = False) -> AccessRequest:
        query = _REQUEST_FOR_UPDATE if for_update and self._locking else _REQUEST
        row = self._conn.execute(query, {"request_id": request_id}).first()
        if row is None:
            raise NotFound(f"no request {request_id}", rule="request.not_found")
        rows = self._conn.execute(_APPROVALS, {"request_id": request_id}).all()
        approvals = [
            Approval(
                approver=a.approver,
                teams=frozenset(a.teams),
                mfa=a.mfa,
                at=a.at,
                comment=a.comment,
                approver_subject=a.approver_subject,
            )
            for a in rows
        ]
        return _request_from_row(row, approvals)

    def save(self, req: AccessRequest) -> None:
        """Write the request back; the version check makes a lost update impossible."""
        result = self._conn.execute(_SAVE_REQUEST, {
            "match_id": req.id, "match_version": req.version, "version": req.version + 1,
            **_request_values(req)})
        if result.rowcount != 1:
            raise Conflict(f"request {req.id} changed concurrently; retry", rule="concurrency")
        req.version += 1

    def add_approval(self, request_id: str, approval: Approval) -> None:
        self._conn.execute(_ADD_APPROVAL, {
            "request_id": request_id,
            "approver": approval.approver,
            "approver_subject": approval.approver_id,
            "teams": sorted(approval.teams),
            "mfa": approval.mfa,
            "at": approval.at,
            "comment": approval.comment,
        })

    def search(
        self,
        *,
        state: str | None = None,
        incident: str | None = None,
        requester: str | None = None,
        requester_subject: str | None = None,
        limit: int = 200,
    ) -> list[AccessRequest]:
        """Newest first; ``requester`` is a display name, ``requester_subject`` a person."""
        query = select(t.requests.c.id).order_by(t.requests.c.created_at.desc()).limit(limit)
        if state:
            query = query.where(t.requests.c.state == state)
        if incident:
            query = query.where(t.requests.c.incident == incident)
        if requester:
            query = query.where(t.requests.c.requester == requester)
        if requester_subject:
            query = query.where(t.requests.c.requester_subject == requester_subject)
        return [self.get(r.id) for r in self._conn.execute(query).all()]

    def pending_timed_out(self, now: datetime, limit: int = 100) -> list[str]:
        query = (
            select(t.requests.c.id)
            .where(
                t.requests.c.state == RequestState.PENDING.value,
                t.requests.c.pending_until <= now,
            )
            .limit(limit)
        )
        return [row.id for row in self._conn.execute(query)]

    def active_for_incident(self, incident: str) -> list[str]:
        query = select(t.requests.c.id).where(
            t.requests.c.incident == incident,
            t.requests.c.state.in_([RequestState.ACTIVE.value, RequestState.REVOKING.value]),
        )
        return [row.id for row in self._conn.execute(query)]

    def in_state(self, state: RequestState) -> list[str]:
        return [
            r.id
            for r in self._conn.execute(
                select(t.requests.c.id).where(t.requests.c.state == state.value)
            )
        ]

    def next_deadline(self) -> datetime | None:
        """The nearest expiry or pending timeout: when the expiry loop must wake."""
        active = self._conn.execute(
            select(func.min(t.requests.c.expires_at)).where(
                t.requests.c.state == RequestState.ACTIVE.value
            )
        ).scalar()
        pending = self._conn.execute(
            select(func.min(t.requests.c.pending_until)).where(
                t.requests.c.state == RequestState.PENDING.value
            )
        ).scalar()
        retry = self._conn.execute(
            select(func.min(t.requests.c.next_attempt_at)).where(
                t.requests.c.state == RequestState.REVOKING.value
            )
        ).scalar()
        values = [v for v in (active, pending, retry) if v is not None]
        if not values:
            return None
        found = min(values)
        return t.UTCDateTime().process_result_value(found, self._conn.dialect)


class GrantRepository:
    def __init__(self, conn: Connection, *, locking: bool) -> None:
        self._conn = conn
        self._locking = locking

    def add(self, grant: Grant) -> None:
        self._conn.execute(_ADD_GRANT, {
            "id": grant.id,
            "request_id": grant.request_id,
            "role": grant.role,
            "target": grant.target,
            "target_ref": grant.target_ref,
            "issued_at": grant.issued_at,
            "expires_at": grant.expires_at,
            "state": grant.state.value,
            "revoked_at": grant.revoked_at,
            "artefacts": list(grant.artefacts),
        })

    def for_request(self, request_id: str) -> list[Grant]:
        rows = self._conn.execute(_GRANTS_OF, {"request_id": request_id}).all()
        return [
            Grant(
                id=r.id,
                request_id=r.request_id,
                role=r.role,
                target=r.target,
                target_ref=r.target_ref,
                issued_at=r.issued_at,
                expires_at=r.expires_at,
                state=GrantState(r.state),
                revoked_at=r.revoked_at,
                artefacts=tuple(r.artefacts),
                last_error=r.last_error,
            )
            for r in rows
        ]

    def last_error(self, grant_id: str) -> str | None:
        value = self._conn.execute(
            select(t.grants.c.last_error).where(t.grants.c.id == grant_id)
        ).scalar()
        return None if value is None else str(value)

    def set_state(
        self, grant_id: str, state: GrantState, at: datetime | None, error: str | None = None
    ) -> None:
        self._conn.execute(_UPDATE_GRANT, {"match_id": grant_id, "state": state.value,
                                           "revoked_at": at, "last_error": error})

    def end(self, grant_id: str, state: GrantState, at: datetime) -> bool:
        """Record a grant's revocation; False when another caller already recorded it."""
        g = t.grants.c
        result = self._conn.execute(
            update(t.grants).where(g.id == grant_id, g.state.in_(_IN_FORCE))
            .values(state=state.value, revoked_at=at, last_error=None))
        return result.rowcount == 1

    def revocation_failed(self, grant_id: str, error: str) -> bool:
        """Note a failed attempt on a grant still in force; False when it ended meanwhile."""
        g = t.grants.c
        result = self._conn.execute(
            update(t.grants).where(g.id == grant_id, g.state.in_(_IN_FORCE))
            .values(state=GrantState.REVOCATION_PENDING.value, revoked_at=None,
                    last_error=error))
        return result.rowcount == 1

    def set_error(self, grant_id: str, error: str) -> None:
        self._conn.execute(
            update(t.grants).where(t.grants.c.id == grant_id).values(last_error=error)
        )

    def extend(self, grant_id: str, expires_at: datetime) -> None:
        self._conn.execute(
            update(t.grants).where(t.grants.c.id == grant_id).values(expires_at=expires_at)
        )

    def owned_refs(self, target: str | None = None) -> set[str]:
        """Target refs the store still answers for: active or still being revoked (on one
        target, or on any)."""
        query = select(t.grants.c.target_ref).where(
            t.grants.c.state.in_([GrantState.ACTIVE.value, GrantState.REVOCATION_PENDING.value])
        )
        if target is not None:
            query = query.where(t.grants.c.target == target)
        rows = self._conn.execute(query)
        return {r.target_ref for r in rows}

    def active_refs(self, target: str) -> list[tuple[str, str]]:
        """Grants in force: active, of a request that is not being ended right now."""
        rows = self._conn.execute(
            select(t.grants.c.id, t.grants.c.target_ref)
            .join(t.requests, t.requests.c.id == t.grants.c.request_id)
            .where(
                t.grants.c.target == target,
                t.grants.c.state == GrantState.ACTIVE.value,
                t.requests.c.state == RequestState.ACTIVE.value,
            )
        )
        return [(r.id, r.target_ref) for r in rows]

    def store_secret(self, grant_id: str, ciphertext: bytes) -> None:
        self._conn.execute(insert(t.credentials).values(grant_id=grant_id, ciphertext=ciphertext))

    def take_secret(self, grant_id: str) -> bytes | None:
        """Return the stored secret and delete it: a credential is shown once.

        One statement (``DELETE ... RETURNING``): of any number of concurrent callers,
        on any number of brokers, only the one whose delete removed the row gets it; the
        others wait for its commit and find nothing (or get it if that one rolled back)."""
        value = self._conn.execute(_TAKE_SECRET, {"match_id": grant_id}).scalar()
        return None if value is None else bytes(value)

    def drop_secret(self, grant_id: str) -> None:
        self._conn.execute(delete(t.credentials).where(t.credentials.c.grant_id == grant_id))


class SessionRepository:
    """Identity-provider tokens already seen, by their SHA-256 (never the token itself)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def first_use(self, token_sha256: bytes, principal: str, now: datetime,
                  expires_at: datetime, subject: str = "") -> bool:
        """Note the token; ``True`` only for the one caller, of any broker, that saw it first.

        Rows of tokens that expired before ``now`` go in the same transaction.
        """
        self._conn.execute(delete(t.sessions).where(t.sessions.c.expires_at < now))
        dialect = self._conn.dialect.name
        upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t.sessions)
        result = self._conn.execute(
            upsert.values(token_sha256=token_sha256, principal=principal,
                          principal_subject=subject or principal, first_seen=now,
                          expires_at=max(expires_at, now))
            .on_conflict_do_nothing(index_elements=[t.sessions.c.token_sha256])
            .returning(t.sessions.c.first_seen)
        )
        return result.first() is not None
