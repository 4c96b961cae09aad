"""Writing request events: one helper so every handler records the same shape."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from breakglass.domain.events import EventTag
from breakglass.domain.model import AccessRequest
from breakglass.storage.uow import UnitOfWork


def record(
    uow: UnitOfWork,
    now: datetime,
    req: AccessRequest,
    actor: str,
    tag: EventTag,
    *,
    grant_id: str | None = None,
    outcome: str = "ok",
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> None:
    uow.events.append(
        ts=now,
        actor=actor,
        action=tag,
        outcome=outcome,
        request_id=req.id,
        grant_id=grant_id,
        incident=req.incident,
        zone=req.zone.value,
        reason=reason,
        payload={"state": req.state.value, **(payload or {})},
    )
