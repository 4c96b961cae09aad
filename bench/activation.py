"""Activation overhead per connector: request -> usable credential, self-approved zone A.

Runs the real broker (catalog, SQLite store with synchronous=FULL, HTTP app)
in-process against the real targets from ``scripts/services.sh``: PostgreSQL,
Redis, the SSH user CA (signing needs no host; revocations go to a scratch KRL)
and the AWS emulator (a scratch emergency role, deleted afterwards). For each
connector it prints P50/P95 of the whole activation, of the target's share (the
connector minting the credential) and of the broker's own overhead (the rest),
then one summary table. The PostgreSQL target: broker overhead P95
under 100 ms.

    python bench/activation.py [--n 200] [--db URL] [--connectors postgres,redis,ssh,aws]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import boto3
import psycopg
from fastapi.testclient import TestClient
from psycopg import sql

from breakglass.api.app import create_app
from breakglass.bootstrap import bootstrap
from breakglass.connectors import Connector, GrantSpec, IssuedCredential
from breakglass.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "tests" / "fixtures" / "catalog_targets.yaml"
WARM_UP = 10


@dataclasses.dataclass(frozen=True)
class Bench:
    """One connector under test: its catalog target and role, and what minting does."""

    name: str
    target: str
    role: str
    shown_as: str
    minting: str


BENCHES = [
    Bench("postgres", "features-db", "features-read", "real PostgreSQL",
          "target (CREATE ROLE + GRANTs)"),
    Bench("redis", "vector-cache", "cache-read", "real Redis", "target (ACL SETUSER)"),
    Bench("ssh", "bastion", "bastion-exec", "SSH user CA", "target (sign certificate)"),
    Bench("aws", "cloud", "cloud-s3-read", "AWS emulator", "target (sts:AssumeRole)"),
]
PLACEHOLDERS = {
    "TEST_TARGET_DSN": "postgresql://unused@127.0.0.1:1/unused",
    "BG_TEST_REDIS_URL": "redis://127.0.0.1:1/0",
    "BG_TEST_SSH_CA_KEY": "/nonexistent",
    "BG_TEST_SSH_HOST": "127.0.0.1",
    "BG_TEST_SSH_PORT": "22",
    "BG_TEST_SSH_USER": "unused",
    "BG_TEST_SSH_PRINCIPAL": "unused",
    "BG_TEST_AWS_ENDPOINT": "http://127.0.0.1:1",
    "TEST_AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/unused",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Timed:
    """Wraps a connector and records how long each grant took on the target."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.last = 0.0

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        start = time.perf_counter()
        try:
            return self.inner.grant(spec)
        finally:
            self.last = time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: run scripts/services.sh start and load its env first")
    return value


@contextmanager
def postgres_target() -> Iterator[None]:
    admin = need("BG_TEST_PG_ADMIN_DSN")
    name = "bg_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA features; CREATE TABLE features.online (id int)")
    os.environ["TEST_TARGET_DSN"] = target
    try:
        yield
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def redis_target() -> Iterator[None]:
    need("BG_TEST_REDIS_URL")
    yield


@contextmanager
def ssh_target() -> Iterator[None]:
    for name in ("BG_TEST_SSH_CA_KEY", "BG_TEST_SSH_HOST", "BG_TEST_SSH_PORT",
                 "BG_TEST_SSH_USER", "BG_TEST_SSH_PRINCIPAL"):
        need(name)
    yield  # TEST_SSH_KRL is a scratch file: the bench's revocations stay out of sshd's KRL


@contextmanager
def aws_target() -> Iterator[None]:
    endpoint = need("BG_TEST_AWS_ENDPOINT")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_CONFIG_FILE": "/nonexistent",
                       "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    role = "bg-bench-" + uuid.uuid4().hex[:8]
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}]}
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust),
                          MaxSessionDuration=43_200)["Role"]["Arn"]
    os.environ["TEST_AWS_ROLE_ARN"] = arn
    try:
        yield
    finally:
        with suppress(iam.exceptions.NoSuchEntityException):  # the emulator was reset meanwhile
            for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                iam.delete_role_policy(RoleName=role, PolicyName=policy)
            iam.delete_role(RoleName=role)


