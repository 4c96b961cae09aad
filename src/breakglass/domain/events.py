"""Audit event tags, shaped ``subject:object:action``."""

from __future__ import annotations

from enum import StrEnum


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
    ACTION_REFUSED = "request:action:refused"
    GRANT_ISSUED = "grant:credential:issued"
    GRANT_REVOKED = "grant:credential:revoked"
    GRANT_EXPIRED = "grant:credential:expired"
    GRANT_REVOCATION_FAILED = "grant:revocation:failed"
    CREDENTIAL_VIEWED = "grant:credential:viewed"
    CREDENTIAL_REFUSED = "grant:credential:refused"
    LOGIN = "identity:login:issued"
    AUTH_REFUSED = "identity:token:refused"
