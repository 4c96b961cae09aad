"""Shared fixtures: the test catalog, storage backends, principals."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql
from sqlalchemy import Engine

from breakglass.catalog.loader import LoadedCatalog, load_catalog
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import make_engine
from tests.fakes import FakeClock, human
from tests.services import require

CATALOG = Path(__file__).parent / "fixtures" / "catalog.yaml"


@pytest.fixture
def loaded() -> LoadedCatalog:
    return load_catalog(CATALOG, env={"TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/db"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def people(clock: FakeClock) -> dict[str, object]:
    return {
        "uma": human("uma", "team:ml-serving", "responders", clock=clock),
        "ugo": human("ugo", "team:ml-serving", "responders", "reviewers", clock=clock),
        "vera": human("vera", "team:sre", "reviewers", clock=clock),
        "wim": human("wim", "team:data-eng", "reviewers", clock=clock),
        "xia": human("xia", "team:ml-serving", "responders", mfa=False, clock=clock),
        "yuri": human("yuri", "team:finance", clock=clock),
    }


def _fresh_pg_database() -> tuple[str, str]:
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_store_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin, name


def _drop_pg_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The broker's own store, on both backends, migrated with Alembic."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'broker.db'}")
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    admin, name = _fresh_pg_database()
    base = admin.rsplit("/", 1)[0]
    eng = make_engine(f"{base}/{name}")
    upgrade(eng)
    yield eng
    eng.dispose()
    _drop_pg_database(admin, name)


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    """The broker's own store on SQLite only (for tests of logic above the store)."""
    eng = make_engine(f"sqlite:///{tmp_path / 'broker.db'}")
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_engine(tmp_path: Path) -> Iterator[Engine]:
    admin, name = _fresh_pg_database()
    eng = make_engine(f"{admin.rsplit('/', 1)[0]}/{name}")
    upgrade(eng)
    yield eng
    eng.dispose()
    _drop_pg_database(admin, name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its tier directory so `-m unit` etc. select them."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("unit", "integration", "e2e"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


os.environ.setdefault("NO_COLOR", "1")

# Property tests judge behaviour, not speed: a busy CI machine must not fail them.
settings.register_profile("breakglass", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("breakglass")
