"""Ending access: expiry, forced revocation, retries, crash recovery, incident close.

Work on a request is claimed with a lease written in the same row-locked
transaction that records the intent (``revoking``), so any number of brokers
and workers on one PostgreSQL never revoke one grant twice, and a broker that
dies mid-claim leaves work another picks up when the lease runs out. A target
that is down is retried with capped exponential backoff, forever.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from breakglass.connectors import Connector
from breakglass.domain.errors import Conflict, TargetError
from breakglass.domain.events import EventTag
from breakglass.domain.model import AccessRequest, Grant, GrantState, Policy, RequestState
from breakglass.service import crashpoints
from breakglass.service.ports import Clock
from breakglass.service.recording import Actor, actor_name, record
from breakglass.storage.uow import UnitOfWorkFactory

LEASE = timedelta(seconds=30)
RETRY_CAP = timedelta(seconds=30)


def retry_delay(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s ... capped: a target that comes back is retried within the cap."""
    return min(RETRY_CAP, timedelta(seconds=2 ** min(attempts - 1, 10)))


class Revoker:
    def __init__(
        self,
        *,
        policy: Policy,
        uow: UnitOfWorkFactory,
        connectors: Mapping[str, Connector],
        clock: Clock,
        workers: int = 8,
        owner: str | None = None,
    ) -> None:
        self._policy = policy
        self._uow = uow
        self._connectors = connectors
        self._clock = clock
        self._workers = workers
        self.on_ended: list[Callable[[], object]] = []
        # A broker that restarts with the same identity takes its own leases back at once.
        self.owner = owner or "broker-" + secrets.token_hex(6)
        # Each call holds its lease as "<owner>/<run>/<call>": callers in one process
        # exclude each other, and a restarted broker knows its previous runs' leases.
        self._run = f"{self.owner}/{secrets.token_hex(3)}/"

    def connector(self, target: str) -> Connector:
        found = self._connectors.get(target)
        if found is None:
            raise Conflict(f"target {target} has no connector configured", rule="target.missing")
        return found

    def try_revoke(self, grant: Grant) -> str | None:
        try:
            self.connector(grant.target).revoke(grant.target_ref, grant.artefacts)
        except TargetError as exc:
            return str(exc)
        return None

    def end_access(self, request_id: str, final: RequestState, actor: Actor, reason: str,
                   *, announce: bool = True) -> bool:
        """Revoke every grant of one request; True when all are gone (or nothing to do).

        Idempotent and safe to race: an explicit revoke, an incident close and the expiry
        loop may all end one request at once. The first to take the request's lease
        revokes on the targets and records it; the others find the work done (or in
        hand) and return without touching the target or the log. Access past its
        ``expires_at`` ends as expired, whoever ends it.

        Without ``announce`` the caller runs the ``on_ended`` callbacks itself (once for a
        whole batch)."""
        now = self._clock.now()
        holder = self._run + secrets.token_hex(3)
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            if req.state not in (RequestState.ACTIVE, RequestState.REVOKING):
                return True
            if not uow.requests.take_lease(req.id, holder, now, LEASE,
                                           reclaimable=self._reclaimable):
                return False  # another caller is revoking it right now
            if req.state is RequestState.ACTIVE:
                if req.time_is_up(now):  # its time is up: it expired, whoever noticed
                    final, actor, reason = RequestState.EXPIRED, "broker", "expired"
                req.begin_ending(final, reason, now)
                uow.requests.save(req)
                record(uow, now, req, actor, EventTag.REQUEST_ENDING, reason=reason)
            grants = [g for g in uow.grants.for_request(req.id)
                      if g.state in (GrantState.ACTIVE, GrantState.REVOCATION_PENDING)]
        crashpoints.reached("revocation.started")
        outcomes = [(g, self.try_revoke(g)) for g in grants]
        crashpoints.reached("revocation.revoked")
        return self._finish(request_id, holder, actor, outcomes, announce)

    def _reclaimable(self, lease_owner: str) -> bool:
        """This broker's batch claim, or a lease of its run before a restart."""
        return lease_owner == self.owner or (lease_owner.startswith(self.owner + "/")
                                             and not lease_owner.startswith(self._run))

    def _finish(self, request_id: str, holder: str, actor: Actor,
                outcomes: list[tuple[Grant, str | None]], announce: bool) -> bool:
        now = self._clock.now()
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            if req.state is not RequestState.REVOKING:
                return True  # another caller (whose lease ran out on us) finished it
            expired = req.end_state is RequestState.EXPIRED
            done_state = GrantState.EXPIRED if expired else GrantState.REVOKED
            tag = EventTag.GRANT_EXPIRED if expired else EventTag.GRANT_REVOKED
            # Conditional updates: a grant another caller recorded is not recorded twice.
            done = [g for g, e in outcomes if e is None and uow.grants.end(g.id, done_state, now)]
            for grant in done:
                uow.grants.drop_secret(grant.id)
            errors = [e for g, e in outcomes
                      if e is not None and uow.grants.revocation_failed(g.id, e)]
            attempts = 0
            if errors:
                if uow.requests.holds_lease(req.id, holder):
                    attempts = uow.requests.release_failed(req.id, "; ".join(errors), now,
                                                           retry_delay)
            elif any(g.state in (GrantState.ACTIVE, GrantState.REVOCATION_PENDING)
                     for g in uow.grants.for_request(req.id)):
                return False  # the caller that took our expired lease over finishes it
            else:
                uow.requests.release(req.id)
                req.finish_ending()
                uow.requests.save(req)
            # Events last: the audit log's head stays locked from the first one to the commit,
            # and every broker sharing the store waits for it.
            for grant in done:
                record(uow, now, req, actor, tag, grant_id=grant.id, reason=req.end_reason,
                       payload={"role": grant.role, "target": grant.target,
                                "target_ref": grant.target_ref, "requester": req.requester,
                                "expires_at": grant.expires_at.isoformat(),
                                "lag_ms": _lag_ms(grant, now) if expired else None,
                                **({"cleaned": list(grant.artefacts)}
                                   if grant.artefacts else {})})
            if errors:
                if attempts == 1:  # alert once, then keep trying quietly
                    record(uow, now, req, "broker", EventTag.GRANT_REVOCATION_FAILED,
                           outcome="error", reason="; ".join(errors),
                           payload={"alert": True, "retry": "with backoff until it succeeds"})
                return False
            record(uow, now, req, actor, EventTag.REQUEST_ENDED, reason=req.end_reason,
                   payload={"state": req.state.value})
            for callback in self.on_ended if announce else ():
                uow.on_commit(callback)
        return True

    def expire_due(self) -> int:
        """Claim and end every request whose time is up; return how many ended."""
        now = self._clock.now()
        with self._uow() as uow:
            pending = uow.requests.pending_timed_out(now)
        for request_id in pending:
            self._time_out_pending(request_id, now)
        ended = 0
        while True:
            with self._uow() as uow:
                claimed = uow.requests.claim_due(self._clock.now(), self.owner, LEASE,
                                                 limit=200, run=self._run)
            if not claimed:
                return ended + len(pending)
            with ThreadPoolExecutor(max_workers=self._workers) as pool:
                results = list(pool.map(
                    lambda rid: self.end_access(rid, RequestState.EXPIRED, "broker", "expired",
                                                announce=False),
                    claimed))
            ended += sum(results)
            if any(results):  # once for the batch: a mass expiry is not slowed per request
                for callback in self.on_ended:
                    callback()
            if not all(results):
                return ended + len(pending)  # failures wait for their backoff

    def _time_out_pending(self, request_id: str, now: datetime) -> None:
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            if req.state is not RequestState.PENDING or not req.time_is_up(now):
                return
            req.time_out_pending(now)
            uow.requests.save(req)
            record(uow, now, req, "broker", EventTag.REQUEST_EXPIRED, reason=req.end_reason)

    def enforce_deadline(self, request_id: str) -> None:
        """Expire one request now if its time is up, as the background loop would.

        Called when a decision was refused for lateness, so the refusal and the state
        agree at once rather than when the loop comes round."""
        now = self._clock.now()
        with self._uow() as uow:
            req = uow.requests.get(request_id)
        if not req.time_is_up(now):
            return
        if req.state is RequestState.PENDING:
            self._time_out_pending(request_id, now)
        elif req.state is RequestState.ACTIVE:
            self.end_access(request_id, RequestState.EXPIRED, "broker", "expired")

    def recover(self, older_than: timedelta = timedelta(seconds=60)) -> int:
        """Roll back activations that never finished (a crash between target and store).

        A target that is down leaves its activation to the next pass: the others are
        rolled back meanwhile, and the caller's expiry work is not held up by it."""
        now = self._clock.now()
        with self._uow() as uow:
            stuck = uow.requests.in_state(RequestState.ACTIVATING)
        rolled_back = 0
        for request_id in stuck:
            try:
                rolled_back += self._roll_back(request_id, now, older_than)
            except (TargetError, Conflict):  # a target down, or no longer configured
                continue  # still activating: retried at the next pass, the target's expiry holds
        return rolled_back

    def _roll_back(self, request_id: str, now: datetime, older_than: timedelta) -> bool:
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            started = req.activated_at or req.created_at
            if req.state is not RequestState.ACTIVATING or now - started < older_than:
                return False
            for i, role_name in enumerate(req.roles):
                connector = self.connector(self._policy.roles[role_name].target)
                planned = connector.planned_ref(f"{req.id}-g{i}")
                if planned is not None:  # revoke is idempotent: absent is fine
                    connector.revoke(planned)
            req.transition(RequestState.FAILED)
            req.ended_at = now
            req.end_reason = "activation interrupted; rolled back"
            uow.requests.save(req)
            record(uow, now, req, "broker", EventTag.REQUEST_ACTIVATION_FAILED,
                   outcome="error", reason=req.end_reason)
        return True

    def close_incident(self, incident: str, actor: Actor) -> list[str]:
        """Revoke every active request of an incident, both tracks, at once."""
        with self._uow() as uow:
            ids = uow.requests.active_for_incident(incident)
        for request_id in ids:
            self.end_access(request_id, RequestState.REVOKED, actor,
                            f"incident {incident} closed by {actor_name(actor)}")
        return ids


def ended_by_another(req: AccessRequest) -> str:
    """What a caller is told when the access it wanted to end was ended by someone else."""
    if req.state is RequestState.REVOKING:
        return f"request {req.id} is being ended ({req.end_reason}); nothing more to do"
    return f"request {req.id} had already ended ({req.state}: {req.end_reason}); nothing to do"


def _lag_ms(grant: Grant, now: datetime) -> int:
    return int((now - grant.expires_at).total_seconds() * 1000)
