"""Extensions of active access: ask, list, approve, deny."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from breakglass.api.deps import ContainerDep, CurrentPrincipal, ExtensionId, RequestId
from breakglass.api.schemas import ApprovalOut, Body, Decision
from breakglass.domain.durations import parse_duration
from breakglass.service.extensions import ExtensionView

router = APIRouter(prefix="/v1")


class NewExtension(Body):
    ttl: str | int = Field(description="time to add to the current expiry, e.g. 15m")
    justification: str = Field(min_length=1, max_length=4000)


class ExtensionOut(BaseModel):
    id: str
    request_id: RequestId
    state: str
    requester: str
    ttl_seconds: int
    justification: str
    created_at: datetime
    approvals: list[ApprovalOut]
    approvals_required: int
    expires_before: datetime
    expires_after: datetime | None
    end_reason: str
    request_state: str
    request_expires_at: datetime | None

    @classmethod
    def of(cls, view: ExtensionView) -> ExtensionOut:
        x, r = view.extension, view.request
        return cls(
            id=x.id, request_id=x.request_id, state=x.state.value, requester=x.requester,
            ttl_seconds=int(x.ttl.total_seconds()), justification=x.justification,
            created_at=x.created_at,
            approvals=[ApprovalOut(approver=a.approver, at=a.at, comment=a.comment)
                       for a in x.approvals],
            approvals_required=x.required, expires_before=x.expires_before,
            expires_after=x.expires_after, end_reason=x.end_reason,
            request_state=r.state.value, request_expires_at=r.expires_at,
        )


@router.post("/requests/{request_id}/extensions", status_code=201, response_model=ExtensionOut)
def extend(request_id: RequestId, body: NewExtension, who: CurrentPrincipal,
           c: ContainerDep) -> ExtensionOut:
    """Ask for more time; the credential keeps working while the extension waits."""
    view = c.broker.extensions.request_extension(who, request_id, parse_duration(body.ttl),
                                                 body.justification)
    return ExtensionOut.of(view)


@router.get("/requests/{request_id}/extensions", response_model=list[ExtensionOut])
def extensions(request_id: RequestId, who: CurrentPrincipal, c: ContainerDep) -> list[ExtensionOut]:
    del who
    return [ExtensionOut.of(v) for v in c.broker.extensions.of_request(request_id)]


@router.post("/requests/{request_id}/extensions/{extension_id}/approvals",
             response_model=ExtensionOut)
def approve_extension(request_id: RequestId, extension_id: ExtensionId, body: Decision,
                      who: CurrentPrincipal, c: ContainerDep) -> ExtensionOut:
    return ExtensionOut.of(c.broker.extensions.approve(who, request_id, extension_id,
                                                       body.comment))


@router.post("/requests/{request_id}/extensions/{extension_id}/denials",
             response_model=ExtensionOut)
def deny_extension(request_id: RequestId, extension_id: ExtensionId, body: Decision,
                   who: CurrentPrincipal, c: ContainerDep) -> ExtensionOut:
    return ExtensionOut.of(c.broker.extensions.deny(who, request_id, extension_id,
                                                    body.comment))
