"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from breakglass.storage.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "events",
        sa.Column(
            "idx",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.Column("grant_id", sa.String(length=60), nullable=True),
        sa.Column("incident", sa.String(length=200), nullable=True),
        sa.Column("zone", sa.String(length=1), nullable=True),
        sa.Column("rule", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("idx"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_incident", ["incident", "idx"], unique=False)
        batch_op.create_index("ix_events_request", ["request_id", "idx"], unique=False)

    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # the log head exists from the start, so concurrent first writers queue on its lock
    op.bulk_insert(
        sa.table("log_head", sa.column("id", sa.Integer()), sa.column("size", sa.BigInteger()),
                 sa.column("state", sa.JSON())),
        [{"id": 1, "size": 0, "state": {}}],
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("requester_kind", sa.String(length=20), nullable=False),
        sa.Column("requester_teams", sa.JSON(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("zone", sa.String(length=1), nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("incident", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("pending_until", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("runbook", sa.String(length=100), nullable=True),
        sa.Column("workload", sa.String(length=100), nullable=True),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=False),
        sa.Column("end_state", sa.String(length=20), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_requests_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_requests_incident"), ["incident"], unique=False)
        batch_op.create_index(batch_op.f("ix_requests_state"), ["state"], unique=False)

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("approver", sa.String(length=200), nullable=False),
        sa.Column("teams", sa.JSON(), nullable=False),
        sa.Column("mfa", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "approver", name="uq_approval_once"),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.String(length=60), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("target_ref", sa.String(length=200), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("artefacts", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grants_request_id"), ["request_id"], unique=False)

    op.create_table(
        "credentials",
        sa.Column("grant_id", sa.String(length=60), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["grants.id"],
        ),
        sa.PrimaryKeyConstraint("grant_id"),
    )


def downgrade() -> None:

    op.drop_table("credentials")
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_request_id"))

    op.drop_table("grants")
    op.drop_table("approvals")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_requests_state"))
        batch_op.drop_index(batch_op.f("ix_requests_incident"))
        batch_op.drop_index(batch_op.f("ix_requests_expires_at"))

    op.drop_table("requests")
    op.drop_table("log_head")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_request")
        batch_op.drop_index("ix_events_incident")

    op.drop_table("events")
