"""Fresh broker stores for the lifecycle model, one per generated example, quickly.

Each store is migrated once into a template (a SQLite file, a PostgreSQL
template database); every example then starts from a copy of it, so a run of
many examples does not pay for Alembic each time.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import sql
from sqlalchemy import Engine

from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import make_engine
from tests.services import require


class StoreFactory(Protocol):
    def new(self) -> Engine: ...

    def drop(self, engine: Engine) -> None: ...


class SqliteStores:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._template = folder / "template.db"
        engine = make_engine(f"sqlite:///{self._template}")
        upgrade(engine)
        engine.dispose()

    def new(self) -> Engine:
        path = self._folder / f"store-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(self._template, path)
        return make_engine(f"sqlite:///{path}")

    def drop(self, engine: Engine) -> None:
        engine.dispose()
        if engine.url.database:
            Path(engine.url.database).unlink(missing_ok=True)


class PostgresStores:
    def __init__(self, admin: str, template: str) -> None:
        self._admin = admin
        self._base = admin.rsplit("/", 1)[0]
        self._template = template

    def new(self) -> Engine:
        name = f"{self._template}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self._template)))
        return make_engine(f"{self._base}/{name}")

    def drop(self, engine: Engine) -> None:
        engine.dispose()
        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(engine.url.database or "")))


@contextmanager
def stores(kind: str, folder: Path) -> Iterator[StoreFactory]:
    """Stores of one kind (``sqlite`` or ``postgresql``) for the duration of a test."""
    if kind == "sqlite":
        yield SqliteStores(folder)
        return
    admin = require("BG_TEST_PG_ADMIN_DSN")
    template = "bg_fsm_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    try:
        engine = make_engine(f"{admin.rsplit('/', 1)[0]}/{template}")
        upgrade(engine)
        engine.dispose()  # a template database must have no connection when copied
        yield PostgresStores(admin, template)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(template)))
