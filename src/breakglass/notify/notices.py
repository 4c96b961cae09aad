"""Approver notifications: who is asked, and the follow-ups that tell the others.

On a request that needs approval, every eligible approver is asked. When one
of them approves or denies, the others are told who acted; when the request
ends (withdrawn, timed out, activation failed, access ended) they are told
too, so nobody acts on a request that no longer needs them.
"""

from __future__ import annotations

from typing import Any

from breakglass.catalog.schema import Catalog
from breakglass.domain.durations import format_duration
from breakglass.domain.events import EventTag
from breakglass.domain.model import AccessRequest, Policy
from breakglass.domain.policy import approvals_needed
from breakglass.notify.outbox import Message, seen
from breakglass.notify.people import eligible_approvers
from breakglass.storage.events import Appended
from breakglass.storage.repository import RequestRepository

_CLOSING = {
    EventTag.REQUEST_DENIED: "request.denied",
    EventTag.REQUEST_CANCELLED: "request.withdrawn",
    EventTag.REQUEST_EXPIRED: "request.timed_out",
    EventTag.REQUEST_ACTIVATION_FAILED: "request.failed",
    EventTag.REQUEST_ENDED: "request.ended",
}
_EXTENSION = {
    EventTag.EXTENSION_APPROVAL_ADDED: "extension.approval_added",
    EventTag.EXTENSION_DENIED: "extension.denied",
    EventTag.EXTENSION_APPLIED: "extension.applied",
    EventTag.EXTENSION_LAPSED: "extension.lapsed",
}
WATCHED = frozenset({EventTag.REQUEST_CREATED, EventTag.APPROVAL_ADDED, *_CLOSING,
                     EventTag.EXTENSION_REQUESTED, *_EXTENSION})


def request_data(req: AccessRequest) -> dict[str, Any]:
    return {
        "request_id": req.id,
        "incident": req.incident,
        "principal": req.requester,
        "zone": req.zone.value,
        "environment": req.environment,
        "roles": list(req.roles),
        "reason": req.reason,
        "justification": req.justification,
        "ttl": format_duration(req.ttl),
        "state": req.state.value,
        "approvals": [a.approver for a in req.approvals],
    }


def approver_notices(a: Appended, policy: Policy, catalog: Catalog) -> list[Message]:
    event = a.event
    if event.action not in WATCHED or event.request_id is None:
        return []
    req = RequestRepository(a.connection, locking=False).get(event.request_id)
    if event.action == EventTag.EXTENSION_REQUESTED or event.action in _EXTENSION:
        return extension_notices(a, req, policy, catalog)
    required = approvals_needed(policy.zones[req.zone])
    if req.runbook is not None or required == 0:
        return []  # nobody was asked, so nobody needs a follow-up
    eligible = eligible_approvers(policy, catalog, req, event.ts)
    data = {**request_data(req), "approvals_required": required,
            "approver_groups": list(policy.approvers.get(req.zone, ()))}
    roles = ", ".join(req.roles)
    if event.action == EventTag.REQUEST_CREATED:
        summary = (f"{req.requester} asks for {roles} (zone {req.zone.value}, "
                   f"{req.environment}) for {req.incident}, reason {req.reason}: "
                   f"{required} approval(s) needed. breakglass approve {req.id}")
        return [_notice("approval.requested", summary, data, eligible, req)]
    others = [name for name in eligible if name != event.actor]
    if event.action == EventTag.APPROVAL_ADDED:
        count = len(req.approvals)
        rest = ("no further approval needed" if count >= required
                else f"{required - count} more approval(s) needed")
        summary = f"{req.id} ({roles}, {req.incident}) approved by {event.actor} " \
                  f"({count}/{required}): {rest}"
        return [_notice("approval.added", summary,
                        {**data, "acted_by": event.actor}, others, req)]
    topic = _CLOSING[EventTag(event.action)]
    why = f": {event.reason}" if event.reason else ""
    verb = {"request.denied": f"denied by {event.actor}",
            "request.withdrawn": "withdrawn by the requester",
            "request.timed_out": "closed without a decision (pending timeout)",
            "request.failed": "failed to activate",
            "request.ended": f"ended ({req.state.value})"}[topic]
    summary = f"{req.id} ({roles}, {req.incident}) {verb}{why}"
    return [_notice(topic, summary, {**data, "acted_by": event.actor},
                    others, req)]


def extension_notices(a: Appended, req: AccessRequest, policy: Policy,
                      catalog: Catalog) -> list[Message]:
    """An extension that needs approvals is asked for like a request, and followed up."""
    event = a.event
    ext = str(event.payload.get("extension", ""))
    asked_key = f"extension.requested:{ext}"
    if event.action == EventTag.EXTENSION_REQUESTED:
        required = int(event.payload.get("required") or 0)
        if required == 0:
            return []
        eligible = eligible_approvers(policy, catalog, req, event.ts)
        summary = (f"{event.actor} asks to extend {req.id} ({', '.join(req.roles)}, zone "
                   f"{req.zone.value}, {req.incident}) to {event.payload.get('expires_after')}: "
                   f"{required} approval(s) needed. breakglass approve {req.id} "
                   f"--extension {ext}")
        return [Message(kind="notification", topic="extension.requested", dedupe_key=asked_key,
                        summary=summary, data={**request_data(req), "extension_id": ext,
                                               "approvals_required": required,
                                               "recipients": eligible},
                        request_id=req.id, incident=req.incident)]
    if not seen(a.connection, asked_key):
        return []  # nobody was asked
    topic = _EXTENSION[EventTag(event.action)]
    others = [n for n in eligible_approvers(policy, catalog, req, event.ts) if n != event.actor]
    verb = {"extension.approval_added": f"approved by {event.actor}",
            "extension.denied": f"denied by {event.actor}",
            "extension.applied": "applied: access now ends at the new expiry",
            "extension.lapsed": "lapsed"}[topic]
    summary = f"extension {ext} of {req.id} ({req.incident}) {verb}"
    return [_notice(topic, summary, {**request_data(req), "extension_id": ext,
                                                   "acted_by": event.actor}, others, req)]


def _notice(topic: str, summary: str, data: dict[str, Any], recipients: list[str],
            req: AccessRequest) -> Message:
    return Message(kind="notification", topic=topic, dedupe_key=topic, per_event=True,
                   summary=summary, data={**data, "recipients": recipients},
                   request_id=req.id, incident=req.incident)


def review_notice(a: Appended) -> list[Message]:
    """Tell the assigned reviewer about a new review."""
    event = a.event
    if event.action != EventTag.REVIEW_OPENED:
        return []
    reviewer = event.payload.get("reviewer")
    review_id = str(event.payload.get("review", ""))
    due: str = event.payload.get("due_at", "")
    summary = (f"access review {review_id} for {event.request_id} ({event.incident}) is "
               f"assigned to {reviewer or 'nobody: no eligible reviewer'}, due {due}. "
               f"breakglass review show {review_id}")
    return [Message(kind="notification", topic="review.assigned",
                    dedupe_key="review.assigned", per_event=True, summary=summary,
                    data={"review_id": review_id, "request_id": event.request_id,
                          "incident": event.incident, "principal": event.payload.get(
                              "requester"), "zone": event.zone,
                          "recipients": [reviewer] if reviewer else [], "due_at": due},
                    request_id=event.request_id, incident=event.incident)]
