"""Cross-section checks: references exist, connectors accept their blocks, one name per person.

Each check returns :class:`Finding` values; the messages are the catalog's
long-standing error lines (``roles.x.target: unknown target 'y'``).
"""

from __future__ import annotations

from breakglass.catalog.findings import Finding, Path
from breakglass.catalog.rules import RULES
from breakglass.catalog.schema import Catalog, RoleConfig, WorkloadConfig
from breakglass.connectors import MARKER_PREFIX, connector_class, connector_types
from breakglass.connectors.base import Connector
from breakglass.domain.names import duplicate_spellings, normalise_name


def _err(rule: str, path: Path, message: str, hint: str = "", node: Path | None = None
         ) -> Finding:
    return Finding(rule, "error", path, message, hint or RULES[rule].fix, node=node)


def check_structure(catalog: Catalog) -> list[Finding]:
    found = [_err("zone.missing", ("zones", zone), "missing", "define zones A, B and C")
             for zone in ("A", "B", "C") if zone not in catalog.zones]
    found += _check_targets(catalog)
    for name, role in catalog.roles.items():
        found += _check_role(catalog, name, role)
    found += _check_runbook_refs(catalog)
    for name, workload in catalog.workloads.items():
        found += _check_workload(catalog, name, workload)
    found += _check_names(catalog)
    return found


def _name_lists(catalog: Catalog) -> dict[tuple[str, ...], list[str]]:
    """Every list of people's names in the catalog, by its path (selectors without ``user:``)."""
    def names(selectors: list[str]) -> list[str]:
        return [s.removeprefix("user:") for s in selectors if not s.startswith("group:")]

    lists = {("directory",): list(catalog.directory),
             ("identity", "shared_accounts"): list(catalog.identity.shared_accounts)}
    lists.update({("approvers", z): names(s) for z, s in catalog.approvers.items()})
    lists.update({("roles", n, "requesters"): names(r.requesters)
                  for n, r in catalog.roles.items()})
    lists.update({("workloads", n, "requesters"): names(w.requesters)
                  for n, w in catalog.workloads.items()})
    lists.update({("runbooks", n, "auto_approve", "requesters"): names(r.auto_approve.requesters)
                  for n, r in catalog.runbooks.items()})
    if catalog.reviews.reviewers:
        lists[("reviews", "reviewers")] = names(catalog.reviews.reviewers)
    return lists


def _check_names(catalog: Catalog) -> list[Finding]:
    """One spelling per person: ``Alice``/``alice`` or ``admin``/full-width admin are one name."""
    lists = _name_lists(catalog)
    found = [
        _err("identity.name_spelling", where,
             f"'{first}' and '{second}' are two spellings of one name "
             f"('{normalise_name(first)}'); keep one")
        for where, names in lists.items()
        for first, second in duplicate_spellings(names)
    ]
    found += [_err("identity.name_spelling", where, "a name is empty once normalised")
              for where, names in lists.items() if any(not normalise_name(n) for n in names)]
    shared = {normalise_name(s) for s in catalog.identity.shared_accounts}
    found += [_err("identity.shared_account", ("directory", user), "listed as a shared account",
                   "shared accounts never get access; name the person")
              for user in catalog.directory if normalise_name(user) in shared]
    bound: dict[str, str] = {}
    for user, entry in catalog.directory.items():
        if entry.subject is None:
            continue
        if entry.subject in bound:
            found.append(_err("identity.subject", ("directory", user, "subject"),
                              f"also the subject of '{bound[entry.subject]}'; a subject is "
                              "one person"))
        bound.setdefault(entry.subject, user)
    return found


def _check_targets(catalog: Catalog) -> list[Finding]:
    found: list[Finding] = []
    for name, target in catalog.targets.items():
        cls = connector_class(target.type)
        if cls is None:
            found.append(_err("target.type", ("targets", name, "type"),
                              f"unknown connector '{target.type}' "
                              f"(known: {', '.join(connector_types())})"))
            continue
        found += [_err("target.config", ("targets", name), e)
                  for e in cls.validate_config(target.connector_config())]
    return found


