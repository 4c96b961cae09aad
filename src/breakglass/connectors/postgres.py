"""PostgreSQL target: one short-lived login role per grant.

The role carries its guardrails in itself: ``NOSUPERUSER NOCREATEDB
NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS``, a connection limit,
``log_statement = 'all'`` and ``VALID UNTIL`` at the grant's expiry, so the
password stops working even if the broker is down.

* **No password on the wire to the target.** The broker computes the SCRAM-SHA-256
  verifier itself (:func:`scram_verifier`) and ``CREATE ROLE`` carries only that,
  so a target that logs every statement never logs the password.
* **Scope, before anything is granted.** System schemas (``pg_catalog``,
  ``information_schema``, ``pg_toast``, any ``pg_*``, in any spelling) are never
  grantable, nor are the target's ``reserved_schemas`` (the broker's own, say).
  Zone ceilings (:data:`ZONE_CEILINGS`): A reads (``SELECT``); B also changes rows
  (``INSERT UPDATE DELETE``); ``TRUNCATE``, ``TRIGGER`` and ``REFERENCES`` are zone
  C only. ``lint``/``serve`` refuse a catalog that breaks them, and :meth:`grant`
  checks again before it connects.
* **The target is the oracle.** After the GRANTs and before the transaction
  commits, :func:`~breakglass.connectors.postgres_effective.excess_privileges` asks
  PostgreSQL what the role can actually do (attributes, memberships, every table,
  view and sequence, through PUBLIC too, ``CREATE`` anywhere, ``SECURITY DEFINER``
  functions, large objects, system catalogs beyond the stock ones); anything beyond
  the catalog's privileges rolls the role back and raises :class:`TargetError`.
* **Revocation the grantee cannot block**
  (:func:`~breakglass.connectors.postgres_revoke.remove_role`): access is cut first
  (``NOLOGIN``, no password, expired, sessions ended everywhere), then what the role
  owns is dropped in *every* database of the cluster where it owns or holds
  anything, then the role. If it still cannot be dropped, the error names the
  blocking objects and the revocation is retried.

All DDL is composed with :mod:`psycopg.sql`; identifiers and privileges from
the catalog are validated before they get there.

With ``GrantSpec.account`` (the workload track) no role is created for a
login: the role's privileges are added to that existing service role and
rolled back exactly at the end (:mod:`breakglass.connectors.postgres_override`).
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from scramp import ScramMechanism

from breakglass.connectors.base import (
    Connector,
    GrantSpec,
    IssuedCredential,
    Ownership,
    StandingPrivilege,
)
from breakglass.connectors.postgres_effective import excess_privileges
from breakglass.connectors.postgres_override import (
    OverrideSpec,
    apply_override,
    foreign_marker,
    override_live,
    override_tables,
    roll_back_override,
)
from breakglass.connectors.postgres_revoke import acl_turn, end_sessions, remove_role
from breakglass.domain.errors import TargetError

PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
)
ZONE_CEILINGS = {
    "A": frozenset({"SELECT"}),
    "B": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"}),
    "C": PRIVILEGES,
}
"""The most a role of each zone may carry (unknown zones get zone A's)."""
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
"""Never grantable, in any spelling; nor is any other ``pg_*`` schema."""
MAX_CONNECTION_LIMIT = 100
_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_IDENT_RE = re.compile(_IDENT)
_TABLE = re.compile(rf"({_IDENT})\.({_IDENT}|\*)")
_ROLE = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
DEFAULT_CONNECTION_LIMIT = 5
SCRAM_ITERATIONS = 4096
"""PostgreSQL's own default (``scram_iterations``)."""
_SCRAM = ScramMechanism("SCRAM-SHA-256")


def role_name_for(ownership: Ownership, grant_id: str) -> str:
    """The target-side role name of a grant: the deployment's marker for the grant's ID."""
    return ownership.ref_for(grant_id)


def is_role_name(ownership: Ownership, name: str) -> bool:
    """Whether ``name`` is shaped like a role the broker makes (its prefix, lowercase)."""
    return bool(_ROLE.match(name)) and ownership.looks_like(name)


class PostgresConnector(Connector):
    type = "postgres"
    supports_account_override = True

    def __init__(self, name: str, config: Mapping[str, Any], *, ownership: Ownership) -> None:
        super().__init__(name, config, ownership=ownership)
        self._dsn = str(config["dsn"])
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        params = conninfo_to_dict(self._dsn)
        self._host = str(config.get("client_host") or params.get("host") or "127.0.0.1")
        self._port = int(config.get("client_port") or params.get("port") or 5432)
        self._dbname = str(params.get("dbname") or "postgres")
        self._limit = int(config.get("connection_limit", DEFAULT_CONNECTION_LIMIT))

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[str]:
        errors: list[str] = []
        dsn = config.get("dsn")
        if not dsn or not isinstance(dsn, str):
            errors.append("dsn: required (an admin connection string)")
        else:
            try:
                conninfo_to_dict(dsn)
            except psycopg.ProgrammingError:
                errors.append("dsn: not a valid PostgreSQL connection string")
        if "connection_limit" in config:
            errors += _limit_errors(config["connection_limit"])
        reserved = config.get("reserved_schemas", [])
        if not isinstance(reserved, list) or not all(
            isinstance(s, str) and _IDENT_RE.fullmatch(s) for s in reserved
        ):
            errors.append("reserved_schemas: a list of schema names is required")
        return errors

    @classmethod
    def validate_grant(cls, grant: Mapping[str, Any]) -> list[str]:
        errors: list[str] = []
        privileges = grant.get("privileges")
        tables = grant.get("tables")
        if not isinstance(privileges, list) or not privileges:
            errors.append("privileges: a non-empty list is required")
        else:
            bad = [p for p in privileges if not isinstance(p, str) or p.upper() not in PRIVILEGES]
            if bad:
                errors.append(f"privileges: not allowed {bad!r} (allowed: {sorted(PRIVILEGES)})")
        if not isinstance(tables, list) or not tables:
            errors.append("tables: a non-empty list of 'schema.table' or 'schema.*' is required")
        else:
            bad = [t for t in tables if not isinstance(t, str) or not _TABLE.fullmatch(t)]
            if bad:
                errors.append(f"tables: not 'schema.table' or 'schema.*': {bad!r}")
            system = [t for t in tables if t not in bad and is_system_schema(t.split(".")[0])]
            if system:
                errors.append(f"tables: {system!r} are in a system schema (pg_catalog, "
                              "information_schema, pg_*), never grantable")
        if "connection_limit" in grant:
            errors += _limit_errors(grant["connection_limit"])
        unknown = set(grant) - {"privileges", "tables", "connection_limit"}
        if unknown:
            errors.append(f"unknown field(s) {sorted(unknown)}")
        return errors

    @classmethod
    def validate_for_zone(cls, grant: Mapping[str, Any], zone: str) -> list[str]:
        """Zone A reads (``SELECT``); zone B also changes rows (``INSERT UPDATE DELETE``);
        ``TRUNCATE`` (every row at once, no row triggers), ``TRIGGER`` (code other roles
        run) and ``REFERENCES`` (constraints that block the owner) are zone C only."""
        ceiling = ZONE_CEILINGS.get(zone, ZONE_CEILINGS["A"])
        over = sorted({str(p).upper() for p in grant.get("privileges", [])} - ceiling)
        if over:
            return [f"privileges {over} exceed the zone's ceiling (allowed: {sorted(ceiling)})"]
        return []

    # -- connection -------------------------------------------------------------------

    @contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[Any]]:
        """One admin connection, reused, serialised; reconnects after a failure."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
                yield self._conn
            except psycopg.Error as exc:
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self._conn = None
                raise TargetError(
                    f"postgres target {self.name}: {type(exc).__name__}: {_first_line(exc)}"
                ) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- contract ---------------------------------------------------------------------

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        refused = self._refusals(spec)
        if refused:
            raise TargetError(f"postgres target {self.name}: refusing grant {spec.grant_id}: "
                              + "; ".join(refused))
        role = role_name_for(self.ownership, spec.grant_id)
        if spec.account is not None:
            override = OverrideSpec(
                marker=role, ownership=self.ownership, account=spec.account,
                database=self._dbname,
                privileges=[str(p) for p in spec.grant["privileges"]],
                tables=override_tables(spec.grant), expires_at=spec.expires_at,
                request_id=spec.request_id, incident=spec.incident)
            with self._admin() as conn:
                return apply_override(conn, override)
        password = secrets.token_urlsafe(32)
        with self._admin() as conn, conn.transaction():
            acl_turn(conn, self._dbname)
            self._create_role(conn, role, spec, scram_verifier(password))
            excess = excess_privileges(conn, role, [str(p) for p in spec.grant["privileges"]],
                                       override_tables(spec.grant))
            if excess:  # raising inside the transaction rolls the role back
                raise TargetError(
                    f"postgres target {self.name}: refusing grant {spec.grant_id}: the target "
                    f"would let the role do more than its catalog entry: {'; '.join(excess)}")
        dsn = (
            f"postgresql://{role}:{quote(password, safe='')}@{self._host}:{self._port}/"
            f"{quote(self._dbname, safe='')}"
        )
        return IssuedCredential(
            target_ref=role,
            secret={
                "type": "postgres",
                "dsn": dsn,
                "username": role,
                "password": password,
                "host": self._host,
                "port": self._port,
                "dbname": self._dbname,
                "expires_at": spec.expires_at.isoformat(),
            },
        )

    def _refusals(self, spec: GrantSpec) -> list[str]:
        """The catalog's rules again at the moment of granting, and this target's own
        reserved schemas (the broker's, say), which only the target's config names."""
        errors = self.validate_grant(spec.grant) or self.validate_for_zone(spec.grant, spec.zone)
        reserved = {str(s).lower() for s in self.config.get("reserved_schemas", [])}
        hits = [t for t in spec.grant.get("tables", [])
                if str(t).split(".")[0].lower() in reserved]
        if hits:
            errors = [*errors, f"tables: {hits!r} are in a reserved schema of this target"]
        return errors

    def _create_role(self, conn: psycopg.Connection[Any], role: str, spec: GrantSpec,
                     verifier: str) -> None:
        """The login role with its guardrails, and exactly the catalog's GRANTs."""
        limit = int(spec.grant.get("connection_limit", self._limit))
        privileges = sql.SQL(", ").join(sql.SQL(p.upper()) for p in spec.grant["privileges"])
        ident = sql.Identifier(role)
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {} NOSUPERUSER NOCREATEDB "
                "NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}"
            ).format(ident, sql.Literal(verifier), sql.Literal(spec.expires_at.isoformat()),
                     sql.Literal(limit))
        )
        conn.execute(sql.SQL("ALTER ROLE {} SET log_statement = 'all'").format(ident))
        comment = f"breakglass request={spec.request_id} incident={spec.incident}"
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(ident, sql.Literal(comment)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(self._dbname), ident))
        for table in spec.grant["tables"]:
            match = _TABLE.fullmatch(table)
            if match is None:  # validated at catalog load; refuse anyway
                raise TargetError(f"invalid table {table!r}")
            schema, name = match.groups()
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident))
            on = (
                sql.SQL("ALL TABLES IN SCHEMA {}").format(sql.Identifier(schema))
                if name == "*"
                else sql.SQL("TABLE {}").format(sql.Identifier(schema, name))
            )
            conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(privileges, on, ident))

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        if not is_role_name(self.ownership, target_ref):
            raise TargetError(f"refusing to revoke {target_ref!r}: not a broker-managed role")
        with self._admin() as conn:
            if roll_back_override(conn, target_ref, artefacts, self._dbname, self.ownership):
                return
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (target_ref,)
            ).fetchone()
            if not exists:
                end_sessions(conn, target_ref)
                return
            try:
                remove_role(conn, self._dsn, target_ref, self._dbname)
            except TargetError as exc:
                raise TargetError(f"postgres target {self.name}: {exc}") from exc

    def planned_ref(self, grant_id: str) -> str | None:
        return role_name_for(self.ownership, grant_id)

    def verify(self, target_ref: str) -> bool:
        with self._admin() as conn:
            live = override_live(conn, target_ref)
            if live is not None:
                return live
            row = conn.execute(
                "SELECT rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now()) "
                "FROM pg_roles WHERE rolname = %s",
                (target_ref,),
            ).fetchone()
        return bool(row and row[0])

    def list_managed(self) -> list[str]:
        with self._admin() as conn:
            rows = conn.execute(
                "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
                "WHERE starts_with(rolname, %s) ORDER BY 1",
                (self.ownership.prefix,),
            ).fetchall()
        return [str(r[0]) for r in rows if not foreign_marker(r[1], self._dbname)]

    def extend(self, target_ref: str, expires_at: datetime) -> None:
        with self._admin() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
                    sql.Identifier(target_ref), sql.Literal(expires_at.isoformat())
                )
            )

    def inventory(self) -> list[StandingPrivilege]:
        with self._admin() as conn:
            rows = conn.execute(
                "SELECT rolname, rolsuper, rolcreaterole, rolbypassrls, rolvaliduntil "
                "FROM pg_roles WHERE rolcanlogin AND (rolsuper OR rolcreaterole OR rolbypassrls) "
                "ORDER BY 1"
            ).fetchall()
        found = []
        for name, is_super, createrole, bypassrls, valid_until in rows:
            kinds = [k for k, on in (("SUPERUSER", is_super), ("CREATEROLE", createrole),
                                      ("BYPASSRLS", bypassrls)) if on]
            found.append(
                StandingPrivilege(
                    target=self.name,
                    subject=str(name),
                    privilege=" ".join(kinds),
                    detail="no expiry" if valid_until is None else f"valid until {valid_until}",
                )
            )
        return found


def is_system_schema(schema: str) -> bool:
    """``pg_catalog``, ``information_schema``, ``pg_toast`` or any ``pg_*`` schema, however
    it is spelled: unquoted identifiers fold to lower case in PostgreSQL."""
    folded = schema.lower()
    return folded in SYSTEM_SCHEMAS or folded.startswith("pg_")


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, in the
    server's ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` form).

    ``CREATE ROLE`` gets only this, so a target that logs DDL never logs the password;
    the server stores a verifier as it is and authenticates the password against it."""
    salt, stored_key, server_key, iterations = _SCRAM.make_auth_info(
        password, iteration_count=SCRAM_ITERATIONS)
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")


def _limit_errors(value: object) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or not (
        1 <= value <= MAX_CONNECTION_LIMIT
    ):
        return [f"connection_limit: an integer from 1 to {MAX_CONNECTION_LIMIT} is required"]
    return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
