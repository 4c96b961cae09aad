"""Extensions as pure decisions: who asks, how long, whose fresh approvals."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from breakglass.domain import extensions as ext_rules
from breakglass.domain import policy as rules
from breakglass.domain.extensions import Extension, ExtensionState
from breakglass.domain.model import AccessRequest, Approval, RequestState, Zone
from tests.fakes import FakeClock


def active(loaded, who, roles, clock: FakeClock, ttl: timedelta | None = None) -> AccessRequest:
    plan = rules.plan_request(loaded.policy, who, roles, "SEV-1234", "recovery", ttl,
                              clock.now())
    assert isinstance(plan, rules.RequestPlan)
    return AccessRequest(
        id="r-1", requester=who.name, requester_kind=who.kind, requester_teams=who.teams,
        requester_subject=who.subject_id,
        roles=tuple(r.name for r in plan.roles), zone=plan.zone, environment=plan.environment,
        incident="SEV-1234", reason="recovery", justification="", ttl=plan.ttl,
        created_at=clock.now(), pending_until=clock.now() + timedelta(hours=1),
        state=RequestState.ACTIVE, activated_at=clock.now(),
        expires_at=clock.now() + plan.ttl,
        approvals=[Approval("vera", frozenset({"sre"}), True, clock.now()),
                   Approval("wim", frozenset({"data-eng"}), True, clock.now())],
    )


def extension_for(req: AccessRequest, plan: ext_rules.ExtensionPlan, clock) -> Extension:
    return Extension(id="x-1", request_id=req.id, requester=req.requester,
                     requester_subject=req.requester_id, ttl=plan.ttl,
                     justification="still broken", created_at=clock.now(),
                     required=plan.required, expires_before=plan.expires_before)


def rule_of(result: object) -> str:
    assert isinstance(result, rules.Denied), f"expected a refusal, got {result!r}"
    return result.rule


def test_zone_c_extension_needs_its_own_two_approvals(loaded, people, clock):
    req = active(loaded, people["uma"], ["embeddings-repair"], clock)
    plan = ext_rules.plan_extension(loaded.policy, req, people["uma"], timedelta(minutes=5),
                                    clock.now(), pending=False)
    assert isinstance(plan, ext_rules.ExtensionPlan)
    assert plan.required == 2
    assert plan.expires_after == req.expires_at + timedelta(minutes=5)
    ext = extension_for(req, plan, clock)
    assert not ext.satisfied  # the request's approvals are not fresh ones


@pytest.mark.parametrize(("roles", "required"), [
    (["embeddings-read"], 0), (["embeddings-requeue"], 1), (["embeddings-repair"], 2)])
def test_each_zone_requires_its_extension_approvals(loaded, people, clock, roles, required):
    req = active(loaded, people["uma"], roles, clock)
    plan = ext_rules.plan_extension(loaded.policy, req, people["uma"], timedelta(minutes=5),
                                    clock.now(), pending=False)
    assert isinstance(plan, ext_rules.ExtensionPlan)
    assert plan.required == required


def test_extension_approvals_default_to_the_zones_approvals(loaded):
    zone_b = loaded.policy.zones[Zone.B]
    assert zone_b.extension_approvals is None
    assert ext_rules.extension_approvals_required(zone_b) == zone_b.approvals
    assert ext_rules.extension_approvals_required(replace(zone_b, extension_approvals=3)) == 3


def test_only_the_requester_of_active_access_extends_it(loaded, people, clock):
    req = active(loaded, people["uma"], ["embeddings-repair"], clock)
    five = timedelta(minutes=5)
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, people["ugo"], five,
                                            clock.now(), pending=False)) == (
        "extension.requester_only")
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, people["uma"], five,
                                            clock.now(), pending=True)) == "extension.pending"
    ended = replace(req, state=RequestState.EXPIRED)
    assert rule_of(ext_rules.plan_extension(loaded.policy, ended, people["uma"], five,
                                            clock.now(), pending=False)) == (
        "lifecycle.not_active")
    clock.advance(minutes=11)
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, people["uma"], five,
                                            clock.now(), pending=False)) == (
        "lifecycle.not_active")


def test_an_extension_needs_fresh_mfa_in_elevated_zones(loaded, people, clock):
    req = active(loaded, people["uma"], ["embeddings-repair"], clock)
    clock.advance(minutes=11)
    req.expires_at = clock.now() + timedelta(minutes=1)
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, people["uma"],
                                            timedelta(minutes=5), clock.now(),
                                            pending=False)) == "identity.mfa_stale"


def test_one_extension_is_bounded_like_a_request_and_the_lifetime_by_max_total(
        loaded, people, clock):
    req = active(loaded, people["uma"], ["embeddings-repair"], clock)  # C: max 12m, total 24m
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, people["uma"],
                                            timedelta(minutes=13), clock.now(),
                                            pending=False)) == "ttl.max"
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, people["uma"],
                                            timedelta(0), clock.now(),
                                            pending=False)) == "extension.ttl"
    ok = ext_rules.plan_extension(loaded.policy, req, people["uma"], timedelta(minutes=12),
                                  clock.now(), pending=False)
    assert isinstance(ok, ext_rules.ExtensionPlan)
    req.expires_at = ok.expires_after  # 22 minutes in all now
    over = ext_rules.plan_extension(loaded.policy, req, people["uma"], timedelta(minutes=3),
                                    clock.now(), pending=False)
    assert rule_of(over) == "extension.max_total"
    assert "at most 2m" in over.reason


def test_extension_approvers_follow_the_zone_rules_on_fresh_approvals(loaded, people, clock):
    req = active(loaded, people["uma"], ["embeddings-repair"], clock)
    plan = ext_rules.plan_extension(loaded.policy, req, people["uma"], timedelta(minutes=5),
                                    clock.now(), pending=False)
    assert isinstance(plan, ext_rules.ExtensionPlan)
    ext = extension_for(req, plan, clock)
    check = ext_rules.check_extension_approval
    assert rule_of(check(loaded.policy, req, ext, people["uma"], clock.now())) == (
        "approval.self")
    assert rule_of(check(loaded.policy, req, ext, people["ugo"], clock.now())) == (
        "approval.same_team")
    # vera approved the request; her approval of the extension is a fresh one
    assert check(loaded.policy, req, ext, people["vera"], clock.now()).ok
    ext.approvals.append(Approval("vera", frozenset({"sre"}), True, clock.now()))
    assert rule_of(check(loaded.policy, req, ext, people["vera"], clock.now())) == (
        "approval.duplicate")
    assert not ext.satisfied
    ext.approvals.append(Approval("wim", frozenset({"data-eng"}), True, clock.now()))
    assert ext.satisfied
    ext.state = ExtensionState.APPLIED
    assert rule_of(check(loaded.policy, req, ext, people["wim"], clock.now())) == (
        "extension.not_pending")


def test_an_extension_of_ended_access_cannot_be_approved(loaded, people, clock):
    req = active(loaded, people["uma"], ["embeddings-repair"], clock)
    plan = ext_rules.plan_extension(loaded.policy, req, people["uma"], timedelta(minutes=5),
                                    clock.now(), pending=False)
    assert isinstance(plan, ext_rules.ExtensionPlan)
    ext = extension_for(req, plan, clock)
    clock.advance(minutes=10)
    assert rule_of(ext_rules.check_extension_approval(
        loaded.policy, req, ext, people["vera"], clock.now())) == "lifecycle.not_active"


def test_the_new_expiry_adds_the_ttl_to_the_current_one(loaded, people, clock):
    req = active(loaded, people["uma"], ["embeddings-repair"], clock)
    plan = ext_rules.plan_extension(loaded.policy, req, people["uma"], timedelta(minutes=4),
                                    clock.now(), pending=False)
    assert isinstance(plan, ext_rules.ExtensionPlan)
    assert ext_rules.extended_expiry(req, extension_for(req, plan, clock)) == (
        req.expires_at + timedelta(minutes=4))
