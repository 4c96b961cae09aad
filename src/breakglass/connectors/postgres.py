"""PostgreSQL target: one short-lived login role per grant.

The role carries its guardrails in itself: ``NOSUPERUSER NOCREATEDB
NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS``, a connection limit,
``log_statement = 'all'`` and ``VALID UNTIL`` at the grant's expiry, so the
password stops working even if the broker is down. Revocation blocks logins,
terminates the role's backends, drops what it owns and drops the role.

All DDL is composed with :mod:`psycopg.sql`; identifiers and privileges from
the catalog are validated before they get there.

With ``GrantSpec.account`` (the workload track) no role is created for a
login: the role's privileges are added to that existing service role and
rolled back exactly at the end (:mod:`breakglass.connectors.postgres_override`).
"""

from __future__ import annotations

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

from breakglass.connectors.base import (
    Connector,
    GrantSpec,
    IssuedCredential,
    Ownership,
    StandingPrivilege,
)
from breakglass.connectors.postgres_override import (
    OverrideSpec,
    apply_override,
    foreign_marker,
    override_live,
    override_tables,
    roll_back_override,
)
from breakglass.domain.errors import TargetError

PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_TABLE = re.compile(rf"^({_IDENT})\.({_IDENT}|\*)$")
_ROLE = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
DEFAULT_CONNECTION_LIMIT = 5


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
        dsn = config.get("dsn")
        if not dsn or not isinstance(dsn, str):
            return ["dsn: required (an admin connection string)"]
        try:
            conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            return ["dsn: not a valid PostgreSQL connection string"]
        return []

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
            bad = [t for t in tables if not isinstance(t, str) or not _TABLE.match(t)]
            if bad:
                errors.append(f"tables: not 'schema.table' or 'schema.*': {bad!r}")
        unknown = set(grant) - {"privileges", "tables", "connection_limit"}
        if unknown:
            errors.append(f"unknown field(s) {sorted(unknown)}")
        return errors

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
        limit = int(spec.grant.get("connection_limit", self._limit))
        privileges = sql.SQL(", ").join(sql.SQL(p.upper()) for p in spec.grant["privileges"])
        ident = sql.Identifier(role)
        with self._admin() as conn, conn.transaction():
            _acl_turn(conn, self._dbname)
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {} NOSUPERUSER NOCREATEDB "
                    "NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {}"
                ).format(
                    ident,
                    sql.Literal(password),
                    sql.Literal(spec.expires_at.isoformat()),
                    sql.Literal(limit),
                )
            )
            conn.execute(sql.SQL("ALTER ROLE {} SET log_statement = 'all'").format(ident))
            comment = f"breakglass request={spec.request_id} incident={spec.incident}"
            conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(ident, sql.Literal(comment))
            )
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(self._dbname), ident
                )
            )
            for table in spec.grant["tables"]:
                match = _TABLE.match(table)
                if match is None:  # validated at catalog load; refuse anyway
                    raise TargetError(f"invalid table {table!r}")
                schema, name = match.groups()
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
                )
                on = (
                    sql.SQL("ALL TABLES IN SCHEMA {}").format(sql.Identifier(schema))
                    if name == "*"
                    else sql.SQL("TABLE {}").format(sql.Identifier(schema, name))
                )
                conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(privileges, on, ident))
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

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        if not is_role_name(self.ownership, target_ref):
            raise TargetError(f"refusing to revoke {target_ref!r}: not a broker-managed role")
        ident = sql.Identifier(target_ref)
        with self._admin() as conn:
            if roll_back_override(conn, target_ref, artefacts, self._dbname, self.ownership):
                return
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (target_ref,)
            ).fetchone()
            if exists:
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (target_ref,),
            )
            if exists:
                with conn.transaction():
                    _acl_turn(conn, self._dbname)
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
                    conn.execute(
                        sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                            sql.Identifier(self._dbname), ident
                        )
                    )
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))

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


def _acl_turn(conn: psycopg.Connection[Any], database: str) -> None:
    """Brokers sharing a target take turns at GRANT and REVOKE: PostgreSQL fails concurrent
    changes to one database's or schema's privileges with "tuple concurrently updated"."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"breakglass-acl:{database}",))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
