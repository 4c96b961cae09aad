"""Loading and saving reviews and tasks (SQLAlchemy Core), nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from breakglass.domain.errors import NotFound
from breakglass.reviews.model import Review, ReviewState, Task, TaskState
from breakglass.storage import tables_notify as tn

_R = tn.reviews.c
_T = tn.review_tasks.c


def _task(row: Any) -> Task:
    return Task(id=row.id, review_id=row.review_id, title=row.title, owner=row.owner,
                created_at=row.created_at, created_by=row.created_by,
                state=TaskState(row.state), closed_at=row.closed_at, closed_by=row.closed_by,
                note=row.note)


def _review(row: Any, tasks: list[Task]) -> Review:
    return Review(id=row.id, request_id=row.request_id, incident=row.incident, zone=row.zone,
                  environment=row.environment, requester=row.requester,
                  requester_teams=frozenset(row.requester_teams), reviewer=row.reviewer,
                  opened_at=row.opened_at, due_at=row.due_at, state=ReviewState(row.state),
                  completed_at=row.completed_at, completed_by=row.completed_by,
                  findings=row.findings, closed_at=row.closed_at, overdue_at=row.overdue_at,
                  tasks=tasks)


class ReviewStore:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._locking = conn.dialect.name == "postgresql"

    def add(self, review: Review) -> None:
        self._conn.execute(insert(tn.reviews).values(
            id=review.id, request_id=review.request_id, incident=review.incident,
            zone=review.zone, environment=review.environment, requester=review.requester,
            requester_teams=sorted(review.requester_teams), reviewer=review.reviewer,
            state=review.state.value, opened_at=review.opened_at, due_at=review.due_at,
            findings=review.findings))

    def exists_for(self, request_id: str) -> bool:
        return self._conn.execute(
            select(_R.id).where(_R.request_id == request_id)).first() is not None

    def get(self, review_id: str, *, for_update: bool = False) -> Review:
        query = select(tn.reviews).where(_R.id == review_id)
        if for_update and self._locking:
            query = query.with_for_update()
        row = self._conn.execute(query).first()
        if row is None:
            raise NotFound(f"no review {review_id}", rule="review.not_found")
        return _review(row, self._tasks([review_id]).get(review_id, []))

    def _tasks(self, review_ids: Iterable[str]) -> dict[str, list[Task]]:
        ids = list(review_ids)
        found: dict[str, list[Task]] = {}
        for start in range(0, len(ids), 500):
            rows = self._conn.execute(select(tn.review_tasks).where(
                _T.review_id.in_(ids[start:start + 500])).order_by(_T.created_at, _T.id))
            for row in rows:
                found.setdefault(row.review_id, []).append(_task(row))
        return found

    def search(self, *, state: str | None = None, incident: str | None = None,
               reviewer: str | None = None, opened_since: datetime | None = None,
               limit: int = 1000) -> list[Review]:
        query = select(tn.reviews).order_by(_R.opened_at.desc()).limit(limit)
        if state is not None:
            query = query.where(_R.state == state)
        if incident is not None:
            query = query.where(_R.incident == incident)
        if reviewer is not None:
            query = query.where(_R.reviewer == reviewer)
        if opened_since is not None:
            query = query.where(_R.opened_at >= opened_since)
        rows = self._conn.execute(query).all()
        tasks = self._tasks(r.id for r in rows)
        return [_review(r, tasks.get(r.id, [])) for r in rows]

    def save(self, review: Review) -> None:
        self._conn.execute(update(tn.reviews).where(_R.id == review.id).values(
            reviewer=review.reviewer, state=review.state.value,
            completed_at=review.completed_at, completed_by=review.completed_by,
            findings=review.findings, closed_at=review.closed_at,
            overdue_at=review.overdue_at))

    def add_task(self, task: Task) -> None:
        self._conn.execute(insert(tn.review_tasks).values(
            id=task.id, review_id=task.review_id, title=task.title, owner=task.owner,
            created_at=task.created_at, created_by=task.created_by, state=task.state.value,
            note=task.note))

    def next_task_id(self, review_id: str) -> str:
        count = self._conn.execute(select(func.count()).select_from(tn.review_tasks)
                                   .where(_T.review_id == review_id)).scalar()
        return f"{review_id}-t{int(count or 0) + 1}"

    def review_of_task(self, task_id: str) -> str:
        found = self._conn.execute(select(_T.review_id).where(_T.id == task_id)).scalar()
        if found is None:
            raise NotFound(f"no review task {task_id}", rule="review.task_not_found")
        return str(found)

    def save_task(self, task: Task) -> None:
        self._conn.execute(update(tn.review_tasks).where(_T.id == task.id).values(
            state=task.state.value, closed_at=task.closed_at, closed_by=task.closed_by,
            note=task.note))

    def open_load(self, names: list[str]) -> dict[str, int]:
        """Open reviews per reviewer, to spread new ones evenly."""
        rows = self._conn.execute(
            select(_R.reviewer, func.count()).where(
                _R.reviewer.in_(names), _R.state != ReviewState.CLOSED.value
            ).group_by(_R.reviewer)).all()
        return {str(name): int(count) for name, count in rows}

    def due_unalerted(self, now: datetime, limit: int = 100) -> list[str]:
        """Open reviews past due whose overdue alert is not raised yet (claimed, on PostgreSQL)."""
        query = (select(_R.id)
                 .where(_R.state == ReviewState.OPEN.value, _R.due_at < now,
                        _R.overdue_at.is_(None))
                 .order_by(_R.due_at).limit(limit))
        if self._locking:
            query = query.with_for_update(skip_locked=True)
        return [str(r.id) for r in self._conn.execute(query)]