TARGETS: dict[str, Callable[[], Any]] = {
    "postgres": postgres_target, "redis": redis_target, "ssh": ssh_target, "aws": aws_target,
}


def measure(client: TestClient, headers: dict[str, str], bench: Bench, timed: Timed,
            n: int) -> tuple[list[float], list[float], list[str]]:
    totals, target_share, ids = [], [], []
    for i in range(n + WARM_UP):
        start = time.perf_counter()
        r = client.post("/v1/requests", headers=headers, json={
            "roles": [bench.role], "incident": "SEV-9000", "reason": "recovery"})
        r.raise_for_status()
        rid = r.json()["id"]
        c = client.post(f"/v1/requests/{rid}/credentials", headers=headers)
        c.raise_for_status()
        elapsed = time.perf_counter() - start
        ids.append(rid)
        if i >= WARM_UP:
            totals.append(elapsed * 1000)
            target_share.append(timed.last * 1000)
    return totals, target_share, ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--db", default=None, help="broker store (default: SQLite file)")
    parser.add_argument("--connectors", default=",".join(b.name for b in BENCHES),
                        help="comma-separated subset of postgres,redis,ssh,aws")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if b.name in args.connectors.split(",")]
    if not chosen:
        sys.exit("--connectors names none of postgres, redis, ssh, aws")
    state = Path(tempfile.mkdtemp(prefix="bg-bench-"))
    os.environ["TEST_SSH_KRL"] = str(state / "revoked.krl")
    for name, value in PLACEHOLDERS.items():
        os.environ.setdefault(name, value)
    db = args.db or f"sqlite:///{state / 'broker.db'}"
    rows = []
    with ExitStack() as stack:
        for bench in chosen:
            stack.enter_context(TARGETS[bench.name]())
        container = bootstrap(Settings.from_env(
            CATALOG, db_url=db, dev=True, state_dir=state,
            env={**os.environ, "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"}))
        container.settings = dataclasses.replace(container.settings, run_expiry=False)
        timers = {}
        for bench in chosen:
            timers[bench.name] = Timed(container.connectors[bench.target])
            container.connectors[bench.target] = timers[bench.name]  # type: ignore[assignment]
        container.broker._connectors = container.connectors
        token, _ = container.dev_login("uma")
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(container)) as client:
            for bench in chosen:
                totals, target_share, ids = measure(client, headers, bench,
                                                    timers[bench.name], args.n)
                for rid in ids:
                    client.post(f"/v1/requests/{rid}/revocations", headers=headers,
                                json={}).raise_for_status()
                overhead = [t - g for t, g in zip(totals, target_share, strict=True)]
                print(f"activations: {len(totals)} (store: {db.split(':')[0]}, "
                      f"target: {bench.shown_as})")
                for label, values in (("request -> usable credential", totals),
                                      (bench.minting, target_share),
                                      ("broker overhead", overhead)):
                    print(f"  {label:<30} P50 {statistics.median(values):7.1f} ms   "
                          f"P95 {pct(values, 0.95):7.1f} ms   max {max(values):7.1f} ms")
                if bench.name == "postgres":
                    print(f"  target P95 < 100 ms for broker overhead: "
                          f"{'met' if pct(overhead, 0.95) < 100 else 'NOT met'}")
                rows.append((bench.name, totals, target_share, overhead))
    print()
    print(f"{'connector':<10} {'n':>5}  {'total P50':>10} {'total P95':>10}  "
          f"{'target P50':>10} {'target P95':>10}  {'overhead P50':>12} {'overhead P95':>12}")
    for name, totals, target_share, overhead in rows:
        print(f"{name:<10} {len(totals):>5}  "
              f"{statistics.median(totals):>7.1f} ms {pct(totals, 0.95):>7.1f} ms  "
              f"{statistics.median(target_share):>7.1f} ms {pct(target_share, 0.95):>7.1f} ms  "
              f"{statistics.median(overhead):>9.1f} ms {pct(overhead, 0.95):>9.1f} ms")


if __name__ == "__main__":
    main()
