"""Incident-bound access: a request's incident must exist and be open.

The incident system is asked by the service layer (an ``IncidentDirectory``);
what it answered comes here as an :class:`IncidentLookup`, and the rule turns
it into a decision. When the system cannot answer, access is refused with that
reason, except zone A when the catalog allows it (``fail_open_zone_a``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from breakglass.domain.model import Policy, Runbook, Zone
from breakglass.domain.policy import Allowed, Decision, Denied


class IncidentStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class IncidentLookup:
    """What the incident system said about one incident ID."""

    incident: str
    status: IncidentStatus
    detail: str = ""
    """The incident system's own status word, or why it could not answer."""
    severity: str | None = None


def check_incident(policy: Policy, lookup: IncidentLookup, zone: Zone) -> Decision:
    """Open incidents pass; unknown and closed ones never do; a silent system fails closed."""
    if lookup.status is IncidentStatus.OPEN:
        return Allowed()
    if lookup.status is IncidentStatus.UNKNOWN:
        return Denied("incident.unknown", f"unknown incident {lookup.incident}")
    if lookup.status is IncidentStatus.CLOSED:
        word = f" ({lookup.detail})" if lookup.detail else ""
        return Denied("incident.closed", f"incident {lookup.incident} is closed{word}")
    if zone is Zone.A and policy.incident_fail_open_zone_a:
        return Allowed()
    return Denied(
        "incident.unavailable",
        f"the incident system cannot confirm {lookup.incident}: {lookup.detail or 'no answer'}",
    )


def check_runbook_severity(runbook: Runbook, lookup: IncidentLookup | None) -> Decision:
    """A runbook limited to some severities applies only to incidents of those."""
    if not runbook.severities:
        return Allowed()
    if lookup is None or lookup.severity is None:
        return Denied(
            "runbook.severity",
            f"runbook {runbook.id} needs the incident's severity, which is not known",
        )
    if lookup.severity not in runbook.severities:
        return Denied(
            "runbook.severity",
            f"runbook {runbook.id} covers severities {', '.join(runbook.severities)}, "
            f"not {lookup.severity}",
        )
    return Allowed()
