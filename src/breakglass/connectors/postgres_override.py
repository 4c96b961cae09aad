"""PostgreSQL account overrides: extra privileges on an existing role, rolled back exactly.

A workload override adds a role's table privileges to an existing service
role (``workloads.<name>.account``). Before anything is granted, every
privilege is checked with ``has_table_privilege`` / ``has_schema_privilege``;
only the missing ones are granted, and exactly those are recorded:

* in the grant's ``artefacts``, one JSON object per added privilege;
* on the target, in the comment of a ``NOLOGIN`` marker role named like any
  other grant (the deployment's :class:`~breakglass.connectors.base.Ownership`
  name, ``bg_<grant>_<tag>``), created in the same transaction as the grants.

The marker makes an override visible to drift reconciliation and lets a broker
that crashed between granting and recording roll it back from the target
alone. Rollback revokes only what was added (never a privilege the account
held before), skips what another live override of the same account still
needs (an override of this deployment: a role that only looks like a marker
cannot keep a privilege alive), then drops the marker; all in one transaction,
under an advisory lock per account. Running it again after an interruption is harmless.

The account's sessions are left alone: they belong to the running service,
and PostgreSQL checks table privileges at every statement, so a revoked
privilege stops working at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from breakglass.connectors.base import IssuedCredential, Ownership
from breakglass.domain.errors import TargetError

OVERRIDE_COMMENT = "breakglass override "
"""Prefix of a marker role's comment; JSON follows."""

KNOWN_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "USAGE"}
)
"""The only words a recorded privilege may be: records are read back into SQL."""

@dataclass(frozen=True, slots=True, order=True)
class Privilege:
    """One privilege of one account on one table (or ``USAGE`` on a schema)."""

    account: str
    schema: str
    table: str  # empty for a schema privilege
    privilege: str

    def encode(self) -> str:
        return json.dumps(
            {"account": self.account, "schema": self.schema, "table": self.table,
             "privilege": self.privilege},
            sort_keys=True, separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> Privilege | None:
        try:
            data = json.loads(text)
            found = cls(str(data["account"]), str(data["schema"]), str(data["table"]),
                        str(data["privilege"]))
        except (ValueError, KeyError, TypeError):
            return None
        return found if found.privilege in KNOWN_PRIVILEGES else None

    def __str__(self) -> str:
        if not self.table:
            return f"{self.privilege} ON SCHEMA {self.schema}"
        return f"{self.privilege} ON {self.schema}.{self.table}"

    def statement(self, grant: bool) -> sql.Composed:
        on = (sql.SQL("SCHEMA {}").format(sql.Identifier(self.schema)) if not self.table
              else sql.SQL("TABLE {}").format(sql.Identifier(self.schema, self.table)))
        verb = "GRANT {} ON {} TO {}" if grant else "REVOKE {} ON {} FROM {}"
        return sql.SQL(verb).format(sql.SQL(self.privilege), on, sql.Identifier(self.account))


@dataclass(frozen=True, slots=True)
class OverrideSpec:
    marker: str
    ownership: Ownership
    account: str
    database: str
    privileges: Sequence[str]
    tables: Sequence[tuple[str, str]]  # (schema, table or "*")
    expires_at: datetime
    request_id: str
    incident: str


def apply_override(conn: psycopg.Connection[Any], spec: OverrideSpec) -> IssuedCredential:
    """Grant what the account lacks; record it on the marker and in the artefacts."""
    if spec.ownership.looks_like(spec.account):
        raise TargetError(f"refusing to override {spec.account!r}: a broker-managed role")
    with conn.transaction():
        _lock(conn, spec.database, spec.account)
        account_oid = _account_oid(conn, spec.account)
        claimed = _claimed_by_others(conn, spec.marker, spec.database, spec.account,
                                     spec.ownership)
        wanted = [Privilege(spec.account, schema, "", "USAGE")
                  for schema in dict.fromkeys(s for s, _ in spec.tables)]
        for schema, table in spec.tables:
            for name in _tables(conn, schema, table):
                wanted += [Privilege(spec.account, schema, name, p.upper())
                           for p in spec.privileges]
        added: list[Privilege] = []
        present: list[Privilege] = []
        for priv in dict.fromkeys(wanted):
            if not _held(conn, account_oid, priv):
                conn.execute(priv.statement(grant=True))
                added.append(priv)
            elif priv in claimed:  # held only because another override added it
                added.append(priv)
            else:
                present.append(priv)
        record = {"account": spec.account, "database": spec.database,
                  "request": spec.request_id, "incident": spec.incident,
                  "added": [p.encode() for p in added]}
        ident = sql.Identifier(spec.marker)
        conn.execute(sql.SQL(
            "CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
            "NOREPLICATION NOBYPASSRLS VALID UNTIL {}").format(
                ident, sql.Literal(spec.expires_at.isoformat())))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
            ident, sql.Literal(OVERRIDE_COMMENT + json.dumps(record, sort_keys=True))))
    return IssuedCredential(
        target_ref=spec.marker,
        secret={"type": "postgres-override", "account": spec.account,
                "dbname": spec.database, "privileges_added": [str(p) for p in added],
                "expires_at": spec.expires_at.isoformat()},
        artefacts=tuple(p.encode() for p in added),
        audit={"account": spec.account, "added": [str(p) for p in added],
               "already_present": [str(p) for p in present]},
    )


