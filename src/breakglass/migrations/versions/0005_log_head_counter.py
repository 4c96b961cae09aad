"""the log head is a counter only: the Merkle edge is folded from the stored leaves

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from breakglass.audit.merkle import TreeState

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_head") as batch:
        batch.drop_column("state")


def downgrade() -> None:
    """Rebuild the stored Merkle edge the earlier revision kept beside the counter."""
    state = TreeState()
    bind = op.get_bind()
    events = sa.table("events", sa.column("idx", sa.BigInteger()),
                      sa.column("leaf_hash", sa.LargeBinary()))
    for row in bind.execute(sa.select(events.c.leaf_hash).order_by(events.c.idx)):
        state.append(bytes(row.leaf_hash))
    with op.batch_alter_table("log_head") as batch:
        batch.add_column(sa.Column("state", sa.JSON(), nullable=False, server_default="{}"))
    head = sa.table("log_head", sa.column("id", sa.Integer()), sa.column("state", sa.JSON()))
    bind.execute(sa.update(head).where(head.c.id == 1).values(state=state.to_json()))
