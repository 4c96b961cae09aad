"""Load, expand and validate a catalog file into the domain's :class:`Policy`.

Every problem is reported at once, as ``file: path: reason`` lines, and an
invalid catalog never loads.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from breakglass.catalog.schema import Catalog, RoleConfig, WorkloadConfig
from breakglass.connectors import MARKER_PREFIX, connector_class, connector_types
from breakglass.domain.errors import CatalogError
from breakglass.domain.model import Policy, RoleDef, Runbook, WorkloadDef, Zone, ZonePolicy
from breakglass.domain.names import duplicate_spellings, normalise_name

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class LoadedCatalog:
    source: str
    catalog: Catalog
    policy: Policy


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _expand(value: Any, path: str, env: Mapping[str, str], missing: list[str]) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append(f"{path}: environment variable {name} is not set")
            return match.group(0)

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: _expand(v, f"{path}.{k}" if path else str(k), env, missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env, missing) for i, v in enumerate(value)]
    return value


def load_catalog(
    path: str | Path, env: Mapping[str, str] | None = None, *, require_env: bool = True
) -> LoadedCatalog:
    """Read a catalog file; raise :class:`CatalogError` listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(source, [f"cannot read: {exc.strerror}"]) from exc
    return parse_catalog(text, source, env if env is not None else os.environ, require_env)


def parse_catalog(
    text: str, source: str, env: Mapping[str, str], require_env: bool = True
) -> LoadedCatalog:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(source, [f"{where}{problem}"]) from exc
    if not isinstance(raw, dict):
        raise CatalogError(source, ["the catalog must be a mapping"])
    missing: list[str] = []
    expanded = _expand(raw, "", env, missing)
    errors = list(missing) if require_env else []
    try:
        catalog = Catalog.model_validate(expanded)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top)"
            errors.append(f"{loc}: {err['msg']}")
        raise CatalogError(source, errors) from exc
    errors.extend(cross_check(catalog))
    if errors:
        raise CatalogError(source, errors)
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedCatalog(source=source, catalog=catalog,
                         policy=to_policy(catalog, version=version))


def cross_check(catalog: Catalog) -> list[str]:
    """Rules that span sections: references exist, runbooks stay out of zone C, ..."""
    errors = [f"zones.{zone}: missing" for zone in ("A", "B", "C") if zone not in catalog.zones]
    errors += _check_targets(catalog)
    for name, role in catalog.roles.items():
        errors += _check_role(catalog, name, role)
    errors += _check_runbooks(catalog)
    for name, workload in catalog.workloads.items():
        errors += _check_workload(catalog, name, workload)
    errors += _check_names(catalog)
    return errors


def _name_lists(catalog: Catalog) -> dict[str, list[str]]:
    """Every list of people's names in the catalog, by its path (selectors without ``user:``)."""
    def names(selectors: list[str]) -> list[str]:
        return [s.removeprefix("user:") for s in selectors if not s.startswith("group:")]

    lists = {"directory": list(catalog.directory),
             "identity.shared_accounts": list(catalog.identity.shared_accounts)}
    lists.update({f"approvers.{z}": names(s) for z, s in catalog.approvers.items()})
    lists.update({f"roles.{n}.requesters": names(r.requesters) for n, r in catalog.roles.items()})
    lists.update({f"workloads.{n}.requesters": names(w.requesters)
                  for n, w in catalog.workloads.items()})
    lists.update({f"runbooks.{n}.auto_approve.requesters": names(r.auto_approve.requesters)
                  for n, r in catalog.runbooks.items()})
    if catalog.reviews.reviewers:
        lists["reviews.reviewers"] = names(catalog.reviews.reviewers)
    return lists


def _check_names(catalog: Catalog) -> list[str]:
    """One spelling per person: ``Alice``/``alice`` or ``admin``/full-width admin are one name."""
    errors = [
        f"{where}: '{first}' and '{second}' are two spellings of one name "
        f"('{normalise_name(first)}'); keep one"
        for where, names in _name_lists(catalog).items()
        for first, second in duplicate_spellings(names)
    ]
    errors += [f"{where}: a name is empty once normalised"
               for where, names in _name_lists(catalog).items()
               if any(not normalise_name(n) for n in names)]
    shared = {normalise_name(s) for s in catalog.identity.shared_accounts}
    errors += [f"directory.{user}: listed as a shared account"
               for user in catalog.directory if normalise_name(user) in shared]
    bound: dict[str, str] = {}
    for user, entry in catalog.directory.items():
        if entry.subject is None:
            continue
        if entry.subject in bound:
            errors.append(f"directory.{user}.subject: also the subject of "
                          f"'{bound[entry.subject]}'; a subject is one person")
        bound.setdefault(entry.subject, user)
    return errors


def _check_targets(catalog: Catalog) -> list[str]:
    errors: list[str] = []
    for name, target in catalog.targets.items():
        cls = connector_class(target.type)
        if cls is None:
            errors.append(
                f"targets.{name}.type: unknown connector '{target.type}' "
                f"(known: {', '.join(connector_types())})"
            )
            continue
        config = target.connector_config()
        errors.extend(f"targets.{name}: {e}" for e in cls.validate_config(config))
    return errors


