"""Opening a review when access ends, in the transaction that records the end."""

from __future__ import annotations

from datetime import datetime, timedelta

from breakglass.catalog.loader import LoadedCatalog
from breakglass.domain.events import EventTag
from breakglass.domain.model import AccessRequest, RequestState
from breakglass.notify.people import review_candidates
from breakglass.reviews.model import Review, review_id_for
from breakglass.reviews.store import ReviewStore
from breakglass.storage.events import Appended
from breakglass.storage.repository import RequestRepository

ENDED = frozenset({RequestState.REVOKED.value, RequestState.EXPIRED.value})


def pick_reviewer(candidates: list[str], approvers: set[str], load: dict[str, int]) -> str | None:
    """Prefer someone who did not approve the access, then the least loaded, then by name."""
    if not candidates:
        return None
    return min(candidates, key=lambda name: (name in approvers, load.get(name, 0), name))


class ReviewOpener:
    def __init__(self, loaded: LoadedCatalog, due_after: timedelta) -> None:
        self._catalog = loaded.catalog
        self._policy = loaded.policy
        self._due_after = due_after

    def __call__(self, a: Appended) -> None:
        event = a.event
        if event.action != EventTag.REQUEST_ENDED or event.request_id is None:
            return
        if event.payload.get("state") not in ENDED:
            return
        store = ReviewStore(a.connection)
        if store.exists_for(event.request_id):
            return
        req = RequestRepository(a.connection, locking=False).get(event.request_id)
        review = self._review_for(req, store, event.ts)
        store.add(review)
        a.log.append(
            ts=event.ts, actor="broker", action=EventTag.REVIEW_OPENED, request_id=req.id,
            incident=req.incident, zone=req.zone.value,
            reason=f"access ended ({event.payload.get('state')}); review due "
                   f"{review.due_at.isoformat()}",
            payload={"review": review.id, "reviewer": review.reviewer,
                     "due_at": review.due_at.isoformat(), "requester": req.requester},
        )

    def _review_for(self, req: AccessRequest, store: ReviewStore, opened: datetime) -> Review:
        candidates = review_candidates(self._catalog, self._policy, req.requester,
                                       req.requester_teams, req.zone, opened)
        reviewer = pick_reviewer(candidates, {ap.approver for ap in req.approvals},
                                 store.open_load(candidates))
        return Review(id=review_id_for(req.id), request_id=req.id, incident=req.incident,
                      zone=req.zone.value, environment=req.environment,
                      requester=req.requester, requester_teams=req.requester_teams,
                      reviewer=reviewer, opened_at=opened, due_at=opened + self._due_after)
