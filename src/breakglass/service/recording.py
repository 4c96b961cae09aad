"""Writing request events: one helper so every handler records the same shape.

The actor is a display name (the broker itself, ``system``) or the
:class:`Principal` who acted: then the event's ``actor`` is their display name,
for people to read, and ``payload.actor_subject`` their subject key, which is
who they are (see :mod:`breakglass.domain.names`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from breakglass.domain.events import EventTag
from breakglass.domain.model import AccessRequest, Principal
from breakglass.storage.uow import UnitOfWork

Actor = str | Principal
ACTOR_SUBJECT = "actor_subject"


def actor_name(actor: Actor) -> str:
    return actor.name if isinstance(actor, Principal) else actor


def actor_payload(actor: Actor | None, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """``payload`` with the acting person's subject key, when a person acted."""
    found = dict(payload or {})
    if isinstance(actor, Principal):
        found[ACTOR_SUBJECT] = actor.subject_id
    return found


def record(
    uow: UnitOfWork,
    now: datetime,
    req: AccessRequest,
    actor: Actor,
    tag: EventTag,
    *,
    grant_id: str | None = None,
    outcome: str = "ok",
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> None:
    uow.events.append(
        ts=now,
        actor=actor_name(actor),
        action=tag,
        outcome=outcome,
        request_id=req.id,
        grant_id=grant_id,
        incident=req.incident,
        zone=req.zone.value,
        reason=reason,
        payload={"state": req.state.value, **actor_payload(actor, payload)},
    )
