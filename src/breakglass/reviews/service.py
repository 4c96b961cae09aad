"""Review handlers: list, show, complete, add and close tasks, overdue alerts, rollups.

Every change writes its audit event in the same transaction; a refusal
writes only its event and raises :class:`PolicyRefused`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import Engine

from breakglass.catalog.loader import LoadedCatalog
from breakglass.domain.errors import InvalidInput, PolicyRefused
from breakglass.domain.events import EventTag
from breakglass.domain.model import Principal, Zone
from breakglass.domain.names import normalise_name
from breakglass.notify.people import reviewer_selectors
from breakglass.reviews.model import Review, ReviewState, Task, TaskState
from breakglass.reviews.store import ReviewStore
from breakglass.service.ports import Clock
from breakglass.storage.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class NewTask:
    owner: str
    title: str


class ReviewService:
    def __init__(self, engine: Engine, loaded: LoadedCatalog, clock: Clock) -> None:
        self._engine = engine
        self._catalog = loaded.catalog
        self._policy = loaded.policy
        self._clock = clock

    # -- queries ----------------------------------------------------------------------

    def search(self, *, state: str | None = None, incident: str | None = None,
               reviewer: str | None = None) -> list[Review]:
        overdue = state == "overdue"
        if state is not None and not overdue and state not in set(ReviewState):
            raise InvalidInput(f"unknown review state {state!r}", rule="review.state")
        with UnitOfWork(self._engine) as uow:
            found = ReviewStore(uow.connection).search(
                state=ReviewState.OPEN.value if overdue else state, incident=incident,
                reviewer=reviewer)
        now = self._clock.now()
        return [r for r in found if r.overdue(now)] if overdue else found

    def get(self, review_id: str) -> Review:
        with UnitOfWork(self._engine) as uow:
            return ReviewStore(uow.connection).get(review_id)

    def rollup(self, incident: str) -> dict[str, Any]:
        """Where an incident's reviews stand, in one answer."""
        now = self._clock.now()
        reviews = self.search(incident=incident)
        tasks = [t for r in reviews for t in r.tasks]
        closed = [r for r in reviews if r.state is ReviewState.CLOSED]
        return {
            "incident": incident,
            "reviews": len(reviews),
            "open": sum(r.state is ReviewState.OPEN for r in reviews),
            "tasks_open": sum(r.state is ReviewState.TASKS_OPEN for r in reviews),
            "closed": len(closed),
            "overdue": sum(r.overdue(now) for r in reviews),
            "tasks": {"total": len(tasks),
                      "open": sum(t.state is TaskState.OPEN for t in tasks),
                      "closed": sum(t.state is TaskState.CLOSED for t in tasks)},
            "complete": bool(reviews) and len(closed) == len(reviews),
            "last_closed_at": max((r.closed_at.isoformat() for r in closed if r.closed_at),
                                  default=None),
            "items": [r.to_json(now) for r in reviews],
        }

    # -- commands ---------------------------------------------------------------------

    def complete(self, principal: Principal, review_id: str, findings: str,
                 tasks: list[NewTask]) -> Review:
        """Record the findings (and corrective tasks); closes the review if no task is open."""
        if not findings.strip():
            raise InvalidInput("findings are required to complete a review",
                               rule="review.findings")
        now = self._clock.now()
        with UnitOfWork(self._engine) as uow:
            store = ReviewStore(uow.connection)
            review = store.get(review_id, for_update=True)
            refusal = self._may_review(principal, review)
            if refusal is None and review.state is not ReviewState.OPEN:
                refusal = ("review.not_open", f"review {review.id} is {review.state}")
            if refusal is None:
                if review.reviewer is None:
                    review.reviewer = principal.name
                review.findings = findings.strip()
                review.completed_at, review.completed_by = now, principal.name
                for new in tasks:
                    self._add_task(uow, store, review, principal, new, now)
                review.state = ReviewState.TASKS_OPEN if review.open_tasks else (
                    ReviewState.CLOSED)
                store.save(review)
                self._event(uow, review, principal.name, EventTag.REVIEW_COMPLETED, now,
                            reason=review.findings[:500],
                            payload={"tasks": [t.id for t in review.tasks]})
                self._close_if_done(uow, store, review, principal.name, now)
        if refusal is not None:
            self._refuse(principal, review, *refusal)
        return review

    def add_task(self, principal: Principal, review_id: str, new: NewTask) -> Task:
        now = self._clock.now()
        with UnitOfWork(self._engine) as uow:
            store = ReviewStore(uow.connection)
            review = store.get(review_id, for_update=True)
            refusal = self._may_review(principal, review)
            if refusal is None and review.state is ReviewState.CLOSED:
                refusal = ("review.closed", f"review {review.id} is closed")
            if refusal is None:
                task = self._add_task(uow, store, review, principal, new, now)
        if refusal is not None:
            self._refuse(principal, review, *refusal)
        return task

    def close_task(self, principal: Principal, task_id: str, note: str = "") -> Review:
        """Close one corrective task (its owner or the reviewer); the last closes the review."""
        now = self._clock.now()
        with UnitOfWork(self._engine) as uow:
            store = ReviewStore(uow.connection)
            review = store.get(store.review_of_task(task_id), for_update=True)
            task = next(t for t in review.tasks if t.id == task_id)
            refusal: tuple[str, str] | None = None
            if not _named(principal, task.owner, review.reviewer):
                refusal = ("review.task_owner_only",
                           "only the task's owner or the reviewer can close it")
            elif task.state is TaskState.CLOSED:
                refusal = ("review.task_closed", f"task {task.id} is already closed")
            if refusal is None:
                task.state, task.closed_at, task.closed_by = TaskState.CLOSED, now, principal.name
                task.note = note
                store.save_task(task)
                self._event(uow, review, principal.name, EventTag.REVIEW_TASK_CLOSED, now,
                            reason=note[:500] or None, payload={"task": task.id})
                self._close_if_done(uow, store, review, principal.name, now)
        if refusal is not None:
            self._refuse(principal, review, *refusal)
        return review

    def raise_overdue(self) -> int:
        """Mark every open review past its due time and raise its alert, once."""
        now = self._clock.now()
        with UnitOfWork(self._engine) as uow:
            store = ReviewStore(uow.connection)
            due = store.due_unalerted(now)
            for review_id in due:
                review = store.get(review_id)
                review.overdue_at = now
                store.save(review)
                self._event(uow, review, "broker", EventTag.REVIEW_OVERDUE, now,
                            outcome="alert",
                            reason=f"no findings by {review.due_at.isoformat()}",
                            payload={"due_at": review.due_at.isoformat(),
                                     "reviewer": review.reviewer})
        return len(due)

    # -- helpers ----------------------------------------------------------------------

    def _may_review(self, principal: Principal, review: Review) -> tuple[str, str] | None:
        if _named(principal, review.requester):
            return ("review.own_access", "nobody reviews their own emergency access")
        if review.reviewer is not None and not _named(principal, review.reviewer):
            return ("review.reviewer_only", f"review {review.id} is assigned to "
                    f"{review.reviewer}")
        if review.reviewer is None:  # nobody was assigned: any eligible reviewer may take it
            selectors = reviewer_selectors(self._catalog, self._policy, Zone(review.zone))
            if not self._policy.selects(principal, selectors) or (
                    principal.teams & review.requester_teams):
                return ("review.not_eligible", "reviewers come from the reviewer groups, "
                        "outside the requester's team")
        return None

    def _add_task(self, uow: UnitOfWork, store: ReviewStore, review: Review,
                  principal: Principal, new: NewTask, now: datetime) -> Task:
        if not new.owner.strip() or not new.title.strip():
            raise InvalidInput("a corrective task needs an owner and a title",
                               rule="review.task")
        task = Task(id=store.next_task_id(review.id), review_id=review.id,
                    title=new.title.strip(), owner=new.owner.strip(), created_at=now,
                    created_by=principal.name)
        store.add_task(task)
        review.tasks.append(task)
        self._event(uow, review, principal.name, EventTag.REVIEW_TASK_ADDED, now,
                    reason=task.title[:500], payload={"task": task.id, "owner": task.owner})
        return task

    def _close_if_done(self, uow: UnitOfWork, store: ReviewStore, review: Review,
                       actor: str, now: datetime) -> None:
        if review.state is ReviewState.TASKS_OPEN and not review.open_tasks:
            review.state = ReviewState.CLOSED
        if review.state is ReviewState.CLOSED and review.closed_at is None:
            review.closed_at = now
            store.save(review)
            self._event(uow, review, actor, EventTag.REVIEW_CLOSED, now,
                        payload={"closure_seconds": int(review.closure_seconds() or 0)})

    def _event(self, uow: UnitOfWork, review: Review, actor: str, tag: EventTag,
               now: datetime, *, outcome: str = "ok", reason: str | None = None,
               payload: dict[str, Any] | None = None) -> None:
        uow.events.append(ts=now, actor=actor, action=tag, outcome=outcome,
                          request_id=review.request_id, incident=review.incident,
                          zone=review.zone, reason=reason,
                          payload={"review": review.id, "state": review.state.value,
                                   **(payload or {})})

    def _refuse(self, principal: Principal, review: Review, rule: str, reason: str) -> NoReturn:
        with UnitOfWork(self._engine) as uow:
            uow.events.append(ts=self._clock.now(), actor=principal.name,
                              action=EventTag.ACTION_REFUSED, outcome="denied",
                              request_id=review.request_id, incident=review.incident,
                              zone=review.zone, rule=rule, reason=reason,
                              payload={"review": review.id})
        raise PolicyRefused(reason, rule=rule)


def _named(principal: Principal, *names: str | None) -> bool:
    """Is the principal one of these directory names (normalised: ``Alice`` is ``alice``)?"""
    mine = normalise_name(principal.name)
    return any(name is not None and normalise_name(name) == mine for name in names)
