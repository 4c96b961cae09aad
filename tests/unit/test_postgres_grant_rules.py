"""PostgreSQL grant blocks: what no catalog may ask for, in any spelling, and zone ceilings.

Loaded through the same :func:`parse_catalog` that ``lint`` and ``serve`` use, and checked
again by the connector at grant time, before it touches the target.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from breakglass.connectors import GrantSpec
from breakglass.connectors.postgres import PostgresConnector, scram_verifier
from breakglass.domain.errors import TargetError
from tests.fakes import fresh_ownership
from tests.unit.test_catalog_guardrails import load_errors

pytestmark = pytest.mark.unit

SYSTEM_TABLES = [
    "pg_catalog.*", "pg_catalog.pg_authid", "PG_CATALOG.*", "Pg_Catalog.pg_authid",
    "pg_catalog.PG_AUTHID", "information_schema.*", "INFORMATION_SCHEMA.tables",
    "pg_toast.*", "PG_TOAST.pg_toast_1260", "pg_temp_1.t", "pg_toast_temp_3.*", "pg_foo.*",
]
MALFORMED_TABLES = [
    '"pg_catalog".pg_authid', '"PG_CATALOG"."PG_AUTHID"', "pg_catalog.pg_authid\n",
    " pg_catalog.pg_authid", "pg_catalog .pg_authid", "pg_catalog.pg_authid;",
    "pg_catalog.pg_authid -- x", "U&\"pg_catalog\".pg_authid", "pg_catalog.*.*",
]


@pytest.mark.parametrize("table", SYSTEM_TABLES + MALFORMED_TABLES)
@pytest.mark.parametrize("zone", ["A", "B", "C"])
def test_system_schemas_are_never_grantable(table: str, zone: str) -> None:
    grant = {"privileges": ["SELECT"], "tables": ["app.items", table]}
    assert PostgresConnector.validate_grant(grant)
    errors = load_errors("db", zone, grant)
    assert any("tables" in e for e in errors), errors


@pytest.mark.parametrize("table", SYSTEM_TABLES)
def test_a_system_schema_refusal_names_the_rule(table: str) -> None:
    errors = PostgresConnector.validate_grant({"privileges": ["SELECT"], "tables": [table]})
    assert any("system schema" in e for e in errors), errors


@pytest.mark.parametrize("privilege", ["INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES",
                                       "TRIGGER", "delete", "Truncate"])
def test_zone_a_is_select_only(privilege: str) -> None:
    grant = {"privileges": ["SELECT", privilege], "tables": ["app.*"]}
    assert PostgresConnector.validate_for_zone(grant, "A")
    assert any("zone A" in e and "ceiling" in e for e in load_errors("db", "A", grant))


@pytest.mark.parametrize("privilege", ["TRUNCATE", "REFERENCES", "TRIGGER", "trigger"])
def test_zone_b_changes_rows_but_not_tables(privilege: str) -> None:
    grant = {"privileges": ["SELECT", privilege], "tables": ["app.*"]}
    assert any("zone B" in e and "ceiling" in e for e in load_errors("db", "B", grant))
    assert load_errors("db", "C", grant) == []


@pytest.mark.parametrize(("zone", "privileges"), [
    ("A", ["SELECT"]), ("A", ["select"]), ("B", ["SELECT", "INSERT", "UPDATE", "DELETE"]),
    ("C", ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]),
])
def test_each_zone_loads_up_to_its_ceiling(zone: str, privileges: list[str]) -> None:
    assert load_errors("db", zone, {"privileges": privileges, "tables": ["app.*"]}) == []


def test_an_unknown_zone_gets_the_strictest_ceiling() -> None:
    grant = {"privileges": ["SELECT", "DELETE"], "tables": ["app.*"]}
    assert PostgresConnector.validate_for_zone(grant, "Z")
    assert PostgresConnector.validate_for_zone(grant, "")


@pytest.mark.parametrize("limit", ["1; DROP ROLE postgres", "5", 0, -1, 101, 10**9, True,
                                   5.0, None, [5]])
def test_connection_limit_must_be_a_small_integer(limit: Any) -> None:
    grant = {"privileges": ["SELECT"], "tables": ["app.*"], "connection_limit": limit}
    assert any("connection_limit" in e for e in PostgresConnector.validate_grant(grant))
    assert any("connection_limit" in e for e in load_errors("db", "A", grant))
    config = {"dsn": "postgresql://admin@127.0.0.1:5432/app", "connection_limit": limit}
    assert any("connection_limit" in e for e in PostgresConnector.validate_config(config))


@pytest.mark.parametrize("limit", [1, 5, 100])
def test_sane_connection_limits_load(limit: int) -> None:
    grant = {"privileges": ["SELECT"], "tables": ["app.*"], "connection_limit": limit}
    assert load_errors("db", "A", grant) == []


@pytest.mark.parametrize("reserved", ["breakglass", ["ok", "bad;name"], [1]])
def test_reserved_schemas_must_be_schema_names(reserved: Any) -> None:
    config = {"dsn": "postgresql://admin@127.0.0.1:5432/app", "reserved_schemas": reserved}
    assert any("reserved_schemas" in e for e in PostgresConnector.validate_config(config))


def _spec(grant: dict[str, Any], zone: str = "A", account: str | None = None) -> GrantSpec:
    return GrantSpec(grant_id="r-0123456789ab-g0", request_id="r-0123456789ab",
                     principal="uma", role="r", incident="SEV-1234", grant=grant,
                     expires_at=datetime.now(UTC) + timedelta(minutes=5), zone=zone,
                     account=account)


@pytest.mark.parametrize(("grant", "zone", "account", "rule"), [
    ({"privileges": ["SELECT"], "tables": ["Breakglass.events"]}, "A", None, "reserved"),
    ({"privileges": ["SELECT"], "tables": ["BREAKGLASS.*"]}, "C", None, "reserved"),
    ({"privileges": ["SELECT"], "tables": ["breakglass.*"]}, "B", "app", "reserved"),
    ({"privileges": ["SELECT"], "tables": ["pg_catalog.pg_authid"]}, "C", None, "system"),
    ({"privileges": ["SELECT", "DELETE"], "tables": ["app.t"]}, "A", None, "ceiling"),
    ({"privileges": ["SELECT", "TRUNCATE"], "tables": ["app.t"]}, "B", "app", "ceiling"),
])
def test_the_connector_refuses_before_it_touches_the_target(
    grant: dict[str, Any], zone: str, account: str | None, rule: str
) -> None:
    # Port 1: nothing listens, so a refusal that connected first would say so instead.
    connector = PostgresConnector("db", {"dsn": "postgresql://admin@127.0.0.1:1/app",
                                         "reserved_schemas": ["breakglass"]},
                                  ownership=fresh_ownership())
    with pytest.raises(TargetError) as err:
        connector.grant(_spec(grant, zone, account))
    assert rule in str(err.value)
    assert "refusing grant" in str(err.value)


def test_the_password_leaves_only_as_a_scram_verifier() -> None:
    password = "correct horse battery staple"
    verifier = scram_verifier(password)
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key, server_key = keys.split(":")
    assert method == "SCRAM-SHA-256"
    assert password not in verifier
    # RFC 5802, computed here independently of the library the connector uses.
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_key) == hmac.digest(salted, b"Server Key", "sha256")
    assert scram_verifier(password) != verifier  # a fresh salt each time
