"""Who is told and who reviews: people from the catalog's directory.

Production identity providers vouch for groups inside tokens, so the only
list of people the broker holds is the catalog ``directory``. Without it,
notifications still reach the sinks (a channel), naming the approver groups.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from breakglass.catalog.schema import Catalog
from breakglass.domain.model import (
    AccessRequest,
    Policy,
    Principal,
    PrincipalKind,
    RequestState,
    Zone,
)
from breakglass.domain.names import normalise_name
from breakglass.domain.policy import Allowed, check_approval


def directory_people(catalog: Catalog, now: datetime) -> list[Principal]:
    """The directory as principals that authenticated with their usual MFA just now.

    A person bound to a ``subject`` is that subject at the catalog's issuer.
    """
    shared = {normalise_name(s) for s in catalog.identity.shared_accounts}
    issuer = catalog.identity.issuer or ""
    return [
        Principal(name=name, kind=PrincipalKind.HUMAN, groups=frozenset(entry.groups),
                  mfa=entry.mfa, auth_time=now, amr=("mfa",) if entry.mfa else (),
                  issuer=issuer if entry.subject else "", subject=entry.subject or "")
        for name, entry in sorted(catalog.directory.items())
        if normalise_name(name) not in shared
    ]


def eligible_approvers(
    policy: Policy, catalog: Catalog, req: AccessRequest, now: datetime
) -> list[str]:
    """Everyone in the directory whose approval the rules would accept, before anyone acted."""
    fresh = dataclasses.replace(req, approvals=[], state=RequestState.PENDING)
    return [
        p.name for p in directory_people(catalog, now)
        if not fresh.may_be_requester(p)
        and isinstance(check_approval(policy, fresh, p, now), Allowed)
    ]


def reviewer_selectors(catalog: Catalog, policy: Policy, zone: Zone) -> tuple[str, ...]:
    if catalog.reviews.reviewers:
        return tuple(catalog.reviews.reviewers)
    found = policy.approvers.get(zone, ())
    if found:
        return found
    return tuple(dict.fromkeys(s for selectors in policy.approvers.values() for s in selectors))


def review_candidates(
    catalog: Catalog, policy: Policy, requester: str, requester_teams: frozenset[str],
    zone: Zone, now: datetime,
) -> list[str]:
    """Directory members of the reviewer groups outside the requester's team(s)."""
    selectors = reviewer_selectors(catalog, policy, zone)
    return [
        p.name for p in directory_people(catalog, now)
        if normalise_name(p.name) != normalise_name(requester)
        and not (p.teams & requester_teams)
        and policy.selects(p, selectors)
    ]
