"""Audit event tags, shaped ``subject:object:action``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from typing import Any

# The address of the client whose call is being served, if any: each event written while
# serving it carries the address as ``payload.source`` (set by the HTTP layer per request;
# background work such as expiry has none).
caller_address: ContextVar[str | None] = ContextVar("breakglass_caller_address", default=None)
SOURCE = "source"


@contextmanager
def serving(address: str | None) -> Iterator[None]:
    """Events written in this block carry ``address`` (None: no caller's, e.g. for the
    broker's own findings written while it happens to serve a call)."""
    token = caller_address.set(address)
    try:
        yield
    finally:
        caller_address.reset(token)


class EventTag(StrEnum):
    REQUEST_CREATED = "request:created"
    REQUEST_REFUSED = "request:refused"
    REQUEST_AUTO_APPROVED = "request:approval:auto"
    APPROVAL_ADDED = "request:approval:added"
    APPROVAL_REFUSED = "request:approval:refused"
    REQUEST_DENIED = "request:denied"
    REQUEST_CANCELLED = "request:cancelled"
    REQUEST_EXPIRED = "request:pending:expired"
    REQUEST_ACTIVATING = "request:activation:started"
    REQUEST_ACTIVE = "request:activated"
    REQUEST_ACTIVATION_FAILED = "request:activation:failed"
    REQUEST_ENDING = "request:revocation:started"
    REQUEST_ENDED = "request:ended"
    INCIDENT_CLOSED = "incident:access:closed"
    DRIFT_ORPHAN = "drift:orphan:revoked"
    DRIFT_MISSING = "drift:credential:missing"
    DRIFT_LOOKALIKE = "drift:lookalike:found"
    ACTION_REFUSED = "request:action:refused"
    GRANT_ISSUED = "grant:credential:issued"
    GRANT_REVOKED = "grant:credential:revoked"
    GRANT_EXPIRED = "grant:credential:expired"
    GRANT_REVOCATION_FAILED = "grant:revocation:failed"
    GRANT_EXPIRY_WARNING = "grant:expiry:warning"
    GRANT_EXTENDED = "grant:expiry:extended"
    EXTENSION_REQUESTED = "extension:request:created"
    EXTENSION_REFUSED = "extension:request:refused"
    EXTENSION_AUTO_APPROVED = "extension:approval:auto"
    EXTENSION_APPROVAL_ADDED = "extension:approval:added"
    EXTENSION_APPROVAL_REFUSED = "extension:approval:refused"
    EXTENSION_DENIED = "extension:request:denied"
    EXTENSION_APPLIED = "extension:expiry:moved"
    EXTENSION_LAPSED = "extension:request:lapsed"
    CREDENTIAL_VIEWED = "grant:credential:viewed"
    CREDENTIAL_REFUSED = "grant:credential:refused"
    LOGIN = "identity:login:issued"
    SESSION_STARTED = "identity:session:started"
    AUTH_REFUSED = "identity:token:refused"
    AUTH_REFUSALS_COUNTED = "identity:refusals:counted"
    INPUT_REFUSED = "api:input:refused"
    HIGH_RISK_ACTION = "grant:action:high_risk"
    REVIEW_OPENED = "review:access:opened"
    REVIEW_COMPLETED = "review:access:completed"
    REVIEW_CLOSED = "review:access:closed"
    REVIEW_OVERDUE = "review:access:overdue"
    REVIEW_TASK_ADDED = "review:task:added"
    REVIEW_TASK_CLOSED = "review:task:closed"
    AUDIT_KEY_ROTATED = "audit:key:rotated"
    AUDIT_TAMPERED = "audit:log:tampered"
    CHECKPOINT_PUBLISHED = "audit:checkpoint:published"
    ANCHOR_FAILED = "audit:anchor:failed"
    ANCHOR_RECOVERED = "audit:anchor:recovered"


def refusals_in(action: str, payload: Mapping[str, Any]) -> int:
    """How many refusals a denied event stands for: its count if it summarises refusals
    counted over budget (``identity:refusals:counted``), else one."""
    if action == EventTag.AUTH_REFUSALS_COUNTED:
        counted = payload.get("counted")
        if isinstance(counted, int) and not isinstance(counted, bool) and counted > 0:
            return counted
    return 1
