"""Load, expand and validate a catalog file into the domain's :class:`Policy`.

Every problem is reported at once, as ``file: path: reason [rule]`` lines, and an
invalid catalog (any finding at error level, see :mod:`breakglass.catalog.invariants`)
never loads.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from breakglass.catalog.findings import Finding, errors_of, path_of, warnings_of
from breakglass.catalog.invariants import DEFAULT_TTL_CEILING, check_catalog
from breakglass.catalog.rules import RULES
from breakglass.catalog.schema import Catalog
from breakglass.domain.errors import CatalogError
from breakglass.domain.model import Policy, RoleDef, Runbook, WorkloadDef, Zone, ZonePolicy
from breakglass.domain.names import normalise_name

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class LoadedCatalog:
    source: str
    catalog: Catalog
    policy: Policy
    warnings: tuple[Finding, ...] = ()
    """Findings at warning level: printed by ``lint``, logged by ``serve``."""


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
    """Parse, validate and check a catalog; raise :class:`CatalogError` naming every error."""
    analysis = analyse_catalog(text, env, require_env=require_env)
    errors = errors_of(analysis.findings)
    if errors or analysis.catalog is None:
        raise CatalogError(source, [f.line() for f in errors], [f.rule for f in errors])
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedCatalog(source=source, catalog=analysis.catalog,
                         policy=to_policy(analysis.catalog, version=version),
                         warnings=tuple(warnings_of(analysis.findings)))


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything a catalog's text gives: the catalog when it is schema-valid, and findings."""

    findings: list[Finding]
    catalog: Catalog | None


def analyse_catalog(text: str, env: Mapping[str, str], *, require_env: bool = True,
                    ttl_ceiling: timedelta = DEFAULT_TTL_CEILING) -> Analysis:
    """Every finding for a catalog text, without raising: what ``lint`` reports."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        position = (mark.line + 1, mark.column + 1) if mark else None
        return Analysis([Finding("yaml.syntax", "error", (), f"{where}{problem}",
                                 RULES["yaml.syntax"].fix, position)], None)
    if not isinstance(raw, dict):
        return Analysis([Finding("catalog.schema", "error", (),
                                 "the catalog must be a mapping")], None)
    missing: list[str] = []
    expanded = _expand(raw, "", env, missing)
    findings = [Finding("catalog.env", "error", path_of(m.split(": ", 1)[0]),
                        m.split(": ", 1)[1], RULES["catalog.env"].fix)
                for m in missing] if require_env else []
    try:
        catalog = Catalog.model_validate(expanded)
    except ValidationError as exc:
        findings += [Finding("catalog.schema", "error", tuple(err["loc"]), err["msg"])
                     for err in exc.errors()]
        return Analysis(findings, None)
    findings += check_catalog(catalog, ttl_ceiling=ttl_ceiling)
    return Analysis(findings, catalog)


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
