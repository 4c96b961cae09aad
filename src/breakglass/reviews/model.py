"""Reviews and their corrective tasks. Pure: time comes in as an argument."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class ReviewState(StrEnum):
    OPEN = "open"  # waiting for the reviewer's findings
    TASKS_OPEN = "tasks_open"  # findings recorded; corrective tasks still open
    CLOSED = "closed"


class TaskState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(slots=True)
class Task:
    id: str
    review_id: str
    title: str
    owner: str
    created_at: datetime
    created_by: str
    state: TaskState = TaskState.OPEN
    closed_at: datetime | None = None
    closed_by: str | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "review_id": self.review_id, "title": self.title,
                "owner": self.owner, "state": self.state.value,
                "created_at": _iso(self.created_at), "created_by": self.created_by,
                "closed_at": _iso(self.closed_at), "closed_by": self.closed_by,
                "note": self.note}


@dataclass(slots=True)
class Review:
    id: str
    request_id: str
    incident: str
    zone: str
    environment: str
    requester: str
    requester_teams: frozenset[str]
    reviewer: str | None
    opened_at: datetime
    due_at: datetime
    state: ReviewState = ReviewState.OPEN
    completed_at: datetime | None = None
    completed_by: str | None = None
    findings: str = ""
    closed_at: datetime | None = None
    overdue_at: datetime | None = None
    tasks: list[Task] = field(default_factory=list)

    def overdue(self, now: datetime) -> bool:
        """Findings not recorded by the due time."""
        return self.state is ReviewState.OPEN and now > self.due_at

    @property
    def open_tasks(self) -> list[Task]:
        return [t for t in self.tasks if t.state is TaskState.OPEN]

    def closure_seconds(self) -> float | None:
        if self.closed_at is None:
            return None
        return (self.closed_at - self.opened_at).total_seconds()

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id, "request_id": self.request_id, "incident": self.incident,
            "zone": self.zone, "environment": self.environment, "requester": self.requester,
            "reviewer": self.reviewer, "state": self.state.value,
            "opened_at": _iso(self.opened_at), "due_at": _iso(self.due_at),
            "overdue": self.overdue(now), "overdue_alerted_at": _iso(self.overdue_at),
            "completed_at": _iso(self.completed_at), "completed_by": self.completed_by,
            "findings": self.findings, "closed_at": _iso(self.closed_at),
            "closure_seconds": self.closure_seconds(),
            "tasks": [t.to_json() for t in self.tasks],
        }


def review_id_for(request_id: str) -> str:
    """One review per request, named after it: ``r-1a2b...`` is reviewed in ``rv-1a2b...``."""
    return "rv-" + request_id.removeprefix("r-")
