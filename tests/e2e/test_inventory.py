"""Every connector behind one real broker: inventory finds planted standing privileges,
and one request per target type is activated, picked up with ``creds`` and revoked.

The broker (``breakglass serve --dev``) runs ``tests/fixtures/catalog_targets.yaml``
against the real PostgreSQL, Redis, sshd and AWS emulator of ``scripts/services.sh``.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.e2e.conftest import Cli, run_broker
from tests.services import require

pytestmark = pytest.mark.e2e

CATALOG = Path(__file__).parent.parent / "fixtures" / "catalog_targets.yaml"
ROLE_NAME = "breakglass-emergency"
ACCOUNT = "123456789012"
AWS_TEST_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SUFFIX = uuid.uuid4().hex[:8]
PLANTED_SUPERUSER = f"e2e_planted_su_{SUFFIX}"
PLANTED_REDIS_USER = f"e2e-planted-{SUFFIX}"
PLANTED_IAM_USER = f"e2e-planted-deployer-{SUFFIX}"


@dataclass
class Targets:
    pg_admin: str
    pg_dsn: str
    redis_url: str
    aws_endpoint: str
    role_arn: str
    iam_key: str

    def iam(self) -> Any:
        return boto3.client("iam", endpoint_url=self.aws_endpoint, region_name="us-east-1",
                            **AWS_TEST_KEYS)


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    """The four targets, each with a standing privilege planted outside the broker."""
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_e2e_inv_" + SUFFIX
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD 'planted'").format(
            sql.Identifier(PLANTED_SUPERUSER)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA features")
        conn.execute("CREATE TABLE features.online (id int primary key, v text)")
        conn.execute("INSERT INTO features.online VALUES (1, 'seed')")

    redis_url = require("BG_TEST_REDIS_URL")
    cache = redis.Redis.from_url(redis_url, protocol=2, decode_responses=True)
    cache.acl_setuser(PLANTED_REDIS_USER, enabled=True, passwords=["+planted-pw"],
                      commands=["+@all"], keys=["~*"])
    cache.set("e2e:model", "v1")
    cache.set("other:model", "secret")

    endpoint = require("BG_TEST_AWS_ENDPOINT")
    httpx.post(f"{endpoint}/moto-api/reset").raise_for_status()
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **AWS_TEST_KEYS)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}]}
    role = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust),
                           MaxSessionDuration=43_200)["Role"]
    ceiling = {"Version": "2012-10-17",
               "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}]}
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="emergency-ceiling",
                        PolicyDocument=json.dumps(ceiling))
    iam.create_user(UserName=PLANTED_IAM_USER)
    key = iam.create_access_key(UserName=PLANTED_IAM_USER)["AccessKey"]["AccessKeyId"]
    try:
        yield Targets(admin, dsn, redis_url, endpoint, role["Arn"], key)
    finally:
        cache.acl_deluser(PLANTED_REDIS_USER)
        cache.delete("e2e:model", "other:model")
        cache.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(PLANTED_SUPERUSER)))


@pytest.fixture(scope="module")
def cli(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    state = tmp_path_factory.mktemp("broker-targets")
    env = {
        "TEST_TARGET_DSN": targets.pg_dsn,
        "TEST_SSH_KRL": require("BG_TEST_SSH_KRL"),
        "TEST_AWS_ROLE_ARN": targets.role_arn,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "BREAKGLASS_DRIFT_INTERVAL": "3600",  # the targets are shared with other tests
    }
    with run_broker(CATALOG, state, env) as url:
        c = Cli(url, tmp_path_factory.mktemp("homes-targets"))
        for user in ("uma", "vera"):
            result = c.run(user, "login", "--dev", user)
            assert result.returncode == 0, result.stderr
        yield c


def run_json(cli: Cli, user: str, *args: str) -> Any:
    result = cli.run(user, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def activate(cli: Cli, role: str, incident: str, *extra: str) -> tuple[str, dict[str, Any]]:
    """Request a self-approved role; return the request ID and its one credential."""
    data = run_json(cli, "uma", "request", role, "--incident", incident, "--reason",
                    "recovery", "--json", *extra)
    assert data["state"] == "active", data
    return data["id"], run_json(cli, "uma", "creds", data["id"], "--format", "json")


def revoke(cli: Cli, rid: str) -> None:
    assert run_json(cli, "uma", "revoke", rid, "--json")["state"] == "revoked"


# -- inventory --------------------------------------------------------------------------


def test_an_approver_finds_every_planted_standing_privilege(cli: Cli, targets: Targets) -> None:
    rows = run_json(cli, "vera", "inventory", "--json")
    found = {(r["target"], r["subject"]): r for r in rows}

    assert "SUPERUSER" in found["features-db", PLANTED_SUPERUSER]["privilege"].split()
    assert "+@all" in found["vector-cache", PLANTED_REDIS_USER]["privilege"].split()
    aws = found["cloud", f"user/{PLANTED_IAM_USER}"]
    assert (aws["privilege"], aws["detail"]) == ("long-lived access key", targets.iam_key)
    assert not any(r["target"] == "bastion" for r in rows)  # the KRL exists: revocable

    only_cache = run_json(cli, "vera", "inventory", "--target", "vector-cache", "--json")
    assert only_cache
    assert {r["target"] for r in only_cache} == {"vector-cache"}
    table = cli.run("vera", "inventory")
    assert table.returncode == 0, table.stderr
    for subject in (PLANTED_SUPERUSER, PLANTED_REDIS_USER, PLANTED_IAM_USER):
        assert subject in table.stdout


def test_a_requester_who_is_not_an_approver_is_refused_the_inventory(cli: Cli) -> None:
    result = cli.run("uma", "inventory", "--json")
    assert result.returncode == 3
    assert "inventory.not_allowed" in result.stderr
    assert result.stdout == ""


# -- one request per connector type -----------------------------------------------------


def test_postgres_credential_reads_within_scope_until_revoked(cli: Cli) -> None:
    rid, cred = activate(cli, "features-read", "SEV-5001")
    assert {"type", "dsn", "username", "password", "host", "port", "dbname",
            "expires_at"} <= set(cred)
    assert cred["type"] == "postgres"
    with psycopg.connect(cred["dsn"], autocommit=True) as conn:
        assert conn.execute("SELECT v FROM features.online").fetchone() == ("seed",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM features.online")
        revoke(cli, rid)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cred["dsn"])


def redis_as(cred: dict[str, Any]) -> redis.Redis:
    return redis.Redis(host=cred["host"], port=cred["port"], username=cred["username"],
                       password=cred["password"], protocol=2, decode_responses=True,
                       single_connection_client=True, retry=Retry(NoBackoff(), 0))


def test_redis_credential_reads_its_keys_only_until_revoked(cli: Cli, targets: Targets) -> None:
    rid, cred = activate(cli, "cache-read", "SEV-5002")
    assert {"type", "url", "username", "password", "host", "port", "expires_at"} <= set(cred)
    assert cred["type"] == "redis"
    assert redis.Redis.from_url(cred["url"], protocol=2, decode_responses=True).ping()
    user = redis_as(cred)
    try:
        assert user.get("e2e:model") == "v1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.get("other:model")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.set("e2e:model", "tampered")
        revoke(cli, rid)
        gone = (redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError)
        with pytest.raises(gone):
            user.ping()
    finally:
        user.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis_as(cred).ping()


@dataclass
class Bastion:
    host: str
    port: int
    user: str

    def run(self, key: Path, cert: Path) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-p", str(self.port), "-i", str(key), "-o", f"CertificateFile={cert}",
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                f"{self.user}@{self.host}", "echo BG_OK"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def bastion() -> Bastion:
    return Bastion(require("BG_TEST_SSH_HOST"), int(require("BG_TEST_SSH_PORT")),
                   require("BG_TEST_SSH_USER"))


def private_file(path: Path, text: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def test_ssh_certificate_with_a_fresh_key_logs_in_until_revoked(
    cli: Cli, bastion: Bastion, tmp_path: Path
) -> None:
    rid, cred = activate(cli, "bastion-exec", "SEV-5003")
    assert {"type", "certificate", "private_key", "principals", "expires_at"} <= set(cred)
    assert cred["type"] == "ssh"
    assert cred["principals"] == [require("BG_TEST_SSH_PRINCIPAL")]
    key = private_file(tmp_path / "key", cred["private_key"])
    cert = private_file(tmp_path / "key-cert.pub", cred["certificate"] + "\n")
    login = bastion.run(key, cert)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "BG_OK"
    revoke(cli, rid)
    refused = bastion.run(key, cert)
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


def ssh_keygen(path: Path) -> tuple[Path, str]:
    """A requester's own key pair; returns the private key path and the fingerprint."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "uma@laptop",
                    "-f", str(path)], check=True)
    listed = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], capture_output=True,
                            text=True, check=True)
    return path, listed.stdout.split()[1]


