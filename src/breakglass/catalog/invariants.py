"""Policy invariants: the rules a catalog may not switch off, checked in one place.

:func:`check_catalog` is the one function ``lint``, ``serve`` (bootstrap) and every
catalog load call. It is pure over the parsed catalog: cross-section references
(:mod:`breakglass.catalog.structure`) and then the invariants below, each with a
stable rule ID from :mod:`breakglass.catalog.rules`.
"""

from __future__ import annotations

from datetime import timedelta

from breakglass.catalog.findings import Finding, Path, Severity
from breakglass.catalog.rules import RULES
from breakglass.catalog.schema import Catalog, DirectoryEntry, ZoneConfig
from breakglass.catalog.structure import check_structure
from breakglass.domain.durations import format_duration
from breakglass.domain.names import normalise_name

DEFAULT_TTL_CEILING = timedelta(hours=8)
ZONE_C_MAX_TTL = timedelta(minutes=60)
ZONE_C_ADVISED_TTL = timedelta(minutes=15)


def _finding(rule: str, severity: Severity, path: Path, message: str) -> Finding:
    return Finding(rule, severity, path, message, RULES[rule].fix)


def check_catalog(catalog: Catalog, *, ttl_ceiling: timedelta = DEFAULT_TTL_CEILING
                  ) -> list[Finding]:
    """Every finding for a schema-valid catalog, errors and warnings, in file order of kind."""
    found = check_structure(catalog)
    for name, zone in catalog.zones.items():
        found += _zone_rules(name, zone, ttl_ceiling)
        if effective_approvals(zone) > 0 and not catalog.approvers.get(name):
            found.append(_finding("zone.approvers_missing", "warning", ("zones", name),
                                  f"zone {name} needs approvals but approvers.{name} is not "
                                  "set: any named person outside the team may approve"))
    found += _shared_in_lists(catalog)
    found += _approvers_available(catalog)
    found += _runbook_requesters(catalog)
    return found


def effective_approvals(zone: ZoneConfig) -> int:
    """What the broker waits for: ``approvals: 0`` without self-approval still needs one."""
    return zone.approvals if zone.approvals or zone.self_approval else 1


def _zone_rules(name: str, zone: ZoneConfig, ttl_ceiling: timedelta) -> list[Finding]:
    at: Path = ("zones", name)
    found: list[Finding] = []
    if zone.approvals == 0 and not zone.self_approval:
        found.append(_finding("zone.approvals_zero", "error", (*at, "approvals"),
                              f"zone {name} has approvals: 0 without self_approval: true"))
    for field in ("default_ttl", "max_ttl", "max_total"):
        value: timedelta | None = getattr(zone, field)
        if value is not None and value > ttl_ceiling:
            found.append(_finding("zone.ttl_ceiling", "error", (*at, field),
                                  f"zone {name} {field} {format_duration(value)} is over the "
                                  f"absolute ceiling {format_duration(ttl_ceiling)}"))
    if name == "B":
        found += _zone_b(zone, at)
    elif name == "C":
        found += _zone_c(zone, at)
    return found


def _zone_b(zone: ZoneConfig, at: Path) -> list[Finding]:
    found: list[Finding] = []
    if not zone.require_mfa:
        found.append(_finding("zone.b.mfa", "error", (*at, "require_mfa"),
                              "zone B does not require MFA"))
    if zone.self_approval:
        found.append(_finding("zone.b.self_approval", "warning", (*at, "self_approval"),
                              "zone B lets requesters approve themselves (logged)"))
    elif not zone.approvers_outside_team:
        found.append(_finding("zone.b.outside_team", "error", (*at, "approvers_outside_team"),
                              "zone B approvers may be in the requester's own team"))
    return found