def _check_role(catalog: Catalog, name: str, role: RoleConfig) -> list[str]:
    target = catalog.targets.get(role.target)
    if target is None:
        return [f"roles.{name}.target: unknown target '{role.target}'"]
    errors: list[str] = []
    zone = catalog.zones.get(role.zone)
    if role.max_ttl is not None and zone is not None and role.max_ttl > zone.max_ttl:
        errors.append(
            f"roles.{name}.max_ttl: longer than zone {role.zone}'s max_ttl "
            "(a role may only tighten it)"
        )
    cls = connector_class(target.type)
    if cls is not None:
        grant = dict(role.grant)
        invalid = cls.validate_grant(grant)
        errors.extend(f"roles.{name}.grant: {e}" for e in invalid)
        if not invalid:
            errors.extend(f"roles.{name}.grant: zone {role.zone}: {e}"
                          for e in cls.validate_for_zone(grant, role.zone))
        risky = any(grant.get(flag) for flag in ("allow_dangerous", "allow_identity_changes"))
        if risky and role.zone != "C":
            errors.append(
                f"roles.{name}.grant: dangerous or identity-changing grants are zone C only"
            )
    return errors


def _check_workload(catalog: Catalog, name: str, workload: WorkloadConfig) -> list[str]:
    """A workload's target must do overrides, and no role may escalate its account."""
    where = f"workloads.{name}"
    target = catalog.targets.get(workload.target)
    if target is None:
        return [f"{where}.target: unknown target '{workload.target}'"]
    errors: list[str] = []
    if workload.account.startswith(MARKER_PREFIX):
        errors.append(f"{where}.account: '{MARKER_PREFIX}' names are the broker's own roles")
    cls = connector_class(target.type)
    if cls is not None and not cls.supports_account_override:
        errors.append(f"{where}.target: target type '{target.type}' cannot do workload "
                      "overrides")
        return errors
    for role_name in workload.roles:
        role = catalog.roles.get(role_name)
        if role is None:
            errors.append(f"{where}.roles: unknown role '{role_name}'")
        elif role.target != workload.target:
            errors.append(f"{where}.roles: '{role_name}' is on target '{role.target}', not "
                          f"'{workload.target}'")
    applicable = workload.roles or [n for n, r in catalog.roles.items()
                                    if r.target == workload.target]
    for role_name in applicable:
        role = catalog.roles.get(role_name)
        if cls is not None and role is not None and role.target == workload.target:
            errors.extend(f"{where}: role '{role_name}' {e}"
                          for e in cls.validate_override(role.grant))
    return errors


def _check_runbooks(catalog: Catalog) -> list[str]:
    errors: list[str] = []
    for rb_id, runbook in catalog.runbooks.items():
        for role_name in runbook.roles:
            role_cfg = catalog.roles.get(role_name)
            if role_cfg is None:
                errors.append(f"runbooks.{rb_id}.roles: unknown role '{role_name}'")
            elif role_cfg.zone == "C":
                errors.append(
                    f"runbooks.{rb_id}.roles: '{role_name}' is zone C; runbooks never cover zone C"
                )
        errors += [
            f"runbooks.{rb_id}.auto_approve.reason_codes: unknown '{code}'"
            for code in runbook.auto_approve.reason_codes
            if code not in catalog.reason_codes
        ]
        if runbook.severity and not catalog.incident.verify_url:
            errors.append(f"runbooks.{rb_id}.severity: needs incident.verify_url (the "
                          "severity comes from the incident system)")
    return errors


def to_policy(catalog: Catalog, *, version: str = "") -> Policy:
    zones = {
        Zone(z): ZonePolicy(
            zone=Zone(z),
            description=c.description,
            default_ttl=c.default_ttl,
            max_ttl=c.max_ttl,
            approvals=c.approvals,
            self_approval=c.self_approval,
            approvers_outside_team=c.approvers_outside_team,
            extension_approvals=c.extension_approvals,
            require_mfa=c.require_mfa,
            max_total=c.max_total or 2 * c.max_ttl,
        )
        for z, c in catalog.zones.items()
    }
    roles = {
        name: RoleDef(
            name=name,
            zone=Zone(r.zone),
            target=r.target,
            environment=catalog.targets[r.target].environment,
            requesters=tuple(r.requesters),
            grant=dict(r.grant),
            max_ttl=r.max_ttl,
            description=r.description,
        )
        for name, r in catalog.roles.items()
    }
    runbooks = {
        rb_id: Runbook(
            id=rb_id,
            title=rb.title,
            roles=tuple(rb.roles),
            reason_codes=tuple(rb.auto_approve.reason_codes),
            requesters=tuple(rb.auto_approve.requesters),
            severities=tuple(rb.severity or ()),
        )
        for rb_id, rb in catalog.runbooks.items()
    }
    workloads = {
        name: WorkloadDef(name=name, target=w.target, account=w.account, roles=tuple(w.roles),
                          requesters=tuple(w.requesters), subject=w.subject)
        for name, w in catalog.workloads.items()
    }
    return Policy(
        version=version,
        organization=catalog.organization,
        incident_pattern=catalog.incident.id_pattern,
        reason_codes=tuple(catalog.reason_codes),
        zones=zones,
        roles=roles,
        approvers={Zone(z): tuple(s) for z, s in catalog.approvers.items()},
        shared_accounts=frozenset(normalise_name(s) for s in catalog.identity.shared_accounts),
        mfa_max_age=catalog.identity.mfa.max_age,
        runbooks=runbooks,
        pending_timeout=catalog.pending_timeout,
        workloads=workloads,
        incident_fail_open_zone_a=catalog.incident.fail_open_zone_a,
        people={normalise_name(name): entry.subject
                for name, entry in catalog.directory.items() if entry.subject is not None},
    )
