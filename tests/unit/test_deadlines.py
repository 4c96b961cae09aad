"""Time limits as pure decisions: every transition checks them at its own moment."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from breakglass.domain import extensions as ext_rules
from breakglass.domain import policy as rules
from breakglass.domain.extensions import Extension
from breakglass.domain.model import (
    PENDING_TIMEOUT_REASON,
    AccessRequest,
    PrincipalKind,
    RequestState,
    Zone,
)
from tests.fakes import FakeClock


def pending(clock: FakeClock, zone: Zone = Zone.B,
            roles: tuple[str, ...] = ("embeddings-requeue",)) -> AccessRequest:
    return AccessRequest(
        id="r-1", requester="uma", requester_kind=PrincipalKind.HUMAN,
        requester_teams=frozenset({"ml-serving"}), roles=roles, zone=zone,
        environment="production", incident="SEV-1234", reason="recovery", justification="",
        ttl=timedelta(minutes=10), created_at=clock.now(),
        pending_until=clock.now() + timedelta(hours=1),
    )


def active(clock: FakeClock, zone: Zone = Zone.C,
           roles: tuple[str, ...] = ("embeddings-repair",)) -> AccessRequest:
    req = pending(clock, zone, roles)
    req.state = RequestState.ACTIVE
    req.activated_at = clock.now()
    req.expires_at = clock.now() + req.ttl
    return req


def rule_of(decision: object) -> str:
    assert isinstance(decision, rules.Denied), f"expected a refusal, got {decision!r}"
    return decision.rule


@pytest.mark.parametrize(("after", "late"), [
    (timedelta(minutes=59, seconds=59), False), (timedelta(hours=1), True),
    (timedelta(days=3), True)])
def test_a_pending_request_is_decided_only_before_pending_until(after, late):
    clock = FakeClock()
    req = pending(clock)
    clock.advance(seconds=after.total_seconds())
    assert req.time_is_up(clock.now()) is late
    decision = rules.check_deadline(req, clock.now())
    if late:
        assert rule_of(decision) == "lifecycle.pending_timeout"
        assert "pending timeout" in decision.reason  # type: ignore[union-attr]
    else:
        assert isinstance(decision, rules.Allowed)


def test_an_approval_past_pending_until_is_refused_even_from_a_valid_approver(loaded, people):
    clock = FakeClock()
    req = pending(clock)
    assert isinstance(rules.check_approval(loaded.policy, req, people["vera"], clock.now()),
                      rules.Allowed)
    clock.advance(hours=1)
    assert rule_of(rules.check_approval(loaded.policy, req, people["vera"], clock.now())) == (
        "lifecycle.pending_timeout")


@pytest.mark.parametrize("state", [RequestState.ACTIVE, RequestState.ACTIVATING])
def test_access_past_expires_at_has_ended_whether_or_not_the_loop_ran(state):
    clock = FakeClock()
    req = active(clock)
    req.state = state
    assert isinstance(rules.check_deadline(req, clock.now()), rules.Allowed)
    clock.advance(minutes=10)
    assert req.time_is_up(clock.now())
    assert rule_of(rules.check_deadline(req, clock.now())) == "lifecycle.not_active"


@pytest.mark.parametrize("state", [RequestState.EXPIRED, RequestState.REVOKED,
                                   RequestState.DENIED, RequestState.REVOKING])
def test_ended_requests_have_no_deadline_left(state):
    clock = FakeClock()
    req = replace(active(clock), state=state)
    clock.advance(days=1)
    assert not req.time_is_up(clock.now())


def test_timing_out_a_pending_request_records_why():
    clock = FakeClock()
    req = pending(clock)
    clock.advance(hours=1)
    req.time_out_pending(clock.now())
    assert (req.state, req.ended_at, req.end_reason) == (
        RequestState.EXPIRED, clock.now(), PENDING_TIMEOUT_REASON)


def test_an_extension_approval_rechecks_the_expiry_and_max_total(loaded, people):
    clock = FakeClock()
    req = active(clock)
    ext = Extension(id="x-1", request_id=req.id, requester="uma", ttl=timedelta(minutes=5),
                    justification="", created_at=clock.now(), required=2,
                    expires_before=req.expires_at)  # type: ignore[arg-type]
    assert isinstance(ext_rules.check_extension_approval(
        loaded.policy, req, ext, people["vera"], clock.now()), rules.Allowed)
    # the lifetime it would reach no longer fits the zone's cap (the expiry moved meanwhile)
    moved = replace(req, expires_at=req.activated_at + timedelta(minutes=22))  # type: ignore[operator]
    assert rule_of(ext_rules.check_extension_approval(
        loaded.policy, moved, ext, people["vera"], clock.now())) == "extension.max_total"
    clock.advance(minutes=10)
    assert rule_of(ext_rules.check_extension_approval(
        loaded.policy, req, ext, people["vera"], clock.now())) == "lifecycle.not_active"
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, people["uma"],
                                            timedelta(minutes=5), clock.now(),
                                            pending=False)) == "lifecycle.not_active"
