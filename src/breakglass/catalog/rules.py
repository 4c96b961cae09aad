"""Every rule ID catalog checks report, with a one-line summary and the fix.

The IDs are stable: CI suppressions, SARIF ``rules[]`` and docs/catalog.md use
them. Add a rule here before a check reports it (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    summary: str
    fix: str
    level: str = "error"
    """The severity the rule reports at (``error`` blocks ``serve``)."""


RULES: dict[str, Rule] = {
    # reading the file
    "yaml.syntax": Rule("The file is not valid YAML (or repeats a key).",
                        "Fix the YAML at the position shown; keys appear once per mapping."),
    "catalog.schema": Rule("A field is missing, unknown or of the wrong type.",
                           "Use the field names and types of docs/catalog.md."),
    "catalog.env": Rule("A ${VARIABLE} the catalog uses is not set.",
                        "Set the variable, or give a default: ${NAME:-value}."),
    # zones
    "zone.missing": Rule("Zones A, B and C must all be defined.",
                         "Add the missing zone with its TTLs and approvals."),
    "zone.approvals_zero": Rule(
        "approvals: 0 is legal only with self_approval: true.",
        "Set approvals: 1 (or more), or self_approval: true in zone A."),
    "zone.ttl_ceiling": Rule("A zone's TTL is longer than the absolute ceiling (default 8h).",
                             "Lower default_ttl, max_ttl and max_total to the ceiling."),
    "zone.approvers_missing": Rule(
        "A zone needs approvals but names no approvers: anyone outside the team may approve.",
        "List the approver groups: approvers: {B: [group:approvers]}.", "warning"),
    "zone.b.mfa": Rule("Zone B must require MFA.", "Remove require_mfa: false from zone B."),
    "zone.b.outside_team": Rule(
        "Zone B approvers must be outside the requester's team.",
        "Set approvers_outside_team: true on zone B."),
    "zone.b.self_approval": Rule(
        "Zone B allows self-approval (logged): service recovery without a second person.",
        "Prefer approvals: 1 with approvers outside the team.", "warning"),
    "zone.c.approvals": Rule("Zone C needs at least two approvals.",
                             "Set approvals: 2 (or more) on zone C."),
    "zone.c.outside_team": Rule("Zone C approvers must all be outside the requester's team.",
                                "Set approvers_outside_team: true on zone C."),
    "zone.c.mfa": Rule("Zone C must require MFA.", "Remove require_mfa: false from zone C."),
    "zone.c.self_approval": Rule("Self-approval is allowed in zone A only, never in zone C.",
                                 "Remove self_approval from zone C."),
    "zone.c.max_ttl": Rule("Zone C access lasts at most 60 minutes.",
                           "Set max_ttl (and default_ttl) of zone C to 15m or less."),
    "zone.c.max_ttl_long": Rule("Zone C access should last at most 15 minutes.",
                                "Set max_ttl of zone C to 15m; extend when really needed.",
                                "warning"),
    "zone.c.extension_approvals": Rule(
        "A zone C extension needs fresh dual approval.",
        "Set extension_approvals: 2 (or more) on zone C."),
    # identity
    "identity.shared_account": Rule(
        "A shared account is in the directory or an approver/reviewer list.",
        "Remove the shared account; name the people who act."),
    "identity.name_spelling": Rule("Two spellings of one name (case, width, lookalikes).",
                                   "Keep one spelling per person."),
    "identity.subject": Rule("Two directory entries claim one identity subject.",
                             "Give each person their own subject."),
    # targets and roles
    "target.type": Rule("The target's type names no installed connector.",
                        "Use a connector type that is installed (postgres, redis, ssh, aws)."),
    "target.config": Rule("The connector refuses the target's configuration.",
                          "Fix the target fields as the message says."),
    "role.target": Rule("The role names a target that is not in the catalog.",
                        "Name a target under targets:."),
    "role.grant": Rule("The connector refuses the role's grant block.",
                       "Fix the grant as the message says."),
    "role.zone_ceiling": Rule(
        "The grant is more than its zone allows on this target (zone A: read-only).",
        "Narrow the grant, or move the role to the zone its power needs."),
    "role.dangerous": Rule("Dangerous or identity-changing grants are zone C only.",
                           "Move the role to zone C, or drop the flag."),
    "role.max_ttl": Rule("A role may only tighten its zone's TTL, never loosen it.",
                         "Set the role's max_ttl to at most its zone's max_ttl."),
    "role.approvers": Rule(
        "Some requester cannot get enough approvers outside their team for the role's zone.",
        "Add approvers (with MFA) outside the requester's team, or narrow the requesters."),
    # runbooks
    "runbook.role": Rule("The runbook names a role that is not in the catalog.",
                         "Name a role under roles:."),
    "runbook.zone_c": Rule("Runbooks never cover zone C.",
                           "Remove the zone C role from the runbook."),
    "runbook.requesters": Rule(
        "The runbook auto-approves someone who may not request one of its roles.",
        "Narrow auto_approve.requesters to people the roles' requesters include."),
    "runbook.reason_code": Rule("The runbook names an unknown reason code.",
                                "Use a code from reason_codes."),
    "runbook.severity": Rule("Runbook severities need incident.verify_url.",
                             "Set incident.verify_url, or drop severity."),
    # workloads
    "workload.target": Rule("The workload's target is unknown or cannot do overrides.",
                            "Name a target whose connector supports account overrides."),
    "workload.account": Rule("The workload's account is one of the broker's own names.",
                             "Name the existing service account."),
    "workload.roles": Rule("The workload names an unknown role or one on another target.",
                           "Name roles on the workload's own target."),
    "workload.override": Rule(
        "An override would give the account more than privileges (identity attributes).",
        "Keep override roles to table/key privileges within the zone's ceiling."),
}