def _check_role(catalog: Catalog, name: str, role: RoleConfig) -> list[Finding]:
    target = catalog.targets.get(role.target)
    if target is None:
        return [_err("role.target", ("roles", name, "target"),
                     f"unknown target '{role.target}'")]
    found: list[Finding] = []
    zone = catalog.zones.get(role.zone)
    if role.max_ttl is not None and zone is not None and role.max_ttl > zone.max_ttl:
        found.append(_err("role.max_ttl", ("roles", name, "max_ttl"),
                          f"longer than zone {role.zone}'s max_ttl (a role may only tighten it)"))
    cls = connector_class(target.type)
    if cls is not None:
        grant = dict(role.grant)
        where = ("roles", name, "grant")
        invalid = cls.validate_grant(grant)
        found += [_err("role.grant", where, e) for e in invalid]
        if not invalid:
            found += [_err("role.zone_ceiling", where, f"zone {role.zone}: {e}")
                      for e in cls.validate_for_zone(grant, role.zone)]
        if role.zone == "A" and not _states_read_only(cls):
            found.append(_err("role.zone_ceiling", ("roles", name, "zone"),
                              f"zone A: connector '{target.type}' does not state what "
                              "read-only means for its targets, so it has no zone A roles"))
        risky = any(grant.get(flag) for flag in ("allow_dangerous", "allow_identity_changes"))
        if risky and role.zone != "C":
            found.append(_err("role.dangerous", where,
                              "dangerous or identity-changing grants are zone C only"))
    return found


def _states_read_only(cls: type[Connector]) -> bool:
    """Fail safe: a connector that never overrides the zone check claims no read-only mode."""
    return cls.validate_for_zone.__func__ is not Connector.validate_for_zone.__func__  # type: ignore[attr-defined]


def _check_workload(catalog: Catalog, name: str, workload: WorkloadConfig) -> list[Finding]:
    """A workload's target must do overrides, and no role may escalate its account."""
    where = ("workloads", name)
    target = catalog.targets.get(workload.target)
    if target is None:
        return [_err("workload.target", (*where, "target"),
                     f"unknown target '{workload.target}'")]
    found: list[Finding] = []
    if workload.account.startswith(MARKER_PREFIX):
        found.append(_err("workload.account", (*where, "account"),
                          f"'{MARKER_PREFIX}' names are the broker's own roles"))
    cls = connector_class(target.type)
    if cls is not None and not cls.supports_account_override:
        found.append(_err("workload.target", (*where, "target"),
                          f"target type '{target.type}' cannot do workload overrides"))
        return found
    for index, role_name in enumerate(workload.roles):
        role = catalog.roles.get(role_name)
        if role is None:
            found.append(_err("workload.roles", (*where, "roles"), f"unknown role '{role_name}'",
                              node=(*where, "roles", index)))
        elif role.target != workload.target:
            found.append(_err("workload.roles", (*where, "roles"),
                              f"'{role_name}' is on target '{role.target}', not "
                              f"'{workload.target}'", node=(*where, "roles", index)))
    applicable = workload.roles or [n for n, r in catalog.roles.items()
                                    if r.target == workload.target]
    for role_name in applicable:
        role = catalog.roles.get(role_name)
        if cls is not None and role is not None and role.target == workload.target:
            found += [_err("workload.override", where, f"role '{role_name}' {e}")
                      for e in cls.validate_override(role.grant)]
    return found


def _check_runbook_refs(catalog: Catalog) -> list[Finding]:
    found: list[Finding] = []
    for rb_id, runbook in catalog.runbooks.items():
        for index, role_name in enumerate(runbook.roles):
            role_cfg = catalog.roles.get(role_name)
            where, node = ("runbooks", rb_id, "roles"), ("runbooks", rb_id, "roles", index)
            if role_cfg is None:
                found.append(_err("runbook.role", where, f"unknown role '{role_name}'",
                                  node=node))
            elif role_cfg.zone == "C":
                found.append(_err("runbook.zone_c", where,
                                  f"'{role_name}' is zone C; runbooks never cover zone C",
                                  node=node))
        found += [
            _err("runbook.reason_code", ("runbooks", rb_id, "auto_approve", "reason_codes"),
                 f"unknown '{code}'",
                 node=("runbooks", rb_id, "auto_approve", "reason_codes", i))
            for i, code in enumerate(runbook.auto_approve.reason_codes)
            if code not in catalog.reason_codes
        ]
        if runbook.severity and not catalog.incident.verify_url:
            found.append(_err("runbook.severity", ("runbooks", rb_id, "severity"),
                              "needs incident.verify_url (the severity comes from the incident "
                              "system)"))
    return found
