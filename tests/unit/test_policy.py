"""Every rule of the program items 1-7, as pure decisions."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from breakglass.catalog.loader import LoadedCatalog
from breakglass.domain import policy as rules
from breakglass.domain.model import (
    AccessRequest,
    Approval,
    Principal,
    PrincipalKind,
    Zone,
)
from tests.fakes import FakeClock, human


def plan(loaded: LoadedCatalog, who: Principal, roles: list[str], clock: FakeClock, *,
         incident: str = "SEV-1234", reason: str = "recovery",
         ttl: timedelta | None = None) -> rules.RequestPlan | rules.Denied:
    return rules.plan_request(loaded.policy, who, roles, incident, reason, ttl, clock.now())


def denied_rule(result: object) -> str:
    assert isinstance(result, rules.Denied), f"expected a refusal, got {result!r}"
    return result.rule


def request_for(result: rules.RequestPlan | rules.Denied, who: Principal,
                clock: FakeClock) -> AccessRequest:
    assert isinstance(result, rules.RequestPlan)
    return AccessRequest(
        id="r-1", requester=who.name, requester_kind=who.kind, requester_teams=who.teams,
        roles=tuple(r.name for r in result.roles), zone=result.zone,
        environment=result.environment, incident="SEV-1234", reason="recovery",
        justification="", ttl=result.ttl, created_at=clock.now(),
        pending_until=clock.now() + timedelta(hours=1),
    )


def test_zone_a_request_gets_the_zone_default_ttl(loaded, people, clock):
    result = plan(loaded, people["uma"], ["embeddings-read"], clock)
    assert isinstance(result, rules.RequestPlan)
    assert result.zone is Zone.A
    assert result.ttl == timedelta(minutes=20)
    assert result.environment == "production"


@pytest.mark.parametrize("name", ["break-glass-admin", "OPS", "ops"])
def test_shared_accounts_are_refused(loaded, clock, name):
    who = human(name, "team:ml-serving", "responders", clock=clock)
    assert denied_rule(plan(loaded, who, ["embeddings-read"], clock)) == (
        "identity.shared_account")


@pytest.mark.parametrize(("incident", "rule"), [
    ("", "incident.required"),
    ("INC-1234", "incident.pattern"),      # the demo's pattern is not this catalog's
    ("SEV-12", "incident.pattern"),
    ("SEV-1234; DROP TABLE", "incident.pattern"),
    ("sev-1234", "incident.pattern"),
])
def test_incident_id_is_required_and_must_match_the_pattern(loaded, people, clock, incident,
                                                            rule):
    result = plan(loaded, people["uma"], ["embeddings-read"], clock, incident=incident)
    assert denied_rule(result) == rule


def test_reason_code_must_come_from_the_catalog(loaded, people, clock):
    assert denied_rule(plan(loaded, people["uma"], ["embeddings-read"], clock,
                            reason="curiosity")) == "reason.unknown"
    extended = plan(loaded, people["uma"], ["embeddings-read"], clock, reason="model_rollback")
    assert isinstance(extended, rules.RequestPlan)


def test_ttl_over_the_zone_maximum_is_refused(loaded, people, clock):
    result = plan(loaded, people["uma"], ["embeddings-read"], clock, ttl=timedelta(minutes=46))
    assert denied_rule(result) == "ttl.max"
    assert "45m" in result.reason  # type: ignore[union-attr]
    ok = plan(loaded, people["uma"], ["embeddings-read"], clock, ttl=timedelta(minutes=45))
    assert isinstance(ok, rules.RequestPlan)


def test_a_role_can_only_tighten_the_zone_ttl(loaded, people, clock):
    # zone B allows 40m, the role 25m: the role wins, and the default is clamped to it
    refused = plan(loaded, people["uma"], ["embeddings-requeue"], clock,
                   ttl=timedelta(minutes=30))
    assert denied_rule(refused) == "ttl.max"
    result = plan(loaded, people["uma"], ["embeddings-requeue"], clock)
    assert isinstance(result, rules.RequestPlan)
    assert result.ttl == timedelta(minutes=20)


def test_requesters_are_restricted_by_group(loaded, people, clock):
    result = plan(loaded, people["yuri"], ["embeddings-read"], clock)
    assert denied_rule(result) == "role.requesters"
    assert "yuri" in result.reason  # type: ignore[union-attr]


def test_unknown_role_is_refused(loaded, people, clock):
    assert denied_rule(plan(loaded, people["uma"], ["root-everything"], clock)) == "role.unknown"


def test_mfa_is_required_for_elevated_zones_but_not_zone_a(loaded, people, clock):
    assert isinstance(plan(loaded, people["xia"], ["embeddings-read"], clock), rules.RequestPlan)
    assert denied_rule(plan(loaded, people["xia"], ["embeddings-requeue"], clock)) == (
        "identity.mfa_required")
    assert denied_rule(plan(loaded, people["xia"], ["embeddings-repair"], clock)) == (
        "identity.mfa_required")


def test_stale_mfa_must_reauthenticate(loaded, clock):
    stale = human("uma", "team:ml-serving", "responders",
                  auth_time=clock.now() - timedelta(minutes=11))
    result = plan(loaded, stale, ["embeddings-requeue"], clock)
    assert denied_rule(result) == "identity.mfa_stale"
    assert "re-authenticate" in result.reason  # type: ignore[union-attr]


def test_the_highest_zone_rules_approvals_and_ttl(loaded, people, clock):
    result = plan(loaded, people["uma"], ["embeddings-read", "embeddings-repair"], clock)
    assert isinstance(result, rules.RequestPlan)
    assert result.zone is Zone.C
    assert result.ttl == timedelta(minutes=10)
    too_long = plan(loaded, people["uma"], ["embeddings-read", "embeddings-repair"], clock,
                    ttl=timedelta(minutes=30))
    assert denied_rule(too_long) == "ttl.max"


def test_zone_a_allows_self_approval_b_does_not(loaded, people, clock):
    uma = people["uma"]
    a = request_for(plan(loaded, uma, ["embeddings-read"], clock), uma, clock)
    assert rules.check_approval(loaded.policy, a, uma, clock.now()).ok
    assert rules.approvals_satisfied(loaded.policy, a)
    b = request_for(plan(loaded, uma, ["embeddings-requeue"], clock), uma, clock)
    assert denied_rule(rules.check_approval(loaded.policy, b, uma, clock.now())) == (
        "approval.self")
    assert not rules.approvals_satisfied(loaded.policy, b)


def test_zone_b_needs_one_approver_outside_the_team(loaded, people, clock):
    uma = people["uma"]
    b = request_for(plan(loaded, uma, ["embeddings-requeue"], clock), uma, clock)
    # ugo is a reviewer but in uma's team
    assert denied_rule(rules.check_approval(loaded.policy, b, people["ugo"], clock.now())) == (
        "approval.same_team")
    # yuri is outside the team but not an approver
    assert denied_rule(rules.check_approval(loaded.policy, b, people["yuri"], clock.now())) == (
        "approval.not_approver")
    assert rules.check_approval(loaded.policy, b, people["vera"], clock.now()).ok
    b.approvals.append(Approval("vera", frozenset({"sre"}), True, clock.now()))
    assert rules.approvals_satisfied(loaded.policy, b)


def test_zone_c_needs_two_distinct_outside_approvers(loaded, people, clock):
    uma = people["uma"]
    c = request_for(plan(loaded, uma, ["embeddings-repair"], clock), uma, clock)
    c.approvals.append(Approval("vera", frozenset({"sre"}), True, clock.now()))
    assert not rules.approvals_satisfied(loaded.policy, c)
    assert denied_rule(rules.check_approval(loaded.policy, c, people["vera"], clock.now())) == (
        "approval.duplicate")
    assert rules.check_approval(loaded.policy, c, people["wim"], clock.now()).ok
    c.approvals.append(Approval("wim", frozenset({"data-eng"}), True, clock.now()))
    assert rules.approvals_satisfied(loaded.policy, c)


def test_approvers_of_elevated_zones_need_mfa(loaded, people, clock):
    uma = people["uma"]
    c = request_for(plan(loaded, uma, ["embeddings-repair"], clock), uma, clock)
    no_mfa = replace(people["vera"], mfa=False)
    assert denied_rule(rules.check_approval(loaded.policy, c, no_mfa, clock.now())) == (
        "approval.mfa_required")


def test_a_workload_cannot_approve(loaded, people, clock):
    uma = people["uma"]
    b = request_for(plan(loaded, uma, ["embeddings-requeue"], clock), uma, clock)
    robot = Principal("pipeline", PrincipalKind.WORKLOAD, frozenset({"reviewers"}), False, None)
    assert denied_rule(rules.check_approval(loaded.policy, b, robot, clock.now())) == (
        "approval.workload")


def test_runbook_covers_matching_requests_only(loaded, people, clock):
    uma = people["uma"]
    b = plan(loaded, uma, ["embeddings-requeue"], clock)
    assert isinstance(b, rules.RequestPlan)
    assert rules.runbook_applies(loaded.policy, "RB-7", uma, b, "recovery").ok
    assert denied_rule(rules.runbook_applies(loaded.policy, "RB-7", uma, b, "containment")) == (
        "runbook.reason")
    assert denied_rule(rules.runbook_applies(loaded.policy, "RB-404", uma, b, "recovery")) == (
        "runbook.unknown")
    c = plan(loaded, uma, ["embeddings-repair"], clock)
    assert isinstance(c, rules.RequestPlan)
    assert denied_rule(rules.runbook_applies(loaded.policy, "RB-7", uma, c, "recovery")) == (
        "runbook.zone_c")
