"""people are subjects: the requester's and approver's issuer + sub next to their name

Requests, approvals, extensions, extension approvals and sessions record the
person's subject key (``<issuer>#<sub>``, see ``breakglass.domain.names``) next
to the display name; the once-per-person approval constraints move to it.

Backfill: rows written before this revision only know a display name. They get
the legacy key ``urn:breakglass:legacy-name#<name>`` (an issuer no identity
provider can have), so no new token is ever the requester of an old request
(nobody can pick up or cancel it under another ``sub``), while self-approval and
duplicate approval still refuse anyone whose normalised name is the legacy name.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LEGACY_PREFIX = "urn:breakglass:legacy-name#"  # breakglass.domain.names.legacy_key("")
_SUBJECT = 600

# (table, the display-name column, the new subject column)
_COLUMNS = (
    ("requests", "requester", "requester_subject"),
    ("approvals", "approver", "approver_subject"),
    ("extensions", "requester", "requester_subject"),
    ("extension_approvals", "approver", "approver_subject"),
    ("sessions", "principal", "principal_subject"),
)
# (table, constraint, parent column) of the once-per-person approval constraints
_ONCE = (
    ("approvals", "uq_approval_once", "request_id"),
    ("extension_approvals", "uq_extension_approval_once", "extension_id"),
)


def upgrade() -> None:
    # NOT NULL with a default: SQLite adds such a column in place (no table rebuild, which
    # its foreign keys would refuse with rows present); the default goes where it can.
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, name, subject in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(subject, sa.String(length=_SUBJECT), nullable=False,
                                       server_default=""))
        op.execute(sa.text(f"UPDATE {table} SET {subject} = :prefix || {name}")
                   .bindparams(prefix=LEGACY_PREFIX))
        if not sqlite:
            op.alter_column(table, subject, server_default=None)
    for table, constraint, parent in _ONCE:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(constraint, type_="unique")
            batch.create_unique_constraint(constraint, [parent, _subject_of(table)])
    with op.batch_alter_table("requests") as batch:
        batch.create_index(batch.f("ix_requests_requester_subject"), ["requester_subject"],
                           unique=False)


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_index(batch.f("ix_requests_requester_subject"))
    for table, constraint, parent in _ONCE:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(constraint, type_="unique")
            batch.create_unique_constraint(constraint, [parent, _name_of(table)])
    for table, _, subject in _COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column(subject)


def _subject_of(table: str) -> str:
    return next(subject for t, _, subject in _COLUMNS if t == table)


def _name_of(table: str) -> str:
    return next(name for t, name, _ in _COLUMNS if t == table)
