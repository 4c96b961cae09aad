"""Ask PostgreSQL what a freshly minted role can actually do, before anyone gets it.

The catalog's ``grant`` block is what the broker *meant* to give; the target
decides what the role *can* do, and a target carries its own history: a
``GRANT INSERT ON t TO PUBLIC`` from years ago, a ``SECURITY DEFINER`` function
anyone may call, a readable ``pg_authid``. :func:`excess_privileges` runs inside
the transaction that created the role, after its GRANTs, and lists everything
the role can do beyond:

* the catalog's privileges on the catalog's tables (``schema.*`` meaning the
  tables, views and foreign tables of the schema at grant time);
* in system schemas (``pg_catalog``, ``information_schema``, ``pg_*``), what a
  stock cluster lets every role do: privileges PUBLIC holds in ``pg_init_privs``
  (what ``initdb`` granted), and ``SELECT`` on ``information_schema``'s views,
  which show each role only what it may already see;
* ``USAGE`` on schemas, ``CONNECT`` and ``TEMP`` on databases: PostgreSQL gives
  them to PUBLIC and they hold no data by themselves (temporary objects die with
  the session, and revocation ends every session first).

Anything else is an excess: a role attribute, a role membership, any privilege
on any other table, view or sequence (through PUBLIC or otherwise, table- or
column-level), ``CREATE`` on a schema or a database, ``EXECUTE`` on a
``SECURITY DEFINER`` function, a large object shared with PUBLIC. The caller
refuses the grant and rolls the role back. Each finding names the object and the
privilege, never a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_COLUMN_PRIVILEGES = "('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')"
_SYSTEM = "(n.nspname IN ('pg_catalog', 'information_schema') OR n.nspname LIKE 'pg\\_%%')"

_ATTRIBUTES = (
    "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, rolbypassrls "
    "FROM pg_roles WHERE oid = %s"
)
_ATTRIBUTE_NAMES = ("SUPERUSER", "CREATEDB", "CREATEROLE", "INHERIT", "REPLICATION",
                    "BYPASSRLS")

_RELATIONS = f"""
WITH wanted AS (SELECT * FROM unnest(%(schemas)s::text[], %(tables)s::text[]) AS w(nsp, rel)),
rels AS (
  SELECT c.oid, n.nspname, c.relname, c.relkind, {_SYSTEM} AS system,
         EXISTS (SELECT 1 FROM wanted w WHERE w.nsp = n.nspname
                 AND (w.rel = c.relname OR (w.rel = '*' AND c.relkind IN ('r','p','v','m','f'))))
           AS in_scope
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
),
held AS (
  SELECT r.*, p.priv FROM rels r CROSS JOIN unnest(%(all)s::text[]) AS p(priv)
  WHERE r.relkind <> 'S' AND CASE WHEN p.priv IN {_COLUMN_PRIVILEGES}
      THEN has_any_column_privilege(%(role)s, r.oid, p.priv)
      ELSE has_table_privilege(%(role)s, r.oid, p.priv) END
  UNION ALL
  SELECT r.*, p.priv FROM rels r CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p(priv)
  WHERE r.relkind = 'S' AND has_sequence_privilege(%(role)s, r.oid, p.priv)
)
SELECT h.priv, h.nspname, h.relname FROM held h
WHERE NOT (h.in_scope AND h.priv = ANY(%(granted)s::text[]))
  AND NOT (h.system AND (
        (h.nspname = 'information_schema' AND h.priv = 'SELECT')
        OR EXISTS (SELECT 1 FROM pg_init_privs i, aclexplode(i.initprivs) a
                   WHERE i.classoid = 'pg_class'::regclass AND i.objoid = h.oid
                     AND a.grantee = 0 AND a.privilege_type = h.priv)))
ORDER BY 2, 3, 1
"""

_OTHERS = """
SELECT 'member of role ' || quote_ident(m.roleid::regrole::text) FROM pg_auth_members m
 WHERE m.member = %(role)s
UNION ALL
SELECT 'CREATE on schema ' || quote_ident(n.nspname) FROM pg_namespace n
 WHERE has_schema_privilege(%(role)s, n.oid, 'CREATE')
UNION ALL
SELECT 'CREATE on database ' || quote_ident(d.datname) FROM pg_database d
 WHERE has_database_privilege(%(role)s, d.oid, 'CREATE')
UNION ALL
SELECT 'EXECUTE on SECURITY DEFINER function ' || p.oid::regprocedure::text FROM pg_proc p
 WHERE p.prosecdef AND has_function_privilege(%(role)s, p.oid, 'EXECUTE')
UNION ALL
SELECT 'access to large object ' || l.oid::text FROM pg_largeobject_metadata l
 WHERE EXISTS (SELECT 1 FROM aclexplode(l.lomacl) a WHERE a.grantee IN (0, %(role)s))
UNION ALL
SELECT 'every large object (lo_compat_privileges is on)'
 WHERE current_setting('lo_compat_privileges')::boolean
"""


def excess_privileges(
    conn: psycopg.Connection[Any],
    role: str,
    privileges: Sequence[str],
    tables: Sequence[tuple[str, str]],
) -> list[str]:
    """What ``role`` can do beyond ``privileges`` on ``tables`` (``(schema, table or '*')``)."""
    row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if row is None:
        return [f"role {role} does not exist"]
    oid = int(row[0])
    found: list[str] = []
    attributes = conn.execute(_ATTRIBUTES, (oid,)).fetchone() or ()
    found += [f"role attribute {name}" for name, on in zip(_ATTRIBUTE_NAMES, attributes,
                                                           strict=False) if on]
    found += [str(r[0]) for r in conn.execute(_OTHERS, {"role": oid}).fetchall()]
    rows = conn.execute(_RELATIONS, {
        "role": oid,
        "schemas": [s for s, _ in tables],
        "tables": [t for _, t in tables],
        "all": list(TABLE_PRIVILEGES),
        "granted": [p.upper() for p in privileges],
    }).fetchall()
    found += [f"{priv} on {_quote(schema)}.{_quote(name)}" for priv, schema, name in rows]
    return found


def _quote(name: str) -> str:
    return name if name.isidentifier() and name == name.lower() else '"' + \
        name.replace('"', '""') + '"'