def _zone_c(zone: ZoneConfig, at: Path) -> list[Finding]:
    found: list[Finding] = []
    if effective_approvals(zone) < 2:
        found.append(_finding("zone.c.approvals", "error", (*at, "approvals"),
                              f"zone C needs 2 approvals, has {zone.approvals}"))
    if zone.self_approval:
        found.append(_finding("zone.c.self_approval", "error", (*at, "self_approval"),
                              "zone C allows self-approval"))
    if not zone.approvers_outside_team:
        found.append(_finding("zone.c.outside_team", "error", (*at, "approvers_outside_team"),
                              "zone C approvers may be in the requester's own team"))
    if not zone.require_mfa:
        found.append(_finding("zone.c.mfa", "error", (*at, "require_mfa"),
                              "zone C does not require MFA"))
    if zone.max_ttl > ZONE_C_MAX_TTL:
        found.append(_finding("zone.c.max_ttl", "error", (*at, "max_ttl"),
                              f"zone C max_ttl {format_duration(zone.max_ttl)} is over "
                              f"{format_duration(ZONE_C_MAX_TTL)}"))
    elif zone.max_ttl > ZONE_C_ADVISED_TTL:
        found.append(_finding("zone.c.max_ttl_long", "warning", (*at, "max_ttl"),
                              f"zone C max_ttl {format_duration(zone.max_ttl)} is over "
                              f"{format_duration(ZONE_C_ADVISED_TTL)}"))
    extension = (zone.extension_approvals if zone.extension_approvals is not None
                 else effective_approvals(zone))
    if extension < 2:
        path = (*at, "extension_approvals" if zone.extension_approvals is not None
                else "approvals")
        found.append(_finding("zone.c.extension_approvals", "error", path,
                              f"zone C extensions need 2 fresh approvals, have {extension}"))
    return found


def _person(selector: str) -> str | None:
    return None if selector.startswith("group:") else normalise_name(selector.removeprefix("user:"))


def _shared_in_lists(catalog: Catalog) -> list[Finding]:
    """Shared accounts never approve or review (the directory is checked with the names)."""
    shared = {normalise_name(s) for s in catalog.identity.shared_accounts}
    lists: dict[Path, list[str]] = {("approvers", z): s for z, s in catalog.approvers.items()}
    if catalog.reviews.reviewers:
        lists[("reviews", "reviewers")] = catalog.reviews.reviewers
    return [_finding("identity.shared_account", "error", (*where, index),
                     f"'{selector}' is a shared account")
            for where, selectors in lists.items()
            for index, selector in enumerate(selectors)
            if _person(selector) in shared]


def _selects(selectors: list[str], name: str, entry: DirectoryEntry) -> bool:
    return any(s.removeprefix("group:") in entry.groups if s.startswith("group:")
               else _person(s) == normalise_name(name) for s in selectors)


def _teams(entry: DirectoryEntry) -> set[str]:
    return {g for g in entry.groups if g.startswith("team:")}


def _approvers_available(catalog: Catalog) -> list[Finding]:
    """Every directory requester of a role can find enough approvers for its zone.

    Computed from the directory (dev and demo); a catalog whose people come from the
    identity provider only has no directory, and then nothing is computed here."""
    if not catalog.directory:
        return []
    shared = {normalise_name(s) for s in catalog.identity.shared_accounts}
    people = {n: e for n, e in catalog.directory.items() if normalise_name(n) not in shared}
    found: list[Finding] = []
    for role_name, role in catalog.roles.items():
        zone = catalog.zones.get(role.zone)
        if zone is None or zone.self_approval:
            continue
        needed = effective_approvals(zone)
        eligible = catalog.approvers.get(role.zone) or [f"user:{n}" for n in people]
        for name, entry in people.items():
            if not _selects(role.requesters, name, entry):
                continue
            approvers = [n for n, e in people.items()
                         if normalise_name(n) != normalise_name(name)
                         and _selects(eligible, n, e)
                         and (e.mfa or not zone.require_mfa)
                         and not (zone.approvers_outside_team and _teams(e) & _teams(entry))]
            if len(approvers) < needed:
                found.append(_finding(
                    "role.approvers", "error", ("roles", role_name, "requesters"),
                    f"'{name}' may request {role_name} (zone {role.zone}) but only "
                    f"{len(approvers)} of the {needed} approver(s) it needs are eligible "
                    "outside their team"))
                break
    return found


def _runbook_requesters(catalog: Catalog) -> list[Finding]:
    """A runbook's auto-approval covers only people who may request each of its roles."""
    found: list[Finding] = []
    for rb_id, runbook in catalog.runbooks.items():
        selectors = runbook.auto_approve.requesters
        for role_name in runbook.roles:
            role = catalog.roles.get(role_name)
            if role is None:
                continue
            outside = [s for s in selectors if s not in role.requesters
                       and not _covered(catalog, s, role.requesters)]
            found += [_finding("runbook.requesters", "error",
                               ("runbooks", rb_id, "auto_approve", "requesters",
                                selectors.index(s)),
                               f"'{s}' may not request {role_name}, which runbook {rb_id} "
                               "auto-approves") for s in outside]
    return found


def _covered(catalog: Catalog, selector: str, requesters: list[str]) -> bool:
    """Every directory person the selector names is among the requesters (and one exists)."""
    named = [(n, e) for n, e in catalog.directory.items() if _selects([selector], n, e)]
    return bool(named) and all(_selects(requesters, n, e) for n, e in named)
