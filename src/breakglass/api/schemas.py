"""Wire shapes of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from breakglass.service.broker import RequestView
from breakglass.storage.events import Event


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewRequest(Body):
    roles: list[str] = Field(min_length=1, max_length=20)
    incident: str = Field(max_length=200)
    reason: str = Field(max_length=100)
    ttl: str | int | None = Field(default=None, description="e.g. 90s, 15m, 1h")
    justification: str = Field(default="", max_length=4000)
    runbook: str | None = Field(default=None, max_length=100)
    workload: str | None = Field(
        default=None, max_length=100,
        description="a catalog workload: the roles' privileges go to its service account "
        "(implied when a workload asks with its own token)",
    )
    public_key: str | None = Field(
        default=None, max_length=16 * 1024,
        description="OpenSSH public key (one line of a .pub file) for roles on SSH targets; "
        "without it those roles return a fresh key pair once",
    )


class Decision(Body):
    comment: str = Field(default="", max_length=4000)


class Revocation(Body):
    reason: str = Field(default="", max_length=4000)


class DevLogin(Body):
    username: str = Field(max_length=200)


class ApprovalOut(BaseModel):
    approver: str
    at: datetime
    comment: str


class GrantOut(BaseModel):
    id: str
    role: str
    target: str
    target_ref: str
    state: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_error: str | None = None


class RequestOut(BaseModel):
    id: str
    state: str
    roles: list[str]
    zone: str
    environment: str
    incident: str
    reason: str
    justification: str
    requester: str
    requester_kind: str
    created_at: datetime
    pending_until: datetime
    activated_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None
    end_reason: str
    runbook: str | None
    workload: str | None = None
    approvals: list[ApprovalOut]
    approvals_required: int
    grants: list[GrantOut]
    audit_index: int | None = None
    note: str = ""
    """Set when the command found its work already done by another caller (idempotent)."""

    @classmethod
    def of(cls, view: RequestView) -> RequestOut:
        r = view.request
        return cls(
            id=r.id, state=r.state.value, roles=list(r.roles), zone=r.zone.value,
            environment=r.environment, incident=r.incident, reason=r.reason,
            justification=r.justification, requester=r.requester,
            requester_kind=r.requester_kind.value, created_at=r.created_at,
            pending_until=r.pending_until, activated_at=r.activated_at,
            expires_at=r.expires_at, ended_at=r.ended_at, end_reason=r.end_reason,
            runbook=r.runbook, workload=r.workload,
            approvals=[ApprovalOut(approver=a.approver, at=a.at, comment=a.comment)
                       for a in r.approvals],
            approvals_required=view.required_approvals,
            audit_index=view.audit_index, note=view.note,
            grants=[GrantOut(id=g.id, role=g.role, target=g.target, target_ref=g.target_ref,
                             state=g.state.value, issued_at=g.issued_at,
                             expires_at=g.expires_at, revoked_at=g.revoked_at,
                             last_error=g.last_error)
                    for g in view.grants],
        )


class EventOut(BaseModel):
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

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls.model_validate({**e.record(), "ts": e.ts})


class Credentials(BaseModel):
    request_id: str
    expires_at: datetime | None
    credentials: list[dict[str, Any]]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
