"""Tables of the operational controls: the notification outbox, reviews, log cursors.

Same ``metadata`` as :mod:`breakglass.storage.tables`; migration 0002 mirrors them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from breakglass.storage.tables import UTCDateTime, metadata

_ROWID = BigInteger().with_variant(Integer, "sqlite")

outbox = Table(
    "outbox",
    metadata,
    Column("id", _ROWID, primary_key=True, autoincrement=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("kind", String(20), nullable=False),  # notification | alert
    Column("topic", String(100), nullable=False),
    Column("sink", String(100), nullable=False),
    Column("dedupe_key", String(200), nullable=False),
    Column("request_id", String(40)),
    Column("grant_id", String(60)),
    Column("incident", String(200)),
    Column("event_idx", BigInteger),
    Column("payload", JSON, nullable=False),
    Column("state", String(20), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Column("last_error", Text),
    UniqueConstraint("dedupe_key", "sink", name="uq_outbox_once"),
    Index("ix_outbox_due", "state", "next_attempt_at"),
)

refusal_marks = Table(
    "refusal_marks",
    metadata,
    Column("id", _ROWID, primary_key=True, autoincrement=True),
    Column("actor", String(200), nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("rule", String(100)),
    Index("ix_refusal_marks_actor_ts", "actor", "ts"),
)

log_cursors = Table(
    "log_cursors",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("file", String(300), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

reviews = Table(
    "reviews",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("request_id", String(40), ForeignKey("requests.id"), nullable=False, unique=True),
    Column("incident", String(200), nullable=False, index=True),
    Column("zone", String(1), nullable=False),
    Column("environment", String(100), nullable=False),
    Column("requester", String(200), nullable=False),
    Column("requester_teams", JSON, nullable=False),
    Column("reviewer", String(200)),
    Column("state", String(20), nullable=False, index=True),  # open | tasks_open | closed
    Column("opened_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    Column("completed_by", String(200)),
    Column("findings", Text, nullable=False, default=""),
    Column("closed_at", UTCDateTime),
    Column("overdue_at", UTCDateTime),
)

review_tasks = Table(
    "review_tasks",
    metadata,
    Column("id", String(60), primary_key=True),
    Column("review_id", String(40), ForeignKey("reviews.id"), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("owner", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("state", String(20), nullable=False),  # open | closed
    Column("closed_at", UTCDateTime),
    Column("closed_by", String(200)),
    Column("note", Text, nullable=False, default=""),
)
