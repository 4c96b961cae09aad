"""The broker's tables (SQLAlchemy Core). Alembic migrations mirror these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # SQLite may hand back ISO text
            value = datetime.fromisoformat(str(value))
        found: datetime = value
        return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("requester", String(200), nullable=False),  # display name, for people to read
    Column("requester_subject", String(600), nullable=False, index=True),  # who: issuer + sub
    Column("requester_kind", String(20), nullable=False),
    Column("requester_teams", JSON, nullable=False),
    Column("roles", JSON, nullable=False),
    Column("zone", String(1), nullable=False),
    Column("environment", String(100), nullable=False),
    Column("incident", String(200), nullable=False, index=True),
    Column("reason", String(100), nullable=False),
    Column("justification", Text, nullable=False, default=""),
    Column("ttl_seconds", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("pending_until", UTCDateTime, nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("runbook", String(100)),
    Column("workload", String(100)),
    Column("public_key", Text),  # OpenSSH public key text, for roles on SSH targets
    Column("activated_at", UTCDateTime),
    Column("expires_at", UTCDateTime, index=True),
    Column("ended_at", UTCDateTime),
    Column("end_reason", Text, nullable=False, default=""),
    Column("end_state", String(20)),
    # revocation work: who holds it, until when, and how its retries are going
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("next_attempt_at", UTCDateTime),
    Column("last_error", Text),
    Column("version", Integer, nullable=False, default=0),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(40), ForeignKey("requests.id"), nullable=False),
    Column("approver", String(200), nullable=False),
    Column("approver_subject", String(600), nullable=False),
    Column("teams", JSON, nullable=False),
    Column("mfa", Boolean, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("comment", Text, nullable=False, default=""),
    UniqueConstraint("request_id", "approver_subject", name="uq_approval_once"),
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(60), primary_key=True),
    Column("request_id", String(40), ForeignKey("requests.id"), nullable=False, index=True),
    Column("role", String(100), nullable=False),
    Column("target", String(100), nullable=False),
    Column("target_ref", String(200), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("state", String(20), nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("artefacts", JSON, nullable=False),
    Column("last_error", Text),
    Column("warned_at", UTCDateTime),  # the expiry warning went out for the current expiry
)

extensions = Table(
    "extensions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("request_id", String(40), ForeignKey("requests.id"), nullable=False, index=True),
    Column("requester", String(200), nullable=False),
    Column("requester_subject", String(600), nullable=False),
    Column("ttl_seconds", Integer, nullable=False),
    Column("justification", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("required", Integer, nullable=False),
    Column("state", String(20), nullable=False, index=True),
    Column("expires_before", UTCDateTime, nullable=False),
    Column("expires_after", UTCDateTime),
    Column("decided_at", UTCDateTime),
    Column("end_reason", Text, nullable=False, default=""),
    Column("version", Integer, nullable=False, default=0),
)

extension_approvals = Table(
    "extension_approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("extension_id", String(40), ForeignKey("extensions.id"), nullable=False),
    Column("approver", String(200), nullable=False),
    Column("approver_subject", String(600), nullable=False),
    Column("teams", JSON, nullable=False),
    Column("mfa", Boolean, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("comment", Text, nullable=False, default=""),
    UniqueConstraint("extension_id", "approver_subject", name="uq_extension_approval_once"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("grant_id", String(60), ForeignKey("grants.id"), primary_key=True),
    Column("ciphertext", LargeBinary, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("idx", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("request_id", String(40)),
    Column("grant_id", String(60)),
    Column("incident", String(200)),
    Column("zone", String(1)),
    Column("rule", String(100)),
    Column("reason", Text),
    Column("payload", JSON, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Index("ix_events_incident", "incident", "idx"),
    Index("ix_events_request", "request_id", "idx"),
)

log_head = Table(
    "log_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),  # the next event's index
)

# identity-provider tokens the broker has seen, by SHA-256 of the token: the first use of
# each is an audit event; rows go once the token has expired
sessions = Table(
    "sessions",
    metadata,
    Column("token_sha256", LargeBinary(32), primary_key=True),
    Column("principal", String(200), nullable=False),
    Column("principal_subject", String(600), nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# the deployment itself: one row, made once by whichever broker of the fleet starts first;
# its key tags every name the broker creates on a target (connectors.base.Ownership)
deployment = Table(
    "deployment",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("ownership_key", LargeBinary(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