def test_ssh_signs_the_requesters_own_public_key_and_audits_its_fingerprint_only(
    cli: Cli, bastion: Bastion, tmp_path: Path
) -> None:
    key, fingerprint = ssh_keygen(tmp_path / "id_ed25519")
    public = Path(f"{key}.pub").read_text().strip()
    rid, cred = activate(cli, "bastion-exec", "SEV-5004", "--public-key", f"{key}.pub")
    assert "private_key" not in cred  # the private half never left the requester
    assert cred["certificate"].split()[0] == "ssh-ed25519-cert-v01@openssh.com"
    cert = private_file(tmp_path / "id_ed25519-cert.pub", cred["certificate"] + "\n")
    login = bastion.run(key, cert)
    assert login.returncode == 0, login.stderr

    events = run_json(cli, "vera", "timeline", "SEV-5004", "--json")
    (created,) = [e for e in events if e["action"] == "request:created"]
    assert created["payload"]["public_key_sha256"] == fingerprint
    assert public.split()[1] not in json.dumps(events)
    revoke(cli, rid)
    assert bastion.run(key, cert).returncode == 255


def test_ssh_env_format_writes_private_files_and_exports_their_paths(
    cli: Cli, bastion: Bastion, tmp_path: Path
) -> None:
    data = run_json(cli, "uma", "request", "bastion-exec", "--incident", "SEV-5005",
                    "--reason", "recovery", "--json")
    out = cli.run("uma", "creds", data["id"], "--format", "env")
    assert out.returncode == 0, out.stderr
    assert "PRIVATE KEY" not in out.stdout
    assert "ssh -i" in out.stderr  # how to connect, on stderr so stdout stays eval-able
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert set(exports) == {"BREAKGLASS_SSH_CERT", "BREAKGLASS_SSH_KEY", "BREAKGLASS_SSH_USER",
                            "BREAKGLASS_SSH_HOST", "BREAKGLASS_SSH_PORT",
                            "BREAKGLASS_SSH_PRINCIPALS", "BREAKGLASS_SSH_EXPIRES_AT"}
    key, cert = Path(exports["BREAKGLASS_SSH_KEY"]), Path(exports["BREAKGLASS_SSH_CERT"])
    try:
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.parent.stat().st_mode & 0o777 == 0o700
        assert (exports["BREAKGLASS_SSH_USER"], exports["BREAKGLASS_SSH_PORT"]) == (
            bastion.user, str(bastion.port))
        assert bastion.run(key, cert).returncode == 0
    finally:
        revoke(cli, data["id"])
        key.unlink()
        cert.unlink()
        key.parent.rmdir()


