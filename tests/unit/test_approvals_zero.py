"""``approvals: 0`` means "no approver" only where the zone allows self-approval.

A policy that reaches the broker with ``approvals: 0`` and ``self_approval: false``
(catalog load refuses it, rule ``zone.approvals_zero``; a policy built in code or an
older catalog would not) must not activate requests unseen: they wait for one approver,
and the requester is never that approver.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from breakglass.domain.extensions import extension_approvals_required
from breakglass.domain.model import AccessRequest, Approval, Policy, PrincipalKind, Zone
from breakglass.domain.policy import (
    Denied,
    approvals_needed,
    approvals_satisfied,
    check_approval,
)
from tests.fakes import FakeClock, human


def waiting_policy(policy: Policy) -> Policy:
    zone_a = replace(policy.zones[Zone.A], approvals=0, self_approval=False)
    return replace(policy, zones={**policy.zones, Zone.A: zone_a})


def zone_a_request(clock: FakeClock) -> AccessRequest:
    uma = human("uma", "team:ml-serving", "responders", clock=clock)
    return AccessRequest(
        id="r-1", requester="uma", requester_subject=uma.subject_id,
        requester_kind=PrincipalKind.HUMAN, requester_teams=frozenset({"ml-serving"}),
        roles=("embeddings-read",), zone=Zone.A, environment="production",
        incident="SEV-1234", reason="recovery", justification="", ttl=timedelta(minutes=5),
        created_at=clock.now(), pending_until=clock.now() + timedelta(hours=1))


def test_zero_approvals_without_self_approval_needs_one(loaded):
    policy = waiting_policy(loaded.policy)
    assert approvals_needed(policy.zones[Zone.A]) == 1
    assert approvals_needed(loaded.policy.zones[Zone.A]) == 0  # self-approval: none needed
    assert extension_approvals_required(policy.zones[Zone.A]) == 1


def test_the_request_is_not_satisfied_until_someone_else_approves(loaded, clock):
    policy = waiting_policy(loaded.policy)
    req = zone_a_request(clock)
    assert not approvals_satisfied(policy, req)
    uma = human("uma", "team:ml-serving", "responders", clock=clock)
    refused = check_approval(policy, req, uma, clock.now())
    assert isinstance(refused, Denied)
    assert refused.rule == "approval.self"
    # the requester's own approval, had it been stored, never counts
    req.approvals.append(Approval("uma", frozenset({"ml-serving"}), True, clock.now(), "",
                                  approver_subject=uma.subject_id))
    assert not approvals_satisfied(policy, req)
    vera = human("vera", "team:sre", "reviewers", clock=clock)
    assert check_approval(policy, req, vera, clock.now()).ok
    req.approvals.append(Approval("vera", frozenset({"sre"}), True, clock.now(), "",
                                  approver_subject=vera.subject_id))
    assert approvals_satisfied(policy, req)
