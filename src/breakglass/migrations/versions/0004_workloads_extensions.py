"""extensions with their own approvals; the expiry warning mark on grants

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from breakglass.storage.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("warned_at", UTCDateTime(), nullable=True))
    op.create_table(
        "extensions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("expires_before", UTCDateTime(), nullable=False),
        sa.Column("expires_after", UTCDateTime(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("extensions") as batch:
        batch.create_index(batch.f("ix_extensions_request_id"), ["request_id"], unique=False)
        batch.create_index(batch.f("ix_extensions_state"), ["state"], unique=False)
    op.create_table(
        "extension_approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("extension_id", sa.String(length=40), nullable=False),
        sa.Column("approver", sa.String(length=200), nullable=False),
        sa.Column("teams", sa.JSON(), nullable=False),
        sa.Column("mfa", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["extension_id"], ["extensions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("extension_id", "approver", name="uq_extension_approval_once"),
    )


def downgrade() -> None:
    op.drop_table("extension_approvals")
    with op.batch_alter_table("extensions") as batch:
        batch.drop_index(batch.f("ix_extensions_state"))
        batch.drop_index(batch.f("ix_extensions_request_id"))
    op.drop_table("extensions")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("warned_at")
