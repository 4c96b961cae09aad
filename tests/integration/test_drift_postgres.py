"""Drift on a real PostgreSQL target: out-of-band access with the broker's marker is revoked.

The marker is this deployment's (its tag) and the store's record of it has ended; what
only looks like the broker's is left alone (tests/integration/test_drift_ownership.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from breakglass.connectors.postgres import PostgresConnector
from breakglass.service import drift
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.fakes import fresh_ownership
from tests.services import require

OWNERSHIP = fresh_ownership()  # this module's deployment


@pytest.fixture
def target(tmp_path) -> Iterator[tuple[str, PostgresConnector]]:
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_drift_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vectors; CREATE TABLE vectors.items (id int)")
    connector = PostgresConnector("embeddings-db", {"dsn": dsn}, ownership=OWNERSHIP)
    yield dsn, connector
    for ref in connector.list_managed():  # this deployment's only: the cluster is shared
        if OWNERSHIP.owns(ref):
            connector.revoke(ref)
    connector.close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_an_out_of_band_marker_role_is_revoked_and_alerted(target, pg_engine, loaded, clock,
                                                           people):
    dsn, connector = target
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(pg_engine),
                    connectors={"embeddings-db": connector}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    legit = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4242",
                                  reason="recovery")
    legit_ref = legit.grants[0].target_ref
    ended = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4242",
                                  reason="recovery")
    broker.revoke(people["uma"], ended.request.id, "done")
    sneaky = ended.grants[0].target_ref  # the deployment's marker, its grant over
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(sneaky)))
    report = drift.sweep(lambda: UnitOfWork(pg_engine), {"embeddings-db": connector}, clock)
    assert report.orphans_revoked == [sneaky]
    assert report.missing == []
    managed = connector.list_managed()
    assert sneaky not in managed
    assert legit_ref in managed  # an active grant is left alone
    with UnitOfWork(pg_engine) as uow:
        events = [e for e in uow.events_since(0) if e.action == "drift:orphan:revoked"]
    assert events[0].payload["target_ref"] == sneaky
    assert events[0].outcome == "alert"


def test_a_vanished_credential_is_alerted(target, pg_engine, loaded, clock, people):
    _dsn, connector = target
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(pg_engine),
                    connectors={"embeddings-db": connector}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4243",
                                 reason="recovery")
    connector.revoke(view.grants[0].target_ref)  # someone dropped it behind our back
    report = drift.sweep(lambda: UnitOfWork(pg_engine), {"embeddings-db": connector}, clock)
    assert view.grants[0].target_ref in report.missing
