"""A role definition cannot switch a guardrail off: the catalog refuses it at load.

Each case is one role on one target type asking for something the guardrails deny,
loaded through the same :func:`parse_catalog` that ``serve`` and ``lint`` use.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from breakglass.catalog.loader import parse_catalog
from breakglass.domain.errors import CatalogError

pytestmark = pytest.mark.unit

TARGETS = {
    "db": {"type": "postgres", "dsn": "postgresql://admin@127.0.0.1:5432/app"},
    "cache": {"type": "redis", "url": "redis://default:pw@127.0.0.1:6379/0"},
    "bastion": {"type": "ssh", "ca_key": "/etc/breakglass/user_ca", "krl": "/etc/ssh/krl"},
    "cloud": {"type": "aws", "role_arn": "arn:aws:iam::123456789012:role/breakglass-emergency"},
}


def catalog_with(target: str, zone: str, grant: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "version": 1,
        "organization": "test-org",
        "identity": {"audience": "breakglass"},
        "incident": {"id_pattern": "^SEV-[0-9]{4,}$"},
        "reason_codes": ["recovery"],
        "zones": {
            "A": {"default_ttl": "20m", "max_ttl": "45m", "approvals": 0, "self_approval": True},
            "B": {"default_ttl": "20m", "max_ttl": "40m", "approvals": 1},
            "C": {"default_ttl": "10m", "max_ttl": "12m", "approvals": 2},
        },
        "approvers": {"B": ["group:reviewers"], "C": ["group:reviewers"]},
        "targets": {target: TARGETS[target]},
        "roles": {"emergency": {"zone": zone, "target": target, "requesters": ["group:oncall"],
                                "grant": grant}},
    })


def load_errors(target: str, zone: str, grant: dict[str, Any]) -> list[str]:
    try:
        parse_catalog(catalog_with(target, zone, grant), "catalog.yaml", env={})
    except CatalogError as exc:
        return [str(e) for e in exc.errors]
    return []


@pytest.mark.parametrize(("target", "grant", "expected"), [
    ("db", {"privileges": ["SELECT", "SUPERUSER"], "tables": ["app.*"]}, "privileges"),
    ("db", {"privileges": ["SELECT"], "tables": ["app.*"], "createrole": True}, "unknown"),
    ("cache", {"keys": ["app:*"], "commands": ["+@all"]}, "allow_dangerous"),
    ("cache", {"keys": ["*"], "commands": ["+@read"]}, "allow_dangerous"),
    ("cache", {"keys": ["app:*"], "commands": ["+config"]}, "allow_dangerous"),
    ("cache", {"keys": ["app:*"], "commands": ["+@admin"], "allow_dangerous": True},
     "zone C only"),
    ("bastion", {"principals": ["bg-oncall"], "permit_port_forwarding": True}, "unknown"),
    ("bastion", {"principals": ["bg-oncall"], "agent_forwarding": True}, "unknown"),
    ("cloud", {"actions": ["iam:CreateAccessKey"], "resources": ["*"]}, "guardrail"),
    ("cloud", {"actions": ["cloudtrail:StopLogging"], "resources": ["*"]}, "guardrail"),
    ("cloud", {"actions": ["iam:PutRolePolicy"], "resources": ["*"]}, "allow_identity_changes"),
    ("cloud", {"actions": ["iam:PutRolePolicy"], "resources": ["*"],
               "allow_identity_changes": True}, "zone C only"),
    ("cloud", {"actions": ["*"], "resources": ["*"]}, "not service:Action"),
])
def test_a_role_asking_for_what_a_guardrail_denies_fails_to_load(
    target: str, grant: dict[str, Any], expected: str
) -> None:
    found = load_errors(target, "B", grant)
    assert found
    assert all(e.startswith("roles.emergency.grant:") for e in found), found
    assert any(expected in e for e in found), found


@pytest.mark.parametrize(("target", "grant"), [
    ("cache", {"keys": ["app:*"], "commands": ["+@admin"], "allow_dangerous": True}),
    ("cloud", {"actions": ["iam:PutRolePolicy"], "resources": ["*"],
               "allow_identity_changes": True}),
])
def test_zone_c_may_opt_into_dangerous_grants_explicitly(
    target: str, grant: dict[str, Any]
) -> None:
    assert load_errors(target, "C", grant) == []


def test_zone_c_cannot_lift_a_guardrail_either() -> None:
    grant = {"actions": ["iam:CreateAccessKey"], "resources": ["*"],
             "allow_identity_changes": True}
    assert any("guardrail" in e for e in load_errors("cloud", "C", grant))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_plain_roles_of_each_type_load(target: str) -> None:
    plain = {
        "db": {"privileges": ["SELECT"], "tables": ["app.*"]},
        "cache": {"keys": ["app:*"], "commands": ["+@read"]},
        "bastion": {"principals": ["bg-oncall"]},
        "cloud": {"actions": ["s3:GetObject"], "resources": ["*"]},
    }
    assert load_errors(target, "B", plain[target]) == []
