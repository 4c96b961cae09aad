"""Reviews, the metrics report and Prometheus ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from breakglass.api.deps import (
    ContainerDep,
    CurrentPrincipal,
    IncidentId,
    MetricsScraper,
    ReviewId,
    TaskId,
)
from breakglass.bootstrap import Container
from breakglass.domain.errors import NotFound
from breakglass.notify.operations import Operations
from breakglass.reviews.service import NewTask

router = APIRouter()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskIn(_Body):
    owner: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=2000)


class Completion(_Body):
    findings: str = Field(min_length=1, max_length=20000)
    tasks: list[TaskIn] = Field(default_factory=list, max_length=50)


class TaskClosure(_Body):
    note: str = Field(default="", max_length=4000)


def _ops(c: Container) -> Operations:
    if c.operations is None:
        raise NotFound("reviews and metrics are not running on this broker",
                       rule="operations.disabled")
    return c.operations


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(_: MetricsScraper, c: ContainerDep) -> Response:
    return Response(_ops(c).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/metrics/report", response_model=None)
def metrics_report(
    who: CurrentPrincipal, c: ContainerDep,
    since: Annotated[str | None, Query(max_length=40, description="7d, 36h or an ISO time")]
    = None,
    fmt: Annotated[Literal["json", "html"], Query(alias="format")] = "json",
) -> dict[str, Any] | HTMLResponse:
    """The seven metrics of the program over a window (default: the last 7 days)."""
    del who
    report = _ops(c).reports.report(since)
    if fmt == "html":
        from breakglass.metrics.html import render_html  # noqa: PLC0415 - matplotlib is heavy

        return HTMLResponse(render_html(report))
    return report


@router.get("/v1/reviews")
def list_reviews(
    who: CurrentPrincipal, c: ContainerDep,
    state: Annotated[str | None, Query(max_length=20,
                                       description="open, tasks_open, closed, overdue")] = None,
    incident: Annotated[str | None, Query(max_length=200)] = None,
    mine: bool = False,
) -> list[dict[str, Any]]:
    ops = _ops(c)
    found = ops.reviews.search(state=state, incident=incident,
                               reviewer=who.name if mine else None)
    now = c.clock.now()
    return [r.to_json(now) for r in found]


@router.get("/v1/reviews/{review_id}")
def show_review(review_id: ReviewId, who: CurrentPrincipal, c: ContainerDep) -> dict[str, Any]:
    del who
    return _ops(c).reviews.get(review_id).to_json(c.clock.now())


@router.post("/v1/reviews/{review_id}/completion")
def complete_review(review_id: ReviewId, body: Completion, who: CurrentPrincipal,
                    c: ContainerDep) -> dict[str, Any]:
    tasks = [NewTask(owner=t.owner, title=t.title) for t in body.tasks]
    review = _ops(c).reviews.complete(who, review_id, body.findings, tasks)
    return review.to_json(c.clock.now())


@router.post("/v1/reviews/{review_id}/tasks", status_code=201)
def add_review_task(review_id: ReviewId, body: TaskIn, who: CurrentPrincipal,
                    c: ContainerDep) -> dict[str, Any]:
    task = _ops(c).reviews.add_task(who, review_id, NewTask(owner=body.owner, title=body.title))
    return task.to_json()


@router.post("/v1/reviews/tasks/{task_id}/closure")
def close_review_task(task_id: TaskId, body: TaskClosure, who: CurrentPrincipal,
                      c: ContainerDep) -> dict[str, Any]:
    return _ops(c).reviews.close_task(who, task_id, body.note).to_json(c.clock.now())


@router.get("/v1/incidents/{incident}/reviews")
def incident_reviews(incident: IncidentId,
                     who: CurrentPrincipal, c: ContainerDep) -> dict[str, Any]:
    """An incident's reviews rolled up: how many are open, overdue, closed; tasks left."""
    del who
    return _ops(c).reviews.rollup(incident)