def roll_back_override(
    conn: psycopg.Connection[Any], marker: str, artefacts: Iterable[str], database: str,
    ownership: Ownership,
) -> bool:
    """Undo an override; False when ``marker`` is not one (nothing done)."""
    listed = [p for p in map(Privilege.decode, artefacts) if p is not None]
    with conn.transaction():
        record = marker_record(conn, marker)
        if record is None and not listed:
            return False
        if record is not None and record.get("database") != database:
            return True  # another database's override on the same cluster: not ours
        recorded = [p for p in map(Privilege.decode, (record or {}).get("added", []))
                    if p is not None]
        undo = sorted(set(listed) | set(recorded))
        for account in sorted({p.account for p in undo}):
            _lock(conn, database, account)
            keep = _claimed_by_others(conn, marker, database, account, ownership)
            for priv in (p for p in undo if p.account == account and p not in keep):
                if _exists(conn, priv) and _role_exists(conn, account):
                    revoke_privilege(conn, priv)
        if record is not None:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(marker)))
    return True


def revoke_privilege(conn: psycopg.Connection[Any], priv: Privilege) -> None:
    """One REVOKE (a seam: resilience tests interrupt a rollback here)."""
    conn.execute(priv.statement(grant=False))


def override_live(conn: psycopg.Connection[Any], marker: str) -> bool | None:
    """None when ``marker`` is not an override; else whether all it added is still held."""
    record = marker_record(conn, marker)
    if record is None:
        return None
    for priv in filter(None, map(Privilege.decode, record.get("added", []))):
        if not _role_exists(conn, priv.account) or not _exists(conn, priv):
            return False
        if not _held(conn, _account_oid(conn, priv.account), priv):
            return False
    return True


def foreign_marker(comment: str | None, database: str) -> bool:
    """True for the marker of an override in another database of the same cluster."""
    record = _parse(comment)
    return record is not None and record.get("database") != database


def marker_record(conn: psycopg.Connection[Any], marker: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
        (marker,),
    ).fetchone()
    return _parse(row[0]) if row else None


def _parse(comment: str | None) -> dict[str, Any] | None:
    if not comment or not comment.startswith(OVERRIDE_COMMENT):
        return None
    try:
        value = json.loads(comment.removeprefix(OVERRIDE_COMMENT))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _lock(conn: psycopg.Connection[Any], database: str, account: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                 (f"breakglass-override:{database}:{account}",))


def _account_oid(conn: psycopg.Connection[Any], account: str) -> int:
    row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (account,)).fetchone()
    if row is None:
        raise TargetError(f"service account {account!r} does not exist on the target")
    return int(row[0])


def _role_exists(conn: psycopg.Connection[Any], account: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (account,)).fetchone() \
        is not None


def _tables(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND (%s::text = '*' OR c.relname = %s) "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
        (schema, table, table),
    ).fetchall()
    if not rows and table != "*":
        raise TargetError(f"table {schema}.{table} does not exist on the target")
    return [str(r[0]) for r in rows]


def _exists(conn: psycopg.Connection[Any], priv: Privilege) -> bool:
    args: tuple[str, ...]
    if not priv.table:
        query, args = "SELECT 1 FROM pg_namespace WHERE nspname = %s", (priv.schema,)
    else:
        query = ("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = %s AND c.relname = %s")
        args = (priv.schema, priv.table)
    return conn.execute(query, args).fetchone() is not None


def _held(conn: psycopg.Connection[Any], account_oid: int, priv: Privilege) -> bool:
    """Whether the account can use the privilege now (directly, as owner, or inherited)."""
    if not priv.table:
        row = conn.execute(
            "SELECT has_schema_privilege(%s::oid, n.oid, %s) FROM pg_namespace n "
            "WHERE n.nspname = %s", (account_oid, priv.privilege, priv.schema)).fetchone()
    else:
        row = conn.execute(
            "SELECT has_table_privilege(%s::oid, c.oid, %s) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname = %s",
            (account_oid, priv.privilege, priv.schema, priv.table)).fetchone()
    return bool(row and row[0])


def _claimed_by_others(
    conn: psycopg.Connection[Any], marker: str, database: str, account: str,
    ownership: Ownership,
) -> set[Privilege]:
    """Privileges other live overrides of this deployment on the same account added (and
    still need); a lookalike marker role claims nothing."""
    rows = conn.execute(
        "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
        "WHERE starts_with(rolname, %s) AND rolname <> %s",
        (ownership.prefix, marker),
    ).fetchall()
    claimed: set[Privilege] = set()
    for name, comment in rows:
        if not ownership.owns(str(name)):
            continue
        record = _parse(comment)
        if record is None or record.get("database") != database:
            continue
        if record.get("account") != account:
            continue
        claimed.update(p for p in map(Privilege.decode, record.get("added", [])) if p)
    return claimed


def override_tables(grant: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``schema.table`` / ``schema.*`` strings of a grant block as pairs."""
    pairs = []
    for entry in grant.get("tables", []):
        schema, _, table = str(entry).partition(".")
        pairs.append((schema, table))
    return pairs