def test_a_bad_public_key_is_refused_before_anything_is_minted(
    cli: Cli, tmp_path: Path
) -> None:
    key, _ = ssh_keygen(tmp_path / "id_ed25519")
    private = cli.run("uma", "request", "bastion-exec", "--incident", "SEV-5006", "--reason",
                      "recovery", "--public-key", str(key))
    assert private.returncode == 2
    assert "private key" in private.stderr
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("ssh-ed25519 not-base64 uma@laptop\n")
    bad = cli.run("uma", "request", "bastion-exec", "--incident", "SEV-5006", "--reason",
                  "recovery", "--public-key", str(garbage))
    assert bad.returncode == 2
    assert "not an OpenSSH public key" in bad.stderr
    unused = cli.run("uma", "request", "cache-read", "--incident", "SEV-5006", "--reason",
                     "recovery", "--public-key", f"{key}.pub")
    assert unused.returncode == 2
    assert "request.public_key_unused" in unused.stderr
    listed = run_json(cli, "uma", "list", "--incident", "SEV-5006", "--json")
    assert listed == []


def aws_session(cred: dict[str, Any]) -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=cred["aws_access_key_id"],
        aws_secret_access_key=cred["aws_secret_access_key"],
        aws_session_token=cred["aws_session_token"], region_name=cred["region"])


def test_aws_session_works_is_revoked_on_the_role_and_no_key_is_created(
    cli: Cli, targets: Targets
) -> None:
    iam = targets.iam()
    users_before = [u["UserName"] for u in iam.list_users()["Users"]]
    rid, cred = activate(cli, "cloud-s3-read", "SEV-5007")
    assert {"type", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
            "expires_at"} <= set(cred)
    assert cred["type"] == "aws"
    assert cred["aws_access_key_id"].startswith("ASIA")  # temporary, never an AKIA key
    session = aws_session(cred)
    caller = session.client("sts", endpoint_url=targets.aws_endpoint).get_caller_identity()
    assert caller["Arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/bg_")
    s3 = session.client("s3", endpoint_url=targets.aws_endpoint)
    assert s3.list_buckets()["Buckets"] == []

    revoke(cli, rid)
    session_name = caller["Arn"].rsplit("/", 1)[1]
    policies = iam.list_role_policies(RoleName=ROLE_NAME)["PolicyNames"]
    assert any(p.startswith(f"breakglass-revoke-{session_name}-") for p in policies)
    assert [u["UserName"] for u in iam.list_users()["Users"]] == users_before
    keys = iam.list_access_keys(UserName=PLANTED_IAM_USER)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [targets.iam_key]


def test_aws_env_format_exports_the_standard_variables(cli: Cli) -> None:
    data = run_json(cli, "uma", "request", "cloud-s3-read", "--incident", "SEV-5008",
                    "--reason", "recovery", "--json")
    out = cli.run("uma", "creds", data["id"], "--format", "env")
    assert out.returncode == 0, out.stderr
    names = [line.split("=")[0] for line in out.stdout.splitlines()]
    assert names == ["export AWS_ACCESS_KEY_ID", "export AWS_SECRET_ACCESS_KEY",
                     "export AWS_SESSION_TOKEN", "export AWS_REGION"]
    revoke(cli, data["id"])
