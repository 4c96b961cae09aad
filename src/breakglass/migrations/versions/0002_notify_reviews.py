"""notification outbox, refusal marks, statement-log cursors, access reviews

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from breakglass.storage.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ROWID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", _ROWID, autoincrement=True, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("sink", sa.String(length=100), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.Column("grant_id", sa.String(length=60), nullable=True),
        sa.Column("incident", sa.String(length=200), nullable=True),
        sa.Column("event_idx", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key", "sink", name="uq_outbox_once"),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])

    op.create_table(
        "refusal_marks",
        sa.Column("id", _ROWID, autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_refusal_marks_actor_ts", "refusal_marks", ["actor", "ts"])

    op.create_table(
        "log_cursors",
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("file", sa.String(length=300), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source", "file"),
    )

    op.create_table(
        "reviews",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("incident", sa.String(length=200), nullable=False),
        sa.Column("zone", sa.String(length=1), nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("requester_teams", sa.JSON(), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("completed_by", sa.String(length=200), nullable=True),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("overdue_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id"),
    )
    op.create_index("ix_reviews_incident", "reviews", ["incident"])
    op.create_index("ix_reviews_state", "reviews", ["state"])

    op.create_table(
        "review_tasks",
        sa.Column("id", sa.String(length=60), nullable=False),
        sa.Column("review_id", sa.String(length=40), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("closed_by", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["review_id"], ["reviews.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_review_tasks_review_id", "review_tasks", ["review_id"])


def downgrade() -> None:
    op.drop_index("ix_review_tasks_review_id", table_name="review_tasks")
    op.drop_table("review_tasks")
    op.drop_index("ix_reviews_state", table_name="reviews")
    op.drop_index("ix_reviews_incident", table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("log_cursors")
    op.drop_index("ix_refusal_marks_actor_ts", table_name="refusal_marks")
    op.drop_table("refusal_marks")
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.drop_table("outbox")
