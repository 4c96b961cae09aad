"""Removing a grant's role from the whole cluster, whatever its holder left behind.

``DROP OWNED BY`` acts in one database only, and ``DROP ROLE`` fails while the
role owns anything, or holds any privilege, in *any* database of the cluster.
Every login role may connect to ``template1`` and ``postgres`` and may create
large objects and temporary tables there (PostgreSQL grants ``CONNECT`` and
``TEMP`` to PUBLIC, and no privilege of one role can take them back), so a
grantee could otherwise park an object anywhere and make its own revocation fail
forever. :func:`remove_role` therefore:

1. cuts access first: ``NOLOGIN``, ``PASSWORD NULL``, ``VALID UNTIL
   '-infinity'``, then ends every session of the role in every database and
   waits for them to exit (their temporary objects go with them);
2. rolls back transactions the role prepared (``pg_prepared_xacts``);
3. reads ``pg_shdepend`` (shared by the whole cluster) for every database where
   the role still owns or is granted something, the target's included, connects to
   each and runs ``DROP OWNED BY`` there, under that database's ACL turn; and again,
   up to :data:`SWEEPS` rounds, for copies a ``CREATE DATABASE`` made meanwhile;
4. drops the role.

If ``DROP ROLE`` still fails (a database that refuses connections, another role's
object that depends on one of the role's, an object created in a race), access is
already cut, and the error names each blocking
object by database, catalog and OID: never a secret.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.errors import DependentObjectsStillExist, UndefinedObject

from breakglass.domain.errors import TargetError

SWEEPS = 3
"""Rounds of ``DROP OWNED`` over the cluster: a database created from ``template1`` while
the first round ran may hold a copy of what the role left there; the next round sees it."""
SESSION_WAIT_MS = 5000
"""How long to wait for each terminated session to exit before going on."""

_DEPENDENCY = {"o": "owns", "a": "holds privileges on", "r": "is named in a policy on",
               "i": "holds initial privileges on"}


def acl_turn(conn: psycopg.Connection[Any], database: str) -> None:
    """Brokers sharing a target take turns at GRANT and REVOKE: PostgreSQL fails concurrent
    changes to one database's or schema's privileges with "tuple concurrently updated"."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"breakglass-acl:{database}",))


def end_sessions(conn: psycopg.Connection[Any], role: str) -> None:
    """Terminate the role's sessions in every database; wait for each to exit."""
    conn.execute(
        sql.SQL("SELECT pg_terminate_backend(pid, {}) FROM pg_stat_activity "
                "WHERE usename = %s").format(sql.Literal(SESSION_WAIT_MS)),
        (role,),
    )


def remove_role(conn: psycopg.Connection[Any], admin_dsn: str, role: str, database: str) -> None:
    """Cut ``role``'s access, clear what it holds in every database, drop it.

    Revocations of one role take turns (a session advisory lock on its name): two
    ``ALTER ROLE`` or ``DROP ROLE`` of one role at once fail with "tuple concurrently
    updated"; the one that waits finds the role gone and has nothing to do."""
    key = f"breakglass-role:{role}"
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    try:
        _remove_role(conn, admin_dsn, role, database)
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def _remove_role(conn: psycopg.Connection[Any], admin_dsn: str, role: str, database: str) -> None:
    ident = sql.Identifier(role)
    try:
        conn.execute(sql.SQL(
            "ALTER ROLE {} NOLOGIN PASSWORD NULL VALID UNTIL '-infinity'").format(ident))
    except UndefinedObject:  # dropped meanwhile by a concurrent revocation: nothing to do
        end_sessions(conn, role)
        return
    end_sessions(conn, role)
    for gid, db in conn.execute(
        "SELECT gid, database FROM pg_prepared_xacts WHERE owner = %s", (role,)
    ).fetchall():
        with _connect(admin_dsn, str(db)) as other:
            other.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(str(gid))))
    try:
        for _ in range(SWEEPS):
            holding = _databases_holding(conn, role)
            if not holding:
                break
            for db in holding:
                _drop_owned_in(conn if db == database else None, admin_dsn, db, role)
    except UndefinedObject:  # a concurrent revocation finished first
        return
    try:
        with conn.transaction():
            acl_turn(conn, database)
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                sql.Identifier(database), ident))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
    except UndefinedObject:  # a concurrent revocation dropped it between the steps
        return
    except psycopg.errors.InternalError_:  # "tuple concurrently deleted": two DROP ROLEs
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            raise
        return
    except DependentObjectsStillExist as exc:
        raise TargetError(
            f"role {role}: access cut (NOLOGIN, expired, sessions ended) but it cannot be "
            f"dropped; blocked by {'; '.join(blockers(conn, role)) or 'unknown objects'}"
        ) from exc


def blockers(conn: psycopg.Connection[Any], role: str) -> list[str]:
    """What keeps ``role`` alive: one line per dependency, by database, catalog and OID."""
    rows = conn.execute(
        "SELECT coalesce(d.datname, '(cluster)'), d.datallowconn, s.classid::regclass::text, "
        "s.objid, s.deptype FROM pg_shdepend s LEFT JOIN pg_database d ON d.oid = s.dbid "
        "WHERE s.refclassid = 'pg_authid'::regclass "
        "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1, 3, 4",
        (role,),
    ).fetchall()
    return [
        f"{_DEPENDENCY.get(str(kind), str(kind))} {catalog} {objid} in database {db}"
        + (" (refuses connections)" if allowed is False else "")
        for db, allowed, catalog, objid, kind in rows
    ]


def _databases_holding(conn: psycopg.Connection[Any], role: str) -> list[str]:
    """Databases (accepting connections) where the role owns or holds something."""
    rows = conn.execute(
        "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE s.refclassid = 'pg_authid'::regclass "
        "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s) "
        "AND d.datallowconn ORDER BY 1",
        (role,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _drop_owned_in(conn: psycopg.Connection[Any] | None, admin_dsn: str, database: str,
                   role: str) -> None:
    """``DROP OWNED BY`` in one database, on ``conn`` or a connection of its own."""
    if conn is None:
        try:
            conn = _connect(admin_dsn, database)
        except psycopg.errors.InvalidCatalogName:
            return  # dropped since it was listed: what the role had there went with it
        with conn:
            _drop_owned_in(conn, admin_dsn, database, role)
        return
    with suppress(DependentObjectsStillExist), conn.transaction():
        # Another role's object built on one of the role's (a view, say) is not the
        # broker's to drop: DROP ROLE then fails and names what is left.
        acl_turn(conn, database)
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))


def _connect(admin_dsn: str, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(admin_dsn, dbname=database), autocommit=True,
                           connect_timeout=5)
